"""Decoding against a hand-computed case, and per-class NMS."""

import math

import numpy as np
import tensorflow as tf

from nets.model_data import ANCHORS_MASK, load_anchors
from utils.inference.postprocess import (
    decode_outputs,
    merge_boxes,
    non_max_suppression,
    non_max_suppression_best_first,
    non_max_suppression_class_offset,
    non_max_suppression_host,
    objectness_map,
    with_merged_boxes,
)


def _sigmoid(x):
    return 1.0 / (1.0 + math.exp(-x))


def test_decode_hand_computed():
    anchors = load_anchors()
    num_classes = 2
    # Input 64x96 (h, w): P5 head 2x3, P4 head 4x6, 3 anchors x (5 + 2) channels.
    p5 = np.zeros((1, 2, 3, 21), np.float32)
    p4 = np.zeros((1, 4, 6, 21), np.float32)
    # P5, row 1, column 2, its second anchor (mask (3, 4, 5) -> anchor 4).
    p5[0, 1, 2, 7:14] = [0.5, -1.0, math.log(2.0), 0.0, 3.0, 2.0, -1.0]
    boxes, scores = decode_outputs([p5, p4], anchors, ANCHORS_MASK, num_classes, (64, 96), 1.05)
    assert boxes.shape == (1, 2 * 3 * 3 + 4 * 6 * 3, 4) and scores.shape == (1, 90, 2)
    index = (1 * 3 + 2) * 3 + 1
    s = 1.05
    cx = (2 + _sigmoid(0.5) * s - (s - 1) / 2) / 3 * 96
    cy = (1 + _sigmoid(-1.0) * s - (s - 1) / 2) / 2 * 64
    w, h = 2.0 * anchors[4][0], 1.0 * anchors[4][1]
    np.testing.assert_allclose(boxes[0, index], [cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], rtol=1e-5)
    np.testing.assert_allclose(scores[0, index], [_sigmoid(3) * _sigmoid(2), _sigmoid(3) * _sigmoid(-1)], rtol=1e-5)
    # An all-zero cell: anchor-sized box centred in its cell, score 0.25.
    first_p4 = 2 * 3 * 3  # P4 row 0, column 0, anchor 0 (mask (1, 2, 3) -> anchor 1)
    a = anchors[1]
    np.testing.assert_allclose(boxes[0, first_p4], [8 - a[0] / 2, 8 - a[1] / 2, 8 + a[0] / 2, 8 + a[1] / 2], rtol=1e-5)
    np.testing.assert_allclose(scores[0, first_p4], [0.25, 0.25], rtol=1e-6)


def _nms(boxes, scores, **kwargs):
    args = {"score_threshold": 0.5, "iou_threshold": 0.3, "max_detections": 10} | kwargs
    out = non_max_suppression(tf.constant([boxes], tf.float32), tf.constant([scores], tf.float32), **args)
    b, s, c, n = (np.asarray(t)[0] for t in out)
    return b[:n], s[:n], c[:n]


def test_nms_keeps_and_suppresses_per_class():
    boxes = [
        [0, 0, 10, 10],  # class 0, best
        [1, 1, 11, 11],  # class 0, IoU 0.68 with the first: suppressed
        [1, 1, 11, 11],  # class 1: another class, kept
        [50, 50, 60, 60],  # class 0, no overlap: kept
        [20, 20, 30, 30],  # below the score threshold: dropped
        [0, 0, 10, 14],  # class 0, IoU 0.71 with the first: suppressed
    ]
    scores = [[0.9, 0], [0.8, 0], [0, 0.7], [0.6, 0], [0.4, 0.1], [0.85, 0]]
    b, s, c = _nms(boxes, scores)
    np.testing.assert_allclose(s, [0.9, 0.7, 0.6])
    np.testing.assert_array_equal(c, [0, 1, 0])
    np.testing.assert_allclose(b, [boxes[0], boxes[2], boxes[3]])
    # A looser IoU threshold keeps the overlapping box of the same class.
    _, s, _ = _nms(boxes, scores, iou_threshold=0.75)
    np.testing.assert_allclose(s, [0.9, 0.85, 0.8, 0.7, 0.6])
    # The same box can be kept for two classes.
    b, s, c = _nms([[0, 0, 10, 10]], [[0.9, 0.8]])
    np.testing.assert_array_equal(c, [0, 1])
    # max_detections keeps the best.
    _, s, _ = _nms(boxes, scores, max_detections=2)
    np.testing.assert_allclose(s, [0.9, 0.7])


def test_merge_moves_a_kept_box_to_the_weighted_mean_of_its_class():
    """Each kept box becomes the mean of the candidates of its class overlapping it by more than
    the merge IoU, itself included, weighted by score x IoU; other classes, candidates below the
    IoU and padding rows leave it alone, and IoU 1 is off."""
    kept = np.array([[[10, 10, 50, 50], [0, 0, 0, 0]]], np.float32)  # one detection of class 1, one padding row
    classes = np.array([[1, 0]], np.int32)
    boxes = np.array(
        [[
            [10, 10, 50, 50],  # the kept box itself, score 0.9
            [14, 10, 54, 50],  # class 1, IoU 1440 / 1760 with it, score 0.3: merged
            [30, 10, 70, 50],  # class 1, IoU 800 / 2400: below 0.5, not merged
            [12, 10, 52, 50],  # class 2 only: another class, not merged
            [100, 100, 120, 120],  # no overlap
        ]],
        np.float32,
    )  # fmt: skip
    scores = np.zeros((1, 5, 3), np.float32)
    scores[0, [0, 1, 2, 4], 1] = [0.9, 0.3, 0.9, 0.8]
    scores[0, 3, 2] = 0.9
    merged = np.asarray(merge_boxes(kept, classes, boxes, scores, 0.5))
    w = 0.3 * 1440 / 1760
    np.testing.assert_allclose(merged[0, 0], [(0.9 * 10 + w * 14) / (0.9 + w), 10, (0.9 * 50 + w * 54) / (0.9 + w), 50],
                               rtol=1e-5)  # fmt: skip
    np.testing.assert_array_equal(merged[0, 1], [0, 0, 0, 0])
    np.testing.assert_allclose(np.asarray(merge_boxes(kept, classes, boxes, scores, 0.3))[0, 0, [0, 2]],
                               np.average([[10, 50], [14, 54], [30, 70]], axis=0, weights=[0.9, w, 0.9 / 3]),
                               rtol=1e-5)  # fmt: skip
    np.testing.assert_array_equal(np.asarray(merge_boxes(kept, classes, boxes, scores, 1.0)), kept)
    detections = (kept, np.array([[0.9, 0]], np.float32), classes, np.array([1], np.int32))
    assert with_merged_boxes(detections, boxes, scores, 1.0) is detections


def test_merge_tightens_scattered_predictions_of_one_object():
    """Many predictions of one object, each off by its own error (what several positives per object
    give): the merged box fits the object better than the best-scoring one alone, on average, and
    the NMS's choice (scores, classes, count) is unchanged."""
    rng = np.random.default_rng(3)
    truth = np.array([40.0, 60.0, 140.0, 180.0], np.float32)
    gains = []
    for _ in range(50):
        noise = rng.normal(0.0, 6.0, (12, 4)).astype(np.float32)
        boxes = (truth + noise)[None]
        scores = rng.uniform(0.3, 0.9, (1, 12, 1)).astype(np.float32)
        kept = non_max_suppression(tf.constant(boxes), tf.constant(scores), 0.25, 0.5, 10)
        merged = with_merged_boxes(kept, boxes, scores, 0.5)
        for k, m in zip(kept[1:], merged[1:], strict=True):
            np.testing.assert_array_equal(np.asarray(k), np.asarray(m))
        n = int(kept[3][0])
        best, tight = np.asarray(kept[0])[0, :n], np.asarray(merged[0])[0, :n]
        gains.append(np.abs(tight[0] - truth).mean() - np.abs(best[0] - truth).mean())
    assert np.mean(gains) < -2.0  # pixels: the merged corner errors are well below the single box's


def test_objectness_map():
    raw = np.full((1, 2, 2, 3 * 6), -10.0, np.float32)
    raw[0, 1, 0, 6 + 4] = 0.0  # second anchor's objectness at row 1, col 0
    [m] = objectness_map([raw], [(0, 1, 2)], 1)
    assert m.shape == (1, 2, 2)
    np.testing.assert_allclose(m[0], [[_sigmoid(-10), _sigmoid(-10)], [0.5, _sigmoid(-10)]], rtol=1e-5)


def test_class_offset_nms_equals_combined_nms():
    """The single-class-op NMS (TFLite exports) keeps the same (box, class) pairs, in the same
    order, as the combined per-class NMS, on crowded random boxes of 4 classes."""
    rng = np.random.default_rng(3)
    xy = rng.uniform(-20, 300, (2, 400, 2))
    boxes = tf.constant(np.concatenate([xy, xy + rng.uniform(4, 90, (2, 400, 2))], -1), tf.float32)
    scores = tf.constant(rng.uniform(0, 1, (2, 400, 4)) ** 3, tf.float32)
    for conf, iou, k in ((0.3, 0.3, 100), (0.05, 0.5, 20)):
        want = non_max_suppression(boxes, scores, conf, iou, k)
        got = non_max_suppression_class_offset(boxes, scores, conf, iou, k)
        np.testing.assert_array_equal(got[3], want[3])
        assert int(want[3][0]) > 10
        np.testing.assert_array_equal(got[2], want[2])
        np.testing.assert_allclose(got[1], want[1], atol=1e-6)
        np.testing.assert_allclose(got[0], want[0], atol=1e-4)


def test_best_first_nms_equals_combined_nms_on_every_branch():
    """The detector's NMS gives what the combined per-class NMS gives, exactly: through the best
    pairs only (many pairs above the threshold), through all pairs (few above it, or the best
    pairs keeping too few), per image of a batch, with ties in score."""
    rng = np.random.default_rng(5)
    xy = rng.uniform(-20, 300, (3, 500, 2))
    boxes = np.concatenate([xy, xy + rng.uniform(4, 90, (3, 500, 2))], -1).astype(np.float32)
    scores = (rng.uniform(0, 1, (3, 500, 6)) ** 2).astype(np.float32)
    scores[1] *= 0.252  # image 1: a dozen pairs above 0.25, all among its best
    scores[2, :40] = 0.9  # image 2: tied scores, stacked on one box
    boxes[2, :40] = boxes[2, 0]
    cases = {
        "best pairs": (0.25, 0.3, 20, 100),  # the 100 best keep 20 in images 0 and 2, all of image 1
        "few above": (0.25, 0.3, 20, 5000),  # T above every count: all pairs
        "too few kept": (0.25, 0.9, 100, 60),  # 60 best pairs cannot keep 100: all pairs
        "near zero": (0.0, 0.5, 50, None),  # mAP-like threshold, the default T
    }
    for name, (conf, iou, k, t) in cases.items():
        want = non_max_suppression(tf.constant(boxes), tf.constant(scores), conf, iou, k)
        got = non_max_suppression_best_first(tf.constant(boxes), tf.constant(scores), conf, iou, k, t)
        for g, w in zip(got, want, strict=True):
            np.testing.assert_array_equal(np.asarray(g), np.asarray(w), err_msg=name)
        assert int(want[3][0]) > 10, name


def _random_pairs(rng, images, boxes, classes, ties=False):
    """Crowded random pixel xyxy boxes (a few empty ones among them) and squared-uniform scores.
    With ties: every odd class scores as class 0, box by box, and the first boxes are one box
    stacked, scoring 0.95 in every class."""
    xy = rng.uniform(-20, 300, (images, boxes, 2))
    b = np.concatenate([xy, xy + rng.uniform(0, 90, (images, boxes, 2))], -1).astype(np.float32)
    b[:, ::17, 2] = b[:, ::17, 0]  # zero width: IoU 0 with everything, as in the kernel
    s = (rng.uniform(0, 1, (images, boxes, classes)) ** 2).astype(np.float32)
    if ties:
        s[:, :, 1::2] = s[:, :, :1]
        stack = int(rng.integers(2, 12))
        b[:, :stack] = b[:, :1]
        s[:, :stack] = 0.95
    return b, s


def test_host_nms_equals_the_tensorflow_nms():
    """The NumPy NMS of the other Keras backends gives what the detector's TensorFlow NMS gives,
    exactly (boxes, scores, classes, counts, order), on crowded random boxes of 1 to 80 classes,
    for thresholds from mAP's to predict's, with max_detections cutting, through the best-T window
    and past it (few kept among the best pairs)."""
    rng = np.random.default_rng(11)
    cases = [  # classes, conf, iou, max_detections, num_candidates
        (1, 0.25, 0.3, 20, None),
        (7, 0.5, 0.3, 100, None),
        (30, 0.001, 0.5, 100, None),
        (80, 0.0, 0.5, 50, None),
        (3, 0.25, 0.9, 100, 60),  # 60 best pairs cannot keep 100: all pairs
        (20, 0.25, 0.3, 5, 12),  # the best 12 decide
        (4, 0.999, 0.5, 10, None),  # nothing above the threshold
    ]
    for classes, conf, iou, k, t in cases:
        boxes, scores = _random_pairs(rng, 3, int(rng.integers(50, 500)), classes)
        want = non_max_suppression_best_first(tf.constant(boxes), tf.constant(scores), conf, iou, k, t)
        got = non_max_suppression_host(boxes, scores, conf, iou, k, t)
        for name, g, w in zip(("boxes", "scores", "classes", "valid"), got, want, strict=True):
            assert g.dtype == np.asarray(w).dtype, name
            np.testing.assert_array_equal(g, np.asarray(w), err_msg=f"{name}, case {classes, conf, iou, k, t}")
    assert int(want[3].numpy().max()) == 0


def _sorted_rows(out, i):
    """Image i's valid detections in one order whatever the order of equal scores."""
    b, s, c, n = (np.asarray(t)[i] for t in out)
    b, s, c = b[: int(n)], s[: int(n)], c[: int(n)]
    order = np.lexsort((b[:, 3], b[:, 2], b[:, 1], b[:, 0], c, -s))
    return b[order], s[order], c[order]


def test_host_nms_keeps_what_the_tensorflow_nms_keeps_with_tied_scores():
    """Tied scores (a box scoring the same in several classes; a stack of one box tied in every
    class) keep the same detections as TensorFlow's NMS; the host lists ties by the lower
    (box, class) index, where TensorFlow's kernel leaves their order unspecified."""
    rng = np.random.default_rng(12)
    for classes in (2, 9, 40):
        boxes, scores = _random_pairs(rng, 2, int(rng.integers(50, 300)), classes, ties=True)
        for conf, iou in ((0.0, 0.5), (0.25, 0.3), (0.5, 0.7)):
            want = non_max_suppression_best_first(tf.constant(boxes), tf.constant(scores), conf, iou, 20000)
            got = non_max_suppression_host(boxes, scores, conf, iou, 20000)
            np.testing.assert_array_equal(got[3], want[3])
            assert int(got[3].max()) < 20000  # no cut through a group of ties
            for i in range(2):
                for g, w in zip(_sorted_rows(got, i), _sorted_rows(want, i), strict=True):
                    np.testing.assert_array_equal(g, w)
    # The order of ties: the lower box * C + class first.
    boxes = np.array([[[0, 0, 10, 10], [20, 20, 30, 30], [40, 40, 50, 50]]], np.float32)
    scores = np.array([[[0.0, 0.7, 0.9], [0.7, 0.7, 0.0], [0.9, 0.0, 0.7]]], np.float32)
    b, s, c, n = non_max_suppression_host(boxes, scores, 0.5, 0.5, 10)
    assert int(n[0]) == 6
    np.testing.assert_array_equal(c[0, :6], [2, 0, 1, 0, 1, 2])
    np.testing.assert_array_equal(b[0, :6, 0], [0, 40, 0, 20, 20, 40])
    np.testing.assert_allclose(s[0, :6], [0.9, 0.9, 0.7, 0.7, 0.7, 0.7])
