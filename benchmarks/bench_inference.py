"""Inference speed: our image-to-boxes pipeline beside OpenCV DNN's forward pass, same architecture.

    python benchmarks/bench_inference.py            # 416x416, 80 classes, 30 rounds
    python benchmarks/bench_inference.py --rounds 50 --variants

What is measured (CPU, or the GPU when TensorFlow sees one; OpenCV DNN always runs on the CPU):

* ours, batch 1: what predict.py runs by default on a `.keras` file: `load_detector(model.keras)`
  (--backend auto: ONNX Runtime on a CPU, on the model's ONNX export, made here into a temporary
  cache; TensorFlow on a GPU), then `Detector.detect([image])` on a decoded 640x480 uint8 RGB
  image: letterbox (cv2) + model + decode + per-class NMS + box merge + mapping the boxes back to
  the image. Split into preprocess / model / postprocess by timing the stages separately (the
  model alone, decode + NMS + merge alone on its raw outputs, and without the merge).
* the TensorFlow path (--backend keras), batch 1: letterbox + one compiled graph (uint8 -> /255
  -> model -> decode -> per-class NMS) + mapping the boxes back.
* OpenCV DNN, batch 1: `net.forward()` alone (its blob already built), on the same network read
  from darknet's official yolov4-tiny.cfg with OUR model's random weights written in darknet's
  layout. The raw heads of both are compared, so the two really compute the same thing.
* ours, batch 8: images/s, and its ratio to batch-1 images/s.

Rounds are interleaved (ours, OpenCV, ours split, ...) and medians reported, because other
processes may share the CPU; the ratio is also given as the median of the per-round ratios (ours
and OpenCV run back to back, so the two see about the same load). `--variants` also times the
unfolded Keras graph, XLA, and mixed_bfloat16 of the TensorFlow path, to show which choices in
`utils/inference/detector.py` pay.
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from benchmarks.common import (  # noqa: E402
    OFFICIAL_CFG,
    darknet_pair,
    median_ms,
    onnx_cache_in,
    opencv_heads,
    relative_difference,
    timed,
)
from utils.cli import add_verbosity_arguments, setup_logging  # noqa: E402
from utils.defaults import CONF_THRESHOLD, NMS_IOU  # noqa: E402
from utils.inference.detector import Detector  # noqa: E402
from utils.inference.engine.loader import load_detector  # noqa: E402
from utils.inference.letterbox import unletterbox_boxes  # noqa: E402
from utils.inference.postprocess import decode_outputs, non_max_suppression  # noqa: E402
from utils.inference.precision import to_mixed_precision  # noqa: E402

RUNTIMES = {"keras": "TensorFlow", "onnx": "ONNX Runtime"}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=30, help="interleaved timing rounds (medians reported)")
    parser.add_argument("--size", type=int, default=416, help="network input side (multiple of 32)")
    parser.add_argument("--batch", type=int, default=8, help="batch size for the throughput figure")
    parser.add_argument(
        "--variants", action="store_true", help="also time in-graph letterbox, Keras call, XLA, bfloat16"
    )
    parser.add_argument("--cfg", type=Path, default=OFFICIAL_CFG, help="darknet yolov4-tiny.cfg for OpenCV DNN")
    add_verbosity_arguments(parser)
    args = parser.parse_args(argv)
    # The library's warnings (an ONNX Runtime fallback changes what is timed); its INFO lines with -v.
    setup_logging(logging.DEBUG if args.verbose else logging.WARNING)

    size = args.size
    device = "GPU" if tf.config.list_physical_devices("GPU") else "CPU"
    print(f"TensorFlow {tf.__version__} on {device}, OpenCV {cv2.__version__}, {os.cpu_count()} CPU cores")
    print(f"YOLOv4-tiny, 80 classes, input {size}x{size}, image 640x480, {args.rounds} interleaved rounds\n")

    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (480, 640, 3), dtype=np.uint8)
    images = [rng.integers(0, 256, (480, 640, 3), dtype=np.uint8) for _ in range(args.batch)]

    # The same network and weights in our model and in OpenCV DNN.
    with tempfile.TemporaryDirectory() as tmp, onnx_cache_in(Path(tmp) / "onnx_cache"):
        cfg = args.cfg if args.cfg.is_file() else None
        if cfg is None:
            print(f"{args.cfg} not found: using the cfg utils/interop/darknet.py writes")
        model, net, _, _ = darknet_pair(Path(tmp), size, cfg_path=cfg)
        # predict.py's default path: load_detector on the .keras file (its ONNX export made here).
        model.save(Path(tmp) / "yolov4-tiny.keras")
        detector = load_detector(
            Path(tmp) / "yolov4-tiny.keras",
            input_shape=(size, size),
            conf=CONF_THRESHOLD,
            nms_iou=NMS_IOU,
            batch_size=args.batch,
        )
    keras_path = Detector.from_model(model, input_shape=(size, size), conf=CONF_THRESHOLD, nms_iou=NMS_IOU)
    runtime = RUNTIMES.get(detector.backend, detector.backend)
    print(f"default path (predict.py --backend auto): {runtime}")
    batch1, infos1 = detector.preprocess([image])
    diff = relative_difference(detector.raw_outputs(batch1), opencv_heads(net, batch1 / np.float32(255)))
    print(f"same network check: max |ours - OpenCV| / max |ours| on the raw heads = {diff:.1e}")
    blob = cv2.dnn.blobFromImage(batch1[0], 1 / 255.0, (size, size), swapRB=False, crop=False)
    out_names = net.getUnconnectedOutLayersNames()

    def cv_forward():
        net.setInput(blob)
        net.forward(out_names)

    def ours_total():
        detector.detect([image])

    def ours_pre():
        detector.preprocess([image])

    def ours_model():
        detector.raw_outputs(batch1)

    raw = detector.raw_outputs(batch1)

    def ours_post():
        detector.postprocess_raw(raw, infos1)

    unmerged = Detector(
        detector.forward, num_classes=detector.num_classes, anchors=detector.anchors,
        anchors_mask=detector.anchors_mask, scale_x_y=detector.scale_x_y, input_shape=(size, size),
        conf=CONF_THRESHOLD, nms_iou=NMS_IOU, merge_iou=1.0, graph_forward=detector.graph_forward,
    )  # fmt: skip

    def ours_post_unmerged():
        unmerged.postprocess_raw(raw, infos1)

    def ours_batch():
        detector.detect(images, batch_size=args.batch)

    def tensorflow_total():
        keras_path.detect([image])

    # ours and OpenCV back to back in every round: their per-round ratio sees the same load.
    timers = {"ours": ours_total, "opencv": cv_forward, "pre": ours_pre, "model": ours_model, "post": ours_post,
              "post_unmerged": ours_post_unmerged}  # fmt: skip
    if detector.backend != "keras":
        timers["tensorflow"] = tensorflow_total
    variants = {}
    if args.variants:  # alternatives of the TensorFlow path
        in_graph = letterbox_in_graph(keras_path)
        variants = {
            "letterbox inside the graph": lambda: in_graph(image),
            "Keras model call (not frozen)": Detector.from_model(model, input_shape=(size, size), freeze=False),
            "frozen + XLA (jit_compile)": Detector.from_model(model, input_shape=(size, size), jit_compile=True),
            "frozen, mixed_bfloat16 (--half)": Detector.from_model(
                to_mixed_precision(model, "mixed_bfloat16"), input_shape=(size, size)
            ),
        }
        for name, variant in variants.items():
            timers[name] = variant if callable(variant) else (lambda det=variant: det.detect([image]))
    timers["batch"] = ours_batch
    for fn in timers.values():  # warm up: trace, compile, allocate
        fn()
        fn()
    times: dict[str, list[float]] = {name: [] for name in timers}
    for _ in range(args.rounds):
        for name, fn in timers.items():
            times[name].append(timed(fn))

    total = median_ms(times["ours"])
    print(f"\nbatch 1, per image (median ms); ours = the default path, {runtime}")
    print(f"  ours total (image -> final boxes)   {total:7.2f}")
    print(f"    preprocess (letterbox, cv2)       {median_ms(times['pre']):7.2f}")
    print(f"    model (uint8 batch -> raw heads)  {median_ms(times['model']):7.2f}")
    print(f"    postprocess (decode+NMS+merge+unbox) {median_ms(times['post']):4.2f}")
    print(f"      the same without the box merge  {median_ms(times['post_unmerged']):7.2f}   (--merge-iou 1)")
    cv_ms = median_ms(times["opencv"])
    print(f"  OpenCV DNN forward alone            {cv_ms:7.2f}")
    print(f"  ratio ours / OpenCV forward         {total / cv_ms:7.2f}   (goal <= 1.05)")
    per_round = statistics.median(o / c for o, c in zip(times["ours"], times["opencv"], strict=True))
    print(f"    median of the per-round ratios    {per_round:7.2f}   (each round's two runs back to back)")
    if "tensorflow" in times:
        tf_ms = median_ms(times["tensorflow"])
        print(f"  TensorFlow path (--backend keras)   {tf_ms:7.2f}   ratio to OpenCV {tf_ms / cv_ms:.2f}")
    if variants:
        print("  TensorFlow path alternatives, total per image (same rounds):")
        for name in variants:
            print(f"    {name:<32}  {median_ms(times[name]):7.2f}")
    per_image_b = median_ms(times["batch"]) / args.batch
    print(f"\nbatch {args.batch}: {per_image_b:.2f} ms per image, {1000 / per_image_b:.1f} images/s")
    print(f"batch 1: {1000 / total:.1f} images/s; batch {args.batch} / batch 1 throughput = {total / per_image_b:.2f}x")
    if device == "GPU":
        gpu_throughput(model, size, rng)
    else:
        print("\nno GPU visible to TensorFlow: GPU figures skipped")


def letterbox_in_graph(detector: Detector):
    """The alternative to cv2 letterboxing: resize + pad inside the compiled graph (one image)."""
    in_h, in_w = detector.input_shape
    decode_args = (detector.anchors, detector.anchors_mask, detector.num_classes, detector.input_shape)

    @tf.function(input_signature=[tf.TensorSpec([None, None, 3], tf.uint8)])
    def run(image):
        hw = tf.cast(tf.shape(image)[:2], tf.float32)
        scale = tf.minimum(in_h / hw[0], in_w / hw[1])
        new_hw = tf.cast(tf.round(hw * scale), tf.int32)
        resized = tf.image.resize(tf.cast(image, tf.float32)[None] * (1 / 255.0), new_hw)
        pad = (tf.constant([in_h, in_w]) - new_hw) // 2
        x = tf.image.pad_to_bounding_box(resized - 0.5, pad[0], pad[1], in_h, in_w) + 0.5  # grey border
        boxes, scores = decode_outputs(detector.forward(x), *decode_args, detector.scale_x_y)
        return non_max_suppression(boxes, scores, detector.conf, detector.nms_iou, detector.max_detections)

    def detect(image):
        info = detector.letterbox_info(image.shape[:2])
        boxes, scores, classes, valid = (t.numpy() for t in run(image))
        return unletterbox_boxes(boxes[0, : valid[0]], info), scores[0, : valid[0]], classes[0, : valid[0]]

    return detect


def gpu_throughput(model, size: int, rng) -> None:
    """Images/s on the GPU at batch 1 and 32, float32 and mixed_float16."""
    images = [rng.integers(0, 256, (480, 640, 3), dtype=np.uint8) for _ in range(32)]
    print("\nGPU images/s (median of 10):")
    for label, m in (("float32", model), ("mixed_float16", to_mixed_precision(model, "mixed_float16"))):
        det = Detector.from_model(m, input_shape=(size, size))
        for batch in (1, 32):
            work = images[:batch]
            det.detect(work, batch_size=batch)
            runs = [timed(lambda d=det, w=work, b=batch: d.detect(w, batch_size=b)) for _ in range(10)]
            seconds = statistics.median(runs)
            print(f"  {label:<14} batch {batch:>2}: {batch / seconds:8.1f}")


if __name__ == "__main__":
    main()
