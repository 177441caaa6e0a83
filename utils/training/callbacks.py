"""What happens around the training loop: the trainer's events and the callbacks that write its files.

The trainer (utils.training.trainer.Trainer) calls, on every callback in order:

    on_train_start(trainer)                 after setup(): model, data, optimizer and resume state ready
    on_epoch_end(trainer, epoch, logs)      after train_epoch(epoch) and validate(epoch); `epoch` counts
                                            from 0, `logs` is their merged dict (see Trainer.train_epoch
                                            and Trainer.validate) plus "fitness" and "is_best"
    on_train_end(trainer)                   after the last epoch (not when training stops on an error)

A callback subclasses `Callback` and overrides what it needs. `chief_only = True` callbacks run on
the chief only (the one worker that writes files under multi-worker training). The default ones,
in this order, write everything in --save-dir:

    ResultsCSV        results.csv (before checkpoint.npz: see the class)
    CheckpointWriter  settings.json; last.keras, best.keras, ep<NNN>-loss<L>.keras, checkpoint.npz
    HistoryWriter     history.json
    Plots             loss.png, map.png
    TensorBoard       tensorboard/
    TrainBatchPlot    train_batch0.jpg (at the start)

Every file is written atomically (utils.training.checkpoint.atomic_write). Extra callbacks passed
as `Trainer(config, callbacks=[...])` run after these.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import shutil
from pathlib import Path

import numpy as np

from utils.training.checkpoint import CHECKPOINT_NAME, atomic_write

logger = logging.getLogger("yolov4_tiny.training")

RESULTS_NAME = "results.csv"
# results.csv's columns, and the epoch's logs each is read from (see Trainer.run); empty where absent.
RESULTS_COLUMNS = {
    "epoch": None,
    "box_loss": "box_loss",
    "obj_loss": "obj_loss",
    "cls_loss": "cls_loss",
    "loss": "loss",
    "val_loss": "val_loss",
    "map50": "val_map50",
    "map50_95": "val_map50_95",
    "lr": "lr",
    "epoch_seconds": "epoch_seconds",
    "images_per_second": "images_per_second",
}
TRAIN_BATCH_NAME = "train_batch0.jpg"
TRAIN_BATCH_IMAGES = 16  # the most images train_batch0.jpg shows


class Callback:
    """Base class: every event does nothing."""

    chief_only = False

    def on_train_start(self, trainer) -> None:
        pass

    def on_epoch_end(self, trainer, epoch: int, logs: dict) -> None:
        pass

    def on_train_end(self, trainer) -> None:
        pass


class CheckpointWriter(Callback):
    """settings.json at the start; after each epoch last.keras, best.keras (when the epoch's
    fitness is the best so far), a numbered .keras every --save-period epochs, then checkpoint.npz.

    checkpoint.npz comes last, so a kill in between leaves a resume state no newer than the .keras
    files; a NaN stop raises before on_epoch_end, so every file stays the last good epoch's.
    """

    chief_only = True

    def on_train_start(self, trainer) -> None:
        trainer.save_dir.mkdir(parents=True, exist_ok=True)
        text = json.dumps(trainer.settings(), indent=2, ensure_ascii=False)
        atomic_write(trainer.save_dir / "settings.json", lambda temp: Path(temp).write_text(text, encoding="utf-8"))

    def on_epoch_end(self, trainer, epoch: int, logs: dict) -> None:
        save_dir, period = trainer.save_dir, trainer.config.save_period
        last = save_dir / "last.keras"
        trainer.save_model(last)
        # best.keras and the numbered file hold the same model: copies of last.keras, not a new save.
        if logs.get("is_best"):
            copy_file(last, save_dir / "best.keras")
        if period and (epoch + 1) % period == 0:
            copy_file(last, save_dir / f"ep{epoch + 1:03d}-loss{logs['loss']:.3f}.keras")
        trainer.save_checkpoint(save_dir / CHECKPOINT_NAME, epochs_done=epoch + 1)


def copy_file(source: Path, target: Path) -> None:
    """`source` copied onto `target` atomically."""
    atomic_write(target, lambda temp: shutil.copyfile(source, temp))


class ResultsCSV(Callback):
    """results.csv: a row per epoch, the columns of RESULTS_COLUMNS (epoch from 1; the mean box,
    objectness and class loss and their sum; val loss; val mAP@0.5 and mAP@.5:.95 on evaluated
    epochs, empty on the others; the last step's learning rate; the epoch's wall time, training and
    validation; training images per second).

    Each epoch the file is written again, atomically: the rows of the earlier epochs already in it,
    then this epoch's. So a resumed run continues the file, and an epoch trained again (a kill after
    its row but before its checkpoint) replaces its row instead of adding a second. It runs before
    CheckpointWriter so that a kill between the two never loses a row.
    """

    chief_only = True

    def on_epoch_end(self, trainer, epoch: int, logs: dict) -> None:
        path = trainer.save_dir / RESULTS_NAME
        trainer.save_dir.mkdir(parents=True, exist_ok=True)
        rows = [row for row in read_results(path) if row["epoch"].isdigit() and int(row["epoch"]) <= epoch]
        rows.append(results_row(epoch, logs))
        text = io.StringIO()
        writer = csv.DictWriter(text, fieldnames=list(RESULTS_COLUMNS), extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        atomic_write(path, lambda temp: Path(temp).write_text(text.getvalue(), encoding="utf-8"))


def results_row(epoch: int, logs: dict) -> dict[str, str]:
    """The results.csv row of epoch `epoch` (from 0) and its logs: numbers as text, '' for a missing one."""

    def text(value) -> str:
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return ""
        return f"{value:.6g}" if isinstance(value, float) else str(value)

    return {column: str(epoch + 1) if key is None else text(logs.get(key)) for column, key in RESULTS_COLUMNS.items()}


def read_results(path: str | Path) -> list[dict[str, str]]:
    """The rows of a results.csv (as text), [] when there is none."""
    path = Path(path)
    if not path.is_file():
        return []
    with open(path, newline="", encoding="utf-8") as handle:
        return [{k: v or "" for k, v in row.items() if k is not None} for row in csv.DictReader(handle)]


class HistoryWriter(Callback):
    """history.json: the trainer's History after every epoch."""

    chief_only = True

    def on_epoch_end(self, trainer, epoch: int, logs: dict) -> None:
        text = json.dumps(trainer.history.to_dict(), indent=1, ensure_ascii=False)
        atomic_write(trainer.save_dir / "history.json", lambda temp: Path(temp).write_text(text, encoding="utf-8"))


class Plots(Callback):
    """loss.png (train and val loss) and map.png (val mAP@0.5, once evaluated) after every epoch."""

    chief_only = True

    def on_epoch_end(self, trainer, epoch: int, logs: dict) -> None:
        plot_history(trainer.history, trainer.save_dir)


def plot_history(history, save_dir: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = range(1, len(history.loss) + 1)
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(epochs, history.loss, label="train loss")
    if any(v is not None for v in history.val_loss):
        ax.plot(epochs, [np.nan if v is None else v for v in history.val_loss], label="val loss")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    atomic_write(save_dir / "loss.png", lambda temp: fig.savefig(temp, format="png"))
    plt.close(fig)
    if history.map_epochs:
        fig, ax = plt.subplots(figsize=(6, 4))
        ax.plot(history.map_epochs, history.map_values, marker="o")
        ax.set_xlabel("epoch")
        ax.set_ylabel("val mAP@0.5")
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
        fig.tight_layout()
        atomic_write(save_dir / "map.png", lambda temp: fig.savefig(temp, format="png"))
        plt.close(fig)


class TensorBoard(Callback):
    """Scalars under --save-dir/tensorboard, step = epochs done: loss/train, loss/box, loss/obj,
    loss/cls, loss/val, lr, val_mAP50, val_mAP50_95."""

    chief_only = True

    def __init__(self):
        self.writer = None

    def on_train_start(self, trainer) -> None:
        try:
            import tensorflow as tf
        except ImportError:  # another Keras backend, without TensorFlow: results.csv and the plots say it all
            logger.info("note: no TensorBoard logs (they are written with TensorFlow, which is not installed)")
            return
        self.writer = tf.summary.create_file_writer(str(trainer.save_dir / "tensorboard"))

    def on_epoch_end(self, trainer, epoch: int, logs: dict) -> None:
        if self.writer is None:
            return
        import tensorflow as tf

        with self.writer.as_default(step=epoch + 1):
            tf.summary.scalar("loss/train", logs["loss"])
            for key in ("box", "obj", "cls"):
                tf.summary.scalar(f"loss/{key}", logs[f"{key}_loss"])
            if logs.get("val_loss") is not None:
                tf.summary.scalar("loss/val", logs["val_loss"])
            tf.summary.scalar("lr", logs["lr"])
            if logs.get("val_map50") is not None:
                tf.summary.scalar("val_mAP50", logs["val_map50"])
            if logs.get("val_map50_95") is not None:
                tf.summary.scalar("val_mAP50_95", logs["val_map50_95"])
        self.writer.flush()

    def on_train_end(self, trainer) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


class TrainBatchPlot(Callback):
    """train_batch0.jpg at the start of the run: up to TRAIN_BATCH_IMAGES images of the first
    training batch as the network gets them (augmented, letterboxed to the input size), each with its
    boxes and class names (Trainer.first_batch). A resumed run keeps the file its first start wrote."""

    chief_only = True

    def on_train_start(self, trainer) -> None:
        from PIL import Image

        path = trainer.save_dir / TRAIN_BATCH_NAME
        if trainer.start_epoch > 0 and path.is_file():
            return
        images, gts = trainer.first_batch(TRAIN_BATCH_IMAGES)
        if not len(images):
            return
        grid = batch_grid(images, gts, trainer.class_names)
        trainer.save_dir.mkdir(parents=True, exist_ok=True)
        atomic_write(path, lambda temp: Image.fromarray(grid).save(temp, format="JPEG", quality=90))


def batch_grid(
    images: np.ndarray, gts: np.ndarray, class_names: list[str], min_tile: int = 256, max_side: int = 2048
) -> np.ndarray:
    """Training samples in a grid (ceil(sqrt(n)) columns), each with its boxes and class names.

    Args:
        images: uint8 (n, H, W, 3) RGB, n >= 1.
        gts: float32 (n, max_boxes, 5): pixel xyxy in the image + class id; rows of -1 are padding.
        class_names: names indexed by class id.
        min_tile: smaller images are enlarged by a whole factor (nearest pixel) until their longer
            side reaches this, so the labels stay readable at small input sizes.
        max_side: a larger grid is shrunk to this side.

    Returns: uint8 RGB (rows * h, columns * w, 3), (h, w) the enlarged (H, W); tiles framed by a
    white line, empty tiles white.
    """
    import cv2

    from utils.inference.drawing import class_colors, draw_detections

    count, height, width = images.shape[:3]
    factor = max(1, math.ceil(min_tile / max(height, width)))
    height, width = height * factor, width * factor
    columns = math.ceil(math.sqrt(count))
    rows = math.ceil(count / columns)
    grid = np.full((rows * height, columns * width, 3), 255, np.uint8)
    colors = class_colors(len(class_names))
    for i, (image, gt) in enumerate(zip(images, gts, strict=True)):
        boxes = gt[gt[:, 4] >= 0]
        image = np.repeat(np.repeat(image, factor, axis=0), factor, axis=1)
        tile = draw_detections(image, boxes[:, :4] * factor, None, boxes[:, 4].astype(int), class_names, colors=colors)
        top, left = (i // columns) * height, (i % columns) * width
        grid[top : top + height, left : left + width] = tile
    for r in range(1, rows):
        grid[r * height - 1 : r * height + 1] = 255
    for c in range(1, columns):
        grid[:, c * width - 1 : c * width + 1] = 255
    scale = max_side / max(grid.shape[:2])
    if scale < 1:
        size = (round(grid.shape[1] * scale), round(grid.shape[0] * scale))
        grid = cv2.resize(grid, size, interpolation=cv2.INTER_AREA)
    return grid


def default_callbacks() -> list[Callback]:
    """The callbacks every Trainer starts with (they write --save-dir)."""
    return [ResultsCSV(), CheckpointWriter(), HistoryWriter(), Plots(), TensorBoard(), TrainBatchPlot()]
