"""The study runner with its subprocesses mocked: which runs train, resume, only evaluate or are
skipped; what each command says; the GPUs --jobs hands out."""

import json
import logging
import os
import signal
import socket
import sys
import threading
import time
from pathlib import Path

import pytest

from utils.cli import run_script
from utils.evaluation.study import StudyError
from utils.training.ablation import (
    GET_MAP_SCRIPT,
    TRAIN_SCRIPT,
    StudyPlan,
    report_outcomes,
    run_logged,
    run_study,
    train_supports_time,
    visible_gpus,
)
from utils.training.config import TrainConfig
from utils.training.run_folder import FolderLock


def plan_for(output: Path, phis=(0, 1), seeds=(0, 1), epochs="2", variants=()) -> StudyPlan:
    return StudyPlan(
        output=output,
        phis=list(phis),
        seeds=list(seeds),
        train_args=["--demo", "--epochs", epochs],
        train_options={"demo": True, "epochs": int(epochs)},
        data="demo_data",
        split=None,
        input_hw=(64, 64),
        python="python",
        variants=list(variants),
    )


def map_of(key: str, seed: int) -> tuple[float, float]:
    """The fake scores of row `key` ("phi3"; a variant scores as phi 9) with `seed`."""
    rank = int(key[3:]) if key[:3] == "phi" and key[3:].isdigit() else 9
    return 0.5 + 0.01 * rank + 0.001 * seed, 0.3 + 0.01 * rank


def _value(command, flag):
    return command[command.index(flag) + 1]


class FakeScripts:
    """Stands in for train.py and get_map.py: writes what they would, records every call.

    fail_training: run names ("phi1_seed0") whose training is killed after its checkpoint.
    pause: seconds each call takes (to see calls overlap)."""

    def __init__(self, fail_training=(), pause=0.0):
        self.calls, self.fail_training, self.pause = [], set(fail_training), pause
        self.running = self.most_running = 0
        self.lock = threading.Lock()

    def __call__(self, command, env, log_path, echo):
        with self.lock:
            self.calls.append((list(command), env, echo))
            self.running += 1
            self.most_running = max(self.most_running, self.running)
        try:
            time.sleep(self.pause)
            log_path.write_text("log")
            if command[1] == str(TRAIN_SCRIPT):
                out = Path(_value(command, "--output"))
                (out / "checkpoint.npz").write_bytes(b"state")
                if out.name in self.fail_training:
                    return 130  # killed: a checkpoint, no best.keras yet
                (out / "best.keras").write_bytes(b"model")
                history = {"loss": [2.0, 1.0], "val_loss": [2.2, 1.2], "map_epochs": [1, 2], "map_values": [0.1, 0.2]}
                (out / "history.json").write_text(json.dumps(history))
                return 0
            assert command[1] == str(GET_MAP_SCRIPT)
            weights = Path(_value(command, "--weights"))
            key, _, seed = weights.parent.name.rpartition("_seed")
            map50, map50_95 = map_of(key, int(seed))
            out = Path(_value(command, "--output"))
            out.mkdir(parents=True, exist_ok=True)
            results = {"mAP": map50, "coco": {"AP": map50_95}, "data": "demo_data", "split": "test", "problems": []}
            (out / "results.json").write_text(json.dumps(results))
            return 0
        finally:
            with self.lock:
                self.running -= 1

    def trained(self):
        """(run name, resumed) of every train.py call, in order."""
        calls = [command for command, _, _ in self.calls if command[1] == str(TRAIN_SCRIPT)]
        return [(Path(_value(c, "--output")).name, "--resume" in c) for c in calls]

    def evaluated(self):
        return [Path(_value(c, "--weights")).parent.name for c, _, _ in self.calls if c[1] == str(GET_MAP_SCRIPT)]


def test_a_fresh_study_trains_then_evaluates_every_run_seed_by_seed(tmp_path):
    scripts = FakeScripts()
    plan = plan_for(tmp_path / "study")
    outcomes = run_study(plan, runner=scripts, gpus=[])
    order = ["phi0_seed0", "phi1_seed0", "phi0_seed1", "phi1_seed1"]
    assert scripts.trained() == [(name, False) for name in order]
    assert scripts.evaluated() == order
    train_command, env, echo = scripts.calls[0]
    assert train_command == ["python", str(TRAIN_SCRIPT), "--demo", "--epochs", "2", "--phi", "0", "--seed", "0",
                             "--output", str(plan.output / "runs" / "phi0_seed0"), "--exist-ok"]  # fmt: skip
    assert env is None and echo  # one run at a time: inherits the environment, echoes its output
    eval_command = scripts.calls[1][0]
    assert eval_command[eval_command.index("--weights") + 1].endswith("phi0_seed0/best.keras")
    for flag in ("--coco", "--no-plots"):
        assert flag in eval_command
    assert _value(eval_command, "--backend") == "keras" and _value(eval_command, "--data") == "demo_data"
    assert "--split" not in eval_command  # the data's own test set
    assert [(o.run.name, o.result.map50, o.result.map50_95, o.error) for o in outcomes] == [
        (name, *map_of(name[:4], int(name[-1])), None) for name in order
    ]
    marker = json.loads((plan.output / "runs" / "phi1_seed1" / "result.json").read_text())
    assert (marker["row"], marker["flags"], marker["seed"]) == ("phi1", ["--phi", "1"], 1)
    assert json.loads((plan.output / "study.json").read_text())["train_options"] == {"demo": True, "epochs": 2}


def test_a_rerun_skips_finished_runs_evaluates_trained_ones_and_resumes_interrupted_ones(tmp_path, caplog):
    plan = plan_for(tmp_path / "study")
    run_study(plan, runner=FakeScripts(), gpus=[])
    runs = {run.name: run for run in plan.runs()}
    # phi0_seed0 finished; phi1_seed0 killed during evaluation (trained, no marker); phi0_seed1 killed
    # during training (a checkpoint only); phi1_seed1 killed before its first checkpoint.
    runs["phi1_seed0"].marker.unlink()
    for name in ("phi0_seed1", "phi1_seed1"):
        for file in ("result.json", "trained.json", "best.keras"):
            (runs[name].folder / file).unlink()
    (runs["phi1_seed1"].folder / "checkpoint.npz").unlink()
    scripts = FakeScripts()
    caplog.set_level(logging.INFO, logger="yolov4_tiny")
    caplog.clear()  # the first study's lines too, where an earlier test left the logger at INFO
    outcomes = run_study(plan, runner=scripts, gpus=[])
    messages = [r.getMessage() for r in caplog.records if r.name == "yolov4_tiny.training"]
    assert "4 runs (2 rows x 2 seeds)" in messages[0] and "1 done, 1 evaluate, 1 resume, 1 start" in messages[0]
    assert scripts.trained() == [("phi0_seed1", True), ("phi1_seed1", False)]
    assert scripts.evaluated() == ["phi1_seed0", "phi0_seed1", "phi1_seed1"]
    assert all(o.result is not None for o in outcomes)
    # Everything finished: a third run does nothing but read the markers.
    scripts = FakeScripts()
    assert [o.result.map50 for o in run_study(plan, runner=scripts, gpus=[])] == [
        o.result.map50 for o in outcomes
    ]
    assert scripts.calls == []


def test_a_failed_run_is_reported_the_others_finish_and_the_next_call_resumes_it(tmp_path):
    plan = plan_for(tmp_path / "study")
    outcomes = run_study(plan, runner=FakeScripts(fail_training={"phi1_seed0"}), gpus=[])
    failed = [o for o in outcomes if o.error]
    assert [o.run.name for o in failed] == ["phi1_seed0"] and "exited with code 130" in failed[0].error
    assert not failed[0].run.marker.exists()
    scripts = FakeScripts()
    run_study(plan, runner=scripts, gpus=[])
    assert scripts.trained() == [("phi1_seed0", True)]


def test_a_report_reads_what_is_finished_and_runs_nothing(tmp_path):
    plan = plan_for(tmp_path / "study")
    with pytest.raises(StudyError, match="holds no study"):
        report_outcomes(plan)
    run_study(plan, runner=FakeScripts(fail_training={"phi1_seed0"}), gpus=[])
    runs = {run.name: run for run in plan.runs()}
    runs["phi0_seed1"].marker.unlink()  # trained, its evaluation killed
    outcomes = {o.run.name: o for o in report_outcomes(plan)}
    assert outcomes["phi0_seed0"].result.map50 == map_of("phi0", 0)[0] and outcomes["phi1_seed1"].result
    assert outcomes["phi1_seed0"].error.startswith("training, or stopped and resumable")
    assert outcomes["phi0_seed1"].error == "trained, not evaluated yet"
    assert not (plan.output / "runs" / "phi1_seed0" / "best.keras").exists()  # nothing was run meanwhile
    # A run whose folder a live training holds is said to be training.
    lock = FolderLock(runs["phi1_seed0"].folder / "train.lock")
    lock.acquire()
    try:
        [outcome] = [o for o in report_outcomes(plan) if o.run.name == "phi1_seed0"]
        assert outcome.error == f"training now (process {os.getpid()} on {socket.gethostname()})"
    finally:
        lock.release()


def test_other_train_options_in_the_same_folder_are_refused(tmp_path):
    run_study(plan_for(tmp_path / "study"), runner=FakeScripts(), gpus=[])
    with pytest.raises(StudyError, match="other settings.*epochs"):
        run_study(plan_for(tmp_path / "study", epochs="3"), runner=FakeScripts(), gpus=[])
    # More seeds or blocks with the same options extend the study.
    scripts = FakeScripts()
    run_study(plan_for(tmp_path / "study", phis=(0, 1, 3)), runner=scripts, gpus=[])
    assert scripts.trained() == [("phi3_seed0", False), ("phi3_seed1", False)]


def test_a_variant_is_a_row_trained_with_its_own_flags(tmp_path):
    scripts = FakeScripts()
    plan = plan_for(tmp_path / "study", phis=(0,), seeds=(0,), variants=[("weighted", "--phi 0 --fusion weighted")])
    [base, variant] = run_study(plan, runner=scripts, gpus=[])
    assert scripts.trained() == [("phi0_seed0", False), ("weighted_seed0", False)]
    command = scripts.calls[2][0]
    assert command[2:9] == ["--demo", "--epochs", "2", "--phi", "0", "--fusion", "weighted"]
    assert (variant.run.key, variant.result.map50) == ("weighted", map_of("weighted", 0)[0])
    assert json.loads((plan.output / "study.json").read_text())["variants"] == {"weighted": "--phi 0 --fusion weighted"}
    # A user block's row is scored with its module imported (a saved model never imports code).
    mine = plan_for(tmp_path / "mine", phis=(0,), seeds=(0,), variants=[("mine", "--attention blocks.py:MyBlock")])
    [_, row] = mine.runs()
    assert row.attention_module == "blocks.py" and mine.runs()[0].attention_module is None
    assert _value(mine.eval_command(row, row.folder / "best.keras"), "--attention-module") == "blocks.py"
    with pytest.raises(StudyError, match="variant names"):
        plan_for(tmp_path / "x", variants=[("PHI0", "--phi 2")])
    # A name keeps its flags: other flags under it would mix two settings in one row.
    other = plan_for(tmp_path / "study", phis=(0,), seeds=(0,), variants=[("weighted", "--phi 1 --fusion weighted")])
    with pytest.raises(StudyError, match="variant weighted"):
        run_study(other, runner=FakeScripts(), gpus=[])
    # Another study's command without the variant continues it, and the variant stays recorded.
    run_study(plan_for(tmp_path / "study", phis=(0,), seeds=(0,)), runner=FakeScripts(), gpus=[])
    assert "weighted" in json.loads((plan.output / "study.json").read_text())["variants"]


def test_jobs_run_side_by_side_one_per_gpu(tmp_path):
    scripts = FakeScripts(pause=0.2)
    outcomes = run_study(plan_for(tmp_path / "study"), jobs=2, runner=scripts, gpus=["0", "3"])
    assert all(o.result is not None for o in outcomes)
    assert scripts.most_running == 2
    devices = [env["CUDA_VISIBLE_DEVICES"] for _, env, _ in scripts.calls]
    assert set(devices) == {"0", "3"}
    assert not any(echo for _, _, echo in scripts.calls)  # side by side: output to the logs only


def test_jobs_without_a_gpu_run_one_at_a_time(tmp_path, caplog):
    scripts = FakeScripts(pause=0.05)
    caplog.set_level(logging.INFO, logger="yolov4_tiny")
    run_study(plan_for(tmp_path / "study"), jobs=3, runner=scripts, gpus=[])
    messages = [r.getMessage() for r in caplog.records if r.name == "yolov4_tiny.training"]
    assert scripts.most_running == 1 and all(env is None for _, env, _ in scripts.calls)
    assert "no GPU visible" in messages[0]


@pytest.mark.parametrize(
    "value, gpus",
    [("0,2", ["0", "2"]), ("", []), ("-1", []), ("1,-1,2", ["1"]), (" 3 ", ["3"]), ("GPU-5d2a", ["GPU-5d2a"])],
)
def test_visible_gpus_follow_cuda_visible_devices(value, gpus):
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": value}) == gpus


def test_the_time_budget_is_detected_from_the_training_settings(monkeypatch):
    from dataclasses import field, fields, make_dataclass

    from utils.training import ablation

    assert train_supports_time() == _train_takes_time()
    assert ablation.time_budget_field() == "time"  # train.py's --time (utils/training/budget.py)
    # Settings without the option: not found; the same settings with it under another name: found, by its flag.
    kept = [(f.name, f.type, field(default=f.default, metadata=f.metadata)) for f in fields(TrainConfig)]
    plain = make_dataclass("Plain", [f for f in kept if f[0] != "time"])
    monkeypatch.setattr(ablation, "TrainConfig", plain)
    assert ablation.time_budget_field() is None and not ablation.train_supports_time()
    option = ("time_minutes", float, field(default=None, metadata={"flag": "--time", "help": "minutes"}))
    extended = make_dataclass("Extended", [option], bases=(plain,))
    monkeypatch.setattr(ablation, "TrainConfig", extended)
    assert ablation.time_budget_field() == "time_minutes" and ablation.train_supports_time()


def _train_takes_time() -> bool:
    import argparse

    from utils.training.config import add_arguments

    parser = argparse.ArgumentParser(allow_abbrev=False)
    add_arguments(parser)
    try:
        parser.parse_args(["--time", "1"])
    except SystemExit:
        return False
    return True


def test_sigterm_to_the_study_stops_the_training_it_is_running(tmp_path):
    """SIGTERM sent to ablation.py alone (timeout, docker stop) left its train.py running, and the
    study waiting for it (issue 22): the runs in progress get SIGTERM too, and the study exits 143."""
    started = []

    def sleeping_training(command, env, log_path, echo):  # run_logged on a stand-in for train.py
        code = "import time; print('training', flush=True); time.sleep(120)"
        return started.append(1) or run_logged([sys.executable, "-c", code], env, log_path, echo)

    def terminate_soon():
        deadline = time.monotonic() + 30
        log = tmp_path / "study" / "runs" / "phi0_seed0" / "train.log"
        while time.monotonic() < deadline and not (log.is_file() and "training" in log.read_text()):
            time.sleep(0.05)
        os.kill(os.getpid(), signal.SIGTERM)

    plan = plan_for(tmp_path / "study")
    threading.Thread(target=terminate_soon, daemon=True).start()
    begun = time.monotonic()
    code = run_script(lambda argv: run_study(plan, runner=sleeping_training, gpus=[]))
    assert code == 143 and started == [1]
    assert time.monotonic() - begun < 60  # not the 120 s the training would have taken
