"""One small data set written as VOC, as YOLO txt (data.yaml) and as COCO JSON, for the data-layer tests.

Class names are Chinese (and one has a space), folders and file names have spaces and Chinese
characters, images are tiny and not square. The objects are the same in the three formats; YOLO
has no difficult flag, so the difficult object is left out of its labels.
"""

from __future__ import annotations

import json
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

from utils.boxes import convert_format
from utils.data.voc import write_voc_xml

CLASSES = ["猫", "小 狗", "bird"]
# file stem -> ((height, width), boxes pixel xyxy, class names, difficult)
IMAGES = {
    "图 1": ((48, 64), [[4, 4, 30, 30], [34, 10, 60, 40]], ["猫", "小 狗"], [False, False]),
    "图 2": ((64, 48), [[10, 8, 40, 50]], ["bird"], [False]),
    "photo 3": ((48, 64), [[0, 0, 20, 20], [30, 5, 62, 47], [2, 30, 12, 46]], ["猫", "猫", "bird"], [0, 0, 1]),
    "空": ((48, 64), [], [], []),
    "验证 5": ((48, 64), [[8, 6, 40, 44], [44, 20, 60, 36]], ["小 狗", "bird"], [False, False]),
    "验证 6": ((64, 64), [[5, 5, 50, 60]], ["猫"], [False]),
}
SPLITS = {"train": ["图 1", "图 2", "photo 3", "空"], "val": ["验证 5", "验证 6"]}


def write_images(folder: Path, names: list[str], seed: int = 0) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (height, width), boxes, _, _ = IMAGES[name]
        rng = np.random.default_rng(zlib.crc32(name.encode()) + seed)
        pixels = rng.integers(60, 200, (height, width, 3), dtype=np.uint8)
        for (x1, y1, x2, y2), colour in zip(boxes, ((230, 40, 40), (40, 230, 40), (40, 40, 230)) * 3, strict=False):
            pixels[y1:y2, x1:x2] = colour
        Image.fromarray(pixels).save(folder / f"{name}.jpg", quality=95)


def write_voc(root: Path, splits: dict[str, list[str]] = SPLITS) -> Path:
    """A VOC folder (Annotations/, JPEGImages/, ImageSets/Main/) and classes.txt beside its sets."""
    names = [n for split in splits.values() for n in split]
    write_images(root / "JPEGImages", names)
    (root / "Annotations").mkdir(parents=True, exist_ok=True)
    (root / "ImageSets" / "Main").mkdir(parents=True, exist_ok=True)
    for name in names:
        hw, boxes, classes, difficult = IMAGES[name]
        xml = root / "Annotations" / f"{name}.xml"
        write_voc_xml(xml, f"{name}.jpg", hw, np.array(boxes).reshape(-1, 4), classes, np.array(difficult, bool))
    for split, members in splits.items():
        (root / "ImageSets" / "Main" / f"{split}.txt").write_text("".join(f"{n}\n" for n in members), "utf-8")
    (root / "classes.txt").write_text("".join(f"{c}\n" for c in CLASSES), "utf-8")
    return root


def write_yolo(root: Path, splits: dict[str, list[str]] = SPLITS) -> Path:
    """images/<split>/, labels/<split>/ and data.yaml (names as a mapping); returns the yaml."""
    for split, members in splits.items():
        write_images(root / "images" / split, members)
        (root / "labels" / split).mkdir(parents=True, exist_ok=True)
        for name in members:
            hw, boxes, classes, difficult = IMAGES[name]
            lines = []
            for box, cls, is_difficult in zip(boxes, classes, difficult, strict=True):
                if is_difficult:
                    continue
                values = convert_format(np.array(box, np.float64), "xyxy", "rel_center_xywh", hw)
                lines.append(f"{CLASSES.index(cls)} " + " ".join(repr(float(v)) for v in values))
            if name != "空":  # no label file at all: an image without objects
                (root / "labels" / split / f"{name}.txt").write_text("".join(f"{x}\n" for x in lines), "utf-8")
    names = "\n".join(f"  {i}: {json.dumps(c, ensure_ascii=False)}" for i, c in enumerate(CLASSES))
    yaml = root / "data.yaml"
    yaml.write_text(f"path: .\ntrain: images/train\nval: images/val\nnames:\n{names}\n", "utf-8")
    return yaml


def write_coco(root: Path, splits: dict[str, list[str]] = SPLITS) -> Path:
    """annotations/instances_<split>.json and <split>/ images; category ids 1, 3, 7 (not 0..2)."""
    category_ids = [1, 3, 7]
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    next_image, next_annotation = 1, 1
    for split, members in splits.items():
        write_images(root / split, members)
        images, annotations = [], []
        for name in members:
            (height, width), boxes, classes, difficult = IMAGES[name]
            images.append({"id": next_image, "file_name": f"{name}.jpg", "width": width, "height": height})
            for box, cls, is_difficult in zip(boxes, classes, difficult, strict=True):
                x, y, w, h = convert_format(np.array(box, np.float64), "xyxy", "xywh").tolist()
                annotations.append(
                    {"id": next_annotation, "image_id": next_image, "category_id": category_ids[CLASSES.index(cls)],
                     "bbox": [x, y, w, h], "area": w * h, "iscrowd": int(bool(is_difficult))}
                )  # fmt: skip
                next_annotation += 1
            next_image += 1
        categories = [{"id": i, "name": c} for i, c in zip(category_ids, CLASSES, strict=True)]
        content = {"images": images, "annotations": annotations, "categories": categories[::-1]}
        text = json.dumps(content, ensure_ascii=False)
        (root / "annotations" / f"instances_{split}.json").write_text(text, "utf-8")
    return root
