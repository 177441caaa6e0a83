"""benchmarks/box_fit.py: how well detections fit the objects they find, by size."""

from __future__ import annotations

import json

import numpy as np
import pytest

from benchmarks import box_fit
from utils.evaluation.metrics import GroundTruth, ImageDetections


def _detections(boxes, class_ids, scores):
    return ImageDetections(np.array(boxes, float), np.array(scores, float), np.array(class_ids))


def test_a_bias_and_a_miss_are_told_apart_by_size():
    truth = {
        "a": GroundTruth(np.array([[10.0, 10.0, 30.0, 30.0], [0.0, 0.0, 150.0, 120.0]]), np.array([0, 1])),
        "b": GroundTruth(np.array([[50.0, 50.0, 60.0, 60.0]]), np.array([0]), np.array([True])),  # difficult
    }
    exact = {"a": _detections([[10, 10, 30, 30], [0, 0, 150, 120]], [0, 1], [0.9, 0.9])}
    # The large box 1.5 times as wide about the same centre (IoU 2/3); the small one found only by
    # another class's detection and one scoring below --min-score: not found.
    wide = {"a": _detections([[10, 10, 30, 30], [10, 10, 30, 30], [-37.5, 0, 187.5, 120]], [1, 0, 1], [0.9, 0.05, 0.9])}

    exact_table = box_fit.summarise(box_fit.best_fits(truth, exact, min_score=0.1))
    assert sorted(exact_table) == ["large", "small"]  # the difficult object is not counted
    for size in ("small", "large"):
        row = exact_table[size]
        assert row["objects"] == 1 and row["found50"] == row["found75"] == 1.0 and row["median_iou"] == 1.0
        assert row["log_w_mean"] == row["log_h_mean"] == row["dx_sd"] == 0.0

    wide_table = box_fit.summarise(box_fit.best_fits(truth, wide, min_score=0.1))
    assert wide_table["small"]["found50"] == 0.0 and np.isnan(wide_table["small"]["median_iou"])
    large = wide_table["large"]
    assert large["found50"] == 1.0 and large["found75"] == 0.0
    assert large["median_iou"] == pytest.approx(2 / 3)
    assert large["log_w_mean"] == pytest.approx(np.log(1.5)) and large["log_h_mean"] == pytest.approx(0.0)


def test_the_script_reads_get_maps_detection_files(tmp_path, capsys):
    from utils.data.demo import write_demo_dataset
    from utils.evaluation.voc_eval import EvaluationLog, load_voc_split

    data = write_demo_dataset(tmp_path / "demo", splits={"test": 3}, image_size=(160, 200))
    classes = (data / "classes.txt").read_text().split()
    split = load_voc_split(data, "test", classes, EvaluationLog())
    entries = [
        {"image_id": image_id, "category_id": int(c), "bbox": [x1, y1, x2 - x1, y2 - y1], "score": 0.8}
        for image_id, truth in split.ground_truths.items()
        for (x1, y1, x2, y2), c in zip(truth.boxes.tolist(), truth.class_ids, strict=True)
    ]
    (tmp_path / "exact.json").write_text(json.dumps(entries))
    argv = ["--data", str(data), "--classes", str(data / "classes.txt"), f"perfect={tmp_path / 'exact.json'}"]
    assert box_fit.main(argv) == 0
    rows = [line.split() for line in capsys.readouterr().out.splitlines() if line.startswith(" ") and "perfect" in line]
    assert rows and all(row[3:6] == ["1.00", "1.00", "1.000"] for row in rows)
    with pytest.raises(SystemExit):
        box_fit.main(["--data", str(data), "no-name.json"])
