"""From raw YOLO heads to final detections: decode, score, per-class NMS.

`decode_outputs` is keras.ops, so it runs on every Keras backend: on TensorFlow `Detector` traces
it, together with the model and the NMS, into one compiled `tf.function`; on JAX it is jitted.
The NMS comes twice, with the same results: TensorFlow ops (`non_max_suppression`,
`non_max_suppression_best_first`, `non_max_suppression_class_offset`: graph-friendly, TensorFlow
imported when they are called) and NumPy on the host (`non_max_suppression_host`: the other Keras
backends, no TensorFlow). Boxes stay in the network input here (pixel xyxy of the letterboxed
image); `utils.inference.letterbox.unletterbox_boxes` maps them back to the original image.

Scores follow darknet: score = sigmoid(objectness) * sigmoid(class logit), one score per
(box, class); a box can be kept for several classes. NMS is per class.

After the NMS, `merge_boxes` moves each kept box to the weighted mean of the decoded boxes of its
class that overlap it by more than the merge IoU (YOLOv5's merge-NMS; the weights of weighted
boxes fusion): a model that gives an object several positives (anchors, neighbouring cells)
predicts it several times, each with its own error, and their mean scatters less than the best
one alone. It changes where the boxes are, never which are kept or their scores. keras.ops, so
the same code runs in the Detector's graph, on the host for the other Keras backends, and inside
an export with NMS.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from keras import ops

from nets.decode import decode_head
from utils.boxes import box_iou_pairs_ops, convert_format


def decode_outputs(
    raw_heads: Sequence,
    anchors: np.ndarray | Sequence[Sequence[float]],
    anchors_mask: Sequence[Sequence[int]],
    num_classes: int,
    input_hw: tuple[int, int],
    scale_x_y: float,
):
    """Decode every head and flatten the cells (keras.ops: tensors of the Keras backend, inside a
    tf.function or a jax.jit too).

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
        batch = ops.shape(boxes)[0]
        all_boxes.append(ops.reshape(boxes, (batch, -1, 4)))
        scores = ops.sigmoid(objectness)[..., None] * ops.sigmoid(class_logits)
        all_scores.append(ops.reshape(scores, (batch, -1, num_classes)))
    boxes = convert_format(ops.concatenate(all_boxes, axis=1), "center_xywh", "xyxy")
    return boxes, ops.concatenate(all_scores, axis=1)


def non_max_suppression(boxes, scores, score_threshold, iou_threshold, max_detections: int) -> tuple:
    """Per-class NMS, padded to a fixed size (TensorFlow ops).

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
    import tensorflow as tf

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


def merge_boxes(kept_boxes, kept_classes, boxes, scores, iou_threshold):
    """Each kept box moved to the mean of the candidates of its class that overlap it by IoU >
    `iou_threshold`, itself included, weighted by score (in that class) x IoU (keras.ops).

    Every decoded box is a candidate, whatever its score: a low score weighs little, and a box
    does not move with the score threshold. Rows with no such candidate (padding: zero boxes; or
    `iou_threshold` >= 1) are returned unchanged.

    Args:
        kept_boxes: (N, K, 4) float32 pixel xyxy, what an NMS kept; kept_classes: (N, K) int.
        boxes: (N, B, 4) float32 pixel xyxy and scores: (N, B, C), every decoded box
            (`decode_outputs`).
        iou_threshold: scalar.
    Returns: (N, K, 4) float32 pixel xyxy.
    """
    kept_boxes, boxes, scores = (ops.cast(t, "float32") for t in (kept_boxes, boxes, scores))
    one_hot = ops.one_hot(ops.cast(kept_classes, "int32"), ops.shape(scores)[-1], dtype="float32")  # (N, K, C)
    class_scores = ops.matmul(one_hot, ops.transpose(scores, (0, 2, 1)))  # (N, K, B)
    iou = box_iou_pairs_ops(kept_boxes, boxes)  # (N, K, B)
    weights = ops.where(iou > ops.cast(iou_threshold, "float32"), iou * class_scores, 0.0)
    total = ops.sum(weights, axis=-1, keepdims=True)
    merged = ops.matmul(weights, boxes) / ops.maximum(total, 1e-12)
    return ops.where(total > 0.0, merged, kept_boxes)


def with_merged_boxes(detections: tuple, boxes, scores, merge_iou: float, static: bool = False) -> tuple:
    """An NMS's (boxes, scores, classes, valid) with its boxes merged (`merge_boxes`) with the
    candidates `boxes`, `scores` it chose from; as they are when `merge_iou` >= 1 (off).

    Only the rows up to the batch's largest `valid` are merged (the padding rows after them cost
    nothing: at predict.py's thresholds an image keeps a few detections of its K rows);
    `static`: every row, for graphs that need static shapes (exports). Both give the same values."""
    if merge_iou >= 1.0:
        return detections
    kept_boxes, kept_scores, kept_classes, valid = detections
    if static:
        merged = merge_boxes(kept_boxes, kept_classes, boxes, scores, merge_iou)
    else:
        most = ops.max(valid)
        head = merge_boxes(kept_boxes[:, :most], kept_classes[:, :most], boxes, scores, merge_iou)
        merged = ops.concatenate([head, ops.cast(kept_boxes[:, most:], "float32")], axis=1)
    return merged, kept_scores, kept_classes, valid


def non_max_suppression_best_first(
    boxes, scores, score_threshold, iou_threshold, max_detections: int, num_candidates: int | None = None
) -> tuple:
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
    import tensorflow as tf

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


def non_max_suppression_host(
    boxes, scores, score_threshold: float, iou_threshold: float, max_detections: int, num_candidates: int | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """`non_max_suppression` (same arguments, same results, NumPy arrays) in NumPy on the host: the
    detector's NMS on the Keras backends other than TensorFlow, which import no TensorFlow.

    Per image, the (box, class) pairs scoring above `score_threshold`, best first, ties in score
    by the lower (box, class) index box * C + class; going down them, a pair is kept unless its
    box overlaps a box kept for its class by IoU > `iou_threshold`; the first K (=
    max_detections) kept are the result. A pair is decided by the better pairs of its own class
    only, so this keeps what a per-class NMS followed by the overall best K keeps (TensorFlow's
    combined NMS); IoUs are float32, computed as its kernel computes them. As in
    `non_max_suppression_best_first`, the pairs gone down are the best T (= num_candidates,
    default 4K) first, and all pairs only when those keep fewer than K.

    TensorFlow's kernel leaves the order of pairs with equal scores unspecified (a heap and an
    unstable sort); with exact ties, it may list tied detections in another order, and of tied
    boxes of one class overlapping each other keep another.
    """
    boxes = np.asarray(boxes, dtype=np.float32)
    scores = np.asarray(scores, dtype=np.float32)
    batch, _, num_classes = scores.shape
    most = int(max_detections)
    window = int(num_candidates or 4 * most)
    threshold, iou_threshold = np.float32(score_threshold), np.float32(iou_threshold)
    out_boxes = np.zeros((batch, most, 4), np.float32)
    out_scores = np.zeros((batch, most), np.float32)
    out_classes = np.zeros((batch, most), np.int32)
    num_valid = np.zeros((batch,), np.int32)
    for i in range(batch):
        flat = scores[i].reshape(-1)  # index = box * C + class
        above = np.flatnonzero(flat > threshold)
        if len(above) > window:  # the best T first, then all pairs when they keep fewer than K
            kth = np.partition(flat[above], len(above) - window)[len(above) - window]
            kept = _greedy_nms(boxes[i], _best_first(flat, above[flat[above] >= kth])[:window], num_classes,
                               iou_threshold, most)  # fmt: skip
            if len(kept) < most:
                kept = _greedy_nms(boxes[i], _best_first(flat, above), num_classes, iou_threshold, most)
        else:
            kept = _greedy_nms(boxes[i], _best_first(flat, above), num_classes, iou_threshold, most)
        n = len(kept)
        num_valid[i] = n
        out_boxes[i, :n] = boxes[i][kept // num_classes]
        out_scores[i, :n] = flat[kept]
        out_classes[i, :n] = kept % num_classes
    return out_boxes, out_scores, out_classes, num_valid


def _best_first(flat: np.ndarray, pairs: np.ndarray) -> np.ndarray:
    """`pairs` (indices into `flat`, ascending) sorted by score, best first, ties by lower index."""
    return pairs[np.argsort(-flat[pairs], kind="stable")]


def _greedy_nms(boxes: np.ndarray, pairs: np.ndarray, num_classes: int, iou_threshold, limit: int) -> np.ndarray:
    """Of `pairs` (box * C + class, best first), those greedy per-class NMS keeps, the first `limit`."""
    box_index, class_index = np.divmod(pairs, num_classes)
    b = boxes[box_index]
    x_min, x_max = np.minimum(b[:, 0], b[:, 2]), np.maximum(b[:, 0], b[:, 2])
    y_min, y_max = np.minimum(b[:, 1], b[:, 3]), np.maximum(b[:, 1], b[:, 3])
    area = (y_max - y_min) * (x_max - x_min)
    alive = np.ones(len(pairs), dtype=bool)
    kept: list[int] = []
    start = 0
    while len(kept) < limit:
        rest = np.flatnonzero(alive[start:])
        if rest.size == 0:
            break
        j = start + int(rest[0])
        kept.append(j)
        start = j + 1
        later = start + np.flatnonzero(alive[start:] & (class_index[start:] == class_index[j]))
        if later.size:
            # IoU(candidate, kept) in float32 as TensorFlow's kernel computes it; 0 for an empty box.
            inter = np.maximum(np.minimum(y_max[later], y_max[j]) - np.maximum(y_min[later], y_min[j]), 0) * (
                np.maximum(np.minimum(x_max[later], x_max[j]) - np.maximum(x_min[later], x_min[j]), 0)
            )
            empty = (area[later] <= 0) | (area[j] <= 0)
            with np.errstate(divide="ignore", invalid="ignore"):
                iou = np.where(empty, np.float32(0), inter / (area[later] + area[j] - inter))
            alive[later[iou > iou_threshold]] = False
    return pairs[np.asarray(kept, dtype=np.int64)]


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


def non_max_suppression_class_offset(boxes, scores, score_threshold, iou_threshold, max_detections: int) -> tuple:
    """`non_max_suppression` (same arguments, same results) built from the single-class NMS op
    only, for graphs whose runtime has no combined NMS (TFLite's builtin NON_MAX_SUPPRESSION_V5).

    Every (box, class) pair becomes a candidate whose box is shifted by class id * (the span of
    all boxes + 1), so boxes of different classes never overlap: one greedy NMS over all the
    candidates then suppresses within a class only, and keeps the same pairs, best first, as the
    per-class NMS followed by the overall top `max_detections` (the shift changes IoUs by float
    rounding only). The output boxes are gathered from the unshifted ones. The batch size must be
    static (TFLite exports use 1).
    """
    import tensorflow as tf

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
