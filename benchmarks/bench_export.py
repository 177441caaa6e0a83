"""Exported-model speed: batch-1 raw forward of every backend beside OpenCV DNN, in one run.

    python benchmarks/bench_export.py                  # 416x416, 80 classes, 40 rounds, 2 threads
    python benchmarks/bench_export.py --rounds 60 --threads 2 --work-dir /tmp/bench_export

What is measured: one 416x416 letterboxed image (float32 RGB [0, 1]; OpenCV gets its NCHW blob)
through the network to the raw heads, outputs fetched as NumPy, for

* Keras: the Detector's forward (utils.inference.folding.frozen_forward: constant weights, BN folded) in a
  tf.function with a fixed input signature;
* SavedModel, ONNX Runtime, TFLite fp32 / fp16 / int8 (full-integer, calibrated on demo-set
  images written to the work dir): the artefacts of utils/interop/export.py run by utils/interop/backends.py,
  i.e. exactly what `load_detector(model.onnx)` runs;
* TFLite dynamic-range int8 (int8 weights, float activations; not an export.py option, shown
  for reference);
* OpenCV DNN `net.forward()` on darknet's official yolov4-tiny.cfg holding the same random darknet
  weights as our model (benchmarks/common.py), the raw heads compared so all run the same network.

All get the same number of threads (`--threads`, default 2: ORT intra-op threads, TFLite
num_threads with XNNPACK, cv2.setNumThreads; TensorFlow's intra-op pool). Rounds are interleaved
and medians reported, because other processes share the CPU: ratios to OpenCV measured in the
same run are the figures that count. Goals: fastest fp32 <= 0.6x OpenCV, int8 <= 0.25x.
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=40, help="interleaved timing rounds (medians reported)")
    parser.add_argument("--size", type=int, default=416, help="network input side (multiple of 32)")
    parser.add_argument("--threads", type=int, default=2, help="threads for every backend (default 2)")
    parser.add_argument("--attention", default="none", help="attention block of the model (default none)")
    parser.add_argument("--work-dir", type=Path, default=None, help="keep the exports here and reuse them")
    parser.add_argument("--cfg", type=Path, default=None, help="darknet yolov4-tiny.cfg (default: shared reference)")
    return parser.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    from utils.cli import setup_logging

    setup_logging(logging.WARNING)  # the library's warnings (an ONNX fallback, ...) on stderr
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)

    import cv2
    import numpy as np

    from benchmarks.common import OFFICIAL_CFG, darknet_pair, opencv_heads, relative_difference
    from nets.yolo import YoloV4Tiny
    from utils.data.demo import write_demo_dataset
    from utils.inference.folding import frozen_forward
    from utils.inference.letterbox import letterbox
    from utils.interop.backends import OnnxRuntimeForward, SavedModelForward, TFLiteForward, import_onnxruntime
    from utils.interop.darknet import load_darknet_weights
    from utils.interop.export import export_model

    onnxruntime = import_onnxruntime()
    cv2.setNumThreads(args.threads)
    size = args.size
    cfg = args.cfg or OFFICIAL_CFG
    print(
        f"TensorFlow {tf.__version__}, ONNX Runtime {onnxruntime.__version__}, OpenCV {cv2.__version__}; "
        f"{args.threads} threads per backend, {os.cpu_count()} CPUs visible"
    )
    print(f"YOLOv4-tiny ({args.attention}), 80 classes, {size}x{size}, batch 1, {args.rounds} interleaved rounds\n")

    tmp = None
    if args.work_dir is None:
        tmp = tempfile.TemporaryDirectory(prefix="bench_export_")
        work = Path(tmp.name)
    else:
        work = args.work_dir
        work.mkdir(parents=True, exist_ok=True)
    # Random darknet weights, kept in the work dir so reused exports hold the same model.
    reused = work / "random.weights"
    model, net, _, _ = darknet_pair(
        work, size, cfg_path=cfg if cfg.is_file() else None, weights_path=reused if reused.is_file() else None
    )
    if args.attention != "none":
        # OpenCV runs the phi-0 network; ours gets the same darknet weights plus fresh attention.
        model = YoloV4Tiny(80, attention=args.attention, input_shape=(size, size, 3))
        load_darknet_weights(model, reused)

    calib = work / "calib_voc"
    if not (calib / "ImageSets").is_dir():
        write_demo_dataset(calib, splits={"train": 32}, image_size=size)
    artefacts = {
        "saved_model": (work / "saved_model", dict(fmt="saved_model")),
        "onnx": (work / "model.onnx", dict(fmt="onnx")),
        "tflite_fp32": (work / "model.tflite", dict(fmt="tflite")),
        "tflite_fp16": (work / "model_fp16.tflite", dict(fmt="tflite", precision="fp16")),
        "tflite_int8": (work / "model_int8.tflite", dict(fmt="tflite", precision="int8", calib_data=calib)),
    }
    for name, (path, options) in artefacts.items():
        if not path.exists():
            start = time.perf_counter()
            fmt = options.pop("fmt")
            export_model(model, fmt, path, input_hw=(size, size), **options)
            print(f"exported {name:<12} in {time.perf_counter() - start:5.1f} s")
    dynamic = work / "model_dynamic_int8.tflite"
    if not dynamic.exists():
        converter = tf.lite.TFLiteConverter.from_saved_model(str(artefacts["saved_model"][0]))
        converter.optimizations = [tf.lite.Optimize.DEFAULT]  # no representative data: dynamic range
        dynamic.write_bytes(converter.convert())

    image = cv2.cvtColor(cv2.imread(str(next((calib / "JPEGImages").glob("*.jpg")))), cv2.COLOR_BGR2RGB)
    boxed, _ = letterbox(image, (size, size))
    x = boxed[None].astype(np.float32) / 255.0

    folded = frozen_forward(model)
    keras_fn = tf.function(
        lambda images: folded(images), input_signature=[tf.TensorSpec([None, size, size, 3], tf.float32)]
    )
    saved = SavedModelForward(artefacts["saved_model"][0])
    forwards = {
        "Keras frozen tf.function": lambda: [h.numpy() for h in keras_fn(x)],
        "SavedModel": lambda: [h.numpy() for h in saved(tf.constant(x))],
        "ONNX Runtime": OnnxRuntimeForward(artefacts["onnx"][0], args.threads),
        "TFLite fp32": TFLiteForward(artefacts["tflite_fp32"][0], args.threads),
        "TFLite fp16": TFLiteForward(artefacts["tflite_fp16"][0], args.threads),
        "TFLite int8": TFLiteForward(artefacts["tflite_int8"][0], args.threads),
        "TFLite dynamic int8 (ref)": TFLiteForward(dynamic, args.threads),
    }
    timers = {}
    for name, fn in forwards.items():
        timers[name] = fn if name.startswith(("Keras", "SavedModel")) else (lambda fn=fn: fn(x))

    reference = [np.asarray(h) for h in model(x, training=False)]
    scale = max(float(np.abs(h).max()) for h in reference)
    print(f"\nraw-head agreement with the Keras model (max |diff| / max |head|, heads up to {scale:.2f}):")
    for name, fn in timers.items():
        diff = max(float(np.abs(np.asarray(o) - r).max()) for o, r in zip(fn(), reference))
        print(f"  {name:<30} {diff / scale:.1e}")

    print(f"  {'OpenCV DNN (darknet cfg)':<30} {relative_difference(reference, opencv_heads(net, x)):.1e}")
    blob = np.ascontiguousarray(x.transpose(0, 3, 1, 2))
    out_names = net.getUnconnectedOutLayersNames()

    def cv_forward():
        net.setInput(blob)
        return net.forward(out_names)

    timers["OpenCV DNN"] = cv_forward

    for fn in timers.values():  # warm up: trace, allocate, pack weights
        for _ in range(3):
            fn()
    times: dict[str, list[float]] = {name: [] for name in timers}
    names = list(timers)
    for r in range(args.rounds):
        # Rotate the order each round so no backend always runs right after the same one.
        for name in names[r % len(names) :] + names[: r % len(names)]:
            start = time.perf_counter()
            timers[name]()
            times[name].append(time.perf_counter() - start)

    medians = {name: 1000.0 * statistics.median(t) for name, t in times.items()}
    minima = {name: 1000.0 * min(t) for name, t in times.items()}
    cv_ms, cv_min = medians["OpenCV DNN"], minima["OpenCV DNN"]
    print(f"\nbatch-1 latency over {args.rounds} interleaved rounds (min: the least disturbed run):")
    print(f"  {'backend':<30} {'median ms':>9} {'x OpenCV':>9} {'min ms':>9} {'x OpenCV':>9}")
    for name, ms in medians.items():
        print(f"  {name:<30} {ms:9.2f} {ms / cv_ms:9.2f} {minima[name]:9.2f} {minima[name] / cv_min:9.2f}")
    fp32 = {n: medians[n] for n in ("Keras frozen tf.function", "SavedModel", "ONNX Runtime", "TFLite fp32")}
    best = min(fp32, key=fp32.get)
    int8 = medians["TFLite int8"]
    print(f"\nfastest fp32 (median): {best}, {fp32[best] / cv_ms:.2f}x OpenCV DNN (goal <= 0.60)")
    print(f"int8 (full-integer, export.py --int8, median): {int8 / cv_ms:.2f}x OpenCV DNN (goal <= 0.25)")
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
