"""ablation.py: its options and what passes through to train.py; one real tiny study end to end."""

import json

import pytest

import ablation
from utils.data.demo import write_demo_dataset
from utils.evaluation.study import StudyError


def test_train_options_pass_through_and_the_eval_period_defaults_to_every_epoch():
    args, train_args, given, config = ablation.parse(
        ["--demo", "--seeds", "2", "--epochs", "3", "--input-size", "64", "--batch-size", "4", "--output", "x"]
    )
    assert (args.seeds, args.phis, args.jobs, str(args.output)) == (2, [0, 1, 2, 3, 4, 5], 1, "x")
    assert train_args == ["--demo", "--epochs", "3", "--input-size", "64", "--batch-size", "4", "--eval-period", "1"]
    assert given == {"demo": True, "epochs": 3, "input_size": "64", "batch_size": 4, "eval_period": 1}
    assert (config.data, config.input_hw, config.epochs) == ("demo_data", (64, 64), 3)  # the demo preset, then ours
    assert ablation.budget(config) == "3 epochs"
    _, train_args, _, _ = ablation.parse(["--data", "d", "--eval-period", "5"])
    assert train_args == ["--data", "d", "--eval-period", "5"]
    # Where the blocks go and the fusion are shared by every run of the study (phi 0's has no blocks).
    _, train_args, given, config = ablation.parse(["--data", "d", "--attention-at", "head_p5", "--fusion", "weighted"])
    assert train_args[:6] == ["--data", "d", "--attention-at", "head_p5", "--fusion", "weighted"]
    assert (config.attention_at, config.fusion) == ("head_p5", "weighted")


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--phi", "2"], "use --phis"),
        (["--attention", "ca"], "use --phis"),
        (["--seed", "4"], "--seeds N"),
        (["--resume"], "resumes"),
        (["--train-annotations", "a.txt"], "--data"),
        (["--save-dir", "logs"], None),  # an alias of the study's --output: allowed
    ],
)
def test_options_the_study_sets_per_run_are_refused(argv, message):
    if message is None:
        assert str(ablation.parse(argv)[0].output) == "logs"
        return
    with pytest.raises(StudyError, match=message):
        ablation.parse(["--demo", *argv])


def test_a_variant_is_checked_before_any_run():
    args, *_ = ablation.parse(["--demo", "--variant", "weighted=--phi 0 --fusion weighted"])
    assert args.variant == [("weighted", "--phi 0 --fusion weighted")]
    for variant, message in [
        ("phi2=--fusion weighted", "names phiN"),
        ("x=--seed 3", "--seed is not a variant's"),
        ("x=--data elsewhere", "--data for the whole study"),
        ("x=--attention nowhere_module:Block", "'nowhere_module' does not import"),
        ("x=--epochs 3", "--epochs for the whole study"),
        ("PHI1=--phi 2", "names phiN"),
        ("x=--no-such-flag", "--no-such-flag not train.py options"),
        ("x=--epochs many", "invalid int value"),
    ]:
        with pytest.raises(StudyError, match=message):
            ablation.parse(["--demo", "--variant", variant])


def test_several_data_sets_are_refused(tmp_path, capsys):
    argv = ["--data", "a", "--data", "b", "--epochs", "1", "--output", str(tmp_path / "study")]
    assert ablation.main(argv) == 2
    assert "give one --data" in capsys.readouterr().err
    assert not (tmp_path / "study").exists()


def test_unknown_options_and_a_time_budget_train_py_lacks_are_errors(capsys):
    with pytest.raises(SystemExit) as stop:
        ablation.parse(["--demo", "--epoch", "3"])  # not abbreviated to --epochs, not one of ours
    assert stop.value.code == 2 and "--epoch" in capsys.readouterr().err
    if not ablation.train_supports_time():
        assert ablation.main(["--demo", "--time", "3"]) == 2
        assert "--epochs" in capsys.readouterr().err


@pytest.mark.slow
def test_a_tiny_real_study_runs_then_a_rerun_skips_it(tmp_path, monkeypatch, capsys):
    """train.py and get_map.py for real (one block, one seed, one short epoch at 64x64), then again."""
    data = write_demo_dataset(tmp_path / "shapes", splits={"train": 8, "val": 4, "test": 4}, image_size=64, seed=4)
    out = tmp_path / "study"
    argv = ["--data", str(data), "--classes", str(data / "classes.txt"), "--input-size", "64", "--epochs", "1",
            "--batch-size", "4", "--steps-per-epoch", "1", "--phis", "3", "--seeds", "1", "--latency-runs", "2",
            "--output", str(out)]  # fmt: skip
    assert ablation.main(argv) == 0
    run = out / "runs" / "phi3_seed0"
    for name in ("settings.json", "history.json", "best.keras", "train.log", "eval/results.json", "result.json"):
        assert (run / name).is_file(), name
    settings = json.loads((run / "settings.json").read_text())
    assert (settings["phi"], settings["seed"], settings["eval_period"]) == (3, 0, 1)
    marker = json.loads((run / "result.json").read_text())
    assert 0 <= marker["map50"] <= 1 and 0 <= marker["map50_95"] <= 1 and marker["images_evaluated"] == 4
    table = json.loads((out / "table.json").read_text())
    [row] = table["rows"]
    assert row["key"] == "phi3" and row["params"] > 5_000_000 and row["latency_ms"]["cpu"] > 0
    for name in ("table.md", "table.csv", "map_vs_latency.png", "learning_curves.png"):
        assert (out / name).is_file(), name
    capsys.readouterr()
    assert ablation.main(argv) == 0  # everything finished: nothing trains again
    printed = capsys.readouterr()
    assert "1 runs (1 rows x 1 seeds)" in printed.err and ": 1 done" in printed.err  # the study's progress lines
    assert "training" not in printed.out + printed.err
