"""Reading PASCAL VOC data: annotation XML files and the VOC2007 folder layout.

Box convention
--------------
VOC XML stores 1-based, inclusive pixel indices: ``xmin=1, xmax=10`` covers the first ten pixel
columns. This project's canonical format is continuous pixel ``xyxy`` (see utils.boxes), in which
those ten columns span x 0 to 10. So ``x1 = xmin - 1, y1 = ymin - 1, x2 = xmax, y2 = ymax``.
`write_voc_xml` applies the inverse, so the two round-trip exactly for integer boxes.

Layout (VOC2007)::

    <root>/Annotations/<image_id>.xml
    <root>/JPEGImages/<image_id>.jpg
    <root>/ImageSets/Main/{train,val,test,trainval}.txt   (one image id a line)

``<root>`` may also be a VOCdevkit folder holding ``VOC2007/`` (see `find_voc_root`).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from utils.data.images import IMAGE_SUFFIXES
from utils.errors import YoloError


class VocFormatError(YoloError, ValueError):
    """A VOC XML file that cannot be read at all (malformed XML, missing required fields)."""


class VocLayoutError(YoloError, FileNotFoundError):
    """A folder that is not laid out as VOC (no Annotations/, no image set file)."""


@dataclass
class VocAnnotation:
    """The objects of one image.

    Attributes:
        boxes: float32 (M, 4), pixel xyxy (continuous coordinates).
        class_ids: int32 (M,), indices into the class list.
        difficult: bool (M,).
        filename: the image file name the XML names (may be empty).
        image_size: (height, width) from `<size>`, or None when absent.
        warnings: one message per object skipped, each naming the XML file.
    """

    boxes: np.ndarray
    class_ids: np.ndarray
    difficult: np.ndarray
    filename: str = ""
    image_size: tuple[int, int] | None = None
    warnings: list[str] = field(default_factory=list)


def _text(node: ET.Element, tag: str, path: Path) -> str:
    child = node.find(tag)
    if child is None or child.text is None or not child.text.strip():
        raise VocFormatError(f"{path}: missing <{tag}>")
    return child.text.strip()


def parse_voc_xml(path: str | Path, class_names: list[str] | None = None) -> VocAnnotation:
    """Parse one VOC annotation file.

    Objects are skipped, with a warning naming the file (and class), when their class is not in
    `class_names`, when their box has zero or negative area, or when it lies outside the image
    (only checked when `<size>` is present and non-zero). Difficult objects are kept and flagged.

    Args:
        path: the XML file.
        class_names: the known classes; class_ids index this list. None accepts every name and
            numbers them in order of first appearance (rarely what you want).

    Returns: a VocAnnotation; boxes in pixel xyxy.
    Raises: VocFormatError when the file cannot be parsed or an object lacks a readable box.
    """
    path = Path(path)
    try:
        root = ET.parse(path).getroot()
    except (ET.ParseError, OSError) as err:
        raise VocFormatError(f"{path}: cannot read XML ({err})") from None

    image_size = None
    size = root.find("size")
    if size is not None:
        try:
            width, height = int(float(_text(size, "width", path))), int(float(_text(size, "height", path)))
        except ValueError as err:
            raise VocFormatError(f"{path}: bad <size> ({err})") from None
        if width > 0 and height > 0:
            image_size = (height, width)
    filename_node = root.find("filename")
    filename = filename_node.text.strip() if filename_node is not None and filename_node.text else ""

    names = list(class_names) if class_names is not None else []
    index = {name: i for i, name in enumerate(names)}
    boxes, class_ids, difficult, warnings = [], [], [], []
    for number, obj in enumerate(root.iter("object")):
        name = _text(obj, "name", path)
        if name not in index:
            if class_names is not None:
                warnings.append(f"{path}: object {number} has class {name!r}, not in the class list; skipped")
                continue
            index[name] = len(names)
            names.append(name)
        bndbox = obj.find("bndbox")
        if bndbox is None:
            raise VocFormatError(f"{path}: object {number} ({name}) has no <bndbox>")
        try:
            xmin, ymin, xmax, ymax = (float(_text(bndbox, tag, path)) for tag in ("xmin", "ymin", "xmax", "ymax"))
        except ValueError as err:
            raise VocFormatError(f"{path}: object {number} ({name}) has a non-numeric box ({err})") from None
        box = (xmin - 1.0, ymin - 1.0, xmax, ymax)  # 1-based inclusive -> continuous xyxy
        if box[2] <= box[0] or box[3] <= box[1]:
            warnings.append(f"{path}: object {number} ({name}) has zero area {box}; skipped")
            continue
        if image_size is not None and (
            box[0] < 0 or box[1] < 0 or box[2] > image_size[1] or box[3] > image_size[0]
        ):
            warnings.append(
                f"{path}: object {number} ({name}) box {box} lies outside the {image_size[1]}x{image_size[0]} "
                "image; skipped"
            )
            continue
        diff_node = obj.find("difficult")
        is_difficult = diff_node is not None and (diff_node.text or "0").strip() not in ("0", "")
        boxes.append(box)
        class_ids.append(index[name])
        difficult.append(is_difficult)

    return VocAnnotation(
        boxes=np.asarray(boxes, dtype=np.float32).reshape(-1, 4),
        class_ids=np.asarray(class_ids, dtype=np.int32),
        difficult=np.asarray(difficult, dtype=bool),
        filename=filename,
        image_size=image_size,
        warnings=warnings,
    )


def write_voc_xml(
    path: str | Path,
    filename: str,
    image_size: tuple[int, int],
    boxes: np.ndarray,
    class_names: list[str],
    difficult: np.ndarray | None = None,
) -> None:
    """Write a VOC annotation file.

    Args:
        path: the XML file to write.
        filename: the image's file name, stored in `<filename>`.
        image_size: (height, width) of the image.
        boxes: (M, 4) pixel xyxy with integer corners (written as 1-based inclusive indices).
        class_names: M names, one per box.
        difficult: optional (M,) bool.
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    if len(class_names) != len(boxes):
        raise ValueError(f"{len(class_names)} class names for {len(boxes)} boxes")
    root = ET.Element("annotation")
    ET.SubElement(root, "folder").text = "VOC2007"
    ET.SubElement(root, "filename").text = filename
    size = ET.SubElement(root, "size")
    ET.SubElement(size, "width").text = str(int(image_size[1]))
    ET.SubElement(size, "height").text = str(int(image_size[0]))
    ET.SubElement(size, "depth").text = "3"
    for i, (box, name) in enumerate(zip(boxes, class_names, strict=True)):
        obj = ET.SubElement(root, "object")
        ET.SubElement(obj, "name").text = name
        ET.SubElement(obj, "difficult").text = "1" if difficult is not None and difficult[i] else "0"
        bndbox = ET.SubElement(obj, "bndbox")
        values = (box[0] + 1, box[1] + 1, box[2], box[3])  # continuous xyxy -> 1-based inclusive
        for tag, value in zip(("xmin", "ymin", "xmax", "ymax"), values, strict=True):
            ET.SubElement(bndbox, tag).text = str(int(round(value)))
    ET.indent(root)
    Path(path).write_text(ET.tostring(root, encoding="unicode") + "\n")


def find_voc_root(data: str | Path) -> Path:
    """The folder that holds Annotations/ and JPEGImages/: `data` itself or `data`/VOC2007."""
    data = Path(data)
    for candidate in (data, data / "VOC2007"):
        if (candidate / "Annotations").is_dir():
            return candidate
    raise VocLayoutError(f"{data}: no Annotations/ folder here or in {data / 'VOC2007'}")


def read_image_set(root: str | Path, split: str) -> list[str]:
    """Image ids listed in `root`/ImageSets/Main/`split`.txt."""
    path = Path(root) / "ImageSets" / "Main" / f"{split}.txt"
    if not path.is_file():
        raise VocLayoutError(f"{path}: image set {split!r} not found")
    return [line.split()[0] for line in path.read_text().splitlines() if line.strip()]


def find_image(root: str | Path, image_id: str, filename: str = "") -> Path | None:
    """The image file of `image_id` in `root`/JPEGImages (trying the XML's filename first)."""
    folder = Path(root) / "JPEGImages"
    candidates = [folder / filename] if filename else []
    candidates += [folder / f"{image_id}{ext}" for ext in IMAGE_SUFFIXES]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    return None


@dataclass
class SplitResult:
    """What `voc_split_to_lines` produced for one split.

    Attributes:
        lines: annotation lines (see utils.data.annotations), one per usable image.
        objects_per_class: objects written, per class index.
        skipped_files: images left out entirely (unreadable XML, missing image).
        warnings: every problem found, each naming its file.
    """

    lines: list[str]
    objects_per_class: np.ndarray
    skipped_files: int = 0
    warnings: list[str] = field(default_factory=list)


def voc_split_to_lines(
    root: str | Path,
    split: str,
    class_names: list[str],
    include_difficult: bool = False,
) -> SplitResult:
    """Convert one image set of a VOC2007-layout folder into annotation lines.

    A bad file never stops the conversion: a malformed XML or a missing image skips that image,
    a bad object (unknown class, zero area, outside the image) skips that object; each gets a
    warning naming the file. Images with no usable object are still written (as negatives).

    Args:
        root: the folder holding Annotations/, JPEGImages/, ImageSets/Main/.
        split: image-set name ("train", "val", ...).
        class_names: the class list; ids in the lines index it.
        include_difficult: keep objects marked difficult (skipped by default).
    """
    from utils.data.annotations import format_annotation_line

    root = Path(root)
    result = SplitResult(lines=[], objects_per_class=np.zeros(len(class_names), dtype=np.int64))
    for image_id in read_image_set(root, split):
        xml_path = root / "Annotations" / f"{image_id}.xml"
        try:
            ann = parse_voc_xml(xml_path, class_names)
        except (VocFormatError, FileNotFoundError) as err:
            result.warnings.append(f"{err}; image {image_id} skipped")
            result.skipped_files += 1
            continue
        result.warnings += ann.warnings
        image_path = find_image(root, image_id, ann.filename)
        if image_path is None:
            result.warnings.append(f"{xml_path}: image {image_id} not found in {root / 'JPEGImages'}; skipped")
            result.skipped_files += 1
            continue
        keep = np.ones(len(ann.boxes), dtype=bool) if include_difficult else ~ann.difficult
        boxes, class_ids = ann.boxes[keep], ann.class_ids[keep]
        np.add.at(result.objects_per_class, class_ids, 1)
        result.lines.append(format_annotation_line(image_path.resolve(), boxes, class_ids))
    return result
