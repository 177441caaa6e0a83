"""train.py under tf.distribute on the CPU: MirroredStrategy over two logical CPU devices and
MultiWorkerMirroredStrategy with two worker processes on loopback must reach the same weights as
one process with the same global batch (2 steps of SGD with momentum, global batch 4, 64x64 input,
mosaic and mixup on).

The training runs use --freeze-bn: with batch statistics, Keras' synchronized batch-norm computes
the variance as E[x^2] - E[x]^2 over the replicas, which on 2-image, 2x2-pixel tensors differs from
the one-process two-pass variance enough (float32) to move single updates by several per cent.
With the batch-norms fixed the runs agree to about 1e-4 of each update; the data split, gradient
reduction, learning rate and optimizer state are what that test checks. Batch-norm synchronisation
is checked on its own, without --freeze-bn: one training-mode forward pass of the same global
batch through the trainer's model under the mirrored strategy and in one process must give the
same heads and the same moving statistics.

Nothing here depends on the machine's speed: the timeout only catches a hang, and a worker port
taken between picking it and TensorFlow binding it (the port is free when picked, then released)
is retried with new ports."""

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from utils.data.demo import write_demo_dataset

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]
HANG_TIMEOUT = 1800  # seconds; three TensorFlow processes share the CPU, so this is no speed limit
BIND_FAILURE = "Could not start gRPC server"  # what TensorFlow says when a worker's port is taken
PORT_ATTEMPTS = 3

# argv: number of logical CPU devices, then (strategy, save dir) pairs; the train.py flags come from
# TRAIN_FLAGS. With BN_CHECK (a .npz path) it runs the batch-norm check (bn_check below) instead: a
# process cannot hold two MirroredStrategy runs (their collective ops' keys collide).
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
if os.environ.get("BN_CHECK"):
    from tests.test_train_strategies import bn_check
    bn_check([f for f in flags if f != "--freeze-bn"], os.environ["BN_CHECK"])
"""


def bn_check(flags, path):
    """Set up the trainer without --freeze-bn in one process and under MirroredStrategy (two
    replicas), run one training-mode forward pass of the same 4 images through each model (2 per
    replica), and save the heads, every batch-norm's moving statistics and `synchronized` flag."""
    import argparse

    import tensorflow as tf

    from utils.training.config import add_arguments, config_from_args
    from utils.training.trainer import Trainer

    images = np.random.default_rng(0).uniform(0, 1, (4, 64, 64, 3)).astype(np.float32)
    arrays = {}
    for strategy in ("none", "mirrored"):
        parser = argparse.ArgumentParser()
        add_arguments(parser)
        argv = [*flags, "--strategy", strategy, "--save-dir", f"{path}.{strategy}"]
        trainer = Trainer(config_from_args(parser.parse_args(argv)))
        trainer.setup()
        distribute = trainer.strategy
        batches = distribute.experimental_distribute_dataset(tf.data.Dataset.from_tensor_slices(images).batch(4))

        @tf.function
        def forward(batch, model=trainer.model, distribute=distribute):
            return distribute.run(lambda x: model(x, training=True), args=(batch,))

        for i, head in enumerate(forward(next(iter(batches)))):
            parts = [np.asarray(h) for h in distribute.experimental_local_results(head)]
            arrays[f"{strategy}_head{i}"] = np.concatenate(parts)
        arrays[f"{strategy}_synchronized"] = np.array([layer.synchronized for layer in trainer.bn_layers])
        for i, layer in enumerate(trainer.bn_layers):
            arrays[f"{strategy}_mean{i}"] = layer.moving_mean.numpy()
            arrays[f"{strategy}_variance{i}"] = layer.moving_variance.numpy()
    np.savez(path, **arrays)


def _free_port() -> int:
    """A port free right now; released again, so TensorFlow may find it taken (then retried)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_demo_dataset(tmp_path_factory.mktemp("shapes"), splits={"train": 8}, image_size=64, seed=5)


def _start(data, runs, log, devices=1, tf_config=None, bn_check_path=None, extra=()):
    flags = [
        "--phi", "0", "--data", str(data), "--classes", str(data / "classes.txt"), "--input-size", "64",
        "--epochs", "1", "--steps-per-epoch", "2", "--batch-size", "4", "--optimizer", "sgd", "--lr", "0.01",
        "--eval-period", "0", "--save-period", "0", "--mosaic", "0.5", "--mixup", "0.5", "--seed", "3", "--freeze-bn",
        "--patience", "5",  # never reached in one epoch; the workers take the chief's stop decision (a collective)
        "--precision", "float32",  # compared to float32's rounding: not auto's bfloat16 on CPUs with AMX
        *extra,
    ]  # fmt: skip
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": str(ROOT), "TRAIN_FLAGS": json.dumps(flags)}
    env.pop("TF_CONFIG", None)
    env.pop("BN_CHECK", None)
    if tf_config is not None:
        env["TF_CONFIG"] = json.dumps(tf_config)
    if bn_check_path is not None:
        env["BN_CHECK"] = str(bn_check_path)
    args = [str(a) for run in runs for a in run]
    with open(log, "w") as out:  # a file, not a pipe: nothing blocks however much a process prints
        process = subprocess.Popen(
            [sys.executable, "-c", RUNNER, str(devices), *args], cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT
        )
    process.log = Path(log)
    return process


def _wait(processes, deadline):
    """Until every process has ended, or one failed (the others are then killed: a worker whose peer
    died would wait for it for ever), or the deadline passed (a hang: the test fails)."""
    while True:
        codes = [p.poll() for p in processes]
        if all(c is not None for c in codes) or any(c not in (None, 0) for c in codes):
            break
        if time.monotonic() > deadline:
            _kill(processes)
            pytest.fail("hung: " + "; ".join(p.log.read_text()[-2000:] for p in processes))
        time.sleep(0.5)
    _kill(processes)


def _kill(processes):
    for p in processes:
        if p.poll() is None:
            p.kill()
            p.wait()


@pytest.fixture(scope="module")
def runs(data, tmp_path_factory):
    """The one-process and mirrored runs (one process, 2 logical CPUs) and two multi-worker
    processes beside it; then the batch-norm check (2 logical CPUs). Returns their output folder."""
    tmp = tmp_path_factory.mktemp("runs")
    deadline = time.monotonic() + HANG_TIMEOUT
    local = _start(data, [("none", tmp / "single"), ("mirrored", tmp / "mirrored")], tmp / "local.log", devices=2)
    bn = None
    try:
        for attempt in range(PORT_ATTEMPTS):
            cluster = {"worker": [f"localhost:{_free_port()}", f"localhost:{_free_port()}"]}
            workers = [
                _start(data, [("multi-worker", tmp / f"worker{i}")], tmp / f"worker{i}.{attempt}.log",
                       tf_config={"cluster": cluster, "task": {"type": "worker", "index": i}})
                for i in range(2)
            ]  # fmt: skip
            _wait(workers, deadline)
            logs = [w.log.read_text() for w in workers]
            if all(w.returncode == 0 for w in workers):
                break
            if not any(BIND_FAILURE in log for log in logs) or attempt + 1 == PORT_ATTEMPTS:
                pytest.fail("a worker failed:\n" + "\n".join(log[-3000:] for log in logs))
        (tmp / "workers.log").write_text(logs[0])
        bn = _start(data, [], tmp / "bn.log", devices=2, bn_check_path=tmp / "bn.npz")
        _wait([local, bn], deadline)
        for process in (local, bn):
            assert process.returncode == 0, process.log.read_text()[-3000:]
    finally:
        _kill([local] if bn is None else [local, bn])
    return tmp


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


def _average(save_dir):
    """The weight average in the run's checkpoint (what last.keras holds) and its update count."""
    with np.load(save_dir / "checkpoint.npz") as checkpoint:
        meta = json.loads(str(checkpoint["meta"]))
        return [checkpoint[f"ema_{i}"] for i in range(sum(k.startswith("ema_") for k in checkpoint.files))], meta


def test_the_weight_average_is_the_same_under_every_strategy(runs):
    """The EMA is updated per replica, after each of the two steps: the same as in one process."""
    single, meta = _average(runs / "single")
    assert meta["state"]["ema_updates"] == 2
    for other in ("mirrored", "worker0"):
        average, other_meta = _average(runs / other)
        assert other_meta["state"]["ema_updates"] == 2
        _assert_same(keras_initial_weights(), single, average)
    for a, b in zip(single, _weights(runs / "single"), strict=True):
        np.testing.assert_array_equal(a, b)


def test_mirrored_and_multi_worker_match_one_process(runs):
    local_out = (runs / "local.log").read_text()
    assert "1 replica(s)" in local_out and "2 replica(s)" in local_out
    assert "2 replica(s)" in (runs / "workers.log").read_text()
    single = _weights(runs / "single")
    initial = keras_initial_weights()
    # The runs moved the weights, so agreement below is not trivial.
    assert max(float(np.abs(a - b).max()) for a, b in zip(single, initial, strict=True)) > 1e-3
    _assert_same(initial, single, _weights(runs / "mirrored"))
    assert not (runs / "worker1" / "last.keras").exists()  # only the chief writes
    _assert_same(initial, single, _weights(runs / "worker0"))


def test_batch_norm_is_synchronised_across_replicas(runs):
    """Without --freeze-bn, two replicas of 2 images normalise with the statistics of all 4 and
    update the moving statistics as one process on the 4 images does."""
    with np.load(runs / "bn.npz") as bn:
        arrays = dict(bn)
    flags = arrays["mirrored_synchronized"]
    differences = {}  # relative to the one-process value (moving statistics: to their update)
    for i in range(len(flags)):
        for kind, start in (("mean", 0.0), ("variance", 1.0)):
            one, two = arrays[f"none_{kind}{i}"], arrays[f"mirrored_{kind}{i}"]
            differences[f"{kind}{i}"] = float(np.linalg.norm(two - one) / np.linalg.norm(one - start))
    for i in range(2):
        one, two = arrays[f"none_head{i}"], arrays[f"mirrored_head{i}"]
        differences[f"head{i}"] = float(np.abs(two - one).max() / np.abs(one).max())
    assert max(differences.values()) < 1e-4, differences  # measured up to 7e-6
    assert len(flags) == 19 and flags.all() and not arrays["none_synchronized"].any()


def keras_initial_weights():
    import keras

    from nets.yolo import YoloV4Tiny
    from utils.training.trainer import init_head_biases

    keras.utils.set_random_seed(3)
    model = YoloV4Tiny(3, input_shape=(64, 64, 3))
    init_head_biases(model, (64, 64))
    return model.get_weights()


def test_mean_normalisation_counts_the_global_batch(data, tmp_path):
    """--loss-normalization mean divides by the positives and cells of the global batch (all-reduced
    over the replicas): two replicas reach the one-process weights. Dividing by each replica's own
    counts would roughly double every update."""
    log = tmp_path / "mean.log"
    process = _start(data, [("none", tmp_path / "single"), ("mirrored", tmp_path / "mirrored")], log, devices=2,
                     extra=("--loss-normalization", "mean"))  # fmt: skip
    _wait([process], time.monotonic() + HANG_TIMEOUT)
    assert process.returncode == 0, log.read_text()[-3000:]
    single, initial = _weights(tmp_path / "single"), keras_initial_weights()
    assert max(float(np.abs(a - b).max()) for a, b in zip(single, initial, strict=True)) > 1e-6
    _assert_same(initial, single, _weights(tmp_path / "mirrored"))
