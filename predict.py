"""Run a trained YOLOv4-tiny on images, folders, videos, cameras and streams (see --help).

A thin driver over `utils.inference.Predictor`: it parses the options, checks the sources and outputs
before the model loads, and prints what the run did."""

from __future__ import annotations

import argparse
import sys
from contextlib import ExitStack
from pathlib import Path

from utils.cli import quiet_tensorflow

quiet_tensorflow()  # first: before anything imports TensorFlow (its start-up lines)

from tqdm import tqdm  # noqa: E402

from utils import cli  # noqa: E402
from utils.errors import EXIT_PARTIAL  # noqa: E402
from utils.inference.engine.results import RunStats  # noqa: E402
from utils.inference.engine.sinks import JsonRecords, check_outputs, make_sinks  # noqa: E402
from utils.inference.video import SourceError, VideoSource, open_source  # noqa: E402

MODES = {
    "predict": "images or folders -> annotated copies in --output (--crop: each detection too)",
    "dir_predict": "every file of the --source folder, as predict; unreadable files are named, exit code 1",
    "video": "a video file, camera, stream or image sequence: a window (q or Esc quits), --save writes it",
    "fps": "times preprocess / model / postprocess on one image (a synthetic one without --source)",
    "heatmap": "the objectness map (max over anchors and heads) over each image",
    "attention": "what the attention blocks do, a panel per insertion point (phi 1-5, --fusion weighted)",
    "cam": "Grad-CAM of each image's --top best detections, a panel each",
}
EPILOG = """modes:
{modes}
  attention and cam read the Keras model's layers: a .keras model, or darknet .weights with --cfg.

--json: a record per image or frame, {{"image", "width", "height", "detections": [{{"class_id", "class_name",
"score", "box": [x_min, y_min, x_max, y_max]}}]}} in pixels of the image as displayed, a line each as the run
goes, the array closed on every way out (an error, Ctrl-C: exit 130, SIGTERM: 143; a saved video stays playable).

examples:
  python predict.py --weights logs/best.keras --mode video --source clip.mp4 --save --track
  python predict.py --weights yolov4-tiny.weights --cfg yolov4-tiny.cfg --classes model_data/coco_classes.txt \\
      --source street.jpg"""
WINDOW_TITLE = "predict.py (q to quit)"


def build_parser() -> argparse.ArgumentParser:
    modes = "\n".join(f"  {name:<12} {text}" for name, text in MODES.items())
    parser = argparse.ArgumentParser(
        prog="predict.py", description=__doc__.split("\n")[0], epilog=EPILOG.format(modes=modes),
        formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    cli.add_detector_arguments(parser)
    add = parser.add_argument
    add("--mode", choices=list(MODES), default="predict", help="what to run (default: predict; see below)")
    add("--source", nargs="*", default=[], help="images, folders; video: a file, camera index, URL or frames/%%05d.jpg")
    cli.add_output_argument(parser, "img_out", "output folder (default: img_out)")
    add("--json", type=Path, default=None, help="also write every detection to this JSON file (see below)")
    add("--crop", action="store_true", help="predict/dir_predict: save each detection as an image")
    add("--count", action="store_true", help="print the number of detections per class")
    add("--save", action="store_true", help="video: write the annotated video into --output")
    add("--no-show", action="store_true", help="video: never open a window")
    add("--max-frames", type=int, default=None, help="video: stop after this many frames")
    add("--every", type=int, default=1, help="video: every N-th frame of a file (cameras, streams: the newest)")
    add("--track", action="store_true", help="video: keep an ID per object across frames (drawn, and in --json)")
    add("--runs", type=int, default=100, help="fps: timed runs (default 100)")
    add("--top", type=int, default=4, help="cam: explain this many of each image's best detections (default 4)")
    cli.add_verbosity_arguments(parser)
    return parser


def inform(args, line: str) -> None:
    """A status line on stdout (what runs the model, what was written), left out with -q; what the
    user asked for (--count lines, fps timings) and errors print whatever the verbosity."""
    if not args.quiet:
        print(line)


def load_predictor(args):
    """The Predictor of the run (imports TensorFlow: seconds); prints what runs the model."""
    from utils.inference.engine.predictor import Predictor

    picture = args.mode if args.mode in ("heatmap", "attention", "cam") else "boxes"
    options = {"top": args.top, "track": args.track, "every": args.every, **cli.detector_kwargs(args)}
    predictor = Predictor(args.weights, picture=picture, **options)
    inform(args, f"{args.weights}: {predictor.describe()}")
    return predictor


def run_fps(args, predictor):
    progress = lambda runs: tqdm(runs, desc="fps", unit="run", disable=args.quiet)  # noqa: E731
    timing = predictor.time(args.source[0] if args.source else None, args.runs, progress)
    print(timing.report())
    if args.json is not None:
        with JsonRecords(args.json) as records:
            records.write(timing.result)
    return RunStats(processed=1)


def run(argv: list[str] | None = None) -> int:
    """predict.py's work; raises the project's errors (`run_script` turns them into exit codes)."""
    args = build_parser().parse_args(argv)
    cli.setup_logging(args)
    # The sources and outputs first: a bad folder or camera, or an --output that would overwrite
    # the inputs, should not wait for the model to load.
    images = args.mode not in ("video", "fps")
    paths = open_source(args.source, kind="folders" if args.mode == "dir_predict" else "images") if images else None
    if args.mode == "fps" and len(args.source) > 1:
        raise SourceError("fps mode takes at most one --source image")
    folder = args.output if images or (args.mode == "video" and args.save) else None
    check_outputs([*args.source, *(paths or [])], folder=folder, holds_inputs=images, json_path=args.json)
    with ExitStack() as stack:  # a video source is closed on every way out, a failed model load too
        source = open_source(args.source, kind="video", every=args.every) if args.mode == "video" else paths
        if isinstance(source, VideoSource):
            stack.enter_context(source)
        predictor = load_predictor(args)
        stats = run_fps(args, predictor) if args.mode == "fps" else run_source(args, predictor, source)
    if args.json is not None:
        inform(args, f"{'attention map ranges' if args.mode == 'attention' else 'detections'} written to {args.json}")
    if images:
        inform(args, f"{stats.processed} images written to {args.output}")
    if stats.failed:
        print(f"error: {stats.failed} of {len(paths)} images failed (named above)", file=sys.stderr)
        return EXIT_PARTIAL
    return 0


def run_source(args, predictor, source):
    """The image modes and video: the results into their sinks, a progress bar, --count lines."""
    video, stats, boxes = isinstance(source, VideoSource), RunStats(), args.mode in ("predict", "dir_predict")
    suffix, title = "" if boxes else f"_{args.mode}", None if args.no_show else WINDOW_TITLE
    sinks = make_sinks(source, folder=args.output, suffix=suffix, crops=args.crop and boxes, save_video=args.save,
                       json_path=args.json, window_title=title)  # fmt: skip
    most, total = (args.max_frames, source.delivered_count or 0) if video else (None, len(source))
    total = min(total, most) if most and total else (most or total)
    unit = "frame" if video else "img"
    progress = tqdm(total=total or None, desc=args.mode, unit=unit, disable=args.quiet or (not video and total < 2))

    def on_result(result) -> None:
        if not result.ok:
            tqdm.write(f"skipped: {result.error}", file=sys.stderr)
        elif args.count and args.mode not in ("attention", "cam"):
            tqdm.write(f"{f'frame {result.frame}' if video else result.source}: {result.counts()}")
        progress.update(1)

    try:
        return predictor.run(source, sinks, max_frames=most, on_result=on_result, stats=stats)
    finally:
        progress.close()
        if video:
            saved = args.save and sinks[0].frames > 0  # the writer opens on the first frame
            inform(args, stats.video_summary() + (f"; saved {sinks[0].path}" if saved else ""))


def main(argv: list[str] | None = None) -> int:
    return cli.run_script(run, argv)


if __name__ == "__main__":
    sys.exit(main())
