"""The precision of inference: which one is fastest here, and a copy of a model built under a
mixed-precision policy (the heads stay float32, see nets/yolo.py).

`--precision` (predict.py, get_map.py, `load_detector(precision=)`), resolved by
`resolve_inference_precision`:

    auto      bfloat16 on a CPU that computes it natively (AMX or AVX512-BF16: about 2x faster for
              this model, benchmarks/bench_inference.py; its accuracy cost on the learning
              benchmark's test split is in docs/benchmarks.md), run by TensorFlow; float32
              elsewhere (on a CPU: ONNX Runtime, see utils/inference/engine/loader.py), GPUs
              included (float16 there is --half's, not measured as a default)
    float32   float32
    bfloat16, float16
              that mixed precision whatever the machine; where it is emulated (bfloat16 or float16
              on a CPU without AMX / AVX512-BF16) it is slower than float32 and a warning says so:
              there it is for measuring what the precision costs in accuracy, not for speed

int8 is the default path's too where the CPU has int8 dot products (VNNI: AVX512-VNNI, AVX-VNNI
or AMX-INT8; `cpu_has_fast_int8`) and the user gives calibration images (`--calib-data`,
`load_detector(calib_data=)`): a `.keras` model then runs its int8 export (ONNX Runtime's
static QDQ quantisation, calibrated on those images; utils/interop/export.py), made once and
cached (utils/interop/cache.py), on ONNX Runtime or OpenVINO, whichever the default path timed
faster (utils/interop/cpu_runtime.py). Without VNNI the images go unused, with a warning:
there ONNX Runtime's int8 kernels multiply with VPMADDUBSW, whose 16-bit sums can saturate (its
quantisation documentation), so int8 may cost accuracy that VNNI's 32-bit dot products do not.

`--half` asks for the half precision the hardware makes faster (`mixed_precision_policy`):
float16 on a GPU, bfloat16 on AMX / AVX512-BF16 CPUs; elsewhere it warns (the
`yolov4_tiny.inference` logger) and keeps float32. Mixed precision is TensorFlow's only: on the
other Keras backends asking for it raises `TensorFlowRequired`.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import keras

from nets.yolo import YoloV4Tiny
from utils.defaults import PRECISIONS
from utils.errors import YoloError
from utils.inference.detector import on_tensorflow, require_tensorflow

logger = logging.getLogger("yolov4_tiny.inference")


MIXED_POLICIES = {"float16": "mixed_float16", "bfloat16": "mixed_bfloat16"}
# 1 or 0: act as on a CPU with (without) native bfloat16, whatever /proc/cpuinfo says.
CPU_BFLOAT16_VARIABLE = "YOLO_CPU_BFLOAT16"
# 1 or 0: act as on a CPU with (without) int8 dot products (VNNI), whatever /proc/cpuinfo says.
CPU_INT8_VARIABLE = "YOLO_CPU_INT8"


class PrecisionError(YoloError, ValueError):
    """A precision that does not exist, or contradicts --half."""


def resolve_inference_precision(precision: str = "auto", half: bool = False) -> str:
    """"float32", "bfloat16" or "float16": `precision` (see the module docstring) made concrete for
    this machine, or with `half` the half precision that is faster here (float32 where none is, with
    a warning).

    Raises PrecisionError for an unknown precision, or `half` with a precision other than auto.
    """
    if precision not in PRECISIONS:
        raise PrecisionError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if half:
        if precision != "auto":
            raise PrecisionError(f"--half picks the precision itself; it contradicts --precision {precision}")
        require_tensorflow("half precision (--half)")
        precision = half_precision()
        if precision == "float32":
            logger.warning(
                "half precision: this CPU has no fast float16/bfloat16 (AMX or AVX512-BF16); running float32"
            )
        return precision
    if precision != "auto":
        return precision
    # bfloat16 where it is --half's choice: a CPU with AMX / AVX512-BF16 (a GPU's float16 is not measured as a default).
    return "bfloat16" if on_tensorflow() and half_precision() == "bfloat16" else "float32"


def half_precision() -> str:
    """The half precision that is faster than float32 here, as --precision names it: "float16" on a
    GPU, "bfloat16" on a CPU with AMX / AVX512-BF16; "float32" where none is."""
    policy = mixed_precision_policy()
    return next((name for name, mixed in MIXED_POLICIES.items() if mixed == policy), "float32")


def with_precision(model, precision: str):
    """`model` in `precision` (resolved: "float32", "bfloat16" or "float16"): itself for float32,
    else a copy under that mixed-precision policy (`to_mixed_precision`). Warns where the precision
    is emulated (slower than float32).

    Raises TensorFlowRequired for mixed precision on the other Keras backends.
    """
    if precision == "float32":
        return model
    require_tensorflow(f"{precision} inference (--precision {precision})")
    if mixed_precision_policy() is None:
        logger.warning(
            f"{precision}: emulated on this CPU (no AMX or AVX512-BF16), so slower than float32; its detections "
            "are what the precision gives (for measuring its accuracy)"
        )
    return to_mixed_precision(model, MIXED_POLICIES[precision])


def cpu_has_fast_bfloat16() -> bool:
    """True when the CPU has AMX or AVX512-BF16 (oneDNN then runs bfloat16 convolutions fast), or
    YOLO_CPU_BFLOAT16 says 1 (0: False); raises PrecisionError for another value of it."""
    return _cpu_has(CPU_BFLOAT16_VARIABLE, ("amx_bf16", "avx512_bf16"))


def cpu_has_fast_int8() -> bool:
    """True when the CPU has int8 dot products, AVX512-VNNI, AVX-VNNI or AMX-INT8 (ONNX Runtime's int8
    kernels use them), or YOLO_CPU_INT8 says 1 (0: False); raises PrecisionError for another value."""
    return _cpu_has(CPU_INT8_VARIABLE, ("avx512_vnni", "avx_vnni", "amx_int8"))


def _cpu_has(variable: str, flags: tuple[str, ...]) -> bool:
    """$`variable` when set (0 or 1, else PrecisionError), else whether /proc/cpuinfo lists one of `flags`."""
    pinned = os.environ.get(variable)
    if pinned is not None:
        if pinned not in ("0", "1"):
            raise PrecisionError(f"{variable} must be 0 or 1, got {pinned!r}")
        return pinned == "1"
    try:
        listed = Path("/proc/cpuinfo").read_text().split()
    except OSError:
        return False
    return any(flag in listed for flag in flags)


def gpu_count() -> int:
    """How many GPUs the Keras backend sees: TensorFlow's physical devices, torch's CUDA devices, or
    on JAX the accelerators of Keras' device list (keras.distribution has no torch implementation)."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        return len(tf.config.list_physical_devices("GPU"))
    if backend == "torch":
        import torch

        return torch.cuda.device_count()
    return sum(not name.startswith("cpu") for name in keras.distribution.list_devices())


def gpu_visible() -> bool:
    """Whether the Keras backend sees a GPU."""
    return gpu_count() > 0


def mixed_precision_policy() -> str | None:
    """The mixed-precision policy that is faster than float32 here, or None.

    On a GPU mixed_float16 on TensorFlow (with loss scaling in training), mixed_bfloat16 on JAX
    (which trains without loss scaling); mixed_bfloat16 on a CPU with AMX / AVX512-BF16 (about 2x
    faster for this model, see benchmarks/bench_inference.py); None on other CPUs, where float16
    and bfloat16 convolutions are emulated and slower than float32.
    """
    if gpu_visible():
        return "mixed_float16" if on_tensorflow() else "mixed_bfloat16"
    return "mixed_bfloat16" if cpu_has_fast_bfloat16() else None


def to_mixed_precision(model, policy: str):
    """A copy of a YoloV4Tiny built under a mixed-precision policy ("mixed_float16" or
    "mixed_bfloat16"), with the same weights. The heads stay float32 (nets.yolo).
    """
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(policy)
    try:
        copy = YoloV4Tiny.from_config(model.get_config())
    finally:
        keras.config.set_dtype_policy(previous)
    copy.set_weights(model.get_weights())
    return copy
