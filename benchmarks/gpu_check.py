"""The GPU figures of benchmarks/gpu_check.sh that are not training: predict img/s at batch 1 and
32 in fp32 and fp16 (TensorFlow, mixed_float16), and ONNX Runtime with the CUDA and TensorRT
execution providers when its build has them. YOLOv4-tiny, 416, 80 classes, random weights, end to
end (letterbox, model, decode, NMS; ONNX Runtime: the model alone, its input ready on the host).

Exit status 10 with a "no GPU" line when neither TensorFlow nor ONNX Runtime sees a GPU.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

NO_GPU = 10


def median_rate(fn, images: int, runs: int, warmup: int = 3) -> float:
    """Images per second, median over `runs` calls of `fn` (each handling `images` images)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return images / float(np.median(times))


def tensorflow_figures(model, frames, runs: int) -> None:
    from utils.inference.detector import Detector
    from utils.inference.precision import to_mixed_precision

    for name, net in (("fp32", model), ("fp16", to_mixed_precision(model, "mixed_float16"))):
        for batch in (1, 32):
            detector = Detector.from_model(net, input_shape=(416, 416), batch_size=batch, conf=0.25)
            images = frames[:batch]
            rate = median_rate(lambda d=detector, x=images: d.detect(x), batch, runs)
            print(f"predict TensorFlow {name} batch {batch:>2}: {rate:8.1f} img/s", flush=True)


def onnxruntime_figures(model, providers: list[str], runs: int) -> None:
    from utils.interop.backends import import_onnxruntime
    from utils.interop.export import export_model

    ort = import_onnxruntime()

    with tempfile.TemporaryDirectory() as tmp:
        path = export_model(model, "onnx", Path(tmp) / "m.onnx", input_hw=(416, 416))
        for provider in providers:
            session = ort.InferenceSession(str(path), providers=[provider, "CPUExecutionProvider"])
            if session.get_providers()[0] != provider:
                print(f"onnxruntime {provider}: not usable here (fell back to {session.get_providers()[0]})")
                continue
            for batch in (1, 32):
                x = np.random.default_rng(0).uniform(0, 1, (batch, 416, 416, 3)).astype(np.float32)
                rate = median_rate(lambda s=session, x=x: s.run(None, {"images": x}), batch, runs)
                print(f"onnxruntime {provider} batch {batch:>2}: {rate:8.1f} img/s", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=20, help="timed calls per figure (medians)")
    args = parser.parse_args(argv)
    from utils.cli import setup_logging

    setup_logging(logging.WARNING)  # the library's warnings (an ONNX fallback, ...) on stderr
    try:
        import tensorflow as tf

        tf_gpus = tf.config.list_physical_devices("GPU")
    except ImportError:
        tf, tf_gpus = None, []
    try:
        from utils.interop.backends import import_onnxruntime

        ort = import_onnxruntime()
        available = ort.get_available_providers()
        gpu_providers = [p for p in ("TensorrtExecutionProvider", "CUDAExecutionProvider") if p in available]
    except ImportError:
        gpu_providers = []
    if not tf_gpus and not gpu_providers:
        print("no GPU: TensorFlow sees no GPU and ONNX Runtime has no CUDA/TensorRT provider; nothing to measure")
        return NO_GPU
    if tf is None:
        print("no TensorFlow: nothing can be measured (the model is built with Keras / TensorFlow)")
        return NO_GPU
    from nets.yolo import YoloV4Tiny

    model = YoloV4Tiny(80, input_shape=(None, None, 3))
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (480, 640, 3), dtype=np.uint8) for _ in range(32)]
    if tf_gpus:
        print(f"TensorFlow {tf.__version__}: {len(tf_gpus)} GPU(s)")
        tensorflow_figures(model, frames, args.runs)
    else:
        print("predict TensorFlow: skipped, TensorFlow sees no GPU (pip install 'tensorflow[and-cuda]')")
    if gpu_providers:
        onnxruntime_figures(model, gpu_providers, args.runs)
    else:
        print("onnxruntime: no CUDA/TensorRT provider in this build (pip install onnxruntime-gpu)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
