"""Training throughput: the bare train step vs the full input pipeline (as TensorFlow takes it, through
tf.data, and as the other backends take it, NumPy arrays), side by side.

    python benchmarks/bench_train.py                      # 416 and the demo's 128, CPU
    python benchmarks/bench_train.py --sizes 416 --xla    # XLA-compiled forward/backward
    python benchmarks/bench_train.py --precision bfloat16 # CPUs with AMX / AVX512-BF16 (auto picks it there)
    python benchmarks/bench_train.py --compare-precision float32   # auto's precision beside float32
    python benchmarks/bench_train.py --epochs-measure 3   # time between epochs (below)
    python benchmarks/bench_train.py --epochs-measure 3 --tree /tmp/before --tree .   # two checkouts, one run
    python benchmarks/bench_train.py --strategy mirrored  # all local GPUs (--batch-size is global)
    python benchmarks/bench_train.py --epoch-end 8        # the end of an epoch, tf.data autotuning on / off
    python benchmarks/bench_train.py --sizes 256 --batch-size 16 --peer yolov8n --compare-xla   # beside YOLOv8n and XLA

For each input size it builds the real training step (utils.training.trainer, phi 4 by default) and
alternates, round by round:
    bare      the train step on one batch already in memory (no input work at all);
    pipeline  the train step fed by utils.data.dataset (decode, mosaic, mixup, jitter, flip, HSV;
              parallel loaders a batch or two ahead) over a generated shapes set, as train.py
              feeds it on TensorFlow: `YoloDataset.batches` carried by tf.data
              (`YoloDataset.dataset`);
    numpy     the same step fed by the same kind of samples (an epoch of its own) straight from
              `YoloDataset.batches`, NumPy arrays, as JAX and torch train on them.
It prints images/s (median over rounds), the pipeline's overhead = bare / pipeline - 1
(goal: <= 15 %) and the NumPy arrays' images/s against tf.data's (what tf.data's transport costs).
--compare-xla adds the same step XLA-compiled, --compare-precision P the same step at precision P
(float32 beside the bfloat16 that auto picks on AMX CPUs, say), and --peer ultralytics' bare step
(benchmarks/ultralytics_worker.py steps: forward, its loss, backward, SGD; run in its own venv, a
process a round, timed after a warm-up), each alternating with ours round by round.

--epochs-measure N runs a real training of N epochs through Trainer.run() (phi 4, input 256,
batch 16, the train.py defaults otherwise) on generated shapes images of 320-640 px, and prints
per epoch: the train steps' time summed, the epoch's wall time (first step to the next epoch's
first step, or to the end of run()), the gap (last step of the epoch to the next epoch's first
step, or to the end of run() after the last epoch) and its share of the epoch, and what the gap is
made of: val loss, val mAP (evaluate), each epoch-end callback (saving, history, plots,
TensorBoard), the input pipeline (pipeline_end: train_epoch after its last step, where the epoch's
pipeline is deleted; pipeline_start: the next train_epoch before its first step), the end of
training (on_train_end) and the rest. With --tree (repeatable) each checkout is measured in its
own process, one after the other on the same data, and the totals are printed side by side
(goal: the gap <= 10 % of the epoch).
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

# train.py's --precision choices (utils.defaults.PRECISIONS): a literal, as a worker imports utils only
# from its --worker-tree, after parsing.
PRECISIONS = ("auto", "float32", "float16", "bfloat16")

ROOT = Path(__file__).resolve().parents[1]


def alternatives(args) -> dict[str, dict]:
    """Column name -> the config changes of each step timed beside the plain one (--compare-*)."""
    steps = {}
    if args.compare_xla:
        steps["xla"] = {"xla": True}
    if args.compare_precision:
        steps[args.compare_precision] = {"precision": args.compare_precision}
    return steps


def bench_size(size: int, args, data_root: Path) -> dict:
    from utils.training.config import TrainConfig
    from utils.training.trainer import Trainer

    config = TrainConfig(
        phi=args.phi,
        data=str(data_root),
        classes=str(data_root / "classes.txt"),
        input_size=str(size),
        epochs=1000,
        batch_size=args.batch_size,
        mosaic=args.mosaic,
        mixup=args.mixup,
        precision=args.precision,
        xla=args.xla,
        strategy=args.strategy,
        eval_period=0,
        save_dir=tempfile.mkdtemp(),
    )
    trainer = Trainer(config)
    trainer.setup()

    def pipeline_batches(epoch):
        # Mosaic and mixup are on: the epochs here are far below --mosaic-ratio of the 1000.
        return iter(trainer.train_batches(epoch))

    def numpy_batches(epoch):
        return iter(trainer.train_data.batches(args.batch_size, epoch=epoch, mosaic=True))

    batches = pipeline_batches(0)  # also makes the step (no frozen phase without --weights)
    train_step = trainer.train_step
    trainer.optimizer.learning_rate = 1e-4
    fixed = next(batches)
    for _ in range(args.warmup):
        float(train_step(fixed)[0])
    float(train_step(next(batches))[0])

    def same_step(**changes):
        """The same step with `changes` to the config, from the same weights (alternates with the plain one)."""
        other = Trainer(dataclasses.replace(config, **changes))
        other.setup()
        iter(other.train_batches(0))
        other.model.set_weights(trainer.model.get_weights())
        other.optimizer.learning_rate = 1e-4
        for _ in range(args.warmup):
            float(other.train_step(fixed)[0])
        return other.train_step

    others = {name: same_step(**changes) for name, changes in alternatives(args).items()}

    def rate(step, batches) -> float:
        """Images per second of args.steps steps of `step`, each on the next of `batches`."""
        start = time.perf_counter()
        for _ in range(args.steps):
            loss = step(next(batches))[0]
        float(loss)
        return args.steps * args.batch_size / (time.perf_counter() - start)

    bare, piped, numpy_piped, peer = [], [], [], []
    other_rates = {name: [] for name in others}
    epoch = 1
    for _ in range(args.rounds):
        bare.append(rate(train_step, itertools.repeat(fixed)))
        for name, step in others.items():
            other_rates[name].append(rate(step, itertools.repeat(fixed)))
        if args.peer:
            peer.append(args.steps * args.batch_size / sum(peer_step_seconds(args, size)))
        piped.append(rate(train_step, pipeline_batches(epoch)))
        numpy = numpy_batches(epoch + 1)
        numpy_piped.append(rate(train_step, numpy))
        numpy.close()  # cancels the loads not started
        epoch += 2
    b, p = float(np.median(bare)), float(np.median(piped))
    result = {"size": size, "bare": b, "pipeline": p, "overhead": b / p - 1, "numpy": float(np.median(numpy_piped))}
    result["others"] = {name: float(np.median(rates)) for name, rates in other_rates.items()}
    if peer:
        result["peer"] = float(np.median(peer))
    return result


def peer_step_seconds(args, size: int) -> list[float]:
    """The bare training steps of ultralytics' --peer model (benchmarks/ultralytics_worker.py steps,
    in its own venv), `args.steps` of them after a warm-up, at `size` and `args.batch_size`."""
    import json
    import subprocess

    with tempfile.TemporaryDirectory() as tmp:
        result = Path(tmp) / "steps.json"
        command = [str(args.ultralytics_python), str(ROOT / "benchmarks" / "ultralytics_worker.py"), "steps"]
        command += ["--model", f"{args.peer}.yaml", "--imgsz", str(size), "--batch", str(args.batch_size)]
        command += ["--steps", str(args.steps), "--warmup", str(args.warmup), "--result", str(result)]
        env = {**os.environ, "YOLO_OFFLINE": "1", "YOLO_CONFIG_DIR": str(Path(tmp) / "config")}
        done = subprocess.run(command, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"{args.peer}: the step timing failed:\n{done.stderr[-2000:]}")
        return json.loads(result.read_text())["seconds"]


# ---------------------------------------------------------------------- --epochs-measure
GAP_PARTS = (
    "val_loss", "val_map", "save", "history", "plots", "tensorboard", "pipeline_end", "pipeline_start", "end", "other"
)  # fmt: skip
CALLBACK_PART = {
    "CheckpointWriter": "save", "HistoryWriter": "history", "ResultsCSV": "history", "Plots": "plots",
    "TensorBoard": "tensorboard",
}  # fmt: skip


def _timed_method(owner, name, record):
    """Replace owner.name (on the instance) by a wrapper that calls record(start, end) around it."""
    original = getattr(owner, name)

    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            record(start, time.perf_counter())

    setattr(owner, name, wrapper)


def measure_epochs(args, data_root: Path, save_dir: Path) -> dict:
    """Train args.epochs_measure epochs through Trainer.run(), timing the lifecycle from outside.

    Only the trainer's public methods are wrapped (train_step, train_epoch, validate, evaluate,
    the callbacks' events), so any checkout with that lifecycle can be measured.
    """
    from utils.training.config import TrainConfig
    from utils.training.trainer import Trainer

    config = TrainConfig(
        phi=args.phi,
        data=str(data_root),
        classes=str(data_root / "classes.txt"),
        input_size=str(args.input_size),
        epochs=args.epochs_measure,
        freeze_epochs=args.freeze_epochs,
        batch_size=args.batch_size,
        freeze_batch_size=args.freeze_batch_size or args.batch_size,
        eval_period=args.eval_period,
        save_period=args.save_period,
        save_dir=str(save_dir),
    )
    trainer = Trainer(config)
    epochs: list[dict] = []  # per epoch: "steps" [(start, end)], "train_epoch" (start, end), "parts" {name: s}

    def part(name):
        def record(start, end):
            parts = epochs[-1]["parts"]
            parts[name] = parts.get(name, 0.0) + end - start

        return record

    _timed_method(trainer, "train_step", lambda start, end: epochs[-1]["steps"].append((start, end)))
    _timed_method(trainer, "validate", part("validate"))
    # validate() calls evaluate_maps() where the trainer has it (mAP@0.5 and @.5:.95), evaluate() before.
    _timed_method(trainer, "evaluate_maps" if hasattr(trainer, "evaluate_maps") else "evaluate", part("val_map"))
    for callback in trainer.callbacks:
        name = CALLBACK_PART.get(type(callback).__name__, type(callback).__name__)
        if hasattr(callback, "on_epoch_end"):
            _timed_method(callback, "on_epoch_end", part(name))
        if hasattr(callback, "on_train_end"):
            _timed_method(callback, "on_train_end", part("end"))
    original_train_epoch = trainer.train_epoch

    def train_epoch(epoch):
        epochs.append({"steps": [], "parts": {}})
        start = time.perf_counter()
        try:
            return original_train_epoch(epoch)
        finally:
            epochs[-1]["train_epoch"] = (start, time.perf_counter())

    trainer.train_epoch = train_epoch
    started = time.perf_counter()
    trainer.run()
    end_of_run = time.perf_counter()

    rows = []
    for i, e in enumerate(epochs):
        first, last = e["steps"][0][0], e["steps"][-1][1]
        following = epochs[i + 1]["steps"][0][0] if i + 1 < len(epochs) else end_of_run
        step_sum = sum(b - a for a, b in e["steps"])
        gap = following - last
        parts = dict.fromkeys(GAP_PARTS, 0.0)
        p = e["parts"]
        parts["val_map"] = p.get("val_map", 0.0)
        parts["val_loss"] = p.get("validate", 0.0) - parts["val_map"]
        for name in ("save", "history", "plots", "tensorboard", "end"):
            parts[name] = p.get(name, 0.0)
        epoch_end = e["train_epoch"][1]
        parts["pipeline_end"] = epoch_end - last  # this epoch's train_epoch after its last step
        if i + 1 < len(epochs):
            nxt = epochs[i + 1]
            parts["pipeline_start"] = nxt["steps"][0][0] - nxt["train_epoch"][0]  # the next one's before its first
        parts["other"] = gap - sum(v for k, v in parts.items() if k != "other")
        rows.append(
            {
                "epoch": i + 1,
                "steps": len(e["steps"]),
                "step_sum": step_sum,
                "first_step": e["steps"][0][1] - e["steps"][0][0],
                "in_epoch_wait": (last - first) - step_sum,
                "wall": following - first,
                "gap": gap,
                "parts": parts,
            }
        )
    first_step = epochs[0]["steps"][0][0]
    return {"rows": rows, "setup_and_first_step": first_step - started, "total_wall": end_of_run - started}


def print_epoch_rows(result: dict, label: str) -> None:
    print(f"[{label}] setup until the first step: {result['setup_and_first_step']:.1f} s")
    columns = ("epoch", 5), ("steps", 5), ("step sum", 9), ("(first)", 7), ("wall", 8), ("gap", 7), ("share", 6)
    print(" ".join(f"{name:>{width}}" for name, width in columns) + "  gap made of (s)")
    for r in result["rows"]:
        made_of = ", ".join(f"{k} {v:.1f}" for k, v in r["parts"].items() if abs(v) >= 0.05)
        print(
            f"{r['epoch']:>5} {r['steps']:>5} {r['step_sum']:>8.1f}s {r['first_step']:>6.1f}s {r['wall']:>7.1f}s "
            f"{r['gap']:>6.1f}s {100 * r['gap'] / r['wall']:>5.1f}%  {made_of}",
            flush=True,
        )
    totals = epoch_totals(result)
    print(
        f"{'all':>5} {'':>5} {totals['step_sum']:>8.1f}s {'':>7} {totals['wall']:>7.1f}s {totals['gap']:>6.1f}s "
        f"{100 * totals['share']:>5.1f}%  (steps {100 * totals['step_sum'] / totals['wall']:.0f}% of the epochs' wall; "
        f"in-epoch data wait {totals['in_epoch_wait']:.1f} s)",
        flush=True,
    )


def epoch_totals(result: dict) -> dict:
    rows = result["rows"]
    total = {k: sum(r[k] for r in rows) for k in ("step_sum", "wall", "gap", "in_epoch_wait")}
    total["share"] = total["gap"] / total["wall"]
    total["parts"] = {k: sum(r["parts"][k] for r in rows) for k in GAP_PARTS}
    return total


def run_epochs_measure(args) -> int:
    """The parent: make the data once, then measure each --tree in its own process."""
    import json
    import subprocess

    from utils.data.demo import write_demo_dataset

    trees = [Path(t).resolve() for t in (args.tree or [ROOT])]
    with tempfile.TemporaryDirectory() as tmp:
        val = max(1, round(args.images * args.val_fraction))
        data = write_demo_dataset(
            Path(tmp) / "shapes", splits={"train": args.images - val, "val": val}, image_size=(320, 640)
        )
        print(
            f"{args.epochs_measure} epochs, {args.images - val} train / {val} val images of 320-640 px, input "
            f"{args.input_size}, phi {args.phi}, batch {args.batch_size}, eval period {args.eval_period}, "
            f"save period {args.save_period}, freeze epochs {args.freeze_epochs}; CPU ({os.cpu_count()} cores)",
            flush=True,
        )
        results = {}
        for i, tree in enumerate(trees):
            out = Path(tmp) / f"result{i}.json"
            command = [sys.executable, __file__, *sys.argv[1:], "--worker-tree", str(tree), "--worker-data", str(data)]
            command += ["--worker-json", str(out)]
            subprocess.run(command, check=True)
            results[str(tree)] = json.loads(out.read_text())
    if len(results) > 1:
        print("\nside by side (sums over the epochs):")
        print(f"{'tree':<40} {'step sum':>9} {'wall':>8} {'gap':>7} {'share':>6}  gap made of (s)")
        for tree, result in results.items():
            t = epoch_totals(result)
            made_of = ", ".join(f"{k} {v:.1f}" for k, v in t["parts"].items() if abs(v) >= 0.05)
            print(
                f"{tree[-40:]:<40} {t['step_sum']:>8.1f}s {t['wall']:>7.1f}s {t['gap']:>6.1f}s "
                f"{100 * t['share']:>5.1f}%  {made_of}"
            )
    return 0


def run_epochs_worker(args) -> int:
    """The child: measure the checkout at --worker-tree (imported from there) and write JSON."""
    import json

    tree = Path(args.worker_tree)
    sys.path.insert(0, str(tree))
    for name in [m for m in sys.modules if m == "utils" or m.startswith(("utils.", "nets"))]:
        del sys.modules[name]
    with tempfile.TemporaryDirectory() as save_dir:
        result = measure_epochs(args, Path(args.worker_data), Path(save_dir))
    print_epoch_rows(result, str(tree))
    Path(args.worker_json).write_text(json.dumps(result))
    return 0


# ---------------------------------------------------------------------- --epoch-end
def run_epoch_end(args) -> int:
    """How long the end of an epoch takes in Trainer.train_epoch, from the end of its last train step
    until it returns (the epoch's input pipeline is deleted then), with tf.data's autotuning on
    (as before) and off (utils.data.dataset now), epochs alternating in one process."""
    import tensorflow as tf

    from utils.data.demo import write_demo_dataset
    from utils.training.config import TrainConfig
    from utils.training.trainer import Trainer

    print(
        f"end of an epoch: {args.images} images of 320-640 px, input {args.input_size}, phi {args.phi}, "
        f"batch {args.batch_size}, {args.epoch_end} epochs; CPU ({os.cpu_count()} cores)"
    )
    with tempfile.TemporaryDirectory() as tmp:
        data = write_demo_dataset(Path(tmp) / "shapes", splits={"train": args.images}, image_size=(320, 640))
        config = TrainConfig(
            phi=args.phi, data=str(data), classes=str(data / "classes.txt"), input_size=str(args.input_size),
            epochs=args.epoch_end, batch_size=args.batch_size, eval_period=0, save_dir=str(Path(tmp) / "run"),
        )  # fmt: skip
        trainer = Trainer(config)
        trainer.setup()
        make_dataset, train_step = trainer.train_data.dataset, trainer.train_step
        state = {}

        def dataset(*a, **k):
            options = tf.data.Options()
            options.autotune.enabled = state["autotune"]
            return make_dataset(*a, **k).with_options(options)

        def timed_step(batch):
            try:
                return train_step(batch)
            finally:
                state["last"] = time.perf_counter()

        trainer.train_data.dataset, trainer.train_step = dataset, timed_step
        ends = {"autotune on (before)": [], "autotune off (now)": []}
        for epoch in range(args.epoch_end):
            way = list(ends)[epoch % 2]
            state["autotune"] = epoch % 2 == 0
            logs = trainer.train_epoch(epoch)
            ends[way].append(time.perf_counter() - state["last"])
            print(
                f"epoch {epoch + 1} {way:>20}: {logs['steps']} steps in {logs['seconds']:.1f} s, then "
                f"{ends[way][-1]:.2f} s from the last step to the end of train_epoch",
                flush=True,
            )
    for way, values in ends.items():
        print(f"{way:>20}: median {np.median(values):.2f} s, max {max(values):.2f} s over {len(values)} epochs")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[416, 128], help="square input sizes")
    parser.add_argument("--phi", type=int, default=4, help="attention (0-4)")
    parser.add_argument("--batch-size", type=int, default=None, help="(default: 8; --epochs-measure 16)")
    parser.add_argument("--steps", type=int, default=6, help="steps per round and mode")
    parser.add_argument("--rounds", type=int, default=3, help="alternating bare / pipeline rounds")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    parser.add_argument(
        "--images", type=int, default=None, help="images in the generated set (default: 64; --epochs-measure 900)"
    )
    parser.add_argument("--mosaic", type=float, default=0.5, help="mosaic probability")
    parser.add_argument("--mixup", type=float, default=0.5, help="mixup probability (on mosaic samples)")
    parser.add_argument("--xla", action="store_true", help="XLA-compile forward and backward")
    parser.add_argument("--compare-xla", action="store_true", help="also the XLA-compiled step, alternating")
    parser.add_argument("--compare-precision", choices=PRECISIONS[1:], default=None,
                        help="also the step at this precision, alternating (e.g. float32)")  # fmt: skip
    parser.add_argument("--peer", choices=("yolov8n", "yolo26n"), default=None,
                        help="also ultralytics' bare step of this model, alternating (needs its venv)")  # fmt: skip
    parser.add_argument("--ultralytics-python", type=Path, default=ROOT / ".venv-ultralytics" / "bin" / "python",
                        help="the Python of the ultralytics venv (for --peer)")  # fmt: skip
    parser.add_argument("--precision", choices=PRECISIONS, default="auto",
                        help="as train.py's (auto: float16 on a GPU, bfloat16 on AMX / AVX512-BF16 CPUs)")  # fmt: skip
    parser.add_argument("--mixed-precision", dest="precision", action="store_const", const="float16",
                        help=argparse.SUPPRESS)  # fmt: skip
    parser.add_argument("--strategy", default="none", help="none, or mirrored (all local GPUs), as train.py")
    epochs = parser.add_argument_group("--epochs-measure (time between epochs)")
    epochs.add_argument("--epochs-measure", type=int, default=0, metavar="N", help="train N epochs, time the gaps")
    epochs.add_argument("--input-size", type=int, default=256)
    epochs.add_argument("--val-fraction", type=float, default=0.1, help="of --images")
    epochs.add_argument("--eval-period", type=int, default=1, help="val mAP every this many epochs (train.py: 10)")
    epochs.add_argument("--save-period", type=int, default=10, help="numbered .keras every this many epochs")
    epochs.add_argument("--freeze-epochs", type=int, default=0, help="epochs with the backbone frozen first")
    epochs.add_argument("--freeze-batch-size", type=int, default=None, help="(default: --batch-size)")
    epochs.add_argument("--tree", action="append", help="checkout to measure (repeatable; default: this one)")
    for hidden in ("--worker-tree", "--worker-data", "--worker-json"):
        epochs.add_argument(hidden, help=argparse.SUPPRESS)
    epochs.add_argument("--epoch-end", type=int, default=0, metavar="N", help="N epochs timing their end")
    parser.add_argument("-v", "--verbose", action="store_true", help="the trainings' epoch lines and progress bars")
    args = parser.parse_args(argv)
    if not args.worker_tree:  # (a worker imports utils from its --worker-tree, so nothing of it before)
        from utils.cli import setup_logging

        # The trainings' warnings; their epoch lines and progress bars only with -v (the benchmark prints its table).
        setup_logging(logging.DEBUG if args.verbose else logging.WARNING)
    if args.epoch_end:
        args.images = args.images or 104
        args.batch_size = args.batch_size or 8
        return run_epoch_end(args)
    if args.epochs_measure:
        args.images = args.images or 900
        args.batch_size = args.batch_size or 16
        return run_epochs_worker(args) if args.worker_tree else run_epochs_measure(args)
    args.images = args.images or 64
    args.batch_size = args.batch_size or 8

    import tensorflow as tf

    from utils.data.demo import write_demo_dataset
    from utils.training.config import resolve_precision

    gpus = len(tf.config.list_physical_devices("GPU"))
    device = f"{gpus} GPU(s)" if gpus else f"CPU ({os.cpu_count()} cores)"
    print(
        f"device {device}, phi {args.phi}, batch {args.batch_size}, mosaic {args.mosaic}, mixup {args.mixup}, "
        f"xla {args.xla}, precision {resolve_precision(args.precision)}, strategy {args.strategy}"
    )
    if args.peer and not args.ultralytics_python.exists():
        print(f"--peer {args.peer}: no ultralytics venv at {args.ultralytics_python} (benchmarks/bench_learning.py "
              "says how to make one); skipped")  # fmt: skip
        args.peer = None
    extra = "".join(f" {name + ' img/s':>14}" for name in alternatives(args))
    extra += f" {args.peer + ' img/s':>14}" if args.peer else ""
    print(f"{'size':>6} {'bare img/s':>11} {'pipeline img/s':>15} {'overhead':>9} {'numpy img/s':>12}{extra}")
    with tempfile.TemporaryDirectory() as tmp:
        for size in args.sizes:
            root = write_demo_dataset(Path(tmp) / f"shapes{size}", splits={"train": args.images}, image_size=size)
            r = bench_size(size, args, root)
            line = f"{r['size']:>6} {r['bare']:>11.2f} {r['pipeline']:>15.2f} {100 * r['overhead']:>8.1f}%"
            line += f" {r['numpy']:>12.2f}"
            line += "".join(f" {rate:>14.2f}" for rate in r["others"].values())
            line += f" {r['peer']:>14.2f}" if "peer" in r else ""
            print(line, flush=True)
            ratio = r["numpy"] / r["pipeline"]
            print(f"  NumPy batches / the same through tf.data: {ratio:.2f}x the images per second")
            if "peer" in r:
                print(f"  ours / {args.peer}, bare step: {r['bare'] / r['peer']:.2f}x the images per second")
            for name, rate in r["others"].items():
                print(f"  {name} / plain, bare step: {rate / r['bare']:.2f}x the images per second")
    return 0


if __name__ == "__main__":
    sys.exit(main())
