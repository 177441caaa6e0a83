"""utils.evaluation.metrics: hand-computed VOC cases, a loop reference, and agreement with pycocotools."""

import json

import numpy as np
import pytest

from utils.boxes import box_iou
from utils.evaluation.metrics import (
    COCO_STAT_NAMES,
    GroundTruth,
    ImageDetections,
    average_precision,
    coco_evaluate,
    evaluate_detections,
)


def gt(boxes, classes, difficult=None):
    boxes = np.asarray(boxes, dtype=float).reshape(-1, 4)
    difficult = np.zeros(len(boxes), bool) if difficult is None else np.asarray(difficult, bool)
    return GroundTruth(boxes, np.asarray(classes, int), difficult)


def det(boxes, scores, classes):
    return ImageDetections(
        np.asarray(boxes, dtype=float).reshape(-1, 4), np.asarray(scores, float), np.asarray(classes, int)
    )


A = [10, 10, 50, 50]
B = [60, 60, 100, 100]
NEAR_A = [12, 10, 52, 50]  # IoU with A = 38 * 40 / (2 * 1600 - 38 * 40) ~ 0.90
FAR = [200, 200, 240, 240]


# ---------------------------------------------------------------- hand-computed cases


def test_perfect_detections_give_one():
    gts = {"a": gt([A, B], [0, 1]), "b": gt([B], [1])}
    dets = {"a": det([A, B], [0.9, 0.8], [0, 1]), "b": det([B], [0.7], [1])}
    for use_07 in (False, True):
        result = evaluate_detections(dets, gts, num_classes=2, use_07_metric=use_07)
        assert result.map == 1.0
        np.testing.assert_array_equal(result.ap, [1.0, 1.0])
        np.testing.assert_array_equal(result.precision, [1.0, 1.0])
        np.testing.assert_array_equal(result.recall, [1.0, 1.0])
        np.testing.assert_array_equal(result.f1, [1.0, 1.0])
        np.testing.assert_array_equal(result.num_gt, [1, 2])
        np.testing.assert_array_equal(result.num_det, [1, 2])


def test_one_false_positive_ranked_first():
    # Ranked: FP, TP, TP over 2 objects -> precision 0, 1/2, 2/3 at recall 0, 1/2, 1.
    # Envelope is 2/3 everywhere, so AP = 2/3 with either interpolation.
    gts = {"a": gt([A, B], [0, 0])}
    dets = {"a": det([FAR, A, B], [0.9, 0.8, 0.7], [0, 0, 0])}
    for use_07 in (False, True):
        result = evaluate_detections(dets, gts, num_classes=1, use_07_metric=use_07)
        assert result.ap[0] == pytest.approx(2 / 3, abs=1e-12)
    np.testing.assert_allclose(result.pr_curves[0][0], [0, 0.5, 1.0])
    np.testing.assert_allclose(result.pr_curves[0][1], [0, 0.5, 2 / 3])
    np.testing.assert_allclose(result.pr_scores[0], [0.9, 0.8, 0.7])
    assert (result.tp[0], result.fp[0]) == (2, 1)
    assert result.precision[0] == pytest.approx(2 / 3)
    assert result.recall[0] == 1.0
    assert result.f1[0] == pytest.approx(0.8)


def test_all_point_and_eleven_point_differ_as_computed_by_hand():
    # Ranked: TP, FP, TP over 2 objects: precision 1, 1/2, 2/3 at recall 1/2, 1/2, 1.
    gts = {"a": gt([A, B], [0, 0])}
    dets = {"a": det([A, FAR, B], [0.9, 0.8, 0.7], [0, 0, 0])}
    all_point = evaluate_detections(dets, gts, 1).ap[0]
    eleven = evaluate_detections(dets, gts, 1, use_07_metric=True).ap[0]
    assert all_point == pytest.approx(0.5 * 1 + 0.5 * 2 / 3)
    # Thresholds 0, .1, ..., .5 see precision 1; .6 ... 1.0 see 2/3.
    assert eleven == pytest.approx((6 * 1 + 5 * 2 / 3) / 11)


def test_eleven_point_counts_a_recall_of_exactly_three_tenths():
    recall = np.array([0.1, 0.2, 0.3])
    precision = np.array([1.0, 1.0, 1.0])
    assert average_precision(recall, precision, use_07_metric=True) == pytest.approx(4 / 11)


def test_detection_of_a_difficult_object_is_ignored():
    gts = {"a": gt([A, B], [0, 0], difficult=[False, True])}
    # The detection on the difficult B ranks first: counted as FP it would halve AP.
    dets = {"a": det([B, A], [0.9, 0.8], [0, 0])}
    result = evaluate_detections(dets, gts, 1)
    assert result.ap[0] == 1.0
    assert result.num_gt[0] == 1
    assert result.num_det[0] == 2
    assert (result.tp[0], result.fp[0]) == (1, 0)
    assert len(result.pr_curves[0][0]) == 1  # the ignored detection is not a PR point


def test_duplicates_on_a_difficult_object_are_all_ignored():
    gts = {"a": gt([A, B], [0, 0], difficult=[False, True])}
    dets = {"a": det([B, B, A], [0.9, 0.85, 0.8], [0, 0, 0])}
    result = evaluate_detections(dets, gts, 1)
    assert result.ap[0] == 1.0
    assert (result.tp[0], result.fp[0]) == (1, 0)


def test_only_difficult_objects_means_no_ground_truth():
    gts = {"a": gt([A], [0], difficult=[True])}
    result = evaluate_detections({"a": det([A], [0.9], [0])}, gts, 1)
    assert result.num_gt[0] == 0
    assert np.isnan(result.ap[0]) and np.isnan(result.map)


def test_duplicate_detections_of_one_object():
    gts = {"a": gt([A], [0])}
    # The higher score wins even though the lower one overlaps better; the other is a FP.
    dets = {"a": det([NEAR_A, A], [0.9, 0.8], [0, 0])}
    result = evaluate_detections(dets, gts, 1)
    np.testing.assert_array_equal(result.pr_curves[0][1], [1.0, 0.5])
    assert result.ap[0] == 1.0
    assert (result.tp[0], result.fp[0]) == (1, 1)
    assert result.precision[0] == 0.5


def test_no_fallback_to_the_second_best_object():
    # Two overlapping objects; both detections' best IoU is with A. VOC: the second is a FP even
    # though it overlaps A2 enough (pycocotools would match it to A2).
    a2 = [14, 10, 54, 50]
    gts = {"a": gt([A, a2], [0, 0])}
    dets = {"a": det([A, [11, 10, 51, 50]], [0.9, 0.8], [0, 0])}
    assert box_iou(np.array([[11, 10, 51, 50]]), np.array([A, a2])).argmax() == 0
    result = evaluate_detections(dets, gts, 1)
    assert (result.tp[0], result.fp[0]) == (1, 1)
    assert result.ap[0] == 0.5


def test_class_without_ground_truth():
    gts = {"a": gt([A, B], [0, 1])}
    dets = {"a": det([A, B, FAR], [0.9, 0.9, 0.9], [0, 1, 2])}
    result = evaluate_detections(dets, gts, num_classes=3)
    assert np.isnan(result.ap[2])
    assert result.map == 1.0  # the mean is over classes 0 and 1 only
    assert result.num_gt[2] == 0 and result.num_det[2] == 1
    assert result.fp[2] == 1 and result.precision[2] == 0.0
    assert np.isnan(result.recall[2]) and np.isnan(result.f1[2])
    assert result.per_class(["x", "y", "z"])["z"] == {
        "ap": None,
        "precision": 0.0,
        "recall": None,
        "f1": None,
        "gt": 0,
        "det": 1,
    }


def test_class_with_ground_truth_but_no_detections_scores_zero():
    gts = {"a": gt([A, B], [0, 1])}
    result = evaluate_detections({"a": det([A], [0.9], [0])}, gts, num_classes=2)
    assert result.ap[1] == 0.0 and result.recall[1] == 0.0 and result.precision[1] == 0.0
    assert result.map == 0.5


def test_score_threshold_and_iou_threshold():
    gts = {"a": gt([A, B], [0, 0])}
    dets = {"a": det([A, [60, 60, 100, 130]], [0.9, 0.3], [0, 0])}  # IoU of the 2nd with B = 4/7
    result = evaluate_detections(dets, gts, 1, score_threshold=0.5)
    assert (result.tp[0], result.fp[0], result.recall[0]) == (1, 0, 0.5)
    assert result.ap[0] == 1.0
    assert evaluate_detections(dets, gts, 1, iou_threshold=0.6).ap[0] == 0.5
    assert evaluate_detections(dets, gts, 1, iou_threshold=4 / 7).ap[0] == 1.0  # inclusive


def test_images_without_detections_or_objects():
    gts = {"a": gt([A], [0]), "empty": gt(np.zeros((0, 4)), [])}
    dets = {"empty": det([A], [0.9], [0])}
    result = evaluate_detections(dets, gts, 1)
    assert result.ap[0] == 0.0
    assert evaluate_detections({}, {}, 2).num_gt.tolist() == [0, 0]


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("dets", "gts", "message"),
    [
        ({"zz": det([A], [0.9], [0])}, {"a": gt([A], [0])}, "'zz'"),
        ({"a": det([A], [0.9], [5])}, {"a": gt([A], [0])}, "class id 5"),
        ({"a": det([A], [0.9], [0])}, {"a": gt([A], [-1])}, "class id -1"),
        ({"a": det([A], [0.9, 0.8], [0])}, {"a": gt([A], [0])}, "2 scores"),
        (
            {"a": ImageDetections(np.zeros((1, 5)), np.ones(1), np.zeros(1, int))},
            {"a": gt([A], [0])},
            r"shape \(N, 4\)",
        ),
        ({"a": det([A], [np.nan], [0])}, {"a": gt([A], [0])}, "finite"),
        (
            {"a": ImageDetections(np.array([A], float), np.ones(1), np.array([0.5]))},
            {"a": gt([A], [0])},
            "not an integer",
        ),
    ],
)
def test_bad_input_names_the_image(dets, gts, message):
    with pytest.raises(ValueError, match=message):
        evaluate_detections(dets, gts, num_classes=2)


def test_a_detectors_records_and_annotations_are_accepted_as_they_are():
    from utils.data.annotations import AnnotatedImage
    from utils.data.voc import VocAnnotation

    class Found:  # the attributes of utils.inference.detector.Detections
        boxes, scores, class_ids = np.array([A, B], np.float32), np.array([0.9, 0.8], np.float32), np.array([0, 1])

    gts = {
        "voc": VocAnnotation(np.array([A, B], np.float32), np.array([0, 1]), np.array([False, True])),
        "line": AnnotatedImage("x.jpg", np.array([A, B], np.float32), np.array([0, 1])),
        "plain": GroundTruth(np.array([A, B]), np.array([0, 1])),
    }
    result = evaluate_detections({name: Found() for name in gts}, gts, num_classes=2)
    np.testing.assert_array_equal(result.num_gt, [3, 2])  # "voc"'s B is difficult
    assert result.map == 1.0
    with pytest.raises(TypeError, match="'x'.*ImageDetections"):
        evaluate_detections({"x": [A]}, {"x": gt([A], [0])}, num_classes=1)


def random_dataset(seed, num_images=60, num_classes=4, difficult_rate=0.0, separated=False):
    """Random objects with noisy detections (jittered hits, duplicates, misses, false positives).

    With `separated=True` objects sit on a grid of disjoint cells so no detection can overlap two.
    """
    rng = np.random.default_rng(seed)
    gts, dets = {}, {}
    for i in range(num_images):
        m = int(rng.integers(0, 6))
        if separated:
            cells = rng.choice(16, size=m, replace=False)
            origin = np.stack([cells % 4, cells // 4], axis=1) * 100.0 + rng.uniform(0, 20, (m, 2))
            size = rng.uniform(20, 70, (m, 2))
        else:
            origin = rng.uniform(0, 300, (m, 2))
            size = rng.uniform(8, 150, (m, 2))
        boxes = np.concatenate([origin, origin + size], axis=1)
        classes = rng.integers(0, num_classes, m)
        difficult = rng.random(m) < difficult_rate
        gts[f"img{i:04d}"] = GroundTruth(boxes, classes, difficult)

        hit = rng.random(m) < 0.8
        jitter = rng.normal(0, 0.1, (m, 4)) * np.concatenate([size, size], axis=1)
        d_boxes = [boxes[hit] + jitter[hit]]
        d_classes = [np.where(rng.random(m) < 0.9, classes, rng.integers(0, num_classes, m))[hit]]
        dup = hit & (rng.random(m) < 0.3)
        d_boxes.append(boxes[dup] + rng.normal(0, 0.15, (dup.sum(), 4)) * np.concatenate([size, size], 1)[dup])
        d_classes.append(classes[dup])
        n_fp = int(rng.integers(0, 4))
        fp_origin = rng.uniform(0, 400, (n_fp, 2))
        d_boxes.append(np.concatenate([fp_origin, fp_origin + rng.uniform(8, 100, (n_fp, 2))], axis=1))
        d_classes.append(rng.integers(0, num_classes, n_fp))
        d_boxes = np.concatenate(d_boxes)
        d_boxes[:, 2:] = np.maximum(d_boxes[:, 2:], d_boxes[:, :2] + 1)
        dets[f"img{i:04d}"] = ImageDetections(d_boxes, rng.random(len(d_boxes)), np.concatenate(d_classes))
    return dets, gts


def reference_voc_ap(dets, gts, class_id, iou_threshold=0.5, use_07_metric=False):
    """A straight loop port of the VOC devkit's evaluation of one class (continuous coordinates)."""
    records = {k: (g.boxes[g.class_ids == class_id], g.difficult[g.class_ids == class_id]) for k, g in gts.items()}
    npos = sum(int((~d).sum()) for _, d in records.values())
    used = {k: np.zeros(len(b), bool) for k, (b, _) in records.items()}
    items = [
        (k, box, s)
        for k, d in dets.items()
        for box, s, c in zip(d.boxes, d.scores, d.class_ids, strict=True)
        if c == class_id
    ]
    items.sort(key=lambda item: -item[2])
    tp, fp = [], []
    for image_id, box, _ in items:
        boxes, difficult = records[image_id]
        overlaps = box_iou(box[None], boxes)[0] if len(boxes) else np.zeros(0)
        best = int(np.argmax(overlaps)) if len(boxes) else -1
        if best >= 0 and overlaps[best] >= iou_threshold:
            if difficult[best]:
                continue
            if not used[image_id][best]:
                used[image_id][best] = True
                tp.append(1), fp.append(0)
            else:
                tp.append(0), fp.append(1)
        else:
            tp.append(0), fp.append(1)
    tp, fp = np.cumsum(tp), np.cumsum(fp)
    rec = tp / npos
    prec = tp / np.maximum(tp + fp, np.finfo(np.float64).eps)
    if use_07_metric:
        return sum(max(prec[rec >= t], default=0) for t in np.arange(11) / 10) / 11
    mrec = np.concatenate(([0.0], rec, [1.0]))
    mpre = np.concatenate(([0.0], prec, [0.0]))
    for i in range(len(mpre) - 1, 0, -1):
        mpre[i - 1] = max(mpre[i - 1], mpre[i])
    i = np.where(mrec[1:] != mrec[:-1])[0]
    return float(np.sum((mrec[i + 1] - mrec[i]) * mpre[i + 1]))


@pytest.mark.parametrize("use_07", [False, True])
def test_random_data_matches_a_loop_port_of_the_devkit(use_07):
    dets, gts = random_dataset(seed=1, difficult_rate=0.15)
    result = evaluate_detections(dets, gts, num_classes=4, use_07_metric=use_07)
    for c in range(4):
        assert result.ap[c] == pytest.approx(reference_voc_ap(dets, gts, c, use_07_metric=use_07), abs=1e-12)


# ---------------------------------------------------------------- against pycocotools


def run_pycocotools(dets, gts, num_classes, tmp_path):
    """COCOeval after evaluate + accumulate + summarize, from JSON files written here (not utils)."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    ids = {image_id: i + 1 for i, image_id in enumerate(gts)}
    annotations = []
    for image_id, g in gts.items():
        for box, c, d in zip(g.boxes, g.class_ids, g.difficult, strict=True):
            w, h = box[2] - box[0], box[3] - box[1]
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": ids[image_id],
                    "category_id": int(c) + 1,
                    "bbox": [box[0], box[1], w, h],
                    "area": w * h,
                    "iscrowd": int(d),
                }
            )
    dataset = {
        "images": [{"id": i} for i in ids.values()],
        "categories": [{"id": c + 1, "name": str(c)} for c in range(num_classes)],
        "annotations": annotations,
    }
    results = [
        {
            "image_id": ids[image_id],
            "category_id": int(c) + 1,
            "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]],
            "score": float(s),
        }
        for image_id, d in dets.items()
        for b, s, c in zip(d.boxes.tolist(), d.scores, d.class_ids, strict=True)
    ]
    (tmp_path / "gt.json").write_text(json.dumps(dataset))
    (tmp_path / "dt.json").write_text(json.dumps(results))
    coco_gt = COCO(str(tmp_path / "gt.json"))
    evaluator = COCOeval(coco_gt, coco_gt.loadRes(str(tmp_path / "dt.json")), "bbox")
    evaluator.evaluate()
    evaluator.accumulate()
    evaluator.summarize()
    return evaluator


def pycocotools_ap50(dets, gts, num_classes, tmp_path):
    """Per-class AP50 from pycocotools."""
    evaluator = run_pycocotools(dets, gts, num_classes, tmp_path)
    precision = evaluator.eval["precision"][0, :, :, 0, 2]  # IoU .5, all recalls, classes, area all, 100 dets
    return np.array([p[p > -1].mean() if (p > -1).any() else np.nan for p in precision.T])


def test_random_noisy_detections_agree_with_pycocotools_ap50(tmp_path):
    dets, gts = random_dataset(seed=2, num_images=80)
    ours = evaluate_detections(dets, gts, num_classes=4).ap
    theirs = pycocotools_ap50(dets, gts, 4, tmp_path)
    # COCO interpolates at 101 recall points and lets a duplicate fall back to another object.
    np.testing.assert_allclose(ours, theirs, atol=0.02)
    assert not np.allclose(ours, theirs, atol=1e-9)  # the data does exercise the difference


def test_equal_to_pycocotools_where_interpolation_cannot_differ(tmp_path):
    """Every object found and every false positive scored above every true positive.

    Then precision only rises along the ranking, so the precision envelope is one constant,
    TP / (TP + FP), over the whole recall range [0, 1]: all-point and 101-point interpolation
    both return that constant. Objects sit in disjoint cells and false positives overlap none, so
    the two matching rules (VOC's best-IoU object; COCO's best still-unmatched object) agree.
    """
    rng = np.random.default_rng(3)
    _, gts = random_dataset(seed=3, num_images=50, separated=True)
    dets = {}
    for image_id, g in gts.items():
        boxes, classes = g.boxes, g.class_ids
        size = np.concatenate([boxes[:, 2:] - boxes[:, :2]] * 2, axis=1)
        hits = boxes + rng.uniform(-0.04, 0.04, boxes.shape) * size  # IoU > 0.5 with their object
        n_fp = int(rng.integers(0, 3))
        fp_boxes = np.tile([410.0, 410.0, 450.0, 450.0], (n_fp, 1)) + rng.uniform(0, 40, (n_fp, 1))
        dets[image_id] = ImageDetections(
            np.concatenate([hits, fp_boxes]),
            np.concatenate([rng.uniform(0.1, 0.5, len(hits)), rng.uniform(0.6, 1.0, n_fp)]),
            np.concatenate([classes, rng.integers(0, 4, n_fp)]),
        )
    ours = evaluate_detections(dets, gts, num_classes=4, score_threshold=0.55)
    theirs = pycocotools_ap50(dets, gts, 4, tmp_path)
    assert np.all(ours.tp == 0) and np.all(ours.fp > 0)  # above 0.55: only false positives
    envelope = ours.num_gt / (ours.num_gt + ours.fp)  # TP / (TP + FP) once every object is found
    np.testing.assert_allclose(ours.ap, envelope, rtol=1e-12)
    np.testing.assert_allclose(ours.ap, theirs, rtol=1e-12, atol=0)


def test_coco_numbers_are_pycocotools_numbers(tmp_path):
    dets, gts = random_dataset(seed=4, num_images=60, difficult_rate=0.1)
    ours = coco_evaluate(dets, gts, num_classes=4)
    reference = run_pycocotools(dets, gts, 4, tmp_path)
    assert list(ours.stats) == list(COCO_STAT_NAMES)
    np.testing.assert_array_equal(list(ours.stats.values()), reference.stats)
    np.testing.assert_array_equal(ours.ap50, pycocotools_ap50(dets, gts, 4, tmp_path))
    assert "Average Precision  (AP) @[ IoU=0.50:0.95 | area=   all" in ours.summary
    assert 0 < ours.stats["AP"] < ours.stats["AP50"] < 1


def test_coco_known_values_and_difficult_as_crowd():
    small, large = [10, 10, 20, 20], [0, 0, 200, 200]  # areas 100 (< 32^2) and 40000 (> 96^2)
    gts = {"a": gt([small, large, B], [0, 1, 1], difficult=[False, False, True]), "b": gt([], [])}
    # The detection on the difficult B ranks first; as a crowd object it is ignored.
    dets = {"a": det([B, small, large], [0.95, 0.9, 0.8], [1, 0, 1])}
    result = coco_evaluate(dets, gts, num_classes=3)
    for name in ("AP", "AP50", "AP75", "APs", "APl", "AR100", "ARs", "ARl"):
        assert result.stats[name] == pytest.approx(1.0), name
    assert result.stats["APm"] == -1 and result.stats["ARm"] == -1  # no medium objects
    assert result.ap[:2] == pytest.approx([1.0, 1.0]) and np.isnan(result.ap[2])
    # No detections at all: zeros, not a crash.
    empty = coco_evaluate({}, gts, num_classes=3)
    assert empty.stats["AP"] == 0.0 and empty.ap[0] == 0.0
