"""How well do detections fit the objects they find, by object size? One or more detection files
(the COCO-format detections.json that get_map.py writes, or bench_learning.py's for the peers) on
the same data set, side by side.

    python benchmarks/box_fit.py --data data_objects_s0 \
        ours=run/eval/detections.json yolov8n=learning_out/b30_s0/yolov8n/detections.json

For every object of the split (difficult ones left out) it takes the detection of the object's
class, scoring at least --min-score, that overlaps it most, and prints per COCO size (small below
32² px of area, medium below 96², large above):

    found@.5 / found@.75   the share of objects with such a detection at IoU >= 0.5 / 0.75;
    median IoU             over the objects found at 0.5;
    log w, log h           log(detected / true) width and height of those: the mean is a bias (boxes
                           too large > 0, too small < 0), the sd the scatter;
    dx, dy sd              the centre's offset as a share of the object's width / height, its sd.

It tells loose boxes that are biased (a mean far from 0: anchors, decoding) from loose boxes that
scatter (a large sd: the regression is not learned well enough), which AP75 alone does not.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from utils.boxes import box_iou, convert_format  # noqa: E402
from utils.data.sources import open_data  # noqa: E402
from utils.evaluation.voc_eval import (  # noqa: E402
    EvaluationLog,
    load_voc_split,
    read_coco_detections,
    resolve_class_names,
)

SIZES = (("small", 0.0, 32.0**2), ("medium", 32.0**2, 96.0**2), ("large", 96.0**2, np.inf))


def best_fits(ground_truths: dict, detections: dict, min_score: float) -> list[tuple[float, float, np.ndarray]]:
    """Per object (difficult ones left out): (area, IoU of its best same-class detection scoring at
    least `min_score` (0 when none), [log w ratio, log h ratio, dx, dy] of that detection)."""
    rows = []
    for image_id, truth in ground_truths.items():
        found = detections.get(image_id)
        counted = ~truth.difficult
        for box, class_id in zip(truth.boxes[counted], truth.class_ids[counted], strict=True):
            cx, cy, w, h = convert_format(box, "xyxy", "center_xywh")
            fit = (0.0, np.full(4, np.nan))
            if found is not None:
                candidates = found.boxes[(found.class_ids == class_id) & (found.scores >= min_score)]
                if len(candidates):
                    ious = box_iou(box[None], candidates)[0]
                    bx, by, bw, bh = convert_format(candidates[int(np.argmax(ious))], "xyxy", "center_xywh")
                    fit = (float(ious.max()), np.array([np.log(bw / w), np.log(bh / h), (bx - cx) / w, (by - cy) / h]))
            rows.append((float(w * h), *fit))
    return rows


def _of_found(stat, values: np.ndarray) -> float:
    """`stat` of the found objects' values; NaN when none of this size was found."""
    return float(stat(values)) if len(values) else float("nan")


def summarise(rows: list) -> dict[str, dict]:
    """Per size name: objects, found@.5, found@.75, median IoU, log w / log h mean and sd, dx / dy sd."""
    table = {}
    for name, low, high in SIZES:
        picked = [(iou, errors) for area, iou, errors in rows if low <= area < high]
        if not picked:
            continue
        ious = np.array([iou for iou, _ in picked])
        hit = ious >= 0.5
        errors = np.array([e for (_, e), h in zip(picked, hit, strict=True) if h]).reshape(-1, 4)
        table[name] = {
            "objects": len(picked),
            "found50": float(hit.mean()),
            "found75": float((ious >= 0.75).mean()),
            "median_iou": _of_found(np.median, ious[hit]),
            "log_w_mean": _of_found(np.mean, errors[:, 0]),
            "log_w_sd": _of_found(np.std, errors[:, 0]),
            "log_h_mean": _of_found(np.mean, errors[:, 1]),
            "log_h_sd": _of_found(np.std, errors[:, 1]),
            "dx_sd": _of_found(np.std, errors[:, 2]),
            "dy_sd": _of_found(np.std, errors[:, 3]),
        }
    return table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", metavar="NAME=DETECTIONS_JSON", help="a detection file and its name")
    parser.add_argument("--data", required=True, help="the data set the detections are of")
    parser.add_argument("--split", default=None, help="its split (default: its test set)")
    parser.add_argument(
        "--classes", default=None, help="class names, one a line (default: the data's own; else VOC's)"
    )
    parser.add_argument("--min-score", type=float, default=0.1, help="detections below this score are not counted")
    args = parser.parse_args(argv)

    runs = []
    for run in args.runs:
        name, sep, path = run.partition("=")
        if not (sep and name and path):
            parser.error(f"{run!r}: expected NAME=DETECTIONS_JSON")
        runs.append((name, path))
    log = EvaluationLog()
    source = open_data(args.data)
    classes = resolve_class_names(args.classes, data_names=source.class_names)
    split = load_voc_split(source, args.split, classes, log)
    objects = sum(int((~t.difficult).sum()) for t in split.ground_truths.values())
    print(
        f"{args.data} ({split.name}): {objects} objects (difficult ones left out) in {len(split.ground_truths)} "
        f"images; each object's best-fitting detection of its class, score >= {args.min_score:g}"
    )
    print(
        f"{'run':>12} {'size':>7} {'objects':>7} {'found@.5':>8} {'found@.75':>9} {'median IoU':>10} "
        f"{'log w mean':>10} {'sd':>6} {'log h mean':>10} {'sd':>6} {'dx sd':>6} {'dy sd':>6}"
    )
    for name, path in runs:
        detections = read_coco_detections(path, split, classes, log)
        for size, s in summarise(best_fits(split.ground_truths, detections, args.min_score)).items():
            print(
                f"{name:>12} {size:>7} {s['objects']:>7} {s['found50']:>8.2f} {s['found75']:>9.2f} "
                f"{s['median_iou']:>10.3f} {s['log_w_mean']:>+10.3f} {s['log_w_sd']:>6.3f} "
                f"{s['log_h_mean']:>+10.3f} {s['log_h_sd']:>6.3f} {s['dx_sd']:>6.3f} {s['dy_sd']:>6.3f}"
            )
    for problem in log.problems:
        print(f"problem: {problem}", file=sys.stderr)
    return 1 if log.problems else 0


if __name__ == "__main__":
    sys.exit(main())
