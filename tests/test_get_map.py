"""get_map.py end to end on a tiny VOC folder written here."""

import json
import shutil

import numpy as np
import pytest
from PIL import Image

import get_map
from utils.data.voc import write_voc_xml

CLASSES = ["circle", "square", "triangle"]
# image id -> (boxes pixel xyxy, class names, difficult)
OBJECTS = {
    "000001": ([[4, 4, 30, 30], [34, 34, 60, 60]], ["circle", "square"], [False, False]),
    "000002": ([[10, 8, 50, 40]], ["triangle"], [False]),
    "000003": ([[0, 0, 20, 20], [30, 30, 60, 62]], ["square", "square"], [False, True]),
    "000004": ([], [], []),
    "000005": ([[5, 5, 25, 25], [40, 2, 60, 22]], ["circle", "dog"], [False, False]),  # "dog": not a class
}


@pytest.fixture(scope="module")
def voc(tmp_path_factory):
    root = tmp_path_factory.mktemp("voc") / "VOCdevkit"
    year = root / "VOC2007"
    for sub in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (year / sub).mkdir(parents=True)
    rng = np.random.default_rng(0)
    for image_id, (boxes, names, difficult) in OBJECTS.items():
        Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(year / "JPEGImages" / f"{image_id}.jpg")
        write_voc_xml(year / "Annotations" / f"{image_id}.xml", f"{image_id}.jpg", (64, 64), boxes, names, difficult)
    (year / "ImageSets/Main/test.txt").write_text("\n".join(OBJECTS) + "\n")
    (year / "ImageSets/Main/empty.txt").write_text("\n")
    classes = root.parent / "classes.txt"
    classes.write_text("\n".join(CLASSES) + "\n")
    return root, classes


def perfect_detections():
    """Every non-difficult known object found, as the COCO results list get_map reads."""
    records = []
    for image_id, (boxes, names, difficult) in OBJECTS.items():
        for box, name, is_difficult in zip(boxes, names, difficult, strict=True):
            if name in CLASSES and not is_difficult:
                x1, y1, x2, y2 = box
                records.append(
                    {
                        "image_id": image_id,
                        "category_id": CLASSES.index(name),
                        "bbox": [x1, y1, x2 - x1, y2 - y1],
                        "score": 0.9,
                    }
                )
    return records


def run(voc, tmp_path, detections, *extra):
    root, classes = voc
    path = tmp_path / "dets.json"
    path.write_text(json.dumps(detections))
    out = tmp_path / "out"
    code = get_map.main(
        ["--detections", str(path), "--data", str(root), "--classes", str(classes), "--out", str(out), *extra]
    )
    return code, out


def test_perfect_detections_write_every_output(voc, tmp_path, capsys):
    code, out = run(voc, tmp_path, perfect_detections(), "--coco")
    assert code == 0
    results = json.loads((out / "results.json").read_text())
    assert results["mAP"] == 1.0
    assert set(results["per_class"]) == set(CLASSES)
    assert results["per_class"]["square"] == {"ap": 1.0, "precision": 1.0, "recall": 1.0, "f1": 1.0, "gt": 2, "det": 2}
    assert results["per_class"]["circle"]["gt"] == 2
    assert results["images_evaluated"] == 5 and results["problems"] == []
    assert any("dog" in note for note in results["skipped_objects"])  # not a class: skipped, not a failure
    assert results["coco"]["AP50"] == pytest.approx(1.0) and results["coco"]["AP"] == pytest.approx(1.0)
    text = (out / "results.txt").read_text()
    assert "mAP@0.5 = 100.00%" in text and "Average Precision" in text
    for name in CLASSES:
        assert (out / "pr_curves" / f"{name}.png").stat().st_size > 1000
    assert (out / "ap_per_class.png").is_file() and (out / "counts_per_class.png").is_file()
    assert "mAP@0.5 = 100.00%" in capsys.readouterr().out


def test_hand_computed_map_and_thresholds(voc, tmp_path):
    detections = perfect_detections()
    # A false positive above everything for "circle": AP 2/3 (see tests/utils/test_metrics.py).
    detections.append({"image_id": "000004", "category_id": 0, "bbox": [0, 0, 10, 10], "score": 0.95})
    # A detection of the difficult square: ignored.
    detections.append({"image_id": "000003", "category_id": 1, "bbox": [30, 30, 30, 32], "score": 0.99})
    code, out = run(voc, tmp_path, detections, "--no-plots")
    assert code == 0
    results = json.loads((out / "results.json").read_text())
    assert results["per_class"]["circle"]["ap"] == pytest.approx(2 / 3)
    assert results["per_class"]["square"]["ap"] == 1.0 and results["per_class"]["square"]["det"] == 3
    assert results["mAP"] == pytest.approx((2 / 3 + 1 + 1) / 3)
    assert not (out / "ap_per_class.png").exists()
    run(voc, tmp_path, detections, "--no-plots", "--score-threshold", "0.92", "--out", str(tmp_path / "o2"))
    results = json.loads((tmp_path / "o2" / "results.json").read_text())
    assert results["per_class"]["circle"]["precision"] == 0.0 and results["score_threshold"] == 0.92


def _with(detections, image_id, category, bbox, score):
    """`detections` with the one of (image_id, category) replaced by bbox/score, or added."""
    kept = [d for d in detections if (d["image_id"], d["category_id"]) != (image_id, category)]
    return [*kept, {"image_id": image_id, "category_id": category, "bbox": bbox, "score": score}]


def test_voc07_is_the_11_point_ap(voc, tmp_path):
    """circle: a hit (0.99), a false positive (0.95), a hit (0.9) over its 2 objects. Precision 1 to
    recall 0.5, then 2/3 to recall 1: all-point AP 0.5 + 0.5 x 2/3 = 5/6; 11-point AP (6 x 1 + 5 x 2/3) / 11."""
    detections = _with(perfect_detections(), "000001", 0, [4, 4, 26, 26], 0.99)
    detections.append({"image_id": "000004", "category_id": 0, "bbox": [0, 0, 10, 10], "score": 0.95})
    for extra, expected in (((), 5 / 6), (("--voc07",), 28 / 33)):
        code, out = run(voc, tmp_path, detections, "--no-plots", "--out", str(tmp_path / "o"), *extra)
        results = json.loads((out.parent / "o" / "results.json").read_text())
        assert code == 0 and results["per_class"]["circle"]["ap"] == pytest.approx(expected)
        assert results["per_class"]["square"]["ap"] == 1.0


def test_min_overlap_is_the_inclusive_iou_of_a_hit(voc, tmp_path):
    # The triangle of 000002 is [10, 8, 50, 40]; this box is 10 pixels to its right: IoU 960 / 1600 = 0.6.
    detections = _with(perfect_detections(), "000002", 2, [20, 8, 40, 32], 0.9)
    for overlap, ap in ((None, 1.0), ("0.6", 1.0), ("0.61", 0.0)):
        extra = () if overlap is None else ("--min-overlap", overlap)
        code, out = run(voc, tmp_path, detections, "--no-plots", *extra)
        results = json.loads((out / "results.json").read_text())
        assert code == 0 and results["per_class"]["triangle"]["ap"] == ap, overlap
        assert results["per_class"]["circle"]["ap"] == 1.0


def test_unknown_image_and_class_are_named_and_the_rest_evaluated(voc, tmp_path, capsys):
    detections = perfect_detections() + [
        {"image_id": "nope", "category_id": 0, "bbox": [0, 0, 5, 5], "score": 0.99},
        {"image_id": "000001", "category_id": 7, "bbox": [0, 0, 5, 5], "score": 0.99},
        {"image_id": "000001", "category_id": 0, "bbox": [0, 0, 5], "score": 0.99},
        {"image_id": 2, "category_id": 2, "bbox": [10, 8, 40, 32], "score": 0.99},
        {"image_id": "000001", "category_id": float("nan"), "bbox": [0, 0, 5, 5], "score": 0.99},
    ]
    code, out = run(voc, tmp_path, detections, "--no-plots")
    err = capsys.readouterr().err
    assert code == 1
    assert "image_id 'nope'" in err and "category_id 7" in err and "bbox must be 4" in err
    assert "image_id '2'" in err and "did you mean '000002'" in err and "category_id nan" in err
    results = json.loads((out / "results.json").read_text())
    assert results["mAP"] == 1.0 and len(results["problems"]) == 5


def test_unparsable_xml_is_named_and_the_rest_evaluated(voc, tmp_path, capsys):
    root, classes = voc
    bad = root / "VOC2007" / "Annotations" / "000002.xml"
    original = bad.read_text()
    try:
        bad.write_text("<annotation><object>")
        code, out = run(voc, tmp_path, perfect_detections(), "--no-plots")
    finally:
        bad.write_text(original)
    err = capsys.readouterr().err
    assert code == 1
    assert "000002.xml" in err
    results = json.loads((out / "results.json").read_text())
    assert results["images_evaluated"] == 4 and results["images_left_out"] == 1
    assert results["per_class"]["triangle"]["gt"] == 0 and results["per_class"]["triangle"]["ap"] is None
    assert results["mAP"] == 1.0  # circle and square; the triangle detection names a left-out image
    assert "could not be read" in err


def test_empty_split_and_missing_split(voc, tmp_path, capsys):
    code, _ = run(voc, tmp_path, perfect_detections(), "--split", "empty")
    assert code == 2 and "empty.txt lists no image ids" in capsys.readouterr().err
    code, _ = run(voc, tmp_path, perfect_detections(), "--split", "nosuch")
    assert code == 2 and "nosuch" in capsys.readouterr().err


def test_bad_detections_file(voc, tmp_path, capsys):
    root, classes = voc
    path = tmp_path / "broken.json"
    path.write_text("{not json")
    code = get_map.main(["--detections", str(path), "--data", str(root), "--classes", str(classes)])
    assert code == 2 and "broken.json: not valid JSON" in capsys.readouterr().err


def test_help_and_argument_checks(capsys):
    with pytest.raises(SystemExit) as exit_info:
        get_map.main(["--help"])
    assert exit_info.value.code == 0 and "--detections" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        get_map.main(["--detections", "x.json", "--input-size", "100"])
    assert "multiples of 32" in capsys.readouterr().err


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    from nets.yolo import YoloV4Tiny

    path = tmp_path_factory.mktemp("model") / "model.keras"
    YoloV4Tiny(num_classes=len(CLASSES), class_names=CLASSES).save(path)
    return path


@pytest.mark.slow
def test_weights_end_to_end_and_detections_round_trip(voc, weights, tmp_path):
    root, classes = voc
    out = tmp_path / "out"
    common = ["--data", str(root), "--classes", str(classes), "--no-plots", "--coco"]
    # Without --classes the model's own class names are used.
    code = get_map.main(
        ["--weights", str(weights), "--input-size", "64", "--batch-size", "2", "--out", str(out), *common[:2],
         *common[4:]]
    )
    assert code == 0
    results = json.loads((out / "results.json").read_text())
    assert list(results["per_class"]) == CLASSES
    assert results["images_evaluated"] == 5 and results["weights"] == str(weights)
    assert sum(c["det"] for c in results["per_class"].values()) > 0  # an untrained model at --conf 0.001
    # The saved detections evaluate to the same numbers through --detections.
    again = tmp_path / "again"
    code = get_map.main(["--detections", str(out / "detections.json"), "--out", str(again), *common])
    assert code == 0
    repeated = json.loads((again / "results.json").read_text())
    assert repeated["mAP"] == pytest.approx(results["mAP"], abs=1e-9)
    assert repeated["coco"]["AP"] == pytest.approx(results["coco"]["AP"], abs=1e-9)


@pytest.mark.slow
def test_slice_and_augment_report_a_map_and_are_recorded(voc, weights, tmp_path, capsys):
    root, classes = voc
    out = tmp_path / "out"
    argv = ["--weights", str(weights), "--input-size", "64", "--backend", "keras", "--data", str(root)]
    code = get_map.main([*argv, "--slice", "32", "--augment", "--no-plots", "--out", str(out)])
    assert code == 0
    assert "mAP" in capsys.readouterr().out
    results = json.loads((out / "results.json").read_text())
    assert 0.0 <= results["mAP"] <= 1.0 and results["images_evaluated"] == 5
    assert (results["slice"], results["overlap"], results["augment"]) == (32, 0.2, True)
    assert sum(c["det"] for c in results["per_class"].values()) > 0  # an untrained model at --conf 0.001


def test_slice_options_are_parsed():
    args = get_map.parse_args(["--weights", "w.keras", "--slice", "640", "--overlap", "0.3", "--augment"])
    assert (args.slice, args.overlap, args.augment) == (640, 0.3, True)
    args = get_map.parse_args(["--weights", "w.keras"])
    assert (args.slice, args.augment) == (None, False)


@pytest.mark.slow
@pytest.mark.parametrize("size", [416, 608])
def test_a_model_trained_at_256_evaluates_at_416_and_608(voc, tmp_path, monkeypatch, capsys, size):
    """train.py saves its model with a fixed input (here 256); --input-size evaluates it at another."""
    from nets.yolo import YoloV4Tiny
    from utils.inference.engine import loader

    weights = tmp_path / "at256.keras"
    YoloV4Tiny(num_classes=len(CLASSES), class_names=CLASSES, input_shape=(256, 256, 3)).save(weights)
    loaded, real = [], loader.load_detector

    def recording(*args, **kwargs):
        loaded.append(real(*args, **kwargs))
        return loaded[-1]

    monkeypatch.setattr(loader, "load_detector", recording)
    monkeypatch.setattr(loader, "onnx_runtime_preferred", lambda: True)  # its export at `size`, as on a CPU
    root, _ = voc
    out = tmp_path / "out"
    argv = ["--weights", str(weights), "--input-size", str(size), "--data", str(root), "--no-plots", "--out", str(out)]
    assert get_map.main(argv) == 0
    assert "TensorFlow instead" not in capsys.readouterr().err  # no fallback from ONNX Runtime
    [detector] = loaded
    assert detector.input_shape == (size, size) and detector.backend == "onnx"
    results = json.loads((out / "results.json").read_text())
    assert results["images_evaluated"] == 5
    assert sum(c["det"] for c in results["per_class"].values()) > 0  # an untrained model at --conf 0.001


@pytest.mark.slow
def test_an_unreadable_image_is_named_left_out_and_exits_1(voc, weights, tmp_path, capsys):
    root, classes = voc
    copy = tmp_path / "VOCdevkit"
    shutil.copytree(root, copy)
    image = copy / "VOC2007" / "JPEGImages" / "000002.jpg"
    image.write_bytes(image.read_bytes()[:100])  # truncated
    out = tmp_path / "out"
    argv = ["--weights", str(weights), "--input-size", "64", "--data", str(copy), "--no-plots", "--out", str(out)]
    assert get_map.main(argv) == 1
    assert "000002.jpg" in capsys.readouterr().err
    results = json.loads((out / "results.json").read_text())
    assert results["images_evaluated"] == 4 and results["images_left_out"] == 1
    assert results["per_class"]["triangle"]["gt"] == 0  # its objects are not counted as missed
