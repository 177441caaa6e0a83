"""What travels with an exported model: its metadata (class names, anchors, input size, ...) and
the names of its input and outputs.

Shared by the exporter (utils/interop/export.py), which writes it, and the backends
(utils/interop/backends.py), which read it; neither needs the other for it.

    SavedModel:  <dir>/assets/yolo_export.json
    TFLite:      <file>.tflite.json next to the file
    ONNX:        <file>.onnx.json next to the file, and the same JSON in the model's
                 metadata_props (key "yolo_export"), so the .onnx alone is enough
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from nets.model_data import STRIDES

INPUT_NAME = "images"
OUTPUT_NAMES = ("p5", "p4")  # coarse first, as the model outputs them
NMS_SIGNATURE = "detect"
# --include-nms (ONNX, TFLite): the scalar inputs besides INPUT_NAME and the outputs besides OUTPUT_NAMES.
NMS_INPUTS = ("score_threshold", "iou_threshold")
NMS_OUTPUTS = ("boxes", "scores", "classes", "valid")
METADATA_KEY = "yolo_export"
SAVED_MODEL_METADATA = Path("assets") / f"{METADATA_KEY}.json"

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
    Raises FileNotFoundError / ValueError naming the file when there is none or it is unusable.
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
    except json.JSONDecodeError as err:
        raise ValueError(f"{source}: not valid JSON ({err})") from None
    missing = [k for k in ("num_classes", "anchors", "anchors_mask", "scale_x_y", "input_shape") if k not in metadata]
    if missing:
        raise ValueError(f"{source}: export metadata lacks {missing}")
    return metadata


def write_metadata(path: Path, data: dict) -> None:
    """Write the metadata JSON (see `metadata_path` for where it goes)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
