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

    CheckpointWriter  settings.json; last.keras, best.keras, ep<NNN>-loss<L>.keras, checkpoint.npz
    HistoryWriter     history.json
    Plots             loss.png, map.png
    TensorBoard       tensorboard/

Every file is written atomically (utils.training.checkpoint.atomic_write). Extra callbacks passed
as `Trainer(config, callbacks=[...])` run after these.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

from utils.training.checkpoint import CHECKPOINT_NAME, atomic_write


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
    loss/cls, loss/val, lr, val_mAP50."""

    chief_only = True

    def __init__(self):
        self.writer = None

    def on_train_start(self, trainer) -> None:
        import tensorflow as tf

        self.writer = tf.summary.create_file_writer(str(trainer.save_dir / "tensorboard"))

    def on_epoch_end(self, trainer, epoch: int, logs: dict) -> None:
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
        self.writer.flush()

    def on_train_end(self, trainer) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


def default_callbacks() -> list[Callback]:
    """The callbacks every Trainer starts with (they write --save-dir)."""
    return [CheckpointWriter(), HistoryWriter(), Plots(), TensorBoard()]
