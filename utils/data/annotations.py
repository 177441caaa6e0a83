"""The project's one annotation record, `AnnotatedImage`, and the annotation-line files that store it.

Every reader produces `AnnotatedImage` records: VOC XML (utils.data.voc), YOLO txt labels
(utils.data.yolo), COCO JSON (utils.data.coco) and the line files below; utils.data.sources picks
the reader from what a folder holds. Boxes are pixel `xyxy` in the original image as displayed
(continuous coordinates, see utils.boxes); class_ids index the class list.

Annotation lines, one image a line (voc_annotation.py writes them, train.py --train-annotations
and kmeans_for_anchors.py --annotations read them)::

    /abs/path/image.jpg x1,y1,x2,y2,class_id x1,y1,x2,y2,class_id ...
    "/abs/path/my images/图片 1.jpg" x1,y1,x2,y2,class_id ...

A path that contains whitespace (or starts with a double quote) is written as a JSON string in
double quotes; any other path as it is, so files written before keep reading the same. A line
whose path has spaces but no quotes (written by hand or by another tool) is read too: the boxes
are the trailing tokens that contain commas. Files are UTF-8. An image with no objects is a line
with only its path.

The readers' findings are `DataIssue`s: each names its file, and its `kind` says what it is
(the data check, utils.data.check, counts them by kind).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from utils.boxes import clip_boxes
from utils.errors import YoloError

# What a reader finds; files left out (the first three) and objects skipped (the next three).
UNREADABLE_ANNOTATION = "unreadable annotation"
MISSING_IMAGE = "missing image"
CORRUPT_IMAGE = "corrupt image"
UNKNOWN_CLASS = "unknown class"
DEGENERATE_BOX = "degenerate box"
BOX_OUTSIDE = "box outside the image"
# An image side no annotation can state: a reader takes a larger <size> or width as unreadable
# (Pillow itself refuses images of more than about 179 million pixels).
MAX_IMAGE_SIDE = 1 << 20
# A box this far outside its image (as a fraction of the side, plus a hair) is still inside, and
# clipped: normalised coordinates written with 6 decimals land up to ~1e-6 of the side outside.
OUTSIDE_TOLERANCE = 1e-5


class AnnotationError(YoloError, ValueError):
    """An annotation line or file that cannot be used; the message names the file (and line)."""


@dataclass(frozen=True)
class DataIssue:
    """One problem a reader or the data check found.

    Attributes:
        kind: what it is (the constants above, or utils.data.check's).
        path: the file it is about (annotation, image or class file).
        message: for the user; names the file.
        detail: what it is about, where a count by it helps (the class name of UNKNOWN_CLASS).
    """

    kind: str
    path: str
    message: str
    detail: str = ""

    def __str__(self) -> str:
        return self.message


@dataclass
class AnnotatedImage:
    """One image and its objects, as every reader returns it.

    Attributes:
        path: the image file.
        boxes: float32 (M, 4), pixel xyxy in the image as displayed.
        class_ids: int32 (M,), indices into the class list.
        difficult: bool (M,), VOC's difficult flag (COCO's iscrowd); all False when not given.
        image_id: the name evaluation and detection JSON files use (VOC id, COCO id, YOLO image
            path relative to its folder without suffix); the file stem when not given.
        size: (height, width) the annotation states (VOC <size>, COCO width/height, the YOLO
            image's header), None when it states none.
        source: the annotation file it came from ("" when none).
    """

    path: str
    boxes: np.ndarray
    class_ids: np.ndarray
    difficult: np.ndarray | None = None
    image_id: str = ""
    size: tuple[int, int] | None = None
    source: str = ""

    def __post_init__(self):
        self.path = str(self.path)
        self.boxes = np.asarray(self.boxes, dtype=np.float32).reshape(-1, 4)
        self.class_ids = np.asarray(self.class_ids, dtype=np.int32).reshape(-1)
        if self.difficult is None:
            self.difficult = np.zeros(len(self.class_ids), dtype=bool)
        self.difficult = np.asarray(self.difficult, dtype=bool).reshape(-1)
        if not self.image_id:
            self.image_id = Path(self.path).stem

    def without_difficult(self) -> AnnotatedImage:
        """A copy without the objects marked difficult (what training uses)."""
        keep = ~self.difficult
        return AnnotatedImage(
            self.path, self.boxes[keep], self.class_ids[keep], None, self.image_id, self.size, self.source
        )


def outside_image(boxes: np.ndarray, image_hw: tuple[int, int]) -> np.ndarray:
    """(M,) bool: which pixel xyxy boxes (M, 4) reach beyond an image of (height, width) by more than
    OUTSIDE_TOLERANCE of its side."""
    height, width = image_hw
    sides = np.array([width, height, width, height], dtype=np.float64)
    slack = sides * OUTSIDE_TOLERANCE + 1e-6
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    return np.any(boxes[:, :2] < -slack[:2], axis=1) | np.any(boxes[:, 2:] > sides[2:] + slack[2:], axis=1)


def sort_objects(
    source: str | Path,
    boxes: np.ndarray,
    names: Sequence[str],
    difficult: Sequence[bool],
    class_names: list[str] | None,
    image_hw: tuple[int, int] | None,
    labels: Sequence[str] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[DataIssue]]:
    """The usable objects of one image, and a `DataIssue` naming `source` for each one skipped.

    Every reader goes through this, so the formats skip the same objects: a class not in
    `class_names` (UNKNOWN_CLASS), a box of zero or negative width or height (DEGENERATE_BOX), a
    box outside the `image_hw` (height, width) image (BOX_OUTSIDE; only checked when the size is
    known; within OUTSIDE_TOLERANCE of the side it is clipped instead).

    Args:
        source: the annotation file (named in the messages).
        boxes: (M, 4) pixel xyxy.
        names: M class names.
        difficult: M flags.
        class_names: the class list; None numbers every name in order of first appearance.
        image_hw: the image's (height, width), or None.
        labels: M descriptions of the objects for the messages (default "object i").
    Returns: boxes (K, 4) float32, class_ids (K,) int32, difficult (K,) bool, issues.
    """
    source = str(source)
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    index = {name: i for i, name in enumerate(class_names)} if class_names is not None else {}
    kept_boxes, kept_ids, kept_difficult, issues = [], [], [], []

    def skip(kind: str, what: str, detail: str = "") -> None:
        issues.append(DataIssue(kind, source, f"{source}: {what}; skipped", detail))

    for number, (box, name) in enumerate(zip(boxes, names, strict=True)):
        label = labels[number] if labels is not None else f"object {number}"
        if name not in index:
            if class_names is not None:
                skip(UNKNOWN_CLASS, f"{label} has class {name!r}, not in the class list", str(name))
                continue
            index[name] = len(index)
        shown = tuple(round(float(v), 2) for v in box)
        if not np.all(np.isfinite(box)) or box[2] <= box[0] or box[3] <= box[1]:
            skip(DEGENERATE_BOX, f"{label} ({name}) has zero area {shown}")
            continue
        if image_hw is not None:
            if outside_image(box[None], image_hw)[0]:
                skip(BOX_OUTSIDE, f"{label} ({name}) box {shown} lies outside the {image_hw[1]}x{image_hw[0]} image")
                continue
            box = clip_boxes(box, image_hw)
        kept_boxes.append(box)
        kept_ids.append(index[name])
        kept_difficult.append(bool(difficult[number]))
    return (
        np.asarray(kept_boxes, dtype=np.float32).reshape(-1, 4),
        np.asarray(kept_ids, dtype=np.int32),
        np.asarray(kept_difficult, dtype=bool),
        issues,
    )


@dataclass
class DataSplit:
    """The images of one or more image sets, as a reader returns them.

    Attributes:
        name: what was read, e.g. "VOCdevkit/VOC2007:trainval" ("+"-joined for several sets).
        listing: the file or folder that lists the images (named when it lists none).
        images: one record per image that could be read (difficult objects kept and flagged).
        class_names: the class list the class_ids index.
        issues: every file left out and object skipped, each naming its file.
        left_out: image id -> the issue that left the image out (its annotation or image unreadable;
            `detail` is the reason alone).
        image_ids: every image the listing names, in order, read or left out.
    """

    name: str
    listing: str
    images: list[AnnotatedImage] = field(default_factory=list)
    class_names: list[str] = field(default_factory=list)
    issues: list[DataIssue] = field(default_factory=list)
    left_out: dict[str, DataIssue] = field(default_factory=dict)
    image_ids: list[str] = field(default_factory=list)

    def leave_out(self, image_id: str, kind: str, path: str | Path, reason: str) -> None:
        """Record an image that cannot be used: `reason` names the file."""
        issue = DataIssue(kind, str(path), f"{reason}; image {image_id} skipped", detail=reason)
        self.left_out[image_id] = issue
        self.issues.append(issue)

    def objects_per_class(self, include_difficult: bool = False) -> np.ndarray:
        """(C,) int64 objects of each class over the images (difficult ones only when asked)."""
        counts = np.zeros(len(self.class_names), dtype=np.int64)
        for image in self.images:
            ids = image.class_ids if include_difficult else image.class_ids[~image.difficult]
            np.add.at(counts, ids, 1)
        return counts


def merge_splits(splits: Sequence[DataSplit]) -> DataSplit:
    """One DataSplit of several (same class list); an image id seen before gets its set's name as a prefix."""
    if len(splits) == 1:
        return splits[0]
    merged = DataSplit(
        name=" + ".join(s.name for s in splits),
        listing=" + ".join(s.listing for s in splits),
        class_names=list(splits[0].class_names),
    )
    seen: set[str] = set()
    for split in splits:
        renamed = {}
        for image_id in split.image_ids:
            new_id = image_id if image_id not in seen else f"{split.name}/{image_id}"
            renamed[image_id] = new_id
            seen.add(new_id)
            merged.image_ids.append(new_id)
        for image in split.images:
            image.image_id = renamed.get(image.image_id, image.image_id)
            merged.images.append(image)
        merged.left_out.update({renamed.get(k, k): v for k, v in split.left_out.items()})
        merged.issues += split.issues
    return merged


def with_progress(items: Sequence, enabled: bool, what: str):
    """`items`, with a progress bar on stderr when `enabled` (readers of thousands of files)."""
    if not enabled:
        return items
    import sys

    from tqdm import tqdm

    return tqdm(items, desc=what, unit="img", file=sys.stderr)


# ---------------------------------------------------------------------------------------------
# Annotation lines


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:.2f}"


def _path_field(path: str) -> str:
    if path.startswith('"') or any(c.isspace() for c in path):
        return json.dumps(path, ensure_ascii=False)
    return path


def format_annotation_line(path: str | Path, boxes: np.ndarray, class_ids: np.ndarray) -> str:
    """One line for an image; boxes (M, 4) pixel xyxy, class_ids (M,). Paths with whitespace are quoted."""
    boxes = np.asarray(boxes).reshape(-1, 4)
    parts = [_path_field(str(path))] + [
        ",".join(_number(v) for v in box) + f",{int(c)}" for box, c in zip(boxes, np.asarray(class_ids), strict=True)
    ]
    return " ".join(parts)


def _split_line(line: str) -> tuple[str, list[str]]:
    """(path, box tokens) of a line: a quoted path, or the tokens before the trailing comma tokens."""
    text = line.strip()
    if text.startswith('"'):
        try:
            path, end = json.JSONDecoder().raw_decode(text)
        except json.JSONDecodeError as err:
            raise AnnotationError(f"{text[:60]}: unterminated quoted path ({err.msg})") from None
        rest = text[end:]
        if rest and not rest[0].isspace():
            raise AnnotationError(f"{path}: the quoted path must be followed by a space")
        return path, rest.split()
    tokens = text.split()
    first_box = len(tokens)
    while first_box > 1 and "," in tokens[first_box - 1]:
        first_box -= 1
    if first_box == 1:
        return tokens[0], tokens[1:]
    # A path with whitespace, not quoted: everything before the trailing box tokens.
    position = 0
    for token in tokens[:first_box]:
        position = text.index(token, position) + len(token)
    return text[:position], tokens[first_box:]


def parse_annotation_line(line: str) -> AnnotatedImage:
    """Inverse of `format_annotation_line`. Raises AnnotationError on a malformed box."""
    if not line.strip():
        raise AnnotationError("empty annotation line")
    path, parts = _split_line(line)
    try:
        values = np.array([[float(v) for v in p.split(",")] for p in parts], dtype=np.float32)
    except ValueError as err:
        raise AnnotationError(f"{path}: malformed box in annotation line ({err})") from None
    if parts and values.shape[1] != 5:
        raise AnnotationError(f"{path}: each box needs x1,y1,x2,y2,class")
    values = values.reshape(-1, 5)
    return AnnotatedImage(path, values[:, :4].copy(), values[:, 4].astype(np.int32))


def read_annotation_lines(path: str | Path) -> list[AnnotatedImage]:
    """All images of an annotation file; raises AnnotationError naming the file and line when one is bad."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise AnnotationError(f"{path}: cannot read ({err})") from None
    images = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            images.append(parse_annotation_line(line))
        except AnnotationError as err:
            raise AnnotationError(f"{path}:{number}: {err}") from None
    return images


def write_annotation_lines(path: str | Path, images: Sequence[AnnotatedImage]) -> None:
    """Write `images` as annotation lines (UTF-8), one per image, with every object they hold."""
    text = "".join(format_annotation_line(Path(i.path), i.boxes, i.class_ids) + "\n" for i in images)
    Path(path).write_text(text, encoding="utf-8")
