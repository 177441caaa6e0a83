"""benchmarks/bench_learning.py: the skip path without ultralytics (fast), and ours alone end to end on tiny data.

The YOLOv8n side needs the ultralytics venv (about 6 GB, torch), which tests do not install; its
path is run by hand (README, "Learning vs YOLOv8n")."""

import json

import pytest

from benchmarks import bench_learning


def test_without_ultralytics_it_says_how_to_get_it_and_exits_0(tmp_path, capsys):
    out, python = tmp_path / "out", tmp_path / "no-venv" / "bin" / "python"
    code = bench_learning.main(["--ultralytics-python", str(python), "--output", str(out)])
    printed = capsys.readouterr().out
    assert code == 0
    assert "ultralytics not found" in printed and "no Python at" in printed
    assert bench_learning.CREATE_VENV in printed and "--skip-ultralytics" in printed
    assert not out.exists()  # nothing generated or trained


def test_a_python_without_ultralytics_is_skipped_too(tmp_path, capsys):
    import sys

    code = bench_learning.main(["--ultralytics-python", sys.executable, "--output", str(tmp_path / "out")])
    printed = capsys.readouterr().out
    assert code == 0 and "cannot run ultralytics" in printed and "No module named" in printed


def test_input_size_must_be_a_multiple_of_32():
    with pytest.raises(SystemExit):
        bench_learning.main(["--input-size", "100", "--skip-ultralytics"])


@pytest.mark.slow
def test_ours_alone_end_to_end(tmp_path, capsys):
    """Generated data, training with --time,
    get_map.py on the test split, the table and results.json."""
    out = tmp_path / "out"
    argv = ["--skip-ultralytics", "--phis", "0", "--budget", "0.5", "--input-size", "64", "--output", str(out)]
    argv += ["--train-images", "16", "--val-images", "2", "--test-images", "3", "--ours-args", "--batch-size 4"]
    assert bench_learning.main(argv) == 0
    printed = capsys.readouterr().out
    assert "| ours phi 0 |" in printed
    results = json.loads((out / "results.json").read_text())
    [row] = results["rows"]
    assert row["model"] == "ours phi 0" and row["epochs"] >= 1
    assert 0.0 <= row["map50"] <= 1.0 and 0.0 <= row["ap"] <= 1.0
    assert results["data_sets"]["test"]["images"] == 3
    assert (out / "results.md").read_text().count("| ours phi 0 |") == 1
    assert (out / "phi0" / "map" / "results.json").is_file()


def test_summary_table_and_ratios():
    rows = [
        {"model": "YOLOv8n (ultralytics)", "epochs": 30, "train_wall_s": 930.0, "map50": 0.5, "ap": 0.25, "ap75": 0.2,
         "network_attempts": []},
        {"model": "ours phi 0", "epochs": 9, "train_wall_s": 900.0, "map50": 0.6, "ap": 0.2, "ap75": None},
    ]  # fmt: skip
    bench_learning.ratios(rows)
    assert rows[1]["map50_ratio"] == pytest.approx(1.2) and rows[1]["ap_ratio"] == pytest.approx(0.8)
    text = bench_learning.summary(rows)
    assert "| ours phi 0 | 9 | 15.0 | 0.6000 | 0.2000 | n/a | 1.20x | 0.80x |" in text
    assert "| YOLOv8n (ultralytics) | 30 | 15.5 | 0.5000 | 0.2500 | 0.2000 | n/a | n/a |" in text
    assert "ours phi 0 / YOLOv8n: mAP@0.5 1.20x, AP@[.5:.95] 0.80x\n" in text
    assert "network attempts refused: 0" in text
    rows[0]["map50"] = 0.0
    bench_learning.ratios(rows)
    assert rows[1]["map50_ratio"] is None and "(YOLOv8n scored 0)" in bench_learning.summary(rows)
