"""Check a data set and write training annotation lines from it (any format train.py reads).

    python voc_annotation.py --data VOCdevkit --classes model_data/voc_classes.txt
    python voc_annotation.py --data VOCdevkit --train-sets 2007:trainval 2012:trainval --val-sets 2007:test

Runs the data check of check_data.py (same options; findings on stderr, each naming its file; the
summary table; labels.png and data_check.json in --output), then writes `<output>/2007_<role>.txt`
for the training and validation sets (2007_train.txt, 2007_val.txt, whatever the years), or one
`2007_<split>.txt` per split of `--splits`: one line per usable image, `image_path
x1,y1,x2,y2,class_id ...` (pixel xyxy, continuous coordinates; a path with spaces in quotes; see
utils/data/annotations.py), for train.py --train-annotations and kmeans_for_anchors.py.

Exit code: 0 clean, 1 findings (the affected objects or images are skipped), 2 unusable for training.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import check_data  # calls quiet_tensorflow() first
from utils.cli import add_output_argument, add_verbosity_arguments, quiet_tensorflow, run_script, setup_logging
from utils.data.annotations import write_annotation_lines

quiet_tensorflow()  # before anything imports TensorFlow (its start-up lines)


def run(argv: list[str] | None = None) -> int:
    """voc_annotation.py's work; raises the project's errors (`run_script` turns them into exit codes)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    check_data.add_arguments(parser)
    add_output_argument(parser, ".", "where 2007_<split>.txt, labels.png and data_check.json go (default: here)")
    parser.add_argument(
        "--splits", nargs="+", default=None, help="sets to write one file each, the first one the training set"
    )
    parser.add_argument("--include-difficult", action="store_true", help="keep objects marked difficult")
    add_verbosity_arguments(parser)
    args = parser.parse_args(argv)
    setup_logging(args)
    if args.splits:
        sets = {split: [split] for split in args.splits}
        train_roles = (args.splits[0],)
    else:
        sets = {"train": args.train_sets, "val": args.val_sets, "test": args.test_set}
        train_roles = ("train",)
    # --splits may overlap on purpose (train, val, trainval): an image in two of them is no finding.
    code, splits = check_data.check(args, sets, args.output, train_roles, overlaps=not args.splits)
    for role, split in splits.items():
        images = split.images if args.include_difficult else [image.without_difficult() for image in split.images]
        out = Path(args.output) / f"2007_{role.replace(':', '_').replace('/', '_')}.txt"
        write_annotation_lines(out, images)
        print(f"{role}: {len(images)} images -> {out} ({len(split.left_out)} images skipped)")
    return code


def main(argv: list[str] | None = None) -> int:
    return run_script(run, argv)


if __name__ == "__main__":
    sys.exit(main())
