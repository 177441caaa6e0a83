"""Training on the JAX backend of Keras, without TensorFlow (utils/training/jax_steps.py).

A subprocess with KERAS_BACKEND=jax, in which `import tensorflow` fails as where it is not
installed, trains a tiny shapes set from the same initial weights as this (TensorFlow) process: a
frozen-backbone epoch with its own batch size, then an unfrozen one, the weight average, the val
loss and mAP, every file. Its weights, average, batch-norm statistics and optimizer slots equal
TensorFlow's to float32's rounding; a run resumed from the folder a kill after epoch 1 leaves ends
bit for bit where the uninterrupted JAX run ends; its best.keras loads and detects under either
backend. `YoloDataset.batches` (the NumPy pipeline JAX trains on) gives tf.data's batches exactly.
"""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import keras
import numpy as np
import pytest

from nets.yolo import YoloV4Tiny
from tests.test_backends import NO_TENSORFLOW
from utils.data.dataset import YoloDataset
from utils.data.demo import write_demo_dataset
from utils.data.sources import open_data
from utils.training.trainer import take_batches

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]


def _argv(data, init, save_dir, *extra):
    return [
        "--phi", "4", "--data", str(data), "--classes", str(data / "classes.txt"), "--input-size", "64",
        "--weights", str(init), "--epochs", "2", "--freeze-epochs", "1", "--batch-size", "4",
        "--freeze-batch-size", "2", "--eval-period", "1", "--save-period", "0", "--seed", "3",
        "--mosaic", "0.5", "--save-dir", str(save_dir),
        "--precision", "float32",  # compared to float32's rounding: not auto's bfloat16 on CPUs with AMX
        *extra,
    ]  # fmt: skip


def train_script(checks: str, after: str) -> str:
    """The source of a subprocess that trains as this module's tests do, with `import tensorflow`
    failing (argv: the output folder, then the JSON of _argv's lists, full/ and after_one/ first):
    `checks` (of the backend), the full run with a copy of its folder right after epoch 1 (what a
    kill then leaves), that copy resumed, then `after`. (Also tests/test_torch_training.py's.)"""
    return (
        NO_TENSORFLOW
        + """
import argparse
import json
import shutil
from pathlib import Path

import keras
import train
from utils.training.callbacks import Callback
from utils.training.config import add_arguments, config_from_args
from utils.training.trainer import Trainer

out = Path(sys.argv[1])
argvs = json.loads(sys.argv[2])
"""
        + checks
        + """

class CopyAfterFirstEpoch(Callback):
    def on_epoch_end(self, trainer, epoch, logs):
        if epoch == 0:
            shutil.copytree(trainer.save_dir, out / "after_one")


parser = argparse.ArgumentParser()
add_arguments(parser)
Trainer(config_from_args(parser.parse_args(argvs[0])), callbacks=[CopyAfterFirstEpoch()]).run()
assert train.main(argvs[1]) == 0
"""
        + after
    )


# On JAX with two CPU devices; afterwards the full run again split over them (--strategy mirrored:
# mirrored/, the JSON's third list).
JAX_TRAIN = train_script(
    checks="""
assert keras.backend.backend() == "jax", keras.backend.backend()
assert len(keras.distribution.list_devices()) == 2, keras.distribution.list_devices()
""",
    after="assert train.main(argvs[2]) == 0\n",
)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_demo_dataset(tmp_path_factory.mktemp("shapes"), splits={"train": 8, "val": 4}, image_size=64, seed=2)


@pytest.fixture(scope="module")
def init(tmp_path_factory):
    """Initial weights with batch-norm statistics away from 0 and 1, so that their updates show."""
    from tests.layer_checks import randomise_batch_norms

    keras.utils.set_random_seed(5)
    model = YoloV4Tiny(3, attention="ca", input_shape=(64, 64, 3))
    randomise_batch_norms(model, seed=5)
    path = tmp_path_factory.mktemp("init") / "init.keras"
    model.save(path)
    return path


@pytest.fixture(scope="module")
def tensorflow_run(data, init, tmp_path_factory):
    import train

    save_dir = tmp_path_factory.mktemp("tensorflow") / "run"
    assert train.main(_argv(data, init, save_dir)) == 0
    return save_dir


def _jax_env(devices: int, **more) -> dict:
    """The environment of a JAX subprocess on the CPU, with `devices` CPU devices."""
    return {**os.environ, "KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(ROOT),
            "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}", **more}  # fmt: skip


@pytest.fixture(scope="module")
def jax_runs(data, init, tmp_path_factory):
    """The JAX subprocess's folder (full/ and after_one/, resumed), after it ran."""
    pytest.importorskip("jax", reason="JAX is not installed (pip install jax): training on JAX is not checked")
    out = tmp_path_factory.mktemp("jax")
    env = _jax_env(devices=2)
    runs = [_argv(data, init, out / "full"), _argv(data, init, out / "after_one", "--resume")]
    runs = json.dumps([*runs, _argv(data, init, out / "mirrored", "--strategy", "mirrored")])
    done = subprocess.run(
        [sys.executable, "-c", JAX_TRAIN, str(out), runs],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=1800,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
    return out, done.stderr


# One process of --strategy multi-worker on JAX (argv: the JSON of train.py's argv); the environment
# names the coordinator, the number of processes and this one's index.
JAX_PROCESS = NO_TENSORFLOW + """
import json
import train
sys.exit(train.main(json.loads(sys.argv[1])))
"""
PORT_ATTEMPTS = 3


@pytest.fixture(scope="module")
def jax_processes(data, init, tmp_path_factory):
    """Two JAX processes on loopback, one CPU device each, training as one (--strategy
    multi-worker): their folders process0/ (the chief's) and process1/."""
    pytest.importorskip("jax", reason="JAX is not installed (pip install jax): training on JAX is not checked")
    from tests.test_train_strategies import _free_port, _wait

    out = tmp_path_factory.mktemp("jax_processes")
    deadline = time.monotonic() + 1800
    for attempt in range(PORT_ATTEMPTS):
        address = f"localhost:{_free_port()}"
        processes = []
        for index in range(2):
            env = _jax_env(devices=1, KERAS_DISTRIBUTION_JOB_ADDRESSES=address, KERAS_DISTRIBUTION_NUM_PROCESSES="2",
                           KERAS_DISTRIBUTION_PROCESS_ID=str(index))  # fmt: skip
            argv = _argv(data, init, out / f"process{index}", "--strategy", "multi-worker", "--exist-ok")
            log = out / f"process{index}.{attempt}.log"
            with open(log, "w") as sink:  # a file, not a pipe: nothing blocks however much it prints
                process = subprocess.Popen([sys.executable, "-c", JAX_PROCESS, json.dumps(argv)], cwd=ROOT, env=env,
                                           stdout=sink, stderr=subprocess.STDOUT)  # fmt: skip
            process.log = log
            processes.append(process)
        _wait(processes, deadline)
        logs = [p.log.read_text() for p in processes]
        if all(p.returncode == 0 for p in processes):
            return out, logs
        if not any("address already in use" in log.lower() for log in logs) or attempt + 1 == PORT_ATTEMPTS:
            pytest.fail("a JAX process failed:\n" + "\n".join(log[-3000:] for log in logs))


def _checkpoint(folder):
    with np.load(folder / "checkpoint.npz") as checkpoint:
        arrays = {k: checkpoint[k] for k in checkpoint.files if k != "meta"}
        return arrays, json.loads(str(checkpoint["meta"]))


def compare_with_tensorflow(folder, tensorflow_run, init) -> None:
    """Weights, average, batch-norm statistics and optimizer slots after the frozen and the unfrozen
    epoch: TensorFlow's to float32's rounding. Training moved them (the frozen backbone did not
    move in its epoch, which the two agree on). (Also tests/test_torch_training.py's.)"""
    got, got_meta = _checkpoint(folder)
    want, want_meta = _checkpoint(tensorflow_run)
    assert sorted(got) == sorted(want)
    assert got_meta["epochs_done"] == want_meta["epochs_done"] == 2
    assert got_meta["state"]["ema_updates"] == want_meta["state"]["ema_updates"] == 4 + 2  # steps: 8/2, then 8/4
    for key in want:
        np.testing.assert_allclose(got[key], want[key], rtol=2e-3, atol=2e-5, err_msg=key)
    start = keras.saving.load_model(init).get_weights()
    assert any(not np.allclose(start[i], want[f"model_{i}"]) for i in range(len(start)))
    assert got_meta["history"]["loss"] == pytest.approx(want_meta["history"]["loss"], rel=1e-3)
    assert got_meta["history"]["map_epochs"] == [1, 2]


def test_jax_trains_as_tensorflow_does(tensorflow_run, jax_runs, init):
    compare_with_tensorflow(jax_runs[0] / "full", tensorflow_run, init)


def test_a_resumed_jax_run_ends_bit_for_bit_where_the_uninterrupted_one_ends(jax_runs):
    out, _ = jax_runs
    got, got_meta = _checkpoint(out / "after_one")
    want, want_meta = _checkpoint(out / "full")
    assert sorted(got) == sorted(want)
    for key in want:
        np.testing.assert_array_equal(got[key], want[key], err_msg=key)
    assert got_meta == want_meta


def test_jax_data_parallel_over_two_devices_trains_as_one_device_does(jax_runs):
    """--strategy mirrored on JAX: each batch split over two CPU devices, the variables replicated;
    the same training as on one device (global-batch loss and batch-norm statistics), to float32
    rounding."""
    out, _ = jax_runs
    got, got_meta = _checkpoint(out / "mirrored")
    want, want_meta = _checkpoint(out / "full")
    assert sorted(got) == sorted(want)
    for key in want:
        np.testing.assert_allclose(got[key], want[key], rtol=2e-3, atol=2e-5, err_msg=key)
    assert got_meta["history"]["loss"] == pytest.approx(want_meta["history"]["loss"], rel=1e-4)
    assert json.loads((out / "mirrored" / "settings.json").read_text())["num_replicas"] == 2


def test_jax_processes_on_loopback_train_as_one_device_does(jax_processes, jax_runs):
    """--strategy multi-worker on JAX: two processes, each loading its share of every batch, train
    as one device does on the whole batch, to float32 rounding; the chief alone evaluates and
    writes."""
    out, logs = jax_processes
    got, got_meta = _checkpoint(out / "process0")
    want, want_meta = _checkpoint(jax_runs[0] / "full")
    assert sorted(got) == sorted(want)
    for key in want:
        np.testing.assert_allclose(got[key], want[key], rtol=2e-3, atol=2e-5, err_msg=key)
    assert got_meta["history"]["loss"] == pytest.approx(want_meta["history"]["loss"], rel=1e-4)
    assert got_meta["history"]["map_epochs"] == [1, 2]
    assert json.loads((out / "process0" / "settings.json").read_text())["num_replicas"] == 2
    assert not (out / "process1" / "last.keras").exists()
    assert "2 replica(s)" in logs[0]


def test_a_jax_run_writes_its_files_and_says_what_it_cannot(jax_runs):
    out, stderr = jax_runs
    folder = out / "full"
    for name in ("settings.json", "last.keras", "best.keras", "results.csv", "history.json", "loss.png", "map.png"):
        assert (folder / name).is_file(), name
    settings = json.loads((folder / "settings.json").read_text())
    assert settings["keras_backend"] == "jax" and "jax" in settings and "tensorflow" not in settings
    assert "no TensorBoard logs" in stderr and not (folder / "tensorboard").exists()
    assert "UserWarning" not in stderr, stderr[-3000:]  # e.g. JAX truncating an int64 counter to int32


def test_best_keras_trained_on_jax_detects_on_tensorflow(jax_runs, data):
    from utils.data.images import load_image
    from utils.inference.engine.loader import load_detector

    detector = load_detector(jax_runs[0] / "full" / "best.keras", backend="keras", conf=0.001)
    [found] = detector.detect([load_image(next((data / "JPEGImages").glob("*.jpg")))])
    assert len(found) > 0  # a working model of ours (the scores of a 2-epoch model are low, not absent)


def test_numpy_batches_are_the_tf_data_batches(data):
    """One batcher for every backend: tf.data carries TensorFlow's batches unchanged from the NumPy
    batches JAX and torch train on (the same plan, samples and order), a corrupt image left out by
    both; stopping early cancels the rest."""
    items = open_data(data).read(["train"], ["circle", "square", "triangle"]).images
    broken = items[3].path
    Path(broken).with_suffix(".bak").write_bytes(Path(broken).read_bytes())
    Path(broken).write_bytes(b"not an image")
    try:
        # Two data sets: the corrupt image found in epoch 0 is left out of each one's later plans.
        numpy_side, tf_side = (YoloDataset(items, (64, 64), mosaic_prob=0.5, seed=4) for _ in range(2))
        for epoch in (0, 1):
            got = list(numpy_side.batches(3, epoch=epoch, num_parallel_calls=3))
            want = list(tf_side.dataset(3, epoch=epoch, num_parallel_calls=3).as_numpy_iterator())
            assert len(got) == len(want) > 0
            for (got_images, got_gt), (want_images, want_gt) in zip(got, want, strict=True):
                np.testing.assert_array_equal(got_images, want_images)
                np.testing.assert_array_equal(got_gt, want_gt)
        assert numpy_side.corrupt_images == tf_side.corrupt_images == [broken]
        assert len(list(take_batches(numpy_side.batches(2, epoch=2), 1))) == 1
    finally:
        Path(broken).write_bytes(Path(broken).with_suffix(".bak").read_bytes())


def test_multi_worker_on_jax_names_what_the_environment_lacks(monkeypatch):
    pytest.importorskip("jax", reason="JAX is not installed (pip install jax)")
    from utils.training.config import ConfigError
    from utils.training.jax_steps import PROCESS_VARIABLES, start_processes

    for name in PROCESS_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("KERAS_DISTRIBUTION_NUM_PROCESSES", "2")
    with pytest.raises(ConfigError, match="KERAS_DISTRIBUTION_JOB_ADDRESSES, KERAS_DISTRIBUTION_PROCESS_ID"):
        start_processes()
