import numpy as np
import pytest
import tensorflow as tf

from utils.boxes import FORMATS, box_area, box_iou, clip_boxes, convert_format

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
