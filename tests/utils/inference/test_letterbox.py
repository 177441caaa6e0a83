"""Letterbox and its exact inverse."""

import numpy as np
import pytest

from utils.inference.letterbox import LETTERBOX_FILL, letterbox, letterbox_boxes, letterbox_info, unletterbox_boxes

SIZES = [(37, 101), (333, 17), (416, 416), (1, 1), (375, 500), (13, 9), (417, 415)]


@pytest.mark.parametrize("image_hw", SIZES)
@pytest.mark.parametrize("input_hw", [(416, 416), (320, 416), (64, 96)])
def test_inverse_is_exact_for_odd_sizes(image_hw, input_hw):
    rng = np.random.default_rng(0)
    h, w = image_hw
    xy1 = rng.uniform(0, 1, (20, 2)) * (w, h)
    xy2 = xy1 + rng.uniform(0, 1, (20, 2)) * ((w, h) - xy1)
    boxes = np.concatenate([xy1, xy2], axis=1).astype(np.float32)
    info = letterbox_info(image_hw, input_hw)
    there = letterbox_boxes(boxes, info)
    np.testing.assert_allclose(unletterbox_boxes(there, info, clip=False), boxes, atol=1e-3 * max(h, w))
    # The whole image maps onto the pasted region.
    (new_h, new_w), (px, py) = info.new_hw, info.pad_xy
    whole = letterbox_boxes(np.array([[0, 0, w, h]], np.float32), info)
    np.testing.assert_allclose(whole[0], [px, py, px + new_w, py + new_h], atol=1e-4)
    assert new_h <= input_hw[0] and new_w <= input_hw[1]
    assert new_h == input_hw[0] or new_w == input_hw[1]


def test_pixels_land_where_the_boxes_say():
    image = np.zeros((90, 151, 3), np.uint8)
    image[30:60, 40:100] = 255
    out, info = letterbox(image, (416, 416))
    box = letterbox_boxes(np.array([[40, 30, 100, 60]], np.float32), info)[0]
    ys, xs = np.nonzero(out[..., 0] > 191)  # the white rectangle (fill is 128, background 0)
    np.testing.assert_allclose([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], box, atol=1.5)
    (new_h, new_w), (px, py) = info.new_hw, info.pad_xy
    assert (out[:py] == LETTERBOX_FILL).all() and (out[py + new_h :] == LETTERBOX_FILL).all()
    assert (out[py : py + new_h, px : px + new_w] != LETTERBOX_FILL).all()


def test_same_size_is_copied_and_clip():
    image = np.random.default_rng(0).integers(0, 256, (64, 96, 3), dtype=np.uint8)
    out, info = letterbox(image, (64, 96))
    np.testing.assert_array_equal(out, image)
    assert info.pad_xy == (0, 0)
    clipped = unletterbox_boxes(np.array([[-5, -5, 200, 70]], np.float32), info)
    np.testing.assert_array_equal(clipped[0], [0, 0, 96, 64])
