"""train.py under tf.distribute on the CPU: MirroredStrategy over two logical CPU devices and
MultiWorkerMirroredStrategy with two worker processes on loopback must reach the same weights as
one process with the same global batch (2 steps of SGD with momentum, global batch 4, 64x64 input,
mosaic and mixup on).

The runs use --freeze-bn: with batch statistics, Keras' synchronized batch-norm computes the
variance as E[x^2] - E[x]^2 over the replicas, which on 2-image, 2x2-pixel tensors differs from
the one-process two-pass variance enough (float32) to move single updates by several per cent.
With the batch-norms fixed the runs agree to about 1e-4 of each update; the data split, gradient
reduction, learning rate and optimizer state are what this test checks."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from utils.data.demo import write_demo_dataset

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]

# argv: number of logical CPU devices, then (strategy, save dir) pairs; the train.py flags come from FLAGS.
RUNNER = """
import json, os, sys
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * int(sys.argv[1]))
import train
flags = json.loads(os.environ["TRAIN_FLAGS"])
for strategy, save_dir in zip(sys.argv[2::2], sys.argv[3::2]):
    code = train.main(flags + ["--strategy", strategy, "--save-dir", save_dir])
    if code:
        sys.exit(code)
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_demo_dataset(tmp_path_factory.mktemp("shapes"), splits={"train": 8}, image_size=64, seed=5)


def _start(data, runs, devices=1, tf_config=None):
    flags = [
        "--phi", "0", "--data", str(data), "--classes", str(data / "classes.txt"), "--input-size", "64",
        "--epochs", "1", "--steps-per-epoch", "2", "--batch-size", "4", "--optimizer", "sgd", "--lr", "0.01",
        "--eval-period", "0", "--save-period", "0", "--mosaic", "0.5", "--mixup", "0.5", "--seed", "3", "--freeze-bn",
    ]  # fmt: skip
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": str(ROOT), "TRAIN_FLAGS": json.dumps(flags)}
    env.pop("TF_CONFIG", None)
    if tf_config is not None:
        env["TF_CONFIG"] = json.dumps(tf_config)
    args = [str(a) for run in runs for a in run]
    return subprocess.Popen(
        [sys.executable, "-c", RUNNER, str(devices), *args],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip


def _wait(process, timeout=400):
    out, _ = process.communicate(timeout=timeout)
    assert process.returncode == 0, out[-3000:]
    return out


def _weights(save_dir):
    import keras

    import nets.yolo  # noqa: F401  (registers YoloV4Tiny for loading)

    return keras.saving.load_model(save_dir / "last.keras").get_weights()


def _assert_same(initial, a, b):
    """The two runs moved every tensor the same way: differences below 0.2 % of its update."""
    assert len(a) == len(b) == len(initial)
    for start, x, y in zip(initial, a, b, strict=True):
        update = float(np.linalg.norm(x - start))
        assert float(np.linalg.norm(x - y)) <= 2e-3 * update + 1e-7


def test_mirrored_and_multi_worker_match_one_process(data, tmp_path):
    # The one-process run and the mirrored run share a process (2 logical CPUs; "none" uses one);
    # the two workers run beside it.
    local = _start(data, [("none", tmp_path / "single"), ("mirrored", tmp_path / "mirrored")], devices=2)
    workers = [f"localhost:{_free_port()}", f"localhost:{_free_port()}"]
    processes = [
        _start(data, [("multi-worker", tmp_path / f"worker{i}")],
               tf_config={"cluster": {"worker": workers}, "task": {"type": "worker", "index": i}})
        for i in range(2)
    ]  # fmt: skip
    local_out = _wait(local)
    worker_outs = [_wait(p) for p in processes]
    assert "1 replica(s)" in local_out and "2 replica(s)" in local_out and "2 replica(s)" in worker_outs[0]
    single = _weights(tmp_path / "single")
    initial = keras_initial_weights()
    # The runs moved the weights, so agreement below is not trivial.
    assert max(float(np.abs(a - b).max()) for a, b in zip(single, initial, strict=True)) > 1e-3
    _assert_same(initial, single, _weights(tmp_path / "mirrored"))
    assert not (tmp_path / "worker1" / "last.keras").exists()  # only the chief writes
    _assert_same(initial, single, _weights(tmp_path / "worker0"))


def keras_initial_weights():
    import keras

    from nets.yolo import YoloV4Tiny
    from utils.training.trainer import init_head_biases

    keras.utils.set_random_seed(3)
    model = YoloV4Tiny(3, input_shape=(64, 64, 3))
    init_head_biases(model, (64, 64))
    return model.get_weights()
