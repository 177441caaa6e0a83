"""The model's fixed facts (strides, anchor masks, input size) and the files in `model_data/`.

This is the one place these constants live; everything else imports them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from utils.errors import YoloError

MODEL_DATA_DIR = Path(__file__).resolve().parent.parent / "model_data"
DEFAULT_ANCHORS_PATH = MODEL_DATA_DIR / "yolo_anchors.txt"
DEFAULT_CLASSES_PATH = MODEL_DATA_DIR / "voc_classes.txt"
COCO_CLASSES_PATH = MODEL_DATA_DIR / "coco_classes.txt"

# Network input (height, width). Any multiple of INPUT_MULTIPLE works; 416 is darknet's default.
DEFAULT_INPUT_SHAPE = (416, 416)
INPUT_MULTIPLE = 32
# The largest input side. At 4096x4096 the first convolution's output alone is 0.5 GB per image
# (float32); a darknet cfg or a command line asking for 32000 would take the machine's memory
# before anything could say no. (utils/cli.py's --input-size help says this number.)
MAX_INPUT_SIDE = 4096
# The most classes a model may have: each adds 3 * (512 + 256 + 2) weights and 3 channels to both
# heads (LVIS has 1,203 classes); a cfg's classes=300000 asked for 6 GB.
MAX_CLASSES = 10_000

# The two YOLO heads, coarse first: P5 (stride 32, 13x13 at 416) then P4 (stride 16, 26x26).
STRIDES = (32, 16)
# Which anchors each head uses, indices into the 6 anchors. Darknet's yolov4-tiny.cfg uses
# masks 3,4,5 and 1,2,3: anchor 0 is never used and anchor 3 is shared. We keep darknet's choice
# so that darknet weights decode as darknet decodes them.
ANCHORS_MASK = ((3, 4, 5), (1, 2, 3))
# The two head convs (P5, P4) by darknet cfg index (their layer names are conv_29 and conv_36);
# the [yolo] layer that decodes each follows it in the cfg.
HEAD_CONV_INDICES = (29, 36)
# Darknet's yolov4-tiny.cfg decodes centres with sigmoid(t) * scale_x_y - (scale_x_y - 1) / 2.
DARKNET_SCALE_X_Y = 1.05


class ModelDataError(YoloError, ValueError):
    """A class-names or anchors file that cannot be used; the message names the file."""


class InputSizeError(YoloError, ValueError):
    """A network input size the model cannot take."""


def check_input_hw(input_hw) -> tuple[int, int]:
    """(height, width) as ints; InputSizeError unless both are positive multiples of INPUT_MULTIPLE,
    at most MAX_INPUT_SIDE.

    The one check of an input size: the scripts' --input-size (utils/cli.py), the Detector and
    the exporter all call it.
    """
    try:
        h, w = (int(v) for v in input_hw)
    except (TypeError, ValueError):
        raise InputSizeError(f"input size must be (height, width), got {input_hw!r}") from None
    if not (0 < h <= MAX_INPUT_SIDE and 0 < w <= MAX_INPUT_SIDE) or h % INPUT_MULTIPLE or w % INPUT_MULTIPLE:
        raise InputSizeError(
            f"input size must be positive multiples of {INPUT_MULTIPLE}, at most {MAX_INPUT_SIDE}, got {(h, w)}"
        )
    return h, w


def parse_input_size(text: str) -> tuple[int, int]:
    """An input size written as the scripts and settings files take it: "416" -> (416, 416);
    "320x416" or "320,416" -> (320, 416), as (height, width); both positive multiples of
    INPUT_MULTIPLE, at most MAX_INPUT_SIDE, else InputSizeError.
    """
    parts = str(text).lower().replace(",", "x").split("x")
    try:
        values = [int(part) for part in parts]
    except ValueError:
        values = []
    if len(values) == 1:
        values *= 2
    if len(values) != 2 or any(not 0 < v <= MAX_INPUT_SIDE or v % INPUT_MULTIPLE for v in values):
        raise InputSizeError(
            f"input size must be SIZE or HEIGHTxWIDTH, positive multiples of {INPUT_MULTIPLE}, "
            f"at most {MAX_INPUT_SIDE}, got {str(text)[:40]!r}"
        )
    return values[0], values[1]


def _read_text(path: str | Path) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise ModelDataError(f"{path}: cannot read ({err})") from None


def load_anchors(path: str | Path = DEFAULT_ANCHORS_PATH) -> np.ndarray:
    """Read anchors written as `w,h, w,h, ...` (pixels at the network input).

    Returns: float32 array, shape (num_anchors, 2), columns (width, height).
    """
    text = _read_text(path).replace("\n", ",")
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError as err:
        raise ModelDataError(f"{path}: anchors must be comma-separated numbers ({err})") from None
    if not values or len(values) % 2:
        raise ModelDataError(f"{path}: expected an even number of anchor values, found {len(values)}")
    return np.asarray(values, dtype=np.float32).reshape(-1, 2)


def load_class_names(path: str | Path = DEFAULT_CLASSES_PATH) -> list[str]:
    """Read one class name per line; blank lines are ignored."""
    names = [line.strip() for line in _read_text(path).splitlines() if line.strip()]
    if not names:
        raise ModelDataError(f"{path}: no class names found")
    if len(set(names)) != len(names):
        duplicated = sorted({n for n in names if names.count(n) > 1})
        raise ModelDataError(f"{path}: duplicated class names {duplicated}")
    return names
