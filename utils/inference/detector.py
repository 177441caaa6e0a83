"""The detector for library users: images in, boxes out.

    detector = load_detector("logs/best.keras", conf=0.5)
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
        --utils.inference.postprocess: decode + per-class NMS + box merge--> padded boxes in the network input
        --utils.inference.letterbox.unletterbox_boxes--> pixel xyxy in each original image.

The raw forward is any callable with that contract. A TensorFlow-traceable one (a Keras model,
`graph_forward=True`) is traced together with the /255, the decoding and the NMS into ONE
`tf.function` with a fixed input signature, so a batch costs one graph call. Any other callable
(OpenCV DNN in utils/interop/backends.py; ONNX Runtime or TFLite interpreters the same way;
`graph_forward=False`) gets a float32 NumPy array and returns NumPy heads; decoding and NMS then
run as their own compiled graph. To add a backend, build its raw forward and call
`Detector(forward, num_classes=..., anchors=..., ...)`, or hand a Keras model (e.g. one converted
from darknet cfg + weights by utils/interop/darknet.py) to `Detector.from_model`.

On the other Keras backends (KERAS_BACKEND=jax, ...; `keras.backend.backend()`), no TensorFlow
is imported: a Keras model runs through its own compiled predict function (`predict_on_batch`,
jitted by JAX), the heads are decoded by the same keras.ops code (jitted too on JAX), and the
per-class NMS runs on the host in NumPy (`non_max_suppression_host`, the same results as the
TensorFlow NMS); every forward, `graph_forward` or not, then gets a float32 NumPy array and may
return arrays of any kind. What needs TensorFlow there (half precision, the attention and Grad-CAM
pictures, exporting) raises `TensorFlowRequired`, naming it.

Speed choices, each measured by benchmarks/bench_inference.py --variants on CPU: the Keras path
runs an inference-only copy of the graph with the convolution weights as graph constants and the
batch-norms folded into them (`frozen_forward`, utils/inference/folding.py; faster than calling
the Keras model, `--variants` prints both; the trained model is not changed); XLA (`jit_compile=True`) was
slower, so it is off; letterbox with cv2 outside the graph was not slower than resizing inside it
(and keeps one graph for all image sizes).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import keras
import numpy as np

from nets.model_data import DEFAULT_INPUT_SHAPE, STRIDES, check_input_hw
from utils.defaults import CONF_THRESHOLD, MAX_DETECTIONS, MERGE_IOU, NMS_IOU
from utils.errors import YoloError
from utils.inference.letterbox import LetterboxInfo, letterbox, letterbox_info, unletterbox_boxes
from utils.inference.postprocess import (
    decode_outputs,
    non_max_suppression_best_first,
    non_max_suppression_host,
    with_merged_boxes,
)

RawForward = Callable[[object], Sequence]


class TensorFlowRequired(YoloError, ValueError):
    """Something only the TensorFlow backend of Keras does, asked for on another one
    (KERAS_BACKEND=jax, ...); the message names it."""


def on_tensorflow() -> bool:
    """Whether Keras runs on TensorFlow (the default; KERAS_BACKEND picks another)."""
    return keras.backend.backend() == "tensorflow"


def require_tensorflow(what: str) -> None:
    """Raise `TensorFlowRequired` naming `what` unless Keras runs on TensorFlow."""
    if not on_tensorflow():
        raise TensorFlowRequired(
            f"{what} needs TensorFlow, but Keras runs on {keras.backend.backend()} here "
            f"(KERAS_BACKEND={keras.backend.backend()}); run with KERAS_BACKEND=tensorflow"
        )


def _to_unit_float(images_u8) -> np.ndarray:
    """uint8 images -> float32 in [0, 1], the values the graph's cast and multiply give, in one pass."""
    return np.multiply(images_u8, np.float32(1.0 / 255.0), dtype=np.float32)


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


class Detector:
    """A YOLOv4-tiny detector: a raw forward plus letterbox, decoding and per-class NMS.

    Args:
        forward: raw forward, float32 [0, 1] (N, in_h, in_w, 3) -> raw heads, coarse first
            (see the module docstring).
        num_classes, anchors, anchors_mask, scale_x_y: how to decode the heads (the model's).
        input_shape: network input (height, width); multiples of 32.
        class_names: names for `class_ids`; numbers as strings when None.
        conf: score threshold. nms_iou: per-class NMS IoU threshold.
        merge_iou: each kept box becomes the weighted mean of the boxes of its class overlapping it
            by more than this (utils.inference.postprocess.merge_boxes); 1: off. A model exported
            with NMS inside (`nms_forward`) merges as it was exported (its metadata's merge_iou).
        max_detections: most detections kept per image.
        batch_size: images per graph call in `detect`.
        graph_forward: True when `forward` can be traced by TensorFlow (fused into one graph);
            on the other Keras backends every forward is called with NumPy (module docstring).
        jit_compile: compile the graph with XLA (see benchmarks/bench_inference.py for whether
            that helps on your machine; off by default, it is slower on CPU for this model).
            On JAX the forward and the decoding are XLA-compiled whatever it says.
        nms_forward: for a model with decoding and NMS inside (export.py --include-nms), its
            (float32 [0, 1] images, conf, nms_iou) -> boxes (N, K, 4) pixel xyxy in the network
            input, scores (N, K), classes (N, K), valid (N,), as `non_max_suppression` returns them;
            `detect` then uses it (K >= max_detections) and `forward` serves `raw_outputs` only.
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
        conf: float = CONF_THRESHOLD,
        nms_iou: float = NMS_IOU,
        merge_iou: float = MERGE_IOU,
        max_detections: int = MAX_DETECTIONS,
        batch_size: int = 8,
        graph_forward: bool = True,
        jit_compile: bool = False,
        nms_forward: Callable | None = None,
    ):
        if class_names is not None and len(class_names) != num_classes:
            raise ValueError(f"{len(class_names)} class names for a model with {num_classes} classes")
        if not 0.0 <= conf <= 1.0 or not 0.0 <= nms_iou <= 1.0 or not 0.0 <= merge_iou <= 1.0:
            raise ValueError(f"conf, nms_iou and merge_iou must be in [0, 1], got {conf}, {nms_iou}, {merge_iou}")
        if max_detections < 1 or batch_size < 1:
            raise ValueError("max_detections and batch_size must be >= 1")
        self.forward = forward
        self.num_classes = int(num_classes)
        self.anchors = np.asarray(anchors, dtype=np.float32)
        self.anchors_mask = [list(m) for m in anchors_mask]
        self.scale_x_y = float(scale_x_y)
        self.input_shape = check_input_hw(input_shape)
        self.class_names = list(class_names) if class_names is not None else [str(i) for i in range(num_classes)]
        self.conf = float(conf)
        self.nms_iou = float(nms_iou)
        self.merge_iou = float(merge_iou)
        self.max_detections = int(max_detections)
        self.batch_size = int(batch_size)
        self.graph_forward = graph_forward
        self.jit_compile = jit_compile
        self.nms_forward = nms_forward
        self._build_functions()

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_model(cls, model, *, input_shape: Sequence[int] | None = None, freeze: bool = True, **kwargs):
        """Wrap a `nets.yolo.YoloV4Tiny` (trained, loaded or converted from darknet).

        input_shape: (h, w); the model's own fixed size, else 416x416. Any multiple of 32 works:
            a model built for another size runs at this one with its weights (`at_input_size`).
        freeze: run an inference-only copy of the graph, convolution weights as constants and
            batch-norms folded into them (`frozen_forward`); False calls the Keras model itself.
            TensorFlow only: on the other Keras backends the model runs through its compiled
            `predict_on_batch` whatever `freeze` says.
        kwargs: the other `Detector` arguments (conf, nms_iou, max_detections, batch_size, ...).
        """
        fixed = tuple(model.image_shape[:2])
        if input_shape is None:
            input_shape = fixed if None not in fixed else DEFAULT_INPUT_SHAPE
        else:
            input_shape = check_input_hw(input_shape)
            model = model.at_input_size(input_shape)
        if not on_tensorflow():
            forward = model.predict_on_batch  # jitted by the backend (JAX), NumPy heads
        elif freeze:
            from utils.inference.folding import frozen_forward

            forward = frozen_forward(model)
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

    def _build_functions(self) -> None:
        if on_tensorflow():
            self._build_graph_functions()
        else:
            self._build_host_functions()

    def _build_graph_functions(self) -> None:
        """TensorFlow: the pipeline as one tf.function (a graph forward), or the forward then a
        compiled decode + NMS."""
        import tensorflow as tf

        in_h, in_w = self.input_shape
        image_spec = tf.TensorSpec([None, in_h, in_w, 3], tf.uint8)
        scalar = tf.TensorSpec([], tf.float32)
        decode_args = (self.anchors, self.anchors_mask, self.num_classes, self.input_shape, self.scale_x_y)
        max_det, merge_iou = self.max_detections, self.merge_iou

        def postprocess(raw_heads, conf, iou):
            boxes, scores = decode_outputs(raw_heads, *decode_args)
            kept = non_max_suppression_best_first(boxes, scores, conf, iou, max_det)
            return with_merged_boxes(kept, boxes, scores, merge_iou)

        head_specs = [
            tf.TensorSpec([None, in_h // s, in_w // s, len(m) * (5 + self.num_classes)], tf.float32)
            for s, m in zip(STRIDES, self.anchors_mask, strict=True)
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

            # XLA (when asked) compiles the forward only: it has no kernel for the NMS op.
            self._raw_fn = tf.function(raw, input_signature=[image_spec], jit_compile=self.jit_compile)
            forward_in_graph = self._raw_fn if self.jit_compile else raw
            self._pipeline_fn = tf.function(
                lambda images_u8, conf, iou: postprocess(forward_in_graph(images_u8), conf, iou),
                input_signature=[image_spec, scalar, scalar],
            )
        else:

            def raw_numpy(images_u8):
                heads = self.forward(_to_unit_float(images_u8))
                return [np.asarray(h, np.float32) for h in heads]

            self._raw_fn = raw_numpy
            self._pipeline_fn = lambda images_u8, conf, iou: self._postprocess_fn(raw_numpy(images_u8), conf, iou)
        self._set_nms_forward()

    def _build_host_functions(self) -> None:
        """Another Keras backend (no TensorFlow): the forward on a float32 NumPy batch, the heads
        decoded by keras.ops (jitted on JAX), the NMS on the host in NumPy."""
        decode_args = (self.anchors, self.anchors_mask, self.num_classes, self.input_shape, self.scale_x_y)
        max_det, merge_iou = self.max_detections, self.merge_iou

        def decode(raw_heads):
            return decode_outputs(raw_heads, *decode_args)

        if keras.backend.backend() == "jax":
            import jax

            decode = jax.jit(decode)  # one compiled call per head shapes, as the tf.function is

        def raw_numpy(images_u8):
            heads = self.forward(_to_unit_float(images_u8))
            return [keras.ops.convert_to_numpy(h).astype(np.float32, copy=False) for h in heads]

        def postprocess(raw_heads, conf, iou):
            boxes, scores = (keras.ops.convert_to_numpy(t) for t in decode([np.asarray(h) for h in raw_heads]))
            kept = non_max_suppression_host(boxes, scores, conf, iou, max_det)
            return tuple(keras.ops.convert_to_numpy(t) for t in with_merged_boxes(kept, boxes, scores, merge_iou))

        self._raw_fn = raw_numpy
        self._postprocess_fn = postprocess
        self._pipeline_fn = lambda images_u8, conf, iou: postprocess(raw_numpy(images_u8), conf, iou)
        self._set_nms_forward()

    def _set_nms_forward(self) -> None:
        """With `nms_forward` (decoding and NMS inside the model), `detect` runs it."""
        max_det = self.max_detections
        if self.nms_forward is not None:

            def nms_in_model(images_u8, conf, iou):
                images = _to_unit_float(images_u8)
                boxes, scores, classes, valid = (np.asarray(t) for t in self.nms_forward(images, conf, iou))
                # Sorted best first over all classes: the first max_det rows are the NMS with K = max_det.
                return boxes[:, :max_det], scores[:, :max_det], classes[:, :max_det], np.minimum(valid, max_det)

            self._pipeline_fn = nms_in_model

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
