"""Reading COCO detection JSON: ``instances_<split>.json`` and the folder of its images.

    <root>/annotations/instances_train2017.json     (or the JSON file itself as --data)
    <root>/train2017/000000000009.jpg               (or <root>/images/train2017/, <root>/images/, <root>/)

The classes are the JSON's categories sorted by id; a class id is a category's position in that
order (COCO's 80 categories with ids 1 to 90 become 0 to 79). ``bbox`` is pixel ``[x, y, width,
height]`` (utils.boxes ``xywh``). Objects marked ``iscrowd`` (or ``ignore``) are read as difficult:
neither positives nor errors in evaluation, left out of training, like VOC's difficult objects.
An image is named by its COCO id (as a string) in evaluation and detection files. The JSON is
UTF-8; file and class names may be in any script.

Ids (of images, categories, and an annotation's image_id and category_id) are integers or
strings. Two images or two categories with one id are an error naming the file and the id (one
would silently take the other's objects); an image entry whose id is anything else (a list) is
skipped, and so is an annotation whose image_id or category_id is, each with a DataIssue naming
the file.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from utils.boxes import convert_format
from utils.data.annotations import (
    MAX_IMAGE_SIDE,
    MISSING_IMAGE,
    UNKNOWN_CLASS,
    UNREADABLE_ANNOTATION,
    AnnotatedImage,
    DataIssue,
    DataSplit,
    sort_objects,
    with_progress,
)
from utils.errors import YoloError

PREFIX = "instances_"


class CocoDataError(YoloError, ValueError):
    """A COCO JSON file that cannot be used at all (unreadable, not COCO); the message names it."""


def coco_split_files(folder: str | Path) -> dict[str, Path]:
    """split name -> JSON file, for the instances_<split>.json in `folder`/annotations or `folder`."""
    folder = Path(folder)
    found = {}
    for where in (folder / "annotations", folder):
        for path in sorted(where.glob(f"{PREFIX}*.json")):
            found.setdefault(path.stem.removeprefix(PREFIX), path)
    return found


def split_name(json_path: str | Path) -> str:
    """The split a JSON file holds: "train2017" for instances_train2017.json."""
    return Path(json_path).stem.removeprefix(PREFIX)


def load_coco_json(path: str | Path) -> dict:
    """The JSON's content, checked to be COCO detection data. Raises CocoDataError naming the file."""
    path = Path(path)
    try:
        content = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as err:
        raise CocoDataError(f"{path}: cannot read ({err})") from None
    except ValueError as err:  # JSONDecodeError, or an integer of more digits than Python converts
        raise CocoDataError(f"{path}: not valid JSON ({err})") from None
    except RecursionError:
        raise CocoDataError(f"{path}: not valid JSON (nested too deeply)") from None
    if not isinstance(content, dict) or not isinstance(content.get("images"), list):
        raise CocoDataError(f"{path}: not COCO detection data (no 'images' list)")
    if not isinstance(content.get("categories"), list) or not content["categories"]:
        raise CocoDataError(f"{path}: no 'categories'")
    return content


def _coco_id(value) -> int | str | None:
    """An id as COCO JSON writes it: an integer (a float without a fraction counts) or a string;
    None for anything else (a list, a mapping, null, 1.5)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, float):
        return int(value) if value.is_integer() else None
    return value if isinstance(value, (int, str)) else None


def coco_categories(content: dict, path: str | Path) -> dict[int, str]:
    """category id -> name, sorted by id. Raises CocoDataError naming the file on a bad or repeated id."""
    pairs = []
    for category in content["categories"]:
        try:
            pairs.append((int(category["id"]), str(category["name"])))
        except (KeyError, TypeError, ValueError, OverflowError) as err:
            raise CocoDataError(f"{path}: a category without an integer id and a name ({err!r})") from None
    pairs.sort()
    for (first, name), (second, other) in zip(pairs, pairs[1:]):
        if first == second:
            raise CocoDataError(f"{path}: two categories have id {first} ({name!r} and {other!r})")
    return dict(pairs)


def _shown(entry: dict, key: str) -> str:
    """An entry's value for a message, cut short (a hostile file's value can be any size)."""
    return repr(entry.get(key, "?"))[:40]


def image_folders(json_path: Path) -> list[Path]:
    """Where the images of a JSON file are looked for, in order."""
    base = json_path.parent.parent if json_path.parent.name == "annotations" else json_path.parent
    split = split_name(json_path)
    return [base / split, base / "images" / split, base / "images", base]


def read_coco_set(
    json_path: str | Path, class_names: list[str], require_images: bool = True, progress: bool = False
) -> DataSplit:
    """The images of a COCO JSON file.

    Objects are matched to `class_names` by their category's name. An annotation that names an
    image not in 'images' or has no readable bbox is skipped; with `require_images`, an image whose
    file is in none of `image_folders` is left out; each gets a DataIssue naming the file.
    """
    json_path = Path(json_path)
    content = load_coco_json(json_path)
    categories = coco_categories(content, json_path)
    result = DataSplit(name=str(json_path), listing=str(json_path), class_names=list(class_names))
    per_image: dict[object, list[dict]] = {}
    images = {}
    by_name: dict[str, dict] = {}  # 7 and "7" both name image "7"
    for entry in content["images"]:
        coco_image_id = _coco_id(entry.get("id")) if isinstance(entry, dict) else None
        if coco_image_id is not None and "file_name" in entry:
            if str(coco_image_id) in by_name:
                first, second = _shown(by_name[str(coco_image_id)], "file_name"), _shown(entry, "file_name")
                raise CocoDataError(f"{json_path}: two images have id {coco_image_id!r} ({first} and {second})")
            by_name[str(coco_image_id)] = entry
            images[coco_image_id] = entry
            per_image[coco_image_id] = []
        else:
            result.issues.append(
                DataIssue(UNREADABLE_ANNOTATION, str(json_path), f"{json_path}: an image entry without an "
                          f"integer or text id and a file_name ({str(entry)[:80]}); skipped")
            )  # fmt: skip
    for number, annotation in enumerate(content.get("annotations") or []):
        image_id = _coco_id(annotation.get("image_id")) if isinstance(annotation, dict) else None
        if image_id not in per_image:
            result.issues.append(
                DataIssue(UNREADABLE_ANNOTATION, str(json_path), f"{json_path}: annotation {number} names image_id "
                          f"{_shown(annotation, 'image_id')}, which is not in 'images'; skipped")
            )  # fmt: skip
            continue
        per_image[image_id].append(annotation)

    folders = image_folders(json_path)
    for coco_id, entry in with_progress(list(images.items()), progress, json_path.name):
        image_id, file_name = str(coco_id), str(entry["file_name"])
        result.image_ids.append(image_id)
        path = next((folder / file_name for folder in folders if (folder / file_name).is_file()), None)
        if path is None:
            if require_images:
                where = ", ".join(str(f) for f in folders)
                result.leave_out(image_id, MISSING_IMAGE, json_path, f"{json_path}: image {file_name} not in {where}")
                continue
            path = folders[0] / file_name
        try:
            size = (int(entry["height"]), int(entry["width"]))
            size = size if 0 < min(size) and max(size) <= MAX_IMAGE_SIDE else None
        except (KeyError, TypeError, ValueError, OverflowError):  # OverflowError: 1e400 reads as inf
            size = None
        boxes, names, difficult, labels = [], [], [], []
        for annotation in per_image[coco_id]:
            label = f"annotation {_shown(annotation, 'id')} of image {file_name}"
            category = _coco_id(annotation.get("category_id"))
            if category not in categories:
                shown = _shown(annotation, "category_id")
                result.issues.append(
                    DataIssue(UNKNOWN_CLASS, str(json_path), f"{json_path}: {label} has category_id {shown}, "
                              "not in 'categories'; skipped", f"category_id {shown}")
                )  # fmt: skip
                continue
            try:
                bbox = [float(v) for v in annotation["bbox"]]
                if len(bbox) != 4:
                    raise ValueError(f"{len(bbox)} values")
            except (KeyError, TypeError, ValueError) as err:
                result.issues.append(
                    DataIssue(UNREADABLE_ANNOTATION, str(json_path), f"{json_path}: {label} has no readable bbox "
                              f"({err}); skipped")
                )  # fmt: skip
                continue
            boxes.append(bbox)
            names.append(categories[category])
            difficult.append(bool(annotation.get("iscrowd", 0)) or bool(annotation.get("ignore", 0)))
            labels.append(label)
        xyxy = convert_format(np.asarray(boxes, dtype=np.float64).reshape(-1, 4), "xywh", "xyxy")
        boxes, class_ids, difficult, issues = sort_objects(
            json_path, xyxy, names, difficult, class_names, size, labels=labels
        )
        result.issues += issues
        result.images.append(
            AnnotatedImage(str(path.resolve()), boxes, class_ids, difficult, image_id, size=size, source=str(json_path))
        )
    return result
