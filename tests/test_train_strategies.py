"""train.py under tf.distribute on the CPU: MirroredStrategy over two logical CPU devices and
MultiWorkerMirroredStrategy with two worker processes on loopback must reach the same weights as
one process with the same global batch (2 steps of SGD, global batch 4, 64x64 input)."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from utils.demo_data import write_demo_dataset

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]

# Runs train.py in a fresh process: argv[1] = number of logical CPU devices, the rest = train.py flags.
RUNNER = """
import sys
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * int(sys.argv[1]))
import train
sys.exit(train.main(sys.argv[2:]))
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_demo_dataset(tmp_path_factory.mktemp("shapes"), splits={"train": 8}, image_size=64, seed=5)


def _start(data, save_dir, strategy, devices=1, tf_config=None):
    flags = [
        "--phi", "4", "--data", str(data), "--classes", str(data / "classes.txt"), "--input-size", "64",
        "--epochs", "1", "--steps-per-epoch", "2", "--batch-size", "4", "--optimizer", "sgd", "--lr", "0.16",
        "--eval-period", "0", "--save-period", "0", "--mosaic", "0.5", "--mixup", "0.5", "--seed", "3",
        "--strategy", strategy, "--save-dir", str(save_dir),
    ]  # fmt: skip
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": str(ROOT)}
    env.pop("TF_CONFIG", None)
    if tf_config is not None:
        env["TF_CONFIG"] = json.dumps(tf_config)
    return subprocess.Popen(
        [sys.executable, "-c", RUNNER, str(devices), *flags],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip


def _wait(process, timeout=300):
    out, _ = process.communicate(timeout=timeout)
    assert process.returncode == 0, out[-3000:]
    return out


def _weights(save_dir):
    import keras

    return keras.saving.load_model(save_dir / "last.keras").get_weights()


def _assert_same(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_allclose(x, y, rtol=1e-3, atol=2e-5)


@pytest.fixture(scope="module")
def single(data, tmp_path_factory):
    save_dir = tmp_path_factory.mktemp("single")
    _wait(_start(data, save_dir, "none"))
    return _weights(save_dir)


def test_mirrored_over_two_cpu_devices_matches_one_process(data, single, tmp_path):
    out = _wait(_start(data, tmp_path, "mirrored", devices=2))
    assert "2 replica(s)" in out
    _assert_same(single, _weights(tmp_path))


def test_two_workers_on_loopback_match_one_process(data, single, tmp_path):
    workers = [f"localhost:{_free_port()}", f"localhost:{_free_port()}"]
    processes = [
        _start(data, tmp_path / f"worker{i}", "multi-worker",
               tf_config={"cluster": {"worker": workers}, "task": {"type": "worker", "index": i}})
        for i in range(2)
    ]  # fmt: skip
    outs = [_wait(p) for p in processes]
    assert "2 replica(s)" in outs[0]
    assert not (tmp_path / "worker1" / "last.keras").exists()  # only the chief writes
    _assert_same(single, _weights(tmp_path / "worker0"))
