"""Write training annotation lines from a VOC2007-layout data set.

    python voc_annotation.py --data VOCdevkit --classes model_data/voc_classes.txt

For each split (train and val by default) writes `<output-dir>/2007_<split>.txt`, one line per
image: `image_path x1,y1,x2,y2,class_id ...` (pixel xyxy, continuous coordinates; see
utils/data/annotations.py), and prints the objects per class. Bad files or objects are reported and
skipped; the exit code is 1 when any warning was raised, 0 otherwise.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from nets.model_data import DEFAULT_CLASSES_PATH, load_class_names
from utils.cli import add_output_argument, run_script
from utils.data.voc import find_voc_root, voc_split_to_lines


def write_annotations(
    data: str | Path,
    class_names: list[str],
    output_dir: str | Path,
    splits: tuple[str, ...] = ("train", "val"),
    include_difficult: bool = False,
    verbose: bool = True,
) -> tuple[dict[str, Path], int]:
    """Convert the splits; returns ({split: annotation file}, number of warnings)."""
    root = find_voc_root(data)
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    written, num_warnings = {}, 0
    for split in splits:
        result = voc_split_to_lines(root, split, class_names, include_difficult=include_difficult)
        out = output_dir / f"2007_{split}.txt"
        out.write_text("".join(line + "\n" for line in result.lines))
        written[split] = out
        num_warnings += len(result.warnings)
        if verbose:
            for warning in result.warnings:
                print(f"warning: {warning}", file=sys.stderr)
            print(f"{split}: {len(result.lines)} images -> {out} ({result.skipped_files} images skipped)")
            width = max(len(n) for n in class_names)
            for name, count in zip(class_names, result.objects_per_class, strict=True):
                print(f"  {name:<{width}} {count:6d}")
    return written, num_warnings


def run(argv: list[str] | None = None) -> int:
    """voc_annotation.py's work; raises the project's errors (`run_script` turns them into exit codes)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="VOCdevkit", help="VOCdevkit folder (holding VOC2007/) or a VOC2007 folder")
    parser.add_argument("--classes", default=str(DEFAULT_CLASSES_PATH), help="class names, one a line")
    add_output_argument(parser, ".", "where 2007_<split>.txt are written (default: here)")
    parser.add_argument("--splits", nargs="+", default=["train", "val"], help="image sets to convert")
    parser.add_argument("--include-difficult", action="store_true", help="keep objects marked difficult")
    args = parser.parse_args(argv)
    class_names = load_class_names(args.classes)
    _, num_warnings = write_annotations(args.data, class_names, args.output, tuple(args.splits), args.include_difficult)
    if num_warnings:
        print(f"{num_warnings} warnings (see above); the affected objects or images were skipped", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_script(run, argv)


if __name__ == "__main__":
    sys.exit(main())
