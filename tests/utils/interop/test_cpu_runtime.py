"""The default path's CPU runtime: ONNX Runtime or OpenVINO, whichever was timed faster here by the
margin, kept beside the export and timed again on another machine; $YOLO_CPU_RUNTIME pins it. The
runtimes are stand-ins on a fake clock; the last test runs both real ones on a real export."""

import json

import numpy as np
import pytest

from utils.interop import cache, cpu_runtime
from utils.interop.cpu_runtime import MARGIN, RUNTIME_ENV, choose_runtime


class Clock:
    """A clock the forwards move: each forward takes its `ms`."""

    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now

    def forward(self, ms):
        def run(images):
            self.now += ms / 1000.0
            return images

        return run


@pytest.fixture
def timed(tmp_path, monkeypatch):
    """(export path, clock, loads): choose_runtime with OpenVINO installed and unpinned; `loads`
    counts OpenVINO loads, its forward taking `timed.openvino_ms`."""
    monkeypatch.delenv(RUNTIME_ENV, raising=False)
    monkeypatch.setattr(cpu_runtime, "openvino_installed", lambda: True)
    export = tmp_path / "abc.onnx"
    export.write_bytes(b"model")
    clock = Clock()
    loads = []

    def load_openvino(path, threads):
        loads.append(path)
        return clock.forward(timed.openvino_ms)

    def choose(onnx_ms=10.0, openvino_ms=8.0):
        timed.openvino_ms = openvino_ms
        return choose_runtime(export, clock.forward(onnx_ms), (64, 64), 2, clock=clock, load_openvino=load_openvino)

    timed.choose, timed.export, timed.loads = choose, export, loads
    return timed


def test_openvino_runs_where_it_was_timed_faster_by_the_margin(timed):
    choice = timed.choose(onnx_ms=10.0, openvino_ms=8.0)
    assert choice.runtime == "openvino" and (choice.onnx_ms, choice.openvino_ms) == pytest.approx((10.0, 8.0))
    assert choice.forward(np.zeros(1)) is not None and "OpenVINO 8.0 ms" in choice.why
    verdict = json.loads(cache.verdict_path(timed.export).read_text())
    assert verdict["runtime"] == "openvino" and verdict["signature"]["threads"] == 2
    # Kept: the next load times nothing, and runs OpenVINO again.
    loads = len(timed.loads)
    again = timed.choose(onnx_ms=10.0, openvino_ms=50.0)
    assert again.runtime == "openvino" and again.openvino_ms == pytest.approx(8.0) and len(timed.loads) == loads + 1


def test_onnx_runtime_stays_unless_openvino_is_clearly_faster(timed):
    nearly = 10.0 * (1.0 - MARGIN / 2)
    choice = timed.choose(onnx_ms=10.0, openvino_ms=nearly)
    assert choice.runtime == "onnx" and choice.openvino_ms == pytest.approx(nearly)
    assert json.loads(cache.verdict_path(timed.export).read_text())["runtime"] == "onnx"


def test_another_machine_times_again(timed, monkeypatch):
    assert timed.choose(onnx_ms=10.0, openvino_ms=12.0).runtime == "onnx"
    monkeypatch.setattr(cpu_runtime, "cpu_name", lambda: "another CPU")
    assert timed.choose(onnx_ms=10.0, openvino_ms=5.0).runtime == "openvino"


def test_openvino_that_cannot_run_it_leaves_onnx_runtime(timed, monkeypatch):
    def broken(path, threads):
        raise ValueError("cannot compile it")

    onnx = object()
    choice = choose_runtime(timed.export, onnx, (64, 64), 2, load_openvino=broken)
    assert (choice.runtime, choice.forward) == ("onnx", onnx) and "cannot compile it" in choice.why

    def not_importable(path, threads):  # installed, but broken
        raise ImportError("libopenvino.so: cannot open shared object file")

    cache.verdict_path(timed.export).unlink()
    assert choose_runtime(timed.export, onnx, (64, 64), 2, load_openvino=not_importable).runtime == "onnx"
    monkeypatch.setattr(cpu_runtime, "openvino_installed", lambda: False)
    cache.verdict_path(timed.export).unlink()
    assert choose_runtime(timed.export, onnx, (64, 64), 2, load_openvino=broken).why == "OpenVINO is not installed"


def test_the_environment_pins_the_runtime(timed, monkeypatch):
    monkeypatch.setenv(RUNTIME_ENV, "onnx")
    assert timed.choose(onnx_ms=10.0, openvino_ms=1.0).runtime == "onnx" and timed.loads == []
    monkeypatch.setenv(RUNTIME_ENV, "OpenVINO")
    assert timed.choose(onnx_ms=1.0, openvino_ms=10.0).runtime == "openvino"
    assert not cache.verdict_path(timed.export).exists()  # nothing timed, nothing kept
    monkeypatch.setenv(RUNTIME_ENV, "gpu")
    with pytest.raises(cpu_runtime.RuntimeEnvError, match="YOLO_CPU_RUNTIME='gpu'"):
        timed.choose()


def test_pruning_an_export_removes_its_verdict(tmp_path):
    old, new = tmp_path / "old.onnx", tmp_path / "new.onnx"
    for path in (old, new):
        path.write_bytes(b"x" * 100)
        cache.verdict_path(path).write_text("{}")
    assert cache.prune(tmp_path, 150, keep=new) == [old]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["new.onnx", "new.onnx.runtime.json"]


@pytest.mark.slow
def test_a_keras_model_runs_on_either_runtime_with_the_same_detections(tmp_path, monkeypatch):
    """Unpinned, the default path times both real runtimes and says so; forced, each runs the cached
    export, with the same detections."""
    pytest.importorskip("openvino", reason="OpenVINO is not installed: nothing to choose between")
    import keras

    from nets.yolo import YoloV4Tiny
    from tests.layer_checks import randomise_batch_norms
    from utils.inference.engine.loader import describe_runtime, load_detector, onnx_runtime_preferred

    if not onnx_runtime_preferred():
        pytest.skip("the default path runs .keras models on TensorFlow here (a GPU, or no ONNX exporter)")

    keras.utils.set_random_seed(3)
    path = tmp_path / "m.keras"
    randomise_batch_norms(YoloV4Tiny(3, input_shape=(64, 64, 3))).save(path)
    monkeypatch.delenv(RUNTIME_ENV, raising=False)
    chosen = load_detector(path, conf=0.01)
    assert chosen.backend in ("onnx", "openvino") and "timed here: ONNX Runtime" in describe_runtime(chosen)
    image = np.random.default_rng(0).integers(0, 256, (64, 96, 3), dtype=np.uint8)
    # Forced, each runs in float32, even where --precision auto means bfloat16 on TensorFlow (AMX).
    monkeypatch.setattr("utils.inference.precision.cpu_has_fast_bfloat16", lambda: True)
    onnx, openvino = (load_detector(path, conf=0.01, backend=b) for b in ("onnx", "openvino"))
    assert (onnx.backend, openvino.backend) == ("onnx", "openvino") and onnx.onnx_path == openvino.onnx_path
    assert onnx.precision == openvino.precision == "float32"
    [a], [b] = onnx.detect([image]), openvino.detect([image])
    assert len(a) > 0 and len(a) == len(b)
    np.testing.assert_allclose(a.scores, b.scores, atol=1e-4)
    np.testing.assert_allclose(a.boxes, b.boxes, atol=0.01)
