"""The YOLOv4 training loss: target assignment, CIoU box loss, objectness and class BCE.

Everything is keras.ops from the raw heads and the padded ground truth, with static shapes: the
input pipeline only carries boxes, and the same code runs in a TensorFlow graph (under XLA and any
tf.distribute strategy) and on Keras' JAX and PyTorch backends.

Ground truth (`gt`): float32 (N, T, 5), per image up to T boxes as pixel xyxy in the network
input (after letterboxing and augmentation) followed by the class id; padding rows have class -1.

Target assignment, per head: a box goes to the cell holding its centre, with the anchor whose
shape fits it best among the anchors some head uses (with yolov4-tiny's masks 3,4,5 / 1,2,3,
anchor 3 is on both heads, so such a box trains both; a box that fits the unused anchor 0 best
falls back to its best used anchor, where darknet and bubbliiiing give it no positive at all).
Every other used anchor whose shape IoU with the box exceeds `anchor_iou_thresh` is a positive
too: the default 0.213 is darknet's `iou_thresh` in yolov4.cfg, which yolov4-tiny.cfg does not
set (darknet and bubbliiiing train yolov4-tiny with the best anchor only, `anchor_iou_thresh` >= 1
here); the extra anchors measured better on the demo (docs/recipe.md).
When two boxes claim the same cell and anchor, the one whose shape fits that anchor better (shape
IoU) is the target, the earlier one on a tie: decided, not left to the scatter's order (darknet
and bubbliiiing keep the later box; mmdetection's GridAssigner the higher IoU, as here).

Options from YOLOv5 and later (off by default here; the trainer's defaults are in
utils/training/config.py, with their measured reasons in docs/recipe.md):
    neighbor_cells: each positive is also assigned to the cell left or right of its centre's,
        whichever is nearer the centre, and likewise above or below: three cells a box and anchor
        instead of one, so about three times the positives. Their predicted centres must reach
        half a cell beyond their own, so the model decodes with scale_x_y 2 (x = 2 sigmoid - 0.5).
    obj_iou_target: a positive's objectness target is the CIoU of its predicted box with the ground
        truth (clipped to [0, 1], without gradient) instead of 1, so a detection's score says how
        well its box fits as well as that there is an object, and NMS and AP rank tight boxes first.

Normalisation (`normalization`):
    "sum" (the default): darknet's. Per image, sums over its cells and boxes (box, objectness and
        class weighted 1, balance, 1), averaged over the global batch, so averaging over the
        global batch gives the same gradient however the batch is split across replicas.
    "mean": bubbliiiing's yolov4-tiny-pytorch recipe, the one the learning-rate defaults were
        taken from. Per head: box = 0.05 * mean over the positives of (1 - CIoU) * small-box
        scale; objectness = 5 * (input area / 416^2) * balance * mean over the cells not
        ignored; class = C / 80 * mean over the positives and classes; the counts are the
        global batch's (all-reduced over the replicas). Its gradients are 16-260 times smaller
        than "sum"'s (benchmarks/bench_loss_scale.py); at the same learning rate it learns far
        more slowly (docs/recipe.md).
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
from keras import ops

from nets.decode import decode_head
from nets.model_data import STRIDES
from utils.boxes import box_ciou_ops, box_iou_batched_ops, shape_iou_ops
from utils.defaults import OBJ_BALANCE

# yolov5 / the bubbliiiing yolov4-tiny recipe weight the objectness of P5 by 0.4 and of P4 by 1.
DEFAULT_BALANCE = OBJ_BALANCE
# Raw tw, th are clipped here before exp() in the loss: exp(10) * anchor is larger than any image.
_MAX_LOG_WH = 10.0
NORMALIZATIONS = ("mean", "sum")
# bubbliiiing's yolov4-tiny-pytorch ratios (yolo_training.YOLOLoss) for "mean": box, objectness per
# 416x416 of input, class per 80 classes.
MEAN_BOX_RATIO = 0.05
MEAN_OBJ_RATIO = 5.0
MEAN_OBJ_REFERENCE_AREA = 416.0 * 416.0
MEAN_CLS_CLASSES = 80.0


class YoloLoss:
    """Loss of a YoloV4Tiny's raw outputs against padded ground truth.

    Args:
        anchors: (K, 2) anchor widths and heights in network-input pixels.
        anchors_mask: per head, coarse first, the anchor indices it uses.
        num_classes: C.
        scale_x_y: the model's centre-decoding scale.
        strides: per head, its stride (nets.model_data.STRIDES).
        ignore_thresh: a cell without a target whose predicted box overlaps some ground truth
            with IoU above this gets no objectness loss.
        anchor_iou_thresh: extra anchors assigned per box (see the module docstring); >= 1: none.
        balance: per head, the weight of its objectness loss.
        box_weight, obj_weight, cls_weight: weights of the three terms (times the ratios of
            "mean", see the module docstring).
        label_smoothing: class targets become y * (1 - s) + s / C.
        normalization: "mean" or "sum" (see the module docstring).
        neighbor_cells: also assign each box to the two neighbouring cells nearest its centre
            (see the module docstring); needs scale_x_y >= 2.
        obj_iou_target: the objectness target of a positive is its predicted box's CIoU with the
            ground truth (clipped to [0, 1], no gradient) instead of 1.
    """

    def __init__(
        self,
        anchors: Sequence[Sequence[float]],
        anchors_mask: Sequence[Sequence[int]],
        num_classes: int,
        scale_x_y: float = 1.0,
        strides: Sequence[int] = STRIDES,
        ignore_thresh: float = 0.5,
        anchor_iou_thresh: float = 0.213,
        balance: Sequence[float] = DEFAULT_BALANCE,
        box_weight: float = 1.0,
        obj_weight: float = 1.0,
        cls_weight: float = 1.0,
        label_smoothing: float = 0.0,
        normalization: str = "sum",
        neighbor_cells: bool = False,
        obj_iou_target: bool = False,
    ):
        if len(balance) != len(anchors_mask) or len(strides) != len(anchors_mask):
            raise ValueError(f"need one balance and stride per head: {balance}, {strides}, {anchors_mask}")
        if normalization not in NORMALIZATIONS:
            raise ValueError(f"normalization must be one of {NORMALIZATIONS}, got {normalization!r}")
        self.anchors = [[float(w), float(h)] for w, h in anchors]
        self.anchors_mask = [[int(i) for i in m] for m in anchors_mask]
        self.num_classes = int(num_classes)
        self.scale_x_y = float(scale_x_y)
        self.strides = [int(s) for s in strides]
        self.ignore_thresh = float(ignore_thresh)
        self.anchor_iou_thresh = float(anchor_iou_thresh)
        self.balance = [float(b) for b in balance]
        self.box_weight, self.obj_weight, self.cls_weight = float(box_weight), float(obj_weight), float(cls_weight)
        self.label_smoothing = float(label_smoothing)
        self.normalization = normalization
        self.neighbor_cells = bool(neighbor_cells)
        self.obj_iou_target = bool(obj_iou_target)
        if self.neighbor_cells and self.scale_x_y < 2.0:
            raise ValueError(
                f"neighbor_cells needs centres that reach half a cell beyond their own (scale_x_y >= 2), "
                f"got scale_x_y {self.scale_x_y}"
            )

    def get_config(self) -> dict:
        return {key: value for key, value in vars(self).items()}

    def _shape_iou(self, gt):
        """(N, T, K) shape IoU of each box with each anchor, and (N, T) which rows are boxes."""
        wh = gt[..., 2:4] - gt[..., 0:2]  # (N, T, 2)
        valid = ops.logical_and(gt[..., 4] >= 0, ops.logical_and(wh[..., 0] > 0, wh[..., 1] > 0))
        return shape_iou_ops(wh, ops.convert_to_tensor(self.anchors, "float32")), valid

    def assignment(self, gt):
        """Which (box, anchor) pairs are positives.

        Args: gt (N, T, 5), pixel xyxy + class (class -1 = padding).
        Returns: bool (N, T, K) over all K anchors; anchors no head uses are never positives.
        """
        gt = ops.cast(gt, "float32")
        shape_iou, valid = self._shape_iou(gt)
        num_anchors = len(self.anchors)
        used = ops.convert_to_tensor([any(k in mask for mask in self.anchors_mask) for k in range(num_anchors)])
        # The best anchor among the used ones: a box that fits an unused anchor best (yolov4-tiny's
        # anchor 0, 10x14) still trains the nearest one a head has, instead of nothing.
        best = ops.one_hot(ops.argmax(ops.where(used, shape_iou, -1.0), axis=-1), num_anchors) > 0.5
        extra = ops.logical_and(shape_iou > self.anchor_iou_thresh, used)
        return ops.logical_and(ops.logical_or(best, extra), valid[..., None])

    def _cells(self, gt, stride: float, grid_hw):
        """Each box's cells as (col, row), int32 (N, T, K), and how each ranks (a float added to the
        fit, (N, T, K)): K = 1, its centre's cell; with neighbor_cells K = 3 (YOLOv5's assignment):
        the centre's cell, the cell left or right of it, whichever is nearer the centre, and the one
        above or below likewise. A neighbour outside the grid stays on the centre cell with the lowest
        fit, so it never wins a slot; a neighbour ranks after every centre cell when boxes collide (its
        fit lowered by 2)."""
        grid_h, grid_w = grid_hw
        cell_xy = (gt[..., 0:2] + gt[..., 2:4]) / 2 / stride  # (N, T, 2) in cells
        cell = ops.cast(ops.floor(cell_xy), "int32")
        col = ops.clip(cell[..., 0], 0, ops.cast(grid_w, "int32") - 1)
        row = ops.clip(cell[..., 1], 0, ops.cast(grid_h, "int32") - 1)
        if not self.neighbor_cells:
            return col[..., None], row[..., None], ops.zeros_like(cell_xy[..., :1])
        step = ops.where(cell_xy - ops.floor(cell_xy) < 0.5, -1, 1)  # (N, T, 2)
        moved_col, moved_row = col + step[..., 0], row + step[..., 1]
        inside_col = ops.logical_and(moved_col >= 0, moved_col < ops.cast(grid_w, "int32"))
        inside_row = ops.logical_and(moved_row >= 0, moved_row < ops.cast(grid_h, "int32"))
        cols = ops.stack([col, ops.where(inside_col, moved_col, col), col], axis=-1)
        rows = ops.stack([row, row, ops.where(inside_row, moved_row, row)], axis=-1)
        zero = ops.zeros_like(cell_xy[..., 0])
        ranks = ops.stack([zero, ops.where(inside_col, -2.0, -3.0), ops.where(inside_row, -2.0, -3.0)], axis=-1)
        return cols, rows, ranks

    def level_targets(self, gt, level: int, grid_hw):
        """Dense targets of one head, computed with static shapes (any backend, XLA): every (image,
        box, anchor, cell) candidate is scored, and each (image, cell, anchor) slot takes its best.

        Args:
            gt: (N, T, 5) pixel xyxy + class.
            level: head index (0 = P5).
            grid_hw: (H, W) of the head, ints or scalar tensors.
        Returns:
            boxes: (N, H, W, A, 4) pixel center_xywh of the assigned box (0 elsewhere).
            positive: (N, H, W, A) float 1 where a box is assigned.
            classes: (N, H, W, A, C) smoothed one-hot class targets.
        """
        gt = ops.cast(gt, "float32")
        mask = self.anchors_mask[level]
        num_anchors = len(mask)
        shape_iou, _ = self._shape_iou(gt)
        assigned = ops.take(self.assignment(gt), mask, axis=-1)  # (N, T, A)
        cols, rows, ranks = self._cells(gt, float(self.strides[level]), grid_hw)  # (N, T, K)
        # Candidates (N, T, A, K), flattened in that order (image, box, anchor, cell).
        fit = ops.take(shape_iou, mask, axis=-1)[..., None] + ranks[:, :, None, :]
        valid = ops.logical_and(assigned[..., None], ops.ones_like(ranks[:, :, None, :]) > 0)
        score = ops.reshape(ops.where(valid, fit, -1e9), (-1,))
        batch = ops.shape(gt)[0]
        grid_h, grid_w = grid_hw
        image = ops.arange(batch, dtype="int32")[:, None, None, None]
        anchor = ops.arange(num_anchors, dtype="int32")[None, None, :, None]
        slot = ((image * grid_h + rows[:, :, None, :]) * grid_w + cols[:, :, None, :]) * num_anchors + anchor
        slot = ops.reshape(slot, (-1,))
        slots = batch * grid_h * grid_w * num_anchors
        # One box per (image, cell, anchor): the best-fitting one, the earlier on a tie. The winner of
        # each slot is the candidate of highest score, then of lowest index (two segment maxima: exact,
        # no sort, XLA-compilable); the others' values are zeroed, so summing a slot's candidates gives
        # the winner's values exactly.
        best = ops.take(ops.segment_max(score, slot, num_segments=slots), slot)
        index = ops.cast(ops.arange(ops.shape(score)[0]), "float32")
        first = ops.take(ops.segment_max(ops.where(score == best, -index, -1e9), slot, num_segments=slots), slot)
        keep = ops.cast(ops.logical_and(ops.reshape(valid, (-1,)), -index == first), "float32")

        one_hot = ops.one_hot(ops.cast(gt[..., 4], "int32"), self.num_classes)
        one_hot = one_hot * (1.0 - self.label_smoothing) + self.label_smoothing / self.num_classes
        centre, size = (gt[..., 0:2] + gt[..., 2:4]) / 2, gt[..., 2:4] - gt[..., 0:2]
        values = ops.concatenate([centre, size, ops.ones_like(centre[..., :1]), one_hot], axis=-1)  # (N, T, 5 + C)
        values = ops.broadcast_to(values[:, :, None, None, :], (*ops.shape(valid), 5 + self.num_classes))
        values = ops.reshape(values, (-1, 5 + self.num_classes)) * keep[:, None]
        dense = ops.segment_sum(values, slot, num_segments=slots)
        dense = ops.reshape(dense, (batch, grid_h, grid_w, num_anchors, 5 + self.num_classes))
        return dense[..., :4], dense[..., 4], dense[..., 5:]

    def level_sums(self, outputs, gt):
        """Per head and image, the unweighted sums the loss is made of, and their counts.

        Args:
            outputs: the model's raw heads, coarse first, each (N, H, W, A * (5 + C)).
            gt: (N, T, 5) pixel xyxy + class, in the network input (class -1 = padding).
        Returns:
            one dict per head of (N,) float32: "box" (sum over positives of (1 - CIoU) times
            the small-box scale), "obj" (objectness BCE summed over the cells not ignored),
            "cls" (class BCE summed over positives and classes), "positives", "obj_cells" (cells
            not ignored); and the input area in pixels (a scalar).
        """
        gt = ops.cast(gt, "float32")
        gt_valid = gt[..., 4] >= 0  # (N, T)
        gt_cxywh = ops.concatenate([(gt[..., 0:2] + gt[..., 2:4]) / 2, gt[..., 2:4] - gt[..., 0:2]], axis=-1)
        first = ops.shape(outputs[0])
        input_hw = (first[1] * self.strides[0], first[2] * self.strides[0])
        input_area = ops.cast(input_hw[0] * input_hw[1], "float32")
        levels = []
        for level, raw in enumerate(outputs):
            raw = ops.cast(raw, "float32")
            shape = ops.shape(raw)
            num_anchors = len(self.anchors_mask[level])
            raw = ops.reshape(raw, (shape[0], shape[1], shape[2], num_anchors, 5 + self.num_classes))
            raw = ops.concatenate([raw[..., :2], ops.minimum(raw[..., 2:4], _MAX_LOG_WH), raw[..., 4:]], axis=-1)
            anchors = [self.anchors[i] for i in self.anchors_mask[level]]
            pred_boxes, obj_logit, cls_logits = decode_head(
                ops.reshape(raw, shape), anchors, self.num_classes, input_hw, self.scale_x_y
            )
            true_boxes, positive, true_classes = self.level_targets(gt, level, (shape[1], shape[2]))

            # Box: 1 - CIoU, weighted up for small boxes (2 - relative area), as in yolov3/v4.
            ciou = box_ciou_ops(pred_boxes, true_boxes)
            small_box_scale = 2.0 - true_boxes[..., 2] * true_boxes[..., 3] / input_area
            box = ops.sum(positive * small_box_scale * (1.0 - ciou), axis=(1, 2, 3))

            # Objectness: cells without a target whose prediction already overlaps a ground-truth
            # box well are ignored rather than pushed to 0.
            flat_pred = ops.reshape(ops.stop_gradient(pred_boxes), (shape[0], -1, 4))
            iou = box_iou_batched_ops(flat_pred, gt_cxywh)  # (N, H*W*A, T)
            iou = ops.where(gt_valid[:, None, :], iou, 0.0)
            ignore = ops.reshape(ops.max(iou, axis=-1, initial=0.0) > self.ignore_thresh, ops.shape(positive))
            counted = positive + (1.0 - positive) * (1.0 - ops.cast(ignore, "float32"))
            obj_target = positive
            if self.obj_iou_target:  # YOLOv5's: how well the prediction fits, so scores rank boxes by fit
                obj_target = positive * ops.clip(ops.stop_gradient(ciou), 0.0, 1.0)
            obj_bce = _sigmoid_bce(obj_target, obj_logit)
            cls_bce = ops.sum(_sigmoid_bce(true_classes, cls_logits), axis=-1)
            levels.append({
                "box": box,
                "obj": ops.sum(counted * obj_bce, axis=(1, 2, 3)),
                "cls": ops.sum(positive * cls_bce, axis=(1, 2, 3)),
                "positives": ops.sum(positive, axis=(1, 2, 3)),
                "obj_cells": ops.sum(counted, axis=(1, 2, 3)),
            })  # fmt: skip
        return levels, input_area

    def __call__(self, outputs, gt):
        """Per-image loss, "sum" normalisation (whatever `normalization` says).

        Args:
            outputs: the model's raw heads, coarse first, each (N, H, W, A * (5 + C)).
            gt: (N, T, 5) pixel xyxy + class, in the network input (class -1 = padding).
        Returns:
            loss: (N,) float32, the total per image.
            parts: dict of (N,) float32: "box", "obj", "cls".
        """
        levels, _ = self.level_sums(outputs, gt)
        parts = {"box": 0.0, "obj": 0.0, "cls": 0.0}
        for level, sums in enumerate(levels):
            parts["box"] += sums["box"] * self.box_weight
            parts["obj"] += sums["obj"] * self.balance[level] * self.obj_weight
            parts["cls"] += sums["cls"] * self.cls_weight
        return parts["box"] + parts["obj"] + parts["cls"], parts

    def batch_loss(self, outputs, gt, global_batch: int):
        """This replica's share of the loss of the global batch, as `normalization` says.

        Summed over the replicas (what the gradient all-reduce does), the shares give the loss of
        the global batch as one process computes it: "sum" divides by the global batch size;
        "mean" divides by the counts of the global batch (all-reduced over the replicas).

        Args:
            outputs, gt: as `__call__`, this replica's images.
            global_batch: images in the global batch.
        Returns:
            loss: scalar float32; parts: dict of scalars "box", "obj", "cls".
        """
        if self.normalization == "sum":
            per_image, parts = self(outputs, gt)
            scale = 1.0 / float(global_batch)
            return ops.sum(per_image) * scale, {k: ops.sum(v) * scale for k, v in parts.items()}
        levels, input_area = self.level_sums(outputs, gt)
        counts = ops.stack([ops.sum(sums[key]) for sums in levels for key in ("positives", "obj_cells")])
        if keras.backend.backend() == "tensorflow":  # a tf.distribute replica sums the counts of them all
            import tensorflow as tf

            replica = tf.distribute.get_replica_context()  # None only in a strategy's cross-replica context
            if replica is not None:
                counts = replica.all_reduce("SUM", counts)
        counts = ops.stop_gradient(counts)
        counts = ops.maximum(ops.reshape(counts, (len(levels), 2)), 1.0)
        obj_ratio = MEAN_OBJ_RATIO * input_area / MEAN_OBJ_REFERENCE_AREA
        cls_ratio = self.num_classes / MEAN_CLS_CLASSES
        parts = {"box": 0.0, "obj": 0.0, "cls": 0.0}
        for level, sums in enumerate(levels):
            positives, obj_cells = counts[level, 0], counts[level, 1]
            parts["box"] += MEAN_BOX_RATIO * self.box_weight * ops.sum(sums["box"]) / positives
            parts["obj"] += obj_ratio * self.balance[level] * self.obj_weight * ops.sum(sums["obj"]) / obj_cells
            parts["cls"] += cls_ratio * self.cls_weight * ops.sum(sums["cls"]) / (positives * self.num_classes)
        return parts["box"] + parts["obj"] + parts["cls"], parts


def _sigmoid_bce(labels, logits):
    """Binary cross-entropy of sigmoid(logits), elementwise, in the stable form TensorFlow's
    sigmoid_cross_entropy_with_logits uses: max(x, 0) - x z + log(1 + exp(-|x|))."""
    return ops.maximum(logits, 0.0) - logits * labels + ops.log1p(ops.exp(-ops.abs(logits)))
