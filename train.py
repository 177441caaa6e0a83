"""Train YOLOv4-tiny with attention on VOC, YOLO txt (data.yaml) or COCO JSON data.

    python train.py --phi 4 --demo                      # the built-in shapes demo (about 5 min on 2 CPU cores)
    python train.py --phi 4 --data VOCdevkit --classes model_data/voc_classes.txt --weights yolov4-tiny.weights
    python train.py --phi 4 --data VOCdevkit --train-sets 2007:trainval 2012:trainval --val-sets 2007:test
    python train.py --phi 4 --data mydata/data.yaml     # class names from the yaml (COCO: its categories)

--data is read by what it holds (utils/data/sources.py); check it first with check_data.py. Training
refuses data in which a class of the class list has no usable object (exit code 2), and warns with
the kmeans_for_anchors.py command to run when the anchors fit the boxes poorly.

Everything a run writes goes to --output: settings.json (the resolved settings), train_batch0.jpg,
last.keras, best.keras, numbered .keras every --save-period epochs (the weights' moving average
unless --no-ema), checkpoint.npz (for --resume), results.csv, history.json, loss.png, map.png and
tensorboard/. An --output that holds a run is refused unless --resume (continue it) or --exist-ok
(replace it); a second run into a folder in use is refused (train.lock). --patience N stops when
the val mAP has not improved for N evaluations; --time MIN fits the number of epochs to a
wall-clock budget. Exit codes: 0 done, 2 bad settings or data (or --output), 3 the loss became NaN
(the last good checkpoint is kept), 130 / 143 stopped by Ctrl-C / SIGTERM (files whole, no
temporary file), 70 a bug (docs/exit-codes.md).
"""

from __future__ import annotations

import argparse
import sys

from utils.cli import quiet_tensorflow

quiet_tensorflow()  # first: before anything imports TensorFlow (its start-up lines)

from utils.cli import add_verbosity_arguments, run_script, setup_logging  # noqa: E402
from utils.training.config import DEMO_DATA_DIR, add_arguments, config_from_args  # noqa: E402


def ensure_demo_data(root=DEMO_DATA_DIR) -> None:
    """Write the shapes demo set under `root` unless it is already there."""
    from utils.data.demo import write_demo_dataset

    if (root / "ImageSets" / "Main" / "val.txt").is_file() and (root / "classes.txt").is_file():
        return
    print(f"writing the demo data set to {root}/ ...")
    write_demo_dataset(root, image_size=128)


def run(argv: list[str] | None = None) -> int:
    """train.py's work; raises the project's errors (`run_script` turns them into exit codes)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    add_verbosity_arguments(parser)
    args = parser.parse_args(argv)
    setup_logging(args)
    settings = {name: value for name, value in vars(args).items() if name not in ("verbose", "quiet")}
    config = config_from_args(argparse.Namespace(**settings))

    from utils.training.trainer import Trainer

    if config.demo:
        ensure_demo_data()
    summary = Trainer(config).run()
    minutes = summary["seconds"] / 60
    if summary["stop_reason"]:
        print(summary["stop_reason"])
    print(f"done: {summary['epochs']} epochs in {minutes:.1f} min; weights in {summary['save_dir']}")
    if summary["final_map50"] is not None:
        print(f"val mAP@0.5 = {summary['final_map50']:.4f} (best {summary['best_map50']:.4f})")
    if summary["corrupt_images"]:
        print(f"{summary['corrupt_images']} corrupt training image(s) were skipped")
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_script(run, argv)


if __name__ == "__main__":
    sys.exit(main())
