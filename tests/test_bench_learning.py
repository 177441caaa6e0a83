"""benchmarks/bench_learning.py: the skip path without ultralytics, the tables and ratios, and ours
alone end to end on tiny data.

The peers' side needs the ultralytics venv (about 6 GB, torch), which tests do not install; its
path is run by hand (docs/benchmarks.md, "Learning vs YOLOv8n")."""

import json

import pytest

from benchmarks import bench_learning
from utils.defaults import MOSAIC_PROB


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


@pytest.mark.parametrize("variant", ["--mixup 0", "name=", "bad name=--mixup 0", 'q=--ours-args "unclosed'])
def test_a_variant_is_name_equals_flags(variant, capsys):
    with pytest.raises(SystemExit):
        bench_learning.parse_args(["--variant", variant])
    err = capsys.readouterr().err
    assert "NAME=FLAGS" in err or "No closing quotation" in err


def test_variant_names_must_differ(capsys):
    with pytest.raises(SystemExit):
        bench_learning.parse_args(["--variant", "a=--mixup 0", "--variant", "a=--mosaic 0"])
    assert "--variant names must differ" in capsys.readouterr().err


def test_input_size_must_be_a_multiple_of_32():
    with pytest.raises(SystemExit):
        bench_learning.main(["--input-size", "100", "--skip-ultralytics"])


@pytest.mark.slow
def test_ours_alone_end_to_end(tmp_path, capsys):
    """Generated data per seed, training with --time, get_map.py on the test split, the tables,
    results.json and the learning curves."""
    out = tmp_path / "out"
    argv = ["--skip-ultralytics", "--phis", "0", "--budgets", "0.5", "--seeds", "3", "--input-size", "64"]
    argv += ["--output", str(out), "--train-images", "16", "--val-images", "2", "--test-images", "3"]
    argv += ["--ours-args", "--batch-size 4 --eval-period 1", "--variant", "nomosaic=--mosaic 0"]
    assert bench_learning.main(argv) == 0
    printed = capsys.readouterr().out
    assert "| ours phi 0 |" in printed and "| ours phi 0 nomosaic |" in printed and "### 0.5 min, seed 3" in printed
    results = json.loads((out / "results.json").read_text())
    [cell] = results["cells"]
    row, variant = cell["rows"]
    # A variant trains with --ours-args and its own flags, in a folder of its own.
    assert variant["model"] == "ours phi 0 nomosaic" and variant["flags"] == "--mosaic 0"
    settings = json.loads((out / "b0.5_s3" / "phi0-nomosaic" / "settings.json").read_text())
    assert settings["mosaic"] == 0.0 and settings["batch_size"] == 4
    assert json.loads((out / "b0.5_s3" / "phi0" / "settings.json").read_text())["mosaic"] == MOSAIC_PROB
    assert (cell["budget"], cell["seed"]) == (0.5, 3) and row["model"] == "ours phi 0" and row["epochs"] >= 1
    assert 0.0 <= row["map50"] <= 1.0 and 0.0 <= row["ap"] <= 1.0
    assert cell["data_sets"]["test"]["images"] == 3 and cell["data"].endswith("data_objects_s3")
    assert [c["epoch"] for c in row["curve"]] == list(range(1, row["epochs"] + 1))  # evaluated every epoch
    assert (out / "results.md").read_text().count("| ours phi 0 |") == 2  # the cell's table and the medians
    assert (out / "b0.5_s3" / "phi0" / "map" / "results.json").is_file()
    assert (out / "learning_curves.png").stat().st_size > 0


def _row(model, map50, ap, epochs=10):
    return {"model": model, "epochs": epochs, "train_wall_s": 900.0, "map50": map50, "ap": ap, "ap75": None,
            "network_attempts": []}  # fmt: skip


def test_ratios_against_each_peer_and_none_against_one_too_early():
    """Ours / each peer per cell; no ratio against a peer below 0.30 mAP@0.5 (it has not learned
    yet: a ratio would say who starts first), said in the summary."""
    rows = [_row("YOLOv8n", 0.5, 0.25), _row("YOLO26n", 0.08, 0.03), _row("ours phi 4", 0.6, 0.2)]
    bench_learning.ratios(rows)
    vs = rows[2]["vs"]
    assert vs["YOLOv8n"] == {"map50": pytest.approx(1.2), "ap": pytest.approx(0.8)} and vs["YOLO26n"] is None
    text = bench_learning.summary([{"budget": 15.0, "seed": 0, "rows": rows}])
    assert "| ours phi 4 | 10 | 15.0 | 0.6000 | 0.2000 | n/a | 1.20x | 0.80x | too early | too early |" in text
    assert "YOLO26n reached mAP@0.5 0.080 < 0.3: the budget is too short" in text
    assert "| 15 | ours phi 4 | 1 | 10.0 | 0.6000 | 0.2000 | n/a | YOLO26n: too early; YOLOv8n: 1.20x, 0.80x |" in text


def test_medians_over_the_seeds_of_the_figures_and_of_the_ratios():
    cells = []
    for seed, (ours, peer) in enumerate([(0.4, 0.5), (0.6, 0.4), (0.3, 0.3)]):
        rows = [_row("YOLOv8n", peer, peer / 2), _row("ours phi 4", ours, ours / 2, epochs=8 + seed)]
        bench_learning.ratios(rows)
        cells.append({"budget": 15.0, "seed": seed, "rows": rows})
    [peer, ours] = bench_learning.medians(cells)
    assert peer["map50"] == 0.4 and ours["map50"] == 0.4 and ours["epochs"] == 9
    assert ours["vs"]["YOLOv8n"]["map50"] == pytest.approx(1.0)  # the median of 0.8, 1.5 and 1.0
    cells[0]["rows"][0]["map50"] = 0.05  # one seed too early: no median ratio
    for cell in cells:
        bench_learning.ratios(cell["rows"])
    assert bench_learning.medians(cells)[1]["vs"]["YOLOv8n"] is None


def test_jobs_split_the_cores_into_disjoint_slots():
    import os

    slots = bench_learning.core_slots(1)
    assert slots.get() is None  # one at a time, on every core
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) >= 2:
        queue = bench_learning.core_slots(2)
        first, second = queue.get(), queue.get()
        assert first and second and not first & second and first | second == set(cores)
    with pytest.raises(SystemExit):
        bench_learning.core_slots(len(cores) + 1)


def test_a_pinned_run_sees_only_its_cores_and_one_thread_pool_each(tmp_path):
    import os
    import sys

    core = min(os.sched_getaffinity(0))
    probe = (
        "import os; e = os.environ; "
        "print(sorted(os.sched_getaffinity(0)), e['OMP_NUM_THREADS'], e['TF_NUM_INTRAOP_THREADS'])"
    )
    code, _ = bench_learning.run_logged([sys.executable, "-c", probe], tmp_path / "log", "probe", None,
                                        cores=frozenset({core}))  # fmt: skip
    assert code == 0
    assert (tmp_path / "log").read_text().splitlines()[-1] == f"[{core}] 1 1"
