"""Run a trained YOLOv4-tiny on images, folders, videos and webcams.

Modes
  predict      one or more images -> annotated copies in --output (class name + score, a colour
               per class); --crop saves every detection as its own image, --count prints counts.
  dir_predict  every file in the --source folder -> annotated copies in --output. A file that
               is not a readable image gets one line naming it; the rest is still processed and
               the exit code is 1 with a count of the failures.
  video        a video file, or a camera index (--source 0 is the default webcam); a live window
               when a display exists (q or Esc quits); --save writes the annotated video.
  fps          times the pipeline on one image (--source, or a synthetic one) over --runs runs and
               prints preprocess / model / postprocess / total milliseconds per image.
  heatmap      the objectness map (max over anchors and heads) overlaid on each image.
  attention    what the attention blocks do, one panel per insertion point (feat1, feat2, P5
               upsample) over each image: CBAM's spatial weight, CA's row x column weight, the
               share of each pixel's activation energy SE / ECA's channel weights keep. Needs a
               model with attention (phi 1-4); phi 0 is refused.
  cam          Grad-CAM of each image's --top best detections at the two head inputs, the
               detection's score as the target: one panel per detection, its box drawn, showing
               what the box was based on. Any phi.
  (attention and cam read the Keras model's layers: they run a .keras model, or darknet weights
  with --cfg, on TensorFlow whatever --backend would pick.)

Weights: a .keras model of ours, darknet .weights with their --cfg (loaded into our model by
utils/interop/darknet.py; convert_darknet.py saves that as .keras once), or a model written by export.py.

--json FILE works in every mode: per image (or video frame) its detections as
{"class_id", "class_name", "score", "box": [x_min, y_min, x_max, y_max]} in pixels of the image
as displayed (EXIF orientation applied). It is written as the run goes (a JSON array, a record a
line), so an error, Ctrl-C or SIGTERM (exit 130 / 143; a saved video is closed playable) keeps
every record done.

Outputs never destroy inputs: an --output that is (or holds) a source, or a --json that is an
input, is refused before the model loads (exit code 2); two inputs of one name get x.jpg, x_1.jpg.

Runtime (--backend auto, the default): on a CPU a .keras model runs on ONNX Runtime, faster there
than TensorFlow; its ONNX export is made on the first run (seconds) and kept in $YOLO_CACHE_DIR,
else ~/.cache/yolov4-tiny/onnx, keyed by the file's content and the input size, so later runs
start at once and a changed file is exported again. If the export or ONNX Runtime fails, a
one-line note says why and TensorFlow runs it. --backend keras always runs TensorFlow. The GPU is
used (by TensorFlow) when TensorFlow sees one. --half runs mixed precision on TensorFlow: float16
on a GPU, bfloat16 on a CPU with AMX / AVX512-BF16 (about 2x faster); on other CPUs it is slower
than float32, so it is ignored there with a warning. Every mode works on every runtime (heatmap
reads the raw heads, which every backend gives).

Examples
  python predict.py --weights logs/best.keras --source street.jpg
  python predict.py --weights logs/best.keras --mode dir_predict --source img/ --output img_out/ --json dets.json
  python predict.py --weights logs/best.keras --mode video --source 0
  python predict.py --weights logs/best.keras --mode video --source clip.mp4 --save --output out/
  python predict.py --weights logs/best.keras --mode fps --runs 100
  python predict.py --weights logs/best.keras --mode attention --source street.jpg
  python predict.py --weights logs/best.keras --mode cam --top 4 --source imgs/
  python predict.py --weights yolov4-tiny.weights --cfg yolov4-tiny.cfg --classes model_data/coco_classes.txt \
      --source street.jpg
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from collections import Counter
from pathlib import Path

from utils.cli import quiet_tensorflow

quiet_tensorflow()  # first: before anything imports TensorFlow (its start-up lines)

import cv2  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402
from tqdm import tqdm  # noqa: E402

from utils.cli import (  # noqa: E402
    add_detector_arguments,
    add_output_argument,
    detector_kwargs,
    run_script,
    warnings_as_notes,
)
from utils.data.images import KEEP_SUFFIXES, image_batches, load_image  # noqa: E402
from utils.errors import EXIT_PARTIAL, YoloError  # noqa: E402
from utils.files import OutputError, atomic_write, check_writable_folder, is_within, unique_name  # noqa: E402
from utils.inference.video import SourceError, VideoSource, display_available, list_images  # noqa: E402

MODES = ("predict", "dir_predict", "video", "fps", "heatmap", "attention", "cam")
IMAGE_MODES = ("predict", "dir_predict", "heatmap", "attention", "cam")
EXPLAIN_MODES = ("attention", "cam")  # read the Keras model's layers (utils/inference/explain.py)
WINDOW_TITLE = "predict.py (q to quit)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="predict.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_detector_arguments(parser)
    parser.add_argument("--mode", choices=MODES, default="predict", help="what to run (default: predict)")
    parser.add_argument(
        "--source",
        nargs="*",
        default=[],
        help="predict/heatmap/attention/cam: image files or folders; dir_predict: a folder; video: a video file, "
        "a camera index (0 = webcam), a stream URL (rtsp://, http://, ...) or an image sequence (frames/%%05d.jpg); "
        "fps: one image (a synthetic one when omitted)",
    )
    add_output_argument(parser, "img_out", "output folder (default: img_out)")
    parser.add_argument("--json", type=Path, default=None, help="also write every detection to this JSON file")
    parser.add_argument("--crop", action="store_true", help="predict/dir_predict: save each detection as an image")
    parser.add_argument("--count", action="store_true", help="print the number of detections per class")
    parser.add_argument("--save", action="store_true", help="video: write the annotated video into --output")
    parser.add_argument("--no-show", action="store_true", help="video: never open a window")
    parser.add_argument("--max-frames", type=int, default=None, help="video: stop after this many frames")
    parser.add_argument(
        "--every",
        type=int,
        default=1,
        help="video: detect on every N-th frame of a file or sequence; the saved video then has those "
        "frames only, at 1/N of the frame rate (default 1: all). Cameras and streams always use the "
        "newest frame and drop what detection cannot keep up with",
    )
    parser.add_argument(
        "--track", action="store_true", help="video: keep an ID per object across frames (in the picture and --json)"
    )
    parser.add_argument("--runs", type=int, default=100, help="fps: timed runs (default 100)")
    parser.add_argument(
        "--top", type=int, default=4, help="cam: explain this many of each image's best detections (default 4)"
    )
    return parser


# ---------------------------------------------------------------------------------------- helpers
def output_name(path: Path, suffix: str = "") -> str:
    keep = path.suffix.lower() if path.suffix.lower() in KEEP_SUFFIXES else ".png"
    return f"{path.stem}{suffix}{keep}"


def save_rgb(image: np.ndarray, path: Path) -> None:
    """`image` (RGB uint8) at `path`, written atomically: a full disk or a kill leaves no half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda temp: Image.fromarray(image).save(temp))


def format_counts(dets, class_names) -> str:
    counts = Counter(class_names[int(c)] for c in dets.class_ids)
    return ", ".join(f"{n} {name}" for name, n in sorted(counts.items(), key=lambda kv: -kv[1])) or "no detections"


def save_crops(image: np.ndarray, dets, class_names, folder: Path, stem: str, taken: set[str]) -> int:
    """Each detection of `image` as `<stem>_<k>_<class>.png` in `folder`, under a name not in `taken`."""
    height, width = image.shape[:2]
    saved = 0
    for k, (box, class_id) in enumerate(zip(dets.boxes, dets.class_ids, strict=True)):
        x1, y1 = max(0, int(np.floor(box[0]))), max(0, int(np.floor(box[1])))
        x2, y2 = min(width, int(np.ceil(box[2]))), min(height, int(np.ceil(box[3])))
        if x2 <= x1 or y2 <= y1:
            continue
        name = class_names[int(class_id)].replace("/", "_").replace(" ", "_")
        save_rgb(image[y1:y2, x1:x2], folder / unique_name(f"{stem}_{k}_{name}.png", taken))
        saved += 1
    return saved


def check_outputs(args, paths: list[Path] | None) -> None:
    """Before the model loads: what the run writes can be written, and writing it destroys no input.

    The image modes write into --output under the inputs' names: an --output that is a source
    folder or holds an input, at any depth, is refused, so an annotated copy never replaces its
    original. --json must not be an input. Raises OutputError (exit code 2)."""
    inputs = [Path(p) for p in paths or []]
    if args.mode in IMAGE_MODES:
        folders = [Path(source) for source in args.source if Path(source).is_dir()]
        held = next((p for p in [*folders, *inputs] if is_within(p, args.output)), None)
        if held is not None:
            raise OutputError(
                f"--output {args.output} holds the input {held}: the annotated copies would overwrite the "
                "originals; choose an --output outside the inputs"
            )
        check_writable_folder(args.output)
    elif args.mode == "video" and args.save:
        check_writable_folder(args.output)
    if args.json is not None:
        if args.json.is_dir():
            raise OutputError(f"--json {args.json}: a folder; give a file name")
        sources = [*inputs, *(Path(source) for source in args.source)]
        if any(source.is_file() and source.resolve() == args.json.resolve() for source in sources):
            raise OutputError(f"--json {args.json} is an input; give another file name")
        check_writable_folder(args.json.parent, "--json")


class JsonRecords:
    """The run's records, one per image (or video frame), and --json written as they come.

    The file is a JSON array, one record a line, flushed after each: what is done is on disk at
    once, and the array is closed on every way out (the end, an error, Ctrl-C, SIGTERM); a kill
    nothing can handle (SIGKILL) leaves every finished line, only the closing "]" missing. The file
    is made with the first record (a run that ends at the end with none writes "[]", one that fails
    before its first leaves no file). `processed` and `failed` count the records (failed: those
    with an "error"). Use it in a `with` block.
    """

    def __init__(self, path: Path | None):
        self.path = path
        self.processed = self.failed = 0
        self._file = None

    def __enter__(self) -> JsonRecords:
        return self

    def append(self, record: dict) -> None:
        if "error" in record:
            self.failed += 1
        else:
            self.processed += 1
        if self.path is not None:
            self._write(("[\n" if self._file is None else ",\n") + json.dumps(record, ensure_ascii=False))

    def _write(self, text: str) -> None:
        try:
            if self._file is None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._file = open(self.path, "w", encoding="utf-8")  # noqa: SIM115 (closed by __exit__)
            self._file.write(text)
            self._file.flush()
        except OSError as err:
            raise OutputError(f"--json {self.path}: cannot write ({err.strerror or err})") from err

    def __exit__(self, exc_type, *exc) -> None:
        if self.path is None or (self._file is None and exc_type is not None):
            return
        try:
            self._write("[]\n" if self._file is None else "\n]\n")
        finally:
            if self._file is not None:
                self._file.close()


# ---------------------------------------------------------------------------------------- modes
def readable_chunks(paths: list[Path], batch_size: int, records: JsonRecords, progress):
    """image_batches over `paths`: each file that cannot be read is named on stderr, recorded in
    `records` (with an "error") and counted in `progress`; yields the chunks that hold an image."""
    for chunk in image_batches(paths, batch_size):
        for path, err in chunk.failures:
            tqdm.write(f"skipped: {err}", file=sys.stderr)
            records.append({"image": str(path), "error": str(err)})
            progress.update(1)
        if chunk.images:
            yield chunk


def run_images(args, detector, paths: list[Path], records: JsonRecords, *, heatmap: bool) -> None:
    """predict / dir_predict / heatmap over files, a record each into `records`.

    Two inputs of one name (a/x.jpg and b/x.jpg, x.png and x.gif) get two outputs (x.jpg, x_1.jpg)."""
    from utils.inference.drawing import class_colors, draw_detections, heatmap_overlay
    from utils.inference.postprocess import objectness_map

    colors = class_colors(len(detector.class_names))
    taken, crops_taken = set(), set()
    progress = tqdm(total=len(paths), desc=args.mode, unit="img", disable=len(paths) < 2)
    for chunk in readable_chunks(paths, detector.batch_size, records, progress):
        images = chunk.images
        batch, infos = detector.preprocess(images)
        if heatmap:
            raw = detector.raw_outputs(batch)
            all_dets = detector.postprocess_raw(raw, infos)
            maps = objectness_map(raw, detector.anchors_mask, detector.num_classes)
        else:
            all_dets = detector.detect_batch(batch, infos)
        for i, (path, image, dets) in enumerate(zip(chunk.items, images, all_dets, strict=True)):
            if heatmap:
                out = heatmap_overlay(image, [m[i] for m in maps], infos[i], detector.input_shape)
                save_rgb(out, args.output / unique_name(output_name(path, "_heatmap"), taken))
            else:
                drawn = draw_detections(image, dets.boxes, dets.scores, dets.class_ids, detector.class_names, colors)
                name = unique_name(output_name(path), taken)
                save_rgb(drawn, args.output / name)
                if args.crop:
                    crops = args.output / "crops"
                    save_crops(image, dets, detector.class_names, crops, Path(name).stem, crops_taken)
            if args.count:
                tqdm.write(f"{path}: {format_counts(dets, detector.class_names)}")
            height, width = image.shape[:2]
            records.append(
                {
                    "image": str(path),
                    "width": width,
                    "height": height,
                    "detections": dets.to_records(detector.class_names),
                }
            )
            progress.update(1)
    progress.close()


def load_keras_detector(args):
    """The detector of the attention and cam modes: always over the Keras model (they read its
    layers), whatever --backend would pick from the path; --half does not apply."""
    from utils.inference.explain import ExplainError
    from utils.inference.engine.loader import load_detector

    if args.backend not in (None, "auto", "keras"):
        raise ExplainError(f"--mode {args.mode} reads the Keras model's layers; it cannot run --backend {args.backend}")
    if args.cfg is None and args.weights.suffix.lower() != ".keras":
        raise ExplainError(
            f"--mode {args.mode} reads the Keras model's layers: give a .keras model (or darknet .weights with "
            f"--cfg), not {args.weights}"
        )
    if args.half:
        print(f"note: --half is ignored in --mode {args.mode} (float32)", file=sys.stderr)
    kwargs = {**detector_kwargs(args), "backend": "keras", "half": False}
    return load_detector(args.weights, **kwargs)


def attention_picture(image, maps, i: int, info, input_hw) -> tuple[np.ndarray, list[dict]]:
    """Image `i` of a batch's attention maps: (a panel per insertion point, their json records)."""
    from utils.inference.drawing import heatmap_overlay, normalize_map, panel_grid

    panels, captions, records = [], [], []
    for found in maps:
        values, low, high = normalize_map(found.values[i])  # the colours span the map's own range
        panels.append(heatmap_overlay(image, [values], info, input_hw))
        h, w, c = found.feature_shape
        point = found.point.removeprefix("attention_")
        captions.append(f"{point} {h}x{w}x{c}: {found.block.upper()} {found.what} {low:.3f}-{high:.3f}")
        records.append({"point": found.point, "block": found.block, "what": found.what, "min": low, "max": high})
    return panel_grid(panels, captions), records


def cam_picture(image, dets, info, input_hw, names, colors, conf: float) -> tuple[np.ndarray, list[dict]]:
    """One image's explained detections: (a panel per detection, its CAM and box, json records)."""
    from utils.inference.drawing import draw_detections, heatmap_overlay, panel_grid
    from utils.inference.letterbox import unletterbox_boxes

    panels, captions, records = [], [], []
    for det in dets:
        box = unletterbox_boxes(det.box[None], info)
        overlay = heatmap_overlay(image, [det.cam], info, input_hw)
        class_ids = np.array([det.class_id], np.int32)
        panels.append(draw_detections(overlay, box, np.array([det.score]), class_ids, names, colors))
        level, (row, col), name = ("P5", "P4")[det.head], det.cell, names[det.class_id]
        captions.append(f"{name} {det.score:.2f}: {level} cell {row},{col} anchor {det.anchor}")
        records.append(
            {
                "class_id": det.class_id,
                "class_name": name,
                "score": round(det.score, 5),
                "box": [round(float(v), 2) for v in box[0]],
                "head": level,
                "cell": [row, col],
                "anchor": det.anchor,
            }
        )
    if not dets:
        panels, captions = [image], [f"no detection above --conf {conf:g}"]
    return panel_grid(panels, captions), records


def run_explain(args, detector, paths: list[Path], records: JsonRecords) -> None:
    """attention / cam over files: one picture per image, `<stem>_attention` or `<stem>_cam`
    (unique names, as run_images), a record each into `records`."""
    from utils.inference.drawing import class_colors
    from utils.inference.explain import AttentionProbe, GradCam

    model, input_hw, names = detector.model, detector.input_shape, detector.class_names
    attention = args.mode == "attention"
    explainer = AttentionProbe(model) if attention else GradCam(model)  # phi 0: NoAttentionError, before any image
    colors = class_colors(len(names))
    taken = set()
    progress = tqdm(total=len(paths), desc=args.mode, unit="img", disable=len(paths) < 2)
    for chunk in readable_chunks(paths, detector.batch_size, records, progress):
        batch, infos = detector.preprocess(chunk.images)
        floats = batch.astype(np.float32) / np.float32(255)
        if attention:
            maps = explainer(floats)
        else:
            explained = explainer.explain(floats, conf=detector.conf, nms_iou=detector.nms_iou, top=max(1, args.top))
        for i, (path, image) in enumerate(zip(chunk.items, chunk.images, strict=True)):
            height, width = image.shape[:2]
            record = {"image": str(path), "width": width, "height": height}
            if attention:
                picture, record["panels"] = attention_picture(image, maps, i, infos[i], input_hw)
            else:
                picture, record["detections"] = cam_picture(
                    image, explained[i], infos[i], input_hw, names, colors, detector.conf
                )
            save_rgb(picture, args.output / unique_name(output_name(path, f"_{args.mode}"), taken))
            records.append(record)
            progress.update(1)
    progress.close()


def run_video(args, detector, source: VideoSource, records: JsonRecords) -> int:
    """video mode: detect on the frames of `source`, draw, show, save; with --json a record per
    frame into `records`. Returns the number of frames.

    Raises StreamEndedError (exit code 1) when a camera or stream goes down mid-run; the saved
    video is closed first, so it stays playable, as it is on Ctrl-C and SIGTERM.
    """
    from utils.inference.drawing import class_colors, draw_detections, draw_text
    from utils.inference.tracking import ByteTracker

    show = display_available() and not args.no_show
    writer = save_path = None
    if args.save:
        name = f"camera{source.source}.mp4" if source.kind == "camera" else f"{Path(source.source).stem}_detected.mp4"
        save_path = args.output / name.replace("%", "")
        save_path.parent.mkdir(parents=True, exist_ok=True)
        fps_out = source.fps / (source.every if not source.live else 1)
        writer = cv2.VideoWriter(str(save_path), cv2.VideoWriter_fourcc(*"mp4v"), fps_out, source.frame_size)
        if not writer.isOpened():
            source.close()
            raise SourceError(f"{save_path}: cannot write video")
    total = -(-source.frame_count // source.every) if source.frame_count else 0
    if args.max_frames:
        total = min(total, args.max_frames) if total > 0 else args.max_frames
    tracker = ByteTracker(high_score=args.conf) if args.track else None
    colors = class_colors(len(detector.class_names))
    fps, frames, lags = 0.0, 0, []
    progress = tqdm(total=total or None, desc="video", unit="frame")
    try:
        for frame in source:
            start = time.perf_counter()
            rgb = cv2.cvtColor(frame.image, cv2.COLOR_BGR2RGB)
            [dets] = detector.detect([rgb])
            labels = None
            if tracker is not None:
                tracks = tracker.update(dets.boxes, dets.scores, dets.class_ids)
                dets = type(dets)(
                    np.array([t.box for t in tracks], np.float32).reshape(-1, 4),
                    np.array([t.score for t in tracks], np.float32),
                    np.array([t.class_id for t in tracks], np.int32),
                )
                labels = [f"#{t.track_id} {detector.class_names[t.class_id]}" for t in tracks]
            drawn = draw_detections(
                rgb, dets.boxes, dets.scores, dets.class_ids, detector.class_names, colors, labels=labels
            )
            elapsed = time.perf_counter() - start
            fps = 1.0 / elapsed if fps == 0 else 0.9 * fps + 0.1 / elapsed
            drawn = draw_text(drawn, f"FPS {fps:.1f}")
            out = cv2.cvtColor(drawn, cv2.COLOR_RGB2BGR)
            if writer is not None:
                writer.write(out)
            if args.json is not None:
                frame_dets = dets.to_records(detector.class_names)
                if tracker is not None:
                    for record, track in zip(frame_dets, tracks, strict=True):
                        record["track_id"] = track.track_id
                records.append({"image": f"{source.source}#frame={frame.index}", "detections": frame_dets})
            if args.count:
                tqdm.write(f"frame {frame.index}: {format_counts(dets, detector.class_names)}")
            frames += 1
            progress.update(1)
            if show:
                try:
                    cv2.imshow(WINDOW_TITLE, out)
                    if cv2.waitKey(1) & 0xFF in (ord("q"), 27):
                        break
                except cv2.error as err:  # e.g. opencv-python-headless: keep going without a window
                    tqdm.write(f"no live window ({err.msg.strip()})", file=sys.stderr)
                    show = False
            lags.append(time.perf_counter() - frame.captured)
            if args.max_frames and frames >= args.max_frames:
                break
    finally:
        progress.close()
        source.close()
        if writer is not None:
            writer.release()
        if show:
            cv2.destroyAllWindows()
        summary = f"{frames} frames, {fps:.1f} FPS at the end"
        if source.live and lags:
            summary += (
                f"; lag from capture to display: median {1000 * float(np.median(lags)):.0f} ms, "
                f"max {1000 * max(lags):.0f} ms; {source.dropped} older frames skipped to stay current"
            )
        print(summary + (f"; saved {save_path}" if writer is not None else ""))
    return frames


def run_fps(args, detector, records: JsonRecords) -> None:
    if args.source:
        image = load_image(args.source[0])
        name = args.source[0]
    else:
        image = np.random.default_rng(0).integers(0, 256, (480, 640, 3), dtype=np.uint8)
        name = "synthetic 640x480"
    batch, infos = detector.preprocess([image])
    for _ in range(3):  # warm up (trace, allocate)
        raw = detector.raw_outputs(batch)
        detector.postprocess_raw(raw, infos)
        dets = detector.detect([image])[0]
    stages: dict[str, list[float]] = {"preprocess": [], "model": [], "postprocess": [], "total": []}
    for _ in tqdm(range(args.runs), desc="fps", unit="run"):
        t0 = time.perf_counter()
        batch, infos = detector.preprocess([image])
        t1 = time.perf_counter()
        raw = detector.raw_outputs(batch)
        t2 = time.perf_counter()
        detector.postprocess_raw(raw, infos)
        t3 = time.perf_counter()
        dets = detector.detect([image])[0]  # the whole path, as predict uses it (one graph on TensorFlow)
        t4 = time.perf_counter()
        for key, value in zip(stages, (t1 - t0, t2 - t1, t3 - t2, t4 - t3), strict=True):
            value_ms = 1000.0 * value
            stages[key].append(value_ms)
    med = {k: float(np.median(v)) for k, v in stages.items()}
    in_h, in_w = detector.input_shape
    print(f"{name}, input {in_h}x{in_w}, batch 1, median of {args.runs} runs, ms per image:")
    print(f"  preprocess  {med['preprocess']:8.2f}  (letterbox)")
    print(f"  model       {med['model']:8.2f}  (uint8 batch -> raw heads)")
    print(f"  postprocess {med['postprocess']:8.2f}  (decode + NMS + boxes to the image)")
    print(f"  total       {med['total']:8.2f}  (image -> boxes, as predict runs it; {1000 / med['total']:.1f} FPS)")
    height, width = image.shape[:2]
    detections = dets.to_records(detector.class_names)
    records.append({"image": name, "width": width, "height": height, "detections": detections})


RUNTIMES = {"keras": "TensorFlow", "saved_model": "TensorFlow", "onnx": "ONNX Runtime", "tflite": "LiteRT"}


def describe_device(half: bool, detector) -> str:
    """What runs the detector, where, in which precision: "ONNX Runtime on CPU, float32"."""
    import tensorflow as tf

    from utils.inference.precision import mixed_precision_policy

    backend = getattr(detector, "backend", "keras")
    gpus = tf.config.list_physical_devices("GPU")
    device = "CPU" if backend in ("onnx", "tflite") or not gpus else f"GPU ({len(gpus)})"
    where = f"{RUNTIMES.get(backend, backend)} on {device}"
    if not half:
        return f"{where}, float32"
    policy = mixed_precision_policy()
    return f"{where}, {policy}" if policy else f"{where}, float32 (--half ignored: no fast float16/bfloat16 here)"


def run(argv: list[str] | None = None) -> int:
    """predict.py's work; raises the project's errors (`run_script` turns them into exit codes)."""
    args = build_parser().parse_args(argv)

    # Check the sources and the outputs first: a bad camera or folder, or an --output that would
    # overwrite the inputs, should not wait for the model to load.
    capture = paths = None
    if args.mode in IMAGE_MODES:
        paths = list_images(args.source, folder_only=args.mode == "dir_predict")
        if not paths:
            raise SourceError("no input images: give --source FILE [FILE ...] or a folder")
    elif args.mode == "video":
        if len(args.source) != 1:
            raise SourceError("video mode takes one --source: a video file, camera index, stream URL or sequence")
    elif len(args.source) > 1:
        raise SourceError("fps mode takes at most one --source image")
    check_outputs(args, paths)
    if args.mode == "video":
        capture = VideoSource(args.source[0], every=args.every)

    from utils.inference.engine.loader import BackendFallbackWarning, load_detector  # imports TensorFlow (seconds)

    try:
        if args.mode in EXPLAIN_MODES:
            detector = load_keras_detector(args)
        else:
            with warnings_as_notes():
                warnings.simplefilter("ignore", UserWarning)  # the --half notice is printed below instead
                warnings.simplefilter("always", BackendFallbackWarning)  # why ONNX Runtime is not used: one line
                detector = load_detector(args.weights, **detector_kwargs(args))
    except YoloError:
        if capture is not None:
            capture.close()
        raise
    device = describe_device(args.half and args.mode not in EXPLAIN_MODES, detector)
    print(f"{args.weights}: {detector.num_classes} classes, input {detector.input_shape}, {device}")
    if getattr(detector, "onnx_path", None) is not None:
        print(f"  its ONNX export, cached: {detector.onnx_path} (--backend keras: TensorFlow instead)")

    with JsonRecords(args.json) as records:  # --json as it goes, closed on every way out
        if paths is not None and args.mode in EXPLAIN_MODES:
            run_explain(args, detector, paths, records)
        elif paths is not None:
            run_images(args, detector, paths, records, heatmap=args.mode == "heatmap")
        elif capture is not None:
            run_video(args, detector, capture, records)
        else:
            run_fps(args, detector, records)
    if args.json is not None:
        print(f"{'attention map ranges' if args.mode == 'attention' else 'detections'} written to {args.json}")
    if args.mode in IMAGE_MODES:
        print(f"{records.processed} images written to {args.output}")
    if records.failed:
        total = records.processed + records.failed
        print(f"error: {records.failed} of {total} images failed (named above)", file=sys.stderr)
        return EXIT_PARTIAL
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_script(run, argv)


if __name__ == "__main__":
    sys.exit(main())
