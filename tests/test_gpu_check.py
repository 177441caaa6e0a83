"""benchmarks/gpu_check.sh on a machine without a GPU: one clear "no GPU" line, exit status 0."""

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
