"""The data check: what in a data set ruins a training, found before it starts (check_data.py, voc_annotation.py).

`check_data` takes the sets a run would read (utils.data.sources, any format) and finds, each
naming its file:

=====================  ========================================================================
kind                   what
=====================  ========================================================================
unreadable annotation  an XML, label file or COCO entry that cannot be parsed (image left out)
missing image          an annotation whose image file is not there (left out)
corrupt image          a zero-byte, truncated or undecodable image (every image is decoded)
size mismatch          the image's size (as displayed) differs from the annotation's
duplicate image        files with the same content (SHA-1), or one file listed twice
duplicate box          two boxes of one class in an image with IoU >= 0.95
box outside the image  a box beyond the image's edges (skipped by training)
degenerate box         a box of zero or negative width or height (skipped)
unknown class          an object whose class is not in the class list (skipped)
unused class           a class of the list without a usable object in a set
empty image            an image without a usable object (a background image, or all skipped)
=====================  ========================================================================

`DataCheck.exit_code`: 2 when training could not use the data (no image, no usable object, or a
class of the list without one in the training sets: the reasons training refuses for,
utils.data.sources.untrainable_reason), 1 with any finding, 0 clean. `plot_labels` draws
labels.png: objects per class, box width against height, aspect ratios and box centres.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import warnings
from collections import Counter, defaultdict
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from utils.boxes import box_iou
from utils.cli import display_width, pad
from utils.data.annotations import (
    BOX_OUTSIDE,
    CORRUPT_IMAGE,
    AnnotatedImage,
    DataIssue,
    DataSplit,
    outside_image,
    with_progress,
)
from utils.data.images import ImageLoadError, check_regular_file, load_image
from utils.data.sources import DataFormatError, DataSource, untrainable_reason

logger = logging.getLogger("yolov4_tiny.data")

SIZE_MISMATCH = "size mismatch"
DUPLICATE_IMAGE = "duplicate image"
DUPLICATE_BOX = "duplicate box"
UNUSED_CLASS = "unused class"
EMPTY_IMAGE = "empty image"
# Two boxes of one class overlapping this much are reported as a duplicate.
DUPLICATE_BOX_IOU = 0.95
# Fonts with CJK glyphs matplotlib may find on a machine, tried after its DejaVu Sans.
CJK_FONTS = (
    "Noto Sans CJK SC", "Noto Sans CJK JP", "Noto Sans SC", "Source Han Sans SC", "WenQuanYi Zen Hei",
    "WenQuanYi Micro Hei", "Droid Sans Fallback", "SimHei", "Microsoft YaHei", "PingFang SC", "Arial Unicode MS",
)  # fmt: skip


@dataclass
class ImageFacts:
    """What decoding one image file found: its size as displayed and content hash, or why it failed."""

    hw: tuple[int, int] | None = None
    digest: str | None = None
    error: str | None = None


def inspect_image(path: str | Path) -> ImageFacts:
    """Hash and fully decode one image (utils.data.images.load_image, as training reads it)."""
    path = Path(path)
    try:
        check_regular_file(path)  # a named pipe would block read_bytes forever
        content = path.read_bytes()
    except ImageLoadError as err:
        return ImageFacts(error=str(err))
    except OSError as err:
        return ImageFacts(error=f"{path}: cannot read ({err})")
    if not content:
        return ImageFacts(error=f"{path}: empty file (0 bytes)")
    digest = hashlib.sha1(content).hexdigest()
    try:
        image = load_image(path)
    except ImageLoadError as err:
        return ImageFacts(digest=digest, error=str(err))
    return ImageFacts(hw=image.shape[:2], digest=digest)


@dataclass
class DataCheck:
    """What `check_data` found.

    Attributes:
        class_names: the class list.
        splits: role ("train", "val", "test") -> the images read for it.
        findings: every issue, the readers' and the check's, each naming its file.
        unusable: why training could not use the data (empty when it can).
        image_facts: image path -> ImageFacts.
    """

    class_names: list[str]
    splits: dict[str, DataSplit]
    findings: list[DataIssue] = field(default_factory=list)
    unusable: list[str] = field(default_factory=list)
    image_facts: dict[str, ImageFacts] = field(default_factory=dict)

    @property
    def exit_code(self) -> int:
        """2 unusable, 1 findings, 0 clean."""
        return 2 if self.unusable else 1 if self.findings else 0

    def counts_by_kind(self) -> Counter:
        return Counter(issue.kind for issue in self.findings)

    def summary(self) -> str:
        """The tables: images and objects per set, objects per class and set, findings per kind, the verdict."""
        roles = list(self.splits)
        lines = [f"{'set':<6} {'images':>8} {'objects':>8} {'difficult':>9} {'empty':>7} {'left out':>8}  sets"]
        for role, split in self.splits.items():
            objects = sum(len(i.class_ids) for i in split.images)
            difficult = sum(int(i.difficult.sum()) for i in split.images)
            empty = sum(1 for i in split.images if not len(i.class_ids))
            lines.append(
                f"{role:<6} {len(split.images):>8} {objects:>8} {difficult:>9} {empty:>7} {len(split.left_out):>8}  "
                f"{split.name}"
            )
        width = max([len("class")] + [display_width(n) for n in self.class_names])
        lines += ["", f"{'class':<{width}} " + " ".join(f"{r:>8}" for r in roles)]
        counts = {role: split.objects_per_class() for role, split in self.splits.items()}
        for c, name in enumerate(self.class_names):
            lines.append(f"{pad(name, width)} " + " ".join(f"{int(counts[r][c]):>8}" for r in roles))
        by_kind = self.counts_by_kind()
        if by_kind:
            kind_width = max(len(k) for k in by_kind)
            lines += ["", f"{'finding':<{kind_width}} {'count':>7}"]
            lines += [f"{kind:<{kind_width}} {count:>7}" for kind, count in by_kind.most_common()]
        lines.append("")
        if self.unusable:
            lines += ["unusable for training (exit code 2):"] + [f"  {reason}" for reason in self.unusable]
        elif self.findings:
            lines.append(f"{len(self.findings)} finding(s), listed above (exit code 1)")
        else:
            lines.append("no problem found (exit code 0)")
        return "\n".join(lines) + "\n"

    def to_dict(self) -> dict:
        """A JSON-able report: exit code, unusable reasons, findings, objects per class and set."""
        return {
            "exit_code": self.exit_code,
            "unusable": self.unusable,
            "counts_by_kind": dict(self.counts_by_kind()),
            "sets": {role: split.name for role, split in self.splits.items()},
            "objects_per_class": {
                role: dict(zip(self.class_names, split.objects_per_class().tolist(), strict=True))
                for role, split in self.splits.items()
            },
            "findings": [{"kind": i.kind, "path": i.path, "message": i.message} for i in self.findings],
        }


def check_data(
    splits: Mapping[str, DataSplit],
    class_names: list[str],
    train_roles: tuple[str, ...] = ("train",),
    workers: int | None = None,
    progress: bool = False,
    overlaps: bool = True,
) -> DataCheck:
    """Check the sets a run reads (see the module docstring for what is found).

    Args:
        splits: role -> the images of that role, as `DataSource.read` returns them (with
            `require_images=True`, so missing images are findings).
        class_names: the class list.
        train_roles: the roles training learns from: a class without a usable object there, or no
            object at all, makes the data unusable.
        workers: threads decoding images (default: the CPU count, at most 8).
        progress: a progress bar while decoding.
        overlaps: report an image listed in two roles (a training image in the val set); off when the
            roles are image sets that overlap on purpose (train, val and trainval).
    """
    check = DataCheck(class_names=list(class_names), splits=dict(splits))
    for split in splits.values():
        check.findings += split.issues

    roles_of: dict[str, list[str]] = defaultdict(list)
    for role, split in splits.items():
        for image in split.images:
            roles_of[image.path].append(role)
    check.image_facts = _inspect_images(list(roles_of), workers, progress)
    check.findings += _image_file_findings(splits, check.image_facts)
    check.findings += _duplicate_image_findings(check.image_facts, roles_of, overlaps)
    check.findings += _annotation_findings(splits, class_names, check.image_facts)
    findings, check.unusable = _class_findings(splits, class_names, train_roles)
    check.findings += findings
    if not any(split.images for split in splits.values()):
        check.unusable.append("no readable image in any set")
    return check


def _inspect_images(paths: list[str], workers: int | None, progress: bool) -> dict[str, ImageFacts]:
    """path -> what decoding the image found, in `paths`' order, decoded on `workers` threads."""
    workers = workers or min(8, os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        facts = list(with_progress(pool.map(inspect_image, paths), progress and bool(paths), "decode"))
    return dict(zip(paths, facts, strict=True))


def _image_file_findings(splits: Mapping[str, DataSplit], image_facts: dict[str, ImageFacts]) -> list[DataIssue]:
    """Images that do not decode, then images whose size is not the one their annotation says."""
    findings = [DataIssue(CORRUPT_IMAGE, path, fact.error) for path, fact in image_facts.items() if fact.error]
    annotated_size = {image.path: (image.size, image.source) for split in splits.values() for image in split.images}
    for path, (size, source) in annotated_size.items():
        hw = image_facts[path].hw
        if size is not None and hw is not None and tuple(size) != tuple(hw):
            where = source or path
            findings.append(
                DataIssue(
                    SIZE_MISMATCH,
                    where,
                    f"{where}: the annotation says {size[1]}x{size[0]}, the image {path} is {hw[1]}x{hw[0]} "
                    "(width x height, as displayed); its boxes may be in the wrong place",
                )
            )
    return findings


def _duplicate_image_findings(
    image_facts: dict[str, ImageFacts], roles_of: Mapping[str, list[str]], overlaps: bool
) -> list[DataIssue]:
    """Images with the same content, then images listed more than once (in two roles only when
    `overlaps`)."""
    findings = []
    by_digest: dict[str, list[str]] = defaultdict(list)
    for path, fact in image_facts.items():
        if fact.digest:
            by_digest[fact.digest].append(path)
    for group in by_digest.values():
        if len(group) > 1:
            findings.append(DataIssue(DUPLICATE_IMAGE, group[0], f"{group[0]}: same content as {', '.join(group[1:])}"))
    for path, roles in roles_of.items():
        if len(roles) > 1 and (overlaps or len(set(roles)) < len(roles)):
            listed = ", ".join(f"{role} ({n} times)" if n > 1 else role for role, n in Counter(roles).items())
            findings.append(DataIssue(DUPLICATE_IMAGE, path, f"{path}: listed more than once, in {listed}"))
    return findings


def _annotation_findings(
    splits: Mapping[str, DataSplit], class_names: list[str], image_facts: dict[str, ImageFacts]
) -> list[DataIssue]:
    """Per image, once even when listed in several roles: duplicated boxes, boxes outside the
    image (where the reader could not check them), no usable object."""
    findings: list[DataIssue] = []
    seen_images: set[str] = set()
    for split in splits.values():
        for image in split.images:
            if image.path in seen_images:
                continue
            seen_images.add(image.path)
            findings += _duplicate_boxes(image, class_names)
            hw = image_facts[image.path].hw
            if image.size is None and hw is not None:  # boxes the reader could not check (VOC without <size>)
                where = image.source or image.path
                for box in image.boxes[outside_image(image.boxes, hw)]:
                    shown = tuple(round(float(v), 1) for v in box)
                    findings.append(
                        DataIssue(BOX_OUTSIDE, where, f"{where}: box {shown} lies outside the {hw[1]}x{hw[0]} image "
                                  f"{image.path}")
                    )  # fmt: skip
            if not len(image.class_ids):
                where = f" ({image.source})" if image.source else ""
                findings.append(DataIssue(EMPTY_IMAGE, image.path, f"{image.path}{where}: no usable object"))
    return findings


def _class_findings(
    splits: Mapping[str, DataSplit], class_names: list[str], train_roles: tuple[str, ...]
) -> tuple[list[DataIssue], list[str]]:
    """Classes without a usable object in a role, and why a training role cannot be learned from."""
    findings, unusable = [], []
    for role, split in splits.items():
        counts = split.objects_per_class()
        for name, count in zip(class_names, counts, strict=True):
            if count == 0:
                findings.append(
                    DataIssue(UNUSED_CLASS, split.listing, f"{split.listing}: no usable object of class {name!r} in "
                              f"the {role} set(s)", name)
                )  # fmt: skip
        if role in train_roles:
            reason = untrainable_reason(split) if split.images else f"{split.name}: no readable image"
            if reason:
                unusable.append(reason)
    return findings, unusable


def read_roles(
    source: DataSource, sets: Mapping[str, list[str] | None], class_names: list[str], progress: bool = False
) -> dict[str, DataSplit]:
    """role -> its images, for the roles of `sets` ("train", "val", "test" -> the sets named, or None).

    train and val fall back to the data's default sets (`DataSource.default_sets`; a missing default
    val set is no error); test is read only when named.
    """
    splits = {}
    for role, named in sets.items():
        chosen = named or (source.default_sets(role) if role != "test" else [])
        if not chosen:
            continue
        try:
            splits[role] = source.read(chosen, class_names, progress=progress)
        except (FileNotFoundError, DataFormatError):
            if named or role == "train":
                raise
    return splits


def write_report(check: DataCheck, output: str | Path, plots: bool = True) -> list[Path]:
    """Write data_check.json (`DataCheck.to_dict`, UTF-8) and labels.png (`plot_labels`, of the
    training images, else of all) into `output` (created); returns the files written."""
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    report = output / "data_check.json"
    report.write_text(json.dumps(check.to_dict(), indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    written = [report]
    if plots:
        images = check.splits["train"].images if "train" in check.splits else [
            image for split in check.splits.values() for image in split.images
        ]
        sizes = {path: fact.hw for path, fact in check.image_facts.items()}
        missing = plot_labels(images, check.class_names, output / "labels.png", sizes)
        if missing:
            logger.warning(f"no installed font has the glyphs of {missing}; labels.png shows them as boxes")
        written.append(output / "labels.png")
    return written


def _duplicate_boxes(image: AnnotatedImage, class_names: list[str]) -> list[DataIssue]:
    if len(image.boxes) < 2:
        return []
    iou = box_iou(image.boxes.astype(np.float64), image.boxes.astype(np.float64))
    same = image.class_ids[:, None] == image.class_ids[None, :]
    where = image.source or image.path
    found = []
    for i, j in zip(*np.nonzero(np.triu(same & (iou >= DUPLICATE_BOX_IOU), k=1)), strict=True):
        name = class_names[image.class_ids[i]]
        box_a, box_b = (tuple(round(float(v), 1) for v in image.boxes[k]) for k in (i, j))
        found.append(
            DataIssue(
                DUPLICATE_BOX,
                where,
                f"{where}: two {name!r} boxes {box_a} and {box_b} overlap with IoU {iou[i, j]:.2f} (a duplicate?)",
            )
        )
    return found


def plot_labels(
    images: list[AnnotatedImage],
    class_names: list[str],
    path: str | Path,
    image_sizes: Mapping[str, tuple[int, int] | None] | None = None,
) -> list[str]:
    """Draw labels.png: objects per class (bars), box width against height and box centres (both as
    fractions of the image), and the histogram of box aspect ratios (width / height).

    Args:
        images: the records (difficult objects included).
        class_names: the class list.
        path: the PNG to write.
        image_sizes: image path -> (height, width) as decoded; else the record's size is used, and
            images of unknown size leave the size panels.
    Returns: the class names whose glyphs no font found has (drawn as boxes).
    """
    counts = np.zeros(len(class_names), dtype=np.int64)
    relative, class_of = [], []
    for image in images:
        np.add.at(counts, image.class_ids, 1)
        hw = (image_sizes or {}).get(image.path) or image.size
        if hw is None or not len(image.boxes):
            continue
        scale = np.array([hw[1], hw[0], hw[1], hw[0]], dtype=np.float64)
        relative.append(image.boxes / scale)
        class_of.append(image.class_ids)
    boxes = np.concatenate(relative) if relative else np.zeros((0, 4))
    classes = np.concatenate(class_of) if class_of else np.zeros(0, dtype=np.int64)
    wh = boxes[:, 2:] - boxes[:, :2]
    centres = (boxes[:, 2:] + boxes[:, :2]) / 2

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _draw_labels(path, class_names, counts, len(images), classes, wh, centres)
    missing = False
    for warning in caught:
        if "missing from font" in str(warning.message):
            missing = True
        else:
            warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)
    return sorted({n for n in class_names if not n.isascii()}) if missing else []


def _draw_labels(path, class_names, counts, num_images, classes, wh, centres) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(10, 9))
    FigureCanvasAgg(figure)
    (bars, sizes), (aspects, centre_axes) = figure.subplots(2, 2)
    x = np.arange(len(class_names))
    colours = [f"C{c % 10}" for c in range(len(class_names))]
    bars.bar(x, counts, color=colours)
    bars.set_xticks(x, class_names, rotation=90 if len(class_names) > 6 else 0, fontsize=8)
    for text in bars.get_xticklabels():
        text.set_fontfamily(["DejaVu Sans", *_installed(CJK_FONTS)])
    bars.set_ylabel("objects")
    bars.set_title(f"{int(counts.sum())} objects in {num_images} images")
    point_colours = [colours[c] for c in classes]
    sizes.scatter(wh[:, 0], wh[:, 1], s=3, alpha=0.4, c=point_colours)
    sizes.set(xlim=(0, 1), ylim=(0, 1), xlabel="box width / image width", ylabel="box height / image height")
    sizes.set_title("box sizes")
    aspect = np.log2(np.maximum(wh[:, 0], 1e-9) / np.maximum(wh[:, 1], 1e-9)) if len(wh) else np.zeros(0)
    aspects.hist(np.clip(aspect, -4.99, 4.99), bins=np.linspace(-5, 5, 41), color="C0")
    aspects.set_title("box aspect ratios")
    ticks = np.arange(-4, 5, 2)
    aspects.set_xticks(ticks, [f"{2.0**t:g}" for t in ticks])
    aspects.set(xlim=(-5, 5), xlabel="box aspect, width / height (log scale)", ylabel="boxes")
    centre_axes.scatter(centres[:, 0], centres[:, 1], s=3, alpha=0.4, c=point_colours)
    centre_axes.set(xlim=(0, 1), ylim=(1, 0), xlabel="x centre / width", ylabel="y centre / height")
    centre_axes.set_title("box centres")
    figure.tight_layout()
    figure.savefig(path, dpi=100)


def _installed(families: tuple[str, ...]) -> list[str]:
    from matplotlib import font_manager

    names = {font.name for font in font_manager.fontManager.ttflist}
    return [family for family in families if family in names]
