"""From raw YOLO heads to final detections: decode, score, per-class NMS (TensorFlow ops).

Everything here is graph-friendly: `Detector` traces it, together with the model, into one
compiled `tf.function`. Boxes stay in the network input here (pixel xyxy of the letterboxed
image); `utils.inference.letterbox.unletterbox_boxes` maps them back to the original image.

Scores follow darknet: score = sigmoid(objectness) * sigmoid(class logit), one score per
(box, class); a box can be kept for several classes. NMS is per class.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import tensorflow as tf

from nets.decode import decode_head
from utils.boxes import convert_format


def decode_outputs(
    raw_heads: Sequence,
    anchors: np.ndarray | Sequence[Sequence[float]],
    anchors_mask: Sequence[Sequence[int]],
    num_classes: int,
    input_hw: tuple[int, int],
    scale_x_y: float,
) -> tuple[tf.Tensor, tf.Tensor]:
    """Decode every head and flatten the cells.

    Args:
        raw_heads: per head (coarse first, as the model outputs them), raw
            (N, H_i, W_i, A * (5 + C)).
        anchors: (num_anchors, 2) widths, heights in network-input pixels.
        anchors_mask: per head, the indices of its anchors.
        num_classes: C.
        input_hw: network input (height, width) in pixels.
        scale_x_y: darknet's centre scale.

    Returns:
        boxes: (N, B, 4) float32 pixel xyxy in the network input, B = sum of H_i * W_i * A.
        scores: (N, B, C) float32, sigmoid(objectness) * sigmoid(class logit).
    """
    anchors = np.asarray(anchors, dtype=np.float32)
    all_boxes, all_scores = [], []
    for raw, mask in zip(raw_heads, anchors_mask, strict=True):
        boxes, objectness, class_logits = decode_head(raw, anchors[list(mask)], num_classes, input_hw, scale_x_y)
        batch = tf.shape(boxes)[0]
        all_boxes.append(tf.reshape(boxes, [batch, -1, 4]))
        scores = tf.sigmoid(objectness)[..., None] * tf.sigmoid(class_logits)
        all_scores.append(tf.reshape(scores, [batch, -1, num_classes]))
    boxes = convert_format(tf.concat(all_boxes, axis=1), "center_xywh", "xyxy")
    return boxes, tf.concat(all_scores, axis=1)


def non_max_suppression(
    boxes: tf.Tensor,
    scores: tf.Tensor,
    score_threshold: float | tf.Tensor,
    iou_threshold: float | tf.Tensor,
    max_detections: int,
) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor]:
    """Per-class NMS, padded to a fixed size.

    Args:
        boxes: (N, B, 4) float32 pixel xyxy.
        scores: (N, B, C) float32 per-class scores.
        score_threshold: keep (box, class) pairs with score > this.
        iou_threshold: suppress a box of the same class overlapping a better one by more than this.
        max_detections: K, most detections kept per image (over all classes).

    Returns:
        boxes: (N, K, 4) float32 pixel xyxy; scores: (N, K) float32, best first;
        class_ids: (N, K) int32; num_valid: (N,) int32, the first num_valid rows are real.
    """
    yxyx = convert_format(boxes, "xyxy", "yxyx")
    # Boxes are shared by all classes (q = 1); clip_boxes=False because they are pixels, not [0, 1].
    nms_boxes, nms_scores, nms_classes, num_valid = tf.image.combined_non_max_suppression(
        yxyx[:, :, None, :],
        scores,
        max_output_size_per_class=max_detections,
        max_total_size=max_detections,
        iou_threshold=iou_threshold,
        score_threshold=score_threshold,
        pad_per_class=False,
        clip_boxes=False,
    )
    nms_boxes = convert_format(nms_boxes, "yxyx", "xyxy")
    return nms_boxes, nms_scores, tf.cast(nms_classes, tf.int32), tf.cast(num_valid, tf.int32)


def non_max_suppression_best_first(
    boxes: tf.Tensor,
    scores: tf.Tensor,
    score_threshold: float | tf.Tensor,
    iou_threshold: float | tf.Tensor,
    max_detections: int,
    num_candidates: int | None = None,
) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor]:
    """`non_max_suppression` (same arguments, same results), faster when many (box, class) pairs
    pass the score threshold: the detector's NMS.

    Greedy NMS keeps or drops a pair by the better pairs of its own class only, so the first K
    (= max_detections) pairs it keeps, best first, depend on the best pairs alone. NMS over the
    best T (= num_candidates, default 4K) pairs, each as a box of its own with its score in its
    class only, therefore keeps exactly what NMS over all pairs keeps as soon as it keeps K of
    them, or when no more than T pairs pass the threshold; for an image where neither holds, the
    NMS over all pairs runs instead. The per-class NMS costs about (pairs above the threshold) x
    (pairs kept per class), which for a network whose scores pass the threshold by the thousand
    (a random one at 0.5, any one at mAP's 0.001) costs more than the model; over T pairs it is
    small. When no image has more than T pairs above the threshold, the plain NMS runs (it is
    cheap then, and the best-T selection is not).
    Ties in score keep the lower (box, class) index first in both, as the NMS kernel does.
    """
    num_classes = scores.shape[-1]
    flat = tf.reshape(scores, [tf.shape(scores)[0], -1])  # (N, B*C), index = box * C + class
    score_threshold = tf.cast(score_threshold, tf.float32)
    iou_threshold = tf.cast(iou_threshold, tf.float32)
    above = tf.reduce_sum(tf.cast(flat > score_threshold, tf.int32), axis=1)
    num_candidates = tf.minimum(num_candidates or 4 * max_detections, tf.shape(flat)[1])

    def all_pairs():
        return non_max_suppression(boxes, scores, score_threshold, iou_threshold, max_detections)

    def best_pairs():
        best_scores, best_index = tf.math.top_k(flat, k=num_candidates)  # best first, ties by lower index
        candidate_boxes = tf.gather(boxes, best_index // num_classes, batch_dims=1)
        candidate_scores = tf.one_hot(best_index % num_classes, num_classes) * best_scores[..., None]
        kept = non_max_suppression(candidate_boxes, candidate_scores, score_threshold, iou_threshold, max_detections)
        decided = tf.reduce_all((kept[3] >= max_detections) | (above <= num_candidates))
        return tf.cond(decided, lambda: kept, all_pairs)

    return tf.cond(tf.reduce_max(above) <= num_candidates, all_pairs, best_pairs)


def objectness_map(raw_heads: Sequence, anchors_mask: Sequence[Sequence[int]], num_classes: int) -> list[np.ndarray]:
    """Per head, sigmoid(objectness) maximised over its anchors.

    Args:
        raw_heads: per head, raw (N, H_i, W_i, A * (5 + C)), NumPy or tensors.

    Returns: per head, float32 (N, H_i, W_i) in [0, 1].
    """
    maps = []
    for raw, mask in zip(raw_heads, anchors_mask, strict=True):
        raw = np.asarray(raw, dtype=np.float32)
        raw = raw.reshape(*raw.shape[:3], len(mask), 5 + num_classes)
        maps.append((1.0 / (1.0 + np.exp(-raw[..., 4]))).max(axis=-1))
    return maps


def non_max_suppression_class_offset(
    boxes: tf.Tensor,
    scores: tf.Tensor,
    score_threshold: float | tf.Tensor,
    iou_threshold: float | tf.Tensor,
    max_detections: int,
) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor]:
    """`non_max_suppression` (same arguments, same results) built from the single-class NMS op
    only, for graphs whose runtime has no combined NMS (TFLite's builtin NON_MAX_SUPPRESSION_V5).

    Every (box, class) pair becomes a candidate whose box is shifted by class id * (the span of
    all boxes + 1), so boxes of different classes never overlap: one greedy NMS over all the
    candidates then suppresses within a class only, and keeps the same pairs, best first, as the
    per-class NMS followed by the overall top `max_detections` (the shift changes IoUs by float
    rounding only). The output boxes are gathered from the unshifted ones. The batch size must be
    static (TFLite exports use 1).
    """
    batch = boxes.shape[0]
    if batch is None:
        raise ValueError("non_max_suppression_class_offset needs a static batch size")
    num_classes = scores.shape[-1]
    score_threshold = tf.cast(score_threshold, tf.float32)
    iou_threshold = tf.cast(iou_threshold, tf.float32)
    outputs = []
    for i in range(batch):
        image_boxes, image_scores = boxes[i], scores[i]  # (B, 4), (B, C)
        low = tf.reduce_min(image_boxes)
        span = tf.reduce_max(image_boxes) - low + 1.0
        shift = tf.range(num_classes, dtype=tf.float32)[None, :, None] * span  # (1, C, 1)
        candidates = tf.reshape((image_boxes - low)[:, None, :] + shift, [-1, 4])  # index = box * C + class
        selected, selected_scores, num_valid = tf.raw_ops.NonMaxSuppressionV5(
            boxes=candidates,
            scores=tf.reshape(image_scores, [-1]),
            max_output_size=max_detections,
            iou_threshold=iou_threshold,
            score_threshold=score_threshold,
            soft_nms_sigma=0.0,
            pad_to_max_output_size=True,
        )
        keep = tf.range(max_detections) < num_valid
        box_index = tf.math.floordiv(selected, num_classes)
        classes = tf.math.floormod(selected, num_classes)
        outputs.append(
            (
                tf.where(keep[:, None], tf.gather(image_boxes, box_index), 0.0),
                tf.where(keep, selected_scores, 0.0),
                tf.where(keep, classes, 0),
                num_valid,
            )
        )
    return tuple(tf.stack([o[k] for o in outputs]) for k in range(4))
