"""export.py end to end: export a small model, then predict.py and get_map.py take the exported
file as --weights; unsupported combinations and bad inputs stop with a clear error."""

import json

import numpy as np
import pytest

import export
import get_map
import predict
from tests.export_helpers import CONF, INPUT_HW, make_detecting_model
from utils.data.demo import write_demo_dataset
from utils.data.images import load_image
from utils.data.voc import find_image, read_image_set
from utils.inference.engine.loader import load_detector
from utils.inference.letterbox import letterbox


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    root = write_demo_dataset(tmp_path_factory.mktemp("voc"), splits={"train": 6, "test": 6}, image_size=160)
    paths = [find_image(root, i) for i in read_image_set(root, "test")]
    inputs = np.stack([letterbox(load_image(p), INPUT_HW)[0] for p in paths]).astype(np.float32) / 255.0
    weights = root.parent / "shapes.keras"
    make_detecting_model(inputs).save(weights)
    return root, paths, weights


@pytest.mark.slow
def test_tflite_export_runs_in_predict_and_get_map(demo, tmp_path, capsys):
    # --include-nms: predict.py and get_map.py use the model's own NMS outputs.
    root, paths, weights = demo
    model_path = tmp_path / "shapes.tflite"
    argv = ["--weights", str(weights), "--format", "tflite", "--input-size", "128", "--out", str(model_path)]
    assert export.main([*argv, "--include-nms"]) == 0
    assert model_path.is_file() and json.loads((tmp_path / "shapes.tflite.json").read_text())["include_nms"]
    assert "wrote" in capsys.readouterr().out

    # predict.py --weights model.tflite: the same detections as the Keras model.
    dets_json = tmp_path / "dets.json"
    argv = ["--weights", str(model_path), "--source", *map(str, paths), "--conf", str(CONF)]
    assert predict.main([*argv, "--output", str(tmp_path / "out"), "--json", str(dets_json)]) == 0
    records = {r["image"]: r["detections"] for r in json.loads(dets_json.read_text())}
    keras_detector = load_detector(weights, input_shape=INPUT_HW, conf=CONF)
    want = keras_detector.detect([load_image(p) for p in paths])
    assert sum(len(d) for d in want) > 0
    for path, w in zip(paths, want):
        got = records[str(path)]
        assert [d["class_name"] for d in got] == [keras_detector.class_names[c] for c in w.class_ids]
        np.testing.assert_allclose([d["box"] for d in got], w.boxes.reshape(-1, 4), atol=0.02)

    # get_map.py --weights model.tflite.
    out = tmp_path / "map"
    argv = ["--weights", str(model_path), "--backend", "tflite", "--data", str(root), "--split", "test"]
    argv += ["--input-size", "128", "--classes", str(root / "classes.txt"), "--no-plots", "--out", str(out)]
    assert get_map.main(argv) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["images_evaluated"] == 6 and sum(c["det"] for c in results["per_class"].values()) > 0


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--format", "saved_model", "--int8", "--calib-data", "x"], "--int8 is not supported with --format saved"),
        (["--format", "saved_model", "--fp16"], "--fp16 is not supported with --format saved_model"),
        (["--format", "tflite", "--dynamic"], "--dynamic is not supported with --format tflite"),
        (["--format", "tflite", "--int8"], "--int8 needs --calib-data"),
        (["--format", "tflite", "--int8", "--calib-data", "no/such/dir"], "no/such/dir: no such folder"),
    ],
)
def test_unsupported_combinations_fail_before_loading(argv, message, tmp_path, capsys):
    # The weights do not exist: the combination must be refused before they are read.
    code = export.main(["--weights", str(tmp_path / "absent.keras"), "--out", str(tmp_path / "m.tflite"), *argv])
    assert code == 2
    assert message in capsys.readouterr().err


def test_bad_weights_and_arguments(tmp_path, capsys):
    code = export.main(["--weights", str(tmp_path / "absent.keras"), "--format", "onnx", "--out", "m.onnx"])
    assert code == 2 and "absent.keras: no such file" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        export.main(["--weights", "w.keras", "--format", "tflite", "--fp16", "--int8", "--out", "m.tflite"])
    assert exit_info.value.code == 2
    with pytest.raises(SystemExit) as exit_info:
        export.main(["--weights", "w.keras", "--format", "onnx", "--out", "m.onnx", "--input-size", "100"])
    assert exit_info.value.code == 2 and "multiples of 32" in capsys.readouterr().err


@pytest.mark.slow
def test_wrong_output_suffix_is_refused(demo, tmp_path, capsys):
    code = export.main(["--weights", str(demo[2]), "--format", "onnx", "--out", str(tmp_path / "model.tflite")])
    assert code == 2 and "must end with .onnx" in capsys.readouterr().err


@pytest.mark.slow
def test_benchmark_table(demo, tmp_path, capsys):
    """--benchmark: one row per asked format (a refused one says why), mAP by get_map.py's
    evaluator, ms/img and the ratio to the Keras model; CSV and Markdown written."""
    import csv

    root, _, weights = demo
    argv = ["--benchmark", "--weights", str(weights), "--data", str(root), "--input-size", "128", "--runs", "3"]
    assert export.main([*argv, "--only", "onnx:fp32:nms,saved_model:fp16", "--output", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    rows = list(csv.DictReader((tmp_path / "benchmark.csv").open()))
    assert [(r["format"], r["precision"], r["nms_inside"]) for r in rows] == [
        ("keras", "fp32", "no"), ("onnx", "fp32", "yes"), ("saved_model", "fp16", "no")
    ]
    keras_row, onnx_row, refused = rows
    assert keras_row["ratio_to_keras"] == "1.00" and float(onnx_row["ms_per_img"]) > 0
    assert onnx_row["map50"] == keras_row["map50"]  # the same detections, so the same mAP
    assert float(onnx_row["size_mb"]) > 1 and not onnx_row["note"]
    assert refused["note"].startswith("refused: --fp16 is not supported") and not refused["ms_per_img"]
    assert (tmp_path / "benchmark.md").read_text().count("\n| ") == 4 and "| onnx | fp32 | yes |" in printed


@pytest.mark.slow
def test_a_saved_model_export_replaces_only_what_it_wrote(demo, tmp_path, capsys):
    """--format saved_model --output DIR deleted DIR whole when it held a saved_model.pb, the
    user's other files with it (issue 22). An earlier export's SavedModel entries are replaced and
    nothing else; a folder with a SavedModel export.py did not write is refused, untouched."""
    _, paths, weights = demo
    out = tmp_path / "exported"
    argv = ["--weights", str(weights), "--format", "saved_model", "--input-size", "128"]
    assert export.main([*argv, "--output", str(out)]) == 0
    (out / "notes.txt").write_text("mine")
    (out / "runs").mkdir()
    (out / "runs" / "log.txt").write_text("mine too")
    assert export.main([*argv, "--include-nms", "--output", str(out)]) == 0
    assert (out / "notes.txt").read_text() == "mine" and (out / "runs" / "log.txt").read_text() == "mine too"
    assert json.loads((out / "assets" / "yolo_export.json").read_text())["include_nms"]  # the new export
    assert load_detector(out, conf=CONF).detect([load_image(paths[0])])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exported"]  # no temporary folder left

    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "saved_model.pb").write_bytes(b"someone else's model")
    (foreign / "notes.txt").write_text("mine")
    capsys.readouterr()
    assert export.main([*argv, "--output", str(foreign)]) == 2
    assert "export.py did not write" in capsys.readouterr().err
    assert sorted(p.name for p in foreign.iterdir()) == ["notes.txt", "saved_model.pb"]
    assert (foreign / "saved_model.pb").read_bytes() == b"someone else's model"
