"""README's first command, `python train.py --phi 4 --demo`, end to end in a fresh folder: the demo
set is written once under demo_data/, the demo preset is what trains (flags given still win), and
the run's files land in logs/demo/. The epochs are cut to one short one; the full demo's mAP is
docs/benchmarks.md's measured figure, not a test's."""

import json

import pytest

import train
from utils.training.config import DEMO_PRESET

pytestmark = pytest.mark.slow


def test_demo_writes_its_data_once_and_trains_the_preset(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    quick = ["--epochs", "1", "--steps-per-epoch", "2", "--eval-period", "1"]

    assert train.main(["--phi", "4", "--demo", *quick]) == 0
    out = capsys.readouterr().out
    assert "writing the demo data set to demo_data/" in out
    assert "val mAP@0.5 = " in out
    classes = (tmp_path / "demo_data" / "classes.txt").read_text().split()
    assert classes == ["circle", "square", "triangle"]
    written = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "demo_data" / "JPEGImages").iterdir()}
    assert len(written) == sum(1 for _ in (tmp_path / "demo_data" / "Annotations").iterdir()) > 0

    run_dir = tmp_path / DEMO_PRESET["save_dir"]
    assert (run_dir / "best.keras").is_file() and (run_dir / "last.keras").is_file()
    settings = json.loads((run_dir / "settings.json").read_text())
    for key in ("input_size", "optimizer", "batch_size", "mosaic", "mixup", "mosaic_ratio", "data"):
        assert settings[key] == DEMO_PRESET[key], key
    assert settings["eval_period"] == 1 and settings["epochs"] == 1  # the flags given win over the preset
    assert settings["phi"] == 4

    # A second run reuses the data set as it is and honours another output folder.
    assert train.main(["--phi", "4", "--demo", *quick, "--output", "again"]) == 0
    assert "writing the demo data set" not in capsys.readouterr().out
    again = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "demo_data" / "JPEGImages").iterdir()}
    assert again == written
    assert (tmp_path / "again" / "best.keras").is_file()
