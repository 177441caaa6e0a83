"""Export a YoloV4Tiny to SavedModel, TFLite (fp32, fp16, int8), ONNX or OpenVINO IR, with what decoding needs.

Every artefact computes the model's *raw forward* at a fixed input size (the contract of
`utils.inference.detector.Detector`):

    input  "images": float32 (N, in_h, in_w, 3), RGB in [0, 1], letterboxed (utils.inference.letterbox)
    output "p5":     float32 (N, in_h/32, in_w/32, A*(5+C))   raw head, coarse
    output "p4":     float32 (N, in_h/16, in_w/16, A*(5+C))   raw head, fine

and carries a metadata dict (`export_metadata`: class names, anchors, anchors_mask, scale_x_y,
input size, precision, ...) so the detector decodes it exactly as it decodes the Keras model:

    SavedModel:  <dir>/assets/yolo_export.json
    TFLite:      <file>.tflite.json next to the file
    ONNX:        <file>.onnx.json next to the file, and the same JSON in the model's
                 metadata_props (key "yolo_export"), so the .onnx alone is enough
    OpenVINO:    <file>.xml.json next to <file>.xml (the IR's graph; its weights are <file>.bin)

All four trace `utils.inference.detector.frozen_forward` (the Detector's forward: conv weights as graph
constants, batch-norms folded), so an export computes what the Keras Detector computes.

Routes (chosen because they work on Keras 3 and cannot write a silently broken model):
    SavedModel: `keras.export.ExportArchive` (tracks the Keras variables properly).
    TFLite:     `tf.lite.TFLiteConverter.from_saved_model` on that SavedModel (written with a
                static batch of 1: the backend invokes one image at a time, and XNNPACK then
                sees no dynamic-shape ops splitting the graph). A hand-made
                `tf.Module` SavedModel or `from_concrete_functions` on an unfrozen function keeps
                READ_VARIABLE ops and writes a model that fails or outputs NaN.
    ONNX:       `tf2onnx.convert.from_function` on a tf.function with a fixed input signature
                (`tf2onnx.convert.from_keras` fails on Keras 3).
    OpenVINO:   the SavedModel above (written to a temporary folder) read by OpenVINO's TensorFlow
                frontend (`openvino.Core.read_model`), its outputs put in our order (p5, p4), and
                `openvino.save_model` with fp32 weights (compress_to_fp16=False; its default halves
                them). Keras' `model.export(format="openvino")` works on the TensorFlow backend but
                traces `model.call` (not the folded forward) and names the input "image" and the
                outputs "Identity:0", ...; `openvino.convert_model` goes through the same frontend
                but sends OpenVINO's usage telemetry, which reading the SavedModel does not.

Supported combinations (anything else raises `ExportError` saying what is supported):

    format        fp32   --fp16   --int8 (+ calibration images)   --include-nms            --dynamic
    saved_model   yes    no       no                              yes: signature "detect"  yes
    tflite        yes    yes      yes (full-integer, float I/O)   yes (builtin NMS op)     no
    onnx          yes    yes      yes (ORT static, QDQ)           yes (NonMaxSuppression)  yes
    openvino      yes    no       no                              no                       no

ONNX and TFLite with --include-nms: inputs `images`, float32 scalars `score_threshold` and
`iou_threshold`; outputs the raw heads `p5`, `p4` as above plus `boxes` (N, K, 4) pixel xyxy in
the network input, `scores` (N, K), `classes` (N, K) int32, `valid` (N,) int32 (the first `valid`
rows are real), K = max_detections: the Detector's decoding and per-class NMS
(postprocess.non_max_suppression, which tf2onnx converts to ONNX NonMaxSuppression; for TFLite,
postprocess.non_max_suppression_class_offset, the same result from the builtin single-class NMS),
then the Detector's box merge at utils.defaults.MERGE_IOU (the metadata's "merge_iou").

--dynamic (ONNX, SavedModel): the input is (None, None, None, 3): any batch, any height and width
that are multiples of 32; the metadata says "dynamic": true and its input_shape is the default.

The SavedModel "detect" signature (with --include-nms) takes `images` as above plus scalar
float32 `score_threshold` and `iou_threshold`, and returns `boxes` (N, K, 4) pixel xyxy **in the
network input** (undo the letterbox with utils.inference.letterbox.unletterbox_boxes), `scores` (N, K),
`classes` (N, K) int32 and `num_detections` (N,) int32 (the first num_detections rows are real),
K = max_detections. Decoding and NMS are utils.inference.postprocess, the same as the Detector's.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from nets.model_data import DEFAULT_INPUT_SHAPE, INPUT_MULTIPLE
from utils.defaults import CONF_THRESHOLD, MAX_DETECTIONS, MERGE_IOU, NMS_IOU
from utils.errors import YoloError
from utils.files import PARTIAL_MARK
from utils.interop.metadata import (
    INPUT_NAME,
    METADATA_KEY,
    NMS_INPUTS,
    NMS_OUTPUTS,
    NMS_SIGNATURE,
    OUTPUT_NAMES,
    export_metadata,
    metadata_path,
    write_metadata,
)

FORMATS = ("saved_model", "tflite", "onnx", "openvino")
PRECISIONS = ("fp32", "fp16", "int8")
# What each format supports besides fp32.
SUPPORTED_PRECISIONS = {
    "saved_model": ("fp32",),
    "tflite": ("fp32", "fp16", "int8"),
    "onnx": ("fp32", "fp16", "int8"),
    "openvino": ("fp32",),
}
SUPPORTS_NMS = {"saved_model": True, "tflite": True, "onnx": True, "openvino": False}
SUPPORTS_DYNAMIC = {"saved_model": True, "tflite": False, "onnx": True, "openvino": False}
# Why a format runs one static input shape (the --dynamic error says it).
STATIC_REASON = {
    "tflite": "its interpreter runs one static shape, which XNNPACK needs",
    "openvino": "the backend compiles the IR for the exported size",
}
# The file an exported model is written as (saved_model: a directory).
SUFFIXES = {"tflite": ".tflite", "onnx": ".onnx", "openvino": ".xml"}

ONNX_OPSET = 17
# What a SavedModel directory is made of: all an export replaces in an earlier export's folder.
SAVED_MODEL_ENTRIES = ("saved_model.pb", "fingerprint.pb", "variables", "assets")
# Int8 calibration: images taken from the calibration split (fewer if it has fewer).
DEFAULT_NUM_CALIBRATION = 100
logger = logging.getLogger("yolov4_tiny.interop")


class ExportError(YoloError, ValueError):
    """An export that cannot be done as asked (unsupported combination, bad input)."""


def check_export_options(fmt: str, precision: str = "fp32", include_nms: bool = False, dynamic: bool = False) -> None:
    """Raise ExportError for a combination `export_model` does not support, saying what is."""
    if fmt not in FORMATS:
        raise ExportError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    if precision not in PRECISIONS:
        raise ExportError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    if precision not in SUPPORTED_PRECISIONS[fmt]:
        options = {"fp16": "--fp16", "int8": "--int8"}
        where = [f for f in FORMATS if precision in SUPPORTED_PRECISIONS[f]]
        raise ExportError(
            f"{options[precision]} is not supported with --format {fmt}: {precision} export is only "
            f"implemented for {', '.join(where)} (use --format tflite {options[precision]})"
        )
    if include_nms and not SUPPORTS_NMS[fmt]:
        where = [f for f in FORMATS if SUPPORTS_NMS[f]]
        raise ExportError(
            f"--include-nms is not supported with --format {fmt} (the detector decodes and NMS's its raw "
            f"heads); it is supported with {', '.join(where)}"
        )
    if dynamic and not SUPPORTS_DYNAMIC[fmt]:
        where = [f for f in FORMATS if SUPPORTS_DYNAMIC[f]]
        raise ExportError(
            f"--dynamic is not supported with --format {fmt} ({STATIC_REASON[fmt]}); "
            f"it is supported with {', '.join(where)}"
        )


def resolve_input_hw(model, input_hw: Sequence[int] | None = None) -> tuple[int, int]:
    """The fixed (height, width) to export at: `input_hw`, else the model's fixed size, else 416x416."""
    if input_hw is None:
        fixed = tuple(model.image_shape[:2])
        input_hw = fixed if None not in fixed else DEFAULT_INPUT_SHAPE
    h, w = (int(v) for v in input_hw)
    if h <= 0 or w <= 0 or h % INPUT_MULTIPLE or w % INPUT_MULTIPLE:
        raise ExportError(f"input size must be positive multiples of {INPUT_MULTIPLE}, got {(h, w)}")
    return h, w


def _raw_forward_fn(model, input_hw: tuple[int, int], batch_size: int | None = None, dynamic: bool = False):
    """A tf.function with a fixed input signature: images -> {"p5": raw, "p4": raw}, computing
    utils.inference.detector.frozen_forward (the Detector's own forward of the Keras model).

    batch_size: None for any batch; 1 for TFLite, whose interpreter runs one image per invoke
    and whose XNNPACK delegate then sees static shapes only (no SHAPE ops splitting the graph).
    dynamic: any height and width (multiples of 32) instead of `input_hw`.
    """
    import tensorflow as tf

    from utils.inference.folding import frozen_forward

    hw = [None, None] if dynamic else list(input_hw)
    spec = tf.TensorSpec([batch_size, *hw, 3], tf.float32, name=INPUT_NAME)
    # The Detector's inference graph: conv weights as constants, batch-norms folded (what the
    # converters would do anyway; for the SavedModel it lets oneDNN fuse conv + bias + LeakyReLU).
    forward = frozen_forward(model)

    @tf.function(input_signature=[spec])
    def raw_forward(images):
        heads = forward(images)
        return {name: tf.cast(h, tf.float32) for name, h in zip(OUTPUT_NAMES, heads)}

    return raw_forward, spec


def _detect_fn(model, raw_forward, spec, input_hw, max_detections: int, nms, dynamic: bool = False):
    """A tf.function (images, score_threshold, iou_threshold) -> the raw heads plus `boxes`,
    `scores`, `classes`, `valid` (NMS_OUTPUTS): the Detector's decoding
    (utils.inference.postprocess.decode_outputs), then `nms`, one of postprocess's per-class NMS,
    then its box merge at MERGE_IOU (postprocess.merge_boxes)."""
    import tensorflow as tf

    from utils.inference.postprocess import decode_outputs, with_merged_boxes

    anchors = np.asarray(model.anchors, np.float32)
    scalars = [tf.TensorSpec([], tf.float32, name=name) for name in NMS_INPUTS]

    @tf.function(input_signature=[spec, *scalars])
    def detect(images, score_threshold, iou_threshold):
        heads = raw_forward(images)
        hw = (tf.shape(images)[1], tf.shape(images)[2]) if dynamic else input_hw
        boxes, scores = decode_outputs(
            [heads[n] for n in OUTPUT_NAMES], anchors, model.anchors_mask, model.num_classes, hw, model.scale_x_y
        )
        kept = nms(boxes, scores, score_threshold, iou_threshold, max_detections)
        boxes, scores, classes, valid = with_merged_boxes(kept, boxes, scores, MERGE_IOU, static=True)
        return {**heads, **dict(zip(NMS_OUTPUTS, (boxes, scores, classes, valid)))}

    return detect


def _write_archive(model, out: Path, endpoints: dict, metadata: dict | None = None) -> None:
    """Write `endpoints` (name -> tf.function) as a SavedModel at `out`, with `metadata` in its assets.

    `out` must be a new or empty folder, or an earlier export of ours (saved_model.pb and our
    metadata): then only the entries a SavedModel is made of (SAVED_MODEL_ENTRIES) are replaced and
    every other file in the folder is kept. Anything else is refused (ExportError). The SavedModel is
    written to a temporary folder beside `out` first, so a failure or an interruption leaves `out`
    as it was, and no temporary folder."""
    import keras

    from utils.interop.metadata import SAVED_MODEL_METADATA

    archive = keras.export.ExportArchive()
    archive.track(model)
    for name, fn in endpoints.items():
        archive.add_endpoint(name, fn)
    earlier = out.is_dir() and any(out.iterdir())
    if out.is_file() or (earlier and not (out / "saved_model.pb").is_file()):
        raise ExportError(f"--output {out}: exists and is not a SavedModel directory; choose a new path")
    if earlier and not (out / SAVED_MODEL_METADATA).is_file():
        raise ExportError(
            f"--output {out}: a SavedModel directory export.py did not write (no {SAVED_MODEL_METADATA}); "
            "choose a new path"
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}{PARTIAL_MARK}"))
    try:
        staged = staging / "saved_model"
        archive.write_out(str(staged), verbose=False)
        if metadata is not None:
            write_metadata(staged / SAVED_MODEL_METADATA, metadata)
        if not earlier:
            if out.exists():
                out.rmdir()  # empty
            os.replace(staged, out)
            return
        for name in SAVED_MODEL_ENTRIES:  # the earlier export's own entries, nothing else
            entry = out / name
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            elif entry.exists() or entry.is_symlink():
                entry.unlink()
        for entry in staged.iterdir():
            os.replace(entry, out / entry.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def export_saved_model(
    model,
    out: str | Path,
    input_hw: tuple[int, int],
    metadata: dict,
    include_nms: bool = False,
    max_detections: int = MAX_DETECTIONS,
    batch_size: int | None = None,
    dynamic: bool = False,
) -> Path:
    """Write a SavedModel directory with signature "serving_default" (raw heads) and, with
    `include_nms`, "detect" (decoded, NMS'd boxes; see the module docstring).
    batch_size: None (any) or a fixed batch size of the signatures.
    dynamic: signatures take any height and width (multiples of 32)."""
    import tensorflow as tf

    from utils.inference.postprocess import non_max_suppression

    out = Path(out)
    raw_forward, spec = _raw_forward_fn(model, input_hw, batch_size, dynamic)
    endpoints = {"serving_default": raw_forward}
    if include_nms:
        detect = _detect_fn(model, raw_forward, spec, input_hw, max_detections, non_max_suppression, dynamic)

        @tf.function(input_signature=detect.input_signature)
        def detect_signature(images, score_threshold, iou_threshold):
            out = detect(images, score_threshold, iou_threshold)
            return {
                "boxes": out["boxes"],
                "scores": out["scores"],
                "classes": out["classes"],
                "num_detections": out["valid"],
            }

        endpoints[NMS_SIGNATURE] = detect_signature
    _write_archive(model, out, endpoints, metadata)
    return out


def calibration_image_paths(
    calib_data: str | Path, split: str = "train", limit: int = DEFAULT_NUM_CALIBRATION
) -> list[Path]:
    """The image files to calibrate on: JPEGImages of `calib_data` (a VOCdevkit or VOC folder)
    listed in ImageSets/Main/`split`.txt; at most `limit`, evenly spaced over the split."""
    from utils.data.voc import find_image, find_voc_root, read_image_set

    try:
        root = find_voc_root(calib_data)
        image_ids = read_image_set(root, split)
    except FileNotFoundError as err:
        raise ExportError(f"--calib-data: {err}") from None
    if not image_ids:
        raise ExportError(f"--calib-data: {root}/ImageSets/Main/{split}.txt lists no images")
    if len(image_ids) > limit:
        picks = np.linspace(0, len(image_ids) - 1, limit).round().astype(int)
        image_ids = [image_ids[i] for i in picks]
    found = [p for p in (find_image(root, image_id) for image_id in image_ids) if p is not None]
    if not found:
        raise ExportError(f"--calib-data: none of the images of {split}.txt is in {root / 'JPEGImages'}")
    return found


def letterboxed_calibration_images(image_paths: Iterable[str | Path], input_hw: tuple[int, int]) -> np.ndarray:
    """uint8 (M, in_h, in_w, 3) network inputs, letterboxed exactly as the Detector does
    (utils.inference.letterbox.letterbox). Unreadable images are skipped with a logged warning naming them;
    ExportError when none is readable."""
    from utils.data.images import ImageLoadError, load_image
    from utils.inference.letterbox import letterbox

    images = []
    for path in image_paths:
        try:
            image = load_image(path)
        except ImageLoadError as err:
            logger.warning(f"calibration: {err}; skipped")
            continue
        images.append(letterbox(image, input_hw)[0])
    if not images:
        raise ExportError("int8 calibration: none of the calibration images could be read")
    return np.stack(images)


def export_tflite(
    saved_model_dir: str | Path,
    out: str | Path,
    precision: str = "fp32",
    calibration_paths: Sequence[str | Path] | None = None,
    input_hw: tuple[int, int] | None = None,
    with_nms_inputs: bool = False,
) -> Path:
    """Convert a SavedModel written by `export_saved_model` to a .tflite file.

    precision: "fp32"; "fp16" (fp16 weights, fp32 compute where the CPU lacks fp16);
        "int8" (full-integer weights and activations calibrated on `calibration_paths`, with
        float32 input and outputs so the runtime contract is unchanged).
    """
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_saved_model(str(saved_model_dir), signature_keys=["serving_default"])
    if precision == "fp16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif precision == "int8":
        if not calibration_paths:
            raise ExportError("--int8 needs calibration images (--calib-data VOCdevkit)")
        calibration = letterboxed_calibration_images(calibration_paths, input_hw)

        # By input name: an --include-nms graph also takes the (uncalibrated) NMS thresholds.
        extra = {name: np.array(0.5, np.float32) for name in NMS_INPUTS} if with_nms_inputs else {}

        def representative_dataset():
            for image in calibration:
                yield {INPUT_NAME: image[None].astype(np.float32) * np.float32(1.0 / 255.0), **extra}

        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = representative_dataset
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    elif precision != "fp32":
        raise ExportError(f"unknown TFLite precision {precision!r}")
    blob = converter.convert()
    out = Path(out)
    out.write_bytes(blob)
    return out


def export_onnx(
    model,
    out: str | Path,
    input_hw: tuple[int, int],
    metadata: dict,
    opset: int = ONNX_OPSET,
    include_nms: bool = False,
    max_detections: int = MAX_DETECTIONS,
    dynamic: bool = False,
    precision: str = "fp32",
    calibration_paths: Sequence[str | Path] | None = None,
) -> Path:
    """Write an ONNX model (input "images", outputs "p5", "p4") through tf2onnx.from_function.

    include_nms: also inputs "score_threshold", "iou_threshold" (float32 scalars) and outputs
        "boxes", "scores", "classes", "valid" (utils.inference.postprocess.non_max_suppression,
        which tf2onnx turns into ONNX NonMaxSuppression over every class).
    dynamic: any batch, height and width (multiples of 32).
    precision: "fp32"; "fp16" (the model traced under Keras' mixed_float16 policy: float16
        weights and convolutions but the two 1x1 heads, float32 as in training under mixed
        precision; float32 input, outputs and decoding); "int8" (ONNX Runtime
        static quantisation, QDQ, int8 weights per channel and uint8 activations, calibrated on
        `calibration_paths` letterboxed as for TFLite int8; float32 input and outputs).
    """
    import tf2onnx

    from utils.inference.postprocess import non_max_suppression

    if precision == "fp16":
        from utils.inference.precision import to_mixed_precision

        model = to_mixed_precision(model, "mixed_float16")
    elif precision == "int8" and not calibration_paths:
        raise ExportError("--int8 needs calibration images (--calib-data VOCdevkit)")
    elif precision not in ("fp32", "int8"):
        raise ExportError(f"unknown ONNX precision {precision!r}")
    raw_forward, spec = _raw_forward_fn(model, input_hw, dynamic=dynamic)
    fn, signature = raw_forward, [spec]
    if include_nms:
        fn = _detect_fn(model, raw_forward, spec, input_hw, max_detections, non_max_suppression, dynamic)
        signature = list(fn.input_signature)
    out = Path(out)
    model_proto, _ = tf2onnx.convert.from_function(
        fn,
        input_signature=signature,
        opset=opset,
        output_path=None,
        extra_opset=None,
    )
    if precision == "int8":
        model_proto = _quantize_onnx(model_proto, letterboxed_calibration_images(calibration_paths, input_hw))
    del model_proto.metadata_props[:]
    prop = model_proto.metadata_props.add()
    prop.key, prop.value = METADATA_KEY, json.dumps(metadata)
    out.write_bytes(model_proto.SerializeToString())
    return out


def export_openvino(model, out: str | Path, input_hw: tuple[int, int]) -> Path:
    """Write an OpenVINO IR: `out` (a .xml file, the graph) and the .bin of the same name (fp32
    weights), input "images" (any batch, `input_hw`), outputs "p5", "p4" in that order.

    The raw forward is written as a SavedModel in a temporary folder and read by OpenVINO's
    TensorFlow frontend (see the module docstring). Both files are written beside `out` under
    temporary names first, so a failure leaves no half-written model at `out`.
    Raises MissingRuntimeError when OpenVINO is not installed.
    """
    from utils.interop.backends import import_openvino

    ov = import_openvino()
    out = Path(out)
    raw_forward, _ = _raw_forward_fn(model, input_hw)
    with tempfile.TemporaryDirectory(prefix="yolo_openvino_") as tmp:
        saved = Path(tmp) / "saved_model"
        _write_archive(model, saved, {"serving_default": raw_forward})
        converted = ov.Core().read_model(str(saved))
        # The frontend orders the outputs by name (p4 first); the contract is coarse first.
        ordered = ov.Model([converted.output(name).get_node() for name in OUTPUT_NAMES], converted.get_parameters())
        ordered.set_friendly_name("yolov4_tiny")
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}{PARTIAL_MARK}"))
    try:
        ov.save_model(ordered, str(staging / "model.xml"), compress_to_fp16=False)
        os.replace(staging / "model.bin", out.with_suffix(".bin"))
        os.replace(staging / "model.xml", out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out


def _quantize_onnx(model_proto, calibration: np.ndarray):
    """ONNX Runtime static quantisation of an fp32 model (QDQ; per-channel int8 weights, uint8
    activations with ranges from `calibration`, uint8 letterboxed images)."""
    import onnx

    from utils.interop.backends import import_onnxruntime

    import_onnxruntime()  # its telemetry off before the quantizer imports it
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    extra = {}
    names = {i.name for i in model_proto.graph.input}
    if "score_threshold" in names:  # --include-nms: any thresholds calibrate nothing (NMS stays float)
        extra = {
            "score_threshold": np.array(CONF_THRESHOLD, np.float32),
            "iou_threshold": np.array(NMS_IOU, np.float32),
        }

    class Images(CalibrationDataReader):
        def __init__(self):
            self.images = iter(calibration)

        def get_next(self):
            image = next(self.images, None)
            if image is None:
                return None
            return {INPUT_NAME: image[None].astype(np.float32) * np.float32(1.0 / 255.0), **extra}

    with tempfile.TemporaryDirectory(prefix="yolo_quant_") as tmp:
        fp32, int8 = Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx"
        fp32.write_bytes(model_proto.SerializeToString())
        quantize_static(
            str(fp32),
            str(int8),
            Images(),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            op_types_to_quantize=["Conv", "MaxPool", "Concat"],
        )
        return onnx.load(str(int8))


def export_model(
    model,
    fmt: str,
    out: str | Path,
    *,
    input_hw: Sequence[int] | None = None,
    precision: str = "fp32",
    calib_data: str | Path | None = None,
    calib_split: str = "train",
    num_calibration: int = DEFAULT_NUM_CALIBRATION,
    include_nms: bool = False,
    max_detections: int = MAX_DETECTIONS,
    class_names: Sequence[str] | None = None,
    dynamic: bool = False,
) -> Path:
    """Export a `nets.yolo.YoloV4Tiny` and write its metadata; returns the artefact's path.

    Args:
        model: the Keras model.
        fmt: "saved_model" (a directory), "tflite", "onnx" (a file) or "openvino" (a .xml file and
            the .bin of the same name).
        out: where to write it.
        input_hw: fixed network input (height, width), any multiple of 32 (a model built for another
            size is exported with its weights at this one); the model's own, else 416x416.
        precision: "fp32", "fp16" or "int8" (see the table in the module docstring).
        calib_data: int8: a VOCdevkit / VOC folder; its JPEGImages listed in
            ImageSets/Main/`calib_split`.txt (up to `num_calibration`) calibrate the ranges.
        include_nms: SavedModel: add the "detect" signature; ONNX, TFLite: add the NMS inputs and
            outputs (see the module docstring).
        max_detections: K of the NMS outputs.
        class_names: override the names saved in the model.
        dynamic: ONNX, SavedModel: any batch, height and width (multiples of 32); `input_hw`
            is then only the default size written in the metadata.

    Raises ExportError for an unsupported combination or unusable calibration data,
    TensorFlowRequired when Keras runs on another backend (every route goes through TensorFlow).
    """
    from utils.inference.detector import require_tensorflow

    check_export_options(fmt, precision, include_nms, dynamic)
    require_tensorflow("exporting a model (export.py)")
    if precision == "int8" and calib_data is None:
        raise ExportError("--int8 needs --calib-data (a VOCdevkit whose ImageSets/Main/train.txt images calibrate it)")
    if precision != "int8" and calib_data is not None:
        raise ExportError("--calib-data is only used with --int8")
    if class_names is not None and len(class_names) != model.num_classes:
        raise ExportError(f"{len(class_names)} class names for a model with {model.num_classes} classes")
    hw = resolve_input_hw(model, input_hw)
    model = model.at_input_size(None if dynamic else hw)  # a model built for another size: its weights
    out = Path(out)
    expected_suffix = SUFFIXES.get(fmt)
    if expected_suffix and out.suffix.lower() != expected_suffix:
        raise ExportError(f"--output {out}: --format {fmt} writes a file that must end with {expected_suffix}")
    out.parent.mkdir(parents=True, exist_ok=True)
    metadata = export_metadata(model, fmt, hw, precision, include_nms, class_names, max_detections)

    if include_nms and fmt != "saved_model":
        metadata["nms_inputs"], metadata["nms_outputs"] = list(NMS_INPUTS), list(NMS_OUTPUTS)
    if dynamic:
        metadata["dynamic"] = True
        for output in metadata["outputs"]:
            output["shape"][1:3] = [None, None]
    if fmt == "saved_model":
        return export_saved_model(model, out, hw, metadata, include_nms, max_detections, dynamic=dynamic)
    if fmt == "openvino":
        export_openvino(model, out, hw)
        write_metadata(metadata_path(out), metadata)
        return out
    calibration_paths = None
    if precision == "int8":
        calibration_paths = calibration_image_paths(calib_data, calib_split, num_calibration)
        metadata["calibration"] = {"data": str(calib_data), "split": calib_split, "images": len(calibration_paths)}
    if fmt == "onnx":
        export_onnx(
            model, out, hw, metadata, include_nms=include_nms, max_detections=max_detections, dynamic=dynamic,
            precision=precision, calibration_paths=calibration_paths,
        )
    else:
        metadata["batch_size"] = 1  # the TFLite graph has a static batch of 1 (one image per invoke)
        _export_tflite_from_model(model, out, hw, metadata, precision, calibration_paths, include_nms, max_detections)
    write_metadata(metadata_path(out), metadata)
    return out


def _export_tflite_from_model(model, out, hw, metadata, precision, calibration_paths, include_nms, max_detections):
    """export_model's TFLite route: a temporary SavedModel of batch 1, then `export_tflite`."""
    with tempfile.TemporaryDirectory(prefix="yolo_export_") as tmp:
        saved = Path(tmp) / "saved_model"
        if include_nms:
            # One signature: the raw heads plus the NMS outputs, with TFLite's builtin
            # single-class NMS (postprocess.non_max_suppression_class_offset).
            from utils.inference.postprocess import non_max_suppression_class_offset

            raw_forward, spec = _raw_forward_fn(model, hw, batch_size=1)
            detect = _detect_fn(model, raw_forward, spec, hw, max_detections, non_max_suppression_class_offset)
            _write_archive(model, saved, {"serving_default": detect})
        else:
            export_saved_model(model, saved, hw, metadata, batch_size=1)
        export_tflite(saved, out, precision, calibration_paths, hw, with_nms_inputs=include_nms)
