"""Generated VOC-format data sets: the project's built-in demo data, and harder ones for benchmarks.

Presets of one generator (`write_demo_dataset(root, preset=...)`):

``"shapes"`` (the demo, `train.py --demo`): three classes, each a filled shape with its own colour
family, on a textured, noisy background, 1-4 objects of 20-72 px that barely overlap:

    circle   - red-ish disc
    square   - green-ish axis-aligned square
    triangle - blue-ish upward triangle

``"clutter"`` (benchmarks/bench_learning.py): ten shape classes (`CLUTTER_CLASSES`) in any colour,
so only the outline tells them apart, slightly rotated and stretched, shaded and textured; images of
320-640 px per side, width and height drawn apart (aspect ratios up to 2:1); a background of
multi-scale noise, striped and checked patches, a lighting gradient, and distractors that belong to
no class (irregular blobs, long ellipses, bars, lines, arcs, letters and digits), some drawn over
the objects; then blur, sensor noise and JPEG quality 60-95. Objects are 8 px to half the image's
shorter side (log-uniform, so small ones are common), may overlap and occlude each other, and some
are cut by the image border. Each object's box is the tight box of its *visible* pixels; VOC's
`<truncated>` is 1 when the shape extends beyond the image, `<difficult>` is 1 when it is tiny
(longer side below `DIFFICULT_SIDE` px) or mostly hidden (less than `DIFFICULT_VISIBLE` of it visible,
by occlusion or by the border).

``"photos"`` (benchmarks/bench_learning.py --preset photos): the ten classes of "clutter" on real
photographs: each background is a crop of one of scikit-image's bundled photographs (`PHOTO_FILES`:
people, animals, objects, landscapes, textures, microscopy; rescaled, flipped, colour-jittered,
some in grey), and each object's surface is a crop of another photograph, tinted to stand apart
from what it covers, with a soft shadow. Objects are 16 px to 0.6 of the image's shorter side
(log-uniform), 1-6 an image, few distractors and occluders. Only the outline tells the classes
apart, which short budgets do not teach (YOLOv8n: mAP@0.5 0.049 after 15 minutes on one core);
"objects" is the learnable variant. It and "objects" need scikit-image (not a
dependency of the project: `pip install scikit-image`); `PhotosUnavailable` says so otherwise.

``"objects"`` (benchmarks/bench_learning.py's main set): "photos" with a colour per class, as real
object classes have a typical look: each class's surface takes its own hue (`OBJECT_HUES`, jittered
by a few degrees, saturation and brightness varied widely) over a photograph's damped detail, and
objects are 24 px to 0.6 of the shorter side. Colour and outline both tell the classes apart (only
the outline in the grey images): YOLOv8n reaches mAP@0.5 0.62 on it in 30 minutes on one CPU core,
where on "photos" it stays below 0.05 in 15 (docs/benchmarks.md).

Everything is drawn from one seed, so the same arguments write byte-identical files.
The boxes written to the XML are integer boxes (pixel xyxy, converted to VOC's 1-based inclusive
indices by utils.data.voc.write_voc_xml).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import cv2
import numpy as np

from utils.boxes import box_iou
from utils.data.voc import write_voc_xml
from utils.errors import YoloError

DEMO_CLASSES = ("circle", "square", "triangle")
# BGR base colours (OpenCV order); each object jitters around its class colour.
_CLASS_COLOURS = {"circle": (40, 40, 220), "square": (40, 200, 40), "triangle": (220, 80, 30)}
DEMO_SPLITS = {"train": 320, "val": 64, "test": 32}

CLUTTER_CLASSES = ("disc", "ring", "square", "triangle", "star", "cross", "diamond", "hexagon", "arrow", "crescent")
CLUTTER_SPLITS = {"train": 900, "val": 100, "test": 200}
CLUTTER_IMAGE_SIZE = (320, 640)  # each side drawn from this range
MIN_OBJECT_SIDE = 8  # px, the smallest object's longer side
DIFFICULT_SIDE = 12  # px: an object whose visible box's longer side is shorter is difficult
DIFFICULT_VISIBLE = 0.45  # an object with less than this fraction of its shape visible is difficult
PRESETS = ("shapes", "clutter", "photos", "objects")
# scikit-image's bundled photographs (skimage/data/, shipped with the wheel; nothing is downloaded).
PHOTO_FILES = (
    "astronaut.png", "brick.png", "camera.png", "cell.png", "chelsea.png", "clock_motion.png", "coffee.png",
    "coins.png", "grass.png", "gravel.png", "hubble_deep_field.jpg", "ihc.png", "moon.png", "motorcycle_left.png",
    "motorcycle_right.png", "page.png", "retina.jpg", "rocket.jpg", "text.png",
)  # fmt: skip
PHOTO_OBJECT_SIDE = (16, 0.6)  # px, and a share of the image's shorter side
OBJECT_SIDE = (24, 0.6)  # the same for "objects"
# "objects": each class's hue (OpenCV's 0-180 scale), in CLUTTER_CLASSES' order, 18 apart.
OBJECT_HUES = tuple(18 * i for i in range(len(CLUTTER_CLASSES)))


class PhotosUnavailable(YoloError):
    """The "photos" preset cannot find scikit-image's photographs."""


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """Smooth random colour field plus stripes and pixel noise: (size, size, 3) uint8 BGR."""
    coarse = rng.uniform(60, 190, size=(4, 4, 3)).astype(np.float32)
    image = cv2.resize(coarse, (size, size), interpolation=cv2.INTER_CUBIC)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    angle, period = rng.uniform(0, np.pi), rng.uniform(6, 20)
    stripes = 15 * np.sin((xx * np.cos(angle) + yy * np.sin(angle)) * 2 * np.pi / period)
    image += stripes[..., None] + rng.normal(0, 12, size=image.shape)
    return np.clip(image, 0, 255).astype(np.uint8)


def _draw(image: np.ndarray, name: str, box: np.ndarray, colour: tuple[int, int, int]) -> None:
    x1, y1, x2, y2 = (int(v) for v in box)
    if name == "circle":
        # A disc of diameter d filling pixels x1..x2-1.
        centre = ((x1 + x2 - 1) / 2, (y1 + y2 - 1) / 2)
        radius = (x2 - x1 - 1) / 2
        shift = 4  # sub-pixel precision for cv2
        cv2.circle(
            image,
            (int(round(centre[0] * 2**shift)), int(round(centre[1] * 2**shift))),
            int(round(radius * 2**shift)),
            colour,
            thickness=-1,
            lineType=cv2.LINE_AA,
            shift=shift,
        )
    elif name == "square":
        cv2.rectangle(image, (x1, y1), (x2 - 1, y2 - 1), colour, thickness=-1)
    else:
        points = np.array([[(x1 + x2 - 1) // 2, y1], [x1, y2 - 1], [x2 - 1, y2 - 1]], dtype=np.int32)
        cv2.fillPoly(image, [points], colour, lineType=cv2.LINE_AA)


def make_demo_image(
    rng: np.random.Generator,
    image_size: int = 192,
    min_size: int = 20,
    max_size: int = 72,
    max_objects: int = 4,
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """One image with 1..max_objects shapes that overlap little, sides in [min_size, max_size] pixels.

    Returns: image (H, W, 3) uint8 BGR, boxes (M, 4) pixel xyxy (integers), class names (M).
    """
    max_size = min(max_size, image_size * 3 // 4)  # small images get proportionally smaller shapes
    min_size = min(min_size, max_size)
    image = _background(rng, image_size)
    boxes: list[np.ndarray] = []
    names: list[str] = []
    for _ in range(int(rng.integers(1, max_objects + 1))):
        for _attempt in range(20):
            side = int(rng.integers(min_size, max_size + 1))
            x1 = int(rng.integers(0, image_size - side + 1))
            y1 = int(rng.integers(0, image_size - side + 1))
            box = np.array([x1, y1, x1 + side, y1 + side], dtype=np.float32)
            if not boxes or box_iou(box[None], np.stack(boxes)).max() < 0.05:
                break
        else:
            continue
        name = DEMO_CLASSES[int(rng.integers(len(DEMO_CLASSES)))]
        colour = tuple(int(np.clip(c + rng.integers(-30, 31), 0, 255)) for c in _CLASS_COLOURS[name])
        _draw(image, name, box, colour)
        boxes.append(box)
        names.append(name)
    return image, np.asarray(boxes, dtype=np.float32).reshape(-1, 4), names


# ---------------------------------------------------------------------------------------------
# The "clutter" preset


def _circle(radius: float = 1.0, centre: tuple[float, float] = (0.0, 0.0), points: int = 48) -> np.ndarray:
    angles = np.linspace(0, 2 * np.pi, points, endpoint=False)
    return np.stack([centre[0] + radius * np.cos(angles), centre[1] + radius * np.sin(angles)], axis=1)


def _star(points: int, inner: float) -> np.ndarray:
    angles = -np.pi / 2 + np.arange(2 * points) * np.pi / points
    radii = np.where(np.arange(2 * points) % 2 == 0, 1.0, inner)
    return np.stack([radii * np.cos(angles), radii * np.sin(angles)], axis=1)


def _unit_shape(name: str, rng: np.random.Generator) -> tuple[list[np.ndarray], list[np.ndarray], float]:
    """A class's outline in unit coordinates (within [-1, 1]^2, y down): (filled polygons, holes,
    the largest rotation in degrees that keeps it unlike the other classes)."""
    if name == "disc":
        return [_circle()], [], 180.0
    if name == "ring":
        return [_circle()], [_circle(float(rng.uniform(0.45, 0.65)))], 180.0
    if name == "square":
        return [np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], float)], [], 20.0
    if name == "triangle":
        return [np.array([[0, -1], [1, 1], [-1, 1]], float)], [], 20.0
    if name == "star":
        return [_star(5, 0.42)], [], 36.0
    if name == "cross":
        a = 0.3  # half the arm's width
        return [np.array([[-a, -1], [a, -1], [a, -a], [1, -a], [1, a], [a, a], [a, 1], [-a, 1], [-a, a], [-1, a],
                          [-1, -a], [-a, -a]], float)], [], 20.0  # fmt: skip
    if name == "diamond":  # taller than wide, so a turned square is not one
        return [np.array([[0, -1], [0.6, 0], [0, 1], [-0.6, 0]], float)], [], 15.0
    if name == "hexagon":
        return [_circle(points=6)], [], 30.0
    if name == "arrow":
        shape = np.array([[-1, -0.22], [0.15, -0.22], [0.15, -0.7], [1, 0], [0.15, 0.7], [0.15, 0.22], [-1, 0.22]])
        return [shape], [], 180.0
    if name == "crescent":
        return [_circle()], [_circle(0.85, (0.45, -0.1))], 180.0
    raise ValueError(f"unknown clutter class {name!r}")


def _transform(polygons: list[np.ndarray], centre, radius: float, aspect: float, degrees: float) -> list[np.ndarray]:
    """Unit polygons scaled to `radius` (x stretched by sqrt(aspect), y shrunk by it), turned, moved to `centre`."""
    theta = np.deg2rad(degrees)
    rotation = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    scale = np.array([radius * np.sqrt(aspect), radius / np.sqrt(aspect)])
    return [(p * scale) @ rotation.T + np.asarray(centre, float) for p in polygons]


_SHIFT = 4  # sub-pixel bits for cv2.fillPoly


def _fill(mask: np.ndarray, polygons: list[np.ndarray], offset, value: int) -> None:
    points = [np.round((p - np.asarray(offset, float)) * 2**_SHIFT).astype(np.int32) for p in polygons]
    cv2.fillPoly(mask, points, value, lineType=cv2.LINE_8, shift=_SHIFT)


def _render(solid: list[np.ndarray], holes: list[np.ndarray]) -> tuple[np.ndarray, tuple[int, int]]:
    """Rasterise a shape on its own canvas: (mask (h, w) uint8 0/1, (x0, y0) of the canvas in the image)."""
    points = np.concatenate(solid)
    x0, y0 = np.floor(points.min(axis=0)).astype(int) - 1
    x1, y1 = np.ceil(points.max(axis=0)).astype(int) + 2
    mask = np.zeros((y1 - y0, x1 - x0), np.uint8)
    _fill(mask, solid, (x0, y0), 1)
    if holes:
        _fill(mask, holes, (x0, y0), 0)
    return mask, (int(x0), int(y0))


def _window(mask: np.ndarray, origin: tuple[int, int], hw: tuple[int, int]):
    """The part of a canvas at `origin` that lies in an image of size `hw`: (image slices, canvas slices)."""
    (x0, y0), (h, w) = origin, hw
    ix0, iy0, ix1, iy1 = max(x0, 0), max(y0, 0), min(x0 + mask.shape[1], w), min(y0 + mask.shape[0], h)
    if ix1 <= ix0 or iy1 <= iy0:
        return None
    return (slice(iy0, iy1), slice(ix0, ix1)), (slice(iy0 - y0, iy1 - y0), slice(ix0 - x0, ix1 - x0))


def _smooth_field(rng: np.random.Generator, hw: tuple[int, int], cells: int, channels: int) -> np.ndarray:
    """Noise smooth over about 1/cells of the longer side: (h, w, channels) float32, unit spread."""
    h, w = hw
    grid = (max(2, round(cells * h / max(h, w))), max(2, round(cells * w / max(h, w))))
    coarse = rng.normal(0, 1, size=(*grid, channels)).astype(np.float32)
    field = cv2.resize(coarse, (w, h), interpolation=cv2.INTER_CUBIC)
    return field.reshape(h, w, channels)


def _clutter_background(rng: np.random.Generator, hw: tuple[int, int]) -> np.ndarray:
    """Multi-scale colour noise, a few striped or checked patches (fabric, tiles, blinds): (h, w, 3) float32 BGR."""
    h, w = hw
    image = np.empty((h, w, 3), np.float32)
    image[:] = rng.uniform(50, 200, 3)
    for cells, spread in ((3, 45), (12, 25), (48, 12)):
        image += spread * _smooth_field(rng, hw, cells, 3)
    for _ in range(int(rng.integers(0, 4))):
        centre = rng.uniform(0, 1, 2) * (w, h)
        radius = rng.uniform(0.15, 0.5) * min(h, w)
        blob = _circle(1.0, points=int(rng.integers(4, 9))) * rng.uniform(0.6, 1.0, (1, 1))
        outline = _transform([blob], centre, radius, float(np.exp(rng.uniform(-0.5, 0.5))), float(rng.uniform(0, 360)))
        mask, origin = _render(outline, [])
        angle, period = rng.uniform(0, np.pi), rng.uniform(4, 30)
        checked = rng.random() < 0.5
        colours = rng.uniform(30, 225, (2, 3)).astype(np.float32)
        window = _window(mask, origin, hw)
        if window is None:
            continue
        (iy, ix), (my, mx) = window
        yy = np.arange(iy.start, iy.stop, dtype=np.float32)[:, None]
        xx = np.arange(ix.start, ix.stop, dtype=np.float32)[None, :]
        pattern = np.sin((xx * np.cos(angle) + yy * np.sin(angle)) * 2 * np.pi / period)
        if checked:
            pattern = np.sign(pattern * np.sin((-xx * np.sin(angle) + yy * np.cos(angle)) * 2 * np.pi / period))
        patch = colours[0] + (colours[1] - colours[0]) * (0.5 + 0.5 * pattern[..., None])
        inside = mask[my, mx] > 0
        image[iy, ix][inside] = patch[inside]
    return image


def _distractor(rng: np.random.Generator, image: np.ndarray, owner: np.ndarray, size_range) -> None:
    """Draw one thing that is in no class; where it covers an object, that object is hidden (owner -1)."""
    h, w = image.shape[:2]
    size = float(np.exp(rng.uniform(np.log(size_range[0]), np.log(size_range[1]))))
    centre = rng.uniform(0, 1, 2) * (w, h)
    colour = tuple(float(c) for c in rng.uniform(0, 255, 3))
    drawn = np.zeros((h, w), np.uint8)
    kind = rng.choice(["blob", "ellipse", "bar", "line", "arc", "text"], p=[0.25, 0.15, 0.15, 0.2, 0.1, 0.15])
    if kind == "blob":  # an irregular polygon: many vertices at random radii
        n = int(rng.integers(7, 13))
        angles = np.sort(rng.uniform(0, 2 * np.pi, n))
        radii = rng.uniform(0.35, 1.0, n)
        blob = np.stack([radii * np.cos(angles), radii * np.sin(angles)], axis=1)
        _fill(drawn, _transform([blob], centre, size / 2, 1.0, 0.0), (0, 0), 1)
    elif kind == "ellipse":  # long, so never a disc
        axes = (max(1, round(size / 2)), max(1, round(size / 2 / rng.uniform(2.2, 4.0))))
        c = (round(centre[0]), round(centre[1]))
        cv2.ellipse(drawn, c, axes, float(rng.uniform(0, 180)), 0, 360, 1, thickness=-1)
    elif kind == "bar":
        bar = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], float)
        _fill(drawn, _transform([bar], centre, size / 2, float(rng.uniform(9, 25)), float(rng.uniform(0, 180))),
              (0, 0), 1)  # fmt: skip
    elif kind == "line":
        points = centre + rng.normal(0, size / 2, (int(rng.integers(2, 5)), 2))
        cv2.polylines(drawn, [np.round(points).astype(np.int32)], False, 1, thickness=int(rng.integers(1, 5)))
    elif kind == "arc":
        axes = (max(1, round(size / 2)), max(1, round(size / 2 * rng.uniform(0.5, 1.0))))
        start = float(rng.uniform(0, 360))
        c = (round(centre[0]), round(centre[1]))
        cv2.ellipse(drawn, c, axes, 0, start, start + float(rng.uniform(60, 200)), 1, int(rng.integers(1, 4)))
    else:  # letters and digits (none of them shaped like a class)
        text = "".join(rng.choice(list("ABEFGHKLMNPRSUVWYZabdeghkmnprsuwyz2345679"), int(rng.integers(1, 5))))
        scale = max(0.3, size / 30)
        origin = (round(centre[0]), round(centre[1]))
        font = int(rng.choice([cv2.FONT_HERSHEY_SIMPLEX, cv2.FONT_HERSHEY_DUPLEX, cv2.FONT_HERSHEY_COMPLEX]))
        cv2.putText(drawn, text, origin, font, scale, 1, max(1, round(scale * 1.5)), cv2.LINE_8)
    covered = drawn > 0
    image[covered] = colour
    owner[covered] = -1


def _paint(rng: np.random.Generator, hw: tuple[int, int], under: np.ndarray, name: str) -> np.ndarray:
    """An object's surface over a canvas of size `hw`: a colour that stands out from `under` (the mean
    colour it covers), shaded by a gradient, sometimes striped: (h, w, 3) float32. Any class any colour."""
    for _ in range(8):
        colour = rng.uniform(0, 255, 3)
        if np.linalg.norm(colour - under) > 90:
            break
    h, w = hw
    yy, xx = np.arange(h, dtype=np.float32)[:, None], np.arange(w, dtype=np.float32)[None, :]
    angle = rng.uniform(0, 2 * np.pi)
    ramp = (xx * np.cos(angle) + yy * np.sin(angle)) / max(h, w, 1)
    surface = colour + rng.uniform(-50, 50) * ramp[..., None]
    if rng.random() < 0.25:
        period = rng.uniform(3, 8)
        surface += 25 * np.sin((xx * np.sin(angle) - yy * np.cos(angle)) * 2 * np.pi / period)[..., None]
    return surface


@dataclass(frozen=True)
class SceneStyle:
    """How a "clutter", "photos" or "objects" image is composed (see the module's docstring).

    background: (rng, hw) -> (h, w, 3) float32 BGR.
    surface: (rng, canvas hw, mean BGR it covers, class name) -> an object's (h, w, 3) float32 surface.
    behind, in_front: (low, high) distractors drawn behind / over the objects (rng.integers' range).
    object_side: (smallest px, largest as a share of the shorter side) of an object's longer side.
    shadow: draw a soft shadow under each object.
    """

    background: Callable[[np.random.Generator, tuple[int, int]], np.ndarray]
    surface: Callable[[np.random.Generator, tuple[int, int], np.ndarray, str], np.ndarray]
    behind: tuple[int, int] = (4, 16)
    in_front: tuple[int, int] = (0, 4)
    object_side: tuple[float, float] = (MIN_OBJECT_SIDE, 0.5)
    shadow: bool = False


CLUTTER_STYLE = SceneStyle(_clutter_background, _paint)


def _place(rng, name: str, hw: tuple[int, int], size_range, truncated_share: float, placed: list[np.ndarray]):
    """Where an object of class `name` goes: (its solid and hole polygons in the image, its full box),
    or None when 20 tries all overlapped an object already placed (box IoU 0.3 or more)."""
    h, w = hw
    solid, holes, max_turn = _unit_shape(name, rng)
    for _attempt in range(20):
        side = float(np.exp(rng.uniform(np.log(size_range[0]), np.log(size_range[1]))))
        aspect = float(np.exp(rng.uniform(-0.2, 0.2)))
        turn = float(rng.uniform(-max_turn, max_turn))
        if name == "arrow":  # any of four directions
            turn += 90.0 * int(rng.integers(4))
        # The radius that makes the turned, stretched shape's longer side `side` pixels.
        unit = np.concatenate(_transform(solid, (0.0, 0.0), 1.0, aspect, turn))
        radius = side / float((unit.max(axis=0) - unit.min(axis=0)).max())
        if rng.random() < truncated_share:  # the centre near a border, the shape across it
            half = side / 2
            centre = rng.uniform(half, (w - half, h - half))
            axis = int(rng.integers(2))
            centre[axis] = rng.uniform(-0.4, 0.6) * half
            if rng.random() < 0.5:
                centre[axis] = hw[1 - axis] - centre[axis]
        else:
            centre = rng.uniform(side / 2, (w - side / 2, h - side / 2))
        outline = _transform(solid, centre, radius, aspect, turn)
        points = np.concatenate(outline)
        full_box = np.concatenate([points.min(axis=0), points.max(axis=0)]).astype(np.float32)
        if not placed or box_iou(full_box[None], np.stack(placed)).max() < 0.3:
            return (outline, _transform(holes, centre, radius, aspect, turn)), full_box
    return None


def _shade(image: np.ndarray, mask: np.ndarray, origin: tuple[int, int], offset: int) -> None:
    """A soft shadow of `mask` cast `offset` px down and right: the pixels under it darkened."""
    h, w = image.shape[:2]
    pad = 2 * offset
    canvas = np.zeros((mask.shape[0] + 2 * pad, mask.shape[1] + 2 * pad), np.float32)
    canvas[pad + offset : pad + offset + mask.shape[0], pad + offset : pad + offset + mask.shape[1]] = mask
    canvas = cv2.GaussianBlur(canvas, (0, 0), max(1.0, offset / 1.5))
    window = _window(canvas, (origin[0] - pad, origin[1] - pad), (h, w))
    if window is not None:
        (iy, ix), (my, mx) = window
        image[iy, ix] *= (1.0 - 0.45 * canvas[my, mx])[..., None]


def _annotate(objects: list, owner: np.ndarray, hw: tuple[int, int]):
    """Boxes of the visible pixels of each object (hidden ones dropped), with their names and VOC flags."""
    boxes, names, difficult, truncated = [], [], [], []
    for index, (name, mask, origin, full_pixels) in enumerate(objects):
        (iy, ix), (my, mx) = _window(mask, origin, hw)
        visible = owner[iy, ix] == index
        if not visible.any():
            continue
        ys, xs = np.nonzero(visible)
        box = np.array([ix.start + xs.min(), iy.start + ys.min(), ix.start + xs.max() + 1, iy.start + ys.max() + 1])
        if min(box[2:] - box[:2]) < 2:
            continue
        boxes.append(box.astype(np.float32))
        names.append(name)
        fraction = visible.sum() / full_pixels
        difficult.append(bool(max(box[2:] - box[:2]) < DIFFICULT_SIDE or fraction < DIFFICULT_VISIBLE))
        truncated.append(bool(mask[my, mx].sum() < full_pixels))
    return (
        np.asarray(boxes, np.float32).reshape(-1, 4), names, np.asarray(difficult, bool), np.asarray(truncated, bool)
    )


def _camera(rng: np.random.Generator, image: np.ndarray) -> np.ndarray:
    """Uneven light, a little blur, sensor noise (JPEG compression comes when written): uint8."""
    h, w = image.shape[:2]
    yy, xx = np.arange(h, dtype=np.float32)[:, None], np.arange(w, dtype=np.float32)[None, :]
    angle = rng.uniform(0, 2 * np.pi)
    ramp = (xx * np.cos(angle) + yy * np.sin(angle)) / max(h, w)
    light = 1.0 + rng.uniform(0.1, 0.5) * (ramp - ramp.mean()) + 0.1 * _smooth_field(rng, (h, w), 2, 1)[..., 0]
    image *= (rng.uniform(0.7, 1.2) * light)[..., None]
    if rng.random() < 0.6:
        image = cv2.GaussianBlur(image, (0, 0), float(rng.uniform(0.3, 1.3)))
    image += rng.standard_normal(image.shape, dtype=np.float32) * np.float32(rng.uniform(2, 10))
    return np.clip(image, 0, 255, out=image).astype(np.uint8)


def make_clutter_image(
    rng: np.random.Generator,
    hw: tuple[int, int],
    max_objects: int = 8,
    truncated_share: float = 0.15,
    style: SceneStyle = CLUTTER_STYLE,
) -> tuple[np.ndarray, np.ndarray, list[str], np.ndarray, np.ndarray]:
    """One image of the "clutter" preset, or of "photos" with its style (see the module's docstring).

    Args:
        rng: all randomness comes from it.
        hw: (height, width) of the image.
        max_objects: objects placed (1..max_objects drawn; an object hidden completely is not annotated).
        truncated_share: the probability that an object is placed across the image border.
        style: background, surfaces, distractors and sizes (CLUTTER_STYLE, or photos_style()).
    Returns:
        image (H, W, 3) uint8 BGR, boxes (M, 4) pixel xyxy (integers, the visible pixels), class
        names (M), difficult (M,) bool, truncated (M,) bool.
    """
    h, w = hw
    image = style.background(rng, hw)
    owner = np.full((h, w), -1, np.int32)  # which object each pixel shows (-1: none)
    largest = min(h, w) / 2
    size_range = (style.object_side[0], min(h, w) * style.object_side[1])
    for _ in range(int(rng.integers(*style.behind))):  # clutter behind the objects
        _distractor(rng, image, owner, (6, largest * 0.8))

    objects, placed = [], []  # (name, canvas mask, origin, full pixel count); full boxes
    for _ in range(int(rng.integers(1, max_objects + 1))):
        name = CLUTTER_CLASSES[int(rng.integers(len(CLUTTER_CLASSES)))]
        place = _place(rng, name, hw, size_range, truncated_share, placed)
        if place is None:
            continue
        (outline, holes), full_box = place
        mask, origin = _render(outline, holes)
        window = _window(mask, origin, hw)
        if window is None:
            continue
        (iy, ix), (my, mx) = window
        inside = mask[my, mx] > 0
        if not inside.any():
            continue
        if style.shadow:
            _shade(image, mask, origin, max(1, round(0.06 * max(mask.shape))))
        under = image[iy, ix][inside].mean(axis=0)
        surface = style.surface(rng, mask.shape, under, name)[my, mx]
        image[iy, ix][inside] = surface[inside]
        owner[iy, ix][inside] = len(objects)
        objects.append((name, mask, origin, int(mask.sum())))
        placed.append(full_box)

    for _ in range(int(rng.integers(*style.in_front))):  # in front: occluders
        _distractor(rng, image, owner, (6, largest * 0.6))
    boxes, names, difficult, truncated = _annotate(objects, owner, hw)
    return _camera(rng, image), boxes, names, difficult, truncated


# ---------------------------------------------------------------------------------------------
# The "photos" preset


def load_photos() -> list[np.ndarray]:
    """scikit-image's bundled photographs (PHOTO_FILES) as BGR uint8 images (grey ones as three equal channels).

    Raises:
        PhotosUnavailable: scikit-image is not installed, or a photograph is missing from it.
    """
    try:
        import skimage.data
    except ImportError:
        raise PhotosUnavailable(
            'the "photos" preset draws on scikit-image\'s photographs: pip install scikit-image'
        ) from None
    folder = Path(skimage.data.__file__).parent
    photos = []
    for name in PHOTO_FILES:
        image = cv2.imread(str(folder / name), cv2.IMREAD_COLOR)
        if image is None:
            raise PhotosUnavailable(f"{folder / name}: missing or unreadable (scikit-image {skimage.__version__})")
        photos.append(image)
    return photos


def _photo_crop(rng: np.random.Generator, photo: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """A random crop of `photo` (a fifth to all of its shorter side, the aspect of `hw`), resized to `hw`,
    flipped half the time: (h, w, 3) float32."""
    h, w = hw
    ph, pw = photo.shape[:2]
    scale = rng.uniform(0.2, 1.0) * min(ph / h, pw / w)
    ch, cw = max(2, min(ph, round(h * scale))), max(2, min(pw, round(w * scale)))
    y, x = int(rng.integers(0, ph - ch + 1)), int(rng.integers(0, pw - cw + 1))
    crop = cv2.resize(photo[y : y + ch, x : x + cw], (w, h), interpolation=cv2.INTER_LINEAR).astype(np.float32)
    return crop[:, ::-1] if rng.random() < 0.5 else crop


def _photo_detail(rng: np.random.Generator, photos: list[np.ndarray], hw: tuple[int, int], contrast) -> tuple:
    """A crop of a random photograph of `photos` resized to `hw` (float32 BGR), and its detail: its
    grey levels about their mean, the contrast damped by a factor drawn from `contrast` ((h, w, 1))."""
    texture = _photo_crop(rng, photos[int(rng.integers(len(photos)))], hw)
    grey = texture.mean(axis=2, keepdims=True)
    return texture, (grey - grey.mean()) * rng.uniform(*contrast)


def photos_style(photos: list[np.ndarray]) -> SceneStyle:
    """The "photos" preset's style over `photos` (load_photos()): photograph backgrounds and surfaces."""

    def background(rng: np.random.Generator, hw: tuple[int, int]) -> np.ndarray:
        image = _photo_crop(rng, photos[int(rng.integers(len(photos)))], hw)
        if rng.random() < 0.1:  # a grey photograph
            return np.repeat(image.mean(axis=2, keepdims=True), 3, axis=2)
        return np.clip(image * rng.uniform(0.8, 1.2, 3).astype(np.float32) + rng.uniform(-20, 20), 0, 255)

    def surface(rng: np.random.Generator, hw: tuple[int, int], under: np.ndarray, name: str) -> np.ndarray:
        texture, grey = _photo_detail(rng, photos, hw, (0.3, 0.8))
        for _ in range(8):  # a tint that stands apart from what the object covers
            tint = rng.uniform(0, 255, 3)
            if np.linalg.norm(tint - under) > 80:
                break
        mix = rng.uniform(0.0, 0.35)  # some of the photograph's own colours show through
        return (1 - mix) * (tint + grey) + mix * texture

    return SceneStyle(background, surface, behind=(0, 3), in_front=(0, 2), object_side=PHOTO_OBJECT_SIDE, shadow=True)


def objects_style(photos: list[np.ndarray]) -> SceneStyle:
    """The "objects" preset's style over `photos` (load_photos()): "photos" with a colour per class.

    Each class's surface takes its own hue (OBJECT_HUES, jittered by a few degrees; saturation and
    brightness vary widely) over a photograph's damped detail, so colour and outline both tell the
    classes apart, as the look of real objects does; in grey images only the outline is left.
    """
    base = photos_style(photos)

    def surface(rng: np.random.Generator, hw: tuple[int, int], under: np.ndarray, name: str) -> np.ndarray:
        texture, grey = _photo_detail(rng, photos, hw, (0.2, 0.6))
        hue = (OBJECT_HUES[CLUTTER_CLASSES.index(name)] + rng.uniform(-4, 4)) % 180
        hsv = np.array([[[hue, rng.uniform(130, 255), rng.uniform(110, 240)]]]).round().astype(np.uint8)
        colour = cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)[0, 0].astype(np.float32)
        mix = rng.uniform(0.0, 0.2)
        return (1 - mix) * (colour + grey) + mix * texture

    return replace(base, surface=surface, object_side=OBJECT_SIDE)


# ---------------------------------------------------------------------------------------------


def write_demo_dataset(
    root: str | Path,
    splits: dict[str, int] | None = None,
    image_size: int | tuple[int, int] | None = None,
    seed: int = 0,
    preset: str = "shapes",
) -> Path:
    """Write a generated set in VOC2007 layout under `root` and return `root`.

    Writes Annotations/*.xml, JPEGImages/*.jpg, ImageSets/Main/<split>.txt for each split
    (and trainval.txt), and classes.txt (one class name a line).

    Args:
        root: output folder (created).
        splits: images per split; default DEMO_SPLITS ("shapes") or CLUTTER_SPLITS (the others).
        image_size: an int: square images of that side; (smallest, largest): "shapes" draws each
            image's side from that range (square images of varied sizes), the others draw
            width and height apart. Default 192 ("shapes") or CLUTTER_IMAGE_SIZE.
        seed: everything is drawn from this seed.
        preset: one of PRESETS: "shapes" (the demo), "clutter", "photos" or "objects" (see the module's
            docstring).

    Raises:
        PhotosUnavailable: "photos" or "objects" without scikit-image (nothing is written).
    """
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose from {', '.join(PRESETS)}")
    clutter = preset != "shapes"
    style = CLUTTER_STYLE
    if preset in ("photos", "objects"):
        style = (photos_style if preset == "photos" else objects_style)(load_photos())
    root = Path(root)
    splits = dict((CLUTTER_SPLITS if clutter else DEMO_SPLITS) if splits is None else splits)
    if image_size is None:
        image_size = CLUTTER_IMAGE_SIZE if clutter else 192
    for sub in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)

    def side() -> int:
        return image_size if isinstance(image_size, int) else int(rng.integers(image_size[0], image_size[1] + 1))

    number = 0
    trainval: list[str] = []
    for split, count in splits.items():
        ids = []
        for _ in range(count):
            image_id = f"{number:06d}"
            number += 1
            xml = root / "Annotations" / f"{image_id}.xml"
            if clutter:
                hw = (side(), side())
                image, boxes, names, difficult, truncated = make_clutter_image(
                    rng, hw, max_objects=8 if preset == "clutter" else 6, style=style
                )
                quality = int(rng.integers(60, 96))
                write_voc_xml(xml, f"{image_id}.jpg", hw, boxes, names, difficult, truncated)
            else:
                image, boxes, names = make_demo_image(rng, image_size=side())
                quality = 95
                write_voc_xml(xml, f"{image_id}.jpg", image.shape[:2], boxes, names)
            cv2.imwrite(str(root / "JPEGImages" / f"{image_id}.jpg"), image, [cv2.IMWRITE_JPEG_QUALITY, quality])
            ids.append(image_id)
        (root / "ImageSets" / "Main" / f"{split}.txt").write_text("".join(f"{i}\n" for i in ids))
        if split in ("train", "val"):
            trainval += ids
    (root / "ImageSets" / "Main" / "trainval.txt").write_text("".join(f"{i}\n" for i in trainval))
    classes = CLUTTER_CLASSES if clutter else DEMO_CLASSES
    (root / "classes.txt").write_text("".join(f"{name}\n" for name in classes))
    return root
