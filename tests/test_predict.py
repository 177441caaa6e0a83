"""predict.py end to end on tiny data: every mode, the image kinds, bad inputs."""

import errno
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

import predict
from nets.model_data import ANCHORS_MASK, COCO_CLASSES_PATH, load_anchors
from nets.yolo import YoloV4Tiny
from tests.stream_helpers import bright_blob_forward, count_frames, mjpeg_stream, write_clip
from utils.inference import video
from utils.inference.engine.predictor import Predictor
from utils.inference.engine.sinks import JsonRecords
from utils.inference.video import VideoSource
from utils.interop.darknet import save_darknet

ROOT = Path(__file__).resolve().parents[1]


def _cat_model(path, class_names=("cat", "dog"), input_shape=(None, None, 3)):
    """A 2-class model whose heads ignore the image: anchor 0 of every cell is class 0 at 0.995^2."""
    model = YoloV4Tiny(2, class_names=list(class_names), input_shape=input_shape)
    for name in ("conv_29", "conv_36"):
        layer = model.get_layer(name)
        bias = np.tile(np.array([0, 0, 0, 0, -10, 0, 0], np.float32), 3)
        bias[4:7] = [6.0, 6.0, -6.0]
        layer.kernel.assign(np.zeros(layer.kernel.shape, np.float32))
        layer.bias.assign(bias)
    model.save(path)
    return path


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    return _cat_model(tmp_path_factory.mktemp("weights") / "cats.keras")


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    folder = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (60, 90, 3), dtype=np.uint8)).save(folder / "rgb.jpg")
    Image.fromarray(rng.integers(0, 256, (70, 50, 4), dtype=np.uint8), "RGBA").save(folder / "rgba.png")
    Image.fromarray((rng.integers(0, 65536, (40, 80))).astype(np.uint16)).save(folder / "deep.png")
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(rng.integers(0, 256, (100, 40, 3), dtype=np.uint8)).save(folder / "phone.jpg", exif=exif)
    return folder


def run(argv, weights):
    return predict.main(["--weights", str(weights), "--input-size", "64", *argv])


@pytest.mark.slow
def test_predict_images_with_crop_count_and_json(weights, images, tmp_path, capsys):
    out = tmp_path / "out"
    sources = [str(images / n) for n in ("rgb.jpg", "rgba.png", "deep.png", "phone.jpg")]
    argv = ["--source", *sources, "--output", str(out), "--json", str(tmp_path / "d.json"), "--crop", "--count"]
    assert run(argv, weights) == 0
    records = {Path(r["image"]).name: r for r in json.loads((tmp_path / "d.json").read_text())}
    assert set(records) == {"rgb.jpg", "rgba.png", "deep.png", "phone.jpg"}
    # The EXIF-rotated phone photo is 40 wide x 100 high as stored, 100 x 40 as displayed.
    assert (records["phone.jpg"]["width"], records["phone.jpg"]["height"]) == (100, 40)
    assert Image.open(out / "phone.jpg").size == (100, 40)
    printed = capsys.readouterr().out
    for name, record in records.items():
        assert (out / name).is_file()
        dets = record["detections"]
        assert dets and all(d["class_name"] == "cat" and d["class_id"] == 0 for d in dets)
        w, h = record["width"], record["height"]
        for d in dets:
            x1, y1, x2, y2 = d["box"]
            assert 0 <= x1 < x2 <= w and 0 <= y1 < y2 <= h and 0.98 < d["score"] <= 1
        assert f"{name}: {len(dets)} cat" in printed
    crops = list((out / "crops").glob("rgb_*_cat.png"))
    assert len(crops) == len(records["rgb.jpg"]["detections"])


@pytest.mark.slow
def test_dir_predict_reports_bad_files_and_processes_the_rest(weights, images, tmp_path, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("rgb.jpg", "rgba.png"):
        (folder / name).write_bytes((images / name).read_bytes())
    data = (images / "rgb.jpg").read_bytes()
    (folder / "broken.jpg").write_bytes(data[: len(data) // 3])
    (folder / "notes.txt").write_text("not an image")
    out = tmp_path / "out"
    argv = ["--mode", "dir_predict", "--source", str(folder), "--output", str(out), "--json", str(tmp_path / "d.json")]
    assert run(argv, weights) == 1
    err = capsys.readouterr().err
    assert "broken.jpg" in err and "notes.txt" in err and "2 of 4 images failed" in err
    assert sorted(p.name for p in out.iterdir()) == ["rgb.jpg", "rgba.png"]
    # --json: a record per file, the failures with their error.
    records = {Path(r["image"]).name: r for r in json.loads((tmp_path / "d.json").read_text())}
    assert set(records) == {"rgb.jpg", "rgba.png", "broken.jpg", "notes.txt"}
    assert "error" in records["broken.jpg"] and "error" in records["notes.txt"]
    assert records["rgb.jpg"]["detections"] and records["rgba.png"]["detections"]


@pytest.fixture(scope="module")
def wide(tmp_path_factory):
    """A folder of three 96x64 images: at --input-size 64,96 no letterbox padding, 2x3 P5 cells and
    4x6 P4 cells, each of which the cats model reports as one 'cat' (its anchor 0)."""
    folder = tmp_path_factory.mktemp("wide")
    for i in range(3):
        pixels = np.random.default_rng(i).integers(0, 256, (64, 96, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"{i}.png")
    return folder


def _counts(path):
    return [len(r["detections"]) for r in json.loads(path.read_text())]


@pytest.mark.slow
def test_input_size_nms_iou_and_batch_size(weights, wide, tmp_path, monkeypatch, capsys):
    from utils.inference.detector import Detector

    batches, real = [], Detector.preprocess

    def recording(self, images):
        batches.append(len(images))
        return real(self, images)

    monkeypatch.setattr(Detector, "preprocess", recording)
    argv = ["--weights", str(weights), "--mode", "dir_predict", "--source", str(wide), "--output", str(tmp_path)]
    argv += ["--input-size", "64,96", "--nms-iou", "1.0", "--batch-size", "2", "--json", str(tmp_path / "all.json")]
    assert predict.main(argv) == 0
    assert "input (64, 96)" in capsys.readouterr().out
    assert _counts(tmp_path / "all.json") == [2 * 3 + 4 * 6] * 3  # NMS at IoU 1.0 keeps every cell's box
    assert batches == [2, 1]
    # At the default --nms-iou 0.3 the overlapping P5 boxes suppress each other.
    single = ["--weights", str(weights), "--source", str(wide / "0.png"), "--output", str(tmp_path), "--input-size"]
    assert predict.main([*single, "64,96", "--json", str(tmp_path / "nms.json")]) == 0
    assert 4 * 6 <= _counts(tmp_path / "nms.json")[0] < 2 * 3 + 4 * 6
    # --merge-iou 1: the same detections and scores, the boxes as the NMS kept them; merged at 0.3, the
    # P5 boxes (which overlap each other by more) move to their weighted mean, the P4 boxes stay.
    for merge, name in (("1", "unmerged.json"), ("0.3", "merged.json")):
        argv = [*single, "64,96", "--nms-iou", "1.0", "--merge-iou", merge, "--json", str(tmp_path / name)]
        assert predict.main(argv) == 0
    [merged], [unmerged] = ([r["detections"] for r in json.loads((tmp_path / n).read_text())]
                            for n in ("merged.json", "unmerged.json"))  # fmt: skip
    assert [(d["class_name"], d["score"]) for d in merged] == [(d["class_name"], d["score"]) for d in unmerged]
    moved = [not np.allclose(m["box"], u["box"]) for m, u in zip(merged, unmerged, strict=True)]
    assert 0 < sum(moved) < len(moved)


@pytest.mark.slow
def test_max_detections(weights, wide, tmp_path):
    argv = ["--weights", str(weights), "--source", str(wide / "0.png"), "--output", str(tmp_path)]
    argv += ["--input-size", "64,96", "--nms-iou", "1.0", "--max-detections", "5", "--json", str(tmp_path / "d.json")]
    assert predict.main(argv) == 0
    assert _counts(tmp_path / "d.json") == [5]


@pytest.mark.slow
def test_half_is_ignored_with_a_warning_where_it_would_be_slower(weights, wide, tmp_path, capsys):
    from utils.inference.precision import half_precision

    argv = ["--weights", str(weights), "--source", str(wide / "0.png"), "--output", str(tmp_path), "--half"]
    assert predict.main([*argv, "--input-size", "64,96", "--json", str(tmp_path / "d.json")]) == 0
    out, err = capsys.readouterr()
    device_line = [line for line in out.splitlines() if "input (64, 96)" in line][0]
    faster = half_precision()
    if faster == "float32":  # no GPU, no AMX / AVX512-BF16: said once, as a warning
        assert device_line.endswith("float32") and err.count("no fast float16/bfloat16") == 1
    else:
        assert device_line.endswith(faster)
    assert _counts(tmp_path / "d.json")[0] > 0


def test_backend_forces_the_runtime(weights, wide, tmp_path, capsys):
    argv = ["--weights", str(weights), "--source", str(wide / "0.png"), "--output", str(tmp_path)]
    assert predict.main([*argv, "--backend", "tflite"]) == 2  # a .keras file is no TFLite model
    assert "cats.keras" in capsys.readouterr().err


def _fail_exports(monkeypatch, cache_dir) -> list:
    """ONNX Runtime preferred (as on a CPU), an empty cache in `cache_dir`, but every ONNX export
    fails; returns the export calls."""
    from utils.inference.engine import loader
    from utils.interop import export

    monkeypatch.setenv("YOLO_CACHE_DIR", str(cache_dir))
    calls = []

    def failing_export(*args, **kwargs):
        calls.append(args)
        raise RuntimeError("tf2onnx could not convert it")

    monkeypatch.setattr(loader, "onnx_runtime_preferred", lambda: True)
    monkeypatch.setattr(export, "export_model", failing_export)
    return calls


def test_failed_export_is_one_warning_then_tensorflow(weights, wide, tmp_path, monkeypatch, capsys):
    calls = _fail_exports(monkeypatch, tmp_path / "cache")
    argv = ["--weights", str(weights), "--source", str(wide / "0.png"), "--output", str(tmp_path)]
    assert predict.main([*argv, "--input-size", "64,96", "--json", str(tmp_path / "d.json")]) == 0
    printed = capsys.readouterr()
    [warning] = [line for line in printed.err.splitlines() if line.startswith("warning:")]  # the loader's, logged
    assert warning == (
        f"warning: {weights}: exporting it to ONNX failed (RuntimeError: tf2onnx could not convert it); "
        "running it with TensorFlow instead"
    )
    assert "input (64, 96), TensorFlow on" in printed.out and len(calls) == 1
    assert 4 * 6 <= _counts(tmp_path / "d.json")[0] < 2 * 3 + 4 * 6  # as in test_input_size_nms_iou_and_batch_size


def test_backend_keras_runs_tensorflow_without_exporting(weights, wide, tmp_path, monkeypatch, capsys):
    calls = _fail_exports(monkeypatch, tmp_path / "cache")
    argv = ["--weights", str(weights), "--source", str(wide / "0.png"), "--output", str(tmp_path)]
    assert predict.main([*argv, "--input-size", "64,96", "--backend", "keras"]) == 0
    printed = capsys.readouterr()
    assert "input (64, 96), TensorFlow on" in printed.out and "warning:" not in printed.err and calls == []


@pytest.mark.slow
def test_default_runs_onnx_runtime_on_an_export_made_once(weights, wide, tmp_path, monkeypatch, capsys):
    from utils.inference.engine import loader

    monkeypatch.setattr(loader, "onnx_runtime_preferred", lambda: True)  # a GPU machine too
    monkeypatch.setenv("YOLO_CACHE_DIR", str(tmp_path / "cache"))
    argv = ["--weights", str(weights), "--source", str(wide / "0.png"), "--output", str(tmp_path), "--input-size"]
    for run_number in range(2):
        assert predict.main([*argv, "64,96", "--json", str(tmp_path / "d.json")]) == 0
        printed = capsys.readouterr()
        assert "input (64, 96), ONNX Runtime on CPU, float32" in printed.out and "note:" not in printed.err
        [cached] = (tmp_path / "cache").iterdir()
        assert f"its ONNX export, cached: {cached}" in printed.out
        if run_number == 0:
            stamp = cached.stat().st_mtime_ns
    assert cached.stat().st_mtime_ns == stamp  # the second run used the first run's export
    assert 4 * 6 <= _counts(tmp_path / "d.json")[0] < 2 * 3 + 4 * 6


@pytest.mark.slow
def test_a_model_trained_at_256_predicts_at_416_and_608(wide, tmp_path, monkeypatch, capsys):
    """train.py saves its model with a fixed input (here 256); --input-size runs it at another
    multiple of 32, on ONNX Runtime (an export per size, each cached) and on TensorFlow."""
    from utils.inference.engine import loader
    from utils.interop import cache

    fixed = _cat_model(tmp_path / "at256.keras", input_shape=(256, 256, 3))
    monkeypatch.setattr(loader, "onnx_runtime_preferred", lambda: True)  # a GPU machine too
    monkeypatch.setenv("YOLO_CACHE_DIR", str(tmp_path / "cache"))
    argv = ["--weights", str(fixed), "--source", str(wide / "0.png"), "--output", str(tmp_path)]
    for size, backend in ((416, "auto"), (608, "auto"), (608, "keras")):
        json_path = tmp_path / f"{size}_{backend}.json"
        assert predict.main([*argv, "--input-size", str(size), "--backend", backend, "--json", str(json_path)]) == 0
        printed = capsys.readouterr()
        runtime = "TensorFlow on" if backend == "keras" else "ONNX Runtime on CPU"
        assert f"input ({size}, {size}), {runtime}" in printed.out and "note:" not in printed.err
        [record] = json.loads(json_path.read_text())
        assert record["detections"] and {d["class_name"] for d in record["detections"]} == {"cat"}
    # One export per input size, keyed by it.
    exports = sorted((tmp_path / "cache").iterdir())
    assert exports == sorted(cache.cached_path(fixed, (s, s)) for s in (416, 608))


@pytest.mark.slow
def test_video_file_saved_with_json(weights, tmp_path):
    clip = tmp_path / "clip.mp4"
    writer = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"mp4v"), 10, (96, 64))
    for i in range(6):
        writer.write(np.full((64, 96, 3), 40 * i, np.uint8))
    writer.release()
    out = tmp_path / "out"
    argv = ["--mode", "video", "--source", str(clip), "--save", "--no-show", "--output", str(out)]
    assert run([*argv, "--json", str(tmp_path / "v.json")], weights) == 0
    records = json.loads((tmp_path / "v.json").read_text())
    assert len(records) == 6 and all(r["detections"] for r in records)
    saved = cv2.VideoCapture(str(out / "clip_detected.mp4"))
    frames = 0
    while saved.read()[0]:
        frames += 1
    saved.release()
    assert frames == 6


# The heatmap test's image: noise, 128 wide and 64 high; letterboxed into 128x128 it fills rows
# 32..96. Its P5 cell (row 1, column 3) is the image's top-right 32x32 square.
HEAT_HW, HEAT_CELL = (64, 128), (1, 3)


@pytest.fixture(scope="module")
def hot_cell(tmp_path_factory):
    """(weights, image): a 1-class model whose objectness is high on one P5 cell of this image
    only (the P5 head's objectness fitted by least squares to the features the image gives there)
    and low everywhere else; its class logit is high, so that cell is also a detection."""
    import keras

    from utils.inference.letterbox import letterbox

    folder = tmp_path_factory.mktemp("hot")
    image = np.random.default_rng(7).integers(0, 256, (*HEAT_HW, 3), dtype=np.uint8)
    Image.fromarray(image).save(folder / "noise.png")
    keras.utils.set_random_seed(7)
    model = YoloV4Tiny(1, class_names=["blob"])
    boxed, _ = letterbox(image, (128, 128))
    features = keras.Model(model.input, model.get_layer("conv_29").input)(boxed[None].astype(np.float32) / 255)
    features = np.asarray(features)[0]  # (4, 4, C)
    target = np.full(features.shape[:2], -8.0)
    target[HEAT_CELL] = 8.0
    design = np.concatenate([features.reshape(-1, features.shape[-1]), np.ones((target.size, 1))], axis=1)
    solution = np.linalg.lstsq(design, target.reshape(-1), rcond=None)[0]
    for name in ("conv_29", "conv_36"):
        layer = model.get_layer(name)
        kernel, bias = np.zeros(layer.kernel.shape, np.float32), np.zeros(layer.bias.shape, np.float32)
        bias[4::6], bias[5::6] = -8.0, 8.0  # every anchor: no object, but class "blob" if one
        if name == "conv_29":  # anchor slot 0 of P5 follows the fit
            kernel[0, 0, :, 4], bias[4] = solution[:-1], solution[-1]
        layer.kernel.assign(kernel)
        layer.bias.assign(bias)
    weights = folder / "hot.keras"
    model.save(weights)
    return weights, folder / "noise.png"


@pytest.mark.slow
def test_heatmap_shows_the_hot_cell_where_it_is(hot_cell, tmp_path):
    weights, source = hot_cell
    out = tmp_path / "out"
    argv = ["--weights", str(weights), "--input-size", "128", "--mode", "heatmap", "--source", str(source)]
    assert predict.main([*argv, "--output", str(out), "--json", str(tmp_path / "h.json")]) == 0
    overlay = np.asarray(Image.open(out / "noise_heatmap.png")).astype(np.int32)
    assert overlay.shape == (*HEAT_HW, 3)
    # overlay = (image + JET colours) / 2: the colours, red where the objectness is high, blue where low.
    colours = 2 * overlay - np.asarray(Image.open(source)).astype(np.int32)
    redness = colours[..., 0] - colours[..., 2]
    # Around the hot cell's centre (112, 16) red; two cells away (the left half) blue. In between
    # the map is interpolated from cell to cell.
    hot, cold = redness[10:23, 106:119], redness[:, :64]
    assert hot.min() > 100 and cold.max() < -100, (hot.min(), cold.max())
    y, x = np.unravel_index(np.argmax(redness), redness.shape)
    assert y < 32 and x >= 96
    # --json in heatmap mode: the hot cell is the one detection, its box around that square.
    [record] = json.loads((tmp_path / "h.json").read_text())
    [det] = record["detections"]
    x1, y1, x2, y2 = det["box"]
    assert det["class_name"] == "blob" and x1 < 112 < x2 and y1 < 16 < y2


@pytest.mark.slow
def test_fps_prints_every_stage_and_writes_json(weights, tmp_path, capsys):
    assert run(["--mode", "fps", "--runs", "3", "--json", str(tmp_path / "f.json")], weights) == 0
    printed = capsys.readouterr().out
    for stage in ("preprocess", "model", "postprocess", "total"):
        assert stage in printed
    [record] = json.loads((tmp_path / "f.json").read_text())
    assert record["image"] == "synthetic 640x480" and (record["width"], record["height"]) == (640, 480)
    assert record["detections"] and all(d["class_name"] == "cat" for d in record["detections"])


@pytest.mark.slow
def test_darknet_weights_with_cfg(images, tmp_path):
    save_darknet(YoloV4Tiny(80), tmp_path / "random.cfg", tmp_path / "random.weights")
    argv = ["--weights", str(tmp_path / "random.weights"), "--cfg", str(tmp_path / "random.cfg"), "--input-size", "64"]
    argv += ["--classes", str(COCO_CLASSES_PATH), "--conf", "0.1", "--source", str(images / "rgb.jpg")]
    assert predict.main([*argv, "--output", str(tmp_path / "out"), "--json", str(tmp_path / "d.json")]) == 0
    [record] = json.loads((tmp_path / "d.json").read_text())
    assert record["detections"] and (tmp_path / "out" / "rgb.jpg").is_file()


def test_bad_weights_is_a_clear_error(tmp_path, capsys):
    (tmp_path / "junk.keras").write_text("junk")
    (tmp_path / "a.png").write_bytes(b"")
    assert predict.main(["--weights", str(tmp_path / "junk.keras"), "--source", str(tmp_path / "a.png")]) == 2
    assert "junk.keras" in capsys.readouterr().err


@pytest.mark.parametrize("source", ["no_such_video.mp4", "99"])
def test_video_or_camera_that_will_not_open_fails_fast(tmp_path, source):
    (tmp_path / "w.keras").write_text("never loaded: the source is checked first")
    command = [sys.executable, str(ROOT / "predict.py"), "--weights", str(tmp_path / "w.keras"), "--mode", "video"]
    result = subprocess.run([*command, "--source", source], capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert result.returncode == 2
    assert ("no such video file" if source.endswith(".mp4") else "cannot open camera 99") in result.stderr


def test_help_explains_modes():
    result = subprocess.run([sys.executable, str(ROOT / "predict.py"), "--help"], capture_output=True, text=True)
    assert result.returncode == 0
    for word in ("dir_predict", "heatmap", "attention", "cam", "--top", "--json", "--half", "--crop", "--count"):
        assert word in result.stdout


STARTUP_MARKERS = ("cudart_stub", "cpu_feature_guard", "oneDNN custom operations", "absl::InitializeLog", "TF-TRT")


@pytest.mark.slow
def test_help_and_a_run_print_no_tensorflow_startup_lines(weights, wide, tmp_path):
    """Without TF_CPP_MIN_LOG_LEVEL in the environment (utils.cli.quiet_tensorflow sets it and
    drops what TensorFlow logs before that level applies), as a user's shell starts them."""
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    predict_py = [sys.executable, str(ROOT / "predict.py")]
    run_args = ["--weights", str(weights), "--source", str(wide / "0.png"), "--output", str(tmp_path / "out")]
    for command in (
        [*predict_py, "--help"],
        [*predict_py, *run_args, "--input-size", "64"],
        [sys.executable, str(ROOT / "train.py"), "--help"],
    ):
        result = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        printed = result.stdout + result.stderr
        assert not [m for m in STARTUP_MARKERS if m in printed], printed
    assert (tmp_path / "out" / "0.png").is_file()


# ---------------------------------------------------------------------------------------- slice, augment
@pytest.mark.slow
def test_slice_and_augment_run_every_view_and_write_boxes_in_the_image(weights, images, tmp_path, capsys):
    out, records = tmp_path / "out", tmp_path / "dets.json"
    source = ["--source", str(images / "rgb.jpg"), "--output", str(out), "--json", str(records)]
    assert run(["--slice", "32", "--overlap", "0.25", "--augment", "--backend", "keras", *source], weights) == 0
    assert "per image: the image and 32-pixel tiles (overlap 0.25), each 3 ways" in capsys.readouterr().out
    [record] = json.loads(records.read_text())
    assert (record["width"], record["height"]) == (90, 60)
    for det in record["detections"]:
        x0, y0, x1, y1 = det["box"]
        assert 0 <= x0 <= x1 <= 90 and 0 <= y0 <= y1 <= 60


def test_slice_options_are_checked_before_the_model_loads(images, tmp_path, capsys):
    source = ["--source", str(images / "rgb.jpg"), "--output", str(tmp_path / "out")]
    missing = tmp_path / "never.keras"
    assert run(["--mode", "heatmap", "--slice", "64", *source], missing) == 2
    assert "slice and augment apply to the boxes pictures" in capsys.readouterr().err
    assert run(["--slice", "16", *source], missing) == 2
    assert "tiles of at least 32 pixels" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        run(["--overlap", "1", *source], missing)
    assert "must be in [0, 1)" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------- attention, cam
def test_attention_mode_refuses_a_model_without_attention(weights, images, tmp_path, capsys):
    argv = ["--mode", "attention", "--source", str(images / "rgb.jpg"), "--output", str(tmp_path)]
    assert run(argv, weights) == 2  # the cats model is phi 0
    assert "phi 0" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


def test_attention_and_cam_refuse_an_exported_model_or_another_backend(weights, images, tmp_path, capsys):
    source = ["--source", str(images / "rgb.jpg"), "--output", str(tmp_path)]
    assert run(["--mode", "cam", "--backend", "onnx", *source], weights) == 2
    assert "Keras model" in capsys.readouterr().err
    (tmp_path / "model.onnx").write_bytes(b"never read")
    assert predict.main(["--weights", str(tmp_path / "model.onnx"), "--mode", "attention", *source]) == 2
    assert "give a .keras model" in capsys.readouterr().err


@pytest.fixture(scope="module")
def phi_models(tmp_path_factory):
    """phi -> a saved random 2-class model of that attention."""
    import keras

    from nets.attention import PHI_TO_ATTENTION

    folder = tmp_path_factory.mktemp("phis")
    paths = {}
    for phi, name in enumerate(PHI_TO_ATTENTION):
        keras.utils.set_random_seed(phi)
        paths[phi] = folder / f"phi{phi}.keras"
        YoloV4Tiny(2, attention=name, class_names=["cat", "dog"]).save(paths[phi])
    return paths


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["attention", "cam"])
def test_picture_modes_write_a_picture_per_image_for_every_phi(mode, phi_models, images, tmp_path, monkeypatch):
    from utils.inference.engine import loader

    # Whatever backend the path would pick by default (ONNX Runtime for .keras on CPUs, one day),
    # these modes run the Keras model.
    monkeypatch.setattr(loader, "infer_backend", lambda path: "onnx")
    sources = [str(images / "rgb.jpg"), str(images / "rgba.png")]
    for phi, path in phi_models.items():
        out = tmp_path / f"phi{phi}"
        argv = ["--mode", mode, "--source", *sources, "--output", str(out), "--conf", "0", "--top", "2"]
        code = run([*argv, "--json", str(out / "records.json")], path)
        if mode == "attention" and phi == 0:
            assert code == 2 and not out.exists()
            continue
        assert code == 0
        assert sorted(p.name for p in out.glob(f"*_{mode}.*")) == [f"rgb_{mode}.jpg", f"rgba_{mode}.png"]
        picture = np.asarray(Image.open(out / f"rgba_{mode}.png"))
        points = 1 if phi == 5 else 3  # self-attention goes to feat2 alone
        assert picture.shape[1] >= (points if mode == "attention" else 2) * 256  # a panel per point / detection
        records = json.loads((out / "records.json").read_text())
        if mode == "attention":
            assert [len(r["panels"]) for r in records] == [points, points]
        else:
            assert [len(r["detections"]) for r in records] == [2, 2]
            assert {d["head"] for r in records for d in r["detections"]} <= {"P5", "P4"}


# ---------------------------------------------------------------------------------------- video
@pytest.mark.slow
def test_every_nth_frame_of_a_video_is_saved(weights, tmp_path):
    clip = write_clip(tmp_path / "clip.mp4", frames=10)
    out = tmp_path / "out"
    argv = ["--mode", "video", "--source", str(clip), "--every", "3", "--save", "--no-show", "--output", str(out)]
    assert run([*argv, "--json", str(tmp_path / "v.json")], weights) == 0
    assert count_frames(out / "clip_detected.mp4") == 4  # frames 0, 3, 6, 9
    records = json.loads((tmp_path / "v.json").read_text())
    assert [r["image"].rsplit("=", 1)[1] for r in records] == ["0", "3", "6", "9"]


@pytest.mark.slow
def test_a_stream_that_ends_mid_run_leaves_a_playable_video_and_exit_code_1(weights, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(video, "RECONNECT_DELAY_S", 0.05)
    out = tmp_path / "out"
    with mjpeg_stream(frames=40, rate=50) as url:
        code = run(["--mode", "video", "--source", url, "--save", "--no-show", "--output", str(out)], weights)
    assert code == 1
    printed = capsys.readouterr()
    assert "stopped delivering frames" in printed.err and "lag from capture to display" in printed.out
    assert count_frames(out / "stream_detected.mp4") > 0


def test_an_unreachable_stream_exits_2_within_5_seconds(tmp_path):
    (tmp_path / "w.keras").write_text("never loaded: the source is checked first")
    command = [sys.executable, str(ROOT / "predict.py"), "--weights", str(tmp_path / "w.keras"), "--mode", "video"]
    start = time.perf_counter()
    source = "rtsp://127.0.0.1:1/live"
    result = subprocess.run([*command, "--source", source], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "cannot open stream rtsp://127.0.0.1:1/live" in result.stderr
    assert time.perf_counter() - start < 5


def test_track_keeps_one_id_for_a_moving_object(tmp_path):
    from utils.inference.detector import Detector

    detector = Detector(
        bright_blob_forward,
        num_classes=1,
        anchors=load_anchors(),
        anchors_mask=ANCHORS_MASK,
        scale_x_y=1.0,
        input_shape=(64, 96),
        class_names=["square"],
    )
    clip = write_clip(tmp_path / "clip.mp4", frames=12)
    records = tmp_path / "records.json"
    stats = Predictor(detector=detector, track=True).run(VideoSource(str(clip)), [JsonRecords(records)])
    assert stats.processed == 12
    records = json.loads(records.read_text())
    ids = [[d["track_id"] for d in r["detections"]] for r in records]
    assert ids == [[1]] * 12
    centres = [(d["box"][0] + d["box"][2]) / 2 for r in records for d in r["detections"]]
    assert centres[-1] > centres[0] + 20  # the square did move


@pytest.mark.slow
@pytest.mark.skipif(not (shutil.which("Xvfb") and shutil.which("xdotool")), reason="needs Xvfb and xdotool")
@pytest.mark.parametrize("key", ["q", "Escape"])
def test_the_live_window_closes_on_q_or_esc(weights, tmp_path, key):
    clip = write_clip(tmp_path / "long.mp4", frames=6000)
    # A display number nobody holds; Xvfb is ready once its socket exists.
    number = next(n for n in range(100, 200) if not Path(f"/tmp/.X{n}-lock").exists())
    display = f":{number}"
    xvfb = subprocess.Popen(["Xvfb", display, "-screen", "0", "320x240x24"], stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while not Path(f"/tmp/.X11-unix/X{number}").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    # The child's OpenCV sets up Qt itself (this process's cv2 import left its Qt paths in os.environ).
    env = {k: v for k, v in os.environ.items() if not k.startswith("QT_")}
    env.update(DISPLAY=display, QT_QPA_PLATFORM="xcb")
    command = [sys.executable, str(ROOT / "predict.py"), "--weights", str(weights), "--input-size", "64"]
    app = subprocess.Popen([*command, "--mode", "video", "--source", str(clip)], env=env, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        window = ""
        deadline = time.monotonic() + 120
        while not window and time.monotonic() < deadline and app.poll() is None:
            time.sleep(0.5)
            found = subprocess.run(["xdotool", "search", "--name", re.escape(predict.WINDOW_TITLE)], env=env,
                                   capture_output=True, text=True)  # fmt: skip
            window = found.stdout.split()[0] if found.stdout.split() else ""
        assert window, f"no window appeared (exit code {app.poll()})"
        subprocess.run(["xdotool", "windowfocus", "--sync", window, "key", key], env=env, timeout=30)
        out, err = app.communicate(timeout=60)
        assert app.returncode == 0, err
        frames = int(out.split(" frames,")[0].rsplit("\n", 1)[-1])
        assert frames < 6000  # it quit on the key, not at the end of the clip
    finally:
        if app.poll() is None:
            app.kill()
        xvfb.terminate()  # SIGTERM: Xvfb removes its lock file and socket, so the display is free again
        xvfb.wait(timeout=30)


@pytest.mark.slow
def test_chinese_class_names_are_drawn_as_characters(tmp_path):
    """Two models alike but for the name of class 0: the saved pictures differ where the label is
    (with a font lacking the characters both names are the same empty box)."""
    image = tmp_path / "white.png"
    Image.fromarray(np.full((128, 160, 3), 255, np.uint8)).save(image)
    drawn = []
    for names in (["猫", "狗"], ["狗", "猫"]):
        weights = _cat_model(tmp_path / f"{names[0]}.keras", names)
        out = tmp_path / names[0]
        argv = ["--source", str(image), "--output", str(out), "--max-detections", "1", "--json", str(out / "d.json")]
        assert run(argv, weights) == 0
        [record] = json.loads((out / "d.json").read_text())
        assert [d["class_name"] for d in record["detections"]] == [names[0]]
        drawn.append(np.asarray(Image.open(out / "white.png")))
    assert drawn[0].shape == drawn[1].shape and not np.array_equal(drawn[0], drawn[1])


# ---------------------------------------------------------------------------------------- outputs
def test_an_output_folder_that_holds_inputs_is_refused_before_the_model_loads(weights, images, tmp_path, capsys):
    """--output == --source annotated every photo over its original, exit 0 (issue 22). Refused:
    an --output that is a source folder, holds an input file, or holds a source folder."""
    photos = tmp_path / "photos"
    photos.mkdir()
    for name in ("rgb.jpg", "rgba.png"):
        shutil.copy(images / name, photos / name)
    originals = {p.name: p.read_bytes() for p in photos.iterdir()}
    cases = [
        ["--mode", "dir_predict", "--source", str(photos), "--output", str(photos)],
        ["--source", str(photos / "rgb.jpg"), "--output", str(photos)],
        ["--mode", "heatmap", "--source", str(photos), "--output", str(tmp_path)],
    ]
    for argv in cases:
        assert run(argv, weights) == 2, argv
        err = capsys.readouterr().err
        assert "holds the input" in err and "choose an --output outside the inputs" in err, err
    assert {p.name: p.read_bytes() for p in photos.iterdir()} == originals
    # Before the model loads: weights that do not exist are not even looked at.
    assert run(cases[0], tmp_path / "missing.keras") == 2
    assert "holds the input" in capsys.readouterr().err
    # --json onto an input is refused the same way.
    argv = ["--source", str(photos / "rgb.jpg"), "--output", str(tmp_path / "out"), "--json", str(photos / "rgb.jpg")]
    assert run(argv, weights) == 2 and "is an input" in capsys.readouterr().err
    assert (photos / "rgb.jpg").read_bytes() == originals["rgb.jpg"]


def test_quiet_prints_what_was_asked_for_and_no_status_lines(weights, images, tmp_path, capsys):
    """-q: the --count lines the user asked for stay, the runtime and "written to" lines go."""

    def argv(out):
        return ["--source", str(images / "rgb.jpg"), "--output", str(out), "--count", "--json", str(out / "d.json")]

    assert run([*argv(tmp_path / "quiet"), "-q"], weights) == 0
    quiet = capsys.readouterr()
    [line] = quiet.out.splitlines()
    assert line.startswith(f"{images / 'rgb.jpg'}: ") and line.endswith(" cat") and quiet.err == ""
    assert run(argv(tmp_path / "loud"), weights) == 0
    printed = capsys.readouterr().out
    assert f"{weights}: " in printed and "1 images written to" in printed and "detections written to" in printed


def test_inputs_of_one_name_get_an_output_each_and_the_count_is_what_is_on_disk(weights, images, tmp_path, capsys):
    """a/x.jpg and b/x.jpg, x.png and x.gif (saved as .png) wrote one file each pair while the
    run reported all four written (issue 22)."""
    sources = []
    for folder, name, original in (("a", "x.jpg", "rgb.jpg"), ("b", "x.jpg", "rgb.jpg"), ("c", "x.png", "rgba.png")):
        (tmp_path / folder).mkdir(exist_ok=True)
        shutil.copy(images / original, tmp_path / folder / name)
        sources.append(tmp_path / folder / name)
    Image.open(images / "rgb.jpg").save(tmp_path / "c" / "x.gif")
    sources.append(tmp_path / "c" / "x.gif")
    out = tmp_path / "out"
    assert run(["--source", *map(str, sources), "--output", str(out), "--crop"], weights) == 0
    written = sorted(p.name for p in out.iterdir() if p.is_file())
    assert written == ["x.jpg", "x.png", "x_1.jpg", "x_1.png"]
    assert f"{len(written)} images written to {out}" in capsys.readouterr().out
    crops = [p.name for p in (out / "crops").iterdir()]
    assert len(crops) == len(set(crops)) and any(n.startswith("x_1_") for n in crops)


def test_an_output_that_cannot_be_written_fails_cleanly_and_leaves_no_half_written_file(
    weights, images, tmp_path, capsys, monkeypatch
):
    """A read-only or full output folder gave a traceback after the model had loaded, and a
    half-written image (issue 22). Now an --output that cannot be written is refused before the
    model loads (running as root, a path through a file stands in for a read-only folder), and a
    disk that fills mid-run stops it with a message: no partial image, --json complete."""
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    argv = ["--source", str(images / "rgb.jpg"), "--output", str(blocker / "out")]
    assert run(argv, tmp_path / "missing.keras") == 2  # refused before the weights are looked at
    assert f"--output {blocker / 'out'}: cannot write there" in capsys.readouterr().err

    saves = []
    real_save = Image.Image.save

    def fills_the_disk(self, fp, *args, **kwargs):
        saves.append(fp)
        if len(saves) == 2:
            with open(fp, "wb") as handle:
                handle.write(b"\xff\xd8 half a jpeg")
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(self, fp, *args, **kwargs)

    monkeypatch.setattr(Image.Image, "save", fills_the_disk)
    out = tmp_path / "out"
    sources = [str(images / n) for n in ("rgb.jpg", "phone.jpg", "rgba.png")]
    argv = ["--source", *sources, "--output", str(out), "--batch-size", "1", "--json", str(tmp_path / "d.json")]
    assert run(argv, weights) == 2
    assert f"{out / 'phone.jpg'}: cannot write (No space left on device)" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["rgb.jpg"]  # no phone.jpg, half or whole; no temporary file
    assert [Path(r["image"]).name for r in json.loads((tmp_path / "d.json").read_text())] == ["rgb.jpg"]


@pytest.mark.slow
def test_sigterm_leaves_a_playable_video_and_the_json_of_the_frames_done(weights, tmp_path):
    """SIGTERM (timeout, docker stop) killed predict.py outright: the saved .mp4 had no index and
    --json, written at the end, did not exist (issue 22). Now it unwinds as Ctrl-C does: exit 143,
    the video closed playable, --json complete with every frame done, no temporary file."""
    clip = write_clip(tmp_path / "clip.mp4", frames=3000)
    out, records = tmp_path / "out", tmp_path / "v.json"
    command = [sys.executable, str(ROOT / "predict.py"), "--weights", str(weights), "--input-size", "64"]
    command += ["--mode", "video", "--source", str(clip), "--save", "--no-show", "--output", str(out)]
    app = subprocess.Popen([*command, "--json", str(records)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and app.poll() is None:
            if records.is_file() and records.read_text().count('"image"') >= 5:
                break
            time.sleep(0.2)
        assert app.poll() is None, app.communicate()[1].decode()[-2000:]
        app.send_signal(signal.SIGTERM)
        _, err = app.communicate(timeout=60)
    finally:
        if app.poll() is None:
            app.kill()
    assert app.returncode == 143, err.decode()[-2000:]
    done = json.loads(records.read_text())
    assert 5 <= len(done) < 3000
    assert [r["image"].rsplit("=", 1)[1] for r in done] == [str(i) for i in range(len(done))]
    assert count_frames(out / "clip_detected.mp4") >= len(done)  # each frame is written before its record
    assert [p.name for p in out.iterdir()] == ["clip_detected.mp4"]
