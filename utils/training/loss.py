"""The YOLOv4 training loss: target assignment, CIoU box loss, objectness and class BCE.

Everything runs in the TensorFlow graph from the raw heads and the padded ground truth, so the
input pipeline only carries boxes, and the same code runs under any tf.distribute strategy.

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

import tensorflow as tf

from nets.decode import decode_head
from nets.model_data import STRIDES
from utils.boxes import box_ciou_tf, box_iou_batched_tf, shape_iou_tf

# yolov5 / the bubbliiiing yolov4-tiny recipe weight the objectness of P5 by 0.4 and of P4 by 1.
DEFAULT_BALANCE = (0.4, 1.0)
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
        valid = (gt[..., 4] >= 0) & (wh[..., 0] > 0) & (wh[..., 1] > 0)
        return shape_iou_tf(wh, tf.constant(self.anchors, tf.float32)), valid

    def assignment(self, gt):
        """Which (box, anchor) pairs are positives.

        Args: gt (N, T, 5), pixel xyxy + class (class -1 = padding).
        Returns: bool (N, T, K) over all K anchors; anchors no head uses are never positives.
        """
        gt = tf.cast(gt, tf.float32)
        shape_iou, valid = self._shape_iou(gt)
        num_anchors = len(self.anchors)
        used = [any(k in mask for mask in self.anchors_mask) for k in range(num_anchors)]
        used = tf.constant(used)
        # The best anchor among the used ones: a box that fits an unused anchor best (yolov4-tiny's
        # anchor 0, 10x14) still trains the nearest one a head has, instead of nothing.
        best = tf.argmax(tf.where(used, shape_iou, -1.0), axis=-1)
        best = tf.one_hot(best, num_anchors, on_value=True, off_value=False)
        return (best | ((shape_iou > self.anchor_iou_thresh) & used)) & valid[..., None]

    def level_targets(self, gt, level: int, grid_hw):
        """Dense targets of one head.

        Args:
            gt: (N, T, 5) pixel xyxy + class.
            level: head index (0 = P5).
            grid_hw: (H, W) of the head, ints or scalar tensors.
        Returns:
            boxes: (N, H, W, A, 4) pixel center_xywh of the assigned box (0 elsewhere).
            positive: (N, H, W, A) float 1 where a box is assigned.
            classes: (N, H, W, A, C) smoothed one-hot class targets.
        """
        gt = tf.cast(gt, tf.float32)
        mask = self.anchors_mask[level]
        stride = float(self.strides[level])
        shape_iou, _ = self._shape_iou(gt)
        assigned = tf.gather(self.assignment(gt), mask, axis=-1)  # (N, T, A)
        where = tf.where(assigned)  # (P, 3): image, box, anchor-in-mask
        picked = tf.gather_nd(gt, where[:, :2])  # (P, 5)
        fit = tf.gather_nd(tf.gather(shape_iou, mask, axis=-1), where)  # (P,) shape IoU with its anchor
        centre = (picked[:, 0:2] + picked[:, 2:4]) / 2
        size = picked[:, 2:4] - picked[:, 0:2]
        grid_h, grid_w = tf.cast(grid_hw[0], tf.int64), tf.cast(grid_hw[1], tf.int64)
        cell_xy = centre / stride  # (P, 2) in cells
        col = tf.clip_by_value(tf.cast(tf.floor(cell_xy[:, 0]), tf.int64), 0, grid_w - 1)
        row = tf.clip_by_value(tf.cast(tf.floor(cell_xy[:, 1]), tf.int64), 0, grid_h - 1)
        if self.neighbor_cells:
            # YOLOv5's assignment: the cell left or right of the centre's, whichever is nearer the
            # centre, and the one above or below likewise. Each positive becomes three rows (centre,
            # sideways, vertical), stacked on a static axis rather than concatenated (XLA pads
            # dynamic sizes, and concatenating two of them loses rows under --xla). A neighbour
            # outside the grid stays on the centre cell with the lowest fit, so it never wins a slot;
            # a neighbour ranks after every centre cell when boxes collide (its fit lowered by 2).
            frac = cell_xy - tf.floor(cell_xy)
            step = tf.where(frac < 0.5, tf.constant(-1, tf.int64), tf.constant(1, tf.int64))  # (P, 2)
            moved = tf.stack([col, row], axis=1) + step
            inside = (moved >= 0) & (moved < tf.stack([grid_w, grid_h])[None, :])  # (P, 2)
            col = tf.reshape(tf.stack([col, tf.where(inside[:, 0], moved[:, 0], col), col], axis=1), [-1])
            row = tf.reshape(tf.stack([row, row, tf.where(inside[:, 1], moved[:, 1], row)], axis=1), [-1])
            sideways_fit = tf.where(inside[:, 0], fit - 2.0, fit - 3.0)
            vertical_fit = tf.where(inside[:, 1], fit - 2.0, fit - 3.0)
            fit = tf.reshape(tf.stack([fit, sideways_fit, vertical_fit], axis=1), [-1])

            def thrice(values):  # (P, K) -> (3P, K), each row three times in a row
                return tf.reshape(tf.tile(values[:, None, :], [1, 3, 1]), [-1, values.shape[-1]])

            where, picked, centre, size = thrice(where), thrice(picked), thrice(centre), thrice(size)

        # One box per (image, cell, anchor): the best-fitting one, the earlier on a tie (where's
        # order is image, box, anchor). Each positive gets a unique rank; a dense grid keeps the
        # lowest rank per slot; the other boxes' updates are zeroed, so adding them all up gives
        # the winner's values exactly, whatever order the scatter applies them in. (Sorts and
        # scatters into dense grids only: XLA-compilable, unlike tf.unique.)
        indices = tf.stack([where[:, 0], row, col, where[:, 2]], axis=1)  # (P, 4)
        batch = tf.shape(gt, out_type=tf.int64)[0]
        num_anchors = len(mask)
        dense_shape = tf.stack([batch, grid_h, grid_w, num_anchors])
        rank = tf.argsort(tf.argsort(-fit, stable=True), stable=True)  # (P,) 0 = the best fit
        best_rank = tf.tensor_scatter_nd_min(tf.fill(dense_shape, tf.shape(rank)[0]), indices, rank)
        keep = tf.cast(tf.equal(rank, tf.gather_nd(best_rank, indices)), tf.float32)  # (P,)

        one_hot = tf.one_hot(tf.cast(picked[:, 4], tf.int32), self.num_classes)
        one_hot = one_hot * (1.0 - self.label_smoothing) + self.label_smoothing / self.num_classes
        values = tf.concat([centre, size, tf.ones_like(centre[:, :1]), one_hot], axis=1)  # (P, 5 + C)
        dense = tf.tensor_scatter_nd_add(
            tf.zeros(tf.concat([dense_shape, [5 + self.num_classes]], 0), tf.float32), indices, values * keep[:, None]
        )
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
        gt = tf.cast(gt, tf.float32)
        gt_valid = gt[..., 4] >= 0  # (N, T)
        gt_cxywh = tf.concat([(gt[..., 0:2] + gt[..., 2:4]) / 2, gt[..., 2:4] - gt[..., 0:2]], axis=-1)
        first = tf.shape(outputs[0])
        input_hw = (first[1] * self.strides[0], first[2] * self.strides[0])
        input_area = tf.cast(input_hw[0] * input_hw[1], tf.float32)
        levels = []
        for level, raw in enumerate(outputs):
            raw = tf.cast(raw, tf.float32)
            shape = tf.shape(raw)
            num_anchors = len(self.anchors_mask[level])
            raw = tf.reshape(raw, [shape[0], shape[1], shape[2], num_anchors, 5 + self.num_classes])
            raw = tf.concat([raw[..., :2], tf.minimum(raw[..., 2:4], _MAX_LOG_WH), raw[..., 4:]], axis=-1)
            anchors = [self.anchors[i] for i in self.anchors_mask[level]]
            pred_boxes, obj_logit, cls_logits = decode_head(
                tf.reshape(raw, shape), anchors, self.num_classes, input_hw, self.scale_x_y
            )
            true_boxes, positive, true_classes = self.level_targets(gt, level, (shape[1], shape[2]))

            # Box: 1 - CIoU, weighted up for small boxes (2 - relative area), as in yolov3/v4.
            ciou = box_ciou_tf(pred_boxes, true_boxes)
            small_box_scale = 2.0 - true_boxes[..., 2] * true_boxes[..., 3] / input_area
            box = tf.reduce_sum(positive * small_box_scale * (1.0 - ciou), axis=[1, 2, 3])

            # Objectness: cells without a target whose prediction already overlaps a ground-truth
            # box well are ignored rather than pushed to 0.
            flat_pred = tf.reshape(tf.stop_gradient(pred_boxes), [shape[0], -1, 4])
            iou = box_iou_batched_tf(flat_pred, gt_cxywh)  # (N, H*W*A, T)
            iou = tf.where(gt_valid[:, None, :], iou, 0.0)
            ignore = tf.reshape(tf.reduce_max(iou, axis=-1) > self.ignore_thresh, tf.shape(positive))
            counted = positive + (1.0 - positive) * (1.0 - tf.cast(ignore, tf.float32))
            obj_target = positive
            if self.obj_iou_target:  # YOLOv5's: how well the prediction fits, so scores rank boxes by fit
                obj_target = positive * tf.clip_by_value(tf.stop_gradient(ciou), 0.0, 1.0)
            obj_bce = tf.nn.sigmoid_cross_entropy_with_logits(labels=obj_target, logits=obj_logit)

            cls_bce = tf.reduce_sum(
                tf.nn.sigmoid_cross_entropy_with_logits(labels=true_classes, logits=cls_logits), axis=-1
            )
            levels.append({
                "box": box,
                "obj": tf.reduce_sum(counted * obj_bce, axis=[1, 2, 3]),
                "cls": tf.reduce_sum(positive * cls_bce, axis=[1, 2, 3]),
                "positives": tf.reduce_sum(positive, axis=[1, 2, 3]),
                "obj_cells": tf.reduce_sum(counted, axis=[1, 2, 3]),
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
            return tf.reduce_sum(per_image) * scale, {k: tf.reduce_sum(v) * scale for k, v in parts.items()}
        levels, input_area = self.level_sums(outputs, gt)
        counts = tf.stack([tf.reduce_sum(sums[key]) for sums in levels for key in ("positives", "obj_cells")])
        replica = tf.distribute.get_replica_context()  # None only in a strategy's cross-replica context
        if replica is not None:
            counts = replica.all_reduce("SUM", counts)
        counts = tf.stop_gradient(counts)
        counts = tf.maximum(tf.reshape(counts, (len(levels), 2)), 1.0)
        obj_ratio = MEAN_OBJ_RATIO * input_area / MEAN_OBJ_REFERENCE_AREA
        cls_ratio = self.num_classes / MEAN_CLS_CLASSES
        parts = {"box": 0.0, "obj": 0.0, "cls": 0.0}
        for level, sums in enumerate(levels):
            positives, obj_cells = counts[level, 0], counts[level, 1]
            parts["box"] += MEAN_BOX_RATIO * self.box_weight * tf.reduce_sum(sums["box"]) / positives
            parts["obj"] += obj_ratio * self.balance[level] * self.obj_weight * tf.reduce_sum(sums["obj"]) / obj_cells
            parts["cls"] += (
                cls_ratio * self.cls_weight * tf.reduce_sum(sums["cls"]) / (positives * self.num_classes)
            )
        return parts["box"] + parts["obj"] + parts["cls"], parts
