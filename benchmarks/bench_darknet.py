"""OpenCV DNN's forward time beside our Keras model's, for the same darknet weights (batch 1).

Both run on the CPU in one process, interleaved (ours, OpenCV, ours, ...) so load from other
processes hits both alike; each figure is the median of --runs timed calls after --warmup.
Our model runs inside a tf.function with a fixed input signature. Without --cfg/--weights the
benchmark writes random YOLOv4-tiny weights (80 classes) - timing does not depend on the values.

    python benchmarks/bench_darknet.py                      # 416x416, synthetic COCO-sized weights
    python benchmarks/bench_darknet.py --cfg yolov4-tiny.cfg --weights yolov4-tiny.weights --runs 50
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cfg", type=Path, help="darknet .cfg (default: darknet's yolov4-tiny, 80 classes)")
    parser.add_argument("--weights", type=Path, help="darknet .weights (default: random weights for --cfg)")
    parser.add_argument("--size", type=int, default=416, help="square input size, a multiple of 32")
    parser.add_argument("--runs", type=int, default=30, help="timed forward passes per framework")
    parser.add_argument("--warmup", type=int, default=5, help="untimed passes per framework first")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads for both (0: each library's default)")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.weights is not None and args.cfg is None:
        print("error: --weights needs --cfg", file=sys.stderr)
        return 2
    import cv2
    import numpy as np
    import tensorflow as tf
    from tqdm import tqdm

    from benchmarks.common import darknet_pair
    from nets.model_data import HEAD_CONV_INDICES

    if args.threads:
        cv2.setNumThreads(args.threads)
        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)

    with tempfile.TemporaryDirectory() as tmp:
        model, net, _, weights_path = darknet_pair(Path(tmp), args.size, cfg_path=args.cfg,
                                                          weights_path=args.weights)
    head_names = [f"conv_{i}" for i in HEAD_CONV_INDICES]

    @tf.function(input_signature=[tf.TensorSpec([1, args.size, args.size, 3], tf.float32)])
    def ours(image):
        return model(image, training=False)

    image = np.random.default_rng(0).random((1, args.size, args.size, 3), dtype=np.float32)
    tensor = tf.constant(image)
    blob = np.ascontiguousarray(image.transpose(0, 3, 1, 2))

    def run_ours():
        return [o.numpy() for o in ours(tensor)]  # .numpy() waits for the result

    def run_opencv():
        net.setInput(blob)
        return net.forward(head_names)

    for _ in range(args.warmup):
        run_ours()
        run_opencv()
    times = {"keras": [], "opencv": []}
    for _ in tqdm(range(args.runs), desc="interleaved forward passes", leave=False):
        for name, fn in (("keras", run_ours), ("opencv", run_opencv)):
            start = time.perf_counter()
            fn()
            times[name].append((time.perf_counter() - start) * 1000)

    # The two must compute the same thing (up to OpenCV's BN epsilon, see utils/interop/darknet.py).
    diff = max(
        float(np.abs(a - b.transpose(0, 2, 3, 1)).max() / np.abs(a).max())
        for a, b in zip(run_ours(), run_opencv(), strict=True)
    )
    keras_ms, opencv_ms = statistics.median(times["keras"]), statistics.median(times["opencv"])
    threads = args.threads or f"default (cv2 {cv2.getNumThreads()}, {os.cpu_count()} CPUs)"
    print(f"YOLOv4-tiny forward, batch 1, {args.size}x{args.size}, CPU, threads: {threads}, median of {args.runs}")
    print(f"  weights: {weights_path if args.weights else 'random (80 classes)'}")
    print(f"  Keras (tf.function) : {keras_ms:8.2f} ms   (min {min(times['keras']):.2f})")
    print(f"  OpenCV DNN          : {opencv_ms:8.2f} ms   (min {min(times['opencv']):.2f})")
    print(f"  Keras / OpenCV      : {keras_ms / opencv_ms:8.2f}x")
    print(f"  max |ours - OpenCV| / max |ours| over the raw heads: {diff:.1e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
