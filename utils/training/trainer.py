"""The training loop behind train.py: one process, MirroredStrategy or MultiWorkerMirroredStrategy.

A custom loop on tf.distribute (not `model.fit`) so that freezing, per-phase batch sizes, the
per-step learning rate, exact resume and the NaN stop stay simple and explicit. On Keras' JAX
backend (KERAS_BACKEND=jax, no TensorFlow needed) the same loop runs on one device, the devices of
one host or those of several processes (keras.distribution), with the steps of
utils/training/jax_steps.py and the NumPy batches of `YoloDataset.batches`. `Trainer.run` is
the lifecycle, each step public:

    setup()                   strategy, data, model, initial weights, optimizer; resume state
    on_train_start            callbacks (utils.training.callbacks)
    for each epoch:
        train_epoch(epoch)    phase = frozen backbone (first --freeze-epochs) or all layers, with its
                              batch size; mosaic/mixup on for the first --mosaic-ratio of the epochs;
                              per step: lr = schedule(fractional epoch) -> train_step(batch)
                              (strategy.run(forward, YoloLoss, apply grads, EMA update))
        validate(epoch)       val loss; every --eval-period epochs val mAP@0.5 and @.5:.95 (evaluate_maps())
        --time: plan the end of the run on the budget (and the LR schedule to it)
        history, best score, the epoch's line in the log
        on_epoch_end          callbacks: results.csv, last.keras, best.keras, checkpoint.npz (atomically),
                              plots, TensorBoard
        --patience: stop when the best score is that many evaluations old
    on_train_end              callbacks

With --ema (the default) the weights' moving average (utils.training.ema) is what is validated,
evaluated and saved as .keras; checkpoint.npz holds the raw weights and the average.

Files in --save-dir (written by the default callbacks, on the chief only): settings.json,
train_batch0.jpg, last.keras, best.keras, ep<NNN>.keras (every --save-period), checkpoint.npz (the
resume state: weights, weight average, optimizer slots, epoch, history, fitted epochs),
results.csv, history.json, loss.png, map.png, tensorboard/.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from utils.data.annotations import AnnotatedImage, read_annotation_lines
from utils.data.sources import untrainable_reason
from utils.defaults import MAX_DETECTIONS, OBJ_BALANCE
from utils.errors import YoloError
from utils.inference.detector import on_tensorflow
from utils.training.budget import TimeBudget
from utils.training.callbacks import Callback, default_callbacks
from utils.training.checkpoint import (
    CHECKPOINT_NAME,
    History,
    batch_norm_layers,
    read_checkpoint,
    save_model,
    write_checkpoint,
)
from utils.training.config import ConfigError, TrainConfig, resolve_config
from utils.training.lr_schedule import LRSchedule, scaled_lr
from utils.training.run_folder import claim_run_folder

logger = logging.getLogger("yolov4_tiny.training")

# --neighbor-cells: centres decode as 2 sigmoid - 0.5 cells (YOLOv5), reaching the neighbour cells' boxes.
NEIGHBOR_SCALE_X_Y = 2.0
# --precision (resolved) -> Keras' dtype policy: float16 and bfloat16 compute with float32 weights.
POLICIES = {"float32": "float32", "float16": "mixed_float16", "bfloat16": "mixed_bfloat16"}
MAP_IOU_THRESHOLDS = tuple(np.round(np.arange(0.5, 0.951, 0.05), 2))  # mAP@.5:.95: COCO's ten IoU thresholds


class TrainingDataError(YoloError, ValueError):
    """Data a run cannot train on (no training images)."""


class NaNLossError(YoloError, RuntimeError):
    """The loss stopped being finite; the last good checkpoint is kept (train.py exits 3)."""

    exit_code = 3


def backbone_layer_names() -> set[str]:
    """Names of the CSPDarknet53-tiny layers (what --freeze-epochs freezes), read off the backbone itself."""
    import keras

    from nets.backbone import cspdarknet53_tiny

    inputs = keras.Input((64, 64, 3))
    backbone = keras.Model(inputs, cspdarknet53_tiny(inputs))
    return {layer.name for layer in backbone.layers if not isinstance(layer, keras.layers.InputLayer)}


HEAD_LAYER_NAMES = ("conv_29", "conv_36")  # nets.model_data.HEAD_CONV_INDICES, P5 then P4


def init_head_biases(model, input_hw: tuple[int, int], heads: Sequence[str] = HEAD_LAYER_NAMES) -> None:
    """YOLOv5's priors for training from scratch: about 8 objects per 640x640 image, and class
    probabilities of 0.6 / (C - 0.99), so the first steps are not spent unlearning p = 0.5.

    `heads`: the head layers to set (a fresh model: both; initial weights: those that did not load)."""
    from nets.model_data import STRIDES

    num_classes = model.num_classes
    for layer_name, stride, mask in zip(HEAD_LAYER_NAMES, STRIDES, model.anchors_mask, strict=True):
        if layer_name not in heads:
            continue
        layer = model.get_layer(layer_name)
        kernel, bias = layer.get_weights()
        bias = bias.reshape(len(mask), 5 + num_classes)
        cells = (input_hw[0] / stride) * (input_hw[1] / stride)
        bias[:, 4] = math.log(8 / cells)
        bias[:, 5:] = math.log(0.6 / max(num_classes - 0.99, 0.01))
        layer.set_weights([kernel, bias.reshape(-1)])


def starts_as_identity(config: TrainConfig) -> bool:
    """Whether the run's attention blocks start as the identity (nets.attention, identity_init): when
    darknet weights load around them (--weights *.weights), when --weights is a .keras model whose
    blocks were built so (convert_darknet.py's, or a run started so: its gates' weights only mean
    what they meant there in the same form), or when --attention-at puts them where their block
    does not go by default. A run from scratch or from another .keras model at the default points
    builds its blocks as before."""
    from nets.yolo import default_points, parse_points

    if config.attention in (None, "none"):
        return False
    weights = str(config.weights or "").lower()
    if weights.endswith(".weights") or (weights.endswith(".keras") and _built_as_identity(config.weights)):
        return True
    return config.attention_at is not None and parse_points(config.attention_at) != default_points(config.attention)


def _built_as_identity(path) -> bool:
    """Whether the .keras model at `path` was built with identity_init (its saved config, read without
    building it); False when the file cannot say (loading it later names the problem)."""
    import json
    import zipfile

    try:
        with zipfile.ZipFile(path) as archive:
            config = json.loads(archive.read("config.json"))
    except (OSError, KeyError, ValueError, zipfile.BadZipFile):
        return False
    return bool(isinstance(config, dict) and (config.get("config") or {}).get("identity_init", False))


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


def data_paths(config: TrainConfig) -> list[str]:
    """--data as a list: one path, or several (`--data A --data B`: their training sets concatenated)."""
    return [str(path) for path in config.data] if isinstance(config.data, (list, tuple)) else [str(config.data)]


def class_names_for(config: TrainConfig) -> list[str]:
    """The run's class list: --classes, else the names the data declares (data.yaml, COCO), else VOC's 20.

    With several --data, those that declare names must declare the same ones (else ConfigError)."""
    from utils.data.sources import open_data, resolve_class_names

    if config.classes is not None or config.train_annotations:
        return resolve_class_names(config.classes)
    sources = [open_data(path) for path in data_paths(config)]
    declared = {tuple(source.class_names): source for source in sources if source.class_names}
    if len(declared) > 1:
        listed = "; ".join(f"{source.path}: {', '.join(names)}" for names, source in declared.items())
        raise ConfigError(f"the --data sets name different classes ({listed}); give one list with --classes")
    return resolve_class_names(None, next(iter(declared.values()), None))


def load_split(config: TrainConfig, class_names: list[str]) -> tuple[list[AnnotatedImage], list[AnnotatedImage]]:
    """Train and val images, from annotation-line files or read from --data by utils.data.sources (VOC,
    a VOCdevkit's years, data.yaml, COCO JSON; --train-sets / --val-sets, else the data's defaults).
    With several --data, each one's sets are read and the training (and validation) images of all
    are concatenated.

    Objects marked difficult (COCO: iscrowd) are left out of the training images; the validation
    images keep them, flagged, so that the val mAP ignores detections on them as get_map.py does
    (the val loss leaves them out, as training does). Each file or object the readers skip is a
    warning naming it. Raises TrainingDataError when the training images hold no usable
    object, or none of a class in the class list; warns, with the kmeans_for_anchors.py command that
    fits them, when the anchors fit the training boxes poorly (mean best-anchor IoU below 0.5).
    """
    from utils.data.annotations import merge_splits
    from utils.data.sources import DataFormatError, lines_split, open_data

    if config.train_annotations:
        train = lines_split(read_annotation_lines(config.train_annotations), class_names, config.train_annotations)
        val = read_annotation_lines(config.val_annotations) if config.val_annotations else []
        data_args = ["--annotations", config.train_annotations]
    else:
        trains, vals, data_args = [], [], []
        for path in data_paths(config):
            source = open_data(path)
            train_sets = config.train_sets or source.default_sets("train")
            if not train_sets:
                sets = ", ".join(source.set_names())
                raise TrainingDataError(f"{path}: no training set; name one with --train-sets (it has {sets})")
            trains.append(source.read(train_sets, class_names))
            try:
                vals.append(source.read(config.val_sets or source.default_sets("val"), class_names))
            except (FileNotFoundError, DataFormatError):  # no val set: train without one, unless it was named
                if config.val_sets:
                    raise
            data_args += ["--data", path]
        train = merge_splits(trains)
        val = merge_splits(vals) if vals else None
        for issue in train.issues + (val.issues if val is not None else []):
            logger.warning(issue)
        val = val.images if val is not None else []
        if config.train_sets:
            data_args += ["--train-sets", *config.train_sets]
        if config.classes is not None:
            data_args += ["--classes", str(config.classes)]
    reason = untrainable_reason(train)
    if reason:
        raise TrainingDataError(reason)
    train_images = [image.without_difficult() for image in train.images]
    _warn_on_poor_anchors(config, train_images, data_args)
    return train_images, val


def _warn_on_poor_anchors(config: TrainConfig, images: list[AnnotatedImage], data_args: list[str]) -> None:
    import shlex

    from nets.model_data import load_anchors
    from utils.data.anchors import POOR_ANCHOR_FIT, anchor_fit, box_sizes

    height, width = config.input_hw
    fit = anchor_fit(box_sizes(images, (height, width)), load_anchors(config.anchors))
    if fit < POOR_ANCHOR_FIT:
        output = str(Path(config.save_dir) / "anchors.txt")
        command = shlex.join(
            ["python", "kmeans_for_anchors.py", *data_args, "--input-size", f"{height}x{width}", "--output", output]
        )
        logger.warning(
            f"the anchors of {config.anchors} fit the training boxes poorly (mean best-anchor IoU "
            f"{fit:.3f} < {POOR_ANCHOR_FIT} at input {height}x{width}). Fit anchors to this data with\n"
            f"    {command}\nand train with --anchors {shlex.quote(output)}"
        )


def take_batches(dataset, count: int):
    """The first `count` batches of `dataset` (fewer if it ends sooner), then its iterator is deleted.

    Never asks for the batch after the last, which would load the samples of the incomplete last
    batch (or, with --steps-per-epoch, a whole batch) only to drop them; deleting the iterator
    cancels the work in flight instead. (utils.data.dataset turns tf.data's autotuning off: deleting
    an autotuned iterator waited up to a minute for its tuning thread.)
    """
    iterator = iter(dataset)
    try:
        for _ in range(count):
            try:
                batch = next(iterator)
            except StopIteration:
                return
            yield batch
            del batch
    finally:
        del iterator


class SingleDevice:
    """What the trainer uses of a tf.distribute strategy, on the Keras backends other than TensorFlow:
    one device, no replicas."""

    num_replicas_in_sync = 1
    distribution = None

    def scope(self):
        return contextlib.nullcontext()


def check_backend(config: TrainConfig) -> None:
    """Raise ConfigError for what trains on TensorFlow only: --strategy multi-worker (several hosts),
    float16 (its loss scaling); on torch also --strategy mirrored (one device); and any Keras backend
    but TensorFlow, JAX and torch."""
    import keras

    backend = keras.backend.backend()
    if backend == "tensorflow":
        return
    if backend not in ("jax", "torch"):
        raise ConfigError(
            f"training runs on Keras' TensorFlow, JAX and torch backends, not on {backend} (KERAS_BACKEND)"
        )
    if config.strategy != "none" and backend == "torch":
        raise ConfigError(
            f"--strategy {config.strategy} trains on TensorFlow and JAX; on torch, training uses one device"
        )
    if config.precision == "float16":
        raise ConfigError(
            f"--precision float16 (loss scaling) trains on TensorFlow only; on {backend} use bfloat16"
        )


class Trainer:
    """Runs one training from a TrainConfig (see train.py for the command line).

    `run()` is the whole training; `setup()`, `train_epoch(epoch)`, `validate(epoch)` and
    `evaluate()` are its steps, for tests, benchmarks and other loops. `callbacks` run after the
    default ones (utils.training.callbacks.default_callbacks), which write --save-dir. `clock`
    (seconds) times the epochs for --time and results.csv; tests pass a fake one.

    What it reports (the run, each epoch's line, weights loaded, skipped images) goes to the
    `yolov4_tiny.training` logger; its progress bar shows while that logger passes INFO lines (the
    scripts' default, not -q; nothing when the embedding program has not configured logging).
    """

    def __init__(self, config: TrainConfig, callbacks: Sequence[Callback] = (), clock=time.monotonic):
        import keras

        if config.strategy == "multi-worker" and keras.backend.backend() == "jax":
            from utils.training.jax_steps import start_processes

            start_processes()  # before JAX computes anything (resolve_config looks for GPUs)
        self.config = resolve_config(config)
        self.clock = clock
        self.save_dir = Path(self.config.save_dir)
        self.callbacks = [*default_callbacks(), *callbacks]
        self.history = History.empty()
        self.best = -math.inf  # the best epoch's fitness (see _end_epoch)
        self.stale = 0  # evaluations since the best one (--patience)
        self.epochs = self.config.epochs  # --epochs, or what --time fits
        self.budget = TimeBudget(self.config.time * 60, clock) if self.config.time else None
        self.ema = None  # utils.training.ema.ModelEMA with --ema (setup())
        self.stop_reason = None
        self.start_epoch = 0
        self.is_chief = True
        self._phase = None  # (frozen, batch size) the steps below were made for
        self._steps = None  # (train_step, val_step) tf.functions
        self._lr_schedule = None
        self._detector = None  # evaluate()'s, on the live model
        self._broadcast = None  # _from_chief's tf.function
        self._copies = {}  # _refreshed_copy's models of eval_model, by use
        self.strategy = None  # (setup())

    # ------------------------------------------------------------------ the lifecycle
    def run(self) -> dict:
        """Train; returns a summary dict (best, final mAP, epochs, seconds, why it stopped).

        --save-dir is claimed first, on the chief (utils.training.run_folder: locked against a
        second run, refused when it holds an earlier run unless --resume or --exist-ok)."""
        check_backend(self.config)  # before the folder is claimed: a refused run leaves nothing
        if not self._is_chief():
            return self._run()
        c = self.config
        with claim_run_folder(self.save_dir, resume=c.resume, exist_ok=c.exist_ok):
            return self._run()

    def _run(self) -> dict:
        c = self.config
        started = time.time()
        if self.budget is not None:
            self.budget.start()
        self.setup()
        logger.info(
            f"training {len(self.train_images)} images, validating on {len(self.val_images)}, "
            f"input {self.input_hw[0]}x{self.input_hw[1]}, {self.replicas} replica(s), {c.precision}, "
            f"epochs {self.start_epoch + 1}..{self.epochs}"
            + (f" (--time {c.time:g} min fits the count after the first epochs)" if self.budget else "")
        )
        self.fire("on_train_start")
        logs = {}
        epoch = self.start_epoch
        while epoch < self.epochs:
            began = self.clock()
            fraction = self.epoch_fraction(epoch)
            logs = self.train_epoch(epoch)
            trained = self.clock()
            logs.update(self.validate(epoch))
            if self.budget is not None:
                self._fit_to_budget(epoch, logs, (trained - began) / fraction, self.clock() - trained)
            logs["epoch_seconds"] = self.clock() - began
            ending = self.clock()
            self._end_epoch(epoch, logs)
            self.fire("on_epoch_end", epoch, logs)
            if self.budget is not None:
                self.budget.add("overhead", self.clock() - ending)
            epoch += 1
            if self._out_of_patience() and epoch < self.epochs:
                self.stop_reason = (
                    f"early stop after epoch {epoch}: the best score ({self.best:.4f}) has not improved "
                    f"for {self.stale} evaluations (--patience {c.patience}); best.keras is its epoch's"
                )
                logger.info(self.stop_reason)
                break
        if self.stop_reason is None and self.budget is not None:
            self.stop_reason = (
                f"--time {c.time:g} min: {self.budget.fitted:.2f} epochs fitted, "
                f"{self.budget.elapsed():.0f} s of {self.budget.seconds:.0f} s used before the end of the run"
            )
        summary = {
            "epochs": epoch,
            "stop_reason": self.stop_reason,
            "seconds": time.time() - started,
            "final_map50": logs.get("val_map50"),
            "best_map50": max(self.history.map_values) if self.history.map_values else None,
            "corrupt_images": len(self.train_data.corrupt_images),
            "save_dir": str(self.save_dir),
        }
        self.fire("on_train_end")
        return summary

    def fire(self, event: str, *args) -> None:
        """Call `event` (on_train_start, on_epoch_end, on_train_end) on every callback that has it;
        chief-only callbacks are skipped on the other workers."""
        for callback in self.callbacks:
            if getattr(callback, "chief_only", False) and not self.is_chief:
                continue
            method = getattr(callback, event, None)
            if method is not None:
                method(self, *args)

    def setup(self) -> None:
        """Build everything a training needs, in this order (the random draws depend on it): seed
        and precision policy, class names, anchors, train/val split and data sets, the strategy,
        the model (initial weights or head priors), the optimizer, the loss, the weight average
        (--ema: a second model, starting as a copy of the first); then the resume state (weights,
        average, optimizer slots, history, best score, fitted epochs) from checkpoint.npz with --resume.

        Writes no file (the callbacks do, from on_train_start). Keras' global dtype policy is
        --precision's while the models are built, and the caller's again afterwards (each layer
        keeps the policy it was built with)."""
        import keras

        check_backend(self.config)
        keras.utils.set_random_seed(self.config.seed)
        previous_policy = keras.config.dtype_policy()
        keras.mixed_precision.set_global_policy(POLICIES[self.config.precision])
        try:
            self._build()
        finally:
            keras.config.set_dtype_policy(previous_policy)

    def _build(self) -> None:
        """setup()'s work after the seed and the precision policy."""
        import keras

        from nets.model_data import load_anchors
        from nets.yolo import YoloV4Tiny
        from utils.data.dataset import YoloDataset

        c = self.config
        self.class_names = class_names_for(c)
        anchors = load_anchors(c.anchors)
        self.train_images, self.val_images = load_split(c, self.class_names)
        if not self.train_images:
            raise TrainingDataError(f"{c.train_annotations or c.data}: no training images found")
        self.input_hw = c.input_hw
        common = dict(input_shape=self.input_hw, max_boxes=c.max_boxes, seed=c.seed)
        self.train_data = YoloDataset(
            self.train_images, mosaic_prob=c.mosaic, mixup_prob=c.mixup, jitter=c.jitter,
            scale_range=(c.scale_min, c.scale_max), **common,
        )  # fmt: skip
        val_images = [image.without_difficult() for image in self.val_images]  # the val loss: as training
        self.val_data = YoloDataset(val_images, train=False, **common) if self.val_images else None

        self.strategy = self._strategy()
        self.replicas = self.strategy.num_replicas_in_sync
        self.is_chief = self._is_chief()

        identity_init = starts_as_identity(c)

        def make_model():
            return YoloV4Tiny(
                len(self.class_names),
                attention=c.attention,
                attention_at=c.attention_at,
                fusion=c.fusion,
                identity_init=identity_init,
                anchors=anchors.tolist(),
                input_shape=(*self.input_hw, 3),
                class_names=self.class_names,
                **({"scale_x_y": NEIGHBOR_SCALE_X_Y} if c.neighbor_cells else {}),
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
        self.loss_fn = self._make_loss()
        self.backbone_names = backbone_layer_names()
        self.bn_layers = batch_norm_layers(self.model)  # nested ones too (Coordinate Attention's)
        if self.replicas > 1 and on_tensorflow():  # (JAX's partitioned step computes global statistics itself)
            for layer in self.bn_layers:  # batch statistics over the global batch, as one process computes them
                layer.synchronized = True

        self.ema = None
        if c.ema:
            from utils.training.ema import ModelEMA

            with self.strategy.scope():  # made after the model's initial weights: no draw of theirs changes
                self.ema = ModelEMA(self.model, make_model())

        self.start_epoch, self.history, self.best, self.stale = 0, History.empty(), -math.inf, 0
        self.epochs = c.epochs
        self._phase = self._steps = self._lr_schedule = self._detector = None
        if c.resume:
            path = self.save_dir / CHECKPOINT_NAME
            ema_weights = self.ema.weights if self.ema else None
            self.start_epoch, self.history, self.best, state = read_checkpoint(
                path, self.model, self.optimizer, self.model_identity(), ema_weights=ema_weights
            )
            self._restore_state(state)
            logger.info(f"resumed {path} after epoch {self.start_epoch}")

    def train_epoch(self, epoch: int) -> dict:
        """One epoch of training (`epoch` counts from 0).

        Returns:
            {"loss", "box_loss", "obj_loss", "cls_loss": the epoch's mean per image,
             "lr": the last step's learning rate, "batch_size": the global batch, "steps",
             "seconds": the epoch's wall time, "images_per_second"}

        Raises:
            NaNLossError: the loss stopped being finite (nothing of this epoch is kept).
        """
        c = self.config
        started = time.perf_counter()
        dataset = self.train_batches(epoch)
        batch_size = self._phase[1]
        num_steps = self.train_data.steps_per_epoch(batch_size)
        if c.steps_per_epoch:
            num_steps = min(num_steps, c.steps_per_epoch)
        num_steps = max(1, int(num_steps * self.epoch_fraction(epoch)))  # --time: the last epoch's share

        from tqdm import tqdm

        total, count = 0.0, 0
        parts_sum = {"box": 0.0, "obj": 0.0, "cls": 0.0}
        desc = f"epoch {epoch + 1}/{self.epochs}"
        shown = self.is_chief and logger.isEnabledFor(logging.INFO)
        bar = tqdm(total=num_steps, desc=desc, disable=not shown, dynamic_ncols=True)
        for step, batch in enumerate(take_batches(dataset, num_steps)):
            lr = self._lr_schedule(epoch + step / num_steps)
            self.optimizer.learning_rate = lr
            loss, parts = self.train_step(batch)
            loss = float(loss)
            if not math.isfinite(loss):
                bar.close()
                kept = self.save_dir / CHECKPOINT_NAME
                raise NaNLossError(
                    f"loss became {loss} at epoch {epoch + 1}, step {step + 1} (lr {lr:.3g}); stopped. "
                    + (
                        f"The last good checkpoint ({kept}, after epoch {epoch}) is kept; lower --lr and "
                        "continue with --resume."
                        if epoch > self.start_epoch or c.resume
                        else "No epoch finished, so no checkpoint was written; lower --lr and start again."
                    )
                )
            total += loss
            count += 1
            for key in parts_sum:
                parts_sum[key] += float(parts[key])
            bar.update(1)
            bar.set_postfix(loss=f"{total / count:.3f}", lr=f"{lr:.2e}")
            if self._out_of_time(epoch, step + 1, num_steps):
                break
        bar.close()
        if count == 0:
            raise RuntimeError(f"epoch {epoch + 1}: no training batch (fewer usable images than the batch size?)")
        seconds = time.perf_counter() - started
        corrupt = self.train_data.corrupt_images
        if corrupt:
            logger.info(f"{len(corrupt)} corrupt training image(s) skipped so far")
        return {
            "loss": total / count,
            **{f"{key}_loss": value / count for key, value in parts_sum.items()},
            "lr": lr,
            "batch_size": batch_size,
            "steps": count,
            "seconds": seconds,
            "images_per_second": count * batch_size / seconds,
        }

    def validate(self, epoch: int) -> dict:
        """Validation after epoch `epoch` (from 0), of the weight average with --ema.

        Returns:
            {"val_loss": mean val loss, None without val images (or fewer than a batch)}, plus, on
            the chief when `evaluates(epoch)`: "val_map50", "val_map50_95" (evaluate_maps()) and
            "eval_seconds" (their time).
        """
        logs = {"val_loss": self.val_loss(epoch)}
        if self.evaluates(epoch):
            logs.update(self._timed_maps())
        return logs

    def evaluates(self, epoch: int) -> bool:
        """Whether validate(epoch) computes the val mAP: on the chief, with --eval-period and val
        images, every --eval-period epochs and after the last; with --time also after the first
        epoch of the run (to measure what an evaluation costs)."""
        c = self.config
        if not (self.is_chief and c.eval_period and self.val_images):
            return False
        measuring = self.budget is not None and not self.budget.evaluations
        return (epoch + 1) % c.eval_period == 0 or epoch == self.epochs - 1 or measuring

    def val_loss(self, epoch: int) -> float | None:
        """Mean val loss after epoch `epoch`; None without val images (or fewer than a batch)."""
        self._enter_phase(epoch)
        if self.val_data is None or len(self.val_images) < self.val_batch():
            return None
        val_step = self._steps[1]
        batches = self._distributed(self.val_data, self.val_batch(), epoch, False)
        num_batches = self.val_data.steps_per_epoch(self.val_batch())
        values = [float(val_step(batch)[0]) for batch in take_batches(batches, num_batches)]
        return float(np.mean(values)) if values else None

    def evaluate(self) -> float:
        """val mAP@0.5 of the evaluated weights (evaluate_maps())."""
        return self.evaluate_maps()["val_map50"]

    def evaluate_maps(self) -> dict:
        """{"val_map50", "val_map50_95"} of the evaluated weights (the average with --ema):
        utils.inference.detector decoding + NMS, then utils.evaluation.metrics VOC AP (all-point)
        at IoU 0.5, and its mean over the IoU thresholds 0.50, 0.55, ..., 0.95.

        As get_map.py scores: objects marked difficult are neither positives nor errors."""
        from utils.data.images import image_batches
        from utils.evaluation.metrics import GroundTruth, evaluate_detections
        from utils.inference.detector import Detector

        model = self.eval_model
        if self.processes > 1:  # the chief evaluates alone, on a copy of its own
            model = self._refreshed_copy("evaluate", POLICIES[self.config.precision])
        if self._detector is None:
            self._detector = Detector.from_model(
                model,
                input_shape=self.input_hw,
                freeze=False,  # the live weights: the model keeps training
                conf=self.config.eval_conf,
                nms_iou=self.config.eval_nms_iou,
                max_detections=MAX_DETECTIONS,
                batch_size=max(1, self.config.batch_size),
            )
        detections, ground_truths = {}, {}
        for batch in image_batches(self.val_images, 64, path_of=lambda item: item.path):
            for _, err in batch.failures:
                logger.warning(f"{err}; left out of the mAP")
            for item, dets in zip(batch.items, self._detector.detect(batch.images), strict=True):
                detections[item.path] = dets
                ground_truths[item.path] = GroundTruth(item.boxes, item.class_ids, item.difficult)
        maps = [
            float(evaluate_detections(detections, ground_truths, self.model.num_classes, iou_threshold=iou).map)
            for iou in MAP_IOU_THRESHOLDS
        ]
        return {"val_map50": maps[0], "val_map50_95": float(np.mean(maps))}

    def _timed_maps(self) -> dict:
        started = self.clock()
        maps = self.evaluate_maps()
        return {**maps, "eval_seconds": self.clock() - started}

    def _end_epoch(self, epoch: int, logs: dict) -> None:
        """Record the epoch in the history, score it (adds "fitness" and "is_best" to `logs`; counts
        the evaluations since the best for --patience) and log it.

        Fitness: val mAP@0.5 when --eval-period and val images are set (epochs without mAP score
        nothing), else minus the val loss, else minus the train loss."""
        c = self.config
        self.history.add(epoch, logs)
        if c.eval_period and self.val_images:
            fitness = logs.get("val_map50")
        else:
            fitness = -logs["val_loss"] if logs["val_loss"] is not None else -logs["loss"]
        logs["fitness"] = fitness
        logs["is_best"] = fitness is not None and fitness > self.best
        if logs["is_best"]:
            self.best = fitness
        if fitness is not None:  # an evaluation: --patience counts those since the best
            self.stale = 0 if logs["is_best"] else self.stale + 1
        message = f"epoch {epoch + 1}: loss {logs['loss']:.4f}"
        if logs["val_loss"] is not None:
            message += f", val loss {logs['val_loss']:.4f}"
        if logs.get("val_map50") is not None:
            message += f", val mAP@0.5 {logs['val_map50']:.4f}"
        logger.info(message)

    def epoch_fraction(self, epoch: int) -> float:
        """The share of its steps epoch `epoch` (from 0) trains: 1, but with --time the last epoch
        of the plan may be a part of one (utils.training.budget)."""
        if self.budget is None or self.budget.fitted is None or epoch + 1 < self.epochs:
            return 1.0
        return min(1.0, max(self.budget.fitted - epoch, 1e-3))

    def _out_of_time(self, epoch: int, steps: int, planned: int) -> bool:
        """--time, after `steps` of the `planned` steps of epoch `epoch`: whether the steps stop here
        because the budget leaves only the time the epoch's val loss, evaluation and saves take.
        Such an epoch is the run's last."""
        if self.budget is None or steps >= planned or self.config.strategy == "multi-worker":
            return False  # (each worker has its own clock: there the plan, the chief's, alone ends the run)
        if not self.budget.time_up():
            return False
        self.epochs = epoch + 1
        self.budget.fitted = epoch + steps / planned
        logger.info(
            f"--time {self.config.time:g} min: epoch {epoch + 1} stopped after {steps} of {planned} steps "
            f"({self.budget.elapsed() / 60:.1f} min used); it is the last"
        )
        return True

    def _fit_to_budget(self, epoch: int, logs: dict, train_seconds: float, val_seconds: float) -> None:
        """--time, after epoch `epoch` (its steps took `train_seconds` as a whole epoch, its val loss
        and evaluation `val_seconds`): record the times, plan the end of the run (utils.training.budget)
        and fit the learning-rate schedule to it; when this epoch became the last, evaluate it if it
        was not."""
        c = self.config
        eval_seconds = logs.get("eval_seconds")
        self.budget.add("train", train_seconds)
        self.budget.add("val", val_seconds - (eval_seconds or 0.0))
        if eval_seconds is not None:
            self.budget.add("eval", eval_seconds)
        if epoch + 1 < self.epochs or self.budget.fitted is None:  # not cut short: plan the rest
            planned = self._from_chief(self.budget.refit(epoch + 1, c.eval_period if self.val_images else 0))
            before, self.budget.fitted = self.epochs, planned
            self.epochs = max(epoch + 1, math.ceil(planned - 1e-9))
            if self._phase is not None:
                self._lr_schedule = self._schedule(self._phase[1])
            if self.epochs != before:
                logger.info(
                    f"--time {c.time:g} min: {planned:.2f} epochs (was {before}; an epoch trains in "
                    f"{self.budget.estimate('train'):.1f} s"
                    + (f", an evaluation takes {self.budget.estimate('eval'):.1f} s" if eval_seconds else "")
                    + f", {self.budget.elapsed() / 60:.1f} min used); learning-rate schedule fitted to it"
                )
        if epoch + 1 >= self.epochs and logs.get("val_map50") is None and self.evaluates(epoch):
            logs.update(self._timed_maps())  # the final epoch is always evaluated

    def _out_of_patience(self) -> bool:
        """--patience: the best score is that many evaluations old (the chief's count, on every worker)."""
        patience = self.config.patience
        if not patience:
            return False
        return bool(self._from_chief(int(self.stale >= patience)))

    def _from_chief(self, value: float | None) -> float | None:
        """`value` as the chief has it, on every worker: under multi-worker training only the chief
        evaluates, and each worker has its own clock, so what stops or fits the run is the chief's."""
        if self.config.strategy != "multi-worker":
            return value
        if not on_tensorflow():
            from jax.experimental import multihost_utils

            total = float(multihost_utils.broadcast_one_to_all(np.float32(-1.0 if value is None else value)))
            return None if total < 0 else total
        import tensorflow as tf

        if self._broadcast is None:
            strategy = self.strategy

            @tf.function
            def broadcast(mine):
                def first_replica_only():
                    is_first = tf.equal(tf.distribute.get_replica_context().replica_id_in_sync_group, 0)
                    return tf.where(is_first, mine, tf.zeros_like(mine))

                return strategy.reduce(tf.distribute.ReduceOp.SUM, strategy.run(first_replica_only), axis=None)

            self._broadcast = broadcast
        total = float(self._broadcast(tf.constant(-1.0 if value is None else float(value), tf.float32)))
        return None if total < 0 else total

    # ------------------------------------------------------------------ steps
    def train_batches(self, epoch: int):
        """The distributed training batches of epoch `epoch`, after switching to its phase (frozen
        or not, batch size; the train and val steps are traced again when the phase changes)."""
        batch_size = self._enter_phase(epoch)
        return self._distributed(self.train_data, batch_size, epoch, self.mosaic_on(epoch))

    def mosaic_on(self, epoch: int) -> bool:
        """Whether epoch `epoch` (from 0) draws mosaic and mixup samples: the first --mosaic-ratio of the epochs."""
        return epoch < self.config.mosaic_ratio * self.epochs

    @property
    def freeze_epochs(self) -> int:
        """Epochs with the backbone frozen: --freeze-epochs, or with --time its share of --epochs
        in the fitted count (50 of 300 -> a sixth)."""
        c = self.config
        return c.freeze_epochs if self.epochs == c.epochs else round(c.freeze_epochs * self.epochs / c.epochs)

    def first_batch(self, count: int = 16) -> tuple[np.ndarray, np.ndarray]:
        """The first `count` (at most a batch) samples of the first training batch of this run
        (epoch start_epoch), augmented as train_epoch gets them: images uint8 (n, H, W, 3), gt
        float32 (n, max_boxes, 5) pixel xyxy + class, -1 rows padding."""
        _, batch_size = self._phase_batch(self.start_epoch)
        mosaic = self.mosaic_on(self.start_epoch)
        return self.train_data.first_samples(min(count, batch_size), self.start_epoch, mosaic=mosaic)

    def train_step(self, batch):
        """One optimizer step on a batch from train_batches(), then one update of the weight average
        (--ema); returns (loss, {"box", "obj", "cls"}) as tensors, each summed over the replicas and
        divided by the global batch."""
        if self._steps is None:
            raise RuntimeError("train_step: call train_batches(epoch) first (it picks the epoch's phase)")
        return self._steps[0](batch)

    @property
    def lr_schedule(self) -> LRSchedule | None:
        """The learning-rate schedule of the current phase, over `epochs` (None before the first phase)."""
        return self._lr_schedule

    def val_batch(self) -> int:
        """Validation batch: the unfrozen batch size (a multiple of the replicas)."""
        return self.config.batch_size

    # ------------------------------------------------------------------ saving (used by the callbacks)
    @property
    def eval_model(self):
        """The model validated, evaluated and saved: the weight average with --ema, else the model."""
        return self.ema.ema_model if self.ema is not None else self.model

    def save_model(self, path: str | Path) -> None:
        """The evaluated model (eval_model) as a .keras for inference (plain batch norm), written atomically;
        float32 whatever --precision trained it in, so it runs at full speed on any machine (--half there)."""
        model = self.eval_model
        if self.config.precision != "float32" or self.processes > 1:
            model = self._refreshed_copy("save", "float32")
        save_model(model, path)

    @property
    def processes(self) -> int:
        """The processes training together: several under --strategy multi-worker on JAX, else 1
        (TensorFlow's workers each run their own graph, so there each counts as one here)."""
        return getattr(self.strategy, "process_count", 1)

    def _refreshed_copy(self, use: str, policy: str):
        """A copy of eval_model under dtype `policy`, built once per `use` and given eval_model's
        current weights at each call. It lives on this process's device alone (built outside the
        strategy), so the chief alone may compute with it: with several JAX processes, eval_model's
        variables span them all, and a computation on them would wait for the others."""
        from utils.inference.precision import to_mixed_precision

        copy = self._copies.get(use)
        if copy is None:
            copy = self._copies[use] = to_mixed_precision(self.eval_model, policy)
        else:
            copy.set_weights(self.eval_model.get_weights())
        return copy

    def save_checkpoint(self, path: str | Path, epochs_done: int) -> None:
        """The resume state after `epochs_done` epochs: weights, weight average, optimizer slots,
        history, best score, and trainer_state()."""
        write_checkpoint(
            path,
            self.model,
            self.optimizer,
            epochs_done=epochs_done,
            history=self.history,
            best=self.best,
            identity=self.model_identity(),
            ema_weights=self.ema.weights if self.ema is not None else None,
            state=self.trainer_state(),
        )

    def trainer_state(self) -> dict:
        """What else a resumed run continues from (JSON): the average's update count, the
        evaluations since the best (--patience), the fitted epochs and time measurements (--time)."""
        state = {"stale_evaluations": self.stale}
        if self.ema is not None:
            state["ema_updates"] = int(self.ema.updates.numpy())
        if self.budget is not None:
            state["time_budget"] = self.budget.state()
        return state

    def _restore_state(self, state: dict) -> None:
        self.stale = int(state.get("stale_evaluations", 0))
        if self.ema is not None:
            if "ema_updates" in state:
                self.ema.updates.assign(state["ema_updates"])
            else:
                self.ema.reset()
                logger.info("note: the checkpoint has no weight average; it starts from the resumed weights")
        if self.budget is not None and "time_budget" in state:
            self.budget.restore(state["time_budget"])
            if self.budget.fitted is not None:
                self.epochs = max(self.start_epoch, math.ceil(self.budget.fitted - 1e-9))

    def model_identity(self) -> dict:
        """What a checkpoint must share with this run for --resume."""
        return {
            "attention": self.config.attention, "classes": self.class_names, "input_hw": list(self.input_hw),
            # Only when set: a checkpoint written before they existed still resumes.
            **({"attention_at": list(self.model.attention_at)} if not self.model.default_placement else {}),
            **({"fusion": self.config.fusion} if self.config.fusion != "concat" else {}),
            # float16 adds the loss scale's variables; bfloat16 and float32 would swap silently.
            **({"precision": self.config.precision} if self.config.precision != "float32" else {}),
        }

    def settings(self) -> dict:
        """The resolved settings of this run and what it found (settings.json)."""
        import importlib

        import keras

        backend = keras.backend.backend()
        return {
            **self.config.to_dict(),
            "resolved_input_hw": list(self.input_hw),
            "class_names": self.class_names,
            "anchors": self.model.anchors,
            "attention": self.model.attention,
            "attention_at": list(self.model.attention_at),
            "identity_init": self.model.identity_init,
            "num_replicas": self.replicas,
            "train_images": len(self.train_images),
            "val_images": len(self.val_images),
            "best_criterion": "val mAP@0.5" if self.config.eval_period and self.val_images else "val loss",
            "keras": keras.__version__,
            "keras_backend": backend,
            backend: importlib.import_module(backend).__version__,
        }

    # ------------------------------------------------------------------ set-up details
    def _strategy(self):
        if not on_tensorflow():
            from utils.training.jax_steps import DataParallel

            return SingleDevice() if self.config.strategy == "none" else DataParallel()
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
        if not on_tensorflow():  # (JAX: start_processes() has run)
            import jax

            return jax.process_index() == 0
        import tensorflow as tf

        # What MultiWorkerMirroredStrategy() reads (TF_CONFIG), so that run() knows before setup().
        resolver = tf.distribute.cluster_resolver.TFConfigClusterResolver()
        return resolver.task_type in (None, "chief") or (resolver.task_type == "worker" and resolver.task_id == 0)

    def _load_initial_weights(self, path: str) -> None:
        import keras

        if str(path).endswith(".weights"):
            from utils.interop.darknet import load_darknet_weights  # only needed for darknet files

            report = load_darknet_weights(self.model, path)
            logger.info(f"loaded darknet weights {path}:\n{report}")
            self._init_unloaded_heads(report.loaded)
            return
        source = keras.saving.load_model(path, compile=False)
        loaded, skipped = transfer_weights(source, self.model)
        logger.info(f"loaded {len(loaded)} layers from {path}; kept the initialisation of {len(skipped)}: {skipped}")
        self._init_unloaded_heads(loaded)

    def _init_unloaded_heads(self, loaded: Sequence[str]) -> None:
        """A head that did not load (another class count) gets the priors of a fresh model's head,
        not a zero bias: objectness 0.5 everywhere costs ~30x the loss of the prior at the start."""
        fresh = [name for name in HEAD_LAYER_NAMES if name not in loaded]
        if fresh:
            init_head_biases(self.model, self.input_hw, fresh)
            logger.info(f"head(s) {', '.join(fresh)} not loaded: objectness and class priors set as for a fresh model")

    def _make_loss(self):
        """The loss of the model built in setup(), as the settings say."""
        from utils.training.loss import YoloLoss

        c = self.config
        return YoloLoss(
            self.model.anchors,
            self.model.anchors_mask,
            self.model.num_classes,
            scale_x_y=self.model.scale_x_y,
            ignore_thresh=c.ignore_thresh,
            anchor_iou_thresh=c.anchor_iou_thresh,
            label_smoothing=c.label_smoothing,
            normalization=c.loss_normalization,
            box_weight=c.box_weight,
            obj_weight=c.obj_weight,
            cls_weight=c.cls_weight,
            balance=(c.p5_obj_balance, *OBJ_BALANCE[1:]),
            neighbor_cells=c.neighbor_cells,
            obj_iou_target=c.obj_iou_target,
        )

    def _make_optimizer(self):
        import keras

        from utils.training.optimizer import make_optimizer

        c = self.config
        optimizer = make_optimizer(c.optimizer, c.lr, c.momentum, c.weight_decay, c.weight_decay_mode)
        if c.precision == "float16":  # float16's range needs it; bfloat16 has float32's
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
        frozen = epoch < self.freeze_epochs
        return frozen, self.config.freeze_batch_size if frozen else self.config.batch_size

    def _enter_phase(self, epoch: int) -> int:
        """Freeze or unfreeze for `epoch` and make its steps and schedule when the phase changes;
        returns the phase's batch size."""
        phase = self._phase_batch(epoch)
        if phase != self._phase:
            frozen, batch_size = self._phase = phase
            self._set_frozen(frozen)
            train_step, val_step = self._make_steps(batch_size)
            # The val step does not depend on the phase (all layers in inference mode, the val
            # batch): the one traced before is kept, so a phase change traces the train step only.
            self._steps = (train_step, self._steps[1] if self._steps else val_step)
            self._lr_schedule = self._schedule(batch_size)
            what = "backbone frozen" if frozen else "all layers trained"
            logger.info(f"epoch {epoch + 1}: {what}, batch {batch_size}")
        return phase[1]

    def _schedule(self, batch_size: int) -> LRSchedule:
        c = self.config
        max_lr = scaled_lr(c.lr, batch_size, c.optimizer)
        min_lr = scaled_lr(c.lr * c.min_lr_ratio, batch_size, c.optimizer, floor_ratio=0.01)
        warmup, flat, total = c.warmup_epochs, c.min_lr_epochs, self.epochs
        if self.budget is not None and self.budget.fitted is not None:
            # --time planned the run: a schedule over its fractional length; the flat tail keeps its
            # share of it (as the frozen epochs do), the warm-up at most the default rule's 5% (at
            # least 1 epoch), so a short run still anneals.
            total = self.budget.fitted
            flat = c.min_lr_epochs * total / c.epochs
            warmup = min(c.warmup_epochs, max(1.0, 0.05 * total))
        return LRSchedule(max_lr, min_lr, total, c.lr_decay, warmup_epochs=warmup, flat_epochs=flat)

    def _distributed(self, data, batch_size: int, epoch: int, mosaic: bool):
        workers = self.config.workers
        if batch_size % self.replicas:
            raise ConfigError(f"batch size {batch_size} does not split over {self.replicas} replicas")
        if not on_tensorflow():  # the NumPy batches themselves (the steps split them over the devices)
            if self.processes == 1:
                return data.batches(batch_size, epoch=epoch, mosaic=mosaic, num_parallel_calls=workers)
            return data.batches(  # this process's share of every global batch
                batch_size // self.processes, epoch=epoch, mosaic=mosaic, num_parallel_calls=workers,
                global_batch=batch_size, pipeline_id=self.strategy.process_index, num_pipelines=self.processes,
            )  # fmt: skip
        import tensorflow as tf

        per_replica = batch_size // self.replicas

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
        """(train_step, val_step) tf.functions over distributed batches: the train step for the
        current trainable set and a global batch of `batch_size` (with the EMA update), the val step
        of eval_model for `val_batch()`. On JAX, utils/training/jax_steps.py's jitted functions; on
        torch, utils/training/torch_steps.py's eager ones."""
        import keras

        if keras.backend.backend() == "torch":
            from utils.training.torch_steps import make_torch_steps

            compute_dtype = keras.mixed_precision.Policy(POLICIES[self.config.precision]).compute_dtype
            return make_torch_steps(
                self.model, self.loss_fn, self.optimizer, self.ema, batch_size, self.eval_model, self.val_batch(),
                compute_dtype,
            )
        if not on_tensorflow():
            from utils.training.jax_steps import make_jax_steps

            if self.config.xla and self._steps is None:
                logger.info("note: --xla is what JAX always does (every step is XLA-compiled)")
            compute_dtype = keras.mixed_precision.Policy(POLICIES[self.config.precision]).compute_dtype
            return make_jax_steps(
                self.model, self.loss_fn, self.optimizer, self.ema, batch_size, self.eval_model, self.val_batch(),
                compute_dtype, distribution=self.strategy.distribution,
            )  # fmt: skip
        import tensorflow as tf

        model, loss_fn, optimizer, strategy, ema = self.model, self.loss_fn, self.optimizer, self.strategy, self.ema
        eval_model = self.eval_model
        variables = model.trainable_variables
        scaled_loss = self.config.precision == "float16"
        xla = self.config.xla and self.replicas == 1
        if self.config.xla and not xla:
            logger.info("note: --xla is used with one replica only; training without it")
        compute_dtype = tf.as_dtype(keras.mixed_precision.Policy(POLICIES[self.config.precision]).compute_dtype)
        val_batch = self.val_batch()

        def forward_loss(images, gt, training, global_batch, net=model):
            outputs = net(tf.cast(images, compute_dtype) / 255.0, training=training)
            return loss_fn.batch_loss(outputs, gt, global_batch)

        def gradients(images, gt):
            with tf.GradientTape() as tape:
                loss, parts = forward_loss(images, gt, True, batch_size)
                scaled = optimizer.scale_loss(loss) if scaled_loss else loss
            return loss, parts, tape.gradient(scaled, variables)

        if xla:
            gradients = tf.function(gradients, jit_compile=True)

        def replica_train(images, gt):
            loss, parts, grads = gradients(images, gt)
            optimizer.apply_gradients(zip(grads, variables, strict=True))
            if ema is not None:  # in replica context: each replica averages its own copies
                ema.update()
            return loss, parts

        def reduce(values):
            return tf.nest.map_structure(lambda v: strategy.reduce(tf.distribute.ReduceOp.SUM, v, axis=None), values)

        @tf.function
        def train_step(batch):
            return reduce(strategy.run(replica_train, args=batch))

        @tf.function
        def val_step(batch):
            return reduce(
                strategy.run(lambda images, gt: forward_loss(images, gt, False, val_batch, eval_model), args=batch)
            )

        return train_step, val_step
