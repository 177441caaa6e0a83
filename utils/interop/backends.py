"""Raw forwards other than our Keras model, for `utils.inference.detector.Detector`.

A raw forward maps float32 [0, 1] NHWC images (letterboxed) to the raw YOLO heads, coarse first,
NHWC (see utils.inference.detector), so the Detector decodes and runs NMS on them with the same code as
for the Keras model. This module has ONNX Runtime, TFLite (LiteRT), SavedModel and OpenVINO, which
run the models written by export.py (utils/interop/export.py); `load_detector` picks one from the path
(`infer_backend`), and the decoding facts (classes, anchors, input size) come from the artefact's
metadata. ONNX and TFLite models exported with --include-nms also have `detect(images, conf, iou)`
(`has_nms`), their own NMS outputs, which the Detector then uses instead of its decoding and NMS.
(Darknet cfg + .weights are converted into our Keras model by utils/interop/darknet.py, whose
frozen graph is faster than OpenCV DNN: benchmarks/bench_darknet.py.)

Speed levers used by the exported-model backends (figures: benchmarks/bench_export.py):
* ONNX Runtime: all graph optimisations (ORT_ENABLE_ALL: conv + bias/mul/add fusions, NCHWc
  layout; batch-norm already folded by tf2onnx), sequential execution, intra-op threads = the
  cores this process may use, no spin-waiting.
* TFLite: the LiteRT interpreter (`ai_edge_litert`, not the deprecated tf.lite.Interpreter)
  with its default XNNPACK delegate and num_threads = those cores; batch-norms are folded by
  the converter. It runs one image per invoke (XNNPACK prefers static shapes).
* SavedModel: the loaded signature is TensorFlow-traceable, so the Detector fuses it with its
  decoding and NMS into one graph.
* OpenVINO: the IR compiled for the CPU device with inference_num_threads = those cores, the
  latency performance hint, and float32 inference precision (on CPUs with bf16 or fp16
  arithmetic OpenVINO would otherwise compute in those, and an fp32 export would no longer give
  the Keras model's detections). It is compiled for a static input shape (OpenVINO's advice for
  speed), once per batch size met (the exported IR takes any batch). OpenVINO is optional
  (`pip install openvino`); `import_openvino` says so when it is missing.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from utils.defaults import CONF_THRESHOLD, NMS_IOU
from utils.errors import YoloError
from utils.interop.metadata import (
    INPUT_NAME,
    NMS_INPUTS,
    NMS_OUTPUTS,
    OUTPUT_NAMES,
    MetadataError,
    read_metadata,
)

BACKENDS = ("keras", "saved_model", "onnx", "tflite", "openvino")
# ONNX Runtime (1.29 and later, on Linux) starts its telemetry when it is imported, and writes a
# device id and an event store under ~/.cache/Microsoft/DeveloperTools/.onnxruntime even where
# nothing is sent. Only this variable, set before that first import, keeps it from writing them;
# `disable_telemetry_events()` (ONNX Runtime's switch on Windows) comes after the import.
TELEMETRY_VARIABLE = "ORT_DISABLE_TELEMETRY"


def import_onnxruntime():
    """The `onnxruntime` module, imported with its telemetry off (TELEMETRY_VARIABLE set to 1
    unless the user set it). Every import of ONNX Runtime in the project goes through this."""
    os.environ.setdefault(TELEMETRY_VARIABLE, "1")
    import onnxruntime

    onnxruntime.disable_telemetry_events()
    return onnxruntime


class MissingRuntimeError(YoloError, ImportError):
    """An optional runtime that is not installed; the message says how to install it."""


def import_openvino():
    """The `openvino` module; MissingRuntimeError saying `pip install openvino` when it is not
    installed (it is optional: requirements-dev.txt has it, requirements.txt does not).

    Note: importing openvino starts OpenVINO's usage telemetry (openvino-telemetry) unless the
    user opted out (`opt_in_out --opt_out`) or a CI is detected; there is no variable to set
    before the import, as there is for ONNX Runtime."""
    try:
        import openvino
    except ImportError as err:
        raise MissingRuntimeError(
            f"OpenVINO is not installed ({err}): pip install openvino (optional; the openvino export "
            "format and backend need it)"
        ) from None
    return openvino


def infer_backend(path: str | Path) -> str:
    """The backend for a weights path: .keras -> keras, .onnx -> onnx, .tflite -> tflite,
    .xml (an OpenVINO IR) -> openvino, a directory holding saved_model.pb -> saved_model.
    Anything else -> keras (whose loader then says what is wrong with the file)."""
    path = Path(path)
    if path.is_dir():
        if (path / "saved_model.pb").is_file():
            return "saved_model"
        raise ValueError(f"{path}: a directory without saved_model.pb (not a SavedModel)")
    return {".onnx": "onnx", ".tflite": "tflite", ".xml": "openvino"}.get(path.suffix.lower(), "keras")


class OnnxRuntimeForward:
    """ONNX Runtime raw forward (CPU). threads: intra-op threads (default: the usable cores)."""

    graph_forward = False

    def __init__(self, path: str | Path, threads: int | None = None):
        import onnx

        ort = import_onnxruntime()
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.intra_op_num_threads = threads or default_threads()
        options.inter_op_num_threads = 1
        # No busy-waiting between ops: on a CPU shared with other processes, spinning threads
        # steal the cores the work needs (bench_export.py measured the median better without).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        # A file that is not an ONNX model (unreadable, not a ModelProto, an invalid graph) is told
        # apart by the onnx checker, whose error class is public (ONNX Runtime's are not).
        try:
            onnx.checker.check_model(str(path))
        except (onnx.checker.ValidationError, OSError) as err:
            raise ValueError(f"{path}: not a valid ONNX model ({err})") from None
        try:
            self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as err:  # a valid model ONNX Runtime still cannot run (an opset, an op)
            raise ValueError(f"{path}: ONNX Runtime cannot load it ({type(err).__name__}: {err})") from None
        names = {o.name for o in self.session.get_outputs()}
        if not set(OUTPUT_NAMES) <= names or self.session.get_inputs()[0].name != INPUT_NAME:
            raise ValueError(f"{path}: expected input {INPUT_NAME!r} and outputs {OUTPUT_NAMES}, found {sorted(names)}")
        # --include-nms exports: NMS inside the graph, `detect` returns its outputs.
        self.has_nms = set(NMS_OUTPUTS) <= names
        self.output_channels = {o.name: o.shape[-1] for o in self.session.get_outputs() if o.name in OUTPUT_NAMES}
        self.input_dtype = np.float16 if self.session.get_inputs()[0].type == "tensor(float16)" else np.float32

    def _feed(self, images, conf: float = CONF_THRESHOLD, iou: float = NMS_IOU) -> dict:
        feed = {INPUT_NAME: np.ascontiguousarray(images, dtype=self.input_dtype)}
        if self.has_nms:
            feed.update({name: np.array(v, np.float32) for name, v in zip(NMS_INPUTS, (conf, iou))})
        return feed

    def __call__(self, images: np.ndarray) -> list[np.ndarray]:
        heads = self.session.run(list(OUTPUT_NAMES), self._feed(images))
        return [np.asarray(h, np.float32) for h in heads]

    def detect(self, images: np.ndarray, conf: float, iou: float) -> list[np.ndarray]:
        """The graph's NMS outputs: boxes (N, K, 4) xyxy in the input, scores, classes, valid."""
        return self.session.run(list(NMS_OUTPUTS), self._feed(images, conf, iou))


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
        self.has_nms = sorted(runner_outputs) == sorted((*OUTPUT_NAMES, *NMS_OUTPUTS))
        if sorted(runner_outputs) != sorted(OUTPUT_NAMES) and not self.has_nms:
            raise ValueError(f"{path}: expected signature outputs {OUTPUT_NAMES}, found {runner_outputs}")
        self.runner = self.interpreter.get_signature_runner("serving_default")
        details = self.runner.get_output_details()
        self.output_channels = {name: int(details[name]["shape"][-1]) for name in OUTPUT_NAMES}

    def _run(self, images, names, conf: float = CONF_THRESHOLD, iou: float = NMS_IOU) -> list[np.ndarray]:
        images = np.asarray(images, dtype=np.float32)
        extra = {n: np.array(v, np.float32) for n, v in zip(NMS_INPUTS, (conf, iou))} if self.has_nms else {}
        outputs = [self.runner(**{INPUT_NAME: images[i : i + 1]}, **extra) for i in range(len(images))]
        return [np.concatenate([o[name] for o in outputs]) for name in names]

    def __call__(self, images: np.ndarray) -> list[np.ndarray]:
        return self._run(images, OUTPUT_NAMES)

    def detect(self, images: np.ndarray, conf: float, iou: float) -> list[np.ndarray]:
        """The graph's NMS outputs: boxes (N, K, 4) xyxy in the input, scores, classes, valid."""
        return self._run(images, NMS_OUTPUTS, conf, iou)


class SavedModelForward:
    """SavedModel raw forward through its "serving_default" signature (TensorFlow-traceable)."""

    graph_forward = True
    has_nms = False  # the "detect" signature is for users; the Detector fuses its own NMS

    def __init__(self, path: str | Path):
        import tensorflow as tf

        try:
            self.loaded = tf.saved_model.load(str(path))
        except (OSError, ValueError) as err:
            raise ValueError(f"{path}: TensorFlow cannot load the SavedModel ({err})") from None
        if "serving_default" not in self.loaded.signatures:
            raise ValueError(f"{path}: the SavedModel has no serving_default signature")
        self.signature = self.loaded.signatures["serving_default"]
        outputs = self.signature.structured_outputs
        self.output_channels = {name: outputs[name].shape[-1] for name in OUTPUT_NAMES if name in outputs}

    def __call__(self, images):
        outputs = self.signature(**{INPUT_NAME: images})
        return [outputs[name] for name in OUTPUT_NAMES]


class OpenVINOForward:
    """OpenVINO raw forward on the CPU device, float32 (see the module docstring).

    threads: inference threads (default: the usable cores). The IR is compiled for batch 1 when
    loaded (so a model OpenVINO cannot compile fails here) and for any other batch size the
    first time one comes.
    """

    graph_forward = False
    has_nms = False  # export.py writes OpenVINO IRs without NMS

    def __init__(self, path: str | Path, threads: int | None = None):
        ov = import_openvino()
        import openvino.properties as props
        import openvino.properties.hint as hints

        self.path = Path(path)
        self.core = ov.Core()
        try:
            self.model = self.core.read_model(str(path))
        except RuntimeError as err:  # not an IR, or its .bin missing or not its own
            raise ValueError(f"{path}: OpenVINO cannot read it ({_openvino_message(err)})") from None
        names = {name for output in self.model.outputs for name in output.get_names()}
        inputs = self.model.inputs
        if not set(OUTPUT_NAMES) <= names or len(inputs) != 1 or INPUT_NAME not in inputs[0].get_names():
            found = sorted(n for i in inputs for n in i.get_names())
            raise ValueError(
                f"{path}: expected input {INPUT_NAME!r} and outputs {OUTPUT_NAMES}, found inputs {found}, "
                f"outputs {sorted(names)}"
            )
        self.output_channels = {}
        for name in OUTPUT_NAMES:
            channels = self.model.output(name).get_partial_shape()[-1]
            self.output_channels[name] = channels.get_length() if channels.is_static else None
        self.config = {
            props.inference_num_threads: threads or default_threads(),
            hints.performance_mode: hints.PerformanceMode.LATENCY,
            hints.inference_precision: ov.Type.f32,
        }
        self.compiled = {}  # batch size -> (compiled model, its infer request)
        self._compiled_for(1)

    def _compiled_for(self, batch: int):
        """The compiled model and infer request for `batch` images, compiled now if new."""
        if batch not in self.compiled:
            shape = self.model.input(INPUT_NAME).get_partial_shape()
            try:
                if shape[0].is_dynamic or shape[0].get_length() != batch:
                    self.model.reshape({INPUT_NAME: [batch, *shape[1:]]})
                compiled = self.core.compile_model(self.model, "CPU", self.config)
            except RuntimeError as err:
                message = _openvino_message(err)
                raise ValueError(f"{self.path}: OpenVINO cannot compile it for the CPU ({message})") from None
            self.compiled[batch] = compiled, compiled.create_infer_request()
        return self.compiled[batch]

    def __call__(self, images: np.ndarray) -> list[np.ndarray]:
        images = np.ascontiguousarray(images, dtype=np.float32)
        compiled, request = self._compiled_for(len(images))
        outputs = request.infer({INPUT_NAME: images})
        return [np.asarray(outputs[compiled.output(name)], np.float32) for name in OUTPUT_NAMES]


def _openvino_message(err: Exception) -> str:
    """What an OpenVINO error says, without the C++ source locations it lists first
    ("Exception from src/...:84:", "Check '...' failed at src/...:887:")."""
    lines = [line.strip() for line in str(err).splitlines()]
    said = [line for line in lines if line and not line.startswith(("Exception from ", "Check '"))]
    return said[-1] if said else type(err).__name__


def load_backend(path: str | Path, backend: str | None = None, threads: int | None = None) -> tuple[object, dict]:
    """The raw forward and the export metadata of an exported model.

    backend: "onnx", "tflite", "saved_model" or "openvino"; None: from the path (`infer_backend`).
    Raises ValueError / FileNotFoundError naming the file; MetadataError (a ValueError) when the
    metadata is unusable or does not describe the model's heads; MissingRuntimeError for
    "openvino" when OpenVINO is not installed.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file or directory")
    backend = backend or infer_backend(path)
    if backend not in BACKENDS or backend == "keras":
        raise ValueError(
            f"{path}: load_backend takes an exported model (onnx, tflite, saved_model, openvino), not {backend!r}"
        )
    metadata = read_metadata(path)
    if backend == "onnx":
        forward = OnnxRuntimeForward(path, threads)
    elif backend == "tflite":
        forward = TFLiteForward(path, threads)
    elif backend == "openvino":
        forward = OpenVINOForward(path, threads)
    else:
        forward = SavedModelForward(path)
    # The metadata must describe these heads: a class count that is not the model's would only
    # fail later, in the decoder's reshape.
    width = len(metadata["anchors_mask"][0]) * (5 + metadata["num_classes"])
    for name, channels in forward.output_channels.items():
        if isinstance(channels, int) and channels != width:
            raise MetadataError(
                f"{path}: its export metadata says {metadata['num_classes']} classes and "
                f"{len(metadata['anchors_mask'][0])} anchors per cell ({width} channels), but {path}'s output "
                f"{name!r} has {channels}"
            )
    return forward, metadata


def default_threads() -> int:
    """CPU cores this process may use (the affinity mask, not the host's core count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1
