"""The fixed batches on which the loss is pinned (test_loss_reference.py): heads and ground truth
with padding rows, boxes across the border, two boxes in one cell and anchor, and an empty image.

CASES: name -> YoloLoss options. tests/fixtures/loss_reference.npz holds, for each case, the loss
the TensorFlow implementation (commit 05a9ef9) gave on `batch()`: per-image totals and parts, the
per-head sums, "mean"'s batch loss, and the gradient of the summed loss with respect to the heads.
"""

from __future__ import annotations

import numpy as np

from nets.model_data import ANCHORS_MASK, load_anchors

NUM_CLASSES = 3
INPUT_HW = (96, 128)  # non-square: grids 3x4 and 6x8
CASES = {
    "default": {},
    "best_anchor_only": {"anchor_iou_thresh": 1.0, "scale_x_y": 1.05},
    "neighbor_cells": {"neighbor_cells": True, "scale_x_y": 2.0},
    "iou_target_smoothing": {"obj_iou_target": True, "label_smoothing": 0.1, "box_weight": 2.0, "cls_weight": 0.5},
    "mean": {"normalization": "mean"},
}


def loss_options(case: str) -> dict:
    return {"anchors": load_anchors(), "anchors_mask": ANCHORS_MASK, "num_classes": NUM_CLASSES, **CASES[case]}


def batch(seed: int = 0) -> tuple[list[np.ndarray], np.ndarray]:
    """(heads coarse first, each (3, H, W, 3 * (5 + C)) float32; gt (3, 8, 5) pixel xyxy + class, -1 padding)."""
    rng = np.random.default_rng(seed)
    height, width = INPUT_HW
    heads = [
        rng.normal(0, 0.8, (3, height // s, width // s, 3 * (5 + NUM_CLASSES))).astype(np.float32) for s in (32, 16)
    ]
    gt = np.full((3, 8, 5), -1.0, np.float32)
    for i in range(6):  # image 0: random boxes, some across the border
        x, y = rng.uniform(-10, width), rng.uniform(-10, height)
        w, h = rng.uniform(6, 90), rng.uniform(6, 70)
        gt[0, i] = [x, y, min(x + w, width + 5), min(y + h, height + 5), rng.integers(NUM_CLASSES)]
    gt[1, 0] = [40, 40, 80, 90, 0]  # image 1: two boxes of one shape in one cell: the better fit wins
    gt[1, 1] = [42, 41, 81, 90, 2]
    gt[1, 2] = [100, 10, 127, 30, 1]  # a tiny-ish box near the right border
    gt[1, 3] = [0, 0, 128, 96, 1]  # the whole image
    return heads, gt  # image 2 has no boxes
