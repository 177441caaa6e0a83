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

`convert_format` accepts NumPy arrays, TensorFlow tensors or tensors of the Keras backend (JAX,
PyTorch) of shape (..., 4) and returns the same kind. Relative formats need ``image_shape=(height, width)``.

Every IoU of the project is here
--------------------------------
=======================  =========  =============================================  ======================
function                 backend    inputs -> output                               used by
=======================  =========  =============================================  ======================
``box_iou``              NumPy      (N, 4), (M, 4) xyxy -> (N, M)                  demo data, tests
``box_iou_aligned``      NumPy      (..., 4), (..., 4) xyxy -> (...)               mAP matching
``shape_iou``            NumPy      (N, 2), (K, 2) width, height -> (N, K)         anchor k-means
``box_ciou_ops``         keras.ops  (..., 4), (..., 4) center_xywh -> (...)        the box loss
``box_iou_batched_ops``  keras.ops  (B, P, 4), (B, T, 4) center_xywh -> (B, P, T)  the loss's ignore mask
``box_iou_pairs_ops``    keras.ops  (B, P, 4), (B, T, 4) xyxy -> (B, P, T)         the detector's box merge
``shape_iou_ops``        keras.ops  (..., 2), (K, 2) width, height -> (..., K)     the loss's assignment
=======================  =========  =============================================  ======================

A name ending in ``_ops`` takes and returns tensors of the Keras backend (TensorFlow, JAX or
PyTorch) and runs inside a traced graph; Keras is imported inside those functions only, so NumPy
users of this module never import it.
"""

from __future__ import annotations

from typing import Any

import numpy as np

FORMATS = ("xyxy", "yxyx", "xywh", "center_xywh", "rel_xyxy", "rel_center_xywh")


def _stack(parts: list, like: Any):
    """`parts` stacked on a new last axis, as the kind of `like`: NumPy, a TensorFlow tensor (in a
    tf.data or tf.function graph too, whatever the Keras backend), or a tensor of the Keras backend."""
    if isinstance(like, np.ndarray):
        return np.stack(parts, axis=-1)
    if type(like).__module__.startswith("tensorflow"):
        import tensorflow as tf

        return tf.stack(parts, axis=-1)
    from keras import ops

    return ops.stack(parts, axis=-1)


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
    inter = box_intersection_aligned(boxes1, boxes2)
    union = box_area(boxes1) + box_area(boxes2) - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def box_intersection_aligned(boxes1: np.ndarray, boxes2: np.ndarray) -> np.ndarray:
    """Element-wise intersection area of pixel xyxy boxes (..., 4), broadcast as `box_iou_aligned`'s."""
    boxes1 = np.asarray(boxes1, dtype=np.float64)
    boxes2 = np.asarray(boxes2, dtype=np.float64)
    _check(boxes1, "xyxy")
    _check(boxes2, "xyxy")
    top_left = np.maximum(boxes1[..., :2], boxes2[..., :2])
    bottom_right = np.minimum(boxes1[..., 2:], boxes2[..., 2:])
    wh = np.clip(bottom_right - top_left, 0, None)
    return wh[..., 0] * wh[..., 1]


def clip_boxes(boxes: np.ndarray, image_shape: tuple[int, int]) -> np.ndarray:
    """Clip pixel xyxy boxes, shape (..., 4), to an image of (height, width)."""
    _check(boxes, "xyxy")
    height, width = image_shape
    limits = np.array([width, height, width, height], dtype=boxes.dtype)
    return np.clip(boxes, 0, limits)


def shape_iou(wh: np.ndarray, anchors: np.ndarray) -> np.ndarray:
    """IoU of boxes and anchors placed on the same centre: only widths and heights count.

    The distance of anchor k-means (1 - shape IoU, YOLOv2's choice).

    Args:
        wh: (N, 2) box widths and heights (pixels).
        anchors: (K, 2) anchor widths and heights (pixels).
    Returns: (N, K); 0 where both areas are 0.
    """
    inter = np.minimum(wh[:, None, 0], anchors[None, :, 0]) * np.minimum(wh[:, None, 1], anchors[None, :, 1])
    union = wh[:, None, 0] * wh[:, None, 1] + anchors[None, :, 0] * anchors[None, :, 1] - inter
    return inter / np.maximum(union, 1e-12)


# ---------------------------------------------------------------------------------------------
# keras.ops versions, for the training loss (any Keras backend). Keras is imported inside each function.


def box_ciou_ops(boxes1, boxes2, eps: float = 1e-9):
    """Complete IoU (Zheng et al., 2020) of matching boxes, in keras.ops.

    CIoU = IoU - rho^2 / c^2 - alpha * v, with rho the distance between the centres, c the
    diagonal of the smallest enclosing box, v = 4 / pi^2 * (atan(w2 / h2) - atan(w1 / h1))^2 and
    alpha = v / (1 - IoU + v) (treated as a constant in the gradient, as the paper does).

    Args:
        boxes1, boxes2: float tensors (..., 4), pixel center_xywh, same shape (box i with box i).
        eps: added to the denominators.
    Returns: (...) CIoU in [-1, 1].
    """
    import math

    from keras import ops

    xy1, wh1 = boxes1[..., :2], boxes1[..., 2:4]
    xy2, wh2 = boxes2[..., :2], boxes2[..., 2:4]
    min1, max1 = xy1 - wh1 / 2, xy1 + wh1 / 2
    min2, max2 = xy2 - wh2 / 2, xy2 + wh2 / 2
    inter_wh = ops.maximum(ops.minimum(max1, max2) - ops.maximum(min1, min2), 0.0)
    inter = inter_wh[..., 0] * inter_wh[..., 1]
    union = wh1[..., 0] * wh1[..., 1] + wh2[..., 0] * wh2[..., 1] - inter
    iou = inter / (union + eps)

    centre_distance = ops.sum(ops.square(xy1 - xy2), axis=-1)
    enclose_wh = ops.maximum(ops.maximum(max1, max2) - ops.minimum(min1, min2), 0.0)
    enclose_diagonal = ops.sum(ops.square(enclose_wh), axis=-1)
    v = (4.0 / math.pi**2) * ops.square(
        ops.arctan(wh2[..., 0] / (wh2[..., 1] + eps)) - ops.arctan(wh1[..., 0] / (wh1[..., 1] + eps))
    )
    alpha = ops.stop_gradient(v / (1.0 - iou + v + eps))
    return iou - centre_distance / (enclose_diagonal + eps) - alpha * v


def box_iou_batched_ops(boxes1, boxes2):
    """IoU of every pair of boxes within each batch item, in keras.ops.

    Args:
        boxes1: float tensor (B, P, 4), pixel center_xywh.
        boxes2: float tensor (B, T, 4), pixel center_xywh.
    Returns: (B, P, T); the union is floored at 1e-9, so empty boxes give 0.
    """
    from keras import ops

    xy1, wh1 = boxes1[:, :, None, :2], boxes1[:, :, None, 2:]  # (B, P, 1, 2)
    xy2, wh2 = boxes2[:, None, :, :2], boxes2[:, None, :, 2:]  # (B, 1, T, 2)
    min1, max1 = xy1 - wh1 / 2, xy1 + wh1 / 2
    min2, max2 = xy2 - wh2 / 2, xy2 + wh2 / 2
    wh = ops.maximum(ops.minimum(max1, max2) - ops.maximum(min1, min2), 0.0)
    inter = wh[..., 0] * wh[..., 1]
    area1 = wh1[..., 0] * wh1[..., 1]
    area2 = wh2[..., 0] * wh2[..., 1]
    return inter / ops.maximum(area1 + area2 - inter, 1e-9)


def box_iou_pairs_ops(boxes1, boxes2):
    """`box_iou_batched_ops` for pixel xyxy boxes, computed coordinate by coordinate (about three
    times faster on a CPU than on stacked (x, y) pairs: the detector's hot path).

    Args:
        boxes1: float tensor (B, P, 4), pixel xyxy.
        boxes2: float tensor (B, T, 4), pixel xyxy.
    Returns: (B, P, T); the union is floored at 1e-12, so empty boxes give 0.
    """
    from keras import ops

    ax1, ay1, ax2, ay2 = (boxes1[..., i][:, :, None] for i in range(4))
    bx1, by1, bx2, by2 = (boxes2[..., i][:, None, :] for i in range(4))
    inter = ops.maximum(ops.minimum(ax2, bx2) - ops.maximum(ax1, bx1), 0.0) * ops.maximum(
        ops.minimum(ay2, by2) - ops.maximum(ay1, by1), 0.0
    )
    union = (ax2 - ax1) * (ay2 - ay1) + (bx2 - bx1) * (by2 - by1) - inter
    return inter / ops.maximum(union, 1e-12)


def shape_iou_ops(wh, anchors):
    """`shape_iou` in keras.ops: boxes and anchors on the same centre.

    Args:
        wh: float tensor (..., 2), box widths and heights (pixels).
        anchors: float tensor (K, 2), anchor widths and heights (pixels).
    Returns: (..., K); 1e-9 is added to the union.
    """
    from keras import ops

    inter = ops.prod(ops.minimum(wh[..., None, :], anchors), axis=-1)
    return inter / (ops.prod(wh, -1)[..., None] + ops.prod(anchors, -1) - inter + 1e-9)
