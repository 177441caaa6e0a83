"""Learning: ours against ultralytics' YOLOv8n and YOLO26n, from scratch, same data, input size and time.

    python benchmarks/bench_learning.py                          # 15 and 45 minutes, seeds 0 and 1, phi 4 and 0
    python benchmarks/bench_learning.py --jobs 2                 # two trainings at once, each on one core
    python benchmarks/bench_learning.py --budgets 1 --seeds 0 --train-images 60 --val-images 20 --test-images 40
    python benchmarks/bench_learning.py --skip-ultralytics       # ours only
    python benchmarks/bench_learning.py --preset clutter         # the hard set
    python benchmarks/bench_learning.py --budgets 30 --seeds 0 --phis 4 --skip-ultralytics --jobs 2 \
        --variant mixup="--mixup 0.5"                            # the defaults against a variant

For each budget and seed, every model trains from random weights for the same wall-clock budget on
the same generated data, and is then scored by get_map.py, our one evaluator, on the same test
split: VOC mAP@0.5 (all-point; difficult objects ignored) and pycocotools' AP@[.5:.95] and AP75
(difficult objects as iscrowd), at conf 0.001, NMS IoU 0.5 (per class), 100 detections per image
for every model; each model's boxes are those its own predict gives (ours: get_map.py's defaults,
box merge at IoU 0.5 included, as predict.py draws them; the peers: ultralytics' predict).

Data (--preset): "objects" (the default), utils/data/demo.py's ten shape classes, each with its own
colour over a photograph's detail, on scikit-image's photographs, 1-6 objects of 24 px to 0.6 of the
image, images of 320-640 px; "photos", the same with any class in any colour (only the outline tells
them apart: too hard for 15 minutes on one core); or "clutter", the same classes on synthetic clutter
with tiny, occluded and truncated objects (a hard set on which short budgets teach little). Each
seed draws its own set (OUTPUT/data_<preset>_s<seed>), or --data gives one.

    ours      train.py --phi P --input-size S --seed N --time MINUTES, its defaults otherwise
              (--ours-args adds flags); train.py plans its epochs and LR schedule to end on the
              budget. Scored: best.keras (the best val mAP@0.5 of the evaluated epochs).
              --variant NAME=FLAGS (repeatable) also trains each phi with FLAGS, a row "ours phi P
              NAME" beside the defaults' row, in the same run: how recipes are compared
              (docs/recipe.md).
    peers     ultralytics' yolov8n.yaml and yolo26n.yaml (random weights, pretrained=False), their
              defaults otherwise (optimizer auto, batch 16), time=budget (ultralytics re-plans its
              epochs and LR schedule to end at the budget), imgsz S, device cpu, amp off, plots
              off, val on (best.pt: its best epoch by ultralytics' fitness); --ultralytics-arg adds
              settings. Trained on the same train / val images as YOLO txt labels (difficult
              objects left out, as our training leaves them out). Scored: best.pt, predicted by
              ultralytics (conf 0.001, iou 0.5, max_det 100) into a COCO results JSON for get_map.py.

A ratio (ours / peer) is printed only where the peer reached mAP@0.5 >= 0.30 on the test split:
below that the budget is too short for it to have really learned, and a ratio would only say who
starts first. The summary gives, per budget, the median over the seeds of each model's figures and of the
per-seed ratios.

--jobs N runs N trainings at once, each pinned to its own share of the CPU cores (taskset-style
affinity, one thread pool each), the models of a budget and seed in the order given; with the
default 1 they run one after the other on all cores. Both are fair; two sharing all cores are not.

ultralytics pulls torch and is no dependency of this project: it lives in its own virtual
environment, found by --ultralytics-python, else $ULTRALYTICS_PYTHON, else .venv-ultralytics/ in
the repository. Create it with (about 6 GB):

    python3 -m venv .venv-ultralytics
    .venv-ultralytics/bin/pip install torch==2.14.1 torchvision==0.29.1 ultralytics

Without it the benchmark says so and exits 0 before doing anything (--skip-ultralytics trains
ours alone). It runs with YOLO_OFFLINE=1 and its sockets to other hosts refused and counted
(benchmarks/ultralytics_worker.py).

Written to --output: results.json (every figure), results.md (the tables), learning_curves.png
(val mAP@0.5 against minutes and against epochs, a line per model, a row per budget and seed),
and per budget and seed (b<MINUTES>_s<SEED>/) each model's training folder, train.log and map/.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import queue
import re
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

WORKER = ROOT / "benchmarks" / "ultralytics_worker.py"
DEFAULT_ULTRALYTICS_PYTHON = ROOT / ".venv-ultralytics" / "bin" / "python"
ULTRALYTICS_ENV_VAR = "ULTRALYTICS_PYTHON"
CREATE_VENV = (
    "python3 -m venv .venv-ultralytics && "
    ".venv-ultralytics/bin/pip install torch==2.14.1 torchvision==0.29.1 ultralytics"
)
# The peers: key -> (name in the tables, ultralytics model yaml). YOLOv8n is the reference.
PEERS = {"yolov8n": ("YOLOv8n", "yolov8n.yaml"), "yolo26n": ("YOLO26n", "yolo26n.yaml")}
REFERENCE = "YOLOv8n"
# Below this test mAP@0.5 a peer has not really learned yet: no ratio against it.
MIN_PEER_MAP50 = 0.30
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
# Lines of the training logs worth echoing as progress (everything goes to train.log).
OURS_PROGRESS = re.compile(r"^(training |epoch \d+: |--time |done: |val mAP|warning|error|Traceback)")
ULTRALYTICS_PROGRESS = re.compile(r"^\s+all\s|epochs completed|^optimizer:|Error|Traceback|network attempts")
# One thread pool per pinned training (TensorFlow, torch, OpenMP, BLAS).
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "TF_NUM_INTRAOP_THREADS")


# ---------------------------------------------------------------------- running and logging
def pinned_env(cores: frozenset[int] | None, env: dict | None = None) -> dict:
    """The environment of a training on `cores` (None: all): one thread per core for each thread pool."""
    env = dict(os.environ if env is None else env)
    if cores is not None:
        env.update({name: str(len(cores)) for name in THREAD_VARIABLES})
        env["TF_NUM_INTEROP_THREADS"] = "1"
    return env


def run_logged(
    command: list[str],
    log_path: Path,
    label: str,
    progress: re.Pattern | None,
    env=None,
    cores: frozenset[int] | None = None,
) -> tuple[int, float]:
    """Run `command` (on `cores` only, when given), its output into `log_path`; echo the lines
    `progress` matches (the last state of a progress bar line), prefixed by `label`. Returns (exit
    code, wall seconds)."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    with open(log_path, "w", encoding="utf-8") as log:
        log.write("$ " + shlex.join(command) + (f"  (cores {sorted(cores)})" if cores else "") + "\n")
        log.flush()
        process = subprocess.Popen(
            command, cwd=ROOT, env=pinned_env(cores, env), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True, errors="replace",
        )  # fmt: skip
        if cores is not None:
            # Pinned at once, while the child is still starting Python: the threads it makes later
            # inherit its cores. (Not preexec_fn, which is unsafe with this script's threads.)
            os.sched_setaffinity(process.pid, cores)
        for line in process.stdout:
            log.write(line)
            shown = ANSI.sub("", line.rstrip("\n").split("\r")[-1]).rstrip()
            if progress is not None and shown and progress.search(shown):
                print(f"  [{label}] {shown.strip()}", flush=True)
        code = process.wait()
    return code, time.perf_counter() - started


def fail(label: str, log_path: Path, code: int) -> None:
    lines = log_path.read_text(encoding="utf-8", errors="replace").splitlines()
    tail = "\n".join(ANSI.sub("", line.split("\r")[-1]) for line in lines[-25:])
    raise SystemExit(f"{label} failed (exit code {code}); the end of {log_path}:\n{tail}")


# ---------------------------------------------------------------------- ultralytics' venv
def ultralytics_python(option: str | None) -> Path:
    if option:
        return Path(option)
    if os.environ.get(ULTRALYTICS_ENV_VAR):
        return Path(os.environ[ULTRALYTICS_ENV_VAR])
    return DEFAULT_ULTRALYTICS_PYTHON


def ultralytics_env(config_dir: Path) -> dict:
    """The worker's environment: offline, ultralytics' settings (and the font it wants) under `config_dir`."""
    return {**os.environ, "YOLO_OFFLINE": "1", "YOLO_CONFIG_DIR": str(config_dir), "PYTHONUNBUFFERED": "1"}


def check_ultralytics(python: Path, config_dir: Path) -> tuple[dict | None, str]:
    """(versions, "") when `python` runs ultralytics, else (None, why not)."""
    if not python.exists():
        return None, f"no Python at {python}"
    with tempfile.TemporaryDirectory() as tmp:
        result = Path(tmp) / "check.json"
        done = subprocess.run(
            [str(python), str(WORKER), "check", "--result", str(result)],
            env=ultralytics_env(config_dir), capture_output=True, text=True,
        )  # fmt: skip
        if done.returncode != 0 or not result.exists():
            last = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["(no output)"]
            return None, f"{python} cannot run ultralytics: {last[0]}"
        return json.loads(result.read_text()), ""


# ---------------------------------------------------------------------- data
def ensure_data(data: Path, args, seed: int) -> Path:
    """The VOC folder `data`, generated (--preset, `seed`) when it holds no test set."""
    from utils.data.demo import write_demo_dataset

    if (data / "ImageSets" / "Main" / "test.txt").is_file() and (data / "classes.txt").is_file():
        print(f"data: {data} (as found)")
        return data
    splits = {"train": args.train_images, "val": args.val_images, "test": args.test_images}
    print(f"data: writing the {args.preset} preset to {data} ({splits}, seed {seed}) ...", flush=True)
    started = time.perf_counter()
    write_demo_dataset(data, splits=splits, seed=seed, preset=args.preset)
    print(f"data: written in {time.perf_counter() - started:.0f} s")
    return data


def read_sets(data: Path, names: list[str], sets: list[str]) -> dict:
    from utils.data.sources import open_data

    source = open_data(data)
    return {s: source.read([s], names).images for s in sets}


def data_summary(records_by_set: dict) -> dict:
    summary = {}
    for name, records in records_by_set.items():
        objects = sum(len(r.class_ids) for r in records)
        difficult = sum(int(r.difficult.sum()) for r in records)
        summary[name] = {"images": len(records), "objects": objects, "difficult": difficult}
    return summary


# ---------------------------------------------------------------------- ours
def ours_argv(args, phi: int, data: Path, save_dir: Path, seed: int, flags: str = "") -> list[str]:
    """train.py's arguments for phi (without the budget): --ours-args, then a variant's `flags`."""
    argv = ["--phi", str(phi), "--data", str(data), "--classes", str(data / "classes.txt")]
    argv += ["--input-size", str(args.input_size), "--seed", str(seed), "--output", str(save_dir)]
    return argv + shlex.split(args.ours_args) + shlex.split(flags)


def ours_curve(save_dir: Path) -> list[dict]:
    """(epoch, minutes of training so far, val mAP@0.5) of each evaluated epoch, from results.csv."""
    from utils.training.callbacks import read_results

    curve, seconds = [], 0.0
    for row in read_results(save_dir / "results.csv"):
        seconds += float(row["epoch_seconds"] or 0.0)
        if row["map50"]:
            curve.append({"epoch": int(row["epoch"]), "minutes": seconds / 60, "map50": float(row["map50"])})
    return curve


def train_ours(args, phi: int, variant, data: Path, out: Path, budget: float, seed: int, cores) -> dict:
    """One of our runs: phi with the defaults (`variant` None) or with a --variant (NAME, FLAGS)."""
    name, flags = variant or (None, "")
    model = f"ours phi {phi}" + (f" {name}" if name else "")
    label = f"{model} ({budget:g} min, seed {seed})"
    save_dir = out / (f"phi{phi}-{name}" if name else f"phi{phi}")
    budget_args = ["--epochs", str(args.ours_epochs)] if args.ours_epochs else ["--time", f"{budget:g}"]
    argv = ours_argv(args, phi, data, save_dir, seed, flags)
    command = [sys.executable, str(ROOT / "train.py"), *argv, *budget_args]
    print(f"{label}: training ({' '.join(budget_args)}) ...", flush=True)
    code, wall = run_logged(command, save_dir / "train.log", label, OURS_PROGRESS, cores=cores)
    if code != 0:
        fail(f"{label} training", save_dir / "train.log", code)
    history = json.loads((save_dir / "history.json").read_text())
    weights = save_dir / "best.keras"
    print(f"{label}: trained {len(history['loss'])} epochs in {wall / 60:.1f} min; scoring {weights.name} ...",
          flush=True)  # fmt: skip
    source = ["--weights", str(weights), "--input-size", str(args.input_size)]
    scores = score(source, data, save_dir / "map", label, cores)
    return {
        "model": model,
        "flags": flags,
        "epochs": len(history["loss"]),
        "train_wall_s": wall,
        "budget_by": budget_args[0],
        "weights": str(weights),
        "command": shlex.join(command),
        "curve": ours_curve(save_dir),
        **scores,
    }


# ---------------------------------------------------------------------- the peers
def peer_curve(run_dir: Path) -> list[dict]:
    """(epoch, minutes, val mAP@0.5) of each epoch from ultralytics' results.csv ("time": seconds so far)."""
    path = run_dir / "results.csv"
    if not path.is_file():
        return []
    with open(path, newline="", encoding="utf-8") as handle:
        rows = [{key.strip(): value.strip() for key, value in row.items() if key} for row in csv.DictReader(handle)]
    return [
        {"epoch": int(float(row["epoch"])), "minutes": float(row.get("time") or "nan") / 60,
         "map50": float(row["metrics/mAP50(B)"])}
        for row in rows
        if row.get("metrics/mAP50(B)")
    ]  # fmt: skip


def train_peer(args, python: Path, peer: str, data: Path, class_names: list[str], records: dict, out: Path, budget,
               seed, cores) -> dict:  # fmt: skip
    from utils.data.yolo import write_yolo_data

    name, model_yaml = PEERS[peer]
    label = f"{name} ({budget:g} min, seed {seed})"
    work = out / peer
    env = ultralytics_env(work / "config")
    kept = {s: [r.without_difficult() for r in records[s]] for s in ("train", "val")}
    yaml_path = write_yolo_data(work / "data", kept, class_names)
    command = [str(python), str(WORKER), "train", "--model", model_yaml, "--data", str(yaml_path)]
    command += ["--imgsz", str(args.input_size), "--minutes", f"{budget:g}", "--project", str(work)]
    command += ["--seed", str(seed), "--result", str(work / "train.json")]
    for item in args.ultralytics_arg or []:
        command += ["--arg", item]
    print(f"{label}: training (time={budget:g} min) ...", flush=True)
    code, wall = run_logged(command, work / "train.log", label, ULTRALYTICS_PROGRESS, env=env, cores=cores)
    if code != 0:
        fail(f"{label} training", work / "train.log", code)
    trained = json.loads((work / "train.json").read_text())
    print(f"{label}: trained {trained['epochs']} epochs in {wall / 60:.1f} min; predicting the test split ...",
          flush=True)  # fmt: skip

    image_list = work / "test_images.txt"
    image_list.write_text("".join(f"{r.path}\n" for r in records["test"]), encoding="utf-8")
    predicted = work / "predict.json"
    command = [str(python), str(WORKER), "predict", "--weights", trained["best"], "--images", str(image_list)]
    command += ["--imgsz", str(args.input_size), "--result", str(predicted)]
    code, _ = run_logged(command, work / "predict.log", label, ULTRALYTICS_PROGRESS, env=env, cores=cores)
    if code != 0:
        fail(f"{label} prediction", work / "predict.log", code)
    payload = json.loads(predicted.read_text())
    detections = work / "detections.json"
    detections.write_text(json.dumps(payload["detections"]), encoding="utf-8")
    source = ["--detections", str(detections), "--classes", str(data / "classes.txt")]
    scores = score(source, data, work / "map", label, cores)
    return {
        "model": name,
        "epochs": trained["epochs"],
        "train_wall_s": wall,
        "budget_by": "time",
        "weights": trained["best"],
        "command": shlex.join(command),
        "network_attempts": trained["network_attempts"] + payload["network_attempts"],
        "curve": peer_curve(Path(trained["best"]).parents[1]),
        **scores,
    }


# ---------------------------------------------------------------------- scoring and report
def score(source_args: list[str], data: Path, out: Path, label: str, cores=None) -> dict:
    """get_map.py on the test split; its mAP@0.5 and COCO AP@[.5:.95], AP50, AP75."""
    command = [sys.executable, str(ROOT / "get_map.py"), *source_args, "--data", str(data), "--split", "test"]
    command += ["--coco", "--no-plots", "--output", str(out)]
    code, _ = run_logged(command, out / "get_map.log", label, None, cores=cores)
    if code not in (0, 1):  # 1: some inputs left out, named in the log
        fail(f"{label} scoring", out / "get_map.log", code)
    results = json.loads((out / "results.json").read_text())
    coco = results["coco"]
    return {"map50": results["mAP"], "ap": coco["AP"], "ap50_coco": coco["AP50"], "ap75": coco["AP75"]}


def ratios(rows: list[dict]) -> None:
    """Adds to each of our rows, per peer row of the same cell, its ratios: row["vs"][peer] =
    {"map50": ours / peer, "ap": ...}, or None where the peer is below MIN_PEER_MAP50 (too early)."""
    peers = [r for r in rows if not r["model"].startswith("ours")]
    for row in rows:
        if not row["model"].startswith("ours"):
            continue
        row["vs"] = {}
        for peer in peers:
            if peer["map50"] is None or peer["map50"] < MIN_PEER_MAP50 or not peer["ap"]:
                row["vs"][peer["model"]] = None
            else:
                row["vs"][peer["model"]] = {"map50": row["map50"] / peer["map50"], "ap": row["ap"] / peer["ap"]}


def fmt(value, digits: int = 4, suffix: str = "") -> str:
    return "n/a" if value is None else f"{value:.{digits}f}{suffix}"


def table(rows: list[dict]) -> str:
    """One budget and seed: a row per model, with ours / each peer."""
    peers = [r["model"] for r in rows if not r["model"].startswith("ours")]
    head = "| model | epochs | train wall (min) | mAP@0.5 | AP@[.5:.95] | AP75 |"
    head += "".join(f" mAP@0.5 / {p} | AP / {p} |" for p in peers)
    lines = [head, "|" + "---|" * (6 + 2 * len(peers))]
    for r in rows:
        line = (f"| {r['model']} | {r['epochs']} | {r['train_wall_s'] / 60:.1f} | {fmt(r['map50'])} | {fmt(r['ap'])} "
                f"| {fmt(r['ap75'])} |")  # fmt: skip
        for peer in peers:
            vs = r.get("vs", {}).get(peer) if r["model"].startswith("ours") else None
            if r["model"].startswith("ours") and vs is None:
                line += " too early | too early |"
            else:
                line += f" {fmt(vs and vs['map50'], 2, 'x')} | {fmt(vs and vs['ap'], 2, 'x')} |"
        lines.append(line)
    return "\n".join(lines) + "\n"


def medians(cells: list[dict]) -> list[dict]:
    """Per budget and model: the median over the seeds of its figures and of its per-seed ratios."""
    rows = []
    for budget in sorted({c["budget"] for c in cells}):
        of_budget = [c for c in cells if c["budget"] == budget]
        models = list(dict.fromkeys(r["model"] for c in of_budget for r in c["rows"]))
        for model in models:
            mine = [r for c in of_budget for r in c["rows"] if r["model"] == model]
            row = {"budget": budget, "model": model, "seeds": len(mine)}
            for key in ("epochs", "map50", "ap", "ap75"):
                values = [r[key] for r in mine if r[key] is not None]
                row[key] = statistics.median(values) if values else None
            if model.startswith("ours"):
                row["vs"] = {}
                for peer in {p for r in mine for p in r.get("vs", {})}:
                    pairs = [r["vs"].get(peer) for r in mine]
                    row["vs"][peer] = None if None in pairs else {
                        key: statistics.median(pair[key] for pair in pairs) for key in ("map50", "ap")
                    }
            rows.append(row)
    return rows


def summary(cells: list[dict]) -> str:
    """Each cell's table, the medians over the seeds, and the refusals (after `ratios`)."""
    lines = []
    for cell in cells:
        lines.append(f"### {cell['budget']:g} min, seed {cell['seed']}\n")
        lines.append(table(cell["rows"]))
        for row in cell["rows"]:
            if not row["model"].startswith("ours") and row["map50"] is not None and row["map50"] < MIN_PEER_MAP50:
                lines.append(f"{row['model']} reached mAP@0.5 {row['map50']:.3f} < {MIN_PEER_MAP50}: the budget is too "
                             f"short for it to have learned; no ratio against it.\n")  # fmt: skip
    lines.append("### Medians over the seeds\n")
    lines.append("| budget (min) | model | seeds | epochs | mAP@0.5 | AP@[.5:.95] | AP75 | ours / peer (mAP@0.5, AP) |")
    lines.append("|---|---|---|---|---|---|---|---|")
    for row in medians(cells):
        vs = "; ".join(
            f"{peer}: " + ("too early" if v is None else f"{v['map50']:.2f}x, {v['ap']:.2f}x")
            for peer, v in sorted(row.get("vs", {}).items())
        )
        lines.append(f"| {row['budget']:g} | {row['model']} | {row['seeds']} | {fmt(row['epochs'], 1)} "
                     f"| {fmt(row['map50'])} | {fmt(row['ap'])} | {fmt(row['ap75'])} | {vs} |")  # fmt: skip
    attempts = sum(len(r.get("network_attempts", [])) for c in cells for r in c["rows"])
    lines.append(f"\nultralytics' network attempts refused: {attempts}")
    return "\n".join(lines) + "\n"


def plot_curves(cells: list[dict], path: Path) -> None:
    """learning_curves.png: val mAP@0.5 against training minutes (left) and epochs (right), a line
    per model, a row per budget and seed (each model by its own validation)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(cells), 2, figsize=(11, 3.2 * len(cells)), squeeze=False)
    for (by_time, by_epoch), cell in zip(axes, cells):
        for row in cell["rows"]:
            curve = row.get("curve") or []
            if not curve:
                continue
            style = "-" if row["model"].startswith("ours") else "--"
            by_time.plot([c["minutes"] for c in curve], [c["map50"] for c in curve], style, marker=".",
                         label=row["model"])  # fmt: skip
            by_epoch.plot([c["epoch"] for c in curve], [c["map50"] for c in curve], style, marker=".",
                          label=row["model"])  # fmt: skip
        title = f"{cell['budget']:g} min, seed {cell['seed']}"
        by_time.set(title=title, xlabel="training minutes", ylabel="val mAP@0.5", ylim=(0, 1))
        by_epoch.set(title=title, xlabel="epoch", ylabel="val mAP@0.5", ylim=(0, 1))
        by_time.grid(alpha=0.3)
        by_epoch.grid(alpha=0.3)
        by_epoch.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(out: Path, settings: dict, cells: list[dict]) -> None:
    for cell in cells:
        ratios(cell["rows"])
    (out / "results.json").write_text(json.dumps({**settings, "cells": cells, "medians": medians(cells)}, indent=2)
                                      + "\n", encoding="utf-8")  # fmt: skip
    head = [f"- {key}: {value}" for key, value in settings.items() if not isinstance(value, dict)]
    (out / "results.md").write_text("\n".join(head) + "\n\n" + summary(cells), encoding="utf-8")
    if any(row.get("curve") for cell in cells for row in cell["rows"]):
        plot_curves(cells, out / "learning_curves.png")


def cpu_flags() -> str:
    """The CPU's model and the vector / matrix extensions that set its speed (AVX2, AVX-512, AMX)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "unknown"
    model = re.search(r"^model name\s*:\s*(.+)$", text, re.M)
    flag_line = re.search(r"^flags\s*:\s*(.+)$", text, re.M)
    flags = set(flag_line.group(1).split()) if flag_line else set()
    wanted = ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_tile", "amx_bf16")
    return f"{model.group(1) if model else 'unknown'}; " + (" ".join(f for f in wanted if f in flags) or "no AVX2")


# ---------------------------------------------------------------------- main
def parse_args(argv):
    from utils.cli import parse_variant

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budgets", type=float, nargs="+", default=[15.0, 45.0], metavar="MINUTES",
                        help="training time per model, one run per budget (15 45)")  # fmt: skip
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1],
                        help="one run per seed: its data, initialisation and augmentation (0 1)")  # fmt: skip
    parser.add_argument("--input-size", type=int, default=256, help="square network input, a multiple of 32 (256)")
    parser.add_argument("--phis", type=int, nargs="+", default=[4, 0], help="our attention variants (4 0)")
    parser.add_argument("--peers", nargs="*", default=list(PEERS), choices=list(PEERS),
                        help="ultralytics models (yolov8n yolo26n)")  # fmt: skip
    parser.add_argument(
        "--preset", choices=("objects", "photos", "clutter"), default="objects", help="generated data (objects)"
    )
    parser.add_argument("--data", type=Path, default=None, help="a VOC folder with a test split, for every seed")
    parser.add_argument("--output", type=Path, default=Path("learning_out"), help="output folder (learning_out)")
    parser.add_argument("--jobs", type=int, default=1,
                        help="trainings at once, each pinned to its share of the cores (1: one at a time)")  # fmt: skip
    parser.add_argument("--train-images", type=int, default=900, help="generated training images (900)")
    parser.add_argument("--val-images", type=int, default=100, help="generated validation images (100)")
    parser.add_argument("--test-images", type=int, default=200, help="generated test images (200)")
    parser.add_argument("--skip-ultralytics", action="store_true", help="train and score ours only")
    parser.add_argument(
        "--ultralytics-python", default=None, metavar="PATH",
        help=f"Python of the ultralytics venv (default: ${ULTRALYTICS_ENV_VAR}, else .venv-ultralytics/bin/python)",
    )  # fmt: skip
    parser.add_argument("--ultralytics-arg", action="append", metavar="KEY=VALUE", help="another ultralytics setting")
    parser.add_argument("--ours-args", default="", metavar="FLAGS", help='more train.py flags, e.g. "--optimizer adam"')
    parser.add_argument(
        "--variant", action="append", type=parse_variant, default=[], metavar="NAME=FLAGS",
        help='also train each phi with these train.py flags, as a row "ours phi P NAME" beside the defaults\' '
        '(repeatable), e.g. --variant mixup="--mixup 0.5"',
    )  # fmt: skip
    parser.add_argument(
        "--ours-epochs", type=int, default=None, help="epochs for ours instead of the budget (quick checks only)"
    )  # fmt: skip
    args = parser.parse_args(argv)
    if args.input_size % 32:
        parser.error(f"--input-size must be a multiple of 32, got {args.input_size}")
    if args.jobs < 1:
        parser.error(f"--jobs must be >= 1, got {args.jobs}")
    names = [name for name, _ in args.variant]
    if len(set(names)) < len(names):
        parser.error(f"--variant names must differ, got {', '.join(names)}")
    return args


def core_slots(jobs: int) -> queue.Queue:
    """`jobs` disjoint sets of this process's cores (None: all of them, when jobs is 1)."""
    slots = queue.Queue()
    if jobs == 1:
        slots.put(None)
        return slots
    cores = sorted(os.sched_getaffinity(0))
    if jobs > len(cores):
        raise SystemExit(f"--jobs {jobs}: only {len(cores)} cores to pin them to")
    for index in range(jobs):
        slots.put(frozenset(cores[index::jobs]))
    return slots


def run_cell(args, python, budget: float, seed: int, out: Path, slots: queue.Queue) -> dict:
    """Every model for one budget and seed (--jobs at a time): {"budget", "seed", "data", "rows"}."""
    data = ensure_data(args.data or out / f"data_{args.preset}_s{seed}", args, seed)
    from nets.model_data import load_class_names

    class_names = load_class_names(data / "classes.txt")
    records = read_sets(data, class_names, ["train", "val", "test"])
    cell_dir = out / f"b{budget:g}_s{seed}"
    variants = [None, *args.variant]
    tasks = [("peer", peer) for peer in ([] if python is None else args.peers)]
    tasks += [("ours", (phi, variant)) for phi in args.phis for variant in variants]

    def run(task):
        cores = slots.get()
        try:
            kind, which = task
            if kind == "peer":
                return train_peer(args, python, which, data, class_names, records, cell_dir, budget, seed, cores)
            return train_ours(args, *which, data, cell_dir, budget, seed, cores)
        finally:
            slots.put(cores)

    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        rows = list(pool.map(run, tasks))
    return {"budget": budget, "seed": seed, "data": str(data), "data_sets": data_summary(records), "rows": rows}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out = args.output.resolve()
    args.data = args.data.resolve() if args.data else None

    python, versions = None, None
    if not args.skip_ultralytics and args.peers:
        python = ultralytics_python(args.ultralytics_python)
        versions, why = check_ultralytics(python, out / "config")
        if versions is None:
            print(
                f"ultralytics not found: {why}.\n"
                "The benchmark compares with YOLOv8n and YOLO26n, which need ultralytics in a venv of its own (it "
                f"pulls torch; no project dependency). Create it in the repository with\n    {CREATE_VENV}\n"
                f"or point --ultralytics-python (or ${ULTRALYTICS_ENV_VAR}) at one. "
                "Skipped; --skip-ultralytics trains ours alone."
            )
            return 0
        print(f"ultralytics {versions['ultralytics']}, torch {versions['torch']} ({python})")

    out.mkdir(parents=True, exist_ok=True)
    settings = {
        "budgets_minutes": args.budgets,
        "seeds": args.seeds,
        "preset": "--data" if args.data else args.preset,
        "input_size": args.input_size,
        "cpu": cpu_flags(),
        "cpu_cores": os.cpu_count(),
        "jobs": args.jobs,
        "ours_budget": f"train.py --epochs {args.ours_epochs}" if args.ours_epochs else "train.py --time",
        "ours_args": args.ours_args,
        "variants": "; ".join(f"{name}: {flags}" for name, flags in args.variant) or "none",
        "eval": "get_map.py --split test --coco: conf 0.001, NMS IoU 0.5 per class, 100 detections per image "
        "(ours: box merge at IoU 0.5, get_map.py's default)",
        "ultralytics": versions,
    }
    print(f"budgets {', '.join(f'{b:g}' for b in args.budgets)} min per model, seeds {args.seeds}, input "
          f"{args.input_size}, {args.jobs} job(s) at once; CPU: {settings['cpu']}", flush=True)  # fmt: skip
    slots = core_slots(args.jobs)
    cells: list[dict] = []
    for budget in args.budgets:
        for seed in args.seeds:
            cells.append(run_cell(args, python, budget, seed, out, slots))
            write_report(out, settings, cells)

    print()
    print(summary(cells), end="")
    print(f"written: {out / 'results.md'}, {out / 'results.json'}, {out / 'learning_curves.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
