"""benchmarks/gpu_check.sh on a machine without a GPU: one clear "no GPU" line, exit status 0; its
JAX part (gpu_check_jax.py) says so too, and runs on the CPU when allowed, without TensorFlow."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _has_gpu() -> bool:
    if shutil.which("nvidia-smi") is None:
        return False
    return subprocess.run(["nvidia-smi", "-L"], capture_output=True).returncode == 0


@pytest.mark.skipif(_has_gpu(), reason="a GPU is present: the script would measure it")
def test_gpu_check_says_no_gpu_and_exits_0():
    done = subprocess.run(
        ["bash", str(ROOT / "benchmarks" / "gpu_check.sh")],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", "PYTHON": sys.executable},
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("no GPU:")


@pytest.mark.skipif(_has_gpu(), reason="a GPU is present")
def test_gpu_check_python_part_says_no_gpu():
    # Where nvidia-smi exists but neither TensorFlow nor ONNX Runtime can use a GPU.
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "gpu_check.py")], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 10, done.stderr
    assert "no GPU: TensorFlow sees no GPU" in done.stdout


def _jax_check(*args):
    from tests.test_backends import NO_TENSORFLOW

    pytest.importorskip("jax", reason="JAX is not installed")
    script = NO_TENSORFLOW + "import runpy\nsys.argv = sys.argv[1:]\nrunpy.run_path(sys.argv[0], run_name='__main__')\n"
    return subprocess.run(
        [sys.executable, "-c", script, str(ROOT / "benchmarks" / "gpu_check_jax.py"), *args],
        capture_output=True, text=True, timeout=900, cwd=ROOT,
        env={**os.environ, "KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(ROOT)},
    )  # fmt: skip


@pytest.mark.skipif(_has_gpu(), reason="a GPU is present")
def test_gpu_check_jax_says_no_gpu():
    done = _jax_check()
    assert done.returncode == 10, done.stderr[-3000:]
    assert "no GPU: JAX" in done.stdout


@pytest.mark.slow
def test_gpu_check_jax_measures_the_cpu_when_allowed_without_tensorflow():
    # bfloat16 only: float32 on JAX is what tests/test_backends.py and test_jax_training.py run.
    argv = ["--allow-cpu", "--size", "64", "--runs", "1", "--batch-size", "2", "--steps", "1", "--no-demo"]
    done = _jax_check(*argv, "--precisions", "bfloat16")
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    expected = ["predict JAX bfloat16 batch  1", "predict JAX bfloat16 batch 32"]
    expected += ["train JAX bfloat16 batch 2, 64x64, bare step", "train JAX bfloat16 batch 2, with the input pipeline"]
    for line in expected:
        assert line in done.stdout, done.stdout
