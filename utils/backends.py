"""Raw forwards other than our Keras model, for `utils.detector.Detector`.

A raw forward maps float32 [0, 1] NHWC images to the raw YOLO heads, coarse first, NHWC (see
utils.detector). This module has the OpenCV DNN one, which runs a darknet cfg + .weights pair
directly (no conversion); ONNX Runtime or TFLite forwards would go here the same way.

For speed, prefer converting darknet weights to a Keras model (utils/darknet.py) and using
`Detector.from_model`: the frozen TensorFlow graph is faster than OpenCV DNN's forward on CPU
(benchmarks/bench_inference.py).
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from utils.detector import Detector


def _cfg_sections(path: Path) -> list[tuple[str, dict[str, str]]]:
    """[(section name, {key: value})] in file order; comments and blank lines dropped."""
    sections: list[tuple[str, dict[str, str]]] = []
    for raw in path.read_text().splitlines():
        line = raw.split("#", 1)[0].split(";", 1)[0].strip()
        if not line:
            continue
        if line.startswith("["):
            sections.append((line.strip("[]").strip(), {}))
        elif "=" in line and sections:
            key, value = line.split("=", 1)
            sections[-1][1][key.strip()] = value.strip()
    return sections


def yolo_heads_from_cfg(cfg_path: str | Path) -> dict:
    """What the decoder needs from a darknet cfg's [net] and [yolo] sections.

    Returns: {"input_shape": (h, w), "num_classes", "anchors" (K, 2), "anchors_mask" per head,
    "scale_x_y", "head_layers": OpenCV names of the convolutions feeding each [yolo]}, heads in cfg
    order (coarse first in yolov4-tiny.cfg).
    """
    cfg_path = Path(cfg_path)
    sections = _cfg_sections(cfg_path)
    if not sections or sections[0][0] not in ("net", "network"):
        raise ValueError(f"{cfg_path}: not a darknet cfg (no [net] section first)")
    net = sections[0][1]
    heads = [(index, options) for index, (name, options) in enumerate(sections[1:]) if name == "yolo"]
    if not heads:
        raise ValueError(f"{cfg_path}: no [yolo] sections")
    first = heads[0][1]
    values = [float(v) for v in first["anchors"].split(",") if v.strip()]
    scales = {float(options.get("scale_x_y", 1.0)) for _, options in heads}
    if len(scales) != 1:
        raise ValueError(f"{cfg_path}: [yolo] sections with different scale_x_y {sorted(scales)}")
    return {
        "input_shape": (int(net.get("height", 416)), int(net.get("width", 416))),
        "num_classes": int(first["classes"]),
        "anchors": np.asarray(values, np.float32).reshape(-1, 2),
        "anchors_mask": [[int(i) for i in options["mask"].split(",")] for _, options in heads],
        "scale_x_y": scales.pop(),
        # Darknet layer i (counting after [net]) is OpenCV's "conv_i"; each [yolo] reads layer i - 1.
        "head_layers": [f"conv_{index - 1}" for index, _ in heads],
    }


def _check_weights_size(net, cfg_path: Path, weights_path: Path) -> None:
    """OpenCV reads a short .weights file without complaint; compare the float count ourselves."""
    needed = sum(
        blob.size
        for name in net.getLayerNames()
        for layer in [net.getLayer(net.getLayerId(name))]
        if layer.type in ("Convolution", "BatchNorm")
        for blob in layer.blobs
    )
    with open(weights_path, "rb") as f:
        major, minor = (int(v) for v in np.fromfile(f, np.int32, 2))
    header = 20 if major * 10 + minor >= 2 else 16  # "seen" became int64 in darknet 0.2
    have = (weights_path.stat().st_size - header) / 4
    if have != needed:
        raise ValueError(f"{weights_path}: holds {have:.0f} floats, but {cfg_path} needs {needed}")


def opencv_darknet_forward(cfg_path: str | Path, weights_path: str | Path, head_layers: list[str]):
    """A raw forward (NumPy in, NumPy out) running darknet cfg + weights in OpenCV DNN on the CPU."""
    net = cv2.dnn.readNetFromDarknet(str(cfg_path), str(weights_path))
    _check_weights_size(net, Path(cfg_path), Path(weights_path))
    net.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
    net.setPreferableTarget(cv2.dnn.DNN_TARGET_CPU)

    def forward(images: np.ndarray) -> list[np.ndarray]:
        net.setInput(np.ascontiguousarray(images.transpose(0, 3, 1, 2)))  # NHWC -> NCHW
        return [out.transpose(0, 2, 3, 1) for out in net.forward(head_layers)]  # NCHW -> NHWC

    return forward


def opencv_darknet_detector(
    cfg_path: str | Path,
    weights_path: str | Path,
    *,
    classes_path: str | Path | None = None,
    input_shape: tuple[int, int] | None = None,
    **kwargs,
) -> Detector:
    """A `Detector` running a darknet cfg + .weights through OpenCV DNN.

    classes_path: class names, one per line (numbers when None).
    input_shape: (h, w), multiples of 32; the cfg's [net] size when None.
    kwargs: the other `Detector` arguments (conf, nms_iou, max_detections, batch_size).
    """
    from utils.model_data import load_class_names

    for path in (cfg_path, weights_path):
        if not Path(path).is_file():
            raise FileNotFoundError(f"{path}: no such file")
    heads = yolo_heads_from_cfg(cfg_path)
    try:
        forward = opencv_darknet_forward(cfg_path, weights_path, heads["head_layers"])
    except cv2.error as err:
        raise ValueError(f"{weights_path}: OpenCV cannot read it with {cfg_path} ({err.msg.strip()})") from None
    class_names = load_class_names(classes_path) if classes_path is not None else None
    return Detector(
        forward,
        num_classes=heads["num_classes"],
        anchors=heads["anchors"],
        anchors_mask=heads["anchors_mask"],
        scale_x_y=heads["scale_x_y"],
        input_shape=input_shape or heads["input_shape"],
        class_names=class_names,
        graph_forward=False,
        **kwargs,
    )
