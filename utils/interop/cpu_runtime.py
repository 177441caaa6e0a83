"""Which runtime runs a `.keras` model's cached ONNX export fastest on this CPU.

A `.keras` model loaded without a backend runs on a CPU through its ONNX export (utils/interop/cache.py).
ONNX Runtime runs that file, and so does OpenVINO when it is installed (`pip install openvino`).
Which of the two is faster depends on the CPU: OpenVINO's kernels are Intel's, tuned for its
vector units, ONNX Runtime's are generic (on the 2-core AMD EPYC with AVX2 the project is built on
they were level, `export.py --benchmark`: docs/benchmarks.md). So the first time an export runs on
a machine both runtimes are timed on it, `ROUNDS` batch-1 forwards each after `WARMUP`, taking
turns, and OpenVINO runs it when its median is at least `MARGIN` below ONNX Runtime's (less is
within what a shared machine's noise moves the medians by). The verdict is kept beside the export
(`cache.verdict_path`) with what it holds for: the CPU, the threads and both runtimes' versions;
when one of them differs, the runtimes are timed again. Deleting it is always safe.
$YOLO_CPU_RUNTIME pins the choice for every run: onnx or openvino (auto, the default, times them).

    choice = choose_runtime(export_path, onnx_forward, input_hw=(256, 256), threads=2)
    choice.runtime, choice.forward          # "onnx" or "openvino", and its raw forward
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import numpy as np

from utils.errors import YoloError
from utils.files import atomic_write
from utils.interop import cache
from utils.interop.backends import OpenVINOForward, default_threads

logger = logging.getLogger("yolov4_tiny.inference")
RUNTIME_ENV = "YOLO_CPU_RUNTIME"
CHOICES = ("auto", "onnx", "openvino")
ROUNDS = 15
WARMUP = 3
# OpenVINO replaces ONNX Runtime when its median is at least this share below ONNX Runtime's.
MARGIN = 0.10


class RuntimeEnvError(YoloError, ValueError):
    """$YOLO_CPU_RUNTIME holds something else than auto, onnx or openvino."""


def check_runtime_env() -> str:
    """$YOLO_CPU_RUNTIME as "auto" (unset or empty), "onnx" or "openvino"; RuntimeEnvError otherwise."""
    value = os.environ.get(RUNTIME_ENV, "auto").strip().lower() or "auto"
    if value not in CHOICES:
        raise RuntimeEnvError(f"{RUNTIME_ENV}={value!r}: expected one of {', '.join(CHOICES)} (or unset)")
    return value


@dataclass
class RuntimeChoice:
    """The runtime that runs an export here ("onnx" or "openvino"), its raw forward, the medians the
    choice rests on (ms, batch 1; None when not timed) and why, in words."""

    runtime: str
    forward: object
    onnx_ms: float | None = None
    openvino_ms: float | None = None
    why: str = ""


def openvino_installed() -> bool:
    return importlib.util.find_spec("openvino") is not None


def cpu_name() -> str:
    """The CPU's model name (/proc/cpuinfo on Linux), else what `platform` says."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_signature(threads: int) -> dict:
    """What a verdict holds for: the CPU, the threads, both runtimes' versions."""
    versions = {}
    for package in ("onnxruntime", "openvino"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    return {"cpu": cpu_name(), "threads": threads, **versions}


def time_forwards(
    forwards: dict[str, Callable], images: np.ndarray, rounds: int = ROUNDS, warmup: int = WARMUP,
    clock: Callable[[], float] = time.perf_counter,
) -> dict[str, float]:  # fmt: skip
    """Median ms of each forward on `images`, the forwards taking turns within each round (a load
    that comes and goes on a shared machine falls on all of them alike)."""
    for forward in forwards.values():
        for _ in range(warmup):
            forward(images)
    times: dict[str, list[float]] = {name: [] for name in forwards}
    for _ in range(rounds):
        for name, forward in forwards.items():
            start = clock()
            forward(images)
            times[name].append(clock() - start)
    return {name: 1000.0 * statistics.median(values) for name, values in times.items()}


def _read_verdict(path: Path, signature: dict) -> dict | None:
    try:
        verdict = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(verdict, dict) or verdict.get("signature") != signature:
        return None
    timed = [verdict.get(key) for key in ("onnx_ms", "openvino_ms")]
    if any(value is not None and not isinstance(value, (int, float)) for value in timed):
        return None  # edited by hand: timed again
    return verdict if verdict.get("runtime") in ("onnx", "openvino") else None


def _write_verdict(path: Path, verdict: dict) -> None:
    try:
        atomic_write(path, lambda temp: Path(temp).write_text(json.dumps(verdict, indent=2) + "\n", encoding="utf-8"))
    except OSError as err:  # a cache that cannot be written: the choice holds for this run only
        logger.debug(f"{path}: cannot keep the runtime verdict ({err})")


def choose_runtime(
    export: str | Path,
    onnx_forward,
    input_hw: tuple[int, int],
    threads: int | None = None,
    clock: Callable[[], float] = time.perf_counter,
    load_openvino: Callable[[Path, int | None], object] = OpenVINOForward,
) -> RuntimeChoice:
    """The faster runtime for the cached ONNX export `export` here, ONNX Runtime's forward
    (`onnx_forward`, already loaded) or OpenVINO's (see the module docstring). Without OpenVINO,
    or when it cannot run the file (or does not import), ONNX Runtime. $YOLO_CPU_RUNTIME onnx or
    openvino: that one (RuntimeEnvError for another value; ValueError when a pinned OpenVINO
    cannot run the file, MissingRuntimeError when it is not installed)."""
    export = Path(export)
    pinned = check_runtime_env()
    if pinned == "onnx":
        return RuntimeChoice("onnx", onnx_forward, why=f"{RUNTIME_ENV}=onnx")
    if pinned == "openvino":
        return RuntimeChoice("openvino", load_openvino(export, threads), why=f"{RUNTIME_ENV}=openvino")
    if not openvino_installed():
        return RuntimeChoice("onnx", onnx_forward, why="OpenVINO is not installed")
    path = cache.verdict_path(export)
    signature = machine_signature(threads or default_threads())
    verdict = _read_verdict(path, signature)
    if verdict is None:
        try:
            openvino = load_openvino(export, threads)
        except (ValueError, ImportError, RuntimeError) as err:  # a broken installation included
            _write_verdict(path, {"runtime": "onnx", "signature": signature, "why": f"OpenVINO cannot run it: {err}"})
            return RuntimeChoice("onnx", onnx_forward, why=f"OpenVINO cannot run it ({err})")
        images = np.zeros((1, *input_hw, 3), np.float32)
        medians = time_forwards({"onnx": onnx_forward, "openvino": openvino}, images, clock=clock)
        runtime = "openvino" if medians["openvino"] <= (1.0 - MARGIN) * medians["onnx"] else "onnx"
        verdict = {"runtime": runtime, "signature": signature, "onnx_ms": medians["onnx"],
                   "openvino_ms": medians["openvino"]}  # fmt: skip
        _write_verdict(path, verdict)
        logger.debug(f"{export}: ONNX Runtime {medians['onnx']:.1f} ms, OpenVINO {medians['openvino']:.1f} ms")
        forward = openvino if runtime == "openvino" else onnx_forward
    elif verdict["runtime"] == "openvino":
        try:
            forward = load_openvino(export, threads)
        except (ValueError, ImportError, RuntimeError) as err:  # it ran here before: timed again next time
            path.unlink(missing_ok=True)
            return RuntimeChoice("onnx", onnx_forward, why=f"OpenVINO cannot run it ({err})")
    else:
        forward = onnx_forward
    onnx_ms, openvino_ms = verdict.get("onnx_ms"), verdict.get("openvino_ms")
    if onnx_ms is None or openvino_ms is None:
        why = verdict.get("why", "")
    else:
        why = f"measured here: ONNX Runtime {onnx_ms:.1f} ms, OpenVINO {openvino_ms:.1f} ms a batch-1 forward"
    return RuntimeChoice(verdict["runtime"], forward, onnx_ms, openvino_ms, why)
