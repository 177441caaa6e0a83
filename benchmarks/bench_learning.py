"""Learning: ours (phi 0 and 4) against ultralytics YOLOv8n, from scratch, same data, input size and time.

    python benchmarks/bench_learning.py                       # 15 minutes each, input 256, phi 0 and 4
    python benchmarks/bench_learning.py --budget 1 --train-images 60 --val-images 20 --test-images 40   # a smoke run
    python benchmarks/bench_learning.py --skip-ultralytics    # ours only
    python benchmarks/bench_learning.py --ultralytics-python /path/to/venv/bin/python

Each model trains from random weights, one after the other (never two at once), for the same
wall-clock budget on this machine, on the same generated data: the "clutter" preset of
utils/data/demo.py (ten shape classes on cluttered backgrounds, images of 320-640 px, objects of
8 px to half the image, occluded, truncated and difficult ones; --train-images / --val-images /
--test-images, --seed). Then every model is scored by get_map.py, our one evaluator, on the same
test split: VOC mAP@0.5 (all-point; difficult objects ignored) and pycocotools' AP@[.5:.95] and
AP75 (difficult objects as iscrowd), at conf 0.001, NMS IoU 0.5 (per class), 100 detections per
image for both.

    ours      train.py --phi P --input-size S --seed N, train.py's defaults otherwise (--ours-args
              adds flags), with the budget as `train.py --time MINUTES` (train.py fits its epochs
              and LR schedule to the budget from its first epochs' times). Scored: best.keras
              (the best val mAP@0.5 of the evaluated epochs: every --eval-period, the first and
              the last).
    YOLOv8n   ultralytics' yolov8n.yaml (random weights, pretrained=False), its defaults
              otherwise (optimizer auto, batch 16), with time=budget (ultralytics re-plans its
              epochs and LR schedule after each epoch so the run ends at the budget), imgsz S,
              device cpu, workers 2, amp off, plots off, val on (so best.pt is its best epoch by
              ultralytics' fitness, 0.1 mAP50 + 0.9 mAP50-95 on val); --ultralytics-arg adds
              settings. Trained on the same train / val images converted to YOLO txt labels
              (utils/data/yolo.py), difficult objects left out as our training leaves them out.
              Scored: best.pt, predicted by ultralytics (conf 0.001, iou 0.5, max_det 100) into a
              COCO results JSON that get_map.py --detections reads.

ultralytics pulls torch and is no dependency of this project: it lives in its own virtual
environment, found by --ultralytics-python, else $ULTRALYTICS_PYTHON, else .venv-ultralytics/ in
the repository. Create it with (about 6 GB; pip takes torch from this machine's disk for Python
3.11):

    python3 -m venv .venv-ultralytics
    .venv-ultralytics/bin/pip install torch==2.14.1 torchvision==0.29.1 ultralytics

Without it the benchmark says so and exits 0 before doing anything (--skip-ultralytics trains
ours alone). It runs with YOLO_OFFLINE=1 and its sockets to other hosts refused and counted
(benchmarks/ultralytics_worker.py); the count is printed and written.

Written to --output: results.json, results.md (the table), and per model its training folder,
train.log and map/ (get_map.py's results.json and results.txt).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import subprocess
import sys
import tempfile
import time
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
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
# Lines of the training logs worth echoing as progress (everything goes to train.log).
OURS_PROGRESS = re.compile(r"^(training |epoch \d+: |done: |val mAP|warning|error|Traceback)")
ULTRALYTICS_PROGRESS = re.compile(r"^\s+all\s|epochs completed|^optimizer:|Error|Traceback|network attempts")


# ---------------------------------------------------------------------- running and logging
def run_logged(
    command: list[str], log_path: Path, label: str, progress: re.Pattern | None, env=None
) -> tuple[int, float]:
    """Run `command`, its output into `log_path`; echo the lines `progress` matches (the last state of
    a progress bar line), prefixed by `label`. Returns (exit code, wall seconds)."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    with open(log_path, "w", encoding="utf-8") as log:
        log.write("$ " + shlex.join(command) + "\n")
        log.flush()
        process = subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace"
        )
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
def ensure_data(args) -> Path:
    """The VOC folder at --data, generated (the "clutter" preset) when it holds no test set."""
    from utils.data.demo import write_demo_dataset

    data = Path(args.data)
    if (data / "ImageSets" / "Main" / "test.txt").is_file() and (data / "classes.txt").is_file():
        print(f"data: {data} (as found)")
        return data
    splits = {"train": args.train_images, "val": args.val_images, "test": args.test_images}
    print(f"data: writing the clutter preset to {data} ({splits}, seed {args.seed}) ...", flush=True)
    started = time.perf_counter()
    write_demo_dataset(data, splits=splits, seed=args.seed, preset="clutter")
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
def ours_argv(args, phi: int, data: Path, save_dir: Path) -> list[str]:
    """train.py's arguments for phi (without the budget)."""
    argv = ["--phi", str(phi), "--data", str(data), "--classes", str(data / "classes.txt")]
    argv += ["--input-size", str(args.input_size), "--seed", str(args.seed), "--output", str(save_dir)]
    return argv + shlex.split(args.ours_args)


def train_ours(args, phi: int, data: Path, out: Path) -> dict:
    label = f"phi {phi}"
    save_dir = out / f"phi{phi}"
    argv = ours_argv(args, phi, data, save_dir)
    if args.ours_epochs:
        budget_args = ["--epochs", str(args.ours_epochs)]
    else:
        budget_args = ["--time", f"{args.budget:g}"]
    command = [sys.executable, str(ROOT / "train.py"), *argv, *budget_args]
    print(f"{label}: training ({' '.join(budget_args)}) ...", flush=True)
    code, wall = run_logged(command, save_dir / "train.log", label, OURS_PROGRESS)
    if code != 0:
        fail(f"{label} training", save_dir / "train.log", code)
    history = json.loads((save_dir / "history.json").read_text())
    weights = save_dir / "best.keras"
    print(
        f"{label}: trained {len(history['loss'])} epochs in {wall / 60:.1f} min; scoring {weights.name} ...", flush=True
    )
    scores = score(["--weights", str(weights), "--input-size", str(args.input_size)], data, save_dir / "map", label)
    return {
        "model": f"ours phi {phi}",
        "epochs": len(history["loss"]),
        "train_wall_s": wall,
        "budget_by": budget_args[0],
        "weights": str(weights),
        "command": shlex.join(command),
        **scores,
    }


# ---------------------------------------------------------------------- YOLOv8n
def train_ultralytics(args, python: Path, data: Path, class_names: list[str], records: dict, out: Path) -> dict:
    from utils.data.yolo import write_yolo_data

    label = "YOLOv8n"
    work = out / "yolov8n"
    config_dir = work / "config"
    env = ultralytics_env(config_dir)
    kept = {s: [r.without_difficult() for r in records[s]] for s in ("train", "val")}
    yaml_path = write_yolo_data(work / "data", kept, class_names)
    command = [str(python), str(WORKER), "train", "--data", str(yaml_path), "--imgsz", str(args.input_size)]
    command += ["--minutes", f"{args.budget:g}", "--project", str(work), "--seed", str(args.seed)]
    command += ["--result", str(work / "train.json")]
    for item in args.ultralytics_arg or []:
        command += ["--arg", item]
    print(f"{label}: training (time={args.budget:g} min) ...", flush=True)
    code, wall = run_logged(command, work / "train.log", label, ULTRALYTICS_PROGRESS, env=env)
    if code != 0:
        fail(f"{label} training", work / "train.log", code)
    trained = json.loads((work / "train.json").read_text())
    print(
        f"{label}: trained {trained['epochs']} epochs in {wall / 60:.1f} min; predicting the test split ...", flush=True
    )

    image_list = work / "test_images.txt"
    image_list.write_text("".join(f"{r.path}\n" for r in records["test"]), encoding="utf-8")
    predicted = work / "predict.json"
    command = [str(python), str(WORKER), "predict", "--weights", trained["best"], "--images", str(image_list)]
    command += ["--imgsz", str(args.input_size), "--result", str(predicted)]
    code, _ = run_logged(command, work / "predict.log", label, ULTRALYTICS_PROGRESS, env=env)
    if code != 0:
        fail(f"{label} prediction", work / "predict.log", code)
    payload = json.loads(predicted.read_text())
    detections = work / "detections.json"
    detections.write_text(json.dumps(payload["detections"]), encoding="utf-8")
    scores = score(["--detections", str(detections), "--classes", str(data / "classes.txt")], data, work / "map", label)
    return {
        "model": "YOLOv8n (ultralytics)",
        "epochs": trained["epochs"],
        "train_wall_s": wall,
        "budget_by": "time",
        "weights": trained["best"],
        "command": shlex.join(command),
        "network_attempts": trained["network_attempts"] + payload["network_attempts"],
        **scores,
    }


# ---------------------------------------------------------------------- scoring and report
def score(source_args: list[str], data: Path, out: Path, label: str) -> dict:
    """get_map.py on the test split; its mAP@0.5 and COCO AP@[.5:.95], AP50, AP75."""
    command = [sys.executable, str(ROOT / "get_map.py"), *source_args, "--data", str(data), "--split", "test"]
    command += ["--coco", "--no-plots", "--output", str(out)]
    code, _ = run_logged(command, out / "get_map.log", label, None)
    if code not in (0, 1):  # 1: some inputs left out, named in the log
        fail(f"{label} scoring", out / "get_map.log", code)
    results = json.loads((out / "results.json").read_text())
    coco = results["coco"]
    return {"map50": results["mAP"], "ap": coco["AP"], "ap50_coco": coco["AP50"], "ap75": coco["AP75"]}


def ratios(rows: list[dict]) -> None:
    reference = next((r for r in rows if r["model"].startswith("YOLOv8n")), None)

    def ratio(ours, theirs):
        return ours / theirs if ours is not None and theirs else None

    for row in rows:
        if reference is None or row is reference:
            row["map50_ratio"] = row["ap_ratio"] = None
        else:
            row["map50_ratio"] = ratio(row["map50"], reference["map50"])
            row["ap_ratio"] = ratio(row["ap"], reference["ap"])


def fmt_ratio(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}x"


def table(rows: list[dict]) -> str:
    def number(value, digits=4, suffix=""):
        return "n/a" if value is None else f"{value:.{digits}f}{suffix}"

    lines = [
        "| model | epochs | train wall (min) | mAP@0.5 | AP@[.5:.95] | AP75 | mAP@0.5 / YOLOv8n | AP / YOLOv8n |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['epochs']} | {r['train_wall_s'] / 60:.1f} | {number(r['map50'])} | {number(r['ap'])} "
            f"| {number(r['ap75'])} | {number(r['map50_ratio'], 2, 'x')} | {number(r['ap_ratio'], 2, 'x')} |"
        )
    return "\n".join(lines) + "\n"


def summary(rows: list[dict]) -> str:
    """The table, ours / YOLOv8n per model, and YOLOv8n's refused network attempts (after `ratios`)."""
    lines = [table(rows).rstrip("\n")]
    reference = next((r for r in rows if r["model"].startswith("YOLOv8n")), None)
    for row in rows:
        if reference is not None and row is not reference:
            zero = " (YOLOv8n scored 0)" if not reference["map50"] or not reference["ap"] else ""
            lines.append(
                f"{row['model']} / YOLOv8n: mAP@0.5 {fmt_ratio(row['map50_ratio'])}, "
                f"AP@[.5:.95] {fmt_ratio(row['ap_ratio'])}{zero}"
            )
    if reference is not None:
        lines.append(f"YOLOv8n network attempts refused: {len(reference['network_attempts'])}")
    return "\n".join(lines) + "\n"


def write_report(out: Path, settings: dict, rows: list[dict]) -> None:
    ratios(rows)
    (out / "results.json").write_text(json.dumps({**settings, "rows": rows}, indent=2) + "\n", encoding="utf-8")
    head = [f"- {key}: {value}" for key, value in settings.items() if not isinstance(value, dict)]
    head.append("- data: " + ", ".join(f"{k} {v['images']} images / {v['objects']} objects ({v['difficult']} difficult)"
                                       for k, v in settings["data_sets"].items()))  # fmt: skip
    (out / "results.md").write_text("\n".join(head) + "\n\n" + table(rows), encoding="utf-8")


# ---------------------------------------------------------------------- main
def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget", type=float, default=15.0, metavar="MINUTES", help="training time per model (15)")
    parser.add_argument("--input-size", type=int, default=256, help="square network input, a multiple of 32 (256)")
    parser.add_argument("--phis", type=int, nargs="+", default=[0, 4], help="our attention variants (0 4)")
    parser.add_argument("--data", type=Path, default=None, help="VOC folder; generated when absent (OUTPUT/data)")
    parser.add_argument("--output", type=Path, default=Path("learning_out"), help="output folder (learning_out)")
    parser.add_argument("--seed", type=int, default=0, help="data, initialisation and augmentation seed (0)")
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
        "--ours-epochs", type=int, default=None, help="epochs for ours instead of the budget (quick checks only)"
    )  # fmt: skip
    args = parser.parse_args(argv)
    if args.input_size % 32:
        parser.error(f"--input-size must be a multiple of 32, got {args.input_size}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out = args.output.resolve()
    args.data = (args.data or out / "data").resolve()

    python, versions = None, None
    if not args.skip_ultralytics:
        python = ultralytics_python(args.ultralytics_python)
        versions, why = check_ultralytics(python, out / "yolov8n" / "config")
        if versions is None:
            print(
                f"ultralytics not found: {why}.\n"
                "The benchmark compares with YOLOv8n, which needs ultralytics in a venv of its own (it pulls "
                f"torch; no project dependency). Create it in the repository with\n    {CREATE_VENV}\n"
                f"or point --ultralytics-python (or ${ULTRALYTICS_ENV_VAR}) at one. "
                "Skipped; --skip-ultralytics trains ours alone."
            )
            return 0
        print(f"ultralytics {versions['ultralytics']}, torch {versions['torch']} ({python})")

    out.mkdir(parents=True, exist_ok=True)
    data = ensure_data(args)
    class_names = (data / "classes.txt").read_text(encoding="utf-8").split("\n")
    class_names = [name for name in class_names if name]
    records = read_sets(data, class_names, ["train", "val", "test"])
    settings = {
        "budget_minutes": args.budget,
        "input_size": args.input_size,
        "seed": args.seed,
        "cpu_cores": os.cpu_count(),
        "data": str(data),
        "classes": len(class_names),
        "ours_budget": f"train.py --epochs {args.ours_epochs}" if args.ours_epochs else "train.py --time",
        "ours_weights": "best.keras",
        "yolov8n_weights": "best.pt",
        "eval": "get_map.py --split test --coco: conf 0.001, NMS IoU 0.5 per class, 100 detections per image",
        "ultralytics": versions,
        "data_sets": data_summary(records),
    }
    print(
        f"budget {args.budget:g} min per model, input {args.input_size}, {os.cpu_count()} CPU cores; "
        f"ours: {settings['ours_budget']}",
        flush=True,
    )
    rows: list[dict] = []
    if python is not None:
        rows.append(train_ultralytics(args, python, data, class_names, records, out))
        write_report(out, settings, rows)
    for phi in args.phis:
        rows.append(train_ours(args, phi, data, out))
        write_report(out, settings, rows)

    print()
    print(summary(rows), end="")
    print(f"written: {out / 'results.md'}, {out / 'results.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
