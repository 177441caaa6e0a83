"""Drawing detections, objectness heatmaps and captioned picture grids on images.

Labels are drawn in the first of these fonts that has a glyph for every character of the label,
so class names in any script the two cover come out as letters, not as empty boxes:

    DejaVu Sans        inside matplotlib (a requirement): Latin, Greek, Cyrillic, Hebrew, Arabic
                       letters, Georgian, Armenian, ...; every Latin label is drawn with it
    Noto Sans CJK SC   the noto-cjk-sans-otc package (requirements.txt), found with
                       importlib.resources: Chinese (simplified and traditional characters),
                       Japanese kana, Korean Hangul, plus Latin and Cyrillic

A label that neither covers (Devanagari, Thai, Ethiopic, ...) is drawn with the font that has the
most of its characters, and a warning (the `yolov4_tiny.inference` logger) names the characters
drawn as boxes (once per class name). Coverage is read from each font's character map (fontTools, which matplotlib
requires); the CJK font is opened only when a label needs a character DejaVu Sans lacks.

Each class gets its own colour: hues spread around the colour wheel in golden-ratio steps, so
neighbouring class ids differ a lot.
"""

from __future__ import annotations

import colorsys
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache, lru_cache

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from utils.inference.letterbox import LetterboxInfo

# The face of the Noto Sans CJK collection used: simplified Chinese glyph shapes by default.
CJK_FACE = "Noto Sans CJK SC"
logger = logging.getLogger("yolov4_tiny.inference")


@dataclass(frozen=True)
class LabelFont:
    """A font file labels can be drawn with; `index` is the face in a collection (.ttc)."""

    name: str
    path: str
    index: int = 0


@cache
def font_path() -> str:
    """Path of DejaVu Sans from matplotlib's own data (always installed with matplotlib)."""
    from matplotlib import font_manager

    return font_manager.findfont(font_manager.FontProperties(family="DejaVu Sans"), fallback_to_default=True)


def _cjk_font() -> LabelFont | None:
    """Noto Sans CJK SC from the noto-cjk-sans-otc package, None when the package is missing."""
    try:
        from importlib.resources import files

        path = files("noto_cjk_sans_otc").joinpath("NotoSansCJK-Regular.ttc")
    except ModuleNotFoundError:
        return None
    if not path.is_file():
        return None
    path = str(path)
    for index in range(16):  # the collection's faces: JP, KR, SC, TC, HK, then the Mono ones
        try:
            face = ImageFont.truetype(path, 12, index=index)
        except OSError:
            break
        if face.getname()[0] == CJK_FACE:
            return LabelFont(CJK_FACE, path, index)
    return LabelFont(CJK_FACE, path, 0)


@cache
def label_fonts() -> tuple[LabelFont, ...]:
    """The fonts labels are drawn with, in order of preference (see the module docstring)."""
    fonts = [LabelFont("DejaVu Sans", font_path())]
    cjk = _cjk_font()
    if cjk is not None:
        fonts.append(cjk)
    return tuple(fonts)


@cache
def font_coverage(font: LabelFont) -> frozenset[int]:
    """The code points `font` has a glyph for (its character map)."""
    from fontTools.ttLib import TTFont

    with TTFont(font.path, fontNumber=font.index, lazy=True) as ttf:
        return frozenset(ttf.getBestCmap())


def missing_glyphs(text: str, font: LabelFont) -> list[str]:
    """The characters of `text` (spaces and control characters aside) that `font` cannot draw, in
    the order they first appear."""
    covered = font_coverage(font)
    return [c for c in dict.fromkeys(text) if c.isprintable() and not c.isspace() and ord(c) not in covered]


@lru_cache(maxsize=4096)
def label_font(text: str) -> LabelFont:
    """The first of `label_fonts()` that draws every character of `text`; otherwise the one that
    draws the most, after a logged warning naming the characters it cannot draw."""
    best, best_missing = None, None
    for font in label_fonts():
        missing = missing_glyphs(text, font)
        if not missing:
            return font
        if best_missing is None or len(missing) < len(best_missing):
            best, best_missing = font, missing
    names = ", ".join(f"U+{ord(c):04X} {c!r}" for c in best_missing)
    hint = "" if len(label_fonts()) > 1 else "; pip install noto-cjk-sans-otc adds Chinese, Japanese and Korean"
    logger.warning(
        f"label {text!r}: no available font has a glyph for {names}; they are drawn as empty boxes "
        f"(fonts tried: {', '.join(f.name for f in label_fonts())}{hint})"
    )
    return best


@cache
def matplotlib_families() -> tuple[str, ...]:
    """The label fonts as matplotlib `font.family` names, the CJK one registered with matplotlib
    first; matplotlib falls back along the list character by character (charts with class names)."""
    from matplotlib import font_manager

    families = []
    for font in label_fonts():
        if font.path != font_path():
            font_manager.fontManager.addfont(font.path)  # a collection registers its first face
        families.append(font_manager.FontProperties(fname=font.path).get_name())
    return tuple(families)


@lru_cache(maxsize=64)
def _truetype(font: LabelFont, size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(font.path, max(8, int(size)), index=font.index)


def load_font(size: int, text: str = "") -> ImageFont.FreeTypeFont:
    """A font of `size` pixels that draws `text` (see `label_font`); DejaVu Sans for Latin text."""
    return _truetype(label_font(text), size)


def class_colors(num_classes: int) -> list[tuple[int, int, int]]:
    """One distinct RGB colour per class (deterministic)."""
    colors = []
    for i in range(max(1, num_classes)):
        # Golden-ratio hue steps: all hues differ, and class i and i + 1 are far apart.
        hue = (i * 0.6180339887) % 1.0
        value = 0.95 if i % 2 == 0 else 0.75
        r, g, b = colorsys.hsv_to_rgb(hue, 0.85, value)
        colors.append((round(r * 255), round(g * 255), round(b * 255)))
    return colors


def draw_detections(
    image: np.ndarray,
    boxes: np.ndarray,
    scores: np.ndarray | None,
    class_ids: np.ndarray,
    class_names: Sequence[str],
    colors: Sequence[tuple[int, int, int]] | None = None,
    labels: Sequence[str] | None = None,
) -> np.ndarray:
    """Draw boxes with "name score" labels.

    Args:
        image: uint8 RGB (H, W, 3).
        boxes: (N, 4) pixel xyxy in this image. scores: (N,), or None for labels without a score
            (ground truth). class_ids: (N,) ints.
        class_names: names indexed by class id.
        labels: N texts drawn instead of the class names (e.g. "#3 car" with track IDs).

    Returns: a new uint8 RGB (H, W, 3) image.
    """
    colors = colors or class_colors(len(class_names))
    canvas = Image.fromarray(image)
    draw = ImageDraw.Draw(canvas)
    height, width = image.shape[:2]
    font_size = max(10, round(0.025 * max(height, width)))
    thickness = max(1, round(0.003 * (height + width)))
    if scores is None:
        scores = [None] * len(boxes)
    for k, (box, score, class_id) in enumerate(zip(boxes, scores, class_ids, strict=True)):
        class_id = int(class_id)
        color = colors[class_id % len(colors)]
        x1, y1, x2, y2 = (float(v) for v in box)
        draw.rectangle([x1, y1, max(x1, x2 - 1), max(y1, y2 - 1)], outline=color, width=thickness)
        name = class_names[class_id] if class_id < len(class_names) else str(class_id)
        text = name if labels is None else labels[k]
        label = text if score is None else f"{text} {float(score):.2f}"
        font = load_font(font_size, text)  # chosen by the text: the score's digits are in every font
        left, top, right, bottom = draw.textbbox((0, 0), label, font=font)
        text_w, text_h = right - left, bottom - top + 4
        text_y = y1 - text_h if y1 - text_h >= 0 else y1
        draw.rectangle([x1, text_y, x1 + text_w + 4, text_y + text_h], fill=color)
        draw.text((x1 + 2, text_y + 2 - top), label, fill=(0, 0, 0), font=font)
    return np.asarray(canvas)


def draw_text(image: np.ndarray, text: str, position: tuple[int, int] = (8, 8)) -> np.ndarray:
    """White text on a black box (e.g. an FPS counter), uint8 RGB in and out."""
    canvas = Image.fromarray(image)
    draw = ImageDraw.Draw(canvas)
    font = load_font(max(12, round(0.03 * max(image.shape[:2]))), text)
    left, top, right, bottom = draw.textbbox(position, text, font=font)
    draw.rectangle([left - 4, top - 4, right + 4, bottom + 4], fill=(0, 0, 0))
    draw.text(position, text, fill=(255, 255, 255), font=font)
    return np.asarray(canvas)


def heatmap_overlay(
    image: np.ndarray, maps: Sequence[np.ndarray], info: LetterboxInfo, input_hw: tuple[int, int], alpha: float = 0.5
) -> np.ndarray:
    """Overlay an objectness map on the original image.

    Args:
        image: uint8 RGB (H, W, 3), the original image.
        maps: per head, float (h_i, w_i) objectness in [0, 1] on the letterboxed network input.
        info: how the image was letterboxed. input_hw: network input (height, width).
        alpha: weight of the heatmap.

    Returns: uint8 RGB (H, W, 3); the per-pixel maximum over heads, coloured with the JET map.
    """
    in_h, in_w = input_hw
    combined = np.zeros((in_h, in_w), np.float32)
    for m in maps:
        combined = np.maximum(combined, cv2.resize(np.asarray(m, np.float32), (in_w, in_h), cv2.INTER_LINEAR))
    (new_h, new_w), (pad_x, pad_y) = info.new_hw, info.pad_xy
    crop = combined[pad_y : pad_y + new_h, pad_x : pad_x + new_w]
    height, width = image.shape[:2]
    heat = cv2.resize(crop, (width, height), interpolation=cv2.INTER_LINEAR)
    colored = cv2.applyColorMap(np.clip(heat * 255, 0, 255).astype(np.uint8), cv2.COLORMAP_JET)
    colored = cv2.cvtColor(colored, cv2.COLOR_BGR2RGB)
    return cv2.addWeighted(image, 1 - alpha, colored, alpha, 0)


def normalize_map(values: np.ndarray) -> tuple[np.ndarray, float, float]:
    """(values rescaled to [0, 1] by their own minimum and maximum, minimum, maximum); a flat map
    becomes zeros."""
    values = np.asarray(values, np.float32)
    low, high = float(values.min()), float(values.max())
    if high - low <= 1e-12 * max(1.0, abs(high)):
        return np.zeros_like(values), low, high
    return (values - low) / (high - low), low, high


def _fitting_font(text: str, width: int) -> ImageFont.FreeTypeFont:
    """The largest font (at most 4.5% of `width`, at least 8 px) in which `text` fits in `width`."""
    size = max(10, round(0.045 * width))
    while True:
        font = load_font(size, text)
        left, _, right, _ = font.getbbox(text)
        if right - left <= width - 8 or size <= 8:
            return font
        size -= 1


def panel_grid(
    panels: Sequence[np.ndarray], captions: Sequence[str], columns: int = 3, min_width: int = 256, gap: int = 4
) -> np.ndarray:
    """Pictures side by side, each under its caption (white on black), `columns` to a row.

    Args:
        panels: uint8 RGB (H, W, 3) images; each is scaled up to at least `min_width` wide
            (keeping its aspect ratio) so that the caption can be read.
        captions: one text per panel.

    Returns: one uint8 RGB image; empty cells of the last row are dark grey.
    """
    if not panels or len(panels) != len(captions):
        raise ValueError(f"panel_grid needs as many captions as panels, got {len(panels)} and {len(captions)}")
    cells = []
    for panel, caption in zip(panels, captions, strict=True):
        height, width = panel.shape[:2]
        if width < min_width:
            scale = min_width / width
            panel = cv2.resize(panel, (min_width, max(1, round(height * scale))), interpolation=cv2.INTER_LINEAR)
        height, width = panel.shape[:2]
        font = _fitting_font(caption, width)
        _, top, _, bottom = font.getbbox(caption)
        strip = Image.new("RGB", (width, bottom - top + 8), (0, 0, 0))
        ImageDraw.Draw(strip).text((4, 4 - top), caption, fill=(255, 255, 255), font=font)
        cells.append(np.concatenate([np.asarray(strip), panel], axis=0))
    cell_h = max(c.shape[0] for c in cells)
    cell_w = max(c.shape[1] for c in cells)
    columns = max(1, min(columns, len(cells)))
    rows = -(-len(cells) // columns)
    grid = np.full((rows * cell_h + (rows - 1) * gap, columns * cell_w + (columns - 1) * gap, 3), 40, np.uint8)
    for k, cell in enumerate(cells):
        top, left = (k // columns) * (cell_h + gap), (k % columns) * (cell_w + gap)
        grid[top : top + cell.shape[0], left : left + cell.shape[1]] = cell
    return grid
