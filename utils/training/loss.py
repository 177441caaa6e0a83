"""The YOLOv4 training loss: target assignment, CIoU box loss, objectness and class BCE.

Everything runs in the TensorFlow graph from the raw heads and the padded ground truth, so the
input pipeline only carries boxes, and the same code runs under any tf.distribute strategy.

Ground truth (`gt`): float32 (N, T, 5), per image up to T boxes as pixel xyxy in the network
input (after letterboxing and augmentation) followed by the class id; padding rows have class -1.

Target assignment, per head: a box goes to the cell holding its centre, with the anchor whose
shape fits it best among all anchors (darknet's rule; with yolov4-tiny's masks anchor 3 is on
both heads, so such a box trains both), plus every anchor of the head whose shape IoU with the
box exceeds `anchor_iou_thresh` (darknet's yolov4 `iou_thresh=0.213`; set >= 1 to disable).

The loss is computed per image (sums over that image's cells and boxes, no batch-dependent
normalisation), so averaging it over the global batch gives the same gradient however the batch
is split across replicas.
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
        anchor_iou_thresh: extra anchors assigned per box (see the module docstring).
        balance: per head, the weight of its objectness loss.
        box_weight, obj_weight, cls_weight: weights of the three terms.
        label_smoothing: class targets become y * (1 - s) + s / C.
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
    ):
        if len(balance) != len(anchors_mask) or len(strides) != len(anchors_mask):
            raise ValueError(f"need one balance and stride per head: {balance}, {strides}, {anchors_mask}")
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

    def get_config(self) -> dict:
        return {key: value for key, value in vars(self).items()}

    def assignment(self, gt):
        """Which (box, anchor) pairs are positives.

        Args: gt (N, T, 5), pixel xyxy + class (class -1 = padding).
        Returns: bool (N, T, K) over all K anchors.
        """
        gt = tf.cast(gt, tf.float32)
        wh = gt[..., 2:4] - gt[..., 0:2]  # (N, T, 2)
        valid = (gt[..., 4] >= 0) & (wh[..., 0] > 0) & (wh[..., 1] > 0)
        anchors = tf.constant(self.anchors, tf.float32)  # (K, 2)
        shape_iou = shape_iou_tf(wh, anchors)  # (N, T, K)
        best = tf.one_hot(tf.argmax(shape_iou, axis=-1), len(self.anchors), on_value=True, off_value=False)
        return (best | (shape_iou > self.anchor_iou_thresh)) & valid[..., None]

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
        assigned = tf.gather(self.assignment(gt), mask, axis=-1)  # (N, T, A)
        where = tf.where(assigned)  # (P, 3): image, box, anchor-in-mask
        picked = tf.gather_nd(gt, where[:, :2])  # (P, 5)
        centre = (picked[:, 0:2] + picked[:, 2:4]) / 2
        size = picked[:, 2:4] - picked[:, 0:2]
        grid_h, grid_w = grid_hw
        col = tf.clip_by_value(tf.cast(tf.floor(centre[:, 0] / stride), tf.int64), 0, tf.cast(grid_w, tf.int64) - 1)
        row = tf.clip_by_value(tf.cast(tf.floor(centre[:, 1] / stride), tf.int64), 0, tf.cast(grid_h, tf.int64) - 1)
        indices = tf.stack([where[:, 0], row, col, where[:, 2]], axis=1)  # (P, 4)
        batch = tf.shape(gt, out_type=tf.int64)[0]
        dense_shape = tf.stack([batch, tf.cast(grid_h, tf.int64), tf.cast(grid_w, tf.int64), len(mask)])

        one_hot = tf.one_hot(tf.cast(picked[:, 4], tf.int32), self.num_classes)
        one_hot = one_hot * (1.0 - self.label_smoothing) + self.label_smoothing / self.num_classes
        values = tf.concat([centre, size, tf.ones_like(centre[:, :1]), one_hot], axis=1)  # (P, 5 + C)
        # tensor_scatter_nd_update: when two boxes claim the same cell and anchor, one of them wins.
        dense = tf.tensor_scatter_nd_update(
            tf.zeros(tf.concat([dense_shape, [5 + self.num_classes]], 0), tf.float32), indices, values
        )
        return dense[..., :4], dense[..., 4], dense[..., 5:]

    def __call__(self, outputs, gt):
        """Per-image loss.

        Args:
            outputs: the model's raw heads, coarse first, each (N, H, W, A * (5 + C)).
            gt: (N, T, 5) pixel xyxy + class, in the network input (class -1 = padding).
        Returns:
            loss: (N,) float32, the total per image.
            parts: dict of (N,) float32: "box", "obj", "cls".
        """
        gt = tf.cast(gt, tf.float32)
        gt_valid = gt[..., 4] >= 0  # (N, T)
        gt_cxywh = tf.concat([(gt[..., 0:2] + gt[..., 2:4]) / 2, gt[..., 2:4] - gt[..., 0:2]], axis=-1)
        first = tf.shape(outputs[0])
        input_hw = (first[1] * self.strides[0], first[2] * self.strides[0])
        input_area = tf.cast(input_hw[0] * input_hw[1], tf.float32)
        parts = {"box": 0.0, "obj": 0.0, "cls": 0.0}
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
            obj_weight = positive + (1.0 - positive) * (1.0 - tf.cast(ignore, tf.float32))
            obj_bce = tf.nn.sigmoid_cross_entropy_with_logits(labels=positive, logits=obj_logit)
            obj = tf.reduce_sum(obj_weight * obj_bce, axis=[1, 2, 3]) * self.balance[level]

            cls_bce = tf.reduce_sum(
                tf.nn.sigmoid_cross_entropy_with_logits(labels=true_classes, logits=cls_logits), axis=-1
            )
            cls = tf.reduce_sum(positive * cls_bce, axis=[1, 2, 3])

            parts["box"] += box * self.box_weight
            parts["obj"] += obj * self.obj_weight
            parts["cls"] += cls * self.cls_weight
        return parts["box"] + parts["obj"] + parts["cls"], parts
