"""Evaluate detections on a PASCAL VOC split: per-class AP (VOC), optional COCO metrics, charts.

Two sources of detections:

    # run one of our models over the split
    python get_map.py --weights logs/best.keras --data VOCdevkit --split test

    # or evaluate any detector's output, a COCO results JSON list:
    #   [{"image_id": "000001", "category_id": 14, "bbox": [x, y, w, h], "score": 0.93}, ...]
    # image_id = the VOC image id (string), category_id = 0-based index in --classes,
    # bbox = pixel x, y, width, height in the original image.
    python get_map.py --detections dets.json --data VOCdevkit --split test --coco

Ground truth comes from <data>/Annotations/<id>.xml for the ids in <data>/ImageSets/Main/<split>.txt
(<data> may be a VOCdevkit folder holding VOC2007/). Objects marked difficult are neither
positives nor errors. Boxes are continuous pixel coordinates (utils.boxes), no VOC "+1".

Written to --out: results.json, results.txt, pr_curves/<class>.png, ap_per_class.png,
counts_per_class.png (and detections.json with --weights, reusable with --detections).
A file that cannot be used (an XML that does not parse, an unreadable image, a detection naming
an unknown image or class) is reported by name and left out; the rest is evaluated, and the exit
code is then 1. Exit code 2: nothing could be evaluated (bad arguments, empty split, ...).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np
from tqdm import tqdm

from nets.model_data import DEFAULT_CLASSES_PATH, INPUT_MULTIPLE, InputSizeError, load_class_names, parse_input_size
from utils.boxes import convert_format
from utils.data.voc import VocFormatError, find_image, find_voc_root, parse_voc_xml, read_image_set
from utils.evaluation.metrics import COCO_STAT_NAMES, CocoResult, EvaluationResult, coco_evaluate, evaluate_detections

# How many distinct unknown image ids / classes are named one by one before summarising.
MAX_NAMED_PROBLEMS = 20


class FatalError(Exception):
    """Nothing can be evaluated; the message says why."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--weights",
        type=Path,
        help="a .keras model of ours, or one exported by export.py (.onnx, .tflite, SavedModel folder), to run",
    )
    source.add_argument(
        "--detections",
        type=Path,
        help="COCO results JSON list: image_id = VOC image id, category_id = 0-based class index, "
        "bbox = pixel [x, y, w, h], score",
    )
    parser.add_argument("--data", type=Path, default=Path("VOCdevkit"), help="VOC folder or VOCdevkit holding VOC2007/")
    parser.add_argument("--split", default="test", help="image set in ImageSets/Main (default: test)")
    parser.add_argument(
        "--classes",
        type=Path,
        default=None,
        help="class names, one a line (default: the model's own names with --weights, else VOC's 20)",
    )
    parser.add_argument(
        "--min-overlap", type=float, default=0.5, help="IoU (inclusive) for a detection to count as a hit (0.5)"
    )
    parser.add_argument("--voc07", action="store_true", help="11-point AP (VOC2007) instead of all-point (VOC2010+)")
    parser.add_argument(
        "--score-threshold", type=float, default=0.5, help="score at which precision, recall and F1 are read (0.5)"
    )
    parser.add_argument(
        "--conf",
        type=float,
        default=0.001,
        help="--weights: keep detections scoring at least this (0.001: full PR curve)",
    )
    parser.add_argument("--nms-iou", type=float, default=0.5, help="--weights: per-class NMS IoU threshold (0.5)")
    parser.add_argument(
        "--max-detections",
        type=int,
        default=100,
        help="most detections per image: --weights' limit and COCO's maxDets (100)",
    )
    parser.add_argument(
        "--input-size",
        type=int,
        nargs="+",
        default=None,
        metavar="N",
        help=f"--weights: network input, SIZE or HEIGHT WIDTH, multiples of {INPUT_MULTIPLE} "
        "(default: the model's own size, else 416)",
    )
    parser.add_argument("--batch-size", type=int, default=8, help="--weights: images per forward pass (8)")
    parser.add_argument(
        "--backend",
        choices=("keras", "saved_model", "onnx", "tflite"),
        default=None,
        help="--weights: runtime (default: from the path: .keras, .onnx, .tflite, a SavedModel folder)",
    )
    parser.add_argument("--coco", action="store_true", help="also compute COCO metrics (AP@[.5:.95], AP50, AP75, ...)")
    parser.add_argument("--no-plots", action="store_true", help="skip the PNG charts")
    parser.add_argument("--out", type=Path, default=Path("map_out"), help="output folder (default: map_out)")
    args = parser.parse_args(argv)
    if args.input_size is not None:
        try:
            args.input_size = parse_input_size("x".join(map(str, args.input_size)))
        except InputSizeError as err:
            parser.error(f"--input-size: {err}")
    if not 0.0 < args.min_overlap <= 1.0:
        parser.error(f"--min-overlap must be in (0, 1], got {args.min_overlap}")
    return args


def load_ground_truths(
    root: Path, image_ids: list[str], class_names: list[str], problems: list[str], notes: list[str]
) -> tuple[dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]], dict[str, str]]:
    """Parse the XML of every image id; one that cannot be parsed is reported and left out.

    Objects the parser skips (a class not in the list, an empty or out-of-image box) go to `notes`:
    the image is still evaluated, so they are not failures (evaluating a subset of VOC's classes
    skips every other object).

    Returns: (image_id -> (boxes (M, 4) pixel xyxy, class_ids (M,), difficult (M,)),
              image_id -> why it was left out).
    """
    ground_truths, excluded = {}, {}
    for image_id in tqdm(image_ids, desc="annotations", unit="img", file=sys.stderr):
        xml_path = root / "Annotations" / f"{image_id}.xml"
        try:
            annotation = parse_voc_xml(xml_path, class_names)
        except VocFormatError as err:
            excluded[image_id] = f"{err}; image {image_id} left out of the evaluation"
        except FileNotFoundError:
            excluded[image_id] = f"{xml_path}: no such file; image {image_id} left out of the evaluation"
        else:
            notes += annotation.warnings
            ground_truths[image_id] = (annotation.boxes, annotation.class_ids, annotation.difficult)
            continue
        report(problems, excluded[image_id])
    return ground_truths, excluded


def report(problems: list[str], message: str) -> None:
    problems.append(message)
    tqdm.write(f"warning: {message}", file=sys.stderr)


def _name_problems(counter: Counter, what: Callable[[object], str], source: Path, problems: list[str]) -> None:
    for value, count in list(counter.items())[:MAX_NAMED_PROBLEMS]:
        report(problems, f"{source}: {count} detection(s) with {what(value)}; ignored")
    if len(counter) > MAX_NAMED_PROBLEMS:
        rest = sum(list(counter.values())[MAX_NAMED_PROBLEMS:])
        report(problems, f"{source}: {len(counter) - MAX_NAMED_PROBLEMS} more such values ({rest} detections); ignored")


def load_detections_json(
    path: Path,
    ground_truths: dict,
    excluded: dict[str, str],
    split_name: str,
    num_classes: int,
    classes_path: Path,
    problems: list[str],
) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Read a COCO results list into image_id -> (boxes (N, 4) pixel xyxy, scores (N,), class_ids (N,)).

    Entries naming an image outside the split (or one left out), a class outside the class list,
    or with a malformed bbox / score are reported and skipped; the rest are kept.
    """
    try:
        entries = json.loads(path.read_text())
    except OSError as err:
        raise FatalError(f"{path}: cannot read detections ({err})") from None
    except json.JSONDecodeError as err:
        raise FatalError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(entries, list):
        raise FatalError(f"{path}: expected a JSON list of detections, got {type(entries).__name__}")

    unknown_images, left_out_images, unknown_classes, malformed = Counter(), Counter(), Counter(), []
    per_image: dict[str, list[tuple[list[float], float, int]]] = {}
    for index, entry in enumerate(entries):
        try:
            image_id = entry["image_id"]
            category = entry["category_id"]
            bbox = [float(v) for v in entry["bbox"]]
            score = float(entry["score"])
        except (KeyError, TypeError, ValueError) as err:
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
        report(problems, f"{path}: malformed detection, {message}; ignored")
    if len(malformed) > MAX_NAMED_PROBLEMS:
        report(problems, f"{path}: {len(malformed) - MAX_NAMED_PROBLEMS} more malformed detections; ignored")

    def not_in_split(image_id: str) -> str:
        padded = image_id.zfill(6)
        hint = f" (did you mean {padded!r}? VOC image ids are strings)" if padded in ground_truths else ""
        return f"image_id {image_id!r}, which is not in the {split_name} split{hint}"

    _name_problems(unknown_images, not_in_split, path, problems)
    _name_problems(left_out_images, lambda i: f"image_id {i!r}, whose annotation could not be read", path, problems)
    _name_problems(
        unknown_classes,
        lambda c: f"category_id {c!r}, not a 0-based class index below {num_classes} ({classes_path})",
        path,
        problems,
    )

    detections = {}
    for image_id, items in per_image.items():
        boxes = convert_format(np.array([b for b, _, _ in items], dtype=np.float64), "xywh", "xyxy")
        detections[image_id] = (
            boxes,
            np.array([s for _, s, _ in items], dtype=np.float64),
            np.array([c for _, _, c in items], dtype=np.int64),
        )
    return detections


def detector_from_args(args: argparse.Namespace):
    """The model of --weights, as a utils.inference.detector.Detector; FatalError when it cannot be loaded."""
    from utils.interop.loader import load_detector

    try:
        return load_detector(
            args.weights,
            classes_path=args.classes,
            conf=args.conf,
            nms_iou=args.nms_iou,
            max_detections=args.max_detections,
            input_shape=args.input_size,
            batch_size=args.batch_size,
            backend=args.backend,
        )
    except (ValueError, OSError) as err:
        raise FatalError(f"cannot load the model: {err}") from None


def run_weights(
    args: argparse.Namespace, detector, root: Path, ground_truths: dict, excluded: dict[str, str], problems: list[str]
) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Run the detector over the images of `ground_truths`. An image that cannot be read is reported
    and removed from `ground_truths` (so its objects are not counted as missed).

    Returns: image_id -> (boxes (N, 4) pixel xyxy, scores (N,), class_ids (N,)).
    """
    from utils.data.images import ImageLoadError, load_image

    detections = {}
    image_ids = list(ground_truths)
    with tqdm(total=len(image_ids), desc="detect", unit="img", file=sys.stderr) as progress:
        for start in range(0, len(image_ids), args.batch_size):
            batch_ids, images = [], []
            for image_id in image_ids[start : start + args.batch_size]:
                path = find_image(root, image_id)
                try:
                    if path is None:
                        raise ImageLoadError(f"{root / 'JPEGImages'}: no image file for {image_id}")
                    images.append(load_image(path))
                    batch_ids.append(image_id)
                except ImageLoadError as err:
                    excluded[image_id] = f"{err}; image {image_id} left out of the evaluation"
                    report(problems, excluded[image_id])
                    del ground_truths[image_id]
            if images:
                for image_id, found in zip(batch_ids, detector.detect(images), strict=True):
                    detections[image_id] = (found.boxes, found.scores, found.class_ids)
            progress.update(len(image_ids[start : start + args.batch_size]))
    return detections


def detections_to_coco_json(detections: dict) -> list[dict]:
    """image_id -> (boxes pixel xyxy, scores, class_ids) as the COCO results list --detections reads."""
    records = []
    for image_id, (boxes, scores, class_ids) in detections.items():
        xywh = convert_format(np.asarray(boxes, dtype=np.float64).reshape(-1, 4), "xyxy", "xywh")
        for box, score, class_id in zip(
            xywh.tolist(), np.asarray(scores).tolist(), np.asarray(class_ids).tolist(), strict=True
        ):
            records.append(
                {
                    "image_id": image_id,
                    "category_id": int(class_id),
                    "bbox": box,
                    "score": float(score),
                }
            )
    return records


def _number(value: float) -> float | None:
    return None if value is None or np.isnan(value) else float(value)


def results_dict(
    result: EvaluationResult,
    coco: CocoResult | None,
    class_names: list[str],
    settings: dict,
    problems: list[str],
    notes: list[str],
) -> dict:
    """What results.json holds: "mAP" (fraction), "per_class", settings, "coco" when computed."""
    data = {
        "mAP": _number(result.map),
        "metric": "VOC2007 11-point AP" if result.use_07_metric else "VOC all-point AP (VOC2010+)",
        "iou_threshold": result.iou_threshold,
        "score_threshold": result.score_threshold,
        **settings,
        "per_class": result.per_class(class_names),
    }
    if coco is not None:
        data["coco"] = {
            **coco.stats,
            "per_class": {
                name: {"AP": _number(coco.ap[c]), "AP50": _number(coco.ap50[c])} for c, name in enumerate(class_names)
            },
            "difficult_objects": "evaluated as iscrowd=1 (ignored regions)",
        }
    data["problems"] = problems
    data["skipped_objects"] = notes
    return data


def results_text(
    result: EvaluationResult,
    coco: CocoResult | None,
    class_names: list[str],
    settings: dict,
    problems: list[str],
    notes: list[str],
) -> str:
    """A readable report: settings, the per-class table, mAP, the COCO summary, problems."""

    def pct(value: float) -> str:
        return "    n/a" if np.isnan(value) else f"{value * 100:6.2f}%"

    width = max([len("class")] + [len(n) for n in class_names])
    metric = "11-point (VOC2007)" if result.use_07_metric else "all-point (VOC2010+)"
    lines = [f"{key}: {value}" for key, value in settings.items()]
    lines += [
        f"AP: {metric} at IoU >= {result.iou_threshold:g}; precision / recall / F1 at score >= "
        f"{result.score_threshold:g}",
        "",
        f"{'class':<{width}}       AP  precision    recall        F1      gt     det",
    ]
    for c, name in enumerate(class_names):
        lines.append(
            f"{name:<{width}}  {pct(result.ap[c])}    {pct(result.precision[c])}   {pct(result.recall[c])}   "
            f"{pct(result.f1[c])}  {result.num_gt[c]:6d}  {result.num_det[c]:6d}"
        )
    lines += [
        "",
        f"mAP@{result.iou_threshold:g} = {pct(result.map).strip()} over "
        f"{int((result.num_gt > 0).sum())} classes with ground truth",
    ]
    if coco is not None:
        lines += ["", "COCO metrics (pycocotools; difficult objects as iscrowd=1):", coco.summary.rstrip()]
    if problems:
        lines += ["", f"{len(problems)} problem(s):"] + [f"  {p}" for p in problems]
    if notes:
        lines += ["", f"{len(notes)} object(s) skipped in readable annotations:"] + [f"  {n}" for n in notes]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    problems: list[str] = []  # files or detections that could not be used: exit code 1
    notes: list[str] = []  # objects skipped inside readable annotations
    detector = None
    try:
        if args.weights is not None:
            detector = detector_from_args(args)  # its class names are the default --classes
        if args.classes is None and detector is not None and detector.class_names is not None:
            class_names = list(detector.class_names)
        else:
            class_names = load_class_names(args.classes or DEFAULT_CLASSES_PATH)
        root = find_voc_root(args.data)
        image_ids = read_image_set(root, args.split)
    except (OSError, ValueError, FatalError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if not image_ids:
        print(
            f"error: {root / 'ImageSets' / 'Main' / (args.split + '.txt')} lists no image ids; nothing to evaluate",
            file=sys.stderr,
        )
        return 2

    ground_truths, excluded = load_ground_truths(root, image_ids, class_names, problems, notes)
    for note in notes[:MAX_NAMED_PROBLEMS]:
        print(f"note: {note}", file=sys.stderr)
    if len(notes) > MAX_NAMED_PROBLEMS:
        print(f"note: {len(notes) - MAX_NAMED_PROBLEMS} more skipped objects (all in results.txt)", file=sys.stderr)
    try:
        if detector is not None:
            detections = run_weights(args, detector, root, ground_truths, excluded, problems)
            if detector.num_classes != len(class_names):
                raise FatalError(f"the model has {detector.num_classes} classes, {args.classes} {len(class_names)}")
            source = {"weights": str(args.weights)}
        else:
            detections = load_detections_json(
                args.detections,
                ground_truths,
                excluded,
                args.split,
                len(class_names),
                args.classes or DEFAULT_CLASSES_PATH,
                problems,
            )
            source = {"detections": str(args.detections)}
        if not ground_truths:
            raise FatalError(f"none of the {len(image_ids)} images of split {args.split!r} could be evaluated")
    except FatalError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2

    result = evaluate_detections(
        detections,
        ground_truths,
        num_classes=len(class_names),
        iou_threshold=args.min_overlap,
        use_07_metric=args.voc07,
        score_threshold=args.score_threshold,
    )
    coco = coco_evaluate(detections, ground_truths, len(class_names), args.max_detections) if args.coco else None

    settings = {
        "data": str(root),
        "split": args.split,
        **source,
        "images_evaluated": len(ground_truths),
        "images_left_out": len(excluded),
        "objects_skipped": len(notes),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    if args.weights is not None:
        (args.out / "detections.json").write_text(json.dumps(detections_to_coco_json(detections)))
    (args.out / "results.json").write_text(
        json.dumps(results_dict(result, coco, class_names, settings, problems, notes), indent=2) + "\n"
    )
    text = results_text(result, coco, class_names, settings, problems, notes)
    (args.out / "results.txt").write_text(text)
    if not args.no_plots:
        from utils.evaluation.plots import write_plots

        write_plots(result, class_names, args.out)
    print(text, end="")
    if coco is not None:
        print("COCO " + ", ".join(f"{k}={coco.stats[k]:.4f}" for k in COCO_STAT_NAMES))
    print(f"Results written to {args.out}")
    if problems:
        print(f"{len(problems)} problem(s), listed above and in {args.out / 'results.txt'}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
