"""What travels with an exported model: its metadata (class names, anchors, input size, ...) and
the names of its input and outputs.

Shared by the exporter (utils/interop/export.py), which writes it, and the backends
(utils/interop/backends.py), which read it; neither needs the other for it.

    SavedModel:  <dir>/assets/yolo_export.json
    TFLite:      <file>.tflite.json next to the file
    ONNX:        <file>.onnx.json next to the file, and the same JSON in the model's
                 metadata_props (key "yolo_export"), so the .onnx alone is enough
    OpenVINO:    <file>.xml.json next to the IR's .xml

`read_metadata` checks what it reads (`check_metadata`): class count and names, anchors (finite,
positive), masks (indices into the anchors), scale_x_y, input size and head widths must agree, or
a `MetadataError` names the file; a hand-edited or foreign sidecar never reaches the decoder.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

from nets.model_data import MAX_CLASSES, STRIDES, InputSizeError, check_input_hw
from utils.defaults import MERGE_IOU
from utils.errors import YoloError

INPUT_NAME = "images"
OUTPUT_NAMES = ("p5", "p4")  # coarse first, as the model outputs them
NMS_SIGNATURE = "detect"
# --include-nms (ONNX, TFLite): the scalar inputs besides INPUT_NAME and the outputs besides OUTPUT_NAMES.
NMS_INPUTS = ("score_threshold", "iou_threshold")
NMS_OUTPUTS = ("boxes", "scores", "classes", "valid")
METADATA_KEY = "yolo_export"
SAVED_MODEL_METADATA = Path("assets") / f"{METADATA_KEY}.json"
REQUIRED_KEYS = ("num_classes", "anchors", "anchors_mask", "scale_x_y", "input_shape")


class MetadataError(YoloError, ValueError):
    """Export metadata that cannot be used (not JSON, a key missing, values that disagree); the
    message names the file."""

def export_metadata(
    model,
    fmt: str,
    input_hw: tuple[int, int],
    precision: str = "fp32",
    include_nms: bool = False,
    class_names: Sequence[str] | None = None,
    max_detections: int | None = None,
) -> dict:
    """What a runtime needs to decode an exported model, JSON-ready."""
    import keras
    import tensorflow as tf

    names = list(class_names) if class_names is not None else model.class_names
    num_outputs = len(model.anchors_mask[0]) * (5 + model.num_classes)
    metadata = {
        "format": fmt,
        "precision": precision,
        "num_classes": int(model.num_classes),
        "class_names": names,
        "anchors": [[float(w), float(h)] for w, h in model.anchors],
        "anchors_mask": [list(map(int, m)) for m in model.anchors_mask],
        "scale_x_y": float(model.scale_x_y),
        "strides": list(STRIDES),
        "attention": model.attention,
        "attention_at": list(getattr(model, "attention_at", ())),
        "fusion": getattr(model, "fusion", "concat"),
        "input_shape": [int(input_hw[0]), int(input_hw[1])],
        "input": {"name": INPUT_NAME, "dtype": "float32", "layout": "NHWC", "range": "RGB [0, 1], letterboxed"},
        "outputs": [
            {"name": name, "shape": [None, input_hw[0] // s, input_hw[1] // s, num_outputs]}
            for name, s in zip(OUTPUT_NAMES, STRIDES)
        ],
        "batch_size": None,  # any; TFLite: 1
        "include_nms": bool(include_nms),
        "exported_with": {"tensorflow": tf.__version__, "keras": keras.__version__},
    }
    if include_nms:
        metadata["nms_signature"] = NMS_SIGNATURE
        metadata["max_detections"] = int(max_detections)
        metadata["merge_iou"] = MERGE_IOU  # the box merge inside (postprocess.merge_boxes); 1: none
    return metadata


def metadata_path(path: str | Path) -> Path:
    """Where the metadata of an exported artefact lives (see the module docstring)."""
    path = Path(path)
    if path.is_dir():
        return path / SAVED_MODEL_METADATA
    return path.with_name(path.name + ".json")


def read_metadata(path: str | Path) -> dict:
    """The metadata written by `export_model` for the artefact at `path`.

    For an .onnx file without its sidecar JSON, the copy in the model's metadata_props is used.
    Raises FileNotFoundError naming the file when there is none, ValueError when the .onnx is not
    an ONNX model, MetadataError (a ValueError) when the metadata is unusable (`check_metadata`).
    """
    path = Path(path)
    sidecar = metadata_path(path)
    if sidecar.is_file():
        text = sidecar.read_text(encoding="utf-8")
        source = sidecar
    elif path.suffix.lower() == ".onnx" and path.is_file():
        import onnx
        from google.protobuf.message import DecodeError

        try:
            model = onnx.load(str(path), load_external_data=False)
        except DecodeError as err:  # not a ModelProto: a truncated or foreign file
            raise ValueError(f"{path}: not an ONNX model ({err})") from None
        props = {p.key: p.value for p in model.metadata_props}
        if METADATA_KEY not in props:
            raise FileNotFoundError(f"{path}: no {sidecar.name} next to it and no {METADATA_KEY!r} metadata inside")
        text, source = props[METADATA_KEY], path
    else:
        raise FileNotFoundError(
            f"{path}: no metadata at {sidecar} (class names, anchors, input size); re-export it with export.py"
        )
    try:
        metadata = json.loads(text)
    except ValueError as err:  # JSONDecodeError, or an integer of more digits than Python converts
        raise MetadataError(f"{source}: not valid JSON ({err})") from None
    except RecursionError:
        raise MetadataError(f"{source}: not valid JSON (nested too deeply)") from None
    check_metadata(metadata, source)
    return metadata


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_positive(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and 0 < value < math.inf


def check_metadata(metadata, source: str | Path) -> None:
    """MetadataError naming `source` unless `metadata` is what `export_metadata` writes, in the
    parts the backends and the Detector use: 1 to MAX_CLASSES classes (and as many names, when
    named), anchors as finite positive (w, h) pairs, two masks of equal length indexing them, a
    finite positive scale_x_y, an input size the model takes, and heads as wide as
    masks x (5 + classes)."""

    def fail(what: str) -> None:
        raise MetadataError(f"{source}: export metadata {what}")

    if not isinstance(metadata, dict):
        fail(f"must be a JSON object, not {type(metadata).__name__}")
    missing = [k for k in REQUIRED_KEYS if k not in metadata]
    if missing:
        fail(f"lacks {missing}")
    num_classes = metadata["num_classes"]
    if not _is_int(num_classes) or not 1 <= num_classes <= MAX_CLASSES:
        fail(f"num_classes must be an integer from 1 to {MAX_CLASSES}, got {str(num_classes)[:40]}")
    names = metadata.get("class_names")
    if names is not None and (not isinstance(names, list) or not all(isinstance(n, str) for n in names)):
        fail("class_names must be a list of names")
    if names is not None and len(names) != num_classes:
        fail(f"has {len(names)} class_names for num_classes {num_classes}")
    anchors = metadata["anchors"]
    if (
        not isinstance(anchors, list)
        or not anchors
        or not all(isinstance(a, list) and len(a) == 2 and all(map(_is_positive, a)) for a in anchors)
    ):
        fail("anchors must be [width, height] pairs of finite positive numbers")
    masks = metadata["anchors_mask"]
    if (
        not isinstance(masks, list)
        or len(masks) != len(STRIDES)
        or not all(isinstance(m, list) and m and all(_is_int(i) for i in m) for m in masks)
        or len({len(m) for m in masks}) != 1
    ):
        fail(f"anchors_mask must be {len(STRIDES)} lists of anchor indices of one length, got {str(masks)[:80]}")
    if not all(0 <= i < len(anchors) for m in masks for i in m):
        fail(f"anchors_mask {masks} refers past the {len(anchors)} anchors")
    if not _is_positive(metadata["scale_x_y"]):
        fail(f"scale_x_y must be a finite positive number, got {str(metadata['scale_x_y'])[:40]}")
    try:
        check_input_hw(metadata["input_shape"] if isinstance(metadata["input_shape"], list) else None)
    except InputSizeError as err:
        fail(f"input_shape: {err}")
    width = len(masks[0]) * (5 + num_classes)
    for output in metadata.get("outputs") or []:
        shape = output.get("shape") if isinstance(output, dict) else None
        if not isinstance(shape, list) or not shape or shape[-1] != width:
            fail(
                f"output {str(output)[:80]} does not end in {width} channels "
                f"({len(masks[0])} anchors x (5 + {num_classes} classes))"
            )
    if metadata.get("include_nms") and not (_is_int(metadata.get("max_detections")) and metadata["max_detections"] > 0):
        fail("with include_nms needs max_detections, a positive integer")


def write_metadata(path: Path, data: dict) -> None:
    """Write the metadata JSON (see `metadata_path` for where it goes)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
