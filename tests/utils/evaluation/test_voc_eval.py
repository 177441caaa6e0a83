"""utils.evaluation.voc_eval: the VOC-split evaluation get_map.py drives, called directly."""

import json
import logging

import numpy as np
import pytest
from PIL import Image

from nets.model_data import ModelDataError
from utils.data.voc import write_voc_xml
from utils.evaluation.metrics import ImageDetections
from utils.evaluation.voc_eval import (
    EvaluationError,
    EvaluationLog,
    detect_split,
    detections_to_coco_json,
    evaluate_split,
    load_voc_split,
    read_coco_detections,
    resolve_class_names,
)

CLASSES = ["circle", "square"]
BOXES = {"a": [[4, 4, 30, 30]], "b": [[10, 8, 50, 40]], "c": []}
NAMES = {"a": ["circle"], "b": ["square"], "c": []}


@pytest.fixture
def voc(tmp_path):
    root = tmp_path / "VOC2007"
    for sub in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (root / sub).mkdir(parents=True)
    for image_id, boxes in BOXES.items():
        write_voc_xml(root / "Annotations" / f"{image_id}.xml", f"{image_id}.jpg", (64, 64), boxes, NAMES[image_id])
        if image_id != "c":  # "c" has no image file
            Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(root / "JPEGImages" / f"{image_id}.jpg")
    (root / "ImageSets/Main/test.txt").write_text("a\nb\nc\n")
    (root / "ImageSets/Main/empty.txt").write_text("")
    return tmp_path


class FakeDetector:
    """Finds every annotated object of the fixture, whatever the image."""

    num_classes, class_names = 2, ("circle", "square")

    def __init__(self):
        self.calls = 0

    def detect(self, images):
        self.calls += 1
        return [ImageDetections(np.array(BOXES["a"], float), np.array([0.9]), np.array([0])) for _ in images]


def test_detector_run_moves_unreadable_images_out_and_evaluates_the_rest(voc, caplog):
    log = EvaluationLog()
    split = load_voc_split(voc, "test", CLASSES, log, progress=False)
    assert list(split.ground_truths) == ["a", "b", "c"] and split.ground_truths["b"].class_ids.tolist() == [1]
    with caplog.at_level(logging.WARNING, logger="yolov4_tiny"):
        detections = detect_split(FakeDetector(), split, log, batch_size=2, progress=False)
    assert list(detections) == ["a", "b"] and list(split.excluded) == ["c"]
    messages = [r.getMessage() for r in caplog.records if r.name == "yolov4_tiny.evaluation"]
    assert messages == log.problems and len(messages) == 1 and "c.jpg" in messages[0] and "left out" in messages[0]
    evaluation = evaluate_split(split, detections, CLASSES, log, source={"weights": "fake"})
    data = evaluation.to_dict()
    assert data["per_class"]["circle"]["ap"] == 1.0 and data["per_class"]["square"]["ap"] == 0.0
    assert data["images_evaluated"] == 2 and data["images_left_out"] == 1 and data["problems"] == messages
    assert "mAP@0.5 = 50.00%" in evaluation.to_text()


def test_coco_json_round_trip_and_outputs(voc, tmp_path):
    log = EvaluationLog()
    split = load_voc_split(voc, "test", CLASSES, log, progress=False)
    found = {"b": ImageDetections(np.array([[10.0, 8.0, 50.0, 40.0]]), np.array([0.8]), np.array([1]))}
    path = tmp_path / "dets.json"
    path.write_text(json.dumps(detections_to_coco_json(found)))
    read = read_coco_detections(path, split, CLASSES, log)
    np.testing.assert_allclose(read["b"].boxes, found["b"].boxes)
    assert read["b"].class_ids.tolist() == [1] and log.problems == []
    evaluation = evaluate_split(split, read, CLASSES, log, source={"detections": str(path)})
    evaluation.write(tmp_path / "out", detections_json=True, plots=False)
    assert json.loads((tmp_path / "out" / "results.json").read_text())["per_class"]["square"]["ap"] == 1.0
    assert json.loads((tmp_path / "out" / "detections.json").read_text())[0]["image_id"] == "b"


def test_nothing_to_evaluate_is_an_evaluation_error(voc, tmp_path):
    log = EvaluationLog()
    for split_name, message in (("empty", "lists no image ids"), ("nosuch", "'nosuch' not found")):
        with pytest.raises(EvaluationError, match=message) as error:
            load_voc_split(voc, split_name, CLASSES, log, progress=False)
        assert error.value.exit_code == 2
    split = load_voc_split(voc, "test", CLASSES, log, progress=False)
    (tmp_path / "list.json").write_text("{}")
    with pytest.raises(EvaluationError, match="expected a JSON list"):
        read_coco_detections(tmp_path / "list.json", split, CLASSES, log)
    split.ground_truths.clear()
    with pytest.raises(EvaluationError, match="none of the 3 images"):
        evaluate_split(split, {}, CLASSES, log, source={})
    with pytest.raises(ModelDataError, match="missing.txt: cannot read"):
        resolve_class_names(tmp_path / "missing.txt")
    with pytest.raises(EvaluationError, match="the model has 2 classes"):
        resolve_class_names(None, type("Model", (), {"num_classes": 2, "class_names": ("x", "y", "z")})())
