import argparse
import json

import numpy as np
import pytest

from utils.data.demo import write_demo_dataset
from utils.training.checkpoint import atomic_write
from utils.training.config import (
    DEMO_PRESET,
    TrainConfig,
    add_arguments,
    config_from_args,
    parse_input_size,
    resolve_config,
)
from utils.training.trainer import Trainer, backbone_layer_names, load_split


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


def test_flags_then_demo_preset_then_defaults():
    config = resolve_config(_parse(["--demo", "--epochs", "3"]))
    assert config.epochs == 3 and config.input_size == DEMO_PRESET["input_size"] and config.optimizer == "adam"
    assert config.lr == 4e-3 and config.weight_decay == 0.0
    plain = resolve_config(_parse(["--weights", "x.keras", "--optimizer", "sgd"]))
    assert plain.freeze_epochs == 50 and plain.lr == 1e-2 and plain.weight_decay == 5e-4
    assert plain.input_hw == (416, 416)
    assert plain.warmup_epochs == 3
    assert resolve_config(_parse([])).freeze_epochs == 0


def test_attention_by_phi_or_by_name():
    assert resolve_config(_parse([])).attention == "none"
    by_phi, by_name = resolve_config(_parse(["--phi", "4"])), resolve_config(_parse(["--attention", "ca"]))
    assert (by_phi.phi, by_phi.attention) == (by_name.phi, by_name.attention) == (4, "ca")
    with pytest.raises(ValueError, match="means 'se'"):
        resolve_config(_parse(["--phi", "1", "--attention", "ca"]))
    with pytest.raises(ValueError, match="expected one of"):
        resolve_config(_parse(["--attention", "transformer"]))


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

    trainer = Trainer(TrainConfig(weights=str(darknet_file), save_dir=str(tmp_path / "a"), **common), log=print)
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

    keras_file = tmp_path / "start.keras"
    trainer.model.save(keras_file)
    other = Trainer(TrainConfig(weights=str(keras_file), phi=4, save_dir=str(tmp_path / "b"), **common), log=print)
    other.setup()
    assert_same_layers(trainer.model, other.model, ("conv_0", "conv_29", "conv_36"))
    assert other.model.attention == "ca"


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
    from utils.training.callbacks import CheckpointWriter, HistoryWriter, Plots, TensorBoard
    from utils.training.config import TrainConfig
    from utils.training.trainer import Trainer

    recorder = Recorder()
    trainer = Trainer(TrainConfig(save_dir=str(tmp_path / "run")), callbacks=[recorder])
    assert [type(c) for c in trainer.callbacks] == [CheckpointWriter, HistoryWriter, Plots, TensorBoard, Recorder]
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
        super().__init__(config, log=lambda *_: None)
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
    common = dict(data=str(data), classes=str(data / "classes.txt"), input_size="64", epochs=2, save_period=0)
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
    assert type(sgd) is keras.optimizers.SGD and sgd.nesterov and sgd.momentum == pytest.approx(0.937)
    assert sgd.weight_decay == pytest.approx(0.1)
    assert type(adam) is keras.optimizers.Adam and adam.beta_1 == pytest.approx(0.9) and not adam.weight_decay


@pytest.mark.slow
def test_weight_decay_shrinks_kernels_only(scripted):
    """One step with zero gradients: decoupled decay multiplies every kernel by 1 - lr * decay and
    leaves batch-norm scales and offsets and every bias (heads, attention) as they were."""
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
            np.testing.assert_allclose(variable.numpy(), old * (1 - 0.5 * 0.1), rtol=1e-6, err_msg=variable.path)
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
    trainer = Trainer(config, log=lambda *a: None)
    trainer.setup()
    frozen, unfrozen = trainer.validate(0)["val_loss"], trainer.validate(1)["val_loss"]  # no step between
    assert trainer._phase == (False, 2) and frozen == pytest.approx(unfrozen, rel=1e-6)
