"""Speed of utils.evaluation.metrics.evaluate_detections beside pycocotools' evaluate + accumulate.

Both run on the same synthetic data in this one process: random ground truth (some difficult),
detections that are jittered hits, duplicates and false positives with random scores.

Timed for ours: `evaluate_detections` (VOC AP at IoU 0.5, from the per-image dicts).
Timed for pycocotools: `COCOeval.evaluate()` + `COCOeval.accumulate()` (10 IoU thresholds, 4 area
ranges, 3 maxDets; that is what it always computes, there is no cheaper AP50-only mode). Building
the COCO objects is not timed for either side.

    python benchmarks/bench_map.py                      # 5,000 images, 20 classes
    python benchmarks/bench_map.py --images 500 --dets-per-image 20
"""

from __future__ import annotations

import argparse
import contextlib
import io
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from utils.evaluation.metrics import GroundTruth, ImageDetections, evaluate_detections, to_coco  # noqa: E402


def make_data(num_images: int, num_classes: int, dets_per_image: int, seed: int = 0):
    """image_id -> ImageDetections and image_id -> GroundTruth (boxes pixel xyxy), some objects difficult."""
    rng = np.random.default_rng(seed)
    ground_truths, detections = {}, {}
    for i in range(num_images):
        m = int(rng.integers(1, 7))
        origin = rng.uniform(0, 400, (m, 2))
        size = rng.uniform(10, 200, (m, 2))
        boxes = np.concatenate([origin, origin + size], axis=1)
        classes = rng.integers(0, num_classes, m)
        image_id = f"{i:06d}"
        ground_truths[image_id] = GroundTruth(boxes, classes, rng.random(m) < 0.1)

        # Hits (jittered, 80% of objects), a duplicate for some, the rest random false positives.
        hit = rng.random(m) < 0.8
        scale = np.concatenate([size, size], axis=1)
        parts = [boxes[hit] + rng.normal(0, 0.08, (hit.sum(), 4)) * scale[hit]]
        part_classes = [classes[hit]]
        dup = hit & (rng.random(m) < 0.3)
        parts.append(boxes[dup] + rng.normal(0, 0.15, (dup.sum(), 4)) * scale[dup])
        part_classes.append(classes[dup])
        n_fp = max(0, dets_per_image - sum(len(p) for p in parts))
        fp_origin = rng.uniform(0, 450, (n_fp, 2))
        parts.append(np.concatenate([fp_origin, fp_origin + rng.uniform(5, 150, (n_fp, 2))], axis=1))
        part_classes.append(rng.integers(0, num_classes, n_fp))
        det_boxes = np.concatenate(parts)
        det_boxes[:, 2:] = np.maximum(det_boxes[:, 2:], det_boxes[:, :2] + 1)
        det_classes = np.concatenate(part_classes)
        # True hits tend to score higher than false positives, as for a real detector.
        scores = rng.beta(2, 5, len(det_boxes))
        scores[: hit.sum()] = rng.beta(5, 2, hit.sum())
        detections[image_id] = ImageDetections(det_boxes, scores, det_classes)
    return detections, ground_truths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=5000)
    parser.add_argument("--classes", type=int, default=20)
    parser.add_argument("--dets-per-image", type=int, default=50, help="detections per image (hits + false positives)")
    parser.add_argument("--repeats", type=int, default=3, help="runs of ours; the fastest is reported")
    args = parser.parse_args()

    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    detections, ground_truths = make_data(args.images, args.classes, args.dets_per_image)
    num_gt = sum(len(g.boxes) for g in ground_truths.values())
    num_det = sum(len(d.boxes) for d in detections.values())
    print(f"data: {args.images} images, {args.classes} classes, {num_gt} objects, {num_det} detections")

    ours_times = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        result = evaluate_detections(detections, ground_truths, num_classes=args.classes)
        ours_times.append(time.perf_counter() - start)
    ours = min(ours_times)

    dataset, results, _ = to_coco(detections, ground_truths, args.classes)
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = dataset
        coco_gt.createIndex()
        evaluator = COCOeval(coco_gt, coco_gt.loadRes(results), "bbox")
        start = time.perf_counter()
        evaluator.evaluate()
        evaluator.accumulate()
        theirs = time.perf_counter() - start
    precision = evaluator.eval["precision"][0, :, :, 0, 2]  # IoU 0.5, all areas, 100 dets
    coco_ap50 = np.mean([p[p > -1].mean() for p in precision.T if (p > -1).any()])

    runs = ", ".join(f"{t:.3f}" for t in ours_times)
    print(f"ours (utils.evaluation.metrics.evaluate_detections): {ours:.3f} s  (runs: {runs})")
    print(f"pycocotools evaluate + accumulate:        {theirs:.3f} s")
    print(f"ratio pycocotools / ours:                 {theirs / ours:.1f}x")
    print(f"same data: our mAP@0.5 {result.map:.4f}, pycocotools AP50 {coco_ap50:.4f} (101-point, crowd rules)")


if __name__ == "__main__":
    main()
