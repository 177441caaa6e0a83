"""End-to-end runs of train.py on a tiny shapes set (64x64 input, a few images)."""

import json
import shutil

import keras
import numpy as np
import pytest

import train
from nets.yolo import YoloV4Tiny
from utils.data.demo import write_demo_dataset

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_demo_dataset(tmp_path_factory.mktemp("shapes"), splits={"train": 8, "val": 4}, image_size=64, seed=2)


def _argv(data, save_dir, *extra):
    return [
        "--phi", "3", "--data", str(data), "--classes", str(data / "classes.txt"), "--input-size", "64",
        "--batch-size", "4", "--freeze-batch-size", "4", "--save-dir", str(save_dir), "--eval-period", "1",
        "--save-period", "1", "--mosaic", "0.5", "--mixup", "0.5", "--seed", "1", *extra,
    ]  # fmt: skip


@pytest.fixture(scope="module")
def run_dir(data, tmp_path_factory):
    save_dir = tmp_path_factory.mktemp("run")
    assert train.main(_argv(data, save_dir, "--epochs", "2", "--freeze-epochs", "1")) == 0
    return save_dir


def test_a_run_writes_everything(run_dir):
    for name in ("settings.json", "last.keras", "best.keras", "checkpoint.npz", "loss.png", "map.png", "history.json"):
        assert (run_dir / name).is_file(), name
    assert len(list(run_dir.glob("ep00*.keras"))) == 2
    assert list((run_dir / "tensorboard").iterdir())
    settings = json.loads((run_dir / "settings.json").read_text())
    assert settings["freeze_epochs"] == 1 and settings["optimizer"] == "sgd" and settings["lr"] == 0.01
    assert settings["class_names"] == ["circle", "square", "triangle"] and settings["attention"] == "eca"
    history = json.loads((run_dir / "history.json").read_text())
    assert len(history["loss"]) == 2 and history["map_epochs"] == [1, 2]
    assert all(0.0 <= m <= 1.0 for m in history["map_values"])
    model = keras.saving.load_model(run_dir / "best.keras")
    assert isinstance(model, YoloV4Tiny) and model.class_names == ["circle", "square", "triangle"]
    assert model.image_shape == (64, 64, 3)


def test_the_frozen_epoch_leaves_the_backbone_alone(run_dir):
    keras.utils.set_random_seed(1)
    initial = YoloV4Tiny(3, attention="eca", input_shape=(64, 64, 3))
    [after_frozen] = run_dir.glob("ep001*.keras")
    frozen = keras.saving.load_model(after_frozen)
    last = keras.saving.load_model(run_dir / "last.keras")
    for name in ("conv_0", "bn_0", "conv_26", "bn_26"):
        for a, b in zip(initial.get_layer(name).get_weights(), frozen.get_layer(name).get_weights(), strict=True):
            np.testing.assert_array_equal(a, b)
    assert not np.array_equal(
        initial.get_layer("conv_27").get_weights()[0], frozen.get_layer("conv_27").get_weights()[0]
    )
    assert not np.array_equal(frozen.get_layer("conv_0").get_weights()[0], last.get_layer("conv_0").get_weights()[0])


def test_resume_continues_from_the_checkpoint(run_dir, data, tmp_path):
    resumed = tmp_path / "resumed"
    shutil.copytree(run_dir, resumed)
    assert train.main(_argv(data, resumed, "--epochs", "3", "--freeze-epochs", "1", "--resume")) == 0
    before = json.loads((run_dir / "history.json").read_text())
    after = json.loads((resumed / "history.json").read_text())
    assert after["loss"][:2] == before["loss"] and len(after["loss"]) == 3 and after["map_epochs"] == [1, 2, 3]
    with np.load(resumed / "checkpoint.npz") as checkpoint:
        assert json.loads(str(checkpoint["meta"]))["epochs_done"] == 3


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(run_dir, data, tmp_path, monkeypatch, capsys):
    from utils.training.loss import YoloLoss

    original = YoloLoss.__call__

    def nan_loss(self, outputs, gt):
        loss, parts = original(self, outputs, gt)
        return loss * float("nan"), parts

    monkeypatch.setattr(YoloLoss, "__call__", nan_loss)
    broken = tmp_path / "broken"
    shutil.copytree(run_dir, broken)
    kept = {name: (broken / name).read_bytes() for name in ("checkpoint.npz", "last.keras", "best.keras")}
    assert train.main(_argv(data, broken, "--epochs", "3", "--freeze-epochs", "1", "--resume")) == 3
    err = capsys.readouterr().err
    assert "loss became nan at epoch 3" in err and "checkpoint.npz" in err and "after epoch 2" in err
    for name, content in kept.items():
        assert (broken / name).read_bytes() == content, name


def test_bad_data_is_a_clear_error(tmp_path, capsys):
    assert train.main(["--data", str(tmp_path / "nowhere"), "--epochs", "1"]) == 2
    assert "nowhere" in capsys.readouterr().err
