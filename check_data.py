"""Check a data set before training on it: every image decoded, every annotation compared with it.

    python check_data.py --data VOCdevkit --train-sets 2007:trainval 2012:trainval --test-set 2007:test
    python check_data.py --data mydata/data.yaml                   # YOLO txt labels
    python check_data.py --data coco --classes my_classes.txt      # COCO instances_<split>.json

Reads the sets as train.py does (--data, --train-sets, --val-sets, --classes; --test-set as
get_map.py --split) and reports, each naming its file: unreadable annotations, missing, corrupt,
truncated or zero-byte images, images whose size differs from the annotation's, duplicate images
(same content) and duplicate boxes, boxes outside the image or of zero area, objects of classes not
in the class list, classes without objects, images without objects. Then a summary table (images,
objects per class and set, findings per kind). Writes labels.png (objects per class, box sizes,
aspect ratios, box centres) and data_check.json into --output.

Exit code: 0 nothing found, 1 findings (training skips what it cannot use), 2 unusable: no image,
no usable object, or a class of the class list without one in the training sets (train.py would
refuse to start).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from utils.cli import (
    add_data_arguments,
    add_output_argument,
    add_verbosity_arguments,
    quiet_tensorflow,
    run_script,
    setup_logging,
)

quiet_tensorflow()  # before anything imports TensorFlow (its start-up lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The data check's options (voc_annotation.py takes them too)."""
    add_data_arguments(
        parser,
        {
            "--train-sets": "training sets, SPLIT or WHERE:SPLIT, as train.py takes them (default: the data's train)",
            "--val-sets": "validation sets, as train.py takes them (default: the data's val, when it has one)",
            "--test-set": "a test set to check as well, as get_map.py --split takes it (default: none)",
        },
    )
    parser.add_argument(
        "--classes", default=None, help="class names, one a line (default: the data's names, else VOC's 20)"
    )
    parser.add_argument("--no-plots", action="store_true", help="skip labels.png")
    parser.add_argument("--workers", type=int, default=None, help="threads decoding images (default: CPUs, max 8)")


def check(
    args: argparse.Namespace,
    sets: dict[str, list[str] | None],
    output,
    train_roles: tuple[str, ...] = ("train",),
    overlaps: bool = True,
) -> tuple[int, dict]:
    """Read `sets` (role -> sets or None) of args.data, check them, print the findings (stderr) and the
    summary (stdout), write the report into `output`; returns (exit code, role -> DataSplit).
    `train_roles` and `overlaps` as utils.data.check.check_data takes them."""
    from utils.data.check import check_data, read_roles, write_report
    from utils.data.sources import open_data, resolve_class_names

    source = open_data(args.data)
    class_names = resolve_class_names(args.classes, source)
    progress = not args.quiet  # the bars while reading and decoding
    splits = read_roles(source, sets, class_names, progress=progress)
    result = check_data(
        splits, class_names, train_roles=train_roles, workers=args.workers, progress=progress, overlaps=overlaps
    )
    for finding in result.findings:
        print(f"warning: {finding}", file=sys.stderr)
    for reason in result.unusable:
        print(f"error: {reason}", file=sys.stderr)
    print(f"data: {source.path} ({source.kind}), {len(class_names)} classes")
    print(result.summary(), end="")
    for path in write_report(result, output, plots=not args.no_plots):
        print(f"wrote {path}")
    return result.exit_code, splits


def run(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    add_output_argument(parser, "data_check", "folder for labels.png and data_check.json (default: data_check)")
    add_verbosity_arguments(parser)
    args = parser.parse_args(argv)
    setup_logging(args)
    sets = {"train": args.train_sets, "val": args.val_sets, "test": args.test_set}
    code, _ = check(args, sets, args.output)
    return code


def main(argv: Sequence[str] | None = None) -> int:
    return run_script(run, argv)


if __name__ == "__main__":
    sys.exit(main())
