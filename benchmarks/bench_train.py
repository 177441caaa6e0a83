"""Training throughput: the bare train step vs the full input pipeline, side by side.

    python benchmarks/bench_train.py                      # 416 and the demo's 128, CPU
    python benchmarks/bench_train.py --sizes 416 --xla    # XLA-compiled forward/backward
    python benchmarks/bench_train.py --mixed-precision    # GPUs
    python benchmarks/bench_train.py --strategy mirrored  # all local GPUs (--batch-size is global)

For each input size it builds the real training step (utils.training.trainer, phi 4 by default) and
alternates, round by round:
    bare      the train step on one batch already in memory (no input work at all);
    pipeline  the train step fed by utils.data.dataset (decode, mosaic, mixup, jitter, flip, HSV;
              prefetching, parallel loaders) over a generated shapes set.
It prints images/s (median over rounds) and the pipeline's overhead = bare / pipeline - 1
(goal: <= 15 %).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402


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
        mixed_precision=args.mixed_precision,
        xla=args.xla,
        strategy=args.strategy,
        eval_period=0,
        save_dir=tempfile.mkdtemp(),
    )
    trainer = Trainer(config, log=lambda *a: None)
    trainer.setup()

    def pipeline_batches(epoch):
        # Mosaic and mixup are on: the epochs here are far below --mosaic-ratio of the 1000.
        return iter(trainer.train_batches(epoch))

    batches = pipeline_batches(0)  # also makes the step (no frozen phase without --weights)
    train_step = trainer.train_step
    trainer.optimizer.learning_rate = 1e-4
    fixed = next(batches)
    for _ in range(args.warmup):
        float(train_step(fixed)[0])
    float(train_step(next(batches))[0])

    bare, piped = [], []
    epoch = 1
    for _ in range(args.rounds):
        start = time.perf_counter()
        for _ in range(args.steps):
            loss = train_step(fixed)[0]
        float(loss)
        bare.append(args.steps * args.batch_size / (time.perf_counter() - start))

        batches = pipeline_batches(epoch)
        epoch += 1
        start = time.perf_counter()
        for _ in range(args.steps):
            loss = train_step(next(batches))[0]
        float(loss)
        piped.append(args.steps * args.batch_size / (time.perf_counter() - start))
    b, p = float(np.median(bare)), float(np.median(piped))
    return {"size": size, "bare": b, "pipeline": p, "overhead": b / p - 1}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[416, 128], help="square input sizes")
    parser.add_argument("--phi", type=int, default=4, help="attention (0-4)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--steps", type=int, default=6, help="steps per round and mode")
    parser.add_argument("--rounds", type=int, default=3, help="alternating bare / pipeline rounds")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    parser.add_argument("--images", type=int, default=64, help="images in the generated set")
    parser.add_argument("--mosaic", type=float, default=0.5, help="mosaic probability")
    parser.add_argument("--mixup", type=float, default=0.5, help="mixup probability (on mosaic samples)")
    parser.add_argument("--xla", action="store_true", help="XLA-compile forward and backward")
    parser.add_argument("--mixed-precision", action="store_true", help="mixed_float16 (GPU)")
    parser.add_argument("--strategy", default="none", help="none, or mirrored (all local GPUs), as train.py")
    args = parser.parse_args(argv)

    import tensorflow as tf

    from utils.data.demo import write_demo_dataset

    gpus = len(tf.config.list_physical_devices("GPU"))
    device = f"{gpus} GPU(s)" if gpus else f"CPU ({os.cpu_count()} cores)"
    print(
        f"device {device}, phi {args.phi}, batch {args.batch_size}, mosaic {args.mosaic}, mixup {args.mixup}, "
        f"xla {args.xla}, mixed precision {args.mixed_precision}, strategy {args.strategy}"
    )
    print(f"{'size':>6} {'bare img/s':>11} {'pipeline img/s':>15} {'overhead':>9}")
    with tempfile.TemporaryDirectory() as tmp:
        for size in args.sizes:
            root = write_demo_dataset(Path(tmp) / f"shapes{size}", splits={"train": args.images}, image_size=size)
            r = bench_size(size, args, root)
            print(f"{r['size']:>6} {r['bare']:>11.2f} {r['pipeline']:>15.2f} {100 * r['overhead']:>8.1f}%", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
