"""Data as users have it, into the project's `AnnotatedImage` records: the one entry point.

`open_data(path)` looks at what `path` holds and returns a `DataSource` that reads its sets:

=====================================================  ======  ====================================
what --data names                                      kind    sets (``--train-sets``, ``--split``)
=====================================================  ======  ====================================
a VOC folder (Annotations/, JPEGImages/, ImageSets/)   voc     ``train``, ``val``, ``test`` ...
a VOCdevkit (VOC2007/, VOC2012/, ...)                  voc     ``2007:trainval``, ``2012:trainval``
a data.yaml, or a folder holding one                   yolo    the yaml's ``train``, ``val``, ``test``
instances_<split>.json, or a folder of them            coco    ``train2017`` (or ``train``), ``val2017``
=====================================================  ======  ====================================

A set is ``[WHERE:]SPLIT``. For VOC, WHERE is a year (``2012`` -> ``VOCdevkit/VOC2012``), a
sub-folder or any VOC folder, so several folders train together (``--train-sets 2007:trainval
2012:trainval``, the papers' recipe, tested on ``2007:test``); without it the set comes from the
folder itself, its only VOC folder, or its VOC2007/. For COCO, a split also matches by its start
(``train`` -> ``train2017``). Each kind has default sets (`DataSource.default_sets`).

Class names come from the data when it names them (data.yaml's names, COCO's categories),
else from the class list given, else VOC's 20 (`resolve_class_names`); a given list is matched
to the data's objects by name. Every reader skips the same bad objects
(utils.data.annotations.sort_objects) and names each file it leaves out.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from utils.data.annotations import UNKNOWN_CLASS, AnnotatedImage, AnnotationError, DataSplit, merge_splits
from utils.errors import YoloError

logger = logging.getLogger("yolov4_tiny.data")

KINDS = ("voc", "yolo", "coco")
ROLES = ("train", "val", "test")


class DataFormatError(YoloError, ValueError):
    """`--data` is no data set this project reads, or lacks a set asked for; the message says what it looked for."""


@dataclass(frozen=True)
class SetSpec:
    """A set as the command line names it: ``[WHERE:]SPLIT``."""

    where: str | None
    split: str

    @classmethod
    def parse(cls, text: str) -> SetSpec:
        where, colon, split = str(text).rpartition(":")
        if not colon:
            return cls(None, str(text))
        if not split or "/" in split or "\\" in split or not where:
            raise DataFormatError(f"{text!r}: a set is SPLIT or WHERE:SPLIT, e.g. trainval or 2012:trainval")
        return cls(where, split)

    def __str__(self) -> str:
        return self.split if self.where is None else f"{self.where}:{self.split}"


@dataclass
class DataSource:
    """A data set on disk, of one of `KINDS`.

    Attributes:
        kind: "voc", "yolo" or "coco".
        path: what was given (folder or file).
        class_names: the class names the data itself declares; None for VOC, which declares none.
    """

    kind: str
    path: Path
    class_names: list[str] | None = None
    _yolo: object = field(default=None, repr=False)
    _coco_files: dict[str, Path] = field(default_factory=dict, repr=False)

    def set_names(self) -> list[str]:
        """The sets this data holds, as `read` takes them."""
        if self.kind == "yolo":
            return list(self._yolo.splits)
        if self.kind == "coco":
            return list(self._coco_files)
        from utils.data.voc import find_voc_roots

        roots = find_voc_roots(self.path)
        names = []
        for root in roots:
            prefix = "" if root == self.path else root.name.removeprefix("VOC") + ":"
            sets = sorted((root / "ImageSets" / "Main").glob("*.txt"))
            names += [prefix + p.stem for p in sets if "_" not in p.stem]
        return names

    def default_sets(self, role: str) -> list[str]:
        """The sets of `role` ("train", "val" or "test") when none are named: VOC's image sets of that
        name; data.yaml's entry (test falls back to val); COCO's split starting with the role (a
        single JSON file is the train and the test set). Empty when the data has none."""
        if role not in ROLES:
            raise ValueError(f"role must be one of {ROLES}, got {role!r}")
        if self.kind == "voc":
            return [role]
        if self.kind == "yolo":
            splits = self._yolo.splits
            if role in splits:
                return [role]
            return ["val"] if role == "test" and "val" in splits else []
        if self.path.is_file():
            return [] if role == "val" else list(self._coco_files)
        matches = [name for name in self._coco_files if name.startswith(role)]
        if not matches and role == "test":  # COCO publishes no test annotations: evaluate on val
            matches = [name for name in self._coco_files if name.startswith("val")]
        return matches[:1]

    def read(
        self,
        sets: Sequence[str],
        class_names: list[str],
        require_images: bool = True,
        progress: bool = False,
    ) -> DataSplit:
        """The images of `sets` (``[WHERE:]SPLIT`` each), merged into one DataSplit.

        Args:
            sets: at least one set.
            class_names: the class list the records' class_ids index.
            require_images: leave out images whose file is missing (VOC and COCO; False keeps them,
                for evaluating a detections file without the images).
            progress: progress bars on stderr.
        Raises:
            DataFormatError (or the reader's own YoloError): a set the data does not have, an
            unreadable data.yaml or COCO JSON.
        """
        if not sets:
            raise DataFormatError(f"{self.path}: no set to read")
        splits = []
        for name in sets:
            splits.append(self._read_one(SetSpec.parse(name), class_names, require_images, progress))
            logger.debug(
                f"{self.path}: set {name}: {len(splits[-1].images)} images, {len(splits[-1].left_out)} left out"
            )
        return merge_splits(splits)

    def _read_one(self, spec: SetSpec, class_names, require_images, progress) -> DataSplit:
        if self.kind == "voc":
            from utils.data.voc import read_voc_set, voc_root_for

            root = voc_root_for(self.path, spec.where)
            return read_voc_set(root, spec.split, class_names, require_images=require_images, progress=progress)
        available = ", ".join(self.set_names())
        if spec.where is not None:
            raise DataFormatError(f"{self.path}: {self.kind} data has no WHERE: part in its sets ({spec}); "
                                  f"it has {available}")  # fmt: skip
        if self.kind == "yolo":
            from utils.data.yolo import read_yolo_set

            if spec.split not in self._yolo.splits:
                raise DataFormatError(f"{self._yolo.path}: no split {spec.split!r} (it has {available})")
            return read_yolo_set(self._yolo, spec.split, class_names, progress=progress)
        from utils.data.coco import read_coco_set

        names = self._coco_files
        matches = [spec.split] if spec.split in names else [n for n in names if n.startswith(spec.split)]
        if len(matches) != 1:
            raise DataFormatError(f"{self.path}: no COCO split {spec.split!r} (it has {available})")
        return read_coco_set(names[matches[0]], class_names, require_images=require_images, progress=progress)


def open_data(path: str | Path) -> DataSource:
    """The data set at `path`, by what it holds (see the module docstring); what it was read as
    is a debug line of the `yolov4_tiny.data` logger.

    Raises DataFormatError when `path` does not exist or holds none of the known layouts.
    """
    source = _open_data(Path(path))
    names = f"{len(source.class_names)} class names" if source.class_names else "no class names"
    logger.debug(f"{path}: {source.kind} data ({names})")
    return source


def _open_data(path: Path) -> DataSource:
    from utils.data.coco import coco_categories, coco_split_files, load_coco_json, split_name
    from utils.data.voc import find_voc_roots
    from utils.data.yolo import find_data_yaml, read_data_yaml

    path = Path(path)
    if not path.exists():
        raise DataFormatError(f"{path}: no such file or folder")
    if path.is_file():
        if path.suffix.lower() in (".yaml", ".yml"):
            yolo = read_data_yaml(path)
            return DataSource("yolo", path, yolo.names, _yolo=yolo)
        if path.suffix.lower() == ".json":
            names = list(coco_categories(load_coco_json(path), path).values())
            return DataSource("coco", path, names, _coco_files={split_name(path): path})
        raise DataFormatError(f"{path}: not a data.yaml or a COCO .json file")
    if (path / "Annotations").is_dir():
        return DataSource("voc", path)
    yaml_path = find_data_yaml(path)
    if yaml_path is not None:
        yolo = read_data_yaml(yaml_path)
        return DataSource("yolo", path, yolo.names, _yolo=yolo)
    coco_files = coco_split_files(path)
    if coco_files:
        first = next((f for name, f in coco_files.items() if name.startswith("train")), next(iter(coco_files.values())))
        names = list(coco_categories(load_coco_json(first), first).values())
        return DataSource("coco", path, names, _coco_files=coco_files)
    if find_voc_roots(path):
        return DataSource("voc", path)
    raise DataFormatError(
        f"{path}: not a data set this project reads. Expected a VOC folder (Annotations/, JPEGImages/, "
        "ImageSets/Main/) or a VOCdevkit of them (VOC2007/, VOC2012/), a data.yaml (YOLO txt labels), "
        "or instances_<split>.json files (COCO, in annotations/ or here)"
    )


def resolve_class_names(classes_path: str | Path | None, source: DataSource | None = None) -> list[str]:
    """The class list: `classes_path` when given, else the names the data declares, else VOC's 20.

    Raises ModelDataError naming the file when it cannot be used. (nets is imported here, not at
    the top: it imports Keras, which the data check does not need.)"""
    from nets.model_data import DEFAULT_CLASSES_PATH, load_class_names

    if classes_path is not None:
        return load_class_names(classes_path)
    if source is not None and source.class_names:
        return list(source.class_names)
    return load_class_names(DEFAULT_CLASSES_PATH)


def untrainable_reason(split: DataSplit) -> str | None:
    """Why training on `split` cannot work, or None: no usable (non-difficult) object at all, or
    none of some class in the class list. The reason names the classes, and the names found in
    the data but not in the class list (a list that does not match the data)."""
    counts = split.objects_per_class()
    unknown = Counter(issue.detail for issue in split.issues if issue.kind == UNKNOWN_CLASS)
    hint = ""
    if unknown:
        listed = ", ".join(f"{name!r} ({n})" for name, n in unknown.most_common(10))
        hint = f"; objects of classes not in the class list: {listed}"
    if not counts.sum():
        return f"no usable object in the {len(split.images)} training images of {split.name}{hint}"
    missing = [name for name, count in zip(split.class_names, counts) if count == 0]
    if missing:
        return (
            f"no usable object of class {', '.join(map(repr, missing))} in the training images of {split.name} "
            f"(a class the network would never see); give a class list without it (--classes) or add "
            f"objects of it{hint}"
        )
    return None


def lines_split(images: Sequence[AnnotatedImage], class_names: list[str], path: str | Path) -> DataSplit:
    """A DataSplit around the images of an annotation-line file. Raises AnnotationError when a class
    id is not an index into `class_names`."""
    for image in images:
        bad = image.class_ids[(image.class_ids < 0) | (image.class_ids >= len(class_names))]
        if bad.size:
            raise AnnotationError(
                f"{path}: {image.path} has class id {int(bad[0])}, not an index into the {len(class_names)} classes"
            )
    return DataSplit(
        name=str(path),
        listing=str(path),
        images=list(images),
        class_names=list(class_names),
        image_ids=[image.image_id for image in images],
    )
