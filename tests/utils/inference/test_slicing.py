"""Sliced inference and test-time augmentation (utils/inference/slicing.py): the tiles, the map of
boxes back to the image, the merge across seams, and small objects found that the plain pass misses."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from tests.planted_helpers import ColourDetector, planted_image
from utils.inference import Predictor
from utils.inference.detector import Detections
from utils.inference.slicing import (
    AUGMENT_VIEWS,
    MultiPassDetector,
    SlicingError,
    View,
    image_views,
    merge_detections,
    tile_windows,
)

# 1600x1200, tiles of 400 with overlap 0.2: columns start at 0, 300, 600, 900, 1200; rows at 0, 267, 533, 800.
IMAGE_HW = (1200, 1600)
SMALL = [(100, 100), (1500, 1100), (380, 600), (1250, 380), (1000, 900)]  # 28-pixel red squares (x0, y0)
BIG = (
    550,
    350,
    300,
)  # a blue square (x0, y0, side) wider than any tile's share of it: seen whole only by the full pass


@pytest.fixture(scope="module")
def street():
    squares = [(x, y, 28, 0) for x, y in SMALL] + [(BIG[0], BIG[1], BIG[2], 1)]
    return planted_image(IMAGE_HW, squares)


# ------------------------------------------------------------------ tiles
@pytest.mark.parametrize(
    "image_hw, tile, overlap, expected",
    [
        ((1200, 1600), 640, 0.2, [[x, y, x + 640, y + 640] for y in (0, 280, 560) for x in (0, 480, 960)]),
        ((1000, 1000), 500, 0.0, [[x, y, x + 500, y + 500] for y in (0, 500) for x in (0, 500)]),
        ((640, 640), 640, 0.2, [[0, 0, 640, 640]]),
        ((300, 200), 640, 0.2, [[0, 0, 200, 300]]),  # smaller than a tile: the image
        ((300, 1000), 640, 0.25, [[0, 0, 640, 300], [360, 0, 1000, 300]]),  # a tile clamped to the height
    ],
)
def test_tile_windows_exact(image_hw, tile, overlap, expected):
    np.testing.assert_array_equal(tile_windows(image_hw, tile, overlap), expected)


@pytest.mark.parametrize("image_hw", [(1200, 1600), (481, 2000), (777, 333), (64, 64), (1080, 1920)])
@pytest.mark.parametrize("tile, overlap", [(320, 0.2), (256, 0.5), (100, 0.0)])
def test_tiles_cover_the_image_inside_it_with_the_asked_overlap(image_hw, tile, overlap):
    h, w = image_hw
    tiles = tile_windows(image_hw, tile, overlap)
    covered = np.zeros(image_hw, bool)
    for x0, y0, x1, y1 in tiles:
        assert 0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h  # shifted inside, never padded
        assert (x1 - x0, y1 - y0) == (min(tile, w), min(tile, h))
        covered[y0:y1, x0:x1] = True
    assert covered.all()
    for axis, length in ((0, w), (1, h)):
        starts = sorted(set(tiles[:, axis].tolist()))
        side = min(tile, length)
        assert starts[0] == 0 and starts[-1] + side == length
        shared = [side - (b - a) for a, b in zip(starts, starts[1:])]
        assert all(s >= round(tile * overlap) for s in shared)


def test_bad_options_are_refused():
    with pytest.raises(SlicingError, match="at least 32"):
        tile_windows((100, 100), 16)
    with pytest.raises(SlicingError, match=r"\[0, 1\)"):
        MultiPassDetector(ColourDetector(), slice=64, overlap=1.0)


def test_views_image_tiles_and_augmentation():
    assert image_views((300, 200), slice=640) == [View((0, 0, 200, 300))]  # fits one tile: no tile pass
    views = image_views((1200, 1600), slice=640, augment=True)
    assert len(views) == (1 + 9) * len(AUGMENT_VIEWS)
    assert [(v.scale, v.flip) for v in views[:3]] == [(1.0, False), (0.83, True), (0.67, False)]
    assert not views[0].is_tile and all(v.is_tile for v in views[3:])


# ------------------------------------------------------------------ boxes back to the image
@pytest.mark.parametrize("scale, flip", [(1.0, False), (1.0, True), (0.83, True), (0.67, False)])
def test_boxes_map_back_to_the_image_exactly(scale, flip):
    view = View((100, 50, 500, 450), scale, flip, is_tile=True)
    image = planted_image((600, 800), [(300, 200, 60, 0)])
    rendered, mapping = view.render(image, (416, 416))
    sx, sy, ox, oy = mapping
    # The square in window pixels (200, 150)-(260, 210), through the view's own flip, scale and offset.
    x0, x1 = (400 - 260, 400 - 200) if flip else (200, 260)
    in_view = np.array([[x0 * sx + ox, 150 * sy + oy, x1 * sx + ox, 210 * sy + oy]], np.float32)
    np.testing.assert_allclose(view.to_image(in_view, mapping), [[300, 200, 360, 260]], atol=1e-3)
    # And where the rendered pixels really are: the red region, mapped back, lands on the square.
    found = ColourDetector(input_shape=(416, 416), min_side=4).detect([rendered])[0]
    assert len(found) == 1
    np.testing.assert_allclose(view.to_image(found.boxes, mapping), [[300, 200, 360, 260]], atol=2.0)


# ------------------------------------------------------------------ merging
def _dets(boxes, scores, class_ids):
    return Detections(np.array(boxes, np.float32), np.array(scores, np.float32), np.array(class_ids, np.int32))


def test_a_box_cut_at_an_inner_tile_edge_goes_when_a_larger_one_covers_it():
    image_hw, full, tile = (400, 800), View((0, 0, 800, 400)), View((0, 0, 400, 400), is_tile=True)
    whole = _dets([[300, 100, 600, 200]], [0.6], [0])
    cut = _dets([[350, 100, 400, 200]], [0.95], [0])  # the object's left sixth, cut by x = 400; IoU 1/6 < nms_iou
    merged = merge_detections([(full, whole), (tile, cut)], image_hw, (416, 416), nms_iou=0.3, max_detections=100)
    np.testing.assert_array_equal(merged.boxes, [[300, 100, 600, 200]])
    # Kept: the same box of another class, and a box at the image's own border (not a seam).
    other_class = _dets([[350, 100, 400, 200]], [0.95], [1])
    merged = merge_detections([(full, whole), (tile, other_class)], image_hw, (416, 416), 0.3, 100)
    assert len(merged) == 2
    border_tile = View((400, 0, 800, 400), is_tile=True)
    at_border = _dets([[750, 100, 800, 200]], [0.95], [0])
    whole_right = _dets([[500, 100, 800, 200]], [0.6], [0])
    merged = merge_detections([(full, whole_right), (border_tile, at_border)], image_hw, (416, 416), 0.3, 100)
    assert len(merged) == 2


def test_merge_is_per_class_nms_best_first_and_capped():
    full = View((0, 0, 100, 100))
    dets = _dets(
        [[10, 10, 50, 50], [12, 10, 52, 50], [12, 10, 52, 50], [60, 60, 90, 90]], [0.5, 0.9, 0.7, 0.8], [0, 0, 1, 0]
    )
    merged = merge_detections([(full, dets)], (100, 100), (416, 416), nms_iou=0.3, max_detections=100)
    np.testing.assert_allclose(merged.scores, [0.9, 0.8, 0.7])
    np.testing.assert_array_equal(merged.class_ids, [0, 0, 1])
    assert len(merge_detections([(full, dets)], (100, 100), (416, 416), 0.3, max_detections=2)) == 2
    assert len(merge_detections([(full, Detections())], (100, 100), (416, 416), 0.3, 100)) == 0


# ------------------------------------------------------------------ the acceptance test
def _match(boxes, expected, atol):
    """Each expected box has exactly one found box within `atol` pixels, and nothing else was found."""
    assert len(boxes) == len(expected), boxes
    for box in expected:
        close = np.all(np.abs(boxes - np.array(box, np.float32)) <= atol, axis=1)
        assert close.sum() == 1, (box, boxes)


def test_the_sliced_pass_finds_small_objects_the_plain_pass_misses(street):
    plain = ColourDetector()  # 416 input: the 1600-pixel image at 0.26x, a 28-pixel square is 7 pixels there
    [found] = plain.detect([street])
    np.testing.assert_array_equal(found.class_ids, [1])  # only the big square

    sliced = MultiPassDetector(ColourDetector(), slice=400, overlap=0.2)
    [found] = sliced.detect([street])
    red = found.boxes[found.class_ids == 0]
    _match(red, [[x, y, x + 28, y + 28] for x, y in SMALL], atol=2.0)  # one each, across the seams too
    blue = found.boxes[found.class_ids == 1]
    x, y, side = BIG
    _match(blue, [[x, y, x + side, y + side]], atol=5.0)  # its tile pieces gone, the full pass's box kept
    assert sliced.detector.seen_shapes[0] == street.shape  # the full image first, then 20 tiles of 400
    assert sliced.detector.seen_shapes[1:] == [(400, 400, 3)] * 20


def test_augmentation_keeps_one_box_per_object(street):
    sliced = MultiPassDetector(ColourDetector(), slice=400, augment=True)
    [found] = sliced.detect([street])
    assert len(sliced.detector.seen_shapes) == 21 * 3
    _match(found.boxes[found.class_ids == 0], [[x, y, x + 28, y + 28] for x, y in SMALL], atol=3.0)
    assert (found.class_ids == 1).sum() == 1


def test_the_wrapper_is_the_detector_otherwise():
    inner = ColourDetector()
    sliced = MultiPassDetector(inner, slice=400)
    assert sliced.class_names == inner.class_names and sliced.input_shape == inner.input_shape
    with pytest.raises(AttributeError, match="whole images"):
        _ = sliced.detect_batch
    with pytest.raises(ValueError, match="list of images"):
        sliced.detect(np.zeros((10, 10, 3), np.uint8))


def test_predictor_runs_the_sliced_detector_and_refuses_other_pictures(street, tmp_path):
    path = tmp_path / "street.png"
    Image.fromarray(street).save(path)
    predictor = Predictor(detector=MultiPassDetector(ColourDetector(), slice=400))
    [result] = predictor.predict(path)
    detections = json.loads(json.dumps(result.record()))["detections"]
    assert sorted(d["class_name"] for d in detections) == ["blue"] + ["red"] * 5
    corner = [d["box"] for d in detections if d["box"][0] > 1400]  # the small square at (1500, 1100)
    np.testing.assert_allclose(corner, [[1500, 1100, 1528, 1128]], atol=2.0)
    with pytest.raises(SlicingError, match="heatmap"):
        Predictor(detector=MultiPassDetector(ColourDetector(), slice=400), picture="heatmap")
    with pytest.raises(SlicingError, match="cam"):
        Predictor("missing.keras", picture="cam", augment=True)  # refused before loading anything
