"""The attention ablation behind ablation.py: every (row, seed) run trained by train.py and scored by
get_map.py, each a process of its own in a folder of its own, so that a study survives a reboot;
then the table, the plots and the costs.

A row of the study is a block by its phi (key "phi3": train.py --phi 3) or a variant (key NAME:
train.py with its own flags, e.g. "--fusion weighted" or "--attention my_blocks:MyBlock").

    plan = StudyPlan(output, phis=[0, 1, 2, 3, 4], seeds=[0, 1, 2], train_args=[...], train_options={...},
                     data="demo_data", split=None, input_hw=(128, 128), variants=[("weighted", "--fusion weighted")])
    outcomes = run_study(plan, jobs=1)          # trains and evaluates what is not finished yet
    outcomes = report_outcomes(plan)            # or: what is finished so far, training nothing
    summary = summarize_study(plan, outcomes)   # params, GFLOPs, latency, statistics, table, plots

What --output holds:

    study.json                    the study's train.py options and variants; a re-run must give the same ones
    runs/{row}_seed{S}/           train.py --output of that run (row: phi{P} or a variant's name):
                                  settings.json, history.json (results.csv when train.py writes one),
                                  best.keras, last.keras, checkpoint.npz, ...
        train.log, eval.log       what train.py and get_map.py printed
        trained.json              written when train.py finished (atomically)
        eval/                     get_map.py --output: results.json (VOC mAP@0.5, COCO AP@[.5:.95])
        result.json               the run's marker, written atomically last
    table.md, table.csv, table.json, map_vs_latency.png (and _gpu), learning_curves.png

A re-run skips every run with a result.json, only evaluates a run with trained.json, resumes the
training of a run with a checkpoint.npz (train.py --resume) and starts the others. Runs go seed by
seed (every block of seed 0 first), so an interrupted study has complete seeds to pair.
Its progress lines go to the `yolov4_tiny.training` logger (INFO).
"""

from __future__ import annotations

import json
import logging
import os
import queue
import re
import shlex
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np

from nets.attention import PHI_TO_ATTENTION
from utils.errors import Interrupted, YoloError
from utils.evaluation.study import (
    RunResult,
    StudyError,
    StudyRow,
    build_rows,
    plot_learning_curves,
    plot_map_vs_latency,
    read_learning_curve,
    write_table,
)
from utils.training.checkpoint import CHECKPOINT_NAME, atomic_write
from utils.training.config import TrainConfig
from utils.training.run_folder import training_in

logger = logging.getLogger("yolov4_tiny.training")
ROOT = Path(__file__).resolve().parents[2]
TRAIN_SCRIPT = ROOT / "train.py"
GET_MAP_SCRIPT = ROOT / "get_map.py"
STUDY_FILE = "study.json"
MARKER = "result.json"
TRAINED = "trained.json"
TRAIN_LOG, EVAL_LOG = "train.log", "eval.log"
PHI_ROW = re.compile(r"phi\d+", re.IGNORECASE)  # the blocks' rows; no variant may be named so
BASELINE = "phi0"  # the row the others are compared with: no attention, train.py's defaults

# (command, environment or None to inherit, log file, also echo to stdout) -> exit code
CommandRunner = Callable[[Sequence[str], "dict[str, str] | None", Path, bool], int]


def time_budget_field() -> str | None:
    """The TrainConfig field behind train.py's `--time MINUTES` budget (its flag, or an alias, is
    --time), or None when this train.py has no such option."""
    for f in fields(TrainConfig):
        flags = (f.metadata.get("flag", "--" + f.name.replace("_", "-")), *f.metadata.get("aliases", ()))
        if "--time" in flags:
            return f.name
    return None


def train_supports_time() -> bool:
    """Whether this train.py has a `--time MINUTES` budget."""
    return time_budget_field() is not None


def write_json(path: Path, data: dict) -> None:
    """`data` as JSON at `path`, written atomically (a kill leaves the old file or none)."""
    text = json.dumps(data, indent=2, ensure_ascii=False) + "\n"
    atomic_write(path, lambda temp: Path(temp).write_text(text, encoding="utf-8"))


def phi_key(phi: int) -> str:
    """The study row of block `phi`: its key in the table, the prefix of its runs' folders."""
    return f"phi{phi}"


@dataclass(frozen=True)
class Run:
    """One training of the study: row `key` (its train.py `flags`), seed `seed`, in `folder` (train.py's --output)."""

    key: str
    seed: int
    folder: Path
    flags: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        return f"{self.key}_seed{self.seed}"

    @property
    def attention_module(self) -> str | None:
        """The module of the user block the row's flags name (`--attention MODULE:CLASS`), which
        loading its model needs imported (a saved model never imports code); None otherwise."""
        value = None
        for i, flag in enumerate(self.flags):
            if flag == "--attention" and i + 1 < len(self.flags):
                value = self.flags[i + 1]
            elif flag.startswith("--attention="):
                value = flag.split("=", 1)[1]
        return value.rsplit(":", 1)[0] if value and ":" in value else None

    @property
    def marker(self) -> Path:
        return self.folder / MARKER

    @property
    def trained(self) -> Path:
        return self.folder / TRAINED

    @property
    def checkpoint(self) -> Path:
        return self.folder / CHECKPOINT_NAME

    def weights(self) -> Path | None:
        """The model to evaluate: best.keras (train.py's best epoch on val), else last.keras."""
        return next((p for p in (self.folder / "best.keras", self.folder / "last.keras") if p.is_file()), None)

    def state(self) -> str:
        """"done" (result.json), "evaluate" (trained.json), "resume" (checkpoint.npz) or "start"."""
        if self.marker.is_file():
            return "done"
        if self.trained.is_file():
            return "evaluate"
        return "resume" if self.checkpoint.is_file() else "start"

    def result(self) -> RunResult:
        data = json.loads(self.marker.read_text(encoding="utf-8"))
        return RunResult(self.key, self.seed, float(data["map50"]), float(data["map50_95"]))


@dataclass
class StudyPlan:
    """What a study trains and how.

    phis: the blocks compared by phi (rows "phi0" ...). variants: more rows, (NAME, train.py flags).
    train_args: train.py options every run shares (never --phi, --attention, --seed, --output,
        --resume, --exist-ok: the study sets those per run). train_options: the same, parsed (flag name ->
        value), kept in study.json and compared on a re-run. data, split: what get_map.py
        evaluates each run on (split None: the data's test set). input_hw: the runs' input size
        (for the FLOPs and the latency). latency_rounds: rounds of the latency measurement (0: none).
        budget: each run's training budget in words, for the table's notes ("14 epochs").
    """

    output: Path
    phis: list[int]
    seeds: list[int]
    train_args: list[str]
    train_options: dict
    data: str
    split: str | None
    input_hw: tuple[int, int]
    latency_rounds: int = 30
    budget: str = ""
    python: str = sys.executable
    variants: list[tuple[str, str]] = field(default_factory=list)

    def __post_init__(self):
        names = [name.casefold() for name, _ in self.variants]
        if any(PHI_ROW.fullmatch(name) for name in names) or len(set(names)) < len(names):
            raise StudyError(
                f"variant names must differ from each other and from the blocks' phiN, letter case aside: "
                f"{', '.join(name for name, _ in self.variants)}"
            )

    def rows(self) -> dict[str, tuple[str, ...]]:
        """Every row of the study, key -> its own train.py flags: the phis in order, then the variants."""
        rows = {phi_key(phi): ("--phi", str(phi)) for phi in self.phis}
        return rows | {name: tuple(shlex.split(flags)) for name, flags in self.variants}

    def blocks(self) -> dict[str, str]:
        """key -> what the row is, for the table: the block's name, or the variant's flags."""
        return {phi_key(phi): PHI_TO_ATTENTION[phi] for phi in self.phis} | dict(self.variants)

    def runs(self) -> list[Run]:
        """Every run, seed by seed."""
        folder = self.output / "runs"
        rows = self.rows().items()
        return [Run(key, seed, folder / f"{key}_seed{seed}", flags) for seed in self.seeds for key, flags in rows]

    def settings(self) -> dict:
        """What study.json keeps: what makes two runs of the same row and seed comparable."""
        options = {"train_options": self.train_options, "train_args": self.train_args}
        return {**options, "data": self.data, "split": self.split, "variants": dict(self.variants)}

    def train_command(self, run: Run) -> list[str]:
        command = [self.python, str(TRAIN_SCRIPT), *self.train_args, *run.flags]
        command += ["--seed", str(run.seed), "--output", str(run.folder)]
        # Without a checkpoint the run starts again: --exist-ok replaces what a start killed early left.
        return command + (["--resume"] if run.checkpoint.is_file() else ["--exist-ok"])

    def eval_command(self, run: Run, weights: Path) -> list[str]:
        # get_map.py's evaluator, on the Keras model whatever backend the path would pick by default.
        command = [self.python, str(GET_MAP_SCRIPT), "--weights", str(weights), "--data", str(self.data), "--coco"]
        command += ["--backend", "keras", "--no-plots", "--output", str(run.folder / "eval")]
        if run.attention_module:
            command += ["--attention-module", run.attention_module]
        return command + (["--split", self.split] if self.split else [])


@dataclass
class RunOutcome:
    """How a run ended in this invocation: its result, or why it has none (`error`)."""

    run: Run
    result: RunResult | None
    error: str | None = None


# The subprocesses run_logged is running (on run_study's threads), for stop_children.
_children: set[subprocess.Popen] = set()
_children_lock = threading.Lock()


def run_logged(command: Sequence[str], env: dict[str, str] | None, log_path: Path, echo: bool) -> int:
    """Run `command`, appending what it prints (stdout and stderr) to `log_path`, and to our stdout
    too when `echo`; returns its exit code."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        log.write(f"\n$ {shlex.join(command)}\n".encode())
        log.flush()
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
        with _children_lock:
            _children.add(process)
        try:
            for chunk in iter(lambda: process.stdout.read1(65536), b""):
                log.write(chunk)
                log.flush()
                if echo:
                    sys.stdout.buffer.write(chunk)
                    sys.stdout.flush()
            return process.wait()
        finally:
            with _children_lock:
                _children.discard(process)


def stop_children(grace_s: float = 0.0) -> None:
    """Stop the subprocesses run_logged is running: SIGTERM each that has not ended within
    `grace_s` seconds (train.py and get_map.py stop on it as on Ctrl-C: files whole, exit 143)."""
    with _children_lock:
        children = list(_children)
    deadline = time.monotonic() + grace_s
    for process in children:
        try:
            process.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.terminate()


def visible_gpus(environ: dict[str, str] | None = None) -> list[str]:
    """The GPUs a subprocess can be given (CUDA_VISIBLE_DEVICES values), without importing TensorFlow:
    the entries of CUDA_VISIBLE_DEVICES when it is set, else the indices nvidia-smi lists, else none."""
    environ = os.environ if environ is None else environ
    if "CUDA_VISIBLE_DEVICES" in environ:
        entries = [e.strip() for e in environ["CUDA_VISIBLE_DEVICES"].split(",") if e.strip()]
        # CUDA stops at the first invalid entry ("-1" hides every GPU).
        valid = []
        for entry in entries:
            if entry.startswith("-"):
                break
            valid.append(entry)
        return valid
    if shutil.which("nvidia-smi") is None:
        return []
    try:
        listed = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return []
    lines = [line for line in listed.stdout.splitlines() if line.startswith("GPU ")] if listed.returncode == 0 else []
    return [str(i) for i in range(len(lines))]


def check_study_folder(plan: StudyPlan, write: bool = True) -> None:
    """Write study.json (unless not `write`), or check that the one there has the same settings
    (StudyError if not): runs trained with other options must not be mixed into one table. A
    variant keeps its flags; a re-run may add variants (and phis, seeds)."""
    path = plan.output / STUDY_FILE
    settings = json.loads(json.dumps(plan.settings()))  # as it reads back
    if path.is_file():
        stored = json.loads(path.read_text(encoding="utf-8"))
        differences = [
            f"{key}: {stored.get(key)!r} there, {settings[key]!r} now"
            for key in ("train_options", "data", "split")
            if stored.get(key) != settings[key]
        ]
        known = stored.get("variants") or {}
        differences += [
            f"variant {name}: {known[name]!r} there, {flags!r} now"
            for name, flags in settings["variants"].items()
            if name in known and shlex.split(known[name]) != shlex.split(flags)
        ]
        if differences:
            raise StudyError(
                f"{plan.output} holds a study with other settings ({'; '.join(differences)}); give the same "
                "options to continue it, or another --output"
            )
        settings = {**stored, **settings, "variants": known | settings["variants"]}
    if write:
        plan.output.mkdir(parents=True, exist_ok=True)
        write_json(path, settings)


def execute_run(
    plan: StudyPlan, run: Run, env: dict[str, str] | None, runner: CommandRunner, echo: bool
) -> RunOutcome:
    """Bring one run to its marker: train (or resume) unless trained, evaluate, write result.json."""
    if run.marker.is_file():
        return RunOutcome(run, run.result())
    run.folder.mkdir(parents=True, exist_ok=True)
    if not run.trained.is_file():
        resume = run.checkpoint.is_file()
        command = plan.train_command(run)
        what = "resuming its training from checkpoint.npz" if resume else "training"
        logger.info(f"{run.name}: {what} (log: {run.folder / TRAIN_LOG})")
        started = time.time()
        code = runner(command, env, run.folder / TRAIN_LOG, echo)
        if code != 0:
            return RunOutcome(run, None, f"train.py exited with code {code} (see {run.folder / TRAIN_LOG})")
        write_json(run.trained, {"command": command, "seconds": time.time() - started, "resumed": resume})
    weights = run.weights()
    if weights is None:
        return RunOutcome(run, None, f"train.py finished but left no best.keras or last.keras in {run.folder}")
    logger.info(f"{run.name}: evaluating {weights.name} on the test split (log: {run.folder / EVAL_LOG})")
    code = runner(plan.eval_command(run, weights), env, run.folder / EVAL_LOG, echo)
    results_path = run.folder / "eval" / "results.json"
    if code not in (0, 1) or not results_path.is_file():  # 1: some images left out, the rest evaluated
        return RunOutcome(run, None, f"get_map.py exited with code {code} (see {run.folder / EVAL_LOG})")
    results = json.loads(results_path.read_text(encoding="utf-8"))
    map50, map50_95 = results.get("mAP"), (results.get("coco") or {}).get("AP")
    if map50 is None or map50_95 is None:
        return RunOutcome(run, None, f"{results_path} has no mAP@0.5 or COCO AP")
    trained = json.loads(run.trained.read_text(encoding="utf-8"))
    write_json(
        run.marker,
        {
            "row": run.key,
            "flags": list(run.flags),
            "seed": run.seed,
            "map50": map50,
            "map50_95": map50_95,
            "weights": str(weights),
            "data": results.get("data"),
            "split": results.get("split"),
            "images_evaluated": results.get("images_evaluated"),
            "evaluation_problems": len(results.get("problems", [])),
            "train_seconds": trained.get("seconds"),
        },
    )
    logger.info(f"{run.name}: test mAP@0.5 {map50:.4f}, mAP@.5:.95 {map50_95:.4f}")
    return RunOutcome(run, run.result())


WAITING = {
    "evaluate": "trained, not evaluated yet",
    "resume": "training, or stopped and resumable (checkpoint.npz)",
    "start": "not started",
}


def report_outcomes(plan: StudyPlan) -> list[RunOutcome]:
    """Every run's outcome as the study's folder holds it, training and evaluating nothing (the
    table of a study still running, or stopped): the finished runs' results, and why each other
    run has none. StudyError when the folder holds no study, or one with other settings."""
    if not (plan.output / STUDY_FILE).is_file():
        raise StudyError(f"{plan.output} holds no study ({STUDY_FILE} is missing): nothing to report")
    check_study_folder(plan, write=False)
    outcomes = []
    for run in plan.runs():
        state = run.state()
        holder = training_in(run.folder) if state in ("resume", "start") else None
        why = f"training now ({holder})" if holder else WAITING.get(state)
        outcomes.append(RunOutcome(run, run.result() if state == "done" else None, why))
    return outcomes


def run_study(
    plan: StudyPlan,
    jobs: int = 1,
    runner: CommandRunner = run_logged,
    gpus: Sequence[str] | None = None,
) -> list[RunOutcome]:
    """Train and evaluate every run of `plan` that is not finished, `jobs` at a time on as many GPUs
    (each subprocess sees one, through CUDA_VISIBLE_DEVICES), one at a time without a GPU.

    gpus: the CUDA_VISIBLE_DEVICES values to hand out; None: `visible_gpus()`.
    Returns one RunOutcome per run, in `plan.runs()` order.
    """
    check_study_folder(plan)
    runs = plan.runs()
    gpus = visible_gpus() if gpus is None else list(gpus)
    slots: list[str | None] = list(gpus[: max(1, jobs)]) if gpus else [None]
    if jobs > 1 and not gpus:
        logger.info(f"--jobs {jobs}: no GPU visible, so the runs go one at a time on the CPU")
    elif jobs > len(slots):
        logger.info(f"--jobs {jobs}: {len(gpus)} GPU(s) visible, so {len(slots)} runs at a time (one per GPU)")
    states = [run.state() for run in runs]
    counts = ", ".join(f"{states.count(s)} {s}" for s in ("done", "evaluate", "resume", "start") if states.count(s))
    logger.info(f"{len(runs)} runs ({len(plan.rows())} rows x {len(plan.seeds)} seeds) in {plan.output}: {counts}")

    free: queue.Queue = queue.Queue()
    for slot in slots:
        free.put(slot)
    echo = len(slots) == 1  # one run at a time: its output on the console too

    def work(run: Run) -> RunOutcome:
        slot = free.get()
        try:
            env = None if slot is None else {**os.environ, "CUDA_VISIBLE_DEVICES": slot}
            return execute_run(plan, run, env, runner, echo)
        finally:
            free.put(slot)

    with ThreadPoolExecutor(max_workers=len(slots)) as pool:
        try:
            return list(pool.map(work, runs))
        except KeyboardInterrupt as err:
            # The runs stop with the study (the pool waits for them). Ctrl-C in a terminal reached
            # them too, so they get a moment to stop by themselves; a SIGTERM sent to this process
            # alone (utils.errors.Interrupted) did not reach them: they are sent one at once.
            stop_children(grace_s=0.0 if isinstance(err, Interrupted) else 10.0)
            raise


# ---------------------------------------------------------------------------------------------- the summary
@dataclass
class StudySummary:
    rows: list[StudyRow]
    notes: list[str]
    files: list[Path]


def latency_image(plan: StudyPlan, class_names: list[str]) -> tuple[np.ndarray, str]:
    """(uint8 RGB image, what it is): the first readable image of the test split, else noise."""
    from utils.data.images import ImageLoadError, load_image
    from utils.evaluation.voc_eval import EvaluationLog, load_voc_split

    try:
        split = load_voc_split(plan.data, plan.split, class_names, EvaluationLog(), progress=False)
        paths = [split.paths[i] for i in split.image_ids if i in split.paths]
    except YoloError:  # the runs were evaluated on it, so this is unlikely; the noise image will do
        paths = []
    for path in paths[:20]:
        try:
            return load_image(path), str(path)
        except ImageLoadError:
            continue
    return np.random.default_rng(0).integers(0, 256, (480, 640, 3), dtype=np.uint8), "a 640x480 noise image"


def summarize_study(plan: StudyPlan, outcomes: Sequence[RunOutcome]) -> StudySummary:
    """The table and the plots of the finished runs (raises StudyError when none finished).

    Params and GFLOPs (nets.stats) and the latency are taken from one model per row (its first
    finished seed); the latency of all rows is measured in one round-robin run, on the CPU, and
    on the GPU too when TensorFlow sees one."""
    finished = [o for o in outcomes if o.result is not None]
    if not finished:
        raise StudyError(f"no run of the study in {plan.output} finished; nothing to summarise")
    blocks = plan.blocks()
    costs, latency, models = {}, {}, {}
    from nets.stats import count_flops, count_params
    from utils.inference.engine.loader import load_model

    height, width = plan.input_hw
    for key in blocks:
        first = next((o.run for o in finished if o.run.key == key), None)
        if first is not None:
            models[key] = load_model(first.weights(), attention_module=first.attention_module)
            costs[key] = (count_params(models[key]), count_flops(models[key], (height, width, 3)) / 1e9)
    notes = _notes(plan)
    if plan.latency_rounds > 0 and models:
        import tensorflow as tf

        from utils.evaluation.study import measure_latency

        image, what = latency_image(plan, next(iter(models.values())).class_names or [])
        devices = [("cpu", "/CPU:0")] + ([("gpu", "/GPU:0")] if tf.config.list_physical_devices("GPU") else [])
        for name, device in devices:
            logger.info(f"latency on the {name.upper()}: {plan.latency_rounds} rounds over {len(models)} blocks ...")
            latency[name] = measure_latency(models, image, plan.input_hw, device, plan.latency_rounds)
        notes.append(
            f"latency: image to boxes (letterbox, model, decoding, NMS), batch 1, input {height}x{width}, on "
            f"{what}; the median of {plan.latency_rounds} rounds, the blocks timed in turn within each round, in "
            f"one run on the {' and the '.join(n.upper() for n, _ in devices)} ({os.cpu_count()} CPU cores)"
        )
    rows = build_rows([o.result for o in finished], blocks, costs, latency, baseline=BASELINE)
    if all(len(row.map50) < 2 for row in rows):
        notes.append("one seed per block: no confidence intervals and no verdicts (run with --seeds 2 or more)")
    if not any(row.key == BASELINE and row.map50 for row in rows):
        notes.append(f"no finished {BASELINE} run: no differences to compare")
    notes += [f"not finished: {o.run.name}: {o.error}" for o in outcomes if o.error]
    settings = {**plan.settings(), "phis": plan.phis, "seeds": plan.seeds, "input_hw": list(plan.input_hw)}
    settings["latency_rounds"] = plan.latency_rounds
    files = list(write_table(rows, plan.output, notes, settings, baseline=BASELINE).values())
    for device in latency:
        name = "map_vs_latency.png" if device == "cpu" else f"map_vs_latency_{device}.png"
        path = plot_map_vs_latency(rows, plan.output / name, device)
        files += [path] if path else []
    curves: dict[str, dict] = {}
    for outcome in outcomes:
        curve = read_learning_curve(outcome.run.folder)
        if curve is not None:
            curves.setdefault(outcome.run.key, {})[outcome.run.seed] = curve
    path = plot_learning_curves(curves, blocks, plan.output / "learning_curves.png")
    files += [path] if path else []
    return StudySummary(rows, notes, files)


def _notes(plan: StudyPlan) -> list[str]:
    split = f"split {plan.split}" if plan.split else "its test split"
    budget = f" ({plan.budget})" if plan.budget else ""
    variants = "".join(f"; row {name}: {flags} instead of --phi P" for name, flags in plan.variants)
    return [
        f"every run: python train.py {shlex.join(plan.train_args)} --phi P --seed S{budget}{variants}; seeds "
        f"{', '.join(map(str, plan.seeds))}: the same data, schedule and budget for every row",
        f"mAP@0.5: VOC all-point AP at IoU 0.5; mAP@.5:.95: COCO AP@[.5:.95] (pycocotools); both by get_map.py "
        f"on {plan.data}, {split}, with each run's best.keras (best val mAP@0.5)",
        "mAP cells: mean over seeds ± half the 95% confidence interval (Student t, n - 1 df)",
        f"Δ: the row minus {BASELINE}, paired by seed (same seed: same initial draws and data order), "
        "mean [95% CI]. Verdict: better if the whole interval lies above 0, worse if below, otherwise "
        "no detectable difference: the difference is within what the seeds vary by (which does not show the "
        "blocks are equal; more seeds narrow the interval)",
        f"params (batch-norm statistics included) and GFLOPs at {plan.input_hw[0]}x{plan.input_hw[1]}: nets/stats.py",
    ]
