"""Annotation lines: the training set's on-disk index, one image a line.

    /abs/path/image.jpg x1,y1,x2,y2,class_id x1,y1,x2,y2,class_id ...

Boxes are pixel `xyxy` in the original image (continuous coordinates, see utils.boxes);
class_id indexes the class list. An image with no objects is a line with only its path.
Paths must not contain spaces (the separator).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from utils.errors import YoloError


class AnnotationError(YoloError, ValueError):
    """An annotation line or file that cannot be used; the message names the file (and line)."""


@dataclass
class AnnotatedImage:
    """One parsed annotation line: boxes (M, 4) float32 pixel xyxy, class_ids (M,) int32."""

    path: str
    boxes: np.ndarray
    class_ids: np.ndarray


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:.2f}"


def format_annotation_line(path: str | Path, boxes: np.ndarray, class_ids: np.ndarray) -> str:
    """One line for an image; boxes (M, 4) pixel xyxy, class_ids (M,)."""
    path = str(path)
    if any(c.isspace() for c in path):
        raise AnnotationError(f"{path}: image paths in annotation lines cannot contain whitespace")
    boxes = np.asarray(boxes).reshape(-1, 4)
    parts = [path] + [
        ",".join(_number(v) for v in box) + f",{int(c)}" for box, c in zip(boxes, np.asarray(class_ids), strict=True)
    ]
    return " ".join(parts)


def parse_annotation_line(line: str) -> AnnotatedImage:
    """Inverse of `format_annotation_line`. Raises AnnotationError on a malformed box."""
    parts = line.split()
    if not parts:
        raise AnnotationError("empty annotation line")
    try:
        values = np.array([[float(v) for v in p.split(",")] for p in parts[1:]], dtype=np.float32)
    except ValueError as err:
        raise AnnotationError(f"{parts[0]}: malformed box in annotation line ({err})") from None
    if len(parts) > 1 and values.shape[1] != 5:
        raise AnnotationError(f"{parts[0]}: each box needs x1,y1,x2,y2,class")
    values = values.reshape(-1, 5)
    return AnnotatedImage(parts[0], values[:, :4].copy(), values[:, 4].astype(np.int32))


def read_annotation_lines(path: str | Path) -> list[AnnotatedImage]:
    """All images of an annotation file; raises AnnotationError naming the file and line when one is bad."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise AnnotationError(f"{path}: cannot read ({err})") from None
    images = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            images.append(parse_annotation_line(line))
        except AnnotationError as err:
            raise AnnotationError(f"{path}:{number}: {err}") from None
    return images
