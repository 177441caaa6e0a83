"""--precision of inference (utils/inference/precision.py, the loader's choice): auto is bfloat16 on
TensorFlow where the CPU computes it natively (AMX, AVX512-BF16) and float32 elsewhere (ONNX Runtime
on a CPU); a forced half precision runs, emulated where it must be, with a warning; what runs is said."""

import json
import logging

import pytest

import get_map
from nets.yolo import YoloV4Tiny
from utils.inference import precision
from utils.inference.engine import loader
from utils.inference.engine.loader import ModelLoadError, describe_runtime, load_detector
from utils.inference.precision import PrecisionError, resolve_inference_precision


@pytest.fixture
def fast_bfloat16(monkeypatch):
    """A CPU with AMX / AVX512-BF16, no GPU."""
    monkeypatch.setattr(precision, "cpu_has_fast_bfloat16", lambda: True)


@pytest.fixture
def plain_cpu(monkeypatch):
    """A CPU without them (AVX2 only), no GPU."""
    monkeypatch.setattr(precision, "cpu_has_fast_bfloat16", lambda: False)


@pytest.fixture(scope="module")
def small_model(tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "small.keras"
    YoloV4Tiny(2, class_names=["cat", "dog"]).save(path)
    return path


@pytest.mark.parametrize("value, native", [("1", True), ("0", False)])
def test_the_environment_pins_what_the_cpu_is_taken_to_have(monkeypatch, value, native):
    monkeypatch.setenv(precision.CPU_BFLOAT16_VARIABLE, value)
    assert precision.cpu_has_fast_bfloat16() is native
    assert resolve_inference_precision("auto") == ("bfloat16" if native else "float32")
    monkeypatch.setenv(precision.CPU_INT8_VARIABLE, value)
    assert precision.cpu_has_fast_int8() is native


@pytest.mark.parametrize("variable", ["YOLO_CPU_BFLOAT16", "YOLO_CPU_INT8"])
def test_a_bad_pin_names_the_variable(monkeypatch, variable):
    monkeypatch.setenv(variable, "yes")
    with pytest.raises(PrecisionError, match=f"{variable} must be 0 or 1, got 'yes'"):
        precision.cpu_has_fast_bfloat16() if "BFLOAT16" in variable else precision.cpu_has_fast_int8()


def test_the_cpu_flags_are_read_as_whole_words(monkeypatch):
    monkeypatch.delenv(precision.CPU_BFLOAT16_VARIABLE)
    monkeypatch.delenv(precision.CPU_INT8_VARIABLE, raising=False)
    flags = {"avx2 avx512_vnni": (False, True), "avx2 amx_bf16 amx_int8": (True, True), "avx2 fma": (False, False)}
    for listed, (bfloat16, int8) in flags.items():
        monkeypatch.setattr(precision.Path, "read_text", lambda self, listed=listed: f"flags\t\t: fpu {listed} sse\n")
        assert (precision.cpu_has_fast_bfloat16(), precision.cpu_has_fast_int8()) == (bfloat16, int8), listed


@pytest.fixture(scope="module")
def calibration_data(tmp_path_factory):
    from utils.data.demo import write_demo_dataset

    return write_demo_dataset(tmp_path_factory.mktemp("calib"), splits={"train": 4}, image_size=64)


@pytest.mark.slow
def test_calibration_images_run_int8_on_onnx_runtime_where_the_cpu_has_vnni(
    small_model, calibration_data, monkeypatch, tmp_path
):
    """--calib-data on a CPU with int8 dot products: the default path runs the int8 ONNX export,
    calibrated on those images, cached apart from the float32 one and reused; the start-up line says so."""
    monkeypatch.setenv("YOLO_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv(precision.CPU_INT8_VARIABLE, "1")
    monkeypatch.setattr(loader, "onnx_runtime_preferred", lambda: True)
    fp32 = load_detector(small_model, input_shape=(64, 64))
    int8 = load_detector(small_model, input_shape=(64, 64), calib_data=calibration_data)
    assert (int8.backend, int8.precision, fp32.precision) == ("onnx", "int8", "float32")
    assert int8.onnx_path != fp32.onnx_path and int8.onnx_path.stat().st_size < fp32.onnx_path.stat().st_size / 2
    assert describe_runtime(int8) == f"ONNX Runtime on CPU, int8 (calibrated on 4 images of {calibration_data})"
    made = int8.onnx_path.stat().st_mtime_ns
    assert load_detector(small_model, input_shape=(64, 64), calib_data=calibration_data).onnx_path == int8.onnx_path
    assert int8.onnx_path.stat().st_mtime_ns == made  # reused, not exported again
    with pytest.raises(ModelLoadError, match=f"--calib-data: {tmp_path}: no Annotations/ folder"):
        load_detector(small_model, input_shape=(64, 64), calib_data=tmp_path)  # not a VOC folder: said, not ignored


@pytest.mark.parametrize(
    "setting, said",
    [
        ({"cpu": "0"}, "int8 runs on ONNX Runtime on a CPU with int8 dot products"),
        ({"precision": "float32"}, "--precision float32 rules out int8"),
        ({"backend": "keras"}, "unused; it calibrates the int8 export that --backend auto makes"),
    ],
)
def test_calibration_images_go_unused_with_a_warning_saying_why(small_model, monkeypatch, caplog, setting, said):
    monkeypatch.setenv(precision.CPU_INT8_VARIABLE, setting.get("cpu", "1"))
    monkeypatch.setattr(loader, "onnx_runtime_preferred", lambda: False)  # TensorFlow: nothing is exported
    options = {key: value for key, value in setting.items() if key != "cpu"}
    with caplog.at_level(logging.WARNING, logger="yolov4_tiny"):
        detector = load_detector(small_model, input_shape=(64, 64), calib_data="calib", **options)
    assert detector.precision == "float32" and said in caplog.text


def test_auto_is_bfloat16_only_where_the_cpu_computes_it(monkeypatch):
    monkeypatch.setattr(precision, "cpu_has_fast_bfloat16", lambda: True)
    assert resolve_inference_precision("auto") == "bfloat16"
    assert resolve_inference_precision("float32") == "float32"  # forcing float32 still works there
    monkeypatch.setattr(precision, "cpu_has_fast_bfloat16", lambda: False)
    assert resolve_inference_precision("auto") == "float32"
    assert resolve_inference_precision("bfloat16") == "bfloat16"  # forced: emulated, for measuring


def test_half_and_another_precision_contradict_and_unknown_ones_are_refused(small_model):
    with pytest.raises(PrecisionError, match="contradicts --precision bfloat16"):
        resolve_inference_precision("bfloat16", half=True)
    with pytest.raises(ModelLoadError, match="small.keras: precision must be one of"):
        load_detector(small_model, precision="int4")


def test_auto_runs_bfloat16_on_tensorflow_where_the_cpu_has_it_and_says_so(small_model, fast_bfloat16):
    detector = load_detector(small_model, input_shape=(64, 64))
    assert (detector.backend, detector.precision) == ("keras", "bfloat16")
    assert describe_runtime(detector) == "TensorFlow on CPU, bfloat16"
    assert detector.model.get_layer("conv_0").compute_dtype == "bfloat16"


def test_auto_keeps_float32_on_onnx_runtime_elsewhere(small_model, plain_cpu, monkeypatch, tmp_path):
    monkeypatch.setenv("YOLO_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(loader, "onnx_runtime_preferred", lambda: True)
    detector = load_detector(small_model, input_shape=(64, 64))
    assert (detector.backend, detector.precision) == ("onnx", "float32")
    assert describe_runtime(detector) == "ONNX Runtime on CPU, float32"


def test_forced_bfloat16_on_a_plain_cpu_runs_emulated_with_a_warning(small_model, plain_cpu, caplog):
    with caplog.at_level(logging.WARNING, logger="yolov4_tiny"):
        detector = load_detector(small_model, input_shape=(64, 64), precision="bfloat16")
    assert (detector.backend, detector.precision) == ("keras", "bfloat16")
    assert "emulated on this CPU" in caplog.text


def test_an_exported_model_refuses_another_precision_and_names_its_own(small_model, tmp_path):
    from utils.inference.engine.loader import load_model
    from utils.interop.export import export_model

    onnx_path = tmp_path / "small.onnx"
    export_model(load_model(small_model), "onnx", onnx_path, input_hw=(64, 64))
    assert describe_runtime(load_detector(onnx_path)) == "ONNX Runtime on CPU, float32"
    with pytest.raises(ModelLoadError, match="precision it was exported in"):
        load_detector(onnx_path, precision="bfloat16")


@pytest.mark.slow
def test_get_map_scores_float32_unless_asked_and_records_the_precision(tmp_path, plain_cpu, caplog):
    from utils.data.demo import write_demo_dataset

    data = write_demo_dataset(tmp_path / "demo", splits={"test": 3}, image_size=64)
    model = tmp_path / "demo.keras"
    YoloV4Tiny(3, class_names=(data / "classes.txt").read_text().split()).save(model)
    for asked, expected in ((None, "float32"), ("bfloat16", "bfloat16")):
        out = tmp_path / f"map_{expected}"
        argv = ["--weights", str(model), "--data", str(data), "--split", "test", "--input-size", "64"]
        argv += ["--output", str(out), "--no-plots", "-q"] + (["--precision", asked] if asked else [])
        assert get_map.main(argv) == 0
        assert json.loads((out / "results.json").read_text())["precision"] == expected
