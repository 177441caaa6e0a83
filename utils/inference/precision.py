"""Half precision for inference: which mixed-precision policy is faster here, and a copy of a
model built under it (the heads stay float32, see nets/yolo.py).

mixed_float16 on a GPU; mixed_bfloat16 on a CPU with AMX / AVX512-BF16 (about 2x faster for this
model, measured by benchmarks/bench_inference.py); elsewhere float16 and bfloat16 convolutions are
emulated and slower than float32, so `--half` warns (the `yolov4_tiny.inference` logger) and keeps
float32. TensorFlow only: on the other Keras backends `with_half_precision` raises
`TensorFlowRequired`.
"""

from __future__ import annotations

import logging
from pathlib import Path

import keras

from nets.yolo import YoloV4Tiny
from utils.inference.detector import require_tensorflow

logger = logging.getLogger("yolov4_tiny.inference")


def with_half_precision(model):
    """`model` under `mixed_precision_policy()`; on a CPU without fast bfloat16, warn and keep float32.

    Raises TensorFlowRequired on the other Keras backends (half precision was measured on
    TensorFlow only).
    """
    require_tensorflow("half precision (--half)")
    policy = mixed_precision_policy()
    if policy is None:
        logger.warning("half precision: this CPU has no fast float16/bfloat16 (AMX or AVX512-BF16); running float32")
        return model
    return to_mixed_precision(model, policy)


def cpu_has_fast_bfloat16() -> bool:
    """True when the CPU has AMX or AVX512-BF16 (oneDNN then runs bfloat16 convolutions fast)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return any(flag in flags for flag in ("amx_bf16", "avx512_bf16"))


def mixed_precision_policy() -> str | None:
    """The mixed-precision policy that is faster than float32 here, or None.

    mixed_float16 on a GPU; mixed_bfloat16 on a CPU with AMX / AVX512-BF16 (about 2x faster for
    this model, see benchmarks/bench_inference.py); None on other CPUs, where float16 and
    bfloat16 convolutions are emulated and slower than float32.
    """
    import tensorflow as tf

    if tf.config.list_physical_devices("GPU"):
        return "mixed_float16"
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
