"""End to end on the CPU: image file to final boxes, batch 1, ours (predict.py's default path)
against ultralytics' YOLOv8n and YOLO26n, alternating in one run.

    python benchmarks/bench_end_to_end.py --weights logs/best.keras --images VOCdevkit/VOC2007/JPEGImages \\
        --peer yolov8n=runs/detect/train/weights/best.pt --peer yolo26n=yolo26n.yaml --imgsz 256

What is timed, per image, the way a user's script detects one image at a time:

* ours: `utils.data.images.load_image(path)` (the file read and decoded, EXIF-rotated, RGB) then
  `Detector.detect([image])` of `load_detector(--weights)` with predict.py's defaults (--backend
  auto: ONNX Runtime on a CPU, on the model's ONNX export, made once into a temporary cache here;
  score CONF_THRESHOLD, per-class NMS at NMS_IOU): letterbox, the network, decoding, NMS, boxes
  mapped back to the image.
* each --peer: `YOLO(weights).predict(path, imgsz, conf, iou, max_det)` in ultralytics' own venv
  (benchmarks/ultralytics_worker.py serve, one process kept for the whole run), with the same
  score and NMS thresholds: the file read, letterbox, forward, NMS (YOLOv8n) or the NMS-free head's
  top-k (YOLO26n), boxes scaled to the image. torch uses its default CPU threads, ours the usable
  cores.

Each side is loaded and warmed up first. Then --rounds rounds, each timing every image once with
ours and then with each peer, so all see about the same load; the figures are medians over all
images and rounds, and a ratio ours / peer is the median of the rounds' ratios of medians (below
1: ours is faster). The boxes found per image are reported too: a model that finds nothing has no
NMS to do, so compare trained models (bench_learning.py trains both sides on the same data; its
output folder has ours' best.keras and each peer's best.pt). A peer given as a model yaml
(random weights) is timed as built; that is fair only for a head without NMS (YOLO26n's), whose cost
does not depend on what it finds, and the table says "untrained".

ultralytics is no dependency of this project; it lives in its own venv (bench_learning.py says how
to create it), found by --ultralytics-python, else $ULTRALYTICS_PYTHON, else .venv-ultralytics/.
Without it the peers are skipped with a message and ours is timed alone. Without --weights, a
random-weight model of ours is timed (to try the script: it finds nothing worth timing NMS on);
without --images, --count random-noise 640x480 JPEGs.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.bench_learning import (  # noqa: E402
    CREATE_VENV,
    WORKER,
    check_ultralytics,
    cpu_flags,
    ultralytics_env,
    ultralytics_python,
)
from benchmarks.common import onnx_cache_in  # noqa: E402
from utils.cli import add_verbosity_arguments, setup_logging  # noqa: E402
from utils.defaults import CONF_THRESHOLD, MAX_DETECTIONS, NMS_IOU  # noqa: E402
from utils.errors import YoloError  # noqa: E402

READY, TIMES = "@@ready ", "@@times "  # ultralytics_worker.py serve's answers


class Peer:
    """An ultralytics model in `serve` mode: one process, loaded and warmed up, timing on request."""

    def __init__(self, name: str, weights: str, python: Path, args, warmup_image: Path, work: Path):
        self.name, self.weights = name, weights
        self.untrained = weights.endswith((".yaml", ".yml"))
        self.log_path = work / f"{name}.log"
        self.result_path = work / f"{name}.json"
        command = [str(python), str(WORKER), "serve", "--weights", weights, "--warmup-image", str(warmup_image)]
        command += ["--imgsz", str(args.imgsz), "--conf", str(args.conf), "--iou", str(args.iou)]
        command += ["--max-det", str(args.max_det), "--result", str(self.result_path)]
        self._log = self.log_path.open("w", encoding="utf-8")
        self.process = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log, text=True,
            env=ultralytics_env(work / "ultralytics_config"),
        )  # fmt: skip
        self.threads = self._answer(READY)["threads"]

    def _answer(self, prefix: str) -> dict:
        for line in self.process.stdout:
            if line.startswith(prefix):
                return json.loads(line[len(prefix) :])
        self._log.flush()
        tail = self.log_path.read_text(encoding="utf-8", errors="replace")[-2000:]
        raise SystemExit(f"{self.name} ({self.weights}) stopped (exit code {self.process.wait()}):\n{tail}")

    def time(self, paths: list[str]) -> tuple[list[float], list[int]]:
        self.process.stdin.write(json.dumps(paths) + "\n")
        self.process.stdin.flush()
        answer = self._answer(TIMES)
        return answer["ms"], answer["boxes"]

    def close(self) -> list[str]:
        """Ends the process; the network attempts it refused (expected: none)."""
        self.process.stdin.close()
        self.process.stdout.read()
        self.process.wait()
        self._log.close()
        if not self.result_path.exists():
            return []
        return json.loads(self.result_path.read_text())["network_attempts"]


def parse_peer(text: str) -> tuple[str, str]:
    name, sep, weights = text.partition("=")
    if not sep or not name or not weights:
        raise argparse.ArgumentTypeError(f"--peer takes NAME=WEIGHTS (a .pt or a model yaml), got {text!r}")
    return name, weights


def image_paths(args, work: Path) -> list[Path]:
    """--count images of --images (sorted), or as many random-noise 640x480 JPEGs written to `work`."""
    from utils.data.images import is_image_path

    if args.images is not None:
        paths = sorted(p for p in args.images.iterdir() if p.is_file() and is_image_path(p))[: args.count]
        if not paths:
            raise SystemExit(f"--images {args.images}: no images there")
        return paths
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    paths = []
    for index in range(args.count):
        path = work / f"noise_{index}.jpg"
        Image.fromarray(rng.integers(0, 256, (480, 640, 3), dtype=np.uint8)).save(path, quality=90)
        paths.append(path)
    return paths


def our_detector(args, work: Path):
    """predict.py's default path on --weights (a random-weight phi-4 model when none is given)."""
    from utils.inference.engine.loader import load_detector

    weights = args.weights
    if weights is None:
        from nets.yolo import YoloV4Tiny

        weights = work / "random.keras"
        YoloV4Tiny(80, attention="ca", input_shape=(args.imgsz, args.imgsz, 3)).save(weights)
    with onnx_cache_in(work / "onnx_cache"):  # the export lands here, not in the user's cache
        return load_detector(
            weights, input_shape=(args.imgsz, args.imgsz), conf=args.conf, nms_iou=args.iou,
            max_detections=args.max_det, calib_data=args.calib_data,
        )  # fmt: skip


def time_ours(detector, paths: list[str]) -> tuple[list[float], list[int]]:
    from utils.data.images import load_image

    ms, boxes = [], []
    for path in paths:
        started = time.perf_counter()
        found = detector.detect([load_image(path)])[0]
        ms.append((time.perf_counter() - started) * 1e3)
        boxes.append(len(found))
    return ms, boxes


def summarise(name: str, rounds: list[tuple[list[float], list[int]]]) -> dict:
    every = [value for ms, _ in rounds for value in ms]
    found = [value for _, boxes in rounds for value in boxes]
    return {
        "name": name,
        "median_ms": statistics.median(every),
        "p90_ms": statistics.quantiles(every, n=10)[-1] if len(every) > 1 else every[0],
        "round_medians": [statistics.median(ms) for ms, _ in rounds],
        "boxes_per_image": statistics.mean(found),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", type=Path, default=None, help="ours: a trained .keras (or any predict.py model)")
    parser.add_argument("--peer", type=parse_peer, action="append", default=[], metavar="NAME=WEIGHTS",
                        help="an ultralytics model: a trained .pt, or a model yaml (random weights); "
                             "repeatable")  # fmt: skip
    parser.add_argument("--images", type=Path, default=None, help="a folder of images (default: random-noise JPEGs)")
    parser.add_argument("--count", type=int, default=50, help="images per round (the first, sorted by name)")
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds")
    parser.add_argument("--imgsz", type=int, default=256, help="network input side of every model (a multiple of 32)")
    parser.add_argument("--conf", type=float, default=CONF_THRESHOLD, help="score threshold of every model")
    parser.add_argument("--iou", type=float, default=NMS_IOU, help="NMS IoU of every model (YOLO26n has no NMS)")
    parser.add_argument("--max-det", type=int, default=MAX_DETECTIONS, help="most boxes an image")
    parser.add_argument("--ultralytics-python", default=None,
                        help="the Python of the ultralytics venv (default: $ULTRALYTICS_PYTHON, else "
                             ".venv-ultralytics/bin/python)")  # fmt: skip
    parser.add_argument("--calib-data", type=Path, default=None,
                        help="ours: int8 calibration images, as predict.py --calib-data (int8 on a CPU with VNNI)")
    parser.add_argument("--json", type=Path, default=None, help="also write every figure to this file")
    add_verbosity_arguments(parser)
    args = parser.parse_args(argv)
    if args.imgsz % 32:
        parser.error(f"--imgsz must be a multiple of 32, got {args.imgsz}")
    if len({name for name, _ in args.peer}) != len(args.peer):
        parser.error("--peer names must differ")
    setup_logging(logging.DEBUG if args.verbose else logging.WARNING)

    python = ultralytics_python(args.ultralytics_python)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        peers_wanted = args.peer
        versions = None
        if peers_wanted:
            versions, why_not = check_ultralytics(python, work / "ultralytics_config")
            if versions is None:
                print(f"ultralytics not found ({why_not}): the peers are skipped, ours is timed alone.\n"
                      f"To compare, create its venv:\n    {CREATE_VENV}")  # fmt: skip
                peers_wanted = []
        paths = [str(p) for p in image_paths(args, work)]
        try:
            detector = our_detector(args, work)
        except YoloError as error:
            raise SystemExit(f"--weights {args.weights}: {error}") from None
        time_ours(detector, paths[:2])  # warm-up: the first calls build and tune
        peers = [Peer(name, weights, python, args, Path(paths[0]), work) for name, weights in peers_wanted]

        print(f"CPU: {cpu_flags()}; {os.cpu_count()} cores")
        if versions:
            print(f"ultralytics {versions['ultralytics']}, torch {versions['torch']}")
        print(f"{len(paths)} images, input {args.imgsz}, score > {args.conf}, NMS IoU {args.iou}, batch 1, "
              f"{args.rounds} alternating rounds")  # fmt: skip
        ours_rounds, peer_rounds = [], {peer.name: [] for peer in peers}
        for _ in range(args.rounds):
            ours_rounds.append(time_ours(detector, paths))
            for peer in peers:
                peer_rounds[peer.name].append(peer.time(paths))
        refused = {peer.name: peer.close() for peer in peers}

    ours = summarise("ours", ours_rounds)
    label = f"ours ({args.weights.name if args.weights else 'random weights'}, {detector.backend})"
    print(f"\n{'model':<44} {'median ms':>10} {'p90 ms':>8} {'boxes/img':>10} {'ours / it':>10}")
    print(f"{label:<44} {ours['median_ms']:>10.2f} {ours['p90_ms']:>8.2f} {ours['boxes_per_image']:>10.1f} {'':>10}")
    rows = [ours]
    for peer in peers:
        row = summarise(peer.name, peer_rounds[peer.name])
        row["ratio"] = statistics.median(
            o / p for o, p in zip(ours["round_medians"], row["round_medians"], strict=True)
        )
        row["threads"], row["network_attempts"] = peer.threads, refused[peer.name]
        label = f"{peer.name} ({Path(peer.weights).name}{', untrained' if peer.untrained else ''}, torch)"
        print(f"{label:<44} {row['median_ms']:>10.2f} {row['p90_ms']:>8.2f} {row['boxes_per_image']:>10.1f} "
              f"{row['ratio']:>10.2f}")  # fmt: skip
        rows.append(row)
    print("ours / it: median over the rounds of ours' median ms over the peer's (below 1: ours is faster)")
    if args.json:
        settings = {key: v if isinstance(v, (int, float, list)) else str(v) for key, v in vars(args).items()}
        args.json.write_text(json.dumps({"cpu": cpu_flags(), "settings": settings, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
