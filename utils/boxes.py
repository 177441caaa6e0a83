"""Box formats: the one module where they are named and converted.

Conventions used everywhere in this project
-------------------------------------------
* Coordinates are continuous: the image spans [0, width] x [0, height], origin at the
  top-left corner, x to the right, y down. A box covering pixel columns 10..19 is x 10 to 20.
  No "+1" is ever added (unlike the VOC devkit's inclusive pixel indices).
* **The canonical format is pixel `xyxy`.** Annotation lines, decoded detections, predict.py's
  JSON and the mAP code all use it. Every other format converts through it.

Named formats (the last axis always has 4 values):

===================  ==========================================  ===========================
name                 values                                      used by
===================  ==========================================  ===========================
``xyxy``             x_min, y_min, x_max, y_max (pixels)         everything (canonical)
``yxyx``             y_min, x_min, y_max, x_max (pixels)         tf.image NMS
``xywh``             x_min, y_min, width, height (pixels)        COCO JSON ``bbox``
``center_xywh``      x_center, y_center, width, height (pixels)  YOLO decoding
``rel_xyxy``         as ``xyxy`` divided by image width/height   letterboxed network space
``rel_center_xywh``  as ``center_xywh`` divided likewise         training targets
===================  ==========================================  ===========================

The functions accept NumPy arrays or TensorFlow tensors of shape (..., 4) and return the same
kind. Relative formats need ``image_shape=(height, width)``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

FORMATS = ("xyxy", "yxyx", "xywh", "center_xywh", "rel_xyxy", "rel_center_xywh")


def _stack(parts: list, like: Any):
    if isinstance(like, np.ndarray):
        return np.stack(parts, axis=-1)
    import tensorflow as tf

    return tf.stack(parts, axis=-1)


def _check(boxes, fmt: str) -> None:
    if fmt not in FORMATS:
        raise ValueError(f"Unknown box format {fmt!r}; expected one of {FORMATS}")
    if boxes.shape[-1] != 4:
        raise ValueError(f"Boxes must have 4 values on the last axis, got shape {tuple(boxes.shape)}")


def convert_format(boxes, source: str, target: str, image_shape: tuple[int, int] | None = None):
    """Convert boxes between the named formats.

    Args:
        boxes: float array or tensor, shape (..., 4), in `source` format.
        source, target: names from `FORMATS`.
        image_shape: (height, width) in pixels; required when either format is relative.

    Returns: boxes in `target` format, same shape and kind (NumPy or tensor).
    """
    if isinstance(boxes, (list, tuple)):
        boxes = np.asarray(boxes, dtype=np.float32)
    _check(boxes, source)
    _check(boxes, target)
    if source == target:
        return boxes
    if (source.startswith("rel_") or target.startswith("rel_")) and image_shape is None:
        raise ValueError(f"Converting {source!r} to {target!r} needs image_shape=(height, width)")

    a, b, c, d = boxes[..., 0], boxes[..., 1], boxes[..., 2], boxes[..., 3]
    # To canonical pixel xyxy.
    if source.startswith("rel_"):
        height, width = image_shape
        a, b, c, d = a * width, b * height, c * width, d * height
    base = source.removeprefix("rel_")
    if base == "xyxy":
        x1, y1, x2, y2 = a, b, c, d
    elif base == "yxyx":
        x1, y1, x2, y2 = b, a, d, c
    elif base == "xywh":
        x1, y1, x2, y2 = a, b, a + c, b + d
    else:  # center_xywh
        x1, y1, x2, y2 = a - c / 2, b - d / 2, a + c / 2, b + d / 2

    # From canonical pixel xyxy.
    base = target.removeprefix("rel_")
    if base == "xyxy":
        out = [x1, y1, x2, y2]
    elif base == "yxyx":
        out = [y1, x1, y2, x2]
    elif base == "xywh":
        out = [x1, y1, x2 - x1, y2 - y1]
    else:  # center_xywh
        out = [(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1]
    if target.startswith("rel_"):
        height, width = image_shape
        out = [out[0] / width, out[1] / height, out[2] / width, out[3] / height]
    return _stack(out, boxes)


def box_area(boxes: np.ndarray) -> np.ndarray:
    """Area of pixel xyxy boxes, shape (..., 4) -> (...). Inverted boxes have area 0."""
    _check(boxes, "xyxy")
    return np.clip(boxes[..., 2] - boxes[..., 0], 0, None) * np.clip(boxes[..., 3] - boxes[..., 1], 0, None)


def box_iou(boxes1: np.ndarray, boxes2: np.ndarray) -> np.ndarray:
    """Pairwise IoU of pixel xyxy boxes.

    Args:
        boxes1: shape (N, 4), xyxy.
        boxes2: shape (M, 4), xyxy.
    Returns: shape (N, M); 0 where the union is empty.
    """
    boxes1 = np.asarray(boxes1, dtype=np.float64).reshape(-1, 4)
    boxes2 = np.asarray(boxes2, dtype=np.float64).reshape(-1, 4)
    return box_iou_aligned(boxes1[:, None, :], boxes2[None, :, :])


def box_iou_aligned(boxes1: np.ndarray, boxes2: np.ndarray) -> np.ndarray:
    """Element-wise IoU of pixel xyxy boxes: box i of `boxes1` with box i of `boxes2`.

    `box_iou` is this with broadcasting over all pairs; the mAP code uses it directly on
    precomputed (detection, ground truth) pairs so it never builds an N x M matrix.

    Args:
        boxes1: shape (..., 4), xyxy.
        boxes2: shape (..., 4), xyxy, broadcastable against `boxes1`.
    Returns: float64, the broadcast shape without the last axis; 0 where the union is empty.
    """
    boxes1 = np.asarray(boxes1, dtype=np.float64)
    boxes2 = np.asarray(boxes2, dtype=np.float64)
    _check(boxes1, "xyxy")
    _check(boxes2, "xyxy")
    top_left = np.maximum(boxes1[..., :2], boxes2[..., :2])
    bottom_right = np.minimum(boxes1[..., 2:], boxes2[..., 2:])
    wh = np.clip(bottom_right - top_left, 0, None)
    inter = wh[..., 0] * wh[..., 1]
    union = box_area(boxes1) + box_area(boxes2) - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def clip_boxes(boxes: np.ndarray, image_shape: tuple[int, int]) -> np.ndarray:
    """Clip pixel xyxy boxes, shape (..., 4), to an image of (height, width)."""
    _check(boxes, "xyxy")
    height, width = image_shape
    limits = np.array([width, height, width, height], dtype=boxes.dtype)
    return np.clip(boxes, 0, limits)
