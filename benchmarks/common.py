"""What the benchmarks share: one network, with the same darknet weights, in our model and in OpenCV DNN.

OpenCV DNN is the reference every speed goal is stated against, so each benchmark builds the pair
the same way: a darknet cfg (the official yolov4-tiny.cfg when given, else the one utils/interop/darknet.py
writes), random weights with non-trivial batch-norm statistics, loaded into both through
utils/interop/darknet.py.
"""

from __future__ import annotations

import contextlib
import os
import statistics
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OFFICIAL_CFG = ROOT / ".." / "shared" / "reference" / "yolov4-tiny.cfg"


def darknet_pair(
    work_dir: Path,
    size: int = 416,
    num_classes: int = 80,
    cfg_path: Path | None = None,
    weights_path: Path | None = None,
    seed: int = 0,
):
    """Our YoloV4Tiny and an OpenCV DNN net holding the same darknet weights.

    Args:
        work_dir: where the cfg and random weights are written.
        size: the model's (square) input size.
        cfg_path: a darknet cfg; None: the one utils/interop/darknet.py writes for `num_classes`.
        weights_path: darknet weights for it; None: random ones.
    Returns: (model, net, cfg_path, weights_path). The net runs on the CPU with OpenCV's backend.
    """
    import cv2

    from utils.interop import darknet

    work_dir = Path(work_dir)
    if cfg_path is None:
        cfg_path = work_dir / "yolov4-tiny.cfg"
        cfg_path.write_text(darknet.yolov4_tiny_cfg(num_classes, input_hw=(size, size)).to_text())
    if weights_path is None:
        weights_path = work_dir / "random.weights"
        specs = darknet.conv_specs(darknet.parse_cfg(cfg_path))
        darknet.write_weights(weights_path, darknet.random_darknet_weights(specs, seed=seed))
    model, _ = darknet.model_from_darknet(cfg_path, weights_path, input_shape=(size, size, 3))
    net = cv2.dnn.readNetFromDarknet(str(cfg_path), str(weights_path))
    net.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
    net.setPreferableTarget(cv2.dnn.DNN_TARGET_CPU)
    return model, net, cfg_path, weights_path


def opencv_heads(net, images_nhwc):
    """OpenCV's raw head outputs for float [0, 1] NHWC images, as NHWC arrays (P5, P4)."""
    import numpy as np

    from nets.model_data import HEAD_CONV_INDICES

    net.setInput(np.ascontiguousarray(np.asarray(images_nhwc, np.float32).transpose(0, 3, 1, 2)))
    return [head.transpose(0, 2, 3, 1) for head in net.forward([f"conv_{i}" for i in HEAD_CONV_INDICES])]


def relative_difference(ours, theirs) -> float:
    """max |ours - theirs| / max |ours| over lists of arrays."""
    import numpy as np

    scale = max(float(np.abs(a).max()) for a in ours)
    return max(float(np.abs(np.asarray(a) - np.asarray(b)).max()) for a, b in zip(ours, theirs)) / scale


def timed(fn) -> float:
    """Seconds one call of fn takes."""
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def median_ms(seconds) -> float:
    return 1000.0 * statistics.median(seconds)


@contextlib.contextmanager
def onnx_cache_in(folder: Path):
    """utils/interop/cache.py's folder set to `folder` inside the block (a benchmark's ONNX exports
    never land in the user's cache)."""
    from utils.interop.cache import CACHE_ENV

    previous = os.environ.get(CACHE_ENV)
    os.environ[CACHE_ENV] = str(folder)
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(CACHE_ENV, None)
        else:
            os.environ[CACHE_ENV] = previous
