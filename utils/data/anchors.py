"""Anchor boxes from data: IoU k-means over ground-truth widths and heights.

The distance is 1 - IoU of two boxes sharing a centre (YOLOv2's choice; `utils.boxes.shape_iou`),
so anchors fit small and large boxes alike instead of being pulled by big boxes' pixel errors.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from utils.boxes import shape_iou
from utils.data.annotations import AnnotatedImage
from utils.data.images import image_size
from utils.errors import YoloError
from utils.inference.letterbox import letterbox_info

# Below this mean best-anchor IoU, training warns that the anchors fit the data poorly.
POOR_ANCHOR_FIT = 0.5


class AnchorError(YoloError, ValueError):
    """Too few boxes to fit the anchors."""


def box_sizes(images: Sequence[AnnotatedImage], input_hw: tuple[int, int]) -> np.ndarray:
    """Widths and heights (N, 2) of all boxes as letterboxed into the network input (pixels).

    The image size is the one the record states (`AnnotatedImage.size`: VOC <size>, COCO's, the
    YOLO image's header), else read from the image's header (as displayed, like `load_image`).
    Boxes are pixel xyxy in the original image.
    """
    sizes = []
    for item in images:
        if not len(item.boxes):
            continue
        sx, sy = letterbox_info(item.size or image_size(item.path), input_hw).scale_xy
        wh = item.boxes[:, 2:4] - item.boxes[:, 0:2]
        sizes.append(wh * np.array([sx, sy], np.float32))
    return np.concatenate(sizes).astype(np.float64) if sizes else np.zeros((0, 2))


def anchor_fit(wh: np.ndarray, anchors: np.ndarray) -> float:
    """Mean over boxes (N, 2) of the best shape IoU any anchor (K, 2) reaches; NaN without boxes."""
    wh = np.asarray(wh, dtype=np.float64).reshape(-1, 2)
    if not len(wh):
        return float("nan")
    return float(shape_iou(wh, np.asarray(anchors, dtype=np.float64)).max(axis=1).mean())


def iou_kmeans(wh: np.ndarray, k: int, seed: int = 0, max_iter: int = 300) -> tuple[np.ndarray, float]:
    """k-means with distance 1 - IoU.

    Args:
        wh: (N, 2) box widths and heights, N >= k.
        k: number of anchors.
    Returns: anchors (k, 2) sorted by area, and the mean over boxes of the best anchor IoU.
    """
    wh = np.asarray(wh, dtype=np.float64)
    if len(wh) < k:
        raise AnchorError(f"need at least {k} boxes for {k} anchors, got {len(wh)}")
    rng = np.random.default_rng(seed)
    centres = wh[rng.choice(len(wh), k, replace=False)]
    assignment = np.full(len(wh), -1)
    for _ in range(max_iter):
        new_assignment = np.argmax(shape_iou(wh, centres), axis=1)
        if np.array_equal(new_assignment, assignment):
            break
        assignment = new_assignment
        for cluster in range(k):
            members = wh[assignment == cluster]
            # The median is robust to outliers (as in the common YOLO anchor scripts); an empty
            # cluster is reseeded on the box the current anchors fit worst.
            centres[cluster] = (
                np.median(members, axis=0) if len(members) else wh[np.argmin(shape_iou(wh, centres).max(1))]
            )
    centres = centres[np.argsort(centres[:, 0] * centres[:, 1])]
    return centres, float(shape_iou(wh, centres).max(axis=1).mean())
