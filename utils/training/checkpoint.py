"""What a training run keeps on disk, and how it writes it: atomically.

Used by the trainer (resume) and its callbacks (saving):

    atomic_write      write to a temporary file beside the target, then rename it over the target
                      (utils/files.py: every module's one way to write a file)
    History           the per-epoch records (history.json, and part of the resume state)
    save_model        a .keras for inference (plain batch norm), atomically
    write_checkpoint  checkpoint.npz: weights, optimizer slots, the weights' moving average (EMA),
                      epochs done, history, best score, the trainer's other state
    read_checkpoint   the same back into a model, optimizer and average, for --resume
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from utils.errors import YoloError
from utils.files import atomic_write

CHECKPOINT_NAME = "checkpoint.npz"
CHECKPOINT_VERSION = 1


class CheckpointError(YoloError, ValueError):
    """A --resume checkpoint that is missing or belongs to other settings."""


@dataclass
class History:
    """Per-epoch records (lists indexed by epoch; the mAP only for the epochs it was evaluated)."""

    loss: list
    val_loss: list
    lr: list
    map_epochs: list
    map_values: list

    @classmethod
    def empty(cls) -> History:
        return cls([], [], [], [], [])

    def add(self, epoch: int, logs: dict) -> None:
        """Record one epoch's logs (Trainer.train_epoch merged with Trainer.validate)."""
        self.loss.append(logs["loss"])
        self.val_loss.append(logs.get("val_loss"))
        self.lr.append(logs["lr"])
        if logs.get("val_map50") is not None:
            self.map_epochs.append(epoch + 1)
            self.map_values.append(logs["val_map50"])

    def to_dict(self) -> dict:
        return asdict(self)


def batch_norm_layers(model) -> list:
    """Every BatchNormalization in `model`, also those inside other layers (Coordinate Attention's),
    in a fixed order: the model's layers, each followed by the layers it holds."""
    import keras

    found, seen = [], set()

    def walk(layer):
        if id(layer) in seen:
            return
        seen.add(id(layer))
        if isinstance(layer, keras.layers.BatchNormalization):
            found.append(layer)
        for value in vars(layer).values():  # the sub-layers a custom layer keeps as attributes
            for item in value if isinstance(value, (list, tuple)) else (value,):
                if isinstance(item, keras.layers.Layer) and not isinstance(item, keras.Model):
                    walk(item)

    for layer in model.layers:
        walk(layer)
    return found


def save_model(model, path: str | Path) -> None:
    """Write `model` as a .keras for inference: every batch norm (nested ones too) saved as a plain
    (unsynchronised) one."""
    bn_layers = batch_norm_layers(model)
    synced = [layer.synchronized for layer in bn_layers]
    for layer in bn_layers:
        layer.synchronized = False
    try:
        atomic_write(path, model.save)
    finally:
        for layer, flag in zip(bn_layers, synced, strict=True):
            layer.synchronized = flag


def write_checkpoint(
    path: str | Path,
    model,
    optimizer,
    *,
    epochs_done: int,
    history: History,
    best: float,
    identity: dict,
    ema_weights: list | None = None,
    state: dict | None = None,
) -> None:
    """The resume state: every model and optimizer variable, plus the bookkeeping (`identity`: what
    a run must share with the checkpoint to continue it).

    `ema_weights`: the variables of the weights' moving average (stored as ema_<i>); `state`: more
    of the trainer's state, JSON (the EMA's update count, the fitted epochs of --time, ...)."""
    meta = {
        "version": CHECKPOINT_VERSION,
        "epochs_done": epochs_done,
        "history": history.to_dict(),
        "best": best,
        "model": identity,
        "state": state or {},
    }
    arrays = {f"model_{i}": np.asarray(v.numpy()) for i, v in enumerate(model.weights)}
    arrays.update({f"optimizer_{i}": np.asarray(v.numpy()) for i, v in enumerate(optimizer.variables)})
    arrays.update({f"ema_{i}": np.asarray(v.numpy()) for i, v in enumerate(ema_weights or [])})
    arrays["meta"] = np.array(json.dumps(meta))

    def write(temp):
        with open(temp, "wb") as handle:
            np.savez(handle, **arrays)

    atomic_write(path, write)


def read_checkpoint(
    path: str | Path, model, optimizer, identity: dict, ema_weights: list | None = None
) -> tuple[int, History, float, dict]:
    """Load a checkpoint into `model` and `optimizer`, and into `ema_weights` when the checkpoint
    has a moving average; returns (epochs done, history, best score, the trainer's state). The
    state says "ema_updates" only when the average was loaded (a checkpoint written without one
    leaves `ema_weights` as they are).

    Raises CheckpointError: no checkpoint at `path`, or one for another model or optimizer.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"--resume: no {path.name} in {path.parent}")
    with np.load(path) as data:
        meta = json.loads(str(data["meta"]))
        if meta["model"] != identity:
            saved = meta["model"]
            differ = sorted(k for k in set(saved) | set(identity) if saved.get(k) != identity.get(k))
            what = ", ".join(
                f"{key} {saved.get(key, 'default')!r} there, {identity.get(key, 'default')!r} here" for key in differ
            )
            raise CheckpointError(f"{path}: the checkpoint is for another run: {what}")
        model_vars, optimizer_vars = model.weights, optimizer.variables
        if sum(k.startswith("model_") for k in data.files) != len(model_vars) or sum(
            k.startswith("optimizer_") for k in data.files
        ) != len(optimizer_vars):
            raise CheckpointError(f"{path}: checkpoint does not match this model/optimizer (different settings?)")
        for i, variable in enumerate(model_vars):
            variable.assign(data[f"model_{i}"])
        for i, variable in enumerate(optimizer_vars):
            variable.assign(data[f"optimizer_{i}"])
        state = dict(meta.get("state", {}))
        saved_ema = sum(k.startswith("ema_") for k in data.files)
        if ema_weights is not None and saved_ema:
            if saved_ema != len(ema_weights):
                raise CheckpointError(f"{path}: the checkpoint's weight average does not match this model")
            for i, variable in enumerate(ema_weights):
                variable.assign(data[f"ema_{i}"])
        else:
            state.pop("ema_updates", None)
    return meta["epochs_done"], History(**meta["history"]), meta["best"], state
