"""The detector for library users: images in, boxes out.

    detector = Detector.from_weights("logs/best.keras", conf=0.5)
    [dets] = detector.detect([load_image("street.jpg")])
    dets.boxes      # (N, 4) float32, pixel xyxy in the original image
    dets.scores     # (N,) float32
    dets.class_ids  # (N,) int32, index into detector.class_names

How it is put together (and how other backends plug in)
-------------------------------------------------------
A `Detector` is a *raw forward* plus the shared decoding:

    uint8 images --letterbox (cv2, CPU)--> uint8 batch (N, in_h, in_w, 3)
        --/255--> float32 [0, 1] NHWC --raw forward--> raw heads, coarse first,
        (N, in_h/32, in_w/32, A*(5+C)) and (N, in_h/16, in_w/16, A*(5+C))
        --utils.postprocess: decode + per-class NMS--> padded boxes in the network input
        --utils.letterbox.unletterbox_boxes--> pixel xyxy in each original image.

The raw forward is any callable with that contract. A TensorFlow-traceable one (a Keras model,
`graph_forward=True`) is traced together with the /255, the decoding and the NMS into ONE
`tf.function` with a fixed input signature, so a batch costs one graph call. Any other callable
(OpenCV DNN, ONNX Runtime, TFLite interpreters; `graph_forward=False`) gets a float32 NumPy array
and returns NumPy heads; decoding and NMS then run as their own compiled graph. To add a backend,
build its raw forward and call `Detector(forward, num_classes=..., anchors=..., ...)`, or hand a
Keras model (e.g. one converted from darknet cfg + weights) to `Detector.from_model`.

For speed on the Keras path the batch-norms are folded into the convolutions in an inference-only
copy of the graph (see `fold_batch_norms`); the trained model is not changed.
"""

from __future__ import annotations

import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import tensorflow as tf

from utils.letterbox import LetterboxInfo, letterbox, letterbox_info, unletterbox_boxes
from utils.model_data import DEFAULT_INPUT_SHAPE, INPUT_MULTIPLE, load_class_names
from utils.postprocess import decode_outputs, non_max_suppression

RawForward = Callable[[object], Sequence]


class ModelLoadError(ValueError):
    """A weights file that is not a model of ours; the message names the file."""


@dataclass
class Detections:
    """Detections in one image.

    boxes: (N, 4) float32, pixel xyxy in the original image (see utils.boxes).
    scores: (N,) float32, sigmoid(objectness) * sigmoid(class), best first.
    class_ids: (N,) int32.
    """

    boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.float32))
    scores: np.ndarray = field(default_factory=lambda: np.zeros((0,), np.float32))
    class_ids: np.ndarray = field(default_factory=lambda: np.zeros((0,), np.int32))

    def __len__(self) -> int:
        return len(self.scores)

    def to_records(self, class_names: Sequence[str] | None = None) -> list[dict]:
        """JSON-ready list: class_id, class_name, score, box (pixel xyxy)."""
        records = []
        for box, score, class_id in zip(self.boxes, self.scores, self.class_ids, strict=True):
            cid = int(class_id)
            name = class_names[cid] if class_names is not None and cid < len(class_names) else str(cid)
            records.append(
                {
                    "class_id": cid,
                    "class_name": name,
                    "score": round(float(score), 5),
                    "box": [round(float(v), 2) for v in box],
                }
            )
        return records


def _check_input_hw(input_hw: Sequence[int]) -> tuple[int, int]:
    h, w = (int(v) for v in input_hw)
    if h <= 0 or w <= 0 or h % INPUT_MULTIPLE or w % INPUT_MULTIPLE:
        raise ValueError(f"input shape must be positive multiples of {INPUT_MULTIPLE}, got {(h, w)}")
    return h, w


def fold_batch_norms(model) -> Callable[[tf.Tensor], list[tf.Tensor]]:
    """An inference-only forward of a functional Keras model with every Conv2D -> BatchNorm pair
    folded into one convolution with bias.

    conv(x, W) * g / sqrt(v + eps) + (b - m * g / sqrt(v + eps)) == conv(x, W * s) + (b - m * s),
    s = g / sqrt(v + eps). Only BatchNormalization layers whose single input is a bias-free
    Conv2D's output that nothing else reads are folded; every other layer runs as it is. The
    folded weights are snapshot constants: re-create the forward after changing the weights.

    Returns: a callable float32 (N, H, W, 3) -> list of raw heads, to trace in a tf.function.
    """
    import keras

    consumers: dict[int, int] = {}
    for layer in model.layers:
        for node in layer._inbound_nodes:
            for tensor in node.input_tensors:
                consumers[id(tensor)] = consumers.get(id(tensor), 0) + 1

    folded: dict[str, tuple] = {}  # conv name -> (kernel, bias, strides, padding, dilation)
    skip: set[str] = set()  # batch-norm names folded away
    for layer in model.layers:
        if not isinstance(layer, keras.layers.BatchNormalization) or len(layer._inbound_nodes) != 1:
            continue
        (source,) = layer._inbound_nodes[0].input_tensors
        conv = source._keras_history.operation
        if (
            not isinstance(conv, keras.layers.Conv2D)
            or type(conv) is not keras.layers.Conv2D
            or conv.use_bias
            or conv.groups != 1
            or conv.activation is not keras.activations.linear
            or consumers.get(id(source), 0) != 1
            or len(conv._inbound_nodes) != 1
            or layer.axis not in (-1, 3, [3], [-1])
        ):
            continue
        gamma = np.asarray(layer.gamma) if layer.scale else 1.0
        beta = np.asarray(layer.beta) if layer.center else 0.0
        scale = gamma / np.sqrt(np.asarray(layer.moving_variance, np.float64) + layer.epsilon)
        kernel = (np.asarray(conv.kernel, np.float64) * scale).astype(np.float32)
        bias = (beta - np.asarray(layer.moving_mean, np.float64) * scale).astype(np.float32)
        padding = conv.padding.upper()
        folded[conv.name] = (
            tf.constant(kernel),
            tf.constant(bias),
            list(conv.strides),
            padding,
            list(conv.dilation_rate),
        )
        skip.add(layer.name)

    def operation_fn(operation):
        if operation.name in folded:
            kernel, bias, strides, padding, dilations = folded[operation.name]

            def conv(x, **_):  # the graph may pass mask=None
                # Constants are float32; under mixed precision the activations may not be.
                y = tf.nn.conv2d(x, tf.cast(kernel, x.dtype), strides=strides, padding=padding, dilations=dilations)
                return tf.nn.bias_add(y, tf.cast(bias, x.dtype))

            return conv
        if operation.name in skip:
            return lambda x, **_: x
        return lambda *args, **kwargs: operation(*args, **kwargs)

    def forward(images):
        return model._run_through_graph(images, operation_fn=operation_fn)

    forward.num_folded = len(folded)  # type: ignore[attr-defined]
    return forward


class Detector:
    """A YOLOv4-tiny detector: a raw forward plus letterbox, decoding and per-class NMS.

    Args:
        forward: raw forward, float32 [0, 1] (N, in_h, in_w, 3) -> raw heads, coarse first
            (see the module docstring).
        num_classes, anchors, anchors_mask, scale_x_y: how to decode the heads (the model's).
        input_shape: network input (height, width); multiples of 32.
        class_names: names for `class_ids`; numbers as strings when None.
        conf: score threshold. nms_iou: per-class NMS IoU threshold.
        max_detections: most detections kept per image.
        batch_size: images per graph call in `detect`.
        graph_forward: True when `forward` can be traced by TensorFlow (fused into one graph).
        jit_compile: compile the graph with XLA (see benchmarks/bench_inference.py for whether
            that helps on your machine; off by default, it is slower on CPU for this model).
    """

    def __init__(
        self,
        forward: RawForward,
        *,
        num_classes: int,
        anchors,
        anchors_mask: Sequence[Sequence[int]],
        scale_x_y: float,
        input_shape: Sequence[int] = DEFAULT_INPUT_SHAPE,
        class_names: Sequence[str] | None = None,
        conf: float = 0.5,
        nms_iou: float = 0.3,
        max_detections: int = 100,
        batch_size: int = 8,
        graph_forward: bool = True,
        jit_compile: bool = False,
    ):
        if class_names is not None and len(class_names) != num_classes:
            raise ValueError(f"{len(class_names)} class names for a model with {num_classes} classes")
        if not 0.0 <= conf <= 1.0 or not 0.0 <= nms_iou <= 1.0:
            raise ValueError(f"conf and nms_iou must be in [0, 1], got {conf}, {nms_iou}")
        if max_detections < 1 or batch_size < 1:
            raise ValueError("max_detections and batch_size must be >= 1")
        self.forward = forward
        self.num_classes = int(num_classes)
        self.anchors = np.asarray(anchors, dtype=np.float32)
        self.anchors_mask = [list(m) for m in anchors_mask]
        self.scale_x_y = float(scale_x_y)
        self.input_shape = _check_input_hw(input_shape)
        self.class_names = list(class_names) if class_names is not None else [str(i) for i in range(num_classes)]
        self.conf = float(conf)
        self.nms_iou = float(nms_iou)
        self.max_detections = int(max_detections)
        self.batch_size = int(batch_size)
        self.graph_forward = graph_forward
        self.jit_compile = jit_compile
        self._build_functions()

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_model(cls, model, *, input_shape: Sequence[int] | None = None, fold_bn: bool = True, **kwargs):
        """Wrap a `nets.yolo.YoloV4Tiny` (trained, loaded or converted from darknet).

        input_shape: (h, w); the model's own fixed size, else 416x416.
        fold_bn: run an inference-only copy of the graph with batch-norms folded into the convs.
        kwargs: the other `Detector` arguments (conf, nms_iou, max_detections, batch_size, ...).
        """
        if input_shape is None:
            fixed = tuple(model.image_shape[:2])
            input_shape = fixed if None not in fixed else DEFAULT_INPUT_SHAPE
        if fold_bn:
            forward = fold_batch_norms(model)
        else:

            def forward(images):
                return model(images, training=False)

        kwargs.setdefault("class_names", model.class_names)
        detector = cls(
            forward,
            num_classes=model.num_classes,
            anchors=model.anchors,
            anchors_mask=model.anchors_mask,
            scale_x_y=model.scale_x_y,
            input_shape=input_shape,
            graph_forward=True,
            **kwargs,
        )
        detector.model = model
        return detector

    @classmethod
    def from_weights(
        cls,
        path: str | Path,
        *,
        classes_path: str | Path | None = None,
        conf: float = 0.5,
        nms_iou: float = 0.3,
        max_detections: int = 100,
        input_shape: Sequence[int] | None = None,
        batch_size: int = 8,
        half: bool = False,
        **kwargs,
    ) -> Detector:
        """Load a `.keras` model of ours (a saved `nets.yolo.YoloV4Tiny`).

        classes_path: class names, one per line; overrides the names saved in the model.
        half: mixed precision (see `load_model`).
        Raises ModelLoadError when the file is missing or not one of our models.
        """
        model = load_model(path, half=half)
        class_names = model.class_names
        if classes_path is not None:
            class_names = load_class_names(classes_path)
            if len(class_names) != model.num_classes:
                raise ValueError(
                    f"{classes_path}: {len(class_names)} class names, but {path} has {model.num_classes} classes"
                )
        return cls.from_model(
            model,
            input_shape=input_shape,
            class_names=class_names,
            conf=conf,
            nms_iou=nms_iou,
            max_detections=max_detections,
            batch_size=batch_size,
            **kwargs,
        )

    def _build_functions(self) -> None:
        in_h, in_w = self.input_shape
        image_spec = tf.TensorSpec([None, in_h, in_w, 3], tf.uint8)
        scalar = tf.TensorSpec([], tf.float32)
        decode_args = (self.anchors, self.anchors_mask, self.num_classes, self.input_shape, self.scale_x_y)
        max_det = self.max_detections

        def postprocess(raw_heads, conf, iou):
            boxes, scores = decode_outputs(raw_heads, *decode_args)
            return non_max_suppression(boxes, scores, conf, iou, max_det)

        head_specs = [
            tf.TensorSpec([None, in_h // s, in_w // s, len(m) * (5 + self.num_classes)], tf.float32)
            for s, m in zip((32, 16), self.anchors_mask, strict=True)
        ]
        self._postprocess_fn = tf.function(
            lambda heads, conf, iou: postprocess(heads, conf, iou),
            input_signature=[head_specs, scalar, scalar],
            jit_compile=False,
        )
        if self.graph_forward:

            def raw(images_u8):
                heads = self.forward(tf.cast(images_u8, tf.float32) * (1.0 / 255.0))
                return [tf.cast(h, tf.float32) for h in heads]

            self._raw_fn = tf.function(raw, input_signature=[image_spec], jit_compile=self.jit_compile)
            self._pipeline_fn = tf.function(
                lambda images_u8, conf, iou: postprocess(raw(images_u8), conf, iou),
                input_signature=[image_spec, scalar, scalar],
                jit_compile=self.jit_compile,
            )
        else:

            def raw_numpy(images_u8):
                heads = self.forward(np.asarray(images_u8, np.float32) * np.float32(1.0 / 255.0))
                return [np.asarray(h, np.float32) for h in heads]

            self._raw_fn = raw_numpy
            self._pipeline_fn = lambda images_u8, conf, iou: self._postprocess_fn(raw_numpy(images_u8), conf, iou)

    # ------------------------------------------------------------------ stages
    def preprocess(self, images: Sequence[np.ndarray]) -> tuple[np.ndarray, list[LetterboxInfo]]:
        """Letterbox uint8 RGB (H, W, 3) images into one uint8 batch (N, in_h, in_w, 3)."""
        in_h, in_w = self.input_shape
        batch = np.empty((len(images), in_h, in_w, 3), dtype=np.uint8)
        infos = []
        for i, image in enumerate(images):
            image = np.asarray(image)
            if image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] != 3:
                raise ValueError(f"images must be uint8 (H, W, 3) RGB arrays, got {image.dtype} {image.shape}")
            infos.append(letterbox(image, self.input_shape, out=batch[i])[1])
        return batch, infos

    def raw_outputs(self, batch: np.ndarray) -> list[np.ndarray]:
        """Raw heads (coarse first) for a letterboxed uint8 batch (N, in_h, in_w, 3)."""
        return [np.asarray(h) for h in self._raw_fn(batch)]

    def postprocess_raw(self, raw_heads: Sequence, infos: Sequence[LetterboxInfo]) -> list[Detections]:
        """Decode + NMS raw heads (from `raw_outputs`) and map boxes to the original images."""
        outputs = self._postprocess_fn(list(raw_heads), self.conf, self.nms_iou)
        return self._to_detections(outputs, infos)

    def _to_detections(self, outputs, infos: Sequence[LetterboxInfo]) -> list[Detections]:
        boxes, scores, class_ids, num_valid = (np.asarray(t) for t in outputs)
        results = []
        for i, info in enumerate(infos):
            n = int(num_valid[i])
            results.append(
                Detections(
                    unletterbox_boxes(boxes[i, :n], info),
                    scores[i, :n].astype(np.float32),
                    class_ids[i, :n].astype(np.int32),
                )
            )
        return results

    def detect_batch(self, batch: np.ndarray, infos: Sequence[LetterboxInfo]) -> list[Detections]:
        """Model + decode + NMS on a letterboxed uint8 batch, boxes mapped back through `infos`."""
        return self._to_detections(self._pipeline_fn(batch, self.conf, self.nms_iou), infos)

    def detect(self, images: Sequence[np.ndarray], batch_size: int | None = None) -> list[Detections]:
        """Detect objects in uint8 RGB (H, W, 3) images of any sizes.

        Returns: one `Detections` per image, boxes in pixel xyxy of that image.
        """
        if isinstance(images, np.ndarray) and images.ndim == 3:
            raise ValueError("detect() takes a list of images; wrap a single image as [image]")
        batch_size = batch_size or self.batch_size
        results: list[Detections] = []
        for start in range(0, len(images), batch_size):
            batch, infos = self.preprocess(images[start : start + batch_size])
            results.extend(self.detect_batch(batch, infos))
        return results

    def letterbox_info(self, image_hw: tuple[int, int]) -> LetterboxInfo:
        """Where an image of (h, w) lands in this detector's input."""
        return letterbox_info(image_hw, self.input_shape)


def load_model(path: str | Path, half: bool = False):
    """Load a saved `nets.yolo.YoloV4Tiny` from a `.keras` file.

    half: rebuild it under a mixed-precision policy: mixed_float16 on a GPU; on a CPU
        mixed_bfloat16 (fast only with AMX / AVX512-BF16; see benchmarks/bench_inference.py).

    Raises ModelLoadError (naming the file) when the file is missing, not a Keras archive, or a
    Keras model that is not a YoloV4Tiny.
    """
    import keras

    from nets.yolo import YoloV4Tiny  # registers our layers for deserialisation

    path = Path(path)
    if not path.is_file():
        raise ModelLoadError(f"{path}: no such file")
    if path.suffix.lower() in (".weights", ".cfg"):
        raise ModelLoadError(f"{path}: a darknet file; convert it to a .keras model first (utils/darknet.py)")
    if path.suffix.lower() != ".keras" or not zipfile.is_zipfile(path):
        raise ModelLoadError(f"{path}: not a .keras model file (expected a YoloV4Tiny saved with model.save)")
    try:
        model = keras.saving.load_model(path, compile=False)
    except (ValueError, TypeError, KeyError, OSError, AttributeError, zipfile.BadZipFile) as err:
        raise ModelLoadError(f"{path}: cannot load as a YoloV4Tiny model ({type(err).__name__}: {err})") from None
    if not isinstance(model, YoloV4Tiny):
        raise ModelLoadError(f"{path}: a Keras {type(model).__name__}, not a YoloV4Tiny model of ours")
    if half:
        model = to_mixed_precision(model)
    return model


def mixed_precision_policy() -> str:
    """mixed_float16 on a GPU, mixed_bfloat16 on a CPU."""
    return "mixed_float16" if tf.config.list_physical_devices("GPU") else "mixed_bfloat16"


def to_mixed_precision(model, policy: str | None = None):
    """A copy of a YoloV4Tiny built under a mixed-precision policy, with the same weights.

    The heads stay float32 (nets.yolo), so decoding sees float32.
    """
    import keras

    from nets.yolo import YoloV4Tiny

    policy = policy or mixed_precision_policy()
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(policy)
    try:
        copy = YoloV4Tiny.from_config(model.get_config())
    finally:
        keras.config.set_dtype_policy(previous)
    copy.set_weights(model.get_weights())
    return copy
