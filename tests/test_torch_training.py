"""Training on Keras' torch backend, without TensorFlow (utils/training/torch_steps.py).

The training of tests/test_jax_training.py (a frozen-backbone epoch, then an unfrozen one, from the
same initial weights) in a subprocess with KERAS_BACKEND=torch in which `import tensorflow` fails:
it ends where TensorFlow's ends to float32's rounding, and a run resumed after a kill after epoch 1
ends bit for bit where the uninterrupted one ends. Skipped where torch is not installed (it is not
in requirements-dev.txt: PyPI's torch brings several GB of CUDA libraries).
"""

import json
import os
import subprocess
import sys

import pytest

from tests.test_jax_training import (
    ROOT,
    _argv,
    _checkpoint,
    compare_with_tensorflow,
    data,
    init,
    tensorflow_run,
    train_script,
)

pytestmark = pytest.mark.slow
__all__ = ["data", "init", "tensorflow_run"]  # the fixtures, shared with the JAX test

# On torch; afterwards --strategy mirrored is refused (one device there), its folder not made.
TORCH_TRAIN = train_script(
    checks='assert keras.backend.backend() == "torch", keras.backend.backend()\n',
    after='mirrored = [*argvs[0][:-2], "--save-dir", str(out / "mirrored"), "--strategy", "mirrored"]\n'
    "assert train.main(mirrored) == 2\n",
)


@pytest.fixture(scope="module")
def torch_runs(data, init, tmp_path_factory):
    """The torch subprocess's folder (full/ and after_one/, resumed) and its stderr, after it ran."""
    pytest.importorskip("torch", reason="torch is not installed: training on Keras' torch backend is not checked")
    out = tmp_path_factory.mktemp("torch")
    runs = json.dumps([_argv(data, init, out / "full"), _argv(data, init, out / "after_one", "--resume")])
    done = subprocess.run(
        [sys.executable, "-c", TORCH_TRAIN, str(out), runs],
        cwd=ROOT, env={**os.environ, "KERAS_BACKEND": "torch", "PYTHONPATH": str(ROOT)},
        capture_output=True, text=True, timeout=1800,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
    return out, done.stderr


def test_torch_trains_as_tensorflow_does(torch_runs, tensorflow_run, init):
    compare_with_tensorflow(torch_runs[0] / "full", tensorflow_run, init)


def test_a_resumed_torch_run_ends_bit_for_bit_where_the_uninterrupted_one_ends(torch_runs):
    out, _ = torch_runs
    got, got_meta = _checkpoint(out / "after_one")
    want, want_meta = _checkpoint(out / "full")
    assert sorted(got) == sorted(want)
    for key in want:
        assert (got[key] == want[key]).all(), key
    assert got_meta == want_meta


def test_a_torch_run_writes_its_files_and_refuses_several_devices(torch_runs):
    out, stderr = torch_runs
    settings = json.loads((out / "full" / "settings.json").read_text())
    assert settings["keras_backend"] == "torch" and "torch" in settings and "tensorflow" not in settings
    for name in ("last.keras", "best.keras", "results.csv", "history.json", "loss.png", "map.png"):
        assert (out / "full" / name).is_file(), name
    assert "--strategy mirrored trains on TensorFlow and JAX" in stderr and not (out / "mirrored").exists()
