"""Shared test set-up: quiet TensorFlow, make the project importable from any directory, keep
the ONNX exports of .keras models out of the user's cache, and keep OpenVINO from phoning home."""

import os
import sys
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# Importing OpenVINO (tests/utils/interop/test_openvino.py) sends Intel's usage telemetry and writes
# ~/intel/ unless a CI is detected; CI=true is its only switch that needs no file in the home folder.
os.environ.setdefault("CI", "true")
# The default path times ONNX Runtime against OpenVINO on each machine (utils/interop/cpu_runtime.py):
# the tests pin ONNX Runtime, so that what they assert does not depend on the machine;
# tests/utils/interop/test_cpu_runtime.py tests the choice itself.
os.environ["YOLO_CPU_RUNTIME"] = "onnx"
# And as on a CPU without native bfloat16 (AMX, AVX512-BF16), where --precision auto is float32: what
# the tests assert is then the same on every CPU; tests/utils/inference/test_precision.py tests the choice.
os.environ["YOLO_CPU_BFLOAT16"] = "0"
ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


@pytest.fixture(autouse=True, scope="session")
def onnx_cache_in_a_temporary_folder(tmp_path_factory):
    """Every test (and every script a test starts) keeps the ONNX exports of .keras models
    (utils/interop/cache.py) in one temporary folder for the session, never in ~/.cache."""
    previous = os.environ.get("YOLO_CACHE_DIR")
    os.environ["YOLO_CACHE_DIR"] = str(tmp_path_factory.mktemp("onnx_cache"))
    yield
    if previous is None:
        os.environ.pop("YOLO_CACHE_DIR", None)
    else:
        os.environ["YOLO_CACHE_DIR"] = previous


@pytest.fixture(autouse=True)
def library_logging_as_an_embedding_program_finds_it():
    """A script's main() configures the `yolov4_tiny` logger (utils.cli.setup_logging: its own
    stderr handler, no propagation); afterwards it is as importing the library leaves it, so the
    next test's caplog (on the root logger) sees the library's messages again."""
    import logging

    logger = logging.getLogger("yolov4_tiny")
    handlers, level, propagate = list(logger.handlers), logger.level, logger.propagate
    yield
    logger.handlers[:] = handlers
    logger.setLevel(level)
    logger.propagate = propagate
