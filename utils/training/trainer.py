"""The training loop behind train.py: one process, MirroredStrategy or MultiWorkerMirroredStrategy.

A custom loop on tf.distribute (not `model.fit`) so that freezing, per-phase batch sizes, the
per-step learning rate, exact resume and the NaN stop stay simple and explicit:

    for each epoch:
        phase = frozen backbone (first --freeze-epochs) or all layers, with its batch size
        mosaic/mixup on for the first --mosaic-ratio of the epochs
        per step: lr = schedule(fractional epoch) -> strategy.run(forward, YoloLoss, apply grads)
        val loss; every --eval-period epochs val mAP@0.5 (utils.inference.detector + utils.evaluation.metrics)
        write last.keras, best.keras, checkpoint.npz (atomically), plots, TensorBoard

Files in --save-dir: settings.json, last.keras, best.keras, ep<NNN>.keras (every
--save-period), checkpoint.npz (the resume state: weights, optimizer slots, epoch, history),
history.json, loss.png, map.png, tensorboard/.
"""

from __future__ import annotations

import json
import math
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from utils.data.annotations import AnnotatedImage, parse_annotation_line, read_annotation_lines
from utils.errors import YoloError
from utils.training.config import TrainConfig, resolve_config
from utils.training.lr_schedule import LRSchedule, scaled_lr

CHECKPOINT_NAME = "checkpoint.npz"
CHECKPOINT_VERSION = 1


class NaNLossError(YoloError, RuntimeError):
    """The loss stopped being finite; the last good checkpoint is kept (train.py exits 3)."""

    exit_code = 3


def atomic_write(path: str | Path, write) -> None:
    """Call write(temp_path) and move the result onto `path` in one step (os.replace).

    A kill during `write` leaves the previous file intact; the temp file sits in the same folder
    so the rename never crosses file systems.
    """
    path = Path(path)
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=path.suffix)
    os.close(fd)
    try:
        write(temp)
        os.chmod(temp, 0o644)  # mkstemp makes 0600 files
        os.replace(temp, path)
    finally:
        if os.path.exists(temp):
            os.remove(temp)


def backbone_layer_names() -> set[str]:
    """Names of the CSPDarknet53-tiny layers (what --freeze-epochs freezes), read off the backbone itself."""
    import keras

    from nets.backbone import cspdarknet53_tiny

    inputs = keras.Input((64, 64, 3))
    backbone = keras.Model(inputs, cspdarknet53_tiny(inputs))
    return {layer.name for layer in backbone.layers if not isinstance(layer, keras.layers.InputLayer)}


def init_head_biases(model, input_hw: tuple[int, int]) -> None:
    """YOLOv5's priors for training from scratch: about 8 objects per 640x640 image, and class
    probabilities of 0.6 / (C - 0.99), so the first steps are not spent unlearning p = 0.5."""
    from nets.model_data import STRIDES

    num_classes = model.num_classes
    for layer_name, stride, mask in zip(("conv_29", "conv_36"), STRIDES, model.anchors_mask, strict=True):
        layer = model.get_layer(layer_name)
        kernel, bias = layer.get_weights()
        bias = bias.reshape(len(mask), 5 + num_classes)
        cells = (input_hw[0] / stride) * (input_hw[1] / stride)
        bias[:, 4] = math.log(8 / cells)
        bias[:, 5:] = math.log(0.6 / max(num_classes - 0.99, 0.01))
        layer.set_weights([kernel, bias.reshape(-1)])


def transfer_weights(source, target) -> tuple[list[str], list[str]]:
    """Copy weights layer by layer where names and shapes match; returns (loaded, skipped) names."""
    loaded, skipped = [], []
    source_layers = {layer.name: layer for layer in source.layers}
    for layer in target.layers:
        if not layer.weights:
            continue
        other = source_layers.get(layer.name)
        if other is None or [w.shape for w in other.weights] != [w.shape for w in layer.weights]:
            skipped.append(layer.name)
            continue
        layer.set_weights(other.get_weights())
        loaded.append(layer.name)
    return loaded, skipped


def load_split(config: TrainConfig, class_names: list[str]) -> tuple[list[AnnotatedImage], list[AnnotatedImage]]:
    """Train and val images, from annotation files or straight from the VOC folder."""
    if config.train_annotations:
        train = read_annotation_lines(config.train_annotations)
        val = read_annotation_lines(config.val_annotations) if config.val_annotations else []
        return train, val
    from utils.data.voc import find_voc_root, voc_split_to_lines

    root = find_voc_root(config.data)
    splits = []
    for split in ("train", "val"):
        try:
            result = voc_split_to_lines(root, split, class_names)
        except FileNotFoundError:
            if split == "train":
                raise
            result = None
        if result is None:
            splits.append([])
            continue
        for warning in result.warnings:
            print(f"warning: {warning}", file=sys.stderr)
        splits.append([parse_annotation_line(line) for line in result.lines])
    return splits[0], splits[1]


@dataclass
class History:
    """Per-epoch records (lists indexed by epoch)."""

    loss: list
    val_loss: list
    lr: list
    map_epochs: list
    map_values: list

    @classmethod
    def empty(cls) -> History:
        return cls([], [], [], [], [])


class Trainer:
    """Runs one training from a TrainConfig (see train.py for the command line)."""

    def __init__(self, config: TrainConfig, log=print):
        self.config = resolve_config(config)
        self.log = log
        self.save_dir = Path(self.config.save_dir)

    # ------------------------------------------------------------------ set-up
    def _strategy(self):
        import tensorflow as tf

        kind = self.config.strategy
        if kind == "mirrored":
            gpus = tf.config.list_logical_devices("GPU")
            devices = [d.name for d in gpus] or [d.name for d in tf.config.list_logical_devices("CPU")]
            return tf.distribute.MirroredStrategy(devices=devices)
        if kind == "multi-worker":
            return tf.distribute.MultiWorkerMirroredStrategy()
        return tf.distribute.get_strategy()

    def _is_chief(self) -> bool:
        if self.config.strategy != "multi-worker":
            return True
        resolver = self.strategy.cluster_resolver
        return resolver.task_type in (None, "chief") or (resolver.task_type == "worker" and resolver.task_id == 0)

    def _build(self):
        import keras

        from nets.model_data import load_anchors, load_class_names
        from nets.yolo import YoloV4Tiny
        from utils.data.dataset import YoloDataset
        from utils.training.loss import YoloLoss

        c = self.config
        keras.utils.set_random_seed(c.seed)
        if c.mixed_precision:
            keras.mixed_precision.set_global_policy("mixed_float16")
        self.class_names = load_class_names(c.classes)
        anchors = load_anchors(c.anchors)
        self.train_images, self.val_images = load_split(c, self.class_names)
        if not self.train_images:
            raise ValueError("no training images found")
        self.input_hw = c.input_hw
        common = dict(input_shape=self.input_hw, max_boxes=c.max_boxes, seed=c.seed)
        self.train_data = YoloDataset(self.train_images, mosaic_prob=c.mosaic, mixup_prob=c.mixup, **common)
        self.val_data = YoloDataset(self.val_images, train=False, **common) if self.val_images else None

        self.strategy = self._strategy()
        self.replicas = self.strategy.num_replicas_in_sync

        def make_model():
            return YoloV4Tiny(
                len(self.class_names),
                attention=c.attention,
                anchors=anchors.tolist(),
                input_shape=(*self.input_hw, 3),
                class_names=self.class_names,
            )

        with self.strategy.scope():
            self.model = make_model()
        if c.strategy != "none":
            # Variables created under a strategy draw different random initial values; start from
            # the weights a one-process run with this seed starts from (the same on every worker).
            keras.utils.set_random_seed(c.seed)
            self.model.set_weights(make_model().get_weights())
        with self.strategy.scope():
            if c.weights:
                self._load_initial_weights(c.weights)
            else:
                init_head_biases(self.model, self.input_hw)
            self.optimizer = self._make_optimizer()
            self.optimizer.build(self.model.trainable_variables)
        self.loss_fn = YoloLoss(
            self.model.anchors,
            self.model.anchors_mask,
            self.model.num_classes,
            scale_x_y=self.model.scale_x_y,
            ignore_thresh=c.ignore_thresh,
            label_smoothing=c.label_smoothing,
        )
        self.backbone_names = backbone_layer_names()
        self.bn_layers = [layer for layer in self.model.layers if isinstance(layer, keras.layers.BatchNormalization)]

    def _load_initial_weights(self, path: str) -> None:
        import keras

        if str(path).endswith(".weights"):
            from utils.interop.darknet import load_darknet_weights  # only needed for darknet files

            report = load_darknet_weights(self.model, path)
            self.log(f"loaded darknet weights {path}:\n{report}")
            return
        source = keras.saving.load_model(path, compile=False)
        loaded, skipped = transfer_weights(source, self.model)
        self.log(f"loaded {len(loaded)} layers from {path}; kept the initialisation of {len(skipped)}: {skipped}")

    def _make_optimizer(self):
        import keras

        c = self.config
        if c.optimizer == "sgd":
            optimizer = keras.optimizers.SGD(c.lr, momentum=c.momentum, nesterov=True, weight_decay=c.weight_decay)
        else:
            optimizer = keras.optimizers.Adam(c.lr, beta_1=c.momentum, weight_decay=c.weight_decay)
        # Decoupled decay on conv kernels only, as darknet and bubbliiiing decay only kernels.
        optimizer.exclude_from_weight_decay(var_names=["gamma", "beta", "bias"])
        if c.mixed_precision:
            optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
        return optimizer

    # ------------------------------------------------------------------ phases
    def _set_frozen(self, frozen: bool) -> None:
        for layer in self.model.layers:
            if layer.name in self.backbone_names:
                layer.trainable = not frozen
        if self.config.freeze_bn:
            for layer in self.bn_layers:
                layer.trainable = False

    def _phase_batch(self, epoch: int) -> tuple[bool, int]:
        frozen = epoch < self.config.freeze_epochs
        return frozen, self.config.freeze_batch_size if frozen else self.config.batch_size

    def _schedule(self, batch_size: int) -> LRSchedule:
        c = self.config
        max_lr = scaled_lr(c.lr, batch_size, c.optimizer)
        min_lr = scaled_lr(c.lr * c.min_lr_ratio, batch_size, c.optimizer, floor_ratio=0.01)
        return LRSchedule(max_lr, min_lr, c.epochs, c.lr_decay, warmup_epochs=c.warmup_epochs)

    def _distributed(self, data, batch_size: int, epoch: int, mosaic: bool):
        import tensorflow as tf

        if batch_size % self.replicas:
            raise ValueError(f"batch size {batch_size} does not split over {self.replicas} replicas")
        per_replica = batch_size // self.replicas
        workers = self.config.workers

        def dataset_fn(context: tf.distribute.InputContext):
            return data.dataset(
                per_replica,
                epoch=epoch,
                mosaic=mosaic,
                num_parallel_calls=workers,
                global_batch=batch_size,
                pipeline_id=context.input_pipeline_id,
                num_pipelines=context.num_input_pipelines,
            )

        return self.strategy.distribute_datasets_from_function(dataset_fn)

    def _make_steps(self, batch_size: int):
        """(train_step, val_step) tf.functions over distributed batches, for the current trainable set."""
        import tensorflow as tf

        model, loss_fn, optimizer, strategy = self.model, self.loss_fn, self.optimizer, self.strategy
        variables = model.trainable_variables
        mixed = self.config.mixed_precision
        xla = self.config.xla and self.replicas == 1
        if self.config.xla and not xla:
            self.log("note: --xla is used with one replica only; training without it")
        global_batch = float(batch_size)
        compute_dtype = tf.float16 if mixed else tf.float32

        def forward_loss(images, gt, training):
            outputs = model(tf.cast(images, compute_dtype) / 255.0, training=training)
            per_image, parts = loss_fn(outputs, gt)
            scale = 1.0 / global_batch
            return tf.reduce_sum(per_image) * scale, {k: tf.reduce_sum(v) * scale for k, v in parts.items()}

        def gradients(images, gt):
            with tf.GradientTape() as tape:
                loss, parts = forward_loss(images, gt, True)
                scaled = optimizer.scale_loss(loss) if mixed else loss
            return loss, parts, tape.gradient(scaled, variables)

        if xla:
            gradients = tf.function(gradients, jit_compile=True)

        def replica_train(images, gt):
            loss, parts, grads = gradients(images, gt)
            optimizer.apply_gradients(zip(grads, variables, strict=True))
            return loss, parts

        def reduce(values):
            return tf.nest.map_structure(lambda v: strategy.reduce(tf.distribute.ReduceOp.SUM, v, axis=None), values)

        @tf.function
        def train_step(batch):
            return reduce(strategy.run(replica_train, args=batch))

        @tf.function
        def val_step(batch):
            return reduce(strategy.run(lambda images, gt: forward_loss(images, gt, False), args=batch))

        return train_step, val_step

    # ------------------------------------------------------------------ saving
    def _save_model(self, path: Path) -> None:
        synced = [layer.synchronized for layer in self.bn_layers]
        for layer in self.bn_layers:  # the saved model is for inference: plain BN
            layer.synchronized = False
        try:
            atomic_write(path, self.model.save)
        finally:
            for layer, flag in zip(self.bn_layers, synced, strict=True):
                layer.synchronized = flag

    def _model_identity(self) -> dict:
        """What a checkpoint must share with this run for --resume."""
        return {"attention": self.config.attention, "classes": self.class_names, "input_hw": list(self.input_hw)}

    def _save_checkpoint(self, epoch: int, history: History, best: float) -> None:
        meta = {
            "version": CHECKPOINT_VERSION,
            "epochs_done": epoch + 1,
            "history": history.__dict__,
            "best": best,
            "model": self._model_identity(),
        }
        arrays = {f"model_{i}": np.asarray(v.numpy()) for i, v in enumerate(self.model.weights)}
        arrays.update({f"optimizer_{i}": np.asarray(v.numpy()) for i, v in enumerate(self.optimizer.variables)})
        arrays["meta"] = np.array(json.dumps(meta))

        def write(temp):
            with open(temp, "wb") as handle:
                np.savez(handle, **arrays)

        atomic_write(self.save_dir / CHECKPOINT_NAME, write)

    def _load_checkpoint(self) -> tuple[int, History, float]:
        path = self.save_dir / CHECKPOINT_NAME
        if not path.is_file():
            raise FileNotFoundError(f"--resume: no {CHECKPOINT_NAME} in {self.save_dir}")
        with np.load(path) as data:
            meta = json.loads(str(data["meta"]))
            expected = self._model_identity()
            if meta["model"] != expected:
                raise ValueError(f"{path}: checkpoint is for {meta['model']}, this run is {expected}")
            model_vars, optimizer_vars = self.model.weights, self.optimizer.variables
            if sum(k.startswith("model_") for k in data.files) != len(model_vars) or sum(
                k.startswith("optimizer_") for k in data.files
            ) != len(optimizer_vars):
                raise ValueError(f"{path}: checkpoint does not match this model/optimizer (different settings?)")
            for i, variable in enumerate(model_vars):
                variable.assign(data[f"model_{i}"])
            for i, variable in enumerate(optimizer_vars):
                variable.assign(data[f"optimizer_{i}"])
        return meta["epochs_done"], History(**meta["history"]), meta["best"]

    def _write_settings(self) -> None:
        import keras
        import tensorflow as tf

        settings = {
            **self.config.to_dict(),
            "resolved_input_hw": list(self.input_hw),
            "class_names": self.class_names,
            "anchors": self.model.anchors,
            "attention": self.model.attention,
            "num_replicas": self.replicas,
            "train_images": len(self.train_images),
            "val_images": len(self.val_images),
            "best_criterion": "val mAP@0.5" if self.config.eval_period and self.val_images else "val loss",
            "tensorflow": tf.__version__,
            "keras": keras.__version__,
        }
        text = json.dumps(settings, indent=2)
        atomic_write(self.save_dir / "settings.json", lambda temp: Path(temp).write_text(text))

    def _plots(self, history: History) -> None:
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
        atomic_write(self.save_dir / "loss.png", lambda temp: fig.savefig(temp, format="png"))
        plt.close(fig)
        if history.map_epochs:
            fig, ax = plt.subplots(figsize=(6, 4))
            ax.plot(history.map_epochs, history.map_values, marker="o")
            ax.set_xlabel("epoch")
            ax.set_ylabel("val mAP@0.5")
            ax.set_ylim(0, 1)
            ax.grid(alpha=0.3)
            fig.tight_layout()
            atomic_write(self.save_dir / "map.png", lambda temp: fig.savefig(temp, format="png"))
            plt.close(fig)

    # ------------------------------------------------------------------ evaluation
    def evaluate(self) -> float:
        """val mAP@0.5 of the current weights (utils.inference.detector decoding + NMS, utils.evaluation.metrics AP)."""
        from utils.data.images import ImageLoadError, load_image
        from utils.evaluation.metrics import evaluate_detections
        from utils.inference.detector import Detector

        if not hasattr(self, "_detector"):
            self._detector = Detector.from_model(
                self.model,
                input_shape=self.input_hw,
                freeze=False,  # the live weights: the model keeps training
                conf=self.config.eval_conf,
                nms_iou=self.config.eval_nms_iou,
                max_detections=100,
                batch_size=max(1, self.config.batch_size),
            )
        detections, ground_truths = {}, {}
        chunk = 64
        for start in range(0, len(self.val_images), chunk):
            images, items = [], []
            for item in self.val_images[start : start + chunk]:
                try:
                    images.append(load_image(item.path))
                except ImageLoadError as err:
                    print(f"warning: {err}; left out of the mAP", file=sys.stderr)
                    continue
                items.append(item)
            for item, dets in zip(items, self._detector.detect(images), strict=True):
                detections[item.path] = (dets.boxes, dets.scores, dets.class_ids)
                ground_truths[item.path] = (item.boxes, item.class_ids, np.zeros(len(item.class_ids), bool))
        result = evaluate_detections(detections, ground_truths, self.model.num_classes, iou_threshold=0.5)
        return float(result.map)

    # ------------------------------------------------------------------ the loop
    def run(self) -> dict:
        """Train; returns a summary dict (best, final mAP, epochs, seconds)."""
        import tensorflow as tf
        from tqdm import tqdm

        c = self.config
        started = time.time()
        self._build()
        chief = self._is_chief()
        if chief:
            self.save_dir.mkdir(parents=True, exist_ok=True)
            self._write_settings()
        if self.replicas > 1:
            for layer in self.bn_layers:  # batch statistics over the global batch, as one process computes them
                layer.synchronized = True

        start_epoch, history, best = 0, History.empty(), -math.inf
        if c.resume:
            start_epoch, history, best = self._load_checkpoint()
            self.log(f"resumed {self.save_dir / CHECKPOINT_NAME} after epoch {start_epoch}")
        writer = tf.summary.create_file_writer(str(self.save_dir / "tensorboard")) if chief else None
        self.log(
            f"training {len(self.train_images)} images, validating on {len(self.val_images)}, "
            f"input {self.input_hw[0]}x{self.input_hw[1]}, {self.replicas} replica(s), "
            f"epochs {start_epoch + 1}..{c.epochs}"
        )

        phase, steps = None, None
        final_map = None
        for epoch in range(start_epoch, c.epochs):
            frozen, batch_size = self._phase_batch(epoch)
            if phase != (frozen, batch_size):
                phase = (frozen, batch_size)
                self._set_frozen(frozen)
                steps = self._make_steps(batch_size)
                schedule = self._schedule(batch_size)
                what = "backbone frozen" if frozen else "all layers trained"
                self.log(f"epoch {epoch + 1}: {what}, batch {batch_size}")
            train_step, val_step = steps
            mosaic = epoch < c.mosaic_ratio * c.epochs
            num_steps = self.train_data.steps_per_epoch(batch_size)
            if c.steps_per_epoch:
                num_steps = min(num_steps, c.steps_per_epoch)
            dataset = self._distributed(self.train_data, batch_size, epoch, mosaic)

            total, count = 0.0, 0
            parts_sum = {"box": 0.0, "obj": 0.0, "cls": 0.0}
            bar = tqdm(total=num_steps, desc=f"epoch {epoch + 1}/{c.epochs}", disable=not chief, dynamic_ncols=True)
            for step, batch in enumerate(dataset):
                if step >= num_steps:
                    break
                lr = schedule(epoch + step / num_steps)
                self.optimizer.learning_rate = lr
                loss, parts = train_step(batch)
                loss = float(loss)
                if not math.isfinite(loss):
                    bar.close()
                    kept = self.save_dir / CHECKPOINT_NAME
                    raise NaNLossError(
                        f"loss became {loss} at epoch {epoch + 1}, step {step + 1} (lr {lr:.3g}); stopped. "
                        + (
                            f"The last good checkpoint ({kept}, after epoch {epoch}) is kept; lower --lr and "
                            "continue with --resume."
                            if epoch > start_epoch or c.resume
                            else "No epoch finished, so no checkpoint was written; lower --lr and start again."
                        )
                    )
                total += loss
                count += 1
                for key in parts_sum:
                    parts_sum[key] += float(parts[key])
                bar.update(1)
                bar.set_postfix(loss=f"{total / count:.3f}", lr=f"{lr:.2e}")
            bar.close()
            if count == 0:
                raise RuntimeError(f"epoch {epoch + 1}: no training batch (fewer usable images than the batch size?)")
            corrupt = self.train_data.corrupt_images
            if corrupt:
                self.log(f"{len(corrupt)} corrupt training image(s) skipped so far")

            val_loss = None
            if self.val_data is not None and len(self.val_images) >= self.val_batch():
                vb = self.val_batch()
                values = [float(val_step(b)[0]) for b in self._distributed(self.val_data, vb, epoch, False)]
                val_loss = float(np.mean(values)) if values else None
            history.loss.append(total / count)
            history.val_loss.append(val_loss)
            history.lr.append(lr)
            message = f"epoch {epoch + 1}: loss {total / count:.4f}" + (
                f", val loss {val_loss:.4f}" if val_loss is not None else ""
            )

            last = epoch == c.epochs - 1
            map_value = None
            if chief and c.eval_period and self.val_images and ((epoch + 1) % c.eval_period == 0 or last):
                map_value = self.evaluate()
                history.map_epochs.append(epoch + 1)
                history.map_values.append(map_value)
                message += f", val mAP@0.5 {map_value:.4f}"
                if last:
                    final_map = map_value
            self.log(message)

            if chief:
                use_map = bool(c.eval_period and self.val_images)
                score = map_value if use_map else (-val_loss if val_loss is not None else -total / count)
                self._save_model(self.save_dir / "last.keras")
                if score is not None and score > best:
                    best = score
                    self._save_model(self.save_dir / "best.keras")
                if c.save_period and (epoch + 1) % c.save_period == 0:
                    self._save_model(self.save_dir / f"ep{epoch + 1:03d}-loss{total / count:.3f}.keras")
                self._save_checkpoint(epoch, history, best)
                text = json.dumps(history.__dict__, indent=1)
                atomic_write(self.save_dir / "history.json", lambda temp, text=text: Path(temp).write_text(text))
                self._plots(history)
                with writer.as_default(step=epoch + 1):
                    tf.summary.scalar("loss/train", total / count)
                    for key, value in parts_sum.items():
                        tf.summary.scalar(f"loss/{key}", value / count)
                    if val_loss is not None:
                        tf.summary.scalar("loss/val", val_loss)
                    tf.summary.scalar("lr", lr)
                    if map_value is not None:
                        tf.summary.scalar("val_mAP50", map_value)
                writer.flush()

        seconds = time.time() - started
        summary = {
            "epochs": c.epochs,
            "seconds": seconds,
            "final_map50": final_map,
            "best_map50": max(history.map_values) if history.map_values else None,
            "corrupt_images": len(self.train_data.corrupt_images),
            "save_dir": str(self.save_dir),
        }
        return summary

    def val_batch(self) -> int:
        """Validation batch: the unfrozen batch size (a multiple of the replicas)."""
        return self.config.batch_size
