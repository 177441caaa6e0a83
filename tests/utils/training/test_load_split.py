"""The trainer's data: refused when a class has no usable object, warned about when the anchors fit poorly."""

import logging
import shlex

import pytest

import kmeans_for_anchors
import train
from tests.data_formats import CLASSES, write_voc, write_yolo
from utils.training.config import TrainConfig
from utils.training.trainer import TrainingDataError, class_names_for, load_split


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    base = tmp_path_factory.mktemp("split") / "数据 集"
    return write_voc(base / "voc"), write_yolo(base / "yolo")


def _classes(folder, names):
    path = folder / "类别 表.txt"
    path.write_text("".join(f"{n}\n" for n in names), "utf-8")
    return str(path)


def test_a_class_without_objects_or_no_objects_at_all_refuse_to_train(data, tmp_path, capsys):
    voc, _ = data
    config = TrainConfig(data=str(voc), classes=_classes(tmp_path, [*CLASSES, "未用"]), input_size="64")
    with pytest.raises(TrainingDataError, match="no usable object of class '未用'") as error:
        load_split(config, [*CLASSES, "未用"])
    assert error.value.exit_code == 2
    # A class list that does not match the data: no object at all, and the names the data has.
    config = TrainConfig(data=str(voc), classes=_classes(tmp_path, ["cat", "dog"]), input_size="64")
    with pytest.raises(TrainingDataError, match="no usable object in the 4 training images") as error:
        load_split(config, ["cat", "dog"])
    assert "'猫' (3)" in str(error.value) and "'小 狗' (1)" in str(error.value)
    # train.py says so and exits 2, before building a model.
    code = train.main(["--data", str(voc), "--classes", config.classes, "--input-size", "64", "--output",
                       str(tmp_path / "run")])  # fmt: skip
    assert code == 2 and "no usable object" in capsys.readouterr().err


def test_poorly_fitting_anchors_warn_with_the_command_that_fits_them(data, tmp_path, caplog, monkeypatch):
    _, yolo = data
    monkeypatch.chdir(tmp_path)  # kmeans_for_anchors.py writes its plot here
    big = tmp_path / "big anchors.txt"
    big.write_text("200,200, 220,260, 260,220, 300,300, 340,380, 400,400\n")  # for 416: far too big at 64
    config = TrainConfig(
        data=str(yolo), train_sets=["train", "val"], input_size="64", anchors=str(big), save_dir=str(tmp_path / "run")
    )
    names = class_names_for(config)
    assert names == CLASSES  # from data.yaml, no --classes
    with caplog.at_level(logging.WARNING, logger="yolov4_tiny"):
        train_images, val_images = load_split(config, names)
    assert len(train_images) == 6 and {i.image_id for i in val_images} == {"验证 5", "验证 6"}
    err = caplog.text
    assert "fit the training boxes poorly" in err and "at input 64x64" in err
    command = next(line.strip() for line in err.splitlines() if "kmeans_for_anchors.py" in line)
    argv = shlex.split(command)
    assert argv[:2] == ["python", "kmeans_for_anchors.py"] and str(yolo) in argv
    assert kmeans_for_anchors.main(argv[2:]) == 0
    fitted = TrainConfig(**{**config.to_dict(), "anchors": str(tmp_path / "run" / "anchors.txt")})
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="yolov4_tiny"):
        load_split(fitted, names)
    assert "poorly" not in caplog.text
