#!/usr/bin/env bash
# Everything that needs a GPU, in one command, printing its figures:
#   predict img/s at batch 1 and 32, fp32 and fp16 (mixed_float16);
#   training images/s at 416 with and without --mixed-precision, and with --strategy mirrored
#   on all visible GPUs (benchmarks/bench_train.py);
#   ONNX Runtime with the CUDA and (when present) TensorRT execution providers;
#   on Keras' JAX backend (benchmarks/gpu_check_jax.py, no TensorFlow needed): predict img/s at
#   batch 1 and 32 in float32 and bfloat16, training images/s at batch 64, the demo trained.
# On a machine without a GPU it prints a "no GPU" line and exits 0.
#
#   bash benchmarks/gpu_check.sh            # PYTHON=/path/to/python to choose the interpreter
set -u
cd "$(dirname "$0")/.." || exit 1
PYTHON="${PYTHON:-python}"

if ! command -v nvidia-smi >/dev/null 2>&1 || ! nvidia-smi -L >/dev/null 2>&1; then
    echo "no GPU: nvidia-smi is missing or lists no GPU; nothing to measure (exit 0)"
    exit 0
fi
nvidia-smi -L
status=0
"$PYTHON" benchmarks/gpu_check.py || status=$?
# 10: gpu_check.py printed its own "no GPU" line (TensorFlow and ONNX Runtime see none); JAX may.
if [ "$status" -ne 0 ] && [ "$status" -ne 10 ]; then
    exit "$status"
fi

if "$PYTHON" -c "import sys, tensorflow as tf; sys.exit(0 if tf.config.list_physical_devices('GPU') else 1)" 2>/dev/null; then
    echo "== training images/s at 416 (bare step and full pipeline), fp32 then --mixed-precision"
    "$PYTHON" benchmarks/bench_train.py --sizes 416 --batch-size 32 || exit $?
    "$PYTHON" benchmarks/bench_train.py --sizes 416 --batch-size 32 --mixed-precision || exit $?
    gpus=$("$PYTHON" -c "import tensorflow as tf; print(len(tf.config.list_physical_devices('GPU')))" 2>/dev/null)
    echo "== training images/s at 416, --strategy mirrored on ${gpus} GPU(s), --mixed-precision, global batch $((32 * gpus))"
    "$PYTHON" benchmarks/bench_train.py --sizes 416 --batch-size $((32 * gpus)) --mixed-precision --strategy mirrored || exit $?
else
    echo "training: skipped, TensorFlow sees no GPU (pip install 'tensorflow[and-cuda]')"
fi

if "$PYTHON" -c "import sys, jax; sys.exit(0 if any(d.platform == 'gpu' for d in jax.devices()) else 1)" 2>/dev/null; then
    echo "== Keras on JAX (no TensorFlow needed): predict, training images/s at batch 64, the demo"
    KERAS_BACKEND=jax "$PYTHON" benchmarks/gpu_check_jax.py || exit $?
else
    echo "JAX: skipped, JAX sees no GPU (pip install 'jax[cuda12]')"
fi
