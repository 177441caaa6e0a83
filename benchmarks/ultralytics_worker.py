"""The ultralytics side (YOLOv8n, YOLO26n) of the benchmarks (bench_learning.py, bench_train.py,
bench_end_to_end.py), run by the Python of a separate ultralytics venv.

Not a project module: it imports only ultralytics (and torch through it), never the project, so the
project needs neither. The benchmarks call it so, each command writing one JSON file:

    python ultralytics_worker.py check   --result R.json
    python ultralytics_worker.py train   --model yolov8n.yaml --data data.yaml --imgsz 256 --minutes 15 \
                                         --project DIR --result R.json
    python ultralytics_worker.py predict --weights best.pt --images list.txt --imgsz 256 --result R.json
    python ultralytics_worker.py steps   --model yolov8n.yaml --imgsz 256 --batch 16 --steps 6 --result R.json
    python ultralytics_worker.py serve   --weights best.pt --imgsz 256 --conf 0.5 --iou 0.3 --result R.json

`serve` times ultralytics' predict, image file to final boxes, on request, for
benchmarks/bench_end_to_end.py: the model is loaded and warmed up once, and the benchmark alternates
its rounds with ours (see `serve`).

`steps` times the bare training step (forward, ultralytics' loss, backward, SGD update) on one
synthetic batch held in memory, for benchmarks/bench_train.py's side-by-side step time.

Nothing here may reach the network: YOLO_OFFLINE=1 is expected in the environment (ultralytics then
skips its online checks and telemetry), and every socket that would leave this machine is refused
and recorded; each command reports the refused attempts (expected: none). ultralytics looks for
Arial.ttf in its config folder (YOLO_CONFIG_DIR) and downloads it when absent, even with
plots=False (the data check calls check_font), so `train` first copies matplotlib's DejaVu Sans
there under that name (used only for drawing labels, which plots=False turns off).
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
import time
from pathlib import Path

LOCAL_HOSTS = {None, "", "localhost", "127.0.0.1", "::1", "0.0.0.0"}
NETWORK_ATTEMPTS: list[str] = []


def refuse_network() -> None:
    """Make every name lookup and connection that would leave this machine fail at once, and record it."""
    real_getaddrinfo, real_connect = socket.getaddrinfo, socket.socket.connect

    def getaddrinfo(host, *args, **kwargs):
        if host not in LOCAL_HOSTS:
            NETWORK_ATTEMPTS.append(f"name lookup of {host}")
            raise socket.gaierror(socket.EAI_NONAME, "network refused by ultralytics_worker.py")
        return real_getaddrinfo(host, *args, **kwargs)

    def connect(self, address):
        if self.family in (socket.AF_INET, socket.AF_INET6) and address[0] not in LOCAL_HOSTS:
            NETWORK_ATTEMPTS.append(f"connection to {address}")
            raise OSError("network refused by ultralytics_worker.py")
        return real_connect(self, address)

    socket.getaddrinfo = getaddrinfo
    socket.socket.connect = connect


def provide_font() -> None:
    """Put a font where ultralytics' check_font looks first, so it never tries to download Arial.ttf."""
    import shutil

    from matplotlib import font_manager
    from ultralytics.utils import USER_CONFIG_DIR

    target = Path(USER_CONFIG_DIR) / "Arial.ttf"
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(font_manager.findfont("DejaVu Sans"), target)


def check(args) -> dict:
    import torch
    import ultralytics

    return {"ultralytics": ultralytics.__version__, "torch": torch.__version__, "python": sys.version.split()[0]}


def train(args) -> dict:
    """The --model yaml (yolov8n.yaml, yolo26n.yaml: random weights), trained for `--minutes` with
    ultralytics' `time` mode: after each epoch it re-plans the epochs (and the LR schedule) to end at
    the budget, and stops a running epoch when the budget is spent. Everything else is ultralytics'
    default."""
    from ultralytics import YOLO

    provide_font()
    overrides = {}
    for item in args.arg or []:
        key, _, value = item.partition("=")
        try:
            overrides[key] = json.loads(value)  # numbers, true / false, lists
        except ValueError:
            overrides[key] = value
    model = YOLO(args.model)
    started = time.perf_counter()
    settings = dict(
        data=str(args.data),
        imgsz=args.imgsz,
        time=args.minutes / 60,  # hours
        device="cpu",
        workers=args.workers,
        batch=args.batch,
        seed=args.seed,
        pretrained=False,
        amp=False,  # the AMP check would download weights; AMP is for GPUs anyway
        plots=False,
        val=True,  # val mAP after every epoch: best.pt is the best epoch (ultralytics' fitness)
        project=str(Path(args.project).resolve()),
        name="train",
        exist_ok=True,
        verbose=True,
    )
    settings.update(overrides)
    model.train(**settings)
    seconds = time.perf_counter() - started
    trainer = model.trainer
    save_dir = Path(trainer.save_dir)
    rows = (save_dir / "results.csv").read_text().strip().splitlines()[1:]
    return {
        "epochs": len(rows),
        "train_seconds": seconds,
        "best": str(save_dir / "weights" / "best.pt"),
        "last": str(save_dir / "weights" / "last.pt"),
        "settings": {
            k: (v if isinstance(v, (int, float, str, bool, type(None))) else str(v)) for k, v in settings.items()
        },
    }


def predict(args) -> list[dict]:
    """Detections on the listed images (ultralytics' per-class NMS) as a COCO results list: image_id =
    file stem, category_id = 0-based class, bbox = pixel [x, y, w, h] in the original image, score."""
    from ultralytics import YOLO

    model = YOLO(args.weights)
    paths = [line for line in Path(args.images).read_text(encoding="utf-8").splitlines() if line]
    records = []
    for start in range(0, len(paths), args.batch):
        chunk = paths[start : start + args.batch]
        results = model.predict(
            chunk, imgsz=args.imgsz, conf=args.conf, iou=args.iou, max_det=args.max_det, device="cpu", verbose=False
        )
        for path, result in zip(chunk, results, strict=True):
            boxes = result.boxes
            for (x1, y1, x2, y2), score, cls in zip(
                boxes.xyxy.tolist(), boxes.conf.tolist(), boxes.cls.tolist(), strict=True
            ):
                records.append(
                    {"image_id": Path(path).stem, "category_id": int(cls), "bbox": [x1, y1, x2 - x1, y2 - y1],
                     "score": float(score)}
                )  # fmt: skip
    return records


def steps(args) -> dict:
    """Seconds of each of --steps bare training steps (after --warmup untimed ones) of --model at
    --imgsz and --batch: forward, the model's own loss (ultralytics' defaults), backward, SGD update,
    on one synthetic batch of four boxes an image, in torch's default CPU threads."""
    import torch
    from ultralytics.cfg import get_cfg
    from ultralytics.nn.tasks import DetectionModel

    torch.manual_seed(0)
    model = DetectionModel(args.model, nc=args.classes, verbose=False)
    model.args = get_cfg()  # the loss reads its gains (box, cls, dfl) from the training settings
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)
    boxes_per_image = 4
    count = args.batch * boxes_per_image
    batch = {
        "img": torch.rand(args.batch, 3, args.imgsz, args.imgsz),
        "batch_idx": torch.arange(args.batch).repeat_interleave(boxes_per_image).float(),
        "cls": torch.randint(0, args.classes, (count, 1)).float(),
        "bboxes": torch.cat([torch.rand(count, 2) * 0.6 + 0.2, torch.rand(count, 2) * 0.3 + 0.05], dim=1),
    }

    def step():
        loss, _ = model.loss(batch)
        optimizer.zero_grad()
        loss.sum().backward()
        optimizer.step()

    for _ in range(args.warmup):
        step()
    times = []
    for _ in range(args.steps):
        started = time.perf_counter()
        step()
        times.append(time.perf_counter() - started)
    return {"seconds": times, "threads": torch.get_num_threads()}


READY, TIMES = "@@ready ", "@@times "


def serve(args) -> dict:
    """Time `YOLO.predict`, image file to final boxes, one image a call, as a user's script runs it.

    Loads --weights (a trained .pt, or a model yaml: random weights), predicts --warmup-image once,
    then prints one line `@@ready {"threads": N}`. Each line read from standard input is a JSON list
    of image paths; each is predicted alone (reading the file, letterbox, forward, NMS or the
    NMS-free head's top-k, boxes scaled to the image and brought to NumPy) and timed, and one line
    `@@times {"ms": [...], "boxes": [...]}` answers. Ends at the end of its input. Other lines
    ultralytics may print are not prefixed so, and the reader skips them."""
    import torch
    from ultralytics import YOLO

    model = YOLO(str(args.weights))
    settings = dict(imgsz=args.imgsz, conf=args.conf, iou=args.iou, max_det=args.max_det, device="cpu", verbose=False)

    def boxes_of(path: str) -> int:
        result = model.predict(path, **settings)[0]
        return len(result.boxes.xyxy.numpy())

    boxes_of(str(args.warmup_image))
    print(READY + json.dumps({"threads": torch.get_num_threads()}), flush=True)
    for line in sys.stdin:
        ms, boxes = [], []
        for path in json.loads(line):
            started = time.perf_counter()
            boxes.append(boxes_of(path))
            ms.append((time.perf_counter() - started) * 1e3)
        print(TIMES + json.dumps({"ms": ms, "boxes": boxes}), flush=True)
    return {"threads": torch.get_num_threads()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("check")
    p.add_argument("--result", type=Path, required=True)
    p = sub.add_parser("train")
    p.add_argument("--model", default="yolov8n.yaml", help="an ultralytics model yaml (random weights)")
    p.add_argument("--data", type=Path, required=True, help="data.yaml")
    p.add_argument("--imgsz", type=int, required=True)
    p.add_argument("--minutes", type=float, required=True, help="training budget (ultralytics' time=, in hours)")
    p.add_argument("--project", type=Path, required=True, help="ultralytics writes PROJECT/train/")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--arg", action="append", metavar="KEY=VALUE", help="another ultralytics train setting")
    p.add_argument("--result", type=Path, required=True)
    p = sub.add_parser("predict")
    p.add_argument("--weights", type=Path, required=True)
    p.add_argument("--images", type=Path, required=True, help="a text file, one image path a line")
    p.add_argument("--imgsz", type=int, required=True)
    p.add_argument("--conf", type=float, default=0.001)
    p.add_argument("--iou", type=float, default=0.5)
    p.add_argument("--max-det", type=int, default=100)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--result", type=Path, required=True)
    p = sub.add_parser("steps")
    p.add_argument("--model", default="yolov8n.yaml")
    p.add_argument("--imgsz", type=int, required=True)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--result", type=Path, required=True)
    p = sub.add_parser("serve")
    p.add_argument("--weights", type=Path, required=True, help="a .pt, or a model yaml (random weights)")
    p.add_argument("--warmup-image", type=Path, required=True)
    p.add_argument("--imgsz", type=int, required=True)
    p.add_argument("--conf", type=float, required=True)
    p.add_argument("--iou", type=float, required=True)
    p.add_argument("--max-det", type=int, default=100)
    p.add_argument("--result", type=Path, required=True)
    args = parser.parse_args(argv)

    refuse_network()
    commands = {"check": check, "train": train, "predict": predict, "steps": steps, "serve": serve}
    result = commands[args.command](args)
    if args.command == "predict":
        payload = {"detections": result, "network_attempts": list(NETWORK_ATTEMPTS)}
    else:
        payload = {**result, "network_attempts": list(NETWORK_ATTEMPTS)}
    args.result.write_text(json.dumps(payload), encoding="utf-8")
    print(f"network attempts refused: {len(NETWORK_ATTEMPTS)}" + "".join(f"\n  {a}" for a in NETWORK_ATTEMPTS))
    return 0


if __name__ == "__main__":
    sys.exit(main())
