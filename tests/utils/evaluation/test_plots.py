"""The charts get_map.py writes: class names in Chinese are drawn as characters."""

import warnings

import numpy as np

from utils.evaluation.metrics import GroundTruth, ImageDetections, evaluate_detections
from utils.evaluation.plots import write_plots


def test_chinese_class_names_have_their_glyphs_in_the_charts(tmp_path):
    box = np.array([[10.0, 10.0, 50.0, 50.0]])
    detections = {"a": ImageDetections(box, np.array([0.9]), np.array([0])), "b": ImageDetections(box[:0], [], [])}
    ground_truths = {"a": GroundTruth(box, np.array([0])), "b": GroundTruth(box, np.array([1]))}
    result = evaluate_detections(detections, ground_truths, 2)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        paths = write_plots(result, ["猫", "汽车"], tmp_path)
    missing = [str(w.message) for w in caught if "missing from font" in str(w.message)]
    assert not missing, missing  # matplotlib warns for every character it draws as a box
    assert len(paths) == 4 and all(p.is_file() for p in paths)
