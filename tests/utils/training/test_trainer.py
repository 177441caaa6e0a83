import argparse

import pytest

from utils.training.checkpoint import atomic_write
from utils.training.config import DEMO_PRESET, add_arguments, config_from_args, parse_input_size, resolve_config
from utils.training.trainer import backbone_layer_names


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

    data = write_demo_dataset(tmp_path / "data", splits={"train": 2}, image_size=64)
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
    """A user callback: records the events, on every worker (no chief_only)."""

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


@pytest.mark.slow
def test_the_lifecycle_and_its_callbacks(tmp_path):
    from utils.data.demo import write_demo_dataset
    from utils.training.config import TrainConfig
    from utils.training.trainer import Trainer

    data = write_demo_dataset(tmp_path / "data", splits={"train": 4, "val": 2}, image_size=64, seed=3)
    config = TrainConfig(
        data=str(data), classes=str(data / "classes.txt"), input_size="64", epochs=2, batch_size=2,
        steps_per_epoch=1, eval_period=2, save_period=0, save_dir=str(tmp_path / "run"),
    )  # fmt: skip
    recorder = Recorder()
    summary = Trainer(config, log=print, callbacks=[recorder]).run()
    assert [e[0] for e in recorder.events] == ["start", "epoch", "epoch", "end"]
    (_, start), (_, epoch0, logs0), (_, epoch1, logs1) = recorder.events[:3]
    assert (start, epoch0, epoch1) == (0, 0, 1)
    train_keys = {"loss", "box_loss", "obj_loss", "cls_loss", "lr", "batch_size", "steps", "seconds"}
    assert train_keys | {"images_per_second", "val_loss", "fitness", "is_best"} <= set(logs0)
    assert logs0["steps"] == 1 and logs0["batch_size"] == 2 and logs0["images_per_second"] > 0
    assert logs0["val_loss"] is not None and "val_map50" not in logs0 and logs0["fitness"] is None
    assert 0.0 <= logs1["val_map50"] <= 1.0 and logs1["is_best"] and summary["final_map50"] == logs1["val_map50"]
    run = tmp_path / "run"
    for name in ("settings.json", "last.keras", "best.keras", "checkpoint.npz", "history.json", "loss.png", "map.png"):
        assert (run / name).is_file(), name


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
