"""OpenVINO IR export and backend (optional: `pip install openvino`), checked as test_export.py
checks ONNX and TFLite: raw heads and detections against the Keras model on demo-set images, the
backend picked from the path, predict.py and get_map.py on the .xml, and the errors (options the
format does not support, OpenVINO not installed). The tests that run OpenVINO skip without it."""

import json
import shutil
import sys

import numpy as np
import pytest

from tests.export_helpers import CONF, INPUT_HW
from utils.data.demo import DEMO_CLASSES
from utils.data.voc import find_image, read_image_set
from utils.inference.engine.loader import RUNTIMES, ModelLoadError, describe_runtime, load_detector
from utils.interop.backends import BACKENDS, MissingRuntimeError, import_openvino, infer_backend, load_backend
from utils.interop.export import FORMATS, ExportError, check_export_options
from utils.interop.metadata import OUTPUT_NAMES, metadata_path, read_metadata


@pytest.fixture(scope="module")
def openvino():
    return pytest.importorskip("openvino", reason="OpenVINO is optional (pip install openvino)")


@pytest.fixture(scope="module")
def xml_path(openvino, keras_file, out_dir):
    """The IR as a user makes it: `python export.py --weights model.keras --format openvino ...`."""
    import export

    path = out_dir / "model.xml"
    argv = ["--weights", str(keras_file), "--input-size", f"{INPUT_HW[0]}x{INPUT_HW[1]}", "--output", str(path)]
    assert export.main([*argv, "--format", "openvino"]) == 0
    return path


def _same_detections(got, want, atol_px=0.01, atol_score=1e-4):
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert len(g) == len(w)
        np.testing.assert_array_equal(g.class_ids, w.class_ids)
        np.testing.assert_allclose(g.scores, w.scores, atol=atol_score)
        np.testing.assert_allclose(g.boxes, w.boxes, atol=atol_px)


@pytest.mark.slow
def test_ir_files_and_metadata(xml_path):
    assert xml_path.with_suffix(".bin").is_file() and metadata_path(xml_path).is_file()
    metadata = read_metadata(xml_path)
    assert (metadata["format"], metadata["precision"]) == ("openvino", "fp32")
    assert metadata["class_names"] == list(DEMO_CLASSES) and metadata["input_shape"] == list(INPUT_HW)
    assert metadata["anchors_mask"] == [[3, 4, 5], [1, 2, 3]] and metadata["scale_x_y"] == pytest.approx(1.05)
    # No temporary files left beside it.
    assert sorted(p.name for p in xml_path.parent.iterdir() if p.name.startswith("model.")) == [
        "model.bin", "model.keras", "model.xml", "model.xml.json",
    ]  # fmt: skip


@pytest.mark.slow
def test_raw_heads_match_keras(openvino, xml_path, keras_detector):
    detector, inputs = keras_detector
    model = openvino.Core().read_model(str(xml_path))
    assert [sorted(o.get_names()) for o in model.outputs] == [[name] for name in OUTPUT_NAMES]  # p5 first
    assert [sorted(i.get_names()) for i in model.inputs] == [["images"]]
    forward, _ = load_backend(xml_path)
    want = [np.asarray(h) for h in detector.model(inputs, training=False)]
    for batch in (len(inputs), 1, 2):  # a static compile per batch size
        got = forward(inputs[:batch])
        assert [g.shape for g in got] == [w[:batch].shape for w in want]
        assert all(g.dtype == np.float32 for g in got)
        assert max(float(np.abs(g - w[:batch]).max()) for g, w in zip(got, want)) < 1e-4


@pytest.mark.slow
def test_detections_match_keras(xml_path, keras_detector, demo_images):
    detector, _ = keras_detector
    want = detector.detect(demo_images[1])
    assert sum(len(d) for d in want) >= 5, "the test model should detect something on most images"
    for batch_size in (1, 4):  # 4: batches of 4 and 2
        exported = load_detector(xml_path, conf=CONF, batch_size=batch_size)
        assert exported.backend == "openvino" and describe_runtime(exported) == "OpenVINO on CPU, float32"
        assert exported.class_names == detector.class_names and exported.input_shape == INPUT_HW
        _same_detections(exported.detect(demo_images[1]), want)


@pytest.mark.slow
def test_backend_from_path_and_errors(xml_path, tmp_path):
    assert infer_backend(xml_path) == "openvino"
    assert load_detector(xml_path, backend="openvino", threads=1).backend == "openvino"
    with pytest.raises(ModelLoadError, match="exported for a 128x128 input"):
        load_detector(xml_path, input_shape=(416, 416))
    with pytest.raises(ModelLoadError, match="--half"):
        load_detector(xml_path, half=True)
    bare = tmp_path / "bare.xml"
    shutil.copy(xml_path, bare)
    shutil.copy(xml_path.with_suffix(".bin"), bare.with_suffix(".bin"))
    with pytest.raises(ModelLoadError, match="no metadata"):
        load_detector(bare)
    shutil.copy(metadata_path(xml_path), metadata_path(bare))
    bare.with_suffix(".bin").unlink()
    with pytest.raises(ModelLoadError, match="bare.xml: OpenVINO cannot read it .*bin file"):
        load_detector(bare)
    broken = tmp_path / "broken.xml"
    broken.write_text("<net>not an IR")
    shutil.copy(metadata_path(xml_path), metadata_path(broken))
    with pytest.raises(ModelLoadError, match="broken.xml: OpenVINO cannot read it"):
        load_detector(broken)
    # --backend forces a runtime: the IR through ONNX Runtime fails naming it.
    with pytest.raises(ModelLoadError, match="model.xml"):
        load_detector(xml_path, backend="onnx")


@pytest.mark.slow
def test_predict_and_get_map_take_the_ir(xml_path, keras_file, demo_root, tmp_path, capsys):
    import get_map
    import predict

    source = find_image(demo_root, read_image_set(demo_root, "test")[0])
    records = {}
    for weights, backend in ((xml_path, "auto"), (keras_file, "keras")):
        out = tmp_path / backend
        argv = ["--weights", str(weights), "--backend", backend, "--source", str(source), "--output", str(out)]
        argv += ["--input-size", str(INPUT_HW[0]), "--conf", str(CONF), "--json", str(out / "d.json")]
        assert predict.main(argv) == 0
        [records[backend]] = json.loads((out / "d.json").read_text())
    assert "OpenVINO on CPU, float32" in capsys.readouterr().out
    got, want = records["auto"]["detections"], records["keras"]["detections"]
    assert len(got) == len(want) > 0
    for g, w in zip(got, want):
        assert g["class_name"] == w["class_name"] and g["score"] == pytest.approx(w["score"], abs=1e-4)
        np.testing.assert_allclose(g["box"], w["box"], atol=0.01)
    out = tmp_path / "map"
    argv = ["--weights", str(xml_path), "--data", str(demo_root), "--split", "test", "--out", str(out)]
    assert get_map.main(argv) == 0
    assert "mAP" in json.loads((out / "results.json").read_text())


@pytest.mark.slow
def test_benchmark_row(openvino, keras_file, demo_root, tmp_path):
    """export.py --benchmark --only openvino:fp32: exported, evaluated (the Keras model's mAP),
    timed, its size counting the .bin."""
    import csv

    import export

    argv = ["--benchmark", "--weights", str(keras_file), "--data", str(demo_root), "--input-size", "128"]
    assert export.main([*argv, "--runs", "2", "--only", "openvino:fp32,openvino:fp16", "--output", str(tmp_path)]) == 0
    keras_row, row, refused = csv.DictReader((tmp_path / "benchmark.csv").open())
    assert (row["format"], row["precision"], row["note"]) == ("openvino", "fp32", "")
    assert row["map50"] == keras_row["map50"] and float(row["ms_per_img"]) > 0
    assert float(row["size_mb"]) > 10  # the .bin's fp32 weights (about 6 M parameters), not the .xml alone
    assert refused["note"].startswith("refused: --fp16 is not supported with --format openvino")


@pytest.mark.parametrize(
    ("precision", "nms", "dynamic", "match"),
    [
        ("fp16", False, False, "--fp16 is not supported with --format openvino"),
        ("int8", False, False, "--int8 is not supported with --format openvino"),
        ("fp32", True, False, "--include-nms is not supported with --format openvino"),
        ("fp32", False, True, "--dynamic is not supported with --format openvino"),
    ],
)
def test_unsupported_options(precision, nms, dynamic, match):
    with pytest.raises(ExportError, match=match):
        check_export_options("openvino", precision, nms, dynamic)


def test_export_refuses_before_loading(tmp_path, capsys):
    """The options and the output name are checked first: no model is read (here none exists)."""
    import export

    argv = ["--weights", str(tmp_path / "absent.keras"), "--format", "openvino"]
    assert export.main([*argv, "--int8", "--output", str(tmp_path / "m.xml")]) == 2
    assert "--int8 is not supported with --format openvino" in capsys.readouterr().err


def test_missing_openvino_is_a_clear_error(tmp_path, monkeypatch, capsys):
    import export

    monkeypatch.setitem(sys.modules, "openvino", None)  # `import openvino` then raises ImportError
    with pytest.raises(MissingRuntimeError, match="pip install openvino"):
        import_openvino()
    argv = ["--weights", str(tmp_path / "absent.keras"), "--format", "openvino", "--output", str(tmp_path / "m.xml")]
    assert export.main(argv) == 2
    err = capsys.readouterr().err
    assert "OpenVINO is not installed" in err and "pip install openvino" in err and "Traceback" not in err
    # An IR given to predict.py / get_map.py: the same error, not a ModelLoadError about the file.
    xml = tmp_path / "model.xml"
    xml.write_text("<net/>")
    metadata = {"num_classes": 3, "anchors": [[10.0, 14.0]] * 6, "anchors_mask": [[3, 4, 5], [1, 2, 3]]}
    metadata_path(xml).write_text(json.dumps({**metadata, "scale_x_y": 1.05, "input_shape": list(INPUT_HW)}))
    with pytest.raises(MissingRuntimeError, match="pip install openvino"):
        load_detector(xml)


def test_openvino_is_listed_everywhere():
    import export
    from utils import cli

    assert "openvino" in FORMATS and export.FORMATS == FORMATS
    assert "openvino" in BACKENDS and cli.BACKENDS == ("auto", *BACKENDS)
    assert set(RUNTIMES) == set(BACKENDS)
    assert any(row[0] == "openvino" for row in export.BENCHMARK_ROWS)
