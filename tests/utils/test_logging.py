"""The library reports through `logging` (the `yolov4_tiny` logger): silent in a program that has not
configured logging, delivered to a handler the program adds, printed by the scripts as -v/-q ask."""

from __future__ import annotations

import logging
import subprocess
import sys
import textwrap

import pytest

import get_map
from tests.conftest import ROOT
from tests.data_formats import write_voc
from utils.training.config import TrainConfig
from utils.training.trainer import class_names_for, load_split

# Anchors for 416 inputs are far too big for 64x64 boxes: load_split warns with the command that fits them.
BIG_ANCHORS = "200,200, 220,260, 260,220, 300,300, 340,380, 400,400\n"

# What a program embedding the library does: read data the trainer warns about, then load a .keras
# model whose ONNX export fails, so the loader falls back to TensorFlow with a warning.
EMBEDDING_PROGRAM = textwrap.dedent(
    """
    import sys
    from pathlib import Path

    from utils.cli import quiet_tensorflow

    quiet_tensorflow()  # TensorFlow's own start-up lines are not the library's

    from nets.yolo import YoloV4Tiny
    from utils.data.check import check_data, read_roles
    from utils.data.demo import write_demo_dataset
    from utils.data.sources import open_data
    from utils.inference.engine import loader
    from utils.interop import export
    from utils.training.config import TrainConfig
    from utils.training.trainer import class_names_for, load_split

    tmp = Path(sys.argv[1])
    root = write_demo_dataset(tmp / "data", splits={"train": 4, "val": 2}, image_size=64, seed=3)
    (tmp / "big.txt").write_text(sys.argv[2])
    config = TrainConfig(
        data=str(root), classes=str(root / "classes.txt"), input_size="64", anchors=str(tmp / "big.txt"),
        save_dir=str(tmp / "run"),
    )
    names = class_names_for(config)
    load_split(config, names)
    source = open_data(root)
    check_data(read_roles(source, {"train": None, "val": None}, names), names)

    YoloV4Tiny(2, class_names=["cat", "dog"]).save(tmp / "small.keras")

    def failing_export(*args, **kwargs):
        raise RuntimeError("tf2onnx could not convert it")

    loader.onnx_runtime_preferred = lambda: True
    export.export_model = failing_export
    detector = loader.load_detector(tmp / "small.keras", input_shape=(64, 64))
    assert detector.backend == "keras"
    """
)


@pytest.mark.slow
def test_an_embedding_program_that_configures_no_logging_sees_nothing(tmp_path):
    """Python's last-resort handler prints warnings on stderr when no handler is found: the
    library's NullHandler keeps its warnings (the poor anchors, the ONNX fallback) out of a
    program that did not ask for them. (A subprocess: pytest's own handlers would hide the difference.)"""
    run = subprocess.run(
        [sys.executable, "-c", EMBEDDING_PROGRAM, str(tmp_path), BIG_ANCHORS],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout == "" and run.stderr == ""


def _poor_anchor_config(tmp_path) -> TrainConfig:
    root = write_voc(tmp_path / "data")
    (tmp_path / "big.txt").write_text(BIG_ANCHORS)
    anchors, classes = str(tmp_path / "big.txt"), str(root / "classes.txt")
    return TrainConfig(data=str(root), classes=classes, input_size="64", anchors=anchors, save_dir=str(tmp_path / "r"))


def test_a_handler_on_the_library_logger_receives_its_messages(tmp_path):
    received = []

    class Collect(logging.Handler):
        def emit(self, record):
            received.append((record.name, record.levelname, record.getMessage()))

    library = logging.getLogger("yolov4_tiny")  # (tests/conftest.py restores it afterwards)
    library.addHandler(Collect())
    library.setLevel(logging.DEBUG)
    config = _poor_anchor_config(tmp_path)
    load_split(config, class_names_for(config))
    assert ("yolov4_tiny.training", "WARNING") in {(name, level) for name, level, _ in received}
    assert any("fit the training boxes poorly" in message for _, _, message in received)
    assert any(name == "yolov4_tiny.data" and level == "DEBUG" for name, level, _ in received)  # what was read


@pytest.fixture
def unknown_class_detections(tmp_path):
    """get_map.py's arguments: the val split of a VOC folder evaluated for two of its three classes
    (the birds skipped: notes, INFO lines), and detections naming a class the list does not have
    (a problem: a warning)."""
    import json

    root = write_voc(tmp_path / "data")
    detections = [
        {"image_id": "验证 5", "category_id": 0, "bbox": [8, 6, 32, 38], "score": 0.9},
        {"image_id": "验证 5", "category_id": 7, "bbox": [1, 1, 10, 10], "score": 0.9},
    ]
    path = tmp_path / "dets.json"
    path.write_text(json.dumps(detections), encoding="utf-8")
    classes = tmp_path / "classes.txt"
    classes.write_text("猫\n小 狗\n", encoding="utf-8")
    return ["--detections", str(path), "--data", str(root), "--split", "val", "--classes", str(classes),
            "--output", str(tmp_path / "out"), "--no-plots"]  # fmt: skip


def test_get_map_quiet_keeps_warnings_and_verbose_adds_debug_lines(unknown_class_detections, capsys):
    assert get_map.main(unknown_class_detections) == 1
    normal = capsys.readouterr()
    assert "note: " in normal.err and "warning: " in normal.err and "debug: " not in normal.err
    assert get_map.main([*unknown_class_detections, "-v"]) == 1
    verbose = capsys.readouterr().err
    assert "note: " in verbose and "debug: " in verbose and "set val: 2 images" in verbose  # utils.data.sources
    assert get_map.main([*unknown_class_detections, "--quiet"]) == 1
    quiet = capsys.readouterr()
    assert "warning: " in quiet.err and "note: " not in quiet.err and "debug: " not in quiet.err
    assert "mAP@0.5" in quiet.out  # the results are what the script prints, whatever the verbosity
