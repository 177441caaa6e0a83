"""The GPU figures of benchmarks/gpu_check.sh on Keras' JAX backend, for a machine with JAX and CUDA
but no TensorFlow (run with KERAS_BACKEND=jax; nothing here imports TensorFlow):

* predict img/s, end to end (letterbox, model, decoding, NMS), batch 1 and 32, float32 and
  mixed bfloat16, YOLOv4-tiny phi 4, 80 classes, random weights, 416;
* training images/s at batch 64, 416: the trainer's jitted JAX step (forward, loss, backward,
  optimizer, weight average) on one batch held in memory (the bare step), then a few steps with
  the NumPy input pipeline (the step as train.py runs it);
* the demo trained to the end (`train.py --phi 4 --demo`): its wall time and val mAP@0.5.

Exit status 10 with a "no GPU" line when JAX sees no GPU (`--allow-cpu` measures the CPU instead:
for trying the script, and for the tests, with small --size, --steps and --no-demo).
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from benchmarks.gpu_check import NO_GPU, median_rate  # noqa: E402


def predict_figures(size: int, runs: int, precisions: list[str]) -> None:
    from nets.yolo import YoloV4Tiny
    from utils.inference.detector import Detector
    from utils.inference.precision import to_mixed_precision

    model = YoloV4Tiny(80, attention="ca", input_shape=(None, None, 3))
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (480, 640, 3), dtype=np.uint8) for _ in range(32)]
    nets = {"float32": lambda: model, "bfloat16": lambda: to_mixed_precision(model, "mixed_bfloat16")}
    for name in precisions:
        net = nets[name]()
        for batch in (1, 32):
            detector = Detector.from_model(net, input_shape=(size, size), batch_size=batch, conf=0.25)
            rate = median_rate(lambda d=detector, x=frames[:batch]: d.detect(x), batch, runs)
            print(f"predict JAX {name} batch {batch:>2}: {rate:8.1f} img/s", flush=True)


def training_figures(size: int, batch: int, steps: int, precision: str, work: Path) -> None:
    from utils.data.demo import write_demo_dataset
    from utils.training.config import TrainConfig
    from utils.training.trainer import Trainer, take_batches

    data = write_demo_dataset(work / "data", splits={"train": 2 * batch}, image_size=size, seed=0)
    config = TrainConfig(
        phi=4, data=str(data), classes=str(data / "classes.txt"), input_size=str(size), batch_size=batch,
        epochs=1, eval_period=0, save_dir=str(work / "run"), precision=precision,
    )  # fmt: skip
    trainer = Trainer(config)
    trainer.setup()
    batches = list(take_batches(trainer.train_batches(0), 1))
    trainer.optimizer.learning_rate = 1e-4

    def bare():
        float(trainer.train_step(batches[0])[0])  # float(): waits for the step

    rate = median_rate(bare, batch, steps)
    print(f"train JAX {precision} batch {batch}, {size}x{size}, bare step: {rate:8.1f} img/s", flush=True)
    started = time.perf_counter()
    done = 0
    for step_batch in take_batches(trainer.train_batches(0), steps):
        float(trainer.train_step(step_batch)[0])
        done += batch
    print(f"train JAX {precision} batch {batch}, with the input pipeline: "
          f"{done / (time.perf_counter() - started):8.1f} img/s", flush=True)  # fmt: skip


def demo_figures(work: Path) -> None:
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "train.py", "--phi", "4", "--demo", "--output", str(work / "demo")],
        cwd=ROOT, capture_output=True, text=True, env={**os.environ, "KERAS_BACKEND": "jax"},
    )  # fmt: skip
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        print(f"demo: train.py failed (exit code {done.returncode}):\n{done.stderr[-3000:]}")
        return
    found = re.search(r"val mAP@0\.5 = ([0-9.]+)", done.stdout + done.stderr)
    print(f"demo (train.py --phi 4 --demo on JAX): val mAP@0.5 {found.group(1) if found else '?'}, "
          f"{seconds / 60:.1f} min wall, data generation included")  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=416, help="input side")
    parser.add_argument("--runs", type=int, default=20, help="timed calls per predict figure (medians)")
    parser.add_argument("--batch-size", type=int, default=64, help="training batch")
    parser.add_argument("--steps", type=int, default=10, help="timed training steps per figure")
    parser.add_argument("--precisions", nargs="+", choices=("float32", "bfloat16"), default=["float32", "bfloat16"],
                        help="of the predict and training figures")  # fmt: skip
    parser.add_argument("--no-demo", action="store_true", help="skip training the demo")
    parser.add_argument("--allow-cpu", action="store_true", help="measure the CPU when JAX sees no GPU")
    args = parser.parse_args(argv)
    import jax
    import keras

    if keras.backend.backend() != "jax":
        print(f"run with KERAS_BACKEND=jax (Keras runs on {keras.backend.backend()} here)")
        return 2
    gpus = [d for d in jax.devices() if d.platform == "gpu"]
    if not gpus and not args.allow_cpu:
        print(f"no GPU: JAX {jax.__version__} sees {[d.platform for d in jax.devices()]}; nothing to measure")
        return NO_GPU
    print(f"JAX {jax.__version__}, Keras {keras.__version__}: {jax.devices()}")
    predict_figures(args.size, args.runs, args.precisions)
    with tempfile.TemporaryDirectory() as tmp:
        for precision in args.precisions:
            training_figures(args.size, args.batch_size, args.steps, precision, Path(tmp) / precision)
        if not args.no_demo:
            demo_figures(Path(tmp))
    return 0


if __name__ == "__main__":
    sys.exit(main())
