"""A small, learnable VOC-format data set of coloured shapes: the project's built-in demo data.

Three classes, each a filled shape with its own colour family, on a textured, noisy background:

    circle   - red-ish disc
    square   - green-ish axis-aligned square
    triangle - blue-ish upward triangle

Everything is drawn from one seed, so the same arguments write byte-identical files.
The boxes written to the XML are the tight integer boxes of the drawn shapes (pixel xyxy,
converted to VOC's 1-based inclusive indices by utils.data.voc.write_voc_xml).
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from utils.boxes import box_iou
from utils.data.voc import write_voc_xml

DEMO_CLASSES = ("circle", "square", "triangle")
# BGR base colours (OpenCV order); each object jitters around its class colour.
_CLASS_COLOURS = {"circle": (40, 40, 220), "square": (40, 200, 40), "triangle": (220, 80, 30)}
DEMO_SPLITS = {"train": 320, "val": 64, "test": 32}


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


def write_demo_dataset(
    root: str | Path,
    splits: dict[str, int] | None = None,
    image_size: int | tuple[int, int] = 192,
    seed: int = 0,
) -> Path:
    """Write the demo set in VOC2007 layout under `root` and return `root`.

    Writes Annotations/*.xml, JPEGImages/*.jpg, ImageSets/Main/<split>.txt for each split
    (and trainval.txt), and classes.txt (one class name a line).

    Args:
        root: output folder (created).
        splits: images per split; DEMO_SPLITS by default.
        image_size: square image side in pixels, or (smallest, largest): each image's side drawn
            uniformly from that range (photos of varied sizes, as in benchmarks/bench_train.py).
        seed: everything is drawn from this seed.
    """
    root = Path(root)
    splits = dict(DEMO_SPLITS if splits is None else splits)
    for sub in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    number = 0
    trainval: list[str] = []
    for split, count in splits.items():
        ids = []
        for _ in range(count):
            image_id = f"{number:06d}"
            number += 1
            size = image_size if isinstance(image_size, int) else int(rng.integers(image_size[0], image_size[1] + 1))
            image, boxes, names = make_demo_image(rng, image_size=size)
            cv2.imwrite(str(root / "JPEGImages" / f"{image_id}.jpg"), image, [cv2.IMWRITE_JPEG_QUALITY, 95])
            write_voc_xml(root / "Annotations" / f"{image_id}.xml", f"{image_id}.jpg", image.shape[:2], boxes, names)
            ids.append(image_id)
        (root / "ImageSets" / "Main" / f"{split}.txt").write_text("".join(f"{i}\n" for i in ids))
        if split in ("train", "val"):
            trainval += ids
    (root / "ImageSets" / "Main" / "trainval.txt").write_text("".join(f"{i}\n" for i in trainval))
    (root / "classes.txt").write_text("".join(f"{name}\n" for name in DEMO_CLASSES))
    return root
