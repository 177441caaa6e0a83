import math

import numpy as np
import pytest
import tensorflow as tf

from utils.boxes import (
    FORMATS,
    box_area,
    box_ciou_ops,
    box_iou,
    box_iou_aligned,
    box_iou_batched_ops,
    box_iou_pairs_ops,
    clip_boxes,
    convert_format,
    shape_iou,
    shape_iou_ops,
)

# One box, 40 px wide and 20 px tall, on a 100 (h) x 200 (w) image, in every format.
IMAGE_SHAPE = (100, 200)
SAME_BOX = {
    "xyxy": [10, 30, 50, 50],
    "yxyx": [30, 10, 50, 50],
    "xywh": [10, 30, 40, 20],
    "center_xywh": [30, 40, 40, 20],
    "rel_xyxy": [0.05, 0.3, 0.25, 0.5],
    "rel_center_xywh": [0.15, 0.4, 0.2, 0.2],
}


@pytest.mark.parametrize("source", FORMATS)
@pytest.mark.parametrize("target", FORMATS)
def test_every_conversion_agrees_with_the_table(source, target):
    got = convert_format(np.array([SAME_BOX[source]], "float64"), source, target, IMAGE_SHAPE)
    np.testing.assert_allclose(got, [SAME_BOX[target]], atol=1e-9)


def test_tensors_stay_tensors_and_batch_axes_are_kept():
    boxes = tf.constant(np.random.default_rng(0).uniform(0, 50, size=(2, 5, 4)), tf.float32)
    out = convert_format(boxes, "center_xywh", "xyxy")
    assert isinstance(out, tf.Tensor) and out.shape == (2, 5, 4)
    back = convert_format(out, "xyxy", "center_xywh")
    np.testing.assert_allclose(back.numpy(), boxes.numpy(), atol=1e-4)


def test_bad_formats_and_shapes_are_rejected():
    with pytest.raises(ValueError, match="Unknown box format 'xywhc'"):
        convert_format(np.zeros((1, 4)), "xywhc", "xyxy")
    with pytest.raises(ValueError, match="4 values on the last axis"):
        convert_format(np.zeros((1, 5)), "xyxy", "xywh")
    with pytest.raises(ValueError, match="needs image_shape"):
        convert_format(np.zeros((1, 4)), "xyxy", "rel_xyxy")


def test_iou_and_area():
    a = np.array([[0, 0, 10, 10], [0, 0, 0, 0]], "float32")
    b = np.array([[5, 0, 15, 10], [20, 20, 30, 30], [0, 0, 10, 10]], "float32")
    np.testing.assert_allclose(box_iou(a, b), [[50 / 150, 0, 1], [0, 0, 0]])
    np.testing.assert_allclose(box_area(np.array([[0, 0, 4, 3], [5, 5, 1, 1]], "float32")), [12, 0])


def test_clip_boxes_to_image():
    boxes = np.array([[-5, -1, 250, 50], [10, 20, 30, 40]], "float32")
    np.testing.assert_array_equal(clip_boxes(boxes, IMAGE_SHAPE), [[0, 0, 200, 50], [10, 20, 30, 40]])


def test_box_iou_aligned_matches_the_pairwise_matrix():
    rng = np.random.default_rng(0)
    a = rng.uniform(0, 50, (7, 2))
    b = rng.uniform(0, 50, (7, 2))
    boxes1 = np.concatenate([a, a + rng.uniform(1, 30, (7, 2))], axis=1)
    boxes2 = np.concatenate([b, b + rng.uniform(1, 30, (7, 2))], axis=1)
    np.testing.assert_array_equal(box_iou_aligned(boxes1, boxes2), np.diag(box_iou(boxes1, boxes2)))
    with pytest.raises(ValueError, match="4 values"):
        box_iou_aligned(np.zeros((2, 3)), np.zeros((2, 3)))


def test_shape_iou_compares_widths_and_heights_on_one_centre():
    np.testing.assert_allclose(shape_iou(np.array([[10.0, 10.0]]), np.array([[10.0, 10.0], [20.0, 5.0]])), [[1, 1 / 3]])


def test_shape_iou_ops_matches_numpy_with_batch_axes():
    rng = np.random.default_rng(0)
    wh = rng.uniform(1, 100, (2, 5, 2))
    anchors = rng.uniform(1, 100, (6, 2))
    got = shape_iou_ops(tf.constant(wh, tf.float32), tf.constant(anchors, tf.float32)).numpy()
    assert got.shape == (2, 5, 6)
    np.testing.assert_allclose(got, shape_iou(wh.reshape(-1, 2), anchors).reshape(2, 5, 6), rtol=1e-5)


def test_the_batched_ious_match_box_iou_per_batch_item():
    rng = np.random.default_rng(1)
    centre = rng.uniform(0, 60, (2, 7, 2))
    boxes = np.concatenate([centre, rng.uniform(1, 40, (2, 7, 2))], axis=-1)  # center_xywh
    got = box_iou_batched_ops(tf.constant(boxes[:, :4], tf.float32), tf.constant(boxes[:, 4:], tf.float32)).numpy()
    assert got.shape == (2, 4, 3)
    for b in range(2):
        xyxy = convert_format(boxes[b], "center_xywh", "xyxy")
        np.testing.assert_allclose(got[b], box_iou(xyxy[:4], xyxy[4:]), rtol=1e-5, atol=1e-6)
        pairs = box_iou_pairs_ops(tf.constant(convert_format(boxes, "center_xywh", "xyxy"), tf.float32)[:, :4],
                                  tf.constant(convert_format(boxes, "center_xywh", "xyxy"), tf.float32)[:, 4:])
        np.testing.assert_allclose(pairs.numpy()[b], box_iou(xyxy[:4], xyxy[4:]), rtol=1e-5, atol=1e-6)


def test_ciou_identical_boxes_is_one():
    boxes = tf.constant([[5.0, 5.0, 4.0, 2.0]])
    np.testing.assert_allclose(box_ciou_ops(boxes, boxes).numpy(), [1.0], atol=1e-6)


def test_ciou_shifted_boxes_same_shape():
    # xyxy [-1,-1,1,1] vs [0,-1,2,1]: IoU 2/6, centre distance^2 1, enclosing 3x2 -> c^2 13, v 0.
    a = tf.constant([[0.0, 0.0, 2.0, 2.0]])
    b = tf.constant([[1.0, 0.0, 2.0, 2.0]])
    np.testing.assert_allclose(box_ciou_ops(a, b).numpy(), [1 / 3 - 1 / 13], atol=1e-6)


def test_ciou_aspect_ratio_term():
    # Same centre, 2x2 vs 4x2: IoU 4/8, rho 0, v = 4/pi^2 (atan 2 - atan 1)^2, alpha = v / (0.5 + v).
    a = tf.constant([[0.0, 0.0, 2.0, 2.0]])
    b = tf.constant([[0.0, 0.0, 4.0, 2.0]])
    v = 4 / math.pi**2 * (math.atan(2) - math.atan(1)) ** 2
    np.testing.assert_allclose(box_ciou_ops(a, b).numpy(), [0.5 - v / (0.5 + v) * v], atol=1e-6)


def test_ciou_disjoint_boxes_is_negative():
    a = tf.constant([[0.0, 0.0, 2.0, 2.0]])
    b = tf.constant([[10.0, 0.0, 2.0, 2.0]])
    # IoU 0, rho^2 = 100, enclosing 12x2 -> c^2 = 148.
    np.testing.assert_allclose(box_ciou_ops(a, b).numpy(), [-100 / 148], atol=1e-6)


def test_numpy_users_do_not_import_tensorflow():
    import subprocess
    import sys
    from pathlib import Path

    code = "import sys, utils.boxes; sys.exit('tensorflow' in sys.modules)"
    root = Path(__file__).resolve().parents[2]
    assert subprocess.run([sys.executable, "-c", code], cwd=root).returncode == 0
