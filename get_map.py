"""Evaluate detections on a split of a data set: per-class AP (VOC), optional COCO metrics, charts.

Two sources of detections:

    # run one of our models over the split
    python get_map.py --weights logs/best.keras --data VOCdevkit --split 2007:test
    python get_map.py --weights logs/best.keras --data mydata/data.yaml --split val
    python get_map.py --weights logs/best.keras --data coco/annotations/instances_val2017.json

    # or evaluate any detector's output, a COCO results JSON list:
    #   [{"image_id": "000001", "category_id": 14, "bbox": [x, y, w, h], "score": 0.93}, ...]
    # image_id = the VOC image id (string; COCO: its id; data.yaml: the image path in its folder
    # without suffix), category_id = 0-based index in --classes, bbox = pixel x, y, width, height.
    python get_map.py --detections dets.json --data VOCdevkit --split test --coco

--data is read by what it holds (utils/data/sources.py): a VOC folder or a VOCdevkit (--split
2007:test), a data.yaml (YOLO txt labels), COCO instances_<split>.json (iscrowd as difficult).
--split defaults to the data's test set (VOC's test, data.yaml's test else val, COCO's val).
Objects marked difficult are neither positives nor errors. Boxes are continuous pixel
coordinates (utils.boxes), no VOC "+1". --classes defaults to the model's own names with
--weights, else the data's names (data.yaml, COCO), else VOC's 20; --max-detections is also
COCO's maxDets. --slice SIDE (tiles of the image besides the full pass) and --augment (test-time
augmentation) run the detector as predict.py does with them, so their gain shows in the mAP; they
are written into results.json. A .keras --weights runs on ONNX Runtime on a CPU (exported once and cached, as
predict.py does; --backend keras: TensorFlow), in float32 (--precision auto: as predict.py runs it,
bfloat16 on a CPU with AMX or AVX512-BF16; --precision bfloat16 on any CPU, emulated and slow
there, measures what bfloat16 costs in mAP).

Written to --output: results.json, results.txt, pr_curves/<class>.png, ap_per_class.png,
counts_per_class.png (and detections.json with --weights, reusable with --detections).
A file that cannot be used (an XML that does not parse, an unreadable image, a detection naming
an unknown image or class) is reported by name and left out; the rest is evaluated, and the exit
code is then 1. Exit code 2: nothing could be evaluated (bad arguments, empty split, ...).

The work is done by utils/evaluation/voc_eval.py; this script parses the options and prints.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from utils.cli import quiet_tensorflow

quiet_tensorflow()  # first: before anything imports TensorFlow (its start-up lines)

from nets.model_data import DEFAULT_CLASSES_PATH  # noqa: E402
from utils.cli import (  # noqa: E402
    DATA_HELP,
    add_detector_arguments,
    add_output_argument,
    add_verbosity_arguments,
    detector_kwargs,
    run_script,
    setup_logging,
)
from utils.data.sources import open_data  # noqa: E402
from utils.defaults import EVAL_CONF_THRESHOLD, EVAL_NMS_IOU, MATCH_IOU, PR_SCORE_THRESHOLD  # noqa: E402
from utils.errors import YoloError  # noqa: E402
from utils.evaluation.metrics import COCO_STAT_NAMES  # noqa: E402
from utils.evaluation.voc_eval import (  # noqa: E402
    MAX_NAMED_PROBLEMS,
    EvaluationError,
    EvaluationLog,
    detect_split,
    evaluate_split,
    load_voc_split,
    read_coco_detections,
    resolve_class_names,
)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--detections",
        type=Path,
        help="instead of --weights: a COCO results JSON list: image_id = VOC image id, category_id = 0-based "
        "class index, bbox = pixel [x, y, w, h], score",
    )
    add_detector_arguments(
        parser, conf=EVAL_CONF_THRESHOLD, nms_iou=EVAL_NMS_IOU, weights_required=False, darknet=False, half=False,
        precision="float32",
    )  # fmt: skip
    parser.add_argument("--data", type=Path, default=Path("VOCdevkit"), help=DATA_HELP)
    parser.add_argument(
        "--split",
        "--test-set",
        default=None,
        metavar="SET",
        help="the set to evaluate, SPLIT or WHERE:SPLIT (2007:test, val, val2017) (default: the data's test set)",
    )
    parser.add_argument(
        "--min-overlap",
        type=float,
        default=MATCH_IOU,
        help=f"IoU (inclusive) for a detection to count as a hit ({MATCH_IOU})",
    )
    parser.add_argument("--voc07", action="store_true", help="11-point AP (VOC2007) instead of all-point (VOC2010+)")
    parser.add_argument(
        "--score-threshold",
        type=float,
        default=PR_SCORE_THRESHOLD,
        help=f"score at which precision, recall and F1 are read ({PR_SCORE_THRESHOLD})",
    )
    parser.add_argument("--coco", action="store_true", help="also compute COCO metrics (AP@[.5:.95], AP50, AP75, ...)")
    parser.add_argument("--no-plots", action="store_true", help="skip the PNG charts")
    add_output_argument(parser, "map_out", help="output folder (default: map_out)")
    add_verbosity_arguments(parser)
    args = parser.parse_args(argv)
    if (args.weights is None) == (args.detections is None):
        parser.error("give one of --weights (run a model) or --detections (a COCO results JSON)")
    if not 0.0 < args.min_overlap <= 1.0:
        parser.error(f"--min-overlap must be in (0, 1], got {args.min_overlap}")
    return args


def run(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logger = setup_logging(args)
    log = EvaluationLog()  # each problem is logged as found (a warning, on stderr)
    detector = None
    if args.weights is not None:
        from utils.inference.engine.loader import describe_runtime, load_detector

        detector = load_detector(args.weights, **detector_kwargs(args))
        logger.info(f"{args.weights}: {describe_runtime(detector)}")
    try:
        source = open_data(args.data)
    except YoloError as err:
        raise EvaluationError(str(err)) from None
    class_names = resolve_class_names(args.classes, detector, source.class_names)
    progress = not args.quiet
    split = load_voc_split(source, args.split, class_names, log, progress=progress)
    for note in log.notes[:MAX_NAMED_PROBLEMS]:
        logger.info(f"note: {note}")
    if len(log.notes) > MAX_NAMED_PROBLEMS:
        logger.info(f"note: {len(log.notes) - MAX_NAMED_PROBLEMS} more skipped objects (all in results.txt)")

    if detector is not None:
        detections = detect_split(detector, split, log, batch_size=args.batch_size, progress=progress)
        source = {"weights": str(args.weights), "precision": detector.precision}
        if args.slice is not None:
            source.update(slice=args.slice, overlap=args.overlap)
        if args.augment:
            source["augment"] = True
    else:
        classes_source = args.classes or DEFAULT_CLASSES_PATH
        detections = read_coco_detections(args.detections, split, class_names, log, classes_source)
        source = {"detections": str(args.detections)}
    evaluation = evaluate_split(
        split,
        detections,
        class_names,
        log,
        source=source,
        iou_threshold=args.min_overlap,
        use_07_metric=args.voc07,
        score_threshold=args.score_threshold,
        coco=args.coco,
        max_detections=args.max_detections,
    )
    evaluation.write(args.output, detections_json=detector is not None, plots=not args.no_plots)

    print(evaluation.to_text(), end="")
    if evaluation.coco is not None:
        print("COCO " + ", ".join(f"{k}={evaluation.coco.stats[k]:.4f}" for k in COCO_STAT_NAMES))
    print(f"Results written to {args.output}")
    if log.problems:
        print(f"{len(log.problems)} problem(s), listed above and in {args.output / 'results.txt'}", file=sys.stderr)
        return 1
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_script(run, argv)


if __name__ == "__main__":
    sys.exit(main())
