"""Every script in benchmarks/ runs with its smallest options and prints its result line.

A smoke test only: the figures depend on the machine and are not checked. The scripts run in this
process through their `main`, except bench_export.py, which sets TensorFlow's thread pools (a
process can do that only before TensorFlow starts) and so runs as its own process. Scripts that
compare with OpenCV DNN read darknet's yolov4-tiny.cfg from ../shared/reference when it is there
and write an equivalent cfg otherwise, so none needs to be skipped without it."""

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]
HANG_TIMEOUT = 1800  # seconds: catches a hang only, whatever the machine's speed

SMALLEST = {
    "bench_map.py": (["--images", "20", "--dets-per-image", "5", "--repeats", "1"], "ratio pycocotools / ours"),
    "bench_darknet.py": (["--size", "64", "--runs", "1", "--warmup", "0"], "Keras / OpenCV"),
    "bench_inference.py": (["--size", "64", "--rounds", "1", "--batch", "2"], "ratio ours / OpenCV forward"),
    "bench_export.py": (["--size", "64", "--rounds", "1"], "fastest fp32"),
    # The peers' skip path (no ultralytics venv in tests); ours is still timed (test below).
    "bench_end_to_end.py": (
        ["--count", "2", "--rounds", "1", "--imgsz", "64", "--peer", "yolov8n=yolov8n.yaml",
         "--ultralytics-python", "/nonexistent/python"],
        "ultralytics not found",
    ),  # fmt: skip
    # Its skip path here (no ultralytics venv in tests); tests/test_bench_learning.py runs ours end to end.
    "bench_learning.py": (["--ultralytics-python", "/nonexistent/python"], "ultralytics not found"),
    "bench_loss_scale.py": (["--sizes", "64", "--batch-size", "2", "--images", "4"], "ratio sum / mean"),
    "bench_train.py": (
        ["--sizes", "64", "--phi", "0", "--batch-size", "2", "--steps", "1", "--rounds", "1", "--warmup", "0",
         "--images", "4", "--compare-precision", "bfloat16"],
        "bfloat16 / plain, bare step",
    ),  # fmt: skip
}


def test_every_benchmark_is_covered():
    assert sorted(SMALLEST) == sorted(p.name for p in (ROOT / "benchmarks").glob("bench_*.py"))


@pytest.mark.parametrize("script", sorted(set(SMALLEST) - {"bench_export.py"}))
def test_benchmark_runs(script, monkeypatch, capsys):
    argv, expected = SMALLEST[script]
    module = importlib.import_module(f"benchmarks.{Path(script).stem}")
    monkeypatch.setattr(sys, "argv", [script, *argv])  # bench_map.py's main reads sys.argv
    code = module.main() if script == "bench_map.py" else module.main(argv)
    assert code in (None, 0)
    assert expected in capsys.readouterr().out


def test_bench_end_to_end_times_ours_image_file_to_boxes(tmp_path, capsys):
    from benchmarks import bench_end_to_end

    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for name in ("b.jpg", "a.png", "c.jpg"):
        Image.fromarray(rng.integers(0, 256, (50, 70, 3), dtype=np.uint8)).save(images / name)
    (images / "notes.txt").write_text("not an image")
    report = tmp_path / "figures.json"
    argv = ["--images", str(images), "--count", "2", "--rounds", "2", "--imgsz", "64", "--json", str(report)]
    assert bench_end_to_end.main(argv) == 0
    printed = capsys.readouterr().out
    assert "ours (random weights, onnx)" in printed  # predict.py's default path on a CPU
    (ours,) = json.loads(report.read_text())["rows"]
    assert len(ours["round_medians"]) == 2 and ours["median_ms"] > 0


@pytest.mark.parametrize("peer", ["yolov8n", "=best.pt", "yolov8n="])
def test_bench_end_to_end_peer_is_name_equals_weights(peer, capsys):
    from benchmarks import bench_end_to_end

    with pytest.raises(SystemExit):
        bench_end_to_end.main(["--peer", peer])
    assert "NAME=WEIGHTS" in capsys.readouterr().err


def test_bench_export_runs(tmp_path):
    argv, expected = SMALLEST["bench_export.py"]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_export.py"), *argv],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=HANG_TIMEOUT,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    assert expected in result.stdout, result.stdout[-2000:]
