import argparse
import json
import logging
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

from utils.data.demo import write_demo_dataset
from utils.training.callbacks import Callback
from utils.training.checkpoint import atomic_write
from utils.training.config import (
    DEMO_PRESET,
    TrainConfig,
    add_arguments,
    config_from_args,
    parse_input_size,
    resolve_config,
)
from utils.training.trainer import Trainer, backbone_layer_names, load_split, starts_as_identity


def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path):
    target = tmp_path / "best.keras"
    target.write_text("good")

    def broken(temp):
        with open(temp, "w") as handle:
            handle.write("half")
        raise KeyboardInterrupt  # a kill in the middle of a save

    with pytest.raises(KeyboardInterrupt):
        atomic_write(target, broken)
    assert target.read_text() == "good"
    assert [p.name for p in tmp_path.iterdir()] == ["best.keras"]
    atomic_write(target, lambda temp: open(temp, "w").write("new"))
    assert target.read_text() == "new"


def test_backbone_layers_are_cfg_layers_0_to_26():
    names = backbone_layer_names()
    assert {"conv_0", "bn_0", "route_3", "conv_26", "bn_26", "maxpool_25"} <= names
    assert not {n for n in names if n.startswith(("conv_27", "conv_29", "attention", "conv_36"))}


def _parse(argv):
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return config_from_args(parser.parse_args(argv))


def test_ema_is_on_unless_no_ema_and_patience_and_time_are_checked():
    assert resolve_config(_parse([])).ema and resolve_config(_parse(["--ema"])).ema
    assert not resolve_config(_parse(["--no-ema"])).ema
    config = resolve_config(_parse(["--patience", "5", "--time", "1.5"]))
    assert (config.patience, config.time) == (5, 1.5)
    assert resolve_config(_parse([])).patience is None and resolve_config(_parse([])).time is None
    with pytest.raises(ValueError, match="--patience"):
        resolve_config(_parse(["--patience", "-1"]))
    with pytest.raises(ValueError, match="--time"):
        resolve_config(_parse(["--time", "0"]))


def test_flags_then_demo_preset_then_defaults():
    config = resolve_config(_parse(["--demo", "--epochs", "3"]))
    assert config.epochs == 3 and config.input_size == DEMO_PRESET["input_size"] and config.optimizer == "sgd"
    assert config.lr == 1e-2 and config.weight_decay == 5e-4 and config.weight_decay_mode == "coupled"
    adam = resolve_config(_parse(["--demo", "--optimizer", "adam"]))
    assert adam.lr == 1e-3 and adam.weight_decay == 0.0 and adam.weight_decay_mode == "decoupled"
    plain = resolve_config(_parse(["--weights", "x.keras", "--optimizer", "sgd"]))
    assert plain.freeze_epochs == 50 and plain.lr == 1e-2 and plain.weight_decay == 5e-4
    assert plain.weight_decay_mode == "coupled" and plain.loss_normalization == "sum"
    assert plain.anchor_iou_thresh == 0.213 and plain.p5_obj_balance == 0.4
    assert plain.input_hw == (416, 416)
    assert plain.warmup_epochs == 3 and plain.min_lr_epochs == 15  # 5% of 300, at most 15
    assert config.min_lr_epochs == 1 and resolve_config(_parse(["--epochs", "100"])).min_lr_epochs == 5
    adam_l2 = resolve_config(_parse(["--optimizer", "adam", "--weight-decay", "1e-4", "--weight-decay-mode=coupled"]))
    assert (adam_l2.weight_decay, adam_l2.weight_decay_mode) == (1e-4, "coupled")
    assert resolve_config(_parse([])).freeze_epochs == 0


def test_attention_by_phi_or_by_name():
    assert resolve_config(_parse([])).attention == "none"
    by_phi, by_name = resolve_config(_parse(["--phi", "4"])), resolve_config(_parse(["--attention", "ca"]))
    assert (by_phi.phi, by_phi.attention) == (by_name.phi, by_name.attention) == (4, "ca")
    with pytest.raises(ValueError, match="means 'se'"):
        resolve_config(_parse(["--phi", "1", "--attention", "ca"]))
    with pytest.raises(ValueError, match="expected one of"):
        resolve_config(_parse(["--attention", "transformer"]))


def test_attention_points_and_fusion_settings():
    default = resolve_config(_parse(["--phi", "2"]))
    assert default.attention_at is None and default.fusion == "concat"
    placed = resolve_config(_parse(["--phi", "2", "--attention-at", "head_p4, stage1", "--fusion", "weighted"]))
    assert placed.attention_at == "stage1,head_p4" and placed.fusion == "weighted"  # network order
    assert placed.to_dict()["attention_at"] == "stage1,head_p4"  # what settings.json records
    with pytest.raises(ValueError, match="unknown nowhere; the points are stage1"):
        resolve_config(_parse(["--phi", "2", "--attention-at", "feat1,nowhere"]))
    with pytest.raises(SystemExit):  # argparse's choices
        _parse(["--fusion", "sum"])
    # phi 0 has no blocks to place: the points are dropped, with a warning.
    assert resolve_config(_parse(["--phi", "0", "--attention-at", "feat1"])).attention_at is None
    # Identity start: under darknet weights, or away from the block's default points.
    assert not starts_as_identity(default)
    assert not starts_as_identity(resolve_config(_parse(["--phi", "2", "--weights", "x.keras"])))
    assert starts_as_identity(resolve_config(_parse(["--phi", "2", "--weights", "yolov4-tiny.weights"])))
    assert starts_as_identity(placed)
    assert not starts_as_identity(resolve_config(_parse(["--phi", "2", "--attention-at", "p5_upsample,feat2,feat1"])))
    assert not starts_as_identity(resolve_config(_parse(["--phi", "5", "--attention-at", "feat2"])))
    assert starts_as_identity(resolve_config(_parse(["--phi", "5", "--attention-at", "feat1,feat2"])))


def test_bad_settings_are_rejected():
    assert parse_input_size("320x416") == (320, 416)
    with pytest.raises(ValueError, match="multiples of 32"):
        parse_input_size("100")
    with pytest.raises(ValueError, match="freeze"):
        resolve_config(_parse(["--epochs", "2", "--freeze-epochs", "5"]))
    with pytest.raises(ValueError, match="mosaic"):
        resolve_config(_parse(["--mosaic", "1.5"]))


@pytest.mark.slow
def test_initial_weights_from_darknet_and_from_keras(tmp_path):
    import numpy as np

    from nets.yolo import YoloV4Tiny
    from utils.data.demo import write_demo_dataset
    from utils.interop.darknet import (
        conv_specs,
        load_darknet_weights,
        random_darknet_weights,
        write_weights,
        yolov4_tiny_cfg,
    )
    from utils.training.config import TrainConfig
    from utils.training.trainer import Trainer

    data = write_demo_dataset(tmp_path / "data", splits={"train": 4}, image_size=64)  # 4: every class has an object
    darknet_file = tmp_path / "yolov4-tiny.weights"
    write_weights(darknet_file, random_darknet_weights(conv_specs(yolov4_tiny_cfg(80)), seed=1))
    common = dict(data=str(data), classes=str(data / "classes.txt"), input_size="64", eval_period=0)

    trainer = Trainer(TrainConfig(weights=str(darknet_file), save_dir=str(tmp_path / "a"), **common))
    trainer.setup()
    reference = YoloV4Tiny(80, input_shape=(64, 64, 3))
    load_darknet_weights(reference, darknet_file)

    def assert_same_layers(model_a, model_b, names):
        for name in names:
            weights_a, weights_b = model_a.get_layer(name).get_weights(), model_b.get_layer(name).get_weights()
            for a, b in zip(weights_a, weights_b, strict=True):
                np.testing.assert_array_equal(a, b)

    assert_same_layers(reference, trainer.model, ("conv_0", "bn_0", "conv_35"))
    assert trainer.model.get_layer("conv_29").get_weights()[0].shape[-1] == 3 * (5 + 3)
    # The 80-class heads did not load: the 3-class heads have a fresh model's priors (64x64: 2x2 P5 cells).
    prior = trainer.model.get_layer("conv_29").bias.numpy().reshape(3, 8)
    np.testing.assert_allclose(prior[:, 4], np.log(8 / 4), rtol=1e-6)

    keras_file = tmp_path / "start.keras"
    trainer.model.save(keras_file)
    other = Trainer(TrainConfig(weights=str(keras_file), phi=4, save_dir=str(tmp_path / "b"), **common))
    other.setup()
    assert_same_layers(trainer.model, other.model, ("conv_0", "conv_29", "conv_36"))
    assert other.model.attention == "ca"


@pytest.mark.slow
def test_a_run_builds_its_blocks_where_told_and_records_them(tmp_path):
    from utils.interop.darknet import conv_specs, random_darknet_weights, write_weights, yolov4_tiny_cfg

    data = write_demo_dataset(tmp_path / "data", splits={"train": 4}, image_size=64)
    darknet_file = tmp_path / "yolov4-tiny.weights"
    write_weights(darknet_file, random_darknet_weights(conv_specs(yolov4_tiny_cfg(80)), seed=1))
    config = TrainConfig(
        data=str(data), classes=str(data / "classes.txt"), input_size="64", eval_period=0, phi=2,
        attention_at="head_p5,stage2", fusion="weighted", weights=str(darknet_file), save_dir=str(tmp_path / "a"),
        p5_obj_balance=1.0,
    )
    trainer = Trainer(config)
    trainer.setup()
    assert trainer.loss_fn.balance == [1.0, 1.0]  # --p5-obj-balance: P5's objectness weight, P4's stays 1
    model = trainer.model
    assert model.attention_layers == ["attention_stage2", "attention_head_p5"] and model.fusion == "weighted"
    assert model.identity_init and model.get_layer("attention_stage2").identity_init
    settings = trainer.settings()
    assert settings["attention_at"] == ["stage2", "head_p5"] and settings["identity_init"] is True
    assert settings["fusion"] == "weighted"
    assert trainer.model_identity()["attention_at"] == ["stage2", "head_p5"]
    x = np.zeros((1, 64, 64, 3), np.float32)
    block = model.get_layer("attention_stage2")
    features = np.random.default_rng(0).normal(size=(1, 8, 8, 256)).astype(np.float32)
    np.testing.assert_array_equal(np.asarray(block(features)), features)  # identity at the start
    assert [tuple(o.shape) for o in model(x)] == [(1, 2, 2, 24), (1, 4, 4, 24)]


def test_fine_tuning_a_model_built_as_the_identity_starts_from_what_it_computes(tmp_path):
    """convert_darknet.py saves blocks built as the identity (2 sigmoid gates at zero); a run with it as
    --weights must build its blocks so too, or the copied gates would halve every activation."""
    from nets.yolo import YoloV4Tiny

    data = write_demo_dataset(tmp_path / "data", splits={"train": 4}, image_size=64)
    source = YoloV4Tiny(3, attention="se", identity_init=True, input_shape=(64, 64, 3))
    path = tmp_path / "converted.keras"
    source.save(path)
    config = TrainConfig(
        data=str(data), classes=str(data / "classes.txt"), input_size="64", eval_period=0, phi=1,
        weights=str(path), save_dir=str(tmp_path / "run"),
    )  # fmt: skip
    assert starts_as_identity(resolve_config(config))
    trainer = Trainer(config)
    trainer.setup()
    x = np.random.default_rng(0).uniform(0, 1, (1, 64, 64, 3)).astype(np.float32)
    for ours, theirs in zip(trainer.model(x), source(x), strict=True):
        np.testing.assert_allclose(np.asarray(ours), np.asarray(theirs), atol=1e-5)


class Recorder:
    """A user callback: records the events, on every worker (no chief_only). (The lifecycle of a
    real run, events and logs, is checked on tests/test_train.py's run.)"""

    def __init__(self):
        self.events = []

    def on_train_start(self, trainer):
        self.events.append(("start", trainer.start_epoch))

    def on_epoch_end(self, trainer, epoch, logs):
        self.events.append(("epoch", epoch, dict(logs)))

    def on_train_end(self, trainer):
        self.events.append(("end",))


def test_chief_only_callbacks_are_skipped_on_other_workers(tmp_path):
    from utils.training.callbacks import (
        CheckpointWriter,
        HistoryWriter,
        Plots,
        ResultsCSV,
        TensorBoard,
        TrainBatchPlot,
    )
    from utils.training.config import TrainConfig
    from utils.training.trainer import Trainer

    recorder = Recorder()
    trainer = Trainer(TrainConfig(save_dir=str(tmp_path / "run")), callbacks=[recorder])
    defaults = [ResultsCSV, CheckpointWriter, HistoryWriter, Plots, TensorBoard, TrainBatchPlot]
    assert [type(c) for c in trainer.callbacks] == [*defaults, Recorder]
    trainer.is_chief = False  # as on worker 1 of a multi-worker run: the writers (which need setup()) never run
    trainer.fire("on_epoch_end", 4, {"loss": 1.0})
    trainer.fire("on_train_end")
    assert recorder.events == [("epoch", 4, {"loss": 1.0}), ("end",)]
    assert not (tmp_path / "run").exists()


def test_annotation_files_instead_of_the_voc_folder(tmp_path):
    """--train-annotations / --val-annotations: the images and boxes of those lines, not --data's."""
    from PIL import Image

    for name in "abcd":  # the images the lines name (their sizes are read for the anchor check)
        Image.fromarray(np.zeros((48, 64, 3), np.uint8)).save(tmp_path / f"{name}.jpg")
    d = str(tmp_path)
    train_lines = f"{d}/a.jpg 1,2,30,40,0 5,5,9,9,2\n{d}/b.jpg\n{d}/d.jpg 3,3,12,12,1\n"
    lines = {"train": train_lines, "val": f"{d}/c.jpg 0,0,10,10,1\n"}
    for split, text in lines.items():
        (tmp_path / f"{split}.txt").write_text(text)
    argv = ["--data", str(tmp_path / "no_voc_here"), "--train-annotations", str(tmp_path / "train.txt")]
    config = resolve_config(_parse([*argv, "--val-annotations", str(tmp_path / "val.txt")]))
    train, val = load_split(config, ["cat", "dog", "bird"])
    assert [item.path for item in train] == [f"{d}/a.jpg", f"{d}/b.jpg", f"{d}/d.jpg"]
    assert [item.path for item in val] == [f"{d}/c.jpg"]
    np.testing.assert_array_equal(train[0].boxes, [[1, 2, 30, 40], [5, 5, 9, 9]])
    assert train[0].class_ids.tolist() == [0, 2] and len(train[1].boxes) == 0 and val[0].class_ids.tolist() == [1]
    # Without --val-annotations there is no validation set.
    assert load_split(resolve_config(_parse(argv)), ["cat", "dog", "bird"])[1] == []


def test_training_from_the_voc_folder_skips_difficult_objects(tmp_path):
    # seed 28: the two images hold every class even without the object marked difficult below
    root = write_demo_dataset(tmp_path / "voc", splits={"train": 2}, image_size=64, seed=28)
    xml = root / "Annotations" / "000000.xml"
    xml.write_text(xml.read_text().replace("<difficult>0</difficult>", "<difficult>1</difficult>", 1))
    config = resolve_config(_parse(["--data", str(root), "--classes", str(root / "classes.txt")]))
    train, _ = load_split(config, (root / "classes.txt").read_text().split())
    assert train[0].path.endswith("000000.jpg")
    assert len(train[0].boxes) == xml.read_text().count("<object>") - 1


class Scripted(Trainer):
    """A Trainer whose epochs train nothing: each marks the model with its number (the P5 head's
    bias) and reports the validation logs it is given, so the best epoch is known in advance."""

    def __init__(self, config, val_logs):
        super().__init__(config)
        self.val_logs = val_logs

    def train_epoch(self, epoch):
        bias = self.model.get_layer("conv_29").bias
        bias.assign(np.full(bias.shape, epoch + 1.0, np.float32))
        return {"loss": 1.0, "box_loss": 0.3, "obj_loss": 0.3, "cls_loss": 0.4, "lr": 1e-3, "batch_size": 2,
                "steps": 1, "seconds": 0.1, "images_per_second": 20.0}  # fmt: skip

    def validate(self, epoch):
        return dict(self.val_logs[epoch])


@pytest.fixture(scope="module")
def scripted(tmp_path_factory):
    """Two scripted 2-epoch runs: SGD with val mAP every epoch; Adam with val loss only."""
    tmp = tmp_path_factory.mktemp("scripted")
    data = write_demo_dataset(tmp / "data", splits={"train": 4, "val": 2}, image_size=64, seed=0)  # every class
    # No weight average: the epochs train nothing (no step updates it), so the saved model is the marked one.
    common = dict(data=str(data), classes=str(data / "classes.txt"), input_size="64", epochs=2, save_period=0)
    common["ema"] = False
    by_map = Scripted(
        TrainConfig(**common, phi=4, eval_period=1, weight_decay=0.1, mosaic_ratio=0.5, save_dir=str(tmp / "map")),
        [{"val_loss": 0.9, "val_map50": 0.5}, {"val_loss": 0.4, "val_map50": 0.2}],  # the val loss would pick epoch 2
    )
    by_loss = Scripted(
        TrainConfig(**common, optimizer="adam", momentum=0.9, eval_period=0, save_dir=str(tmp / "loss")),
        [{"val_loss": 0.5}, {"val_loss": 0.9}],  # the lowest at epoch 1, not the last
    )
    for trainer in (by_map, by_loss):
        trainer.run()
    return by_map, by_loss


def _best_epoch(save_dir):
    import keras

    import nets.yolo  # noqa: F401  (registers YoloV4Tiny for loading)

    biases = {float(b) for b in keras.saving.load_model(save_dir / "best.keras").get_layer("conv_29").bias.numpy()}
    [epoch] = biases
    return int(epoch)


@pytest.mark.slow
def test_best_keras_is_the_best_val_map_when_evaluated_else_the_best_val_loss(scripted):
    by_map, by_loss = scripted
    assert _best_epoch(by_map.save_dir) == 1
    assert json.loads((by_map.save_dir / "settings.json").read_text())["best_criterion"] == "val mAP@0.5"
    assert _best_epoch(by_loss.save_dir) == 1
    assert json.loads((by_loss.save_dir / "settings.json").read_text())["best_criterion"] == "val loss"


@pytest.mark.slow
def test_sgd_is_nesterov_and_adam_takes_the_momentum_as_beta_1(scripted):
    import keras

    sgd, adam = scripted[0].optimizer, scripted[1].optimizer
    assert isinstance(sgd, keras.optimizers.SGD) and sgd.nesterov and sgd.momentum == pytest.approx(0.937)
    assert sgd.l2 == pytest.approx(0.1) and not sgd.weight_decay  # coupled L2, not Keras' decoupled decay
    assert isinstance(adam, keras.optimizers.Adam) and adam.beta_1 == pytest.approx(0.9) and not adam.weight_decay


@pytest.mark.slow
def test_weight_decay_shrinks_kernels_only(scripted):
    """One step with zero loss gradients (and no velocity yet): coupled L2 through Nesterov
    momentum multiplies every kernel by 1 - (1 + m) * lr * decay and leaves batch-norm scales and
    offsets (CA's nested one too) and every bias (heads, attention) as they were."""
    trainer = scripted[0]
    variables = trainer.model.trainable_variables
    before = [v.numpy() for v in variables]
    trainer.optimizer.learning_rate = 0.5
    trainer.optimizer.apply_gradients([(np.zeros(v.shape, np.float32), v) for v in variables])
    kinds = set()
    for variable, old in zip(variables, before, strict=True):
        kind = variable.path.rsplit("/", 1)[-1]
        kinds.add(kind)
        if kind == "kernel":
            expected = old * (1 - (1 + 0.937) * 0.5 * 0.1)
            np.testing.assert_allclose(variable.numpy(), expected, rtol=1e-5, atol=1e-8, err_msg=variable.path)
        else:
            np.testing.assert_array_equal(variable.numpy(), old, err_msg=variable.path)
    assert {"kernel", "bias", "gamma", "beta"} <= kinds


@pytest.mark.slow
def test_mosaic_is_off_after_the_mosaic_ratio_of_the_epochs(scripted, monkeypatch):
    trainer = scripted[0]  # 2 epochs, --mosaic-ratio 0.5: mosaic in the first only
    data = trainer.train_data
    asked, real = [], data.dataset

    def recording(*args, **kwargs):
        asked.append((kwargs["epoch"], kwargs["mosaic"]))
        return real(*args, **kwargs)

    monkeypatch.setattr(data, "dataset", recording)
    for epoch in range(2):
        trainer.train_batches(epoch)
    assert asked == [(0, True), (1, False)]


def test_take_batches_never_asks_for_the_batch_after_the_last():
    import tensorflow as tf

    from utils.training.trainer import take_batches

    def checked(x):  # the fourth element fails when it is asked for
        with tf.control_dependencies([tf.debugging.assert_less(x, tf.constant(3, tf.int64))]):
            return tf.identity(x)

    dataset = tf.data.Dataset.range(10).map(checked)
    with pytest.raises(tf.errors.InvalidArgumentError):
        list(dataset)
    assert [int(x) for x in take_batches(dataset, 3)] == [0, 1, 2]
    assert [int(x) for x in take_batches(dataset.take(2), 3)] == [0, 1]  # a shorter data set ends it


@pytest.mark.slow
def test_val_loss_does_not_depend_on_the_phase(tmp_path):
    """The frozen phase trains with its own batch size; the val loss is the same mean per image."""
    from utils.data.demo import write_demo_dataset
    from utils.training.config import TrainConfig
    from utils.training.trainer import Trainer

    data = write_demo_dataset(tmp_path / "data", splits={"train": 4, "val": 4}, image_size=64, seed=3)
    config = TrainConfig(
        data=str(data), classes=str(data / "classes.txt"), input_size="64", epochs=2, freeze_epochs=1,
        batch_size=2, freeze_batch_size=4, save_dir=str(tmp_path / "run"),
    )  # fmt: skip
    trainer = Trainer(config)
    trainer.setup()
    frozen, unfrozen = trainer.validate(0)["val_loss"], trainer.validate(1)["val_loss"]  # no step between
    assert trainer._phase == (False, 2) and frozen == pytest.approx(unfrozen, rel=1e-6)


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


@contextmanager
def logged_lines(name: str):
    """The messages the logger `name` (and those under it) logs meanwhile, INFO and up, in a list."""
    lines = []

    class Lines(logging.Handler):
        def emit(self, record):
            lines.append(record.getMessage())

    logger, handler = logging.getLogger(name), Lines(logging.INFO)
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield lines
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


class Clocked(Trainer):
    """A Trainer whose epochs train nothing and take the time they are told, on a fake clock.

    train_epoch(e) enters the epoch's phase (its schedule; no step runs), marks the model (the P5
    head's bias = e + 1), reports the rate the schedule gives at the epoch's start and advances the
    clock by epoch_seconds(e) in FAKE_STEPS steps (of them the share --time plans, and it stops them
    as the real steps do when the budget is spent); evaluate_maps() advances it by eval_seconds(e) and returns maps[e];
    there is no val loss. validate(), the --time fit, --patience and the callbacks are the real ones.
    """

    FAKE_STEPS = 10

    def __init__(self, config, epoch_seconds, eval_seconds=lambda epoch: 0.0, maps=None, callbacks=()):
        self.fake = FakeClock()
        self.lines = []  # what run() logged (INFO and up)
        super().__init__(config, callbacks=callbacks, clock=self.fake)
        self.epoch_seconds, self.eval_seconds, self.maps = epoch_seconds, eval_seconds, maps or {}
        self.current = None

    def run(self):
        with logged_lines("yolov4_tiny.training") as self.lines:
            return super().run()

    def train_epoch(self, epoch):
        self.current = epoch
        self.train_batches(epoch)
        bias = self.model.get_layer("conv_29").bias
        bias.assign(np.full(bias.shape, epoch + 1.0, np.float32))
        steps = self.FAKE_STEPS
        planned = max(1, int(steps * self.epoch_fraction(epoch)))  # --time's last epoch: a share
        for step in range(planned):
            self.fake.now += self.epoch_seconds(epoch) / steps
            if self._out_of_time(epoch, step + 1, planned):
                break
        return {"loss": 1.0, "box_loss": 0.3, "obj_loss": 0.3, "cls_loss": 0.4, "lr": self.lr_schedule(epoch),
                "batch_size": 2, "steps": 2, "seconds": 1.0, "images_per_second": 4.0}  # fmt: skip

    def val_loss(self, epoch):
        return None

    def evaluate_maps(self):
        self.fake.now += self.eval_seconds(self.current)
        value = self.maps.get(self.current, 0.0)
        return {"val_map50": value, "val_map50_95": value / 2}


class Counts(Callback):
    """Per epoch: the trainer's epoch count and --time's plan when the epoch ended, and the fake clock then; a copy
    of the output folder after epoch `copy_after` (what a kill then leaves)."""

    def __init__(self, copy_after=None, copy_to=None):
        self.copy_after, self.copy_to = copy_after, copy_to
        self.epochs, self.planned, self.times, self.ended = [], [], [], False

    def on_epoch_end(self, trainer, epoch, logs):
        self.epochs.append(trainer.epochs)
        self.planned.append(trainer.budget.fitted if trainer.budget else None)
        self.times.append(trainer.clock())
        if epoch + 1 == self.copy_after:
            import shutil

            shutil.copytree(trainer.save_dir, self.copy_to)

    def on_train_end(self, trainer):
        self.ended = True


@pytest.fixture(scope="module")
def clocked_data(tmp_path_factory):
    return write_demo_dataset(tmp_path_factory.mktemp("clocked"), splits={"train": 4, "val": 2}, image_size=64, seed=0)


def _clocked_config(data, save_dir, **settings):
    # No weight average: the epochs train nothing, so the saved model is the marked one.
    return TrainConfig(
        data=str(data), classes=str(data / "classes.txt"), input_size="64", batch_size=2, save_period=0,
        ema=False, save_dir=str(save_dir), **settings,
    )  # fmt: skip


def _rows(save_dir):
    from utils.training.callbacks import read_results

    return read_results(save_dir / "results.csv")


@pytest.mark.slow
def test_patience_stops_after_that_many_evaluations_without_improvement(clocked_data, tmp_path):
    """--eval-period 2 --patience 2: the best mAP after epoch 2, no better after epochs 4 and 6, so
    the run stops after epoch 6 of 10 (epochs, not evaluations, would have stopped it after 4),
    ends cleanly and keeps epoch 2 as best.keras."""
    counts = Counts()
    maps = {1: 0.5, 3: 0.4, 5: 0.45, 7: 0.9, 9: 0.95}
    config = _clocked_config(clocked_data, tmp_path / "run", epochs=10, eval_period=2, patience=2)
    trainer = Clocked(config, epoch_seconds=lambda e: 1.0, maps=maps, callbacks=[counts])
    summary = trainer.run()
    assert summary["epochs"] == 6 and len(counts.epochs) == 6 and counts.ended
    assert "early stop after epoch 6" in summary["stop_reason"] and "--patience 2" in summary["stop_reason"]
    assert summary["stop_reason"] in trainer.lines
    assert _best_epoch(trainer.save_dir) == 2
    history = json.loads((trainer.save_dir / "history.json").read_text())
    assert len(history["loss"]) == 6 and history["map_epochs"] == [2, 4, 6]
    assert [row["map50"] for row in _rows(trainer.save_dir)] == ["", "0.5", "", "0.4", "", "0.45"]
    assert (trainer.save_dir / "loss.png").is_file() and (trainer.save_dir / "last.keras").is_file()
    # Without --patience the same run goes on to the end.
    full = Clocked(_clocked_config(clocked_data, tmp_path / "full", epochs=10, eval_period=2), lambda e: 1.0, maps=maps)
    assert full.run()["epochs"] == 10 and full.stop_reason is None


def _seconds(epoch):  # 30 s with tracing, then 20 s; from epoch 6 on 35 s
    return 30.0 if epoch == 0 else 20.0 if epoch < 5 else 35.0


def _eval_seconds(epoch):  # the first evaluation traces the detector
    return 10.0 if epoch == 0 else 5.0


@pytest.fixture(scope="module")
def timed_run(clocked_data, tmp_path_factory):
    """--time 5 (300 s), --eval-period 3 on the clock of _seconds and _eval_seconds, with a copy of
    the output folder after epoch 7: (trainer, summary, Counts)."""
    tmp = tmp_path_factory.mktemp("timed")
    counts = Counts(copy_after=7, copy_to=tmp / "after_7")
    config = _clocked_config(clocked_data, tmp / "run", time=5.0, eval_period=3)
    trainer = Clocked(config, _seconds, _eval_seconds, maps={e: 0.1 * e for e in range(20)}, callbacks=[counts])
    return trainer, trainer.run(), counts


@pytest.mark.slow
def test_time_plans_the_run_up_and_down_and_ends_on_the_budget(timed_run):
    """The plan after each epoch (utils/training/budget.py has the arithmetic): 8.67 epochs after the
    first (30 s with tracing), 12 then 12.75 once epochs take 20 s, down to 11, 10 and 9.57 once they
    take 35 s; the tenth epoch trains 5 of its 10 steps (0.57 of them, rounded down), so the run
    ends at 297.5 s of 300, evaluated."""
    trainer, summary, counts = timed_run
    last = 9 + 4 / 7
    assert counts.planned == pytest.approx([8 + 2 / 3, 12, 12.75, 12.75, 12.75, 11, 10, last, last, last])
    assert counts.epochs == [9, 12, 13, 13, 13, 11, 10, 10, 10, 10]
    assert counts.times == [40.0, 60.0, 85.0, 105.0, 125.0, 165.0, 200.0, 235.0, 275.0, 297.5]
    assert 0.97 * 300 <= counts.times[-1] <= 300  # within 3% of the budget, its last evaluation included
    assert summary["epochs"] == 10 and "--time 5 min: 9.57 epochs fitted" in summary["stop_reason"]
    assert any(line.startswith("--time 5 min: 8.67 epochs (was 300;") for line in trainer.lines)
    assert any(line.startswith("--time 5 min: 12.75 epochs (was 12;") for line in trainer.lines)  # up
    rows = _rows(trainer.save_dir)
    assert [row["epoch"] for row in rows] == [str(e) for e in range(1, 11)]
    # Evaluated: epoch 1 (to measure it), every third, and the last.
    assert [row["epoch"] for row in rows if row["map50"]] == ["1", "3", "6", "9", "10"]
    assert [float(row["epoch_seconds"]) for row in rows] == [40, 20, 25, 20, 20, 40, 35, 35, 40, 22.5]


@pytest.mark.slow
def test_time_fits_the_learning_rate_schedule_to_the_plan(timed_run):
    """Each epoch's rate comes from a schedule over the plan made before it (SGD's 0.01 at batch 64
    is 5e-4 at batch 2, SGD's floor). Before the first plan, the default --epochs 300 (3 warm-up
    epochs, a 15-epoch flat tail); a plan of E epochs (fractional) keeps the tail's share (15 / 300)
    and warms up for at most 5% of it, at least 1 epoch, so that the short run anneals."""
    from utils.training.lr_schedule import LRSchedule

    def schedule(total):
        if total == 300:
            return LRSchedule(5e-4, 5e-6, 300, "cos", warmup_epochs=3.0, flat_epochs=15.0)
        return LRSchedule(5e-4, 5e-6, total, "cos", warmup_epochs=1.0, flat_epochs=15.0 * total / 300)

    trainer, _, counts = timed_run
    totals = [300, *counts.planned[:-1]]  # the plan when each epoch started
    expected = [schedule(total)(e) for e, total in enumerate(totals)]
    got = [float(row["lr"]) for row in _rows(trainer.save_dir)]
    assert got == pytest.approx(expected, rel=1e-5)
    for other in (300, 12):  # epoch 9's rate is that of the 9.57-epoch plan, not of the first or second
        assert expected[8] != pytest.approx(schedule(other)(8), rel=1e-3)


@pytest.mark.slow
def test_time_resumes_with_the_plan(timed_run, clocked_data):
    """Resuming the folder a kill after epoch 7 left (plan 10 epochs, 200 s used) on a new clock that
    starts at 0: epochs 8 on, no row twice, the first seven rows kept, ending within the budget. The
    resumed process's first epoch is timed apart (tracing), so its plan may differ from the run's."""
    trainer, _, counts = timed_run
    resumed_dir = counts.copy_to
    meta = json.loads(str(np.load(resumed_dir / "checkpoint.npz")["meta"]))
    assert meta["state"]["time_budget"]["fitted"] == 10 and meta["state"]["time_budget"]["used"] == 200.0
    assert len(_rows(resumed_dir)) == 7
    again = Counts()
    config = _clocked_config(clocked_data, resumed_dir, time=5.0, eval_period=3, resume=True)
    resumed = Clocked(config, _seconds, _eval_seconds, maps={e: 0.1 * e for e in range(20)}, callbacks=[again])
    summary = resumed.run()
    assert again.epochs[0] == 10 and summary["epochs"] == len(_rows(resumed_dir))
    rows = _rows(resumed_dir)
    assert rows[:7] == _rows(trainer.save_dir)[:7]
    assert [row["epoch"] for row in rows] == [str(e) for e in range(1, len(rows) + 1)]
    assert 0.97 * 300 <= 200 + again.times[-1] <= 300


@pytest.mark.slow
def test_time_stops_an_epoch_slower_than_planned_and_evaluates_it(clocked_data, tmp_path):
    """--time 1.4 (84 s): after epoch 1 (40 s) a whole second epoch of 30 s fits with its evaluation;
    it takes 60 s instead, so its steps stop when only its evaluation's time is left (after 6 of 10,
    at 76 s); it is the last, and evaluated (though epoch 2 is not due one) by 81 s."""
    counts = Counts()
    config = _clocked_config(clocked_data, tmp_path / "run", time=1.4, eval_period=3)
    trainer = Clocked(config, lambda e: 30.0 if e == 0 else 60.0, _eval_seconds, maps={0: 0.2, 1: 0.3},
                      callbacks=[counts])  # fmt: skip
    summary = trainer.run()
    assert counts.epochs == [2, 2] and counts.times == [40.0, 81.0]
    assert any(line.startswith("--time 1.4 min: epoch 2 stopped after 6 of 10 steps") for line in trainer.lines)
    assert summary["epochs"] == 2 and summary["final_map50"] == 0.3
    assert [row["map50"] for row in _rows(trainer.save_dir)] == ["0.2", "0.3"]


@pytest.mark.slow
def test_heads_that_do_not_load_get_the_priors_of_a_fresh_model(tmp_path):
    """--weights with another class count: the heads keep their initialisation, and get the
    objectness and class priors a fresh model gets, not a zero bias (objectness 0.5 in every cell:
    about 450 per 224x224 image, 1,550 per 416x416, against about 30 with the prior)."""
    import keras
    import tensorflow as tf

    from nets.yolo import YoloV4Tiny
    from utils.training.loss import YoloLoss
    from utils.training.trainer import init_head_biases

    size = 224
    keras.utils.set_random_seed(1)
    source = tmp_path / "two_classes.keras"
    YoloV4Tiny(2, input_shape=(size, size, 3)).save(source)
    image = tf.random.stateless_uniform((1, size, size, 3), seed=(0, 1))
    no_objects = tf.fill((1, 1, 5), -1.0)

    def objectness(model):
        loss = YoloLoss(model.anchors, model.anchors_mask, model.num_classes, normalization="sum")
        return float(loss(model(image), no_objects)[1]["obj"][0])

    fresh = YoloV4Tiny(3, input_shape=(size, size, 3))
    init_head_biases(fresh, (size, size))
    trainer = Trainer(TrainConfig(input_size=str(size), save_dir=str(tmp_path / "run")))
    trainer.model, trainer.input_hw = YoloV4Tiny(3, input_shape=(size, size, 3)), (size, size)
    before = objectness(trainer.model)  # zero head biases, as a failed load left them
    trainer._load_initial_weights(str(source))
    loaded, expected = objectness(trainer.model), objectness(fresh)
    assert before > 300 and expected < 60
    assert loaded == pytest.approx(expected, rel=0.5)


class _TwoReplicas:
    """What setup() asks of a strategy, with two replicas (batch-norm synchronisation switches on)."""

    num_replicas_in_sync = 2

    def scope(self):
        import tensorflow as tf

        return tf.distribute.get_strategy().scope()


class _TwoReplicaTrainer(Trainer):
    def _strategy(self):
        return _TwoReplicas()


def test_batch_norms_inside_coordinate_attention_are_synchronised_and_frozen(tmp_path):
    import tensorflow as tf

    from nets.attention import CoordAttention
    from utils.training.trainer import batch_norm_layers

    data = write_demo_dataset(tmp_path / "data", splits={"train": 4}, image_size=64, seed=0)
    config = TrainConfig(data=str(data), classes=str(data / "classes.txt"), input_size="64", phi=4, freeze_bn=True,
                         eval_period=0, save_dir=str(tmp_path / "run"))  # fmt: skip
    trainer = _TwoReplicaTrainer(config)
    trainer.setup()
    blocks = [layer for layer in trainer.model.layers if isinstance(layer, CoordAttention)]
    assert len(blocks) == 3
    nested = [block.bn for block in blocks]
    assert all(any(bn is layer for layer in trainer.bn_layers) for bn in nested)
    assert len(trainer.bn_layers) == 19 + 3 and batch_norm_layers(trainer.model) == trainer.bn_layers
    assert all(layer.synchronized for layer in trainer.bn_layers)  # the two-replica conversion reached them

    trainer._set_frozen(False)  # --freeze-bn: every batch norm fixed, the nested ones too
    trainable = {id(v) for v in trainer.model.trainable_variables}
    assert not any(id(v) in trainable for bn in nested for v in bn.weights)
    assert all(id(block.conv_h.kernel) in trainable for block in blocks)
    means = [bn.moving_mean.numpy() for bn in nested]
    trainer.model(tf.random.stateless_uniform((2, 64, 64, 3), seed=(1, 2)), training=True)
    for bn, mean in zip(nested, means, strict=True):
        np.testing.assert_array_equal(bn.moving_mean.numpy(), mean)  # statistics fixed too


class _ReplayDetector:
    """A detector that 'detects' every ground-truth object of the images it is given, in order;
    objects marked difficult with the higher score (so counting them as errors lowers the AP)."""

    def __init__(self, images):
        self.queue = list(images)

    def detect(self, batch):
        from utils.inference.detector import Detections

        found = []
        for _ in batch:
            item = self.queue.pop(0)
            scores = np.where(item.difficult, 0.9, 0.8).astype(np.float32)
            found.append(Detections(item.boxes.astype(np.float32), scores, item.class_ids.astype(np.int32)))
        return found


def test_val_map_ignores_detections_on_difficult_objects_as_get_map_does(tmp_path):
    from types import SimpleNamespace

    from utils.evaluation.metrics import GroundTruth, evaluate_detections
    from utils.evaluation.voc_eval import EvaluationLog, evaluate_split, load_voc_split

    root = write_demo_dataset(tmp_path / "voc", splits={"train": 4, "val": 3}, image_size=64, seed=0)
    xml = root / "Annotations" / "000004.xml"  # the first val image
    xml.write_text(xml.read_text().replace("<difficult>0</difficult>", "<difficult>1</difficult>", 1))
    names = (root / "classes.txt").read_text().split()
    config = TrainConfig(data=str(root), classes=str(root / "classes.txt"), input_size="64", save_dir=str(tmp_path))
    _, val = load_split(resolve_config(config), names)
    assert sum(int(image.difficult.sum()) for image in val) == 1  # kept, flagged

    trainer = Trainer(config)
    trainer.val_images, trainer.model = val, SimpleNamespace(num_classes=3)
    trainer._detector = _ReplayDetector(val)
    ours = trainer.evaluate()

    split = load_voc_split(root, "val", names, EvaluationLog(), progress=False)
    detections = {image.image_id: det for image, det in zip(val, _ReplayDetector(val).detect(val), strict=True)}
    get_map = evaluate_split(split, detections, names, EvaluationLog(), source={}, score_threshold=0.0).result.map
    assert ours == pytest.approx(get_map) == pytest.approx(1.0)
    # Counting the detection on the difficult object as an error (the old val mAP) is lower.
    plain = {image.image_id: GroundTruth(image.boxes[~image.difficult], image.class_ids[~image.difficult])
             for image in val}  # fmt: skip
    assert evaluate_detections(detections, plain, 3).map < 0.99


def test_several_data_folders_train_together(tmp_path, capsys):
    """--data A --data B: the training (and validation) images of both, one class list."""
    first = write_demo_dataset(tmp_path / "a", splits={"train": 4, "val": 2}, image_size=64, seed=0)
    second = write_demo_dataset(tmp_path / "b", splits={"train": 3}, image_size=64, seed=1)
    config = _parse(["--data", str(first), "--data", str(second), "--classes", str(first / "classes.txt")])
    assert config.data == [str(first), str(second)]
    assert _parse(["--data", str(first)]).data == str(first)  # one --data stays a path
    names = (first / "classes.txt").read_text().split()
    train, val = load_split(resolve_config(config), names)
    assert len(train) == 4 + 3 and len(val) == 2
    assert {str(first), str(second)} == {str(Path(image.path).parents[1]) for image in train}
    assert len({image.image_id for image in train}) == 7  # the same ids in both folders stay apart


def test_the_last_epochs_run_at_the_final_rate(tmp_path):
    config = TrainConfig(epochs=40, lr=1e-2, save_dir=str(tmp_path))  # 5% of 40: the last 2 epochs
    trainer = Trainer(config)
    schedule = trainer._schedule(64)
    assert trainer.config.min_lr_epochs == 2 and schedule.flat_epochs == 2
    assert schedule(37.9) > schedule.min_lr * 1.001
    assert schedule(38.0) == schedule(39.99) == pytest.approx(1e-4)
