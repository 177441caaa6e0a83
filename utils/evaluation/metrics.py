"""Detection metrics: VOC-style per-class AP, and precision / recall / F1 at a score threshold.

Everything here is in memory and vectorised over detections: no temporary files, and no Python
loop over images or detections (only over the classes, to cut the flattened arrays per class).

Inputs are per-image records keyed by image id: `ImageDetections` (or a detector's
`utils.inference.detector.Detections`) and `GroundTruth`.

Conventions
-----------
* Boxes are pixel ``xyxy`` with **continuous coordinates** (see utils.boxes): IoU is computed
  without the VOC devkit's "+1" on widths and heights.
* Matching follows the VOC devkit (VOCevaldet.m): per class, detections are taken in descending
  score order (ties: in input order); each one is compared with **its best-IoU ground truth** of
  that class in the same image. If that IoU is >= `iou_threshold`:
    - the ground truth is *difficult*: the detection is ignored (neither TP nor FP);
    - else, the first detection on that ground truth is a TP, every later one a FP (duplicate).
  Otherwise it is a FP. A detection never falls back to its second-best ground truth (pycocotools
  does; that is one reason the two differ slightly on crowded images).
* Difficult objects are not counted as positives (`num_gt` counts only non-difficult ones).
* AP: all-point interpolation (VOC2010 onward, the area under the monotone precision envelope) by
  default, or 11-point (VOC2007) with `use_07_metric=True`. The 11 recall thresholds are exactly
  i/10, so a recall of exactly 0.3 reaches the 0.3 threshold (the devkit's `np.arange(0, 1.1, 0.1)`
  misses it by a rounding error).
* A class without (non-difficult) ground truth has AP = NaN and is left out of the mean: `map`
  is the mean over the classes that have ground truth (NaN if none has). Its detections are
  still counted in `num_det` and `fp`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from utils.boxes import box_iou_aligned
from utils.defaults import MATCH_IOU, MAX_DETECTIONS, PR_SCORE_THRESHOLD


@dataclass
class ImageDetections:
    """The detections of one image, as `evaluate_detections` takes them.

    Attributes:
        boxes: (N, 4) float, pixel xyxy in the original image (continuous coordinates, utils.boxes).
        scores: (N,) float, higher is more confident.
        class_ids: (N,) int, indices into the class list, in [0, C).

    `utils.inference.detector.Detections` (what a `Detector` returns) has the same three
    attributes and is accepted wherever this is.
    """

    boxes: np.ndarray
    scores: np.ndarray
    class_ids: np.ndarray


@dataclass
class GroundTruth:
    """The annotated objects of one image, as `evaluate_detections` takes them.

    Attributes:
        boxes: (M, 4) float, pixel xyxy in the original image (continuous coordinates, utils.boxes).
        class_ids: (M,) int, indices into the class list, in [0, C).
        difficult: (M,) bool, VOC's difficult flag: such an object is neither a positive nor an
            error. None (the default) means no object is difficult.

    Any object with `boxes` and `class_ids` (and optionally `difficult`) is accepted too, for
    example `utils.data.voc.VocAnnotation` or `utils.data.annotations.AnnotatedImage`.
    """

    boxes: np.ndarray
    class_ids: np.ndarray
    difficult: np.ndarray | None = None

    def __post_init__(self):
        if self.difficult is None:
            self.difficult = np.zeros(len(self.class_ids), dtype=bool)


# image_id -> the detections of that image (ImageDetections or anything with the same attributes).
DetectionsByImage = Mapping[str, ImageDetections]
# image_id -> the ground truth of that image (every evaluated image, also those without objects).
GroundTruthsByImage = Mapping[str, GroundTruth]

def _record_arrays(entry, image_id, kind: str) -> tuple:
    """(boxes, scores, class_ids) of a detections record or (boxes, difficult, class_ids) of a
    ground-truth record, as given (not yet converted)."""
    is_det = kind == "detections"
    try:
        if is_det:
            return entry.boxes, entry.scores, entry.class_ids
        difficult = getattr(entry, "difficult", None)
        classes = entry.class_ids
        return entry.boxes, (np.zeros(len(classes), dtype=bool) if difficult is None else difficult), classes
    except AttributeError:
        expected = "ImageDetections (boxes, scores, class_ids)" if is_det else "GroundTruth (boxes, class_ids)"
        raise TypeError(f"{kind} for image {image_id!r}: expected {expected}, got {type(entry).__name__}") from None


@dataclass
class EvaluationResult:
    """Per-class metrics; arrays have shape (C,) for C = num_classes.

    Attributes:
        map: mean of `ap` over the classes with ground truth (`num_gt > 0`); NaN if there are none.
        ap: AP per class at `iou_threshold`; NaN for a class without (non-difficult) ground truth.
        precision: TP / (TP + FP) over detections scoring >= `score_threshold`; 0 when there are none.
        recall: TP / num_gt at `score_threshold`; NaN when num_gt == 0.
        f1: 2PR / (P + R) at `score_threshold` (0 when P + R == 0); NaN when num_gt == 0.
        num_gt: non-difficult ground-truth objects per class (int).
        num_det: all detections given per class, whatever their score (int).
        tp, fp: true / false positives at `score_threshold` (int); ignored detections (on
            difficult objects) are in neither.
        pr_curves: per class, (recall, precision) arrays over the ranked, non-ignored detections,
            one point per detection (highest score first); empty arrays for a class without them.
        pr_scores: per class, the score of each point of `pr_curves`.
        iou_threshold, use_07_metric, score_threshold: the settings used.
    """

    map: float
    ap: np.ndarray
    precision: np.ndarray
    recall: np.ndarray
    f1: np.ndarray
    num_gt: np.ndarray
    num_det: np.ndarray
    tp: np.ndarray
    fp: np.ndarray
    pr_curves: list[tuple[np.ndarray, np.ndarray]] = field(repr=False)
    pr_scores: list[np.ndarray] = field(repr=False)
    iou_threshold: float = MATCH_IOU
    use_07_metric: bool = False
    score_threshold: float = PR_SCORE_THRESHOLD

    def per_class(self, class_names: list[str]) -> dict[str, dict[str, float | int | None]]:
        """`{name: {"ap", "precision", "recall", "f1", "gt", "det"}}`, JSON-ready (NaN -> None)."""
        if len(class_names) != len(self.ap):
            raise ValueError(f"{len(class_names)} class names for {len(self.ap)} classes")

        def num(value: float) -> float | None:
            return None if np.isnan(value) else float(value)

        return {
            name: {
                "ap": num(self.ap[c]),
                "precision": num(self.precision[c]),
                "recall": num(self.recall[c]),
                "f1": num(self.f1[c]),
                "gt": int(self.num_gt[c]),
                "det": int(self.num_det[c]),
            }
            for c, name in enumerate(class_names)
        }


def _flatten(
    items: dict, image_index: dict[str, int], num_classes: int, kind: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Concatenate per-image arrays into (boxes (K, 4), values (K,), class_ids (K,), image_idx (K,)).

    The per-image loop only converts and checks shapes; value checks run once on the result.
    """
    is_det = kind == "detections"
    value_name, value_dtype = ("scores", np.float64) if is_det else ("difficult", bool)
    image_ids = list(items)
    all_boxes, all_values, all_classes, lengths = [], [], [], []
    for image_id in image_ids:
        boxes, values, classes = _record_arrays(items[image_id], image_id, kind)
        # Fast path for what callers normally pass: (N, 4) and (N,) arrays.
        if not isinstance(boxes, np.ndarray) or boxes.ndim != 2 or boxes.shape[1] != 4:
            boxes = np.asarray(boxes, dtype=np.float64)
            if boxes.size == 0:
                boxes = boxes.reshape(0, 4)
            elif boxes.ndim != 2 or boxes.shape[1] != 4:
                raise ValueError(f"{kind} for image {image_id!r}: boxes must have shape (N, 4), got {boxes.shape}")
        if not isinstance(values, np.ndarray) or values.ndim != 1:
            values = np.asarray(values, dtype=value_dtype).reshape(-1)
        if not isinstance(classes, np.ndarray) or classes.ndim != 1:
            classes = np.asarray(classes).reshape(-1)
        if not (len(boxes) == len(values) == len(classes)):
            raise ValueError(
                f"{kind} for image {image_id!r}: {len(boxes)} boxes, {len(values)} {value_name}, "
                f"{len(classes)} class_ids"
            )
        all_boxes.append(boxes)
        all_values.append(values)
        all_classes.append(classes)
        lengths.append(len(boxes))
    if not image_ids:
        return np.zeros((0, 4)), np.zeros(0, value_dtype), np.zeros(0, np.int64), np.zeros(0, np.int64)
    boxes = np.concatenate(all_boxes).astype(np.float64, copy=False)
    values = np.concatenate(all_values).astype(value_dtype, copy=False)
    raw_classes = np.concatenate(all_classes)
    image_rows = np.repeat(np.arange(len(image_ids)), lengths)

    def fail(bad: np.ndarray, message: str) -> None:
        first = int(np.flatnonzero(bad)[0])
        raise ValueError(f"{kind} for image {image_ids[image_rows[first]]!r}: {message(first)}")

    if raw_classes.dtype.kind not in "iub":
        if raw_classes.dtype.kind != "f":
            raise ValueError(f"{kind}: class_ids must be integers, got dtype {raw_classes.dtype}")
        integral = raw_classes == np.round(raw_classes)
        if not integral.all():
            fail(~integral, lambda i: f"class id {raw_classes[i]:g} is not an integer in [0, {num_classes})")
    classes = raw_classes.astype(np.int64)
    out_of_range = (classes < 0) | (classes >= num_classes)
    if out_of_range.any():
        fail(out_of_range, lambda i: f"class id {classes[i]} is not an integer in [0, {num_classes})")
    finite = np.isfinite(boxes).all(axis=1)
    if is_det:
        finite &= np.isfinite(values)
    if not finite.all():
        fail(~finite, lambda i: "boxes and scores must be finite")
    image_idx = np.fromiter((image_index[i] for i in image_ids), np.int64, len(image_ids))[image_rows]
    return boxes, values, classes, image_idx


def _match(
    det_boxes: np.ndarray,
    det_keys: np.ndarray,
    det_rank: np.ndarray,
    gt_boxes: np.ndarray,
    gt_keys: np.ndarray,
    gt_difficult: np.ndarray,
    iou_threshold: float,
) -> tuple[np.ndarray, np.ndarray]:
    """VOC matching of all detections at once.

    Keys are `image_index * num_classes + class_id`; `gt_keys` must be sorted. `det_rank` is each
    detection's position in the global descending-score order.

    Returns: (is_tp, is_ignored), bool arrays of shape (D,).
    """
    num_det = len(det_boxes)
    # Every detection is paired with every ground truth of its image and class: the gt range
    # [start, end) in the sorted gts. Pairs are laid out detection-major.
    start = np.searchsorted(gt_keys, det_keys, side="left")
    counts = np.searchsorted(gt_keys, det_keys, side="right") - start
    offsets = np.cumsum(counts) - counts
    pair_det = np.repeat(np.arange(num_det), counts)
    pair_gt = start[pair_det] + np.arange(len(pair_det)) - offsets[pair_det]
    iou = box_iou_aligned(det_boxes[pair_det], gt_boxes[pair_gt])

    # Best IoU per detection, and its first (lowest-index) gt, as np.argmax in the devkit.
    has_gt = counts > 0
    best_iou = np.zeros(num_det)
    best_gt = np.full(num_det, -1, dtype=np.int64)
    if len(iou):
        best_iou[has_gt] = np.maximum.reduceat(iou, offsets[has_gt])
        at_best = np.flatnonzero(iou == best_iou[pair_det])
        first = np.ones(len(at_best), dtype=bool)
        first[1:] = pair_det[at_best[1:]] != pair_det[at_best[:-1]]
        best_gt[pair_det[at_best[first]]] = pair_gt[at_best[first]]

    matched = has_gt & (best_iou >= iou_threshold)
    is_ignored = np.zeros(num_det, dtype=bool)
    is_ignored[matched] = gt_difficult[best_gt[matched]]
    candidates = np.flatnonzero(matched & ~is_ignored)
    # Of the detections whose best gt is the same object, only the highest-ranked is a TP.
    candidates = candidates[np.argsort(det_rank[candidates], kind="stable")]
    _, first_on_gt = np.unique(best_gt[candidates], return_index=True)
    is_tp = np.zeros(num_det, dtype=bool)
    is_tp[candidates[first_on_gt]] = True
    return is_tp, is_ignored


def average_precision(recall: np.ndarray, precision: np.ndarray, use_07_metric: bool = False) -> float:
    """AP from one class's PR points (ranked detections, highest score first).

    Args:
        recall: (K,) non-decreasing recall after each detection.
        precision: (K,) precision after each detection.
        use_07_metric: 11-point interpolation (VOC2007) instead of all points (VOC2010+).
    Returns: AP in [0, 1] (0 for no points).
    """
    if len(recall) == 0:
        return 0.0
    # Monotone envelope: the best precision at this recall or any higher one.
    envelope = np.maximum.accumulate(precision[::-1])[::-1]
    if use_07_metric:
        thresholds = np.arange(11) / 10
        index = np.searchsorted(recall, thresholds, side="left")  # first point with recall >= t
        reached = index < len(recall)
        values = np.zeros(11)
        values[reached] = envelope[index[reached]]
        return float(values.sum() / 11)
    recall_steps = np.diff(recall, prepend=0.0)
    return float(np.sum(recall_steps * envelope))


def evaluate_detections(
    detections: DetectionsByImage,
    ground_truths: GroundTruthsByImage,
    num_classes: int,
    iou_threshold: float = MATCH_IOU,
    use_07_metric: bool = False,
    score_threshold: float = PR_SCORE_THRESHOLD,
) -> EvaluationResult:
    """Per-class VOC AP plus precision / recall / F1 at a score threshold (see the module docstring).

    Args:
        detections: image_id -> `ImageDetections` (boxes (N, 4) float pixel xyxy, scores (N,),
            class_ids (N,) int), or a `utils.inference.detector.Detections`. Images may be missing
            (no detections). Every image id must be in `ground_truths`.
        ground_truths: image_id -> `GroundTruth` (boxes (M, 4) float pixel xyxy, class_ids (M,) int,
            difficult (M,) bool). Every evaluated image must be a key, also those without objects.
        num_classes: C; class ids are in [0, C).
        iou_threshold: minimum IoU (inclusive) for a detection to match a ground truth.
        use_07_metric: 11-point AP (VOC2007) instead of all-point AP (VOC2010+).
        score_threshold: where precision, recall, F1, tp and fp are read off.

    Returns: an `EvaluationResult`.

    Raises:
        ValueError: malformed arrays, a class id outside [0, C), or detections for an image id that
            is not in `ground_truths` (the message names the image).
        TypeError: a record without the attributes above.
    """
    _check_evaluation_inputs(detections, ground_truths, num_classes, iou_threshold)
    image_index = {image_id: i for i, image_id in enumerate(ground_truths)}
    gt_boxes, gt_difficult, gt_classes, gt_images = _flatten(ground_truths, image_index, num_classes, "ground truth")
    det_boxes, det_scores, det_classes, det_images = _flatten(detections, image_index, num_classes, "detections")

    gt_keys = gt_images * num_classes + gt_classes
    gt_order = np.argsort(gt_keys, kind="stable")  # stable: annotation order within an image
    gt_keys, gt_boxes, gt_difficult = gt_keys[gt_order], gt_boxes[gt_order], gt_difficult[gt_order]
    gt_classes = gt_classes[gt_order]

    # Global ranking: descending score, ties in input order.
    det_order = np.argsort(-det_scores, kind="stable")
    det_rank = np.empty(len(det_order), dtype=np.int64)
    det_rank[det_order] = np.arange(len(det_order))
    is_tp, is_ignored = _match(
        det_boxes, det_images * num_classes + det_classes, det_rank, gt_boxes, gt_keys, gt_difficult, iou_threshold
    )

    num_gt = np.bincount(gt_classes[~gt_difficult], minlength=num_classes)
    num_det = np.bincount(det_classes, minlength=num_classes)

    # Ranked, non-ignored detections grouped by class: order by (class, rank).
    ranked = det_order[~is_ignored[det_order]]
    ranked = ranked[np.argsort(det_classes[ranked], kind="stable")]
    ap, tp, fp, pr_curves, pr_scores = _per_class_results(
        ranked, det_classes, det_scores, is_tp, num_gt, score_threshold, use_07_metric
    )
    precision, recall, f1 = _precision_recall_f1(tp, fp, num_gt)
    has_gt = num_gt > 0
    return EvaluationResult(
        map=float(ap[has_gt].mean()) if has_gt.any() else float("nan"),
        ap=ap,
        precision=precision,
        recall=recall,
        f1=f1,
        num_gt=num_gt,
        num_det=num_det,
        tp=tp,
        fp=fp,
        pr_curves=pr_curves,
        pr_scores=pr_scores,
        iou_threshold=iou_threshold,
        use_07_metric=use_07_metric,
        score_threshold=score_threshold,
    )


def _check_evaluation_inputs(
    detections: DetectionsByImage, ground_truths: GroundTruthsByImage, num_classes: int, iou_threshold: float
) -> None:
    """ValueError for `evaluate_detections` arguments it cannot evaluate (the message says which)."""
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    if not 0.0 < iou_threshold <= 1.0:
        raise ValueError(f"iou_threshold must be in (0, 1], got {iou_threshold}")
    unknown = [image_id for image_id in detections if image_id not in ground_truths]
    if unknown:
        shown = ", ".join(repr(i) for i in unknown[:5])
        raise ValueError(
            f"detections for {len(unknown)} image(s) without ground truth entry: {shown}"
            + (" ..." if len(unknown) > 5 else "")
        )


def _per_class_results(
    ranked: np.ndarray,
    det_classes: np.ndarray,
    det_scores: np.ndarray,
    is_tp: np.ndarray,
    num_gt: np.ndarray,
    score_threshold: float,
    use_07_metric: bool,
):
    """Per class: AP, tp and fp at `score_threshold`, the precision-recall curve and its scores.

    ranked: indices of the non-ignored detections ordered by (class, rank), (K,).
    det_classes, det_scores, is_tp: per detection, (N,). num_gt: non-difficult objects per class, (C,).
    Returns (ap (C,) NaN without ground truth, tp (C,), fp (C,), [(recall, precision)] * C, [scores] * C).
    """
    num_classes = len(num_gt)
    class_bounds = np.searchsorted(det_classes[ranked], np.arange(num_classes + 1))
    above = det_scores >= score_threshold
    ap = np.full(num_classes, np.nan)
    tp = np.zeros(num_classes, dtype=np.int64)
    fp = np.zeros(num_classes, dtype=np.int64)
    pr_curves, pr_scores = [], []
    for c in range(num_classes):
        members = ranked[class_bounds[c] : class_bounds[c + 1]]
        hits = is_tp[members]
        cum_tp = np.cumsum(hits)
        precision_curve = cum_tp / np.arange(1, len(members) + 1)
        recall_curve = cum_tp / num_gt[c] if num_gt[c] else np.full(len(members), np.nan)
        pr_curves.append((recall_curve, precision_curve))
        pr_scores.append(det_scores[members])
        if num_gt[c]:
            ap[c] = average_precision(recall_curve, precision_curve, use_07_metric)
        kept = above[members]
        tp[c] = np.count_nonzero(hits & kept)
        fp[c] = np.count_nonzero(~hits & kept)
    return ap, tp, fp, pr_curves, pr_scores


def _precision_recall_f1(tp: np.ndarray, fp: np.ndarray, num_gt: np.ndarray):
    """Per class (C,): precision (0 without detections), recall and F1 (NaN without ground truth)."""
    has_gt = num_gt > 0
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(tp + fp > 0, tp / np.maximum(tp + fp, 1), 0.0)
        recall = np.where(has_gt, tp / np.maximum(num_gt, 1), np.nan)
        p_plus_r = precision + recall
        f1 = np.where(p_plus_r > 0, 2 * precision * recall / np.where(p_plus_r > 0, p_plus_r, 1), 0.0)
        f1 = np.where(has_gt, f1, np.nan)
    return precision, recall, f1


# ---------------------------------------------------------------------------------------------
# COCO metrics through pycocotools

COCO_STAT_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")


@dataclass
class CocoResult:
    """pycocotools' bbox evaluation of the same detections and ground truths.

    Attributes:
        stats: `COCO_STAT_NAMES` -> value, exactly `COCOeval.stats` (AP@[.5:.95], AP50, AP75, AP for
            small / medium / large objects, AR at 1 / 10 / 100 detections, AR small / medium /
            large). pycocotools reports -1 where nothing can be measured (e.g. no small objects).
        ap: (C,) per-class AP@[.5:.95]; NaN for a class without ground truth.
        ap50: (C,) per-class AP@0.5 with COCO's 101-point interpolation; NaN likewise.
        summary: the table `COCOeval.summarize()` prints.
    """

    stats: dict[str, float]
    ap: np.ndarray
    ap50: np.ndarray
    summary: str


def to_coco(
    detections: DetectionsByImage, ground_truths: GroundTruthsByImage, num_classes: int
) -> tuple[dict, list[dict], dict[str, int]]:
    """Convert to pycocotools' in-memory inputs.

    * Image ids become 1, 2, ... in `ground_truths` order; category id = class id + 1; annotation
      ids start at 1 (pycocotools stores the matched ground truth's id, so an id of 0 would read as
      "unmatched").
    * Boxes become COCO `bbox` = pixel xywh (corner) via utils.boxes; `area` = box area, as there are
      no masks (so the small/medium/large split is by box area).
    * **Difficult objects become `iscrowd=1`.** pycocotools overwrites any `ignore` field with
      `iscrowd`, so crowd is its only "ignore" mechanism: a crowd object is not a positive and the
      detections matched to it are ignored, like VOC's difficult. Two differences remain: pycocotools
      measures overlap with a crowd object as intersection / detection area (not IoU), and matches a
      detection to a crowd object only when no ordinary object is available.

    Args: as `evaluate_detections`.
    Returns: (ground-truth dataset dict, list of result dicts, image id -> COCO image id).
    """
    from utils.boxes import convert_format

    image_ids = {image_id: i + 1 for i, image_id in enumerate(ground_truths)}
    annotations = []
    for image_id, entry in ground_truths.items():
        boxes, difficult, classes = _record_arrays(entry, image_id, "ground truth")
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        xywh = convert_format(boxes, "xyxy", "xywh")
        for box, class_id, is_difficult in zip(xywh.tolist(), np.asarray(classes).tolist(), difficult, strict=True):
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_ids[image_id],
                    "category_id": int(class_id) + 1,
                    "bbox": box,
                    "area": box[2] * box[3],
                    "iscrowd": int(bool(is_difficult)),
                }
            )
    dataset = {
        "images": [{"id": i} for i in image_ids.values()],
        "categories": [{"id": c + 1, "name": str(c)} for c in range(num_classes)],
        "annotations": annotations,
    }
    results = []
    for image_id, entry in detections.items():
        if image_id not in image_ids:
            raise ValueError(f"detections for image {image_id!r}, which has no ground truth entry")
        boxes, scores, classes = _record_arrays(entry, image_id, "detections")
        xywh = convert_format(np.asarray(boxes, dtype=np.float64).reshape(-1, 4), "xyxy", "xywh")
        coco_id = image_ids[image_id]
        results += [
            {"image_id": coco_id, "category_id": int(c) + 1, "bbox": box, "score": float(s)}
            for box, s, c in zip(xywh.tolist(), np.asarray(scores).tolist(), np.asarray(classes).tolist(), strict=True)
        ]
    return dataset, results, image_ids


def coco_evaluate(
    detections: DetectionsByImage,
    ground_truths: GroundTruthsByImage,
    num_classes: int,
    max_detections: int = MAX_DETECTIONS,
) -> CocoResult:
    """COCO bbox metrics computed by pycocotools (COCOeval evaluate, accumulate, summarize).

    Args: as `evaluate_detections` (boxes pixel xyxy); `max_detections` is COCO's largest maxDets
        (per image and class), 100 by default.
    The conversion (and how difficult objects are treated) is described in `to_coco`.
    """
    import contextlib
    import io

    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    # Same checks and messages as the VOC path.
    evaluate_detections(detections, ground_truths, num_classes)
    dataset, results, _ = to_coco(detections, ground_truths, num_classes)
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):  # pycocotools prints progress
        coco_gt = COCO()
        coco_gt.dataset = dataset
        coco_gt.createIndex()
        if results:
            coco_dt = coco_gt.loadRes(results)
        else:  # loadRes cannot take an empty list
            coco_dt = COCO()
            coco_dt.dataset = {"images": dataset["images"], "categories": dataset["categories"], "annotations": []}
            coco_dt.createIndex()
        evaluator = COCOeval(coco_gt, coco_dt, "bbox")
        evaluator.params.maxDets = [1, 10, max_detections]
        evaluator.evaluate()
        evaluator.accumulate()
    summary = io.StringIO()
    with contextlib.redirect_stdout(summary):
        evaluator.summarize()

    # precision: (iou thresholds, recall points, classes, area ranges, max dets); -1 = no ground truth.
    precision = evaluator.eval["precision"][:, :, :, 0, -1]
    per_class = np.full((2, num_classes), np.nan)
    for c in range(num_classes):
        for row, values in enumerate((precision[:, :, c], precision[0, :, c])):
            valid = values[values > -1]
            if valid.size:
                per_class[row, c] = valid.mean()
    return CocoResult(
        stats=dict(zip(COCO_STAT_NAMES, map(float, evaluator.stats), strict=True)),
        ap=per_class[0],
        ap50=per_class[1],
        summary=summary.getvalue(),
    )
