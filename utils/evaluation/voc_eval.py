"""Evaluating detections on a split of a data set: what get_map.py does, as a library.

    log = EvaluationLog()                            # each problem is also logged (yolov4_tiny.evaluation)
    source = open_data("VOCdevkit")                  # utils.data.sources: VOC, data.yaml or COCO JSON
    class_names = resolve_class_names(classes_path, detector, source.class_names)
    split = load_voc_split(source, "2007:test", class_names, log)
    detections = detect_split(detector, split, log)  # or read_coco_detections("dets.json", split, class_names, log)
    evaluation = evaluate_split(split, detections, class_names, log, source={"weights": "best.keras"}, coco=True)
    evaluation.write("map_out", detections_json=True)

Ground truth is read by utils.data.sources, whatever the format: for VOC from <root>/Annotations/<id>.xml
for the ids in <root>/ImageSets/Main/<split>.txt (a VOCdevkit's year as 2007:test), for a data.yaml
from its labels, for COCO from instances_<split>.json (iscrowd as difficult). Images are named by
their VOC id, their path in the YOLO images folder without suffix, or their COCO id. Objects
marked difficult are neither positives nor errors. Boxes are continuous pixel xyxy (utils.boxes),
no VOC "+1".

What cannot be used (an XML that does not parse, an unreadable image, a detection naming an unknown
image or class) is a *problem*: named in the `EvaluationLog`, left out, and the rest is evaluated.
Objects skipped inside a readable XML (a class not in the list, an empty box) are *notes*: evaluating
a subset of VOC's classes skips every other object, which is not a failure. When nothing at all can
be evaluated, `EvaluationError` says why.
"""

from __future__ import annotations

import json
import logging
import math
import sys
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from tqdm import tqdm

from nets.model_data import DEFAULT_CLASSES_PATH, load_class_names
from utils.boxes import convert_format
from utils.cli import display_width, pad
from utils.data.annotations import BOX_OUTSIDE, DEGENERATE_BOX, UNKNOWN_CLASS
from utils.data.images import image_batches
from utils.data.sources import DataSource, open_data
from utils.defaults import MATCH_IOU, MAX_DETECTIONS, PR_SCORE_THRESHOLD
from utils.errors import YoloError
from utils.evaluation.metrics import (
    CocoResult,
    EvaluationResult,
    GroundTruth,
    ImageDetections,
    coco_evaluate,
    evaluate_detections,
)

if TYPE_CHECKING:
    from utils.inference.detector import Detector

# How many distinct unknown image ids / classes (and skipped objects) are named one by one.
MAX_NAMED_PROBLEMS = 20
logger = logging.getLogger("yolov4_tiny.evaluation")


class EvaluationError(YoloError):
    """Nothing can be evaluated (no such split, an empty split, an unreadable detections file, ...);
    the message says why."""

    exit_code = 2


@dataclass
class EvaluationLog:
    """What an evaluation could not use, gathered while it runs.

    Attributes:
        problems: files or detections left out, one message each naming it (a script exits 1
            when there are any).
        notes: objects skipped inside readable annotations (not failures).

    Each problem is also logged as it is found (a warning of the `yolov4_tiny.evaluation` logger).
    """

    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def problem(self, message: str) -> None:
        self.problems.append(message)
        logger.warning(message)


@dataclass
class VocSplit:
    """The ground truth of the evaluated split of a data set (VOC, data.yaml or COCO; the name is historical).

    Attributes:
        root: the data set (what --data named).
        name: the set(s) read ("test", "2007:test", "val2017", ...).
        image_ids: every image the split lists.
        ground_truths: image id -> GroundTruth (boxes (M, 4) pixel xyxy, class_ids (M,),
            difficult (M,)), for the images being evaluated; `detect_split` removes the images
            it cannot read.
        excluded: image id -> why it was left out of the evaluation.
        paths: image id -> its image file (where it would be, when missing).
    """

    root: Path
    name: str
    image_ids: list[str]
    ground_truths: dict[str, GroundTruth]
    excluded: dict[str, str] = field(default_factory=dict)
    paths: dict[str, Path] = field(default_factory=dict)


def resolve_class_names(
    classes_path: str | Path | None, detector: Detector | None = None, data_names: list[str] | None = None
) -> list[str]:
    """The class list: `classes_path`, else the detector's own names, else the names the data
    declares (`data_names`: data.yaml's, COCO's categories), else VOC's 20.

    Raises ModelDataError when the file cannot be used, EvaluationError when its count differs
    from the detector's.
    """
    if classes_path is None and detector is not None and detector.class_names is not None:
        names = list(detector.class_names)
        source = "its class names"
    elif classes_path is None and data_names:
        names, source = list(data_names), "the data's class names"
    else:
        path = Path(classes_path or DEFAULT_CLASSES_PATH)
        names = load_class_names(path)  # ModelDataError naming the file when it cannot be used
        source = str(path)
    if detector is not None and detector.num_classes != len(names):
        raise EvaluationError(f"the model has {detector.num_classes} classes, {source} {len(names)}")
    return names


def load_voc_split(
    data: str | Path | DataSource,
    split: str | None,
    class_names: list[str],
    log: EvaluationLog,
    progress: bool = False,
) -> VocSplit:
    """Read the ground truth of a split of any data set utils.data.sources reads (the name is historical).

    An annotation that cannot be read is a problem and its image left out; objects skipped inside
    readable annotations (a class not in the list, an empty box) are notes. Images whose file is
    missing are kept here: `detect_split` leaves them out, a detections file needs none.

    Args:
        data: a data set (VOC folder or VOCdevkit, data.yaml, COCO JSON) or an opened DataSource.
        split: a set of it, [WHERE:]SPLIT ("test", "2007:test", "val2017"); None: its test set
            (`DataSource.default_sets("test")`).
        class_names: the class list (objects of other classes are skipped, as notes).
        log: receives the problems and notes.
        progress: show a progress bar on stderr.
    Raises:
        EvaluationError: no such data or split, or a split without images.
    """
    try:
        source = data if isinstance(data, DataSource) else open_data(data)
        sets = [split] if split else source.default_sets("test")
        if not sets:
            available = ", ".join(source.set_names())
            raise EvaluationError(f"{source.path}: no test set; name one with --split (it has {available})")
        read = source.read(sets, class_names, require_images=False, progress=progress)
    except EvaluationError:
        raise
    except YoloError as err:
        raise EvaluationError(str(err)) from None
    if not read.image_ids:
        raise EvaluationError(f"{read.listing} lists no image ids; nothing to evaluate")
    result = VocSplit(root=source.path, name=" ".join(sets), image_ids=read.image_ids, ground_truths={})
    for image_id, issue in read.left_out.items():
        result.excluded[image_id] = f"{issue.detail}; image {image_id} left out of the evaluation"
        log.problem(result.excluded[image_id])
    left_out = set(read.left_out.values())
    for issue in read.issues:
        if issue.kind in (UNKNOWN_CLASS, DEGENERATE_BOX, BOX_OUTSIDE):
            log.notes.append(issue.message)
        elif issue not in left_out:
            log.problem(issue.message)
    for image in read.images:
        result.ground_truths[image.image_id] = GroundTruth(image.boxes, image.class_ids, image.difficult)
        result.paths[image.image_id] = Path(image.path)
    return result


def detect_split(
    detector: Detector, split: VocSplit, log: EvaluationLog, batch_size: int = 8, progress: bool = False
) -> dict[str, ImageDetections]:
    """Run `detector` over the images of `split.ground_truths`, `batch_size` at a time.

    An image that cannot be read is a problem: it is moved from `split.ground_truths` to
    `split.excluded`, so its objects do not count as missed.

    Returns: image id -> the detector's `Detections` (boxes (N, 4) pixel xyxy in the original
        image, scores (N,), class_ids (N,)), which `evaluate_detections` takes as they are.
    """

    def path_of(image_id: str) -> Path | None:
        return split.paths.get(image_id)

    detections = {}
    image_ids = list(split.ground_truths)
    with tqdm(total=len(image_ids), desc="detect", unit="img", file=sys.stderr, disable=not progress) as bar:
        for batch in image_batches(image_ids, batch_size, path_of):
            for image_id, err in batch.failures:
                split.excluded[image_id] = f"{err}; image {image_id} left out of the evaluation"
                log.problem(split.excluded[image_id])
                del split.ground_truths[image_id]
            if batch.images:
                for image_id, found in zip(batch.items, detector.detect(batch.images), strict=True):
                    detections[image_id] = found
            bar.update(len(batch.items) + len(batch.failures))
    return detections


def _name_problems(counter: Counter, what: Callable[[object], str], source: Path, log: EvaluationLog) -> None:
    for value, count in list(counter.items())[:MAX_NAMED_PROBLEMS]:
        log.problem(f"{source}: {count} detection(s) with {what(value)}; ignored")
    if len(counter) > MAX_NAMED_PROBLEMS:
        rest = sum(list(counter.values())[MAX_NAMED_PROBLEMS:])
        log.problem(f"{source}: {len(counter) - MAX_NAMED_PROBLEMS} more such values ({rest} detections); ignored")


def read_coco_detections(
    path: str | Path,
    split: VocSplit,
    class_names: list[str],
    log: EvaluationLog,
    classes_source: str | Path = DEFAULT_CLASSES_PATH,
) -> dict[str, ImageDetections]:
    """Read a COCO results JSON list as image id -> ImageDetections (boxes pixel xyxy).

    Each entry: {"image_id": VOC image id (string), "category_id": 0-based index into
    `class_names`, "bbox": pixel [x, y, w, h], "score": float}. Entries naming an image outside the
    split (or one left out), a class outside the class list, or with a malformed bbox / score are
    problems and skipped; the rest are kept. `classes_source` names the class list in messages.

    Raises EvaluationError when the file cannot be read, is not JSON or not a list.
    """
    path = Path(path)
    num_classes = len(class_names)
    ground_truths, excluded = split.ground_truths, split.excluded
    try:
        entries = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as err:
        raise EvaluationError(f"{path}: cannot read detections ({err})") from None
    except json.JSONDecodeError as err:
        raise EvaluationError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(entries, list):
        raise EvaluationError(f"{path}: expected a JSON list of detections, got {type(entries).__name__}")

    unknown_images, left_out_images, unknown_classes, malformed = Counter(), Counter(), Counter(), []
    per_image: dict[str, list[tuple[list[float], float, int]]] = {}
    for index, entry in enumerate(entries):
        try:
            image_id = entry["image_id"]
            category = entry["category_id"]
            bbox = [float(v) for v in entry["bbox"]]
            score = float(entry["score"])
        except (KeyError, TypeError, ValueError) as err:  # the entry's own fields, not library calls
            malformed.append(f"entry {index}: {type(err).__name__} {err}")
            continue
        if len(bbox) != 4 or not all(map(math.isfinite, bbox)) or bbox[2] < 0 or bbox[3] < 0:
            malformed.append(f"entry {index}: bbox must be 4 finite numbers x, y, w >= 0, h >= 0, got {entry['bbox']}")
            continue
        if not math.isfinite(score):
            malformed.append(f"entry {index}: score {entry['score']} is not finite")
            continue
        image_id = str(image_id)
        if image_id not in ground_truths:
            (left_out_images if image_id in excluded else unknown_images)[image_id] += 1
            continue
        integral = (isinstance(category, int) and not isinstance(category, bool)) or (
            isinstance(category, float) and category.is_integer()
        )
        if not integral:
            unknown_classes[category if isinstance(category, (int, float, str)) else repr(category)] += 1
            continue
        if not 0 <= int(category) < num_classes:
            unknown_classes[int(category)] += 1
            continue
        per_image.setdefault(image_id, []).append((bbox, score, int(category)))

    for message in malformed[:MAX_NAMED_PROBLEMS]:
        log.problem(f"{path}: malformed detection, {message}; ignored")
    if len(malformed) > MAX_NAMED_PROBLEMS:
        log.problem(f"{path}: {len(malformed) - MAX_NAMED_PROBLEMS} more malformed detections; ignored")

    def not_in_split(image_id: str) -> str:
        padded = image_id.zfill(6)
        hint = f" (did you mean {padded!r}? VOC image ids are strings)" if padded in ground_truths else ""
        return f"image_id {image_id!r}, which is not in the {split.name} split{hint}"

    _name_problems(unknown_images, not_in_split, path, log)
    _name_problems(left_out_images, lambda i: f"image_id {i!r}, whose annotation could not be read", path, log)
    _name_problems(
        unknown_classes,
        lambda c: f"category_id {c!r}, not a 0-based class index below {num_classes} ({classes_source})",
        path,
        log,
    )

    detections = {}
    for image_id, items in per_image.items():
        boxes = convert_format(np.array([b for b, _, _ in items], dtype=np.float64), "xywh", "xyxy")
        detections[image_id] = ImageDetections(
            boxes=boxes,
            scores=np.array([s for _, s, _ in items], dtype=np.float64),
            class_ids=np.array([c for _, _, c in items], dtype=np.int64),
        )
    return detections


def detections_to_coco_json(detections: Mapping[str, ImageDetections]) -> list[dict]:
    """image id -> detections (boxes pixel xyxy) as the COCO results list `read_coco_detections` reads."""
    records = []
    for image_id, found in detections.items():
        xywh = convert_format(np.asarray(found.boxes, dtype=np.float64).reshape(-1, 4), "xyxy", "xywh")
        for box, score, class_id in zip(
            xywh.tolist(), np.asarray(found.scores).tolist(), np.asarray(found.class_ids).tolist(), strict=True
        ):
            records.append({"image_id": image_id, "category_id": int(class_id), "bbox": box, "score": float(score)})
    return records


def _number(value: float | None) -> float | None:
    return None if value is None or np.isnan(value) else float(value)


@dataclass
class VocEvaluation:
    """The outcome of `evaluate_split`.

    Attributes:
        result: VOC metrics per class (utils.evaluation.metrics.EvaluationResult).
        coco: pycocotools' metrics, when asked for.
        class_names: the class list; index = class id.
        settings: data, split, source of the detections, image and object counts (in that order).
        problems, notes: as in `EvaluationLog`.
        detections: image id -> the detections evaluated.
    """

    result: EvaluationResult
    coco: CocoResult | None
    class_names: list[str]
    settings: dict
    problems: list[str]
    notes: list[str]
    detections: Mapping[str, ImageDetections] = field(repr=False)

    def to_dict(self) -> dict:
        """What results.json holds: "mAP" (fraction), "per_class", the settings, "coco" when computed."""
        result, coco, class_names = self.result, self.coco, self.class_names
        data = {
            "mAP": _number(result.map),
            "metric": "VOC2007 11-point AP" if result.use_07_metric else "VOC all-point AP (VOC2010+)",
            "iou_threshold": result.iou_threshold,
            "score_threshold": result.score_threshold,
            **self.settings,
            "per_class": result.per_class(class_names),
        }
        if coco is not None:
            data["coco"] = {
                **coco.stats,
                "per_class": {
                    name: {"AP": _number(coco.ap[c]), "AP50": _number(coco.ap50[c])}
                    for c, name in enumerate(class_names)
                },
                "difficult_objects": "evaluated as iscrowd=1 (ignored regions)",
            }
        data["problems"] = self.problems
        data["skipped_objects"] = self.notes
        return data

    def to_text(self) -> str:
        """A readable report (results.txt): settings, the per-class table, mAP, the COCO summary, problems."""
        result, class_names = self.result, self.class_names

        def pct(value: float) -> str:
            return "    n/a" if np.isnan(value) else f"{value * 100:6.2f}%"

        width = max([len("class")] + [display_width(n) for n in class_names])
        metric = "11-point (VOC2007)" if result.use_07_metric else "all-point (VOC2010+)"
        lines = [f"{key}: {value}" for key, value in self.settings.items()]
        lines += [
            f"AP: {metric} at IoU >= {result.iou_threshold:g}; precision / recall / F1 at score >= "
            f"{result.score_threshold:g}",
            "",
            f"{'class':<{width}}       AP  precision    recall        F1      gt     det",
        ]
        for c, name in enumerate(class_names):
            lines.append(
                f"{pad(name, width)}  {pct(result.ap[c])}    {pct(result.precision[c])}   {pct(result.recall[c])}   "
                f"{pct(result.f1[c])}  {result.num_gt[c]:6d}  {result.num_det[c]:6d}"
            )
        lines += [
            "",
            f"mAP@{result.iou_threshold:g} = {pct(result.map).strip()} over "
            f"{int((result.num_gt > 0).sum())} classes with ground truth",
        ]
        if self.coco is not None:
            lines += ["", "COCO metrics (pycocotools; difficult objects as iscrowd=1):", self.coco.summary.rstrip()]
        if self.problems:
            lines += ["", f"{len(self.problems)} problem(s):"] + [f"  {p}" for p in self.problems]
        if self.notes:
            lines += ["", f"{len(self.notes)} object(s) skipped in readable annotations:"]
            lines += [f"  {n}" for n in self.notes]
        return "\n".join(lines) + "\n"

    def write(self, out: str | Path, detections_json: bool = False, plots: bool = True) -> None:
        """Write results.json and results.txt into `out` (created), plus detections.json (the COCO
        results list, reusable by `read_coco_detections`) and the charts of utils.evaluation.plots."""
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        if detections_json:
            text = json.dumps(detections_to_coco_json(self.detections), ensure_ascii=False)
            (out / "detections.json").write_text(text, encoding="utf-8")
        text = json.dumps(self.to_dict(), indent=2, ensure_ascii=False)
        (out / "results.json").write_text(text + "\n", encoding="utf-8")
        (out / "results.txt").write_text(self.to_text(), encoding="utf-8")
        if plots:
            from utils.evaluation.plots import write_plots

            write_plots(self.result, self.class_names, out)


def evaluate_split(
    split: VocSplit,
    detections: Mapping[str, ImageDetections],
    class_names: list[str],
    log: EvaluationLog,
    source: dict[str, str],
    iou_threshold: float = MATCH_IOU,
    use_07_metric: bool = False,
    score_threshold: float = PR_SCORE_THRESHOLD,
    coco: bool = False,
    max_detections: int = MAX_DETECTIONS,
) -> VocEvaluation:
    """VOC metrics (and COCO's with `coco=True`) of `detections` against the split's ground truth.

    Args:
        split: from `load_voc_split` (after `detect_split` or `read_coco_detections`).
        detections: image id -> ImageDetections (or a detector's Detections), ids in the split.
        class_names: the class list.
        log: its problems and notes go into the result.
        source: where the detections come from, e.g. {"weights": path} or {"detections": path}.
        iou_threshold, use_07_metric, score_threshold: see `evaluate_detections`.
        coco: also run pycocotools; `max_detections` is its largest maxDets.
    Raises:
        EvaluationError: none of the split's images could be evaluated.
    """
    if not split.ground_truths:
        raise EvaluationError(f"none of the {len(split.image_ids)} images of split {split.name!r} could be evaluated")
    num_classes = len(class_names)
    result = evaluate_detections(
        detections,
        split.ground_truths,
        num_classes=num_classes,
        iou_threshold=iou_threshold,
        use_07_metric=use_07_metric,
        score_threshold=score_threshold,
    )
    coco_result = coco_evaluate(detections, split.ground_truths, num_classes, max_detections) if coco else None
    settings = {
        "data": str(split.root),
        "split": split.name,
        **source,
        "images_evaluated": len(split.ground_truths),
        "images_left_out": len(split.excluded),
        "objects_skipped": len(log.notes),
    }
    return VocEvaluation(
        result=result,
        coco=coco_result,
        class_names=list(class_names),
        settings=settings,
        problems=log.problems,
        notes=log.notes,
        detections=detections,
    )
