"""Reading YOLO txt data as ultralytics lays it out: a data.yaml, images/ and labels/.

    data.yaml                   path: ../datasets/mine     the root (optional; default: the yaml's folder)
                                train: images/train        a folder of images, a .txt listing images, or a list
                                val: images/val
                                test: images/test          (optional)
                                names: [cat, dog]          or {0: cat, 1: dog}
    images/train/0001.jpg
    labels/train/0001.txt       one object a line: class x_center y_center width height

An image's label file is its path with the last ``/images/`` replaced by ``/labels/`` and the
suffix by ``.txt`` (beside the image when the path has no ``images`` folder). Coordinates are
normalised by the image's width and height as displayed (EXIF orientation applied, as
utils.data.images reads it), so each image's header is read to turn them into pixel xyxy. A
polygon line (``class x1 y1 x2 y2 x3 y3 ...``, ultralytics' segments) stands for its bounding box.
An image without a label file, or with an empty one, has no objects. Relative paths in the yaml
are taken from the root; the lines of a .txt listing from the listing's folder.

A class id must be an integer from 0 to the number of names less one; a line with another (``-1``,
``80`` of 80 names, ``1e300``) is skipped with a warning naming the file and line. The yaml's
``path``, split entries and names must be scalars (a name or a path, not a list); YAML aliases
that expand to more than MAX_YAML_VALUES values are refused (a few hundred bytes of aliases, each a
list of references to the one before, stand for billions of names).

`write_yolo_data` writes records of any format (utils.data.annotations.AnnotatedImage) in this
layout, e.g. a VOC set for a tool that reads only YOLO txt labels.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from utils.boxes import convert_format
from utils.data.annotations import (
    CORRUPT_IMAGE,
    UNKNOWN_CLASS,
    UNREADABLE_ANNOTATION,
    AnnotatedImage,
    DataIssue,
    DataSplit,
    sort_objects,
    with_progress,
)
from utils.data.images import ImageLoadError, image_size, is_image_path
from utils.errors import YoloError

YAML_NAMES = ("data.yaml", "dataset.yaml", "data.yml", "dataset.yml")
SPLIT_KEYS = ("train", "val", "test")
# Values (names, paths, keys, lists) a data.yaml may hold once its aliases are expanded: far more
# than any real one (COCO's has 90, LVIS's 1,203), far fewer than an alias bomb's billions.
MAX_YAML_VALUES = 1_000_000


class YoloDataError(YoloError, ValueError):
    """A data.yaml that cannot be used (unreadable, no such split, a folder that is not there)."""


@dataclass
class YoloData:
    """What a data.yaml says.

    Attributes:
        path: the yaml file.
        root: the folder relative paths start from.
        splits: split name -> its entries (folders or .txt listings), as written.
        names: the class names, or None when the yaml names none.
    """

    path: Path
    root: Path
    splits: dict[str, list[str]]
    names: list[str] | None


def find_data_yaml(folder: str | Path) -> Path | None:
    """The data.yaml (or dataset.yaml, .yml) in `folder`, or its only .yaml file; None when there is none."""
    folder = Path(folder)
    for name in YAML_NAMES:
        if (folder / name).is_file():
            return folder / name
    found = sorted(p for p in folder.glob("*.y*ml") if p.suffix in (".yaml", ".yml"))
    return found[0] if len(found) == 1 else None


def _is_scalar(value) -> bool:
    """A name or a path as YAML writes it (text, a number, a date), not a list, a mapping or null."""
    return value is not None and not isinstance(value, (list, tuple, dict, set))


def _scalars(values, what: str, path: Path) -> list[str]:
    """`values` as strings; YoloDataError naming the file when one is not a scalar."""
    for value in values:
        if not _is_scalar(value):
            found = "null" if value is None else f"a {type(value).__name__}"
            raise YoloDataError(f"{path}: {what} must be names or paths (text), found {found}")
    return [str(value) for value in values]


def _names(value, path: Path) -> list[str] | None:
    if value is None:
        return None
    if isinstance(value, dict):
        try:
            ids = sorted(int(k) for k in value)
        except (TypeError, ValueError, OverflowError):
            raise YoloDataError(f"{path}: names must map class ids (0, 1, ...) to names") from None
        if ids != list(range(len(ids))):
            raise YoloDataError(f"{path}: the class ids of names must be 0 to {len(ids) - 1}, got {ids[:20]}")
        return _scalars([value[k] if k in value else value[str(k)] for k in ids], "names", path)
    if isinstance(value, (list, tuple)):
        return _scalars(value, "names", path)
    raise YoloDataError(f"{path}: names must be a list or a mapping, got {type(value).__name__}")


def _check_expansion(content, path: Path) -> None:
    """YoloDataError when `content` holds more than MAX_YAML_VALUES values with its aliases expanded.

    PyYAML loads an alias as a second reference to the same object, so loading is cheap; it is
    anything that walks the result (str(), a loop) that pays for every reference. This walk stops
    at the limit, so it costs at most MAX_YAML_VALUES steps (and ends on a list that holds itself).
    """
    count, stack = 0, [content]
    while stack:
        value = stack.pop()
        count += 1
        if count > MAX_YAML_VALUES:
            raise YoloDataError(
                f"{path}: holds more than {MAX_YAML_VALUES:,} values once its YAML aliases (*name) are "
                "expanded; a data.yaml lists names and paths, write them out"
            )
        if isinstance(value, dict):
            stack.extend(value.keys())
            stack.extend(value.values())
        elif isinstance(value, (list, tuple, set)):
            stack.extend(value)


def read_data_yaml(path: str | Path) -> YoloData:
    """Parse a data.yaml (UTF-8). Raises YoloDataError naming the file."""
    import yaml

    path = Path(path)
    try:
        content = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
        raise YoloDataError(f"{path}: cannot read ({err})") from None
    except RecursionError:  # PyYAML composes nested lists recursively
        raise YoloDataError(f"{path}: cannot read (nested too deeply)") from None
    if not isinstance(content, dict):
        raise YoloDataError(f"{path}: expected a mapping with train, val and names")
    _check_expansion(content, path)
    root = path.parent
    if content.get("path"):
        given = Path(_scalars([content["path"]], "path", path)[0])
        candidates = [given] if given.is_absolute() else [path.parent / given, Path.cwd() / given]
        root = next((c for c in candidates if c.is_dir()), candidates[0])
    splits = {}
    for key, value in content.items():
        if key in SPLIT_KEYS or (key not in ("path", "names", "nc", "download") and _looks_like_split(value)):
            if value:
                entries = value if isinstance(value, (list, tuple)) else [value]
                splits[str(key)] = _scalars(entries, f"the {key} entries", path)
    if not splits:
        raise YoloDataError(f"{path}: no train, val or test entry")
    return YoloData(path=path, root=root, splits=splits, names=_names(content.get("names"), path))


def _looks_like_split(value) -> bool:
    return isinstance(value, str) and (value.endswith(".txt") or "images" in value)


def _resolve(entry: str, data: YoloData) -> Path:
    given = Path(entry)
    if given.is_absolute():
        return given
    for base in (data.root, data.path.parent):
        if (base / given).exists():
            return base / given
    return data.root / given


def split_images(data: YoloData, split: str) -> list[tuple[Path, str]]:
    """(image path, image id) of every image of `split`, in order.

    The id is the image's path from its folder (or from the root, for a .txt listing) without
    the suffix, as a POSIX path: "0001", "street/0001".
    """
    if split not in data.splits:
        raise YoloDataError(f"{data.path}: no split {split!r} (it has {', '.join(data.splits)})")
    found: list[tuple[Path, str]] = []
    for entry in data.splits[split]:
        location = _resolve(entry, data)
        if location.is_dir():
            images = sorted(p for p in location.rglob("*") if p.is_file() and is_image_path(p))
            found += [(p, p.relative_to(location).with_suffix("").as_posix()) for p in images]
        elif location.is_file() and location.suffix == ".txt":
            try:
                lines = location.read_text(encoding="utf-8").splitlines()
            except (OSError, UnicodeDecodeError) as err:
                raise YoloDataError(f"{location}: cannot read ({err})") from None
            for line in filter(None, (line.strip() for line in lines)):
                image = Path(line) if Path(line).is_absolute() else location.parent / line
                try:
                    image_id = image.resolve().relative_to(data.root.resolve()).with_suffix("").as_posix()
                except ValueError:
                    image_id = image.stem
                found.append((image, image_id))
        else:
            raise YoloDataError(f"{data.path}: {split} entry {entry!r} is not a folder or a .txt list ({location})")
    return found


def label_path(image_path: str | Path) -> Path:
    """The label file of an image: the last images/ folder of its path becomes labels/, the suffix .txt."""
    parts = list(Path(image_path).parts)
    for i in range(len(parts) - 2, -1, -1):
        if parts[i] == "images":
            parts[i] = "labels"
            break
    return Path(*parts).with_suffix(".txt")


def parse_label_file(
    path: Path, image_hw: tuple[int, int], num_classes: int
) -> tuple[np.ndarray, np.ndarray, list[int], list[tuple[int, str]]]:
    """Boxes (M, 4) pixel xyxy, class ids (M,) and the line of each object of a label file; none
    when it does not exist.

    A line whose class id is an integer outside 0 to `num_classes` - 1 (``-1``, ``1e300``) is left
    out and returned in the fourth value as (line number, the class id as written).
    Raises YoloDataError naming the file and line when a line is not a class and 4 (or an even
    number >= 6, a polygon) numbers.
    """
    if not path.is_file():
        return np.zeros((0, 4)), np.zeros(0, dtype=np.int64), [], []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise YoloDataError(f"{path}: cannot read ({err})") from None
    boxes, ids, numbers, unknown = [], [], [], []
    for number, line in enumerate(lines, 1):
        fields = line.split()
        if not fields:
            continue
        try:
            values = [float(v) for v in fields]
        except ValueError:
            raise YoloDataError(f"{path}:{number}: not numbers: {line.strip()[:200]!r}") from None
        if (len(values) != 5 and (len(values) < 7 or len(values) % 2 == 0)) or not float(values[0]).is_integer():
            expected = "class x_center y_center width height"
            raise YoloDataError(f"{path}:{number}: expected '{expected}', got {line.strip()[:200]!r}")
        if not 0 <= values[0] < num_classes:
            unknown.append((number, fields[0]))
            continue
        if len(values) == 5:
            boxes.append(values[1:])
        else:  # a polygon: its bounding box
            xs, ys = values[1::2], values[2::2]
            boxes.append([(min(xs) + max(xs)) / 2, (min(ys) + max(ys)) / 2, max(xs) - min(xs), max(ys) - min(ys)])
        ids.append(int(values[0]))
        numbers.append(number)
    relative = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    xyxy = convert_format(relative, "rel_center_xywh", "xyxy", image_shape=image_hw)
    return xyxy, np.asarray(ids, dtype=np.int64), numbers, unknown


def read_yolo_set(data: YoloData, split: str, class_names: list[str], progress: bool = False) -> DataSplit:
    """The images of one split of a data.yaml.

    Objects are named by the yaml's names (and matched to `class_names` by name); when the yaml
    names none, their class ids index `class_names`. A label file that cannot be parsed or an image
    whose header cannot be read leaves that image out; a bad object (a class id that names no
    class among them) is skipped; each gets a DataIssue naming the file (and line).
    """
    images = split_images(data, split)
    names = data.names if data.names is not None else class_names
    names_source = f"{data.path.name}'s names" if data.names is not None else "the class list"
    result = DataSplit(
        name=f"{data.path}:{split}",
        listing=f"{data.path} ({split}: {', '.join(data.splits[split])})",
        class_names=list(class_names),
    )
    seen: set[str] = set()
    for image, image_id in with_progress(images, progress, f"{data.path.name}:{split}"):
        if image_id in seen:
            image_id = image.with_suffix("").as_posix()
        seen.add(image_id)
        result.image_ids.append(image_id)
        labels = label_path(image)
        try:
            hw = image_size(image)
        except ImageLoadError as err:
            result.leave_out(image_id, CORRUPT_IMAGE, image, str(err))
            continue
        try:
            boxes, ids, numbers, unknown = parse_label_file(labels, hw, len(names))
        except YoloDataError as err:
            result.leave_out(image_id, UNREADABLE_ANNOTATION, labels, str(err))
            continue
        for number, class_id in unknown:
            result.issues.append(
                DataIssue(
                    UNKNOWN_CLASS,
                    str(labels),
                    f"{labels}:{number}: class id {class_id[:40]}, not in {names_source} "
                    f"(0 to {len(names) - 1}); skipped",
                    f"class id {class_id[:40]}",
                )
            )
        boxes, class_ids, difficult, issues = sort_objects(
            labels, boxes, [names[i] for i in ids], np.zeros(len(ids), bool), class_names, hw,
            labels=[f"line {n}" for n in numbers],
        )  # fmt: skip
        result.issues += issues
        result.images.append(
            AnnotatedImage(str(image.resolve()), boxes, class_ids, difficult, image_id, size=hw, source=str(labels))
        )
    return result


def write_yolo_data(
    root: str | Path, splits: dict[str, list[AnnotatedImage]], class_names: list[str], link: bool = True
) -> Path:
    """Write `splits` (split name -> records) as a data.yaml, images/<split>/ and labels/<split>/ under
    `root`; returns the data.yaml's path.

    Each image is hard-linked (`link`, copied where the file system cannot link) as
    images/<split>/<image_id><suffix>; its label file holds one `class x_center y_center width
    height` line per object, normalised by the record's `size` (else the image's header), 6
    decimals. Every object of the records is written, difficult ones too: pass
    `record.without_difficult()` to leave those out. The yaml names the root by its absolute path.
    """
    import yaml

    root = Path(root)
    for split, records in splits.items():
        (root / "images" / split).mkdir(parents=True, exist_ok=True)
        (root / "labels" / split).mkdir(parents=True, exist_ok=True)
        for record in records:
            source = Path(record.path)
            target = root / "images" / split / f"{record.image_id}{source.suffix}"
            target.parent.mkdir(parents=True, exist_ok=True)
            if target.exists():
                target.unlink()
            if link:
                try:
                    os.link(source, target)
                except OSError:
                    shutil.copyfile(source, target)
            else:
                shutil.copyfile(source, target)
            hw = record.size or image_size(source)
            relative = convert_format(record.boxes.astype(np.float64), "xyxy", "rel_center_xywh", image_shape=hw)
            lines = [
                f"{int(c)} " + " ".join(f"{v:.6f}" for v in box)
                for box, c in zip(relative.tolist(), record.class_ids.tolist(), strict=True)
            ]
            label = label_path(target)
            label.parent.mkdir(parents=True, exist_ok=True)
            label.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    content = {"path": str(root.resolve()), **{s: f"images/{s}" for s in splits}, "names": list(class_names)}
    yaml_path = root / "data.yaml"
    yaml_path.write_text(yaml.safe_dump(content, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return yaml_path
