"""Reading PASCAL VOC data: annotation XML files, the VOC folder layout, and VOCdevkits of several years.

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

A VOCdevkit holds several such roots (``VOC2007/``, ``VOC2012/``); `voc_root_for` finds the one a
set names ("2007" -> VOCdevkit/VOC2007). Files are read as UTF-8: image ids, file names and class
names may be in any script and contain spaces.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from utils.data.annotations import (
    MAX_IMAGE_SIDE,
    MISSING_IMAGE,
    UNREADABLE_ANNOTATION,
    AnnotatedImage,
    DataIssue,
    DataSplit,
    format_annotation_line,
    sort_objects,
    with_progress,
)
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
        issues: one DataIssue per object skipped, each naming the XML file.
    """

    boxes: np.ndarray
    class_ids: np.ndarray
    difficult: np.ndarray
    filename: str = ""
    image_size: tuple[int, int] | None = None
    issues: list[DataIssue] = field(default_factory=list)

    @property
    def warnings(self) -> list[str]:
        """The issues' messages."""
        return [issue.message for issue in self.issues]


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
        except (ValueError, OverflowError) as err:  # OverflowError: 1e400 reads as infinity
            raise VocFormatError(f"{path}: bad <size> ({err})") from None
        if max(width, height) > MAX_IMAGE_SIDE:
            raise VocFormatError(f"{path}: bad <size> ({width:.3g}x{height:.3g}; at most {MAX_IMAGE_SIDE} a side)")
        if width > 0 and height > 0:
            image_size = (height, width)
    filename_node = root.find("filename")
    filename = filename_node.text.strip() if filename_node is not None and filename_node.text else ""

    boxes, names, difficult = [], [], []
    for number, obj in enumerate(root.iter("object")):
        name = _text(obj, "name", path)
        bndbox = obj.find("bndbox")
        if bndbox is None:
            raise VocFormatError(f"{path}: object {number} ({name}) has no <bndbox>")
        try:
            xmin, ymin, xmax, ymax = (float(_text(bndbox, tag, path)) for tag in ("xmin", "ymin", "xmax", "ymax"))
        except ValueError as err:
            raise VocFormatError(f"{path}: object {number} ({name}) has a non-numeric box ({err})") from None
        boxes.append((xmin - 1.0, ymin - 1.0, xmax, ymax))  # 1-based inclusive -> continuous xyxy
        names.append(name)
        diff_node = obj.find("difficult")
        difficult.append(diff_node is not None and (diff_node.text or "0").strip() not in ("0", ""))
    boxes, class_ids, difficult, issues = sort_objects(path, boxes, names, difficult, class_names, image_size)

    return VocAnnotation(boxes, class_ids, difficult, filename=filename, image_size=image_size, issues=issues)


def write_voc_xml(
    path: str | Path,
    filename: str,
    image_size: tuple[int, int],
    boxes: np.ndarray,
    class_names: list[str],
    difficult: np.ndarray | None = None,
    truncated: np.ndarray | None = None,
) -> None:
    """Write a VOC annotation file.

    Args:
        path: the XML file to write.
        filename: the image's file name, stored in `<filename>`.
        image_size: (height, width) of the image.
        boxes: (M, 4) pixel xyxy with integer corners (written as 1-based inclusive indices).
        class_names: M names, one per box.
        difficult: optional (M,) bool.
        truncated: optional (M,) bool: the object extends beyond the image (VOC's `<truncated>`,
            written only when given; readers here ignore it).
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
        if truncated is not None:
            ET.SubElement(obj, "truncated").text = "1" if truncated[i] else "0"
        ET.SubElement(obj, "difficult").text = "1" if difficult is not None and difficult[i] else "0"
        bndbox = ET.SubElement(obj, "bndbox")
        values = (box[0] + 1, box[1] + 1, box[2], box[3])  # continuous xyxy -> 1-based inclusive
        for tag, value in zip(("xmin", "ymin", "xmax", "ymax"), values, strict=True):
            ET.SubElement(bndbox, tag).text = str(int(round(value)))
    ET.indent(root)
    Path(path).write_text(ET.tostring(root, encoding="unicode") + "\n", encoding="utf-8")


def find_voc_root(data: str | Path) -> Path:
    """The folder that holds Annotations/ and JPEGImages/: `data` itself or `data`/VOC2007."""
    data = Path(data)
    for candidate in (data, data / "VOC2007"):
        if (candidate / "Annotations").is_dir():
            return candidate
    raise VocLayoutError(f"{data}: no Annotations/ folder here or in {data / 'VOC2007'}")


def find_voc_roots(data: str | Path) -> list[Path]:
    """Every VOC root in `data`: `data` itself when it holds Annotations/, else its sub-folders that do
    (a VOCdevkit: VOC2007/, VOC2012/, ...), sorted by name."""
    data = Path(data)
    if (data / "Annotations").is_dir():
        return [data]
    if not data.is_dir():
        return []
    return sorted(p for p in data.iterdir() if (p / "Annotations").is_dir())


def voc_root_for(data: str | Path, where: str | None) -> Path:
    """The VOC root a set names in `data`.

    Args:
        data: a VOC root or a folder of them (a VOCdevkit).
        where: a year ("2012" -> `data`/VOC2012), a sub-folder of `data`, or any folder path;
            None: `data` itself, its only VOC root, or its VOC2007/.
    Raises: VocLayoutError naming what was looked for.
    """
    data = Path(data)
    if where is None:
        roots = find_voc_roots(data)
        if len(roots) == 1:
            return roots[0]
        if data / "VOC2007" in roots:
            return data / "VOC2007"
        if not roots:
            raise VocLayoutError(f"{data}: no Annotations/ folder here or in a sub-folder (a VOCdevkit)")
        names = ", ".join(p.name for p in roots)
        raise VocLayoutError(f"{data} holds several VOC folders ({names}): name one, e.g. {roots[0].name}:trainval")
    candidates = [data / f"VOC{where}", data / where, Path(where)]
    for candidate in candidates:
        if (candidate / "Annotations").is_dir():
            return candidate
    raise VocLayoutError(f"{where!r}: no VOC folder (with Annotations/) at {', '.join(map(str, candidates))}")


def image_set_path(root: str | Path, split: str) -> Path:
    """`root`/ImageSets/Main/`split`.txt."""
    return Path(root) / "ImageSets" / "Main" / f"{split}.txt"


def read_image_set(root: str | Path, split: str) -> list[str]:
    """Image ids listed in `root`/ImageSets/Main/`split`.txt (UTF-8).

    A line is an image id, which may contain spaces; a trailing " 1" / " -1" / " 0" (the
    per-class image sets' flag) is dropped unless the whole line names an annotation file.
    """
    path = image_set_path(root, split)
    if not path.is_file():
        raise VocLayoutError(f"{path}: image set {split!r} not found")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise VocLayoutError(f"{path}: cannot read ({err})") from None
    ids = []
    for line in lines:
        image_id = line.strip()
        if not image_id:
            continue
        match = re.fullmatch(r"(.+?)\s+-?[01]", image_id)
        if match and not (Path(root) / "Annotations" / f"{image_id}.xml").is_file():
            image_id = match.group(1)
        ids.append(image_id)
    return ids


def find_image(root: str | Path, image_id: str, filename: str = "") -> Path | None:
    """The image file of `image_id` in `root`/JPEGImages (trying the XML's filename first)."""
    folder = Path(root) / "JPEGImages"
    candidates = [folder / filename] if filename else []
    candidates += [folder / f"{image_id}{ext}" for ext in IMAGE_SUFFIXES]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    return None


def read_voc_set(
    root: str | Path, split: str, class_names: list[str], require_images: bool = True, progress: bool = False
) -> DataSplit:
    """The images of one image set of a VOC root.

    A bad file never stops the reading: a malformed XML (or, with `require_images`, a missing
    image) leaves that image out, a bad object (unknown class, zero area, outside the image) is
    skipped; each gets a DataIssue naming the file. Difficult objects are kept and flagged.

    Args:
        root: the folder holding Annotations/, JPEGImages/, ImageSets/Main/.
        split: image-set name ("train", "val", ...).
        class_names: the class list; class_ids index it.
        require_images: leave out images whose file is missing; False keeps them, with the path the
            file would have (evaluating a detections file needs no images).
        progress: a progress bar on stderr.
    Raises: VocLayoutError when the image set does not exist.
    """
    root = Path(root)
    ids = read_image_set(root, split)
    result = DataSplit(
        name=f"{root}:{split}", listing=str(image_set_path(root, split)), class_names=list(class_names), image_ids=ids
    )
    for image_id in with_progress(ids, progress, f"{root.name}:{split}"):
        xml_path = root / "Annotations" / f"{image_id}.xml"
        try:
            ann = parse_voc_xml(xml_path, class_names)
        except VocFormatError as err:
            result.leave_out(image_id, UNREADABLE_ANNOTATION, xml_path, str(err))
            continue
        result.issues += ann.issues
        image_path = find_image(root, image_id, ann.filename)
        if image_path is None:
            if require_images:
                reason = f"{xml_path}: image {image_id} not found in {root / 'JPEGImages'}"
                result.leave_out(image_id, MISSING_IMAGE, xml_path, reason)
                continue
            image_path = root / "JPEGImages" / (ann.filename or f"{image_id}.jpg")
        result.images.append(
            AnnotatedImage(
                str(image_path.resolve()),
                ann.boxes,
                ann.class_ids,
                ann.difficult,
                image_id=image_id,
                size=ann.image_size,
                source=str(xml_path),
            )
        )
    return result


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
    """One image set of a VOC root as annotation lines (`read_voc_set`, then one line per image).

    Images with no usable object are still written (as negatives).

    Args:
        root: the folder holding Annotations/, JPEGImages/, ImageSets/Main/.
        split: image-set name ("train", "val", ...).
        class_names: the class list; ids in the lines index it.
        include_difficult: keep objects marked difficult (skipped by default).
    """
    data = read_voc_set(root, split, class_names)
    images = data.images if include_difficult else [image.without_difficult() for image in data.images]
    return SplitResult(
        lines=[format_annotation_line(image.path, image.boxes, image.class_ids) for image in images],
        objects_per_class=data.objects_per_class(include_difficult),
        skipped_files=len(data.left_out),
        warnings=[issue.message for issue in data.issues],
    )
