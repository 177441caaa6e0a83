"""Raw forwards other than our Keras model, for `utils.detector.Detector`.

A raw forward maps float32 [0, 1] NHWC images (letterboxed) to the raw YOLO heads, coarse first,
NHWC (see utils.detector), so the Detector decodes and runs NMS on them with the same code as
for the Keras model. This module has:

* OpenCV DNN, which runs a darknet cfg + .weights pair directly (no conversion);
* ONNX Runtime, TFLite (LiteRT) and SavedModel, which run the models written by export.py
  (utils/export.py); `Detector.from_weights` picks one from the path (`infer_backend`), and the
  decoding facts (classes, anchors, input size) come from the artefact's metadata.

For speed, prefer converting darknet weights to a Keras model (utils/darknet.py) and using
`Detector.from_model`: the frozen TensorFlow graph is faster than OpenCV DNN's forward on CPU
(benchmarks/bench_inference.py).

Speed levers used by the exported-model backends (figures: benchmarks/bench_export.py):
* ONNX Runtime: all graph optimisations (ORT_ENABLE_ALL: conv + bias/mul/add fusions, NCHWc
  layout; batch-norm already folded by tf2onnx), sequential execution, intra-op threads = the
  cores this process may use, no spin-waiting.
* TFLite: the LiteRT interpreter (`ai_edge_litert`, not the deprecated tf.lite.Interpreter)
  with its default XNNPACK delegate and num_threads = those cores; batch-norms are folded by
  the converter. It runs one image per invoke (XNNPACK prefers static shapes).
* SavedModel: the loaded signature is TensorFlow-traceable, so the Detector fuses it with its
  decoding and NMS into one graph.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from utils.detector import Detector
from utils.export import INPUT_NAME, OUTPUT_NAMES, default_threads, read_metadata


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


# ------------------------------------------------------------------ exported models (export.py)
BACKENDS = ("keras", "saved_model", "onnx", "tflite")


def infer_backend(path: str | Path) -> str:
    """The backend for a weights path: .keras -> keras, .onnx -> onnx, .tflite -> tflite,
    a directory holding saved_model.pb -> saved_model. Anything else -> keras (whose loader
    then says what is wrong with the file)."""
    path = Path(path)
    if path.is_dir():
        if (path / "saved_model.pb").is_file():
            return "saved_model"
        raise ValueError(f"{path}: a directory without saved_model.pb (not a SavedModel)")
    return {".onnx": "onnx", ".tflite": "tflite"}.get(path.suffix.lower(), "keras")


class OnnxRuntimeForward:
    """ONNX Runtime raw forward (CPU). threads: intra-op threads (default: the usable cores)."""

    graph_forward = False

    def __init__(self, path: str | Path, threads: int | None = None):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.intra_op_num_threads = threads or default_threads()
        options.inter_op_num_threads = 1
        # No busy-waiting between ops: on a CPU shared with other processes, spinning threads
        # steal the cores the work needs (bench_export.py measured the median better without).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        from onnxruntime.capi import onnxruntime_pybind11_state as ort_errors

        # ONNX Runtime's errors derive from Exception directly; these are the ones a bad file raises.
        load_errors = (ort_errors.InvalidProtobuf, ort_errors.InvalidGraph, ort_errors.Fail, ort_errors.NoSuchFile)
        try:
            self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except (*load_errors, ort_errors.InvalidArgument, OSError) as err:
            raise ValueError(f"{path}: ONNX Runtime cannot load it ({type(err).__name__}: {err})") from None
        names = {o.name for o in self.session.get_outputs()}
        if not set(OUTPUT_NAMES) <= names or self.session.get_inputs()[0].name != INPUT_NAME:
            raise ValueError(f"{path}: expected input {INPUT_NAME!r} and outputs {OUTPUT_NAMES}, found {sorted(names)}")

    def __call__(self, images: np.ndarray) -> list[np.ndarray]:
        images = np.ascontiguousarray(images, dtype=np.float32)
        return self.session.run(list(OUTPUT_NAMES), {INPUT_NAME: images})


class TFLiteForward:
    """LiteRT interpreter raw forward, XNNPACK on, one image per invoke.

    threads: interpreter threads (default: the usable cores).
    """

    graph_forward = False

    def __init__(self, path: str | Path, threads: int | None = None):
        from ai_edge_litert.interpreter import Interpreter

        try:
            self.interpreter = Interpreter(model_path=str(path), num_threads=threads or default_threads())
        except (ValueError, RuntimeError) as err:
            raise ValueError(f"{path}: the TFLite interpreter cannot load it ({err})") from None
        runner_outputs = self.interpreter.get_signature_list().get("serving_default", {}).get("outputs", [])
        if sorted(runner_outputs) != sorted(OUTPUT_NAMES):
            raise ValueError(f"{path}: expected signature outputs {OUTPUT_NAMES}, found {runner_outputs}")
        self.runner = self.interpreter.get_signature_runner("serving_default")

    def __call__(self, images: np.ndarray) -> list[np.ndarray]:
        images = np.asarray(images, dtype=np.float32)
        outputs = [self.runner(**{INPUT_NAME: images[i : i + 1]}) for i in range(len(images))]
        return [np.concatenate([o[name] for o in outputs]) for name in OUTPUT_NAMES]


class SavedModelForward:
    """SavedModel raw forward through its "serving_default" signature (TensorFlow-traceable)."""

    graph_forward = True

    def __init__(self, path: str | Path):
        import tensorflow as tf

        try:
            self.loaded = tf.saved_model.load(str(path))
        except (OSError, ValueError) as err:
            raise ValueError(f"{path}: TensorFlow cannot load the SavedModel ({err})") from None
        if "serving_default" not in self.loaded.signatures:
            raise ValueError(f"{path}: the SavedModel has no serving_default signature")
        self.signature = self.loaded.signatures["serving_default"]

    def __call__(self, images):
        outputs = self.signature(**{INPUT_NAME: images})
        return [outputs[name] for name in OUTPUT_NAMES]


def load_backend(path: str | Path, backend: str | None = None, threads: int | None = None) -> tuple[object, dict]:
    """The raw forward and the export metadata of an exported model.

    backend: "onnx", "tflite" or "saved_model"; None: from the path (`infer_backend`).
    Raises ValueError / FileNotFoundError naming the file.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file or directory")
    backend = backend or infer_backend(path)
    if backend not in BACKENDS or backend == "keras":
        raise ValueError(f"{path}: load_backend takes an exported model (onnx, tflite, saved_model), not {backend!r}")
    metadata = read_metadata(path)
    if backend == "onnx":
        forward = OnnxRuntimeForward(path, threads)
    elif backend == "tflite":
        forward = TFLiteForward(path, threads)
    else:
        forward = SavedModelForward(path)
    return forward, metadata
