"""Compute anchors for your data with IoU k-means, plot them, and report the mean IoU they reach.

    python kmeans_for_anchors.py --data VOCdevkit --train-sets 2007:trainval 2012:trainval --input-size 416 \
        --output model_data/my_anchors.txt
    python kmeans_for_anchors.py --annotations 2007_train.txt --input-size 416 --output model_data/my_anchors.txt

The boxes are those training uses: --data (any data set train.py reads, with --train-sets and
--classes as train.py takes them; objects marked difficult left out) or an annotation-line file.

Boxes are letterboxed into the network input first, so the anchors are in input pixels, as
train.py --anchors expects. Prints the anchors, the mean best IoU over all boxes (also for the
current anchors file, for comparison) and writes a scatter plot of box sizes and anchors.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from utils.cli import quiet_tensorflow

quiet_tensorflow()  # first: before anything imports TensorFlow (its start-up lines)

import numpy as np  # noqa: E402

from nets.model_data import DEFAULT_ANCHORS_PATH, DEFAULT_INPUT_SHAPE, load_anchors  # noqa: E402
from utils.boxes import shape_iou  # noqa: E402
from utils.cli import (  # noqa: E402
    DATA_HELP,
    add_input_size_argument,
    add_verbosity_arguments,
    run_script,
    setup_logging,
)
from utils.data.anchors import AnchorError, box_sizes, iou_kmeans  # noqa: E402
from utils.data.annotations import read_annotation_lines  # noqa: E402
from utils.data.sources import open_data, resolve_class_names, untrainable_reason  # noqa: E402


def plot(wh: np.ndarray, anchors: np.ndarray, assignment: np.ndarray, path: Path, mean_iou: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 6))
    ax.scatter(wh[:, 0], wh[:, 1], c=assignment, s=4, cmap="tab10", alpha=0.5)
    ax.scatter(anchors[:, 0], anchors[:, 1], c="black", marker="x", s=80, label="anchors")
    ax.set_xlabel("box width (input pixels)")
    ax.set_ylabel("box height (input pixels)")
    ax.set_title(f"{len(anchors)} anchors, mean IoU {mean_iou:.3f}")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def run(argv: list[str] | None = None) -> int:
    """kmeans_for_anchors.py's work; raises the project's errors (`run_script` turns them into exit codes)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--annotations", default="2007_train.txt", help="annotation lines (voc_annotation.py)")
    parser.add_argument(
        "--data", action="append", default=None, help=DATA_HELP + " (instead of --annotations; repeat for several)"
    )
    parser.add_argument("--train-sets", nargs="+", metavar="SET", help="sets of --data, as train.py takes them")
    parser.add_argument("--classes", default=None, help="class names, as train.py takes them (with --data)")
    add_input_size_argument(
        parser,
        tuple(DEFAULT_INPUT_SHAPE),
        f"network input: SIZE or HxW, up to 4096 (default {DEFAULT_INPUT_SHAPE[0]})",
    )
    parser.add_argument("-k", "--num-anchors", type=int, default=6, help="number of anchors (yolov4-tiny: 6)")
    parser.add_argument("--output", default="yolo_anchors.txt", help="anchors file to write")
    parser.add_argument("--plot", default="kmeans_for_anchors.png", help="scatter plot to write")
    parser.add_argument("--compare", default=str(DEFAULT_ANCHORS_PATH), help="anchors file to compare against")
    parser.add_argument("--seed", type=int, default=0, help="k-means initialisation seed")
    add_verbosity_arguments(parser)
    args = parser.parse_args(argv)
    setup_logging(args)
    input_hw = args.input_size
    reasons = []  # why a --data set gave no box (a class list that does not match it, ...)
    if args.data is not None:
        images = []
        for path in args.data:  # several: their training sets together, as train.py takes them
            source = open_data(path)
            names = resolve_class_names(args.classes, source)
            split = source.read(args.train_sets or source.default_sets("train"), names)
            images += [image.without_difficult() for image in split.images]
            reason = untrainable_reason(split)
            if reason:
                reasons.append(f"{path}: {reason}")
    else:
        images = read_annotation_lines(args.annotations)
    wh = box_sizes(images, input_hw)
    if len(wh) < args.num_anchors and reasons:
        said = "; ".join(reasons)
        raise AnchorError(f"{len(wh)} boxes for {args.num_anchors} anchors; {said} (--classes: the data's class list)")
    anchors, mean_iou = iou_kmeans(wh, args.num_anchors, seed=args.seed)
    rounded = np.maximum(np.round(anchors), 1).astype(int)
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(", ".join(f"{w},{h}" for w, h in rounded) + "\n")
    plot(wh, anchors, np.argmax(shape_iou(wh, anchors), axis=1), Path(args.plot), mean_iou)
    print(f"{len(wh)} boxes, input {input_hw[0]}x{input_hw[1]}")
    print("anchors (w,h): " + ", ".join(f"{w},{h}" for w, h in rounded))
    print(f"mean IoU: {mean_iou:.4f}")
    if args.compare and Path(args.compare).is_file():
        current = load_anchors(args.compare)
        print(f"mean IoU of {args.compare}: {shape_iou(wh, current).max(axis=1).mean():.4f}")
    print(f"wrote {args.output} and {args.plot}")
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_script(run, argv)


if __name__ == "__main__":
    sys.exit(main())
