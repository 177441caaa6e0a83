"""What every script's command line shares: the options defined once, and one way to end.

* `add_input_size_argument`: `--input-size 416`, `320x416`, `320,416` or `320 416`, checked by
  `nets.model_data.parse_input_size`; the value is (height, width).
* `add_output_argument`: `--output DIR`, the one name of the output folder flag; the names older
  versions used (`--out`, `--save-dir`, `--output-dir`) still work and are hidden from --help.
* `add_detector_arguments` / `detector_kwargs`: the options of a detector (weights, cfg, backend,
  classes, conf, nms-iou, merge-iou, max-detections, input-size, batch-size, calib-data, precision, half,
  and slice, overlap, augment: `add_pass_arguments`), each with its help once,
  and the keyword arguments of `utils.inference.engine.loader.load_detector` they make.
* `add_data_arguments`: `--data` (any data set utils.data.sources reads: VOC folder or VOCdevkit,
  data.yaml, COCO JSON) and the sets to read from it (`--train-sets 2007:trainval 2012:trainval`).
* `run_script`: calls a script's `main` and turns how it ended into the exit code (utils.errors'
  EXIT_*, docs/exit-codes.md): a `utils.errors.YoloError` becomes "error: message" on stderr and
  the error's `exit_code`; SIGTERM is handled like Ctrl-C (every `finally` runs) and gives 143,
  Ctrl-C 130; any other exception is a bug: its traceback, and 70.
* `add_verbosity_arguments` / `setup_logging`: `-v/--verbose` (debug lines too) and `-q/--quiet`
  (warnings and errors only); the `yolov4_tiny` logger, which every package of the library logs
  under (`yolov4_tiny.training`, `yolov4_tiny.data`, ...), printed on stderr: an INFO line as it is,
  a warning as "warning: message", a debug line as "debug: message".
* `quiet_tensorflow`: no TensorFlow start-up lines (cudart, cpu_feature_guard, oneDNN, absl);
  every script calls it first, before anything imports TensorFlow.

Nothing here imports TensorFlow (nor `nets`, whose import registers the Keras layers), so a
script answers --help and checks its arguments at once; the model's facts are imported when an
input size is parsed.
"""

from __future__ import annotations

import argparse
import importlib.abc
import importlib.util
import logging
import os
import re
import shlex
import signal
import sys
import tempfile
import threading
import traceback
import unicodedata
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from utils.defaults import CONF_THRESHOLD, MAX_DETECTIONS, MERGE_IOU, NMS_IOU, PRECISIONS, SLICE_OVERLAP
from utils.errors import EXIT_BUG, EXIT_SIGINT, EXIT_SIGTERM, Interrupted, YoloError

# utils.inference.engine.loader's backends ("auto" first, the default); kept here so --help needs no TensorFlow.
BACKENDS = ("auto", "keras", "saved_model", "onnx", "tflite", "openvino")
OUTPUT_ALIASES = ("--out", "--save-dir", "--output-dir")
DATA_HELP = (
    "the data, by what it holds: a VOC folder (Annotations/, JPEGImages/, ImageSets/Main/) or a VOCdevkit of "
    "them (VOC2007/, VOC2012/), a data.yaml (YOLO txt labels) or a folder holding one, or COCO "
    "instances_<split>.json (a file, or a folder with annotations/)"
)
# nets.yolo.INSERTION_POINTS, written out so that --help needs no TensorFlow (a test keeps them equal).
ATTENTION_AT_HELP = (
    "where the attention blocks go, comma-separated: stage1 (52x52x128 at 416, the first CSP stage's output), "
    "stage2 (26x26x256, the second's), feat1 (26x26x256, the third stage's route to the neck), stage3 "
    "(13x13x512, the third stage's output), feat2 (13x13x512, the backbone's output), head_p5 (13x13x512, the "
    "P5 head's input), p5_upsample (26x26x128), head_p4 (26x26x256, the P4 head's input). Default: "
    "feat1,feat2,p5_upsample (self-attention: feat2). Blocks at other points than the default start as the "
    "identity (so do blocks under darknet --weights)"
)
FUSIONS = ("concat", "weighted")  # nets.fusion.FUSIONS, written out likewise
FUSION_HELP = (
    "how the neck joins the P5 upsample with feat1: concat (darknet's route) or weighted (BiFPN's fast "
    "normalised fusion of 1x1 projections to the concatenation's 384 channels, +147,458 parameters; "
    "nets/fusion.py)"
)
SETS_HELP = (
    "sets of --data, each SPLIT or WHERE:SPLIT: VOC image sets (2007:trainval 2012:trainval: VOCdevkit/VOC2007 "
    "and VOC2012), data.yaml entries (train, val), COCO splits (train2017)"
)


# What TensorFlow writes to stderr while it is imported, whatever TF_CPP_MIN_LOG_LEVEL says: its
# libraries log through absl before absl is initialised ("All log messages before
# absl::InitializeLog() is called are written to STDERR", then cudart_stub's "Could not find cuda
# drivers"), and TF_CPP_MIN_LOG_LEVEL applies only afterwards. Lines holding one of these are dropped.
TENSORFLOW_STARTUP_NOISE = (
    "absl::InitializeLog",
    "cudart_stub",
    "cpu_feature_guard",
    "oneDNN custom operations",
    "TF-TRT",
    "rebuild TensorFlow with the appropriate compiler flags",
    "Unable to register cuDNN factory",
    "Unable to register cuFFT factory",
    "Unable to register cuBLAS factory",
)


def quiet_tensorflow() -> None:
    """Silence TensorFlow's start-up lines; call it before anything imports TensorFlow.

    Sets TF_CPP_MIN_LOG_LEVEL=3 (errors hidden too, as FATAL is all a script's user needs from
    TensorFlow's C++ log) unless the user set it; while its level hides INFO (1 or more), the lines
    TensorFlow's libraries write before that level applies (TENSORFLOW_STARTUP_NOISE) are dropped
    from stderr during `import tensorflow`, and everything else written meanwhile is kept.
    """
    level = os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    if level.strip() in ("1", "2", "3") and "tensorflow" not in sys.modules:
        if not any(isinstance(finder, _QuietTensorFlowImport) for finder in sys.meta_path):
            sys.meta_path.insert(0, _QuietTensorFlowImport())


class _QuietTensorFlowImport(importlib.abc.MetaPathFinder):
    """Finds `tensorflow` as Python would, and runs its import with stderr filtered (once)."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname != "tensorflow":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(fullname)
        if spec is not None and spec.loader is not None:
            spec.loader = _FilteredStderrLoader(spec.loader)
        return spec


class _FilteredStderrLoader(importlib.abc.Loader):
    """A module's own loader, its `exec_module` run under `_stderr_without_startup_noise`."""

    def __init__(self, loader):
        self._loader = loader

    def __getattr__(self, name):
        return getattr(self._loader, name)

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module) -> None:
        try:
            with _stderr_without_startup_noise():
                self._loader.exec_module(module)
        finally:
            module.__loader__ = module.__spec__.loader = self._loader


@contextmanager
def _stderr_without_startup_noise() -> Iterator[None]:
    """What is written to file descriptor 2 meanwhile (C++ libraries and Python alike) goes to a
    temporary file, then to stderr again, less the lines holding TENSORFLOW_STARTUP_NOISE."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):  # no file descriptor 2 to redirect
        yield
        return
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            try:
                sys.stderr.flush()
            except (OSError, ValueError):
                pass
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            text = captured.read().decode("utf-8", errors="replace")
            lines = text.splitlines(keepends=True)
            kept = [line for line in lines if not any(noise in line for noise in TENSORFLOW_STARTUP_NOISE)]
            if kept:
                os.write(2, "".join(kept).encode("utf-8"))


class _InputSizeAction(argparse.Action):
    """One or two values ("416", "320x416", "320,416" or "320 416") -> (height, width)."""

    def __call__(self, parser, namespace, values, option_string=None):
        from nets.model_data import InputSizeError, parse_input_size

        text = "x".join(values) if isinstance(values, list) else str(values)
        try:
            setattr(namespace, self.dest, parse_input_size(text))
        except InputSizeError as err:
            raise argparse.ArgumentError(self, str(err)) from None


def add_input_size_argument(parser: argparse.ArgumentParser, default=None, help: str | None = None) -> None:
    """`--input-size`: SIZE, HEIGHTxWIDTH, HEIGHT,WIDTH or HEIGHT WIDTH; (height, width) or `default`."""
    parser.add_argument(
        "--input-size",
        nargs="+",
        metavar="SIZE",
        action=_InputSizeAction,
        default=default,
        help=help
        or "network input: SIZE or HEIGHTxWIDTH, multiples of 32 (the model's stride) up to 4096 "
        "(default: the model's, else 416)",
    )


def add_output_argument(parser: argparse.ArgumentParser, default: str | Path | None, help: str) -> None:
    """`--output`, and the older names of the same flag as hidden aliases (one destination: args.output).

    With no default, the script checks that it was given (argparse's `required` would not count
    the aliases).
    """
    default = None if default is None else Path(default)
    parser.add_argument("--output", type=Path, default=default, help=help)
    for alias in OUTPUT_ALIASES:
        parser.add_argument(alias, dest="output", type=Path, help=argparse.SUPPRESS)


def display_width(text: str) -> int:
    """Columns `text` takes in a terminal: wide (CJK) characters take two."""
    return sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in text)


def pad(text: str, width: int) -> str:
    """`text` left-aligned in `width` terminal columns (a table cell that holds CJK names)."""
    return text + " " * max(0, width - display_width(text))


def add_data_arguments(
    parser: argparse.ArgumentParser, sets: dict[str, str], default: str | Path | None = "VOCdevkit"
) -> None:
    """`--data` and, for each flag -> help of `sets` (e.g. {"--train-sets": "..."}), a list of sets
    (nargs "+", default None: the data's own default sets, utils.data.sources.DataSource.default_sets)."""
    parser.add_argument("--data", type=Path, default=None if default is None else Path(default), help=DATA_HELP)
    for flag, help_text in sets.items():
        parser.add_argument(flag, nargs="+", metavar="SET", default=None, help=help_text)


def add_attention_module_argument(parser: argparse.ArgumentParser) -> None:
    """`--attention-module MODULE`: imported before a .keras model with a user attention block loads."""
    parser.add_argument(
        "--attention-module",
        default=None,
        metavar="MODULE",
        help="a .keras model trained with your own attention block: its module (a dotted name or a .py file), "
        "imported before loading (loading never imports code itself)",
    )


def parse_variant(text: str) -> tuple[str, str]:
    """`--variant NAME=FLAGS` (bench_learning.py, ablation.py) as (NAME, FLAGS): train.py flags under a
    name that labels their row and folder. argparse.ArgumentTypeError when it is not that."""
    name, sep, flags = text.partition("=")
    if not sep or not re.fullmatch(r"[A-Za-z0-9_.-]+", name) or not flags.strip():
        raise argparse.ArgumentTypeError(
            f"expected NAME=FLAGS (NAME of letters, digits, '.', '_' or '-'; FLAGS train.py's), got {text!r}"
        )
    try:
        shlex.split(flags)
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"{text!r}: {err}") from None
    return name, flags


def add_structure_arguments(parser: argparse.ArgumentParser) -> None:
    """`--attention-at POINTS` and `--fusion concat|weighted`: where a new model's blocks go and how
    its neck joins the P5 upsample with feat1 (nets.yolo.YoloV4Tiny's attention_at and fusion)."""
    parser.add_argument("--attention-at", default=None, metavar="POINTS", help=ATTENTION_AT_HELP)
    parser.add_argument("--fusion", choices=FUSIONS, default="concat", help=FUSION_HELP)


def add_detector_arguments(
    parser: argparse.ArgumentParser,
    *,
    conf: float = CONF_THRESHOLD,
    nms_iou: float = NMS_IOU,
    batch_size: int = 8,
    weights_required: bool = True,
    darknet: bool = True,
    half: bool = True,
    precision: str = "auto",
) -> None:
    """The options of a detector, with the defaults the script wants (`precision`: --precision's)."""
    darknet_help = ", darknet .weights (with --cfg)" if darknet else ""
    parser.add_argument(
        "--weights",
        type=Path,
        required=weights_required,
        help=f"a .keras model saved by train.py{darknet_help}, or a model exported by export.py "
        "(.onnx, .tflite, SavedModel folder, OpenVINO .xml)",
    )
    if darknet:
        parser.add_argument(
            "--cfg", type=Path, default=None, help="the darknet cfg of --weights (classes, anchors and input size)"
        )
    parser.add_argument(
        "--backend",
        choices=BACKENDS,
        default="auto",
        help="runtime for --weights. auto (default): from the path (.keras, .onnx, .tflite, a SavedModel "
        "folder, an OpenVINO .xml, which needs pip install openvino), and a .keras model runs on a CPU on its "
        "ONNX export (made once, cached in $YOLO_CACHE_DIR, else ~/.cache/yolov4-tiny/onnx; TensorFlow when "
        "that fails, with a note) by ONNX Runtime, or by OpenVINO where it is installed and was timed at least "
        "10%% faster on this machine; on TensorFlow on a GPU or in mixed precision (--precision). keras: always "
        "TensorFlow; onnx, openvino: that runtime, for a .keras model on its cached export",
    )
    parser.add_argument(
        "--classes", type=Path, default=None, help="class names, one a line (default: the names saved in the model)"
    )
    parser.add_argument(
        "--conf", type=_fraction, default=conf, help=f"score threshold, objectness x class (default {conf})"
    )
    parser.add_argument(
        "--nms-iou", type=_fraction, default=nms_iou, help=f"per-class NMS IoU threshold (default {nms_iou})"
    )
    parser.add_argument(
        "--merge-iou",
        type=_fraction,
        default=MERGE_IOU,
        help="box merge: each kept box becomes the mean of the boxes of its class overlapping it by more than "
        "this IoU, weighted by score x IoU (YOLOv5's merge NMS; tighter boxes, same detections and scores); "
        f"1: off (default {MERGE_IOU})",
    )
    parser.add_argument(
        "--max-detections",
        type=_positive_int,
        default=MAX_DETECTIONS,
        help=f"most detections per image (default {MAX_DETECTIONS})",
    )
    add_input_size_argument(parser)
    parser.add_argument(
        "--batch-size", type=_positive_int, default=batch_size, help=f"images per forward pass (default {batch_size})"
    )
    add_attention_module_argument(parser)
    add_pass_arguments(parser)
    parser.add_argument(
        "--calib-data",
        type=Path,
        default=None,
        metavar="DATA",
        help="int8 calibration images, a VOCdevkit or VOC folder (its ImageSets/Main/train.txt images, at most "
        "100): on a CPU with int8 dot products (AVX512-VNNI, AVX-VNNI, AMX-INT8) a .keras model then runs its "
        "int8 ONNX export, calibrated on them (made once, cached), on ONNX Runtime or OpenVINO as --backend auto "
        "times them; unused elsewhere, with a "
        "warning (default: none, no int8)",
    )
    parser.add_argument(
        "--precision",
        choices=PRECISIONS,
        default=precision,
        help="compute precision of a .keras model. auto: bfloat16 on a CPU with AMX or AVX512-BF16 (about twice "
        "as fast there, on TensorFlow), float32 elsewhere; bfloat16 / float16 elsewhere are emulated and slower, "
        f"for measuring their accuracy (default: {precision})",
    )
    if half:
        parser.add_argument(
            "--half",
            action="store_true",
            help="mixed precision where the hardware makes it faster (float16 on a GPU, bfloat16 on AMX CPUs)",
        )


def add_pass_arguments(parser: argparse.ArgumentParser) -> None:
    """`--slice SIDE`, `--overlap FRACTION`, `--augment`: sliced inference and test-time
    augmentation, for small objects (utils/inference/slicing.py)."""
    parser.add_argument(
        "--slice",
        type=_positive_int,
        default=None,
        metavar="SIDE",
        help="sliced inference: also run the model on overlapping SIDE x SIDE tiles of each image (pixels of "
        "the image, at least 32), each at the model's input size, and merge their boxes with the full "
        "image's; finds objects too small for the full pass. Costs a pass per tile (default: off)",
    )
    parser.add_argument(
        "--overlap",
        type=_overlap,
        default=SLICE_OVERLAP,
        help=f"--slice: fraction of a tile shared with each neighbour, in [0, 1) (default {SLICE_OVERLAP})",
    )
    parser.add_argument(
        "--augment",
        action="store_true",
        help="test-time augmentation: each image (and tile) also flipped at 0.83x and at 0.67x of its size in "
        "the input, boxes merged by per-class NMS; 3 passes",
    )


def detector_kwargs(args: argparse.Namespace) -> dict:
    """`load_detector`'s keyword arguments from the options of `add_detector_arguments`."""
    return {
        "classes_path": args.classes,
        "conf": args.conf,
        "nms_iou": args.nms_iou,
        "merge_iou": args.merge_iou,
        "max_detections": args.max_detections,
        "input_shape": args.input_size,
        "batch_size": args.batch_size,
        "backend": args.backend,
        "half": getattr(args, "half", False),
        "precision": args.precision,
        "cfg_path": getattr(args, "cfg", None),
        "attention_module": args.attention_module,
        "slice": getattr(args, "slice", None),
        "overlap": getattr(args, "overlap", SLICE_OVERLAP),
        "augment": getattr(args, "augment", False),
        "calib_data": getattr(args, "calib_data", None),
    }


def _fraction(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be in [0, 1], got {text}")
    return value


def _overlap(text: str) -> float:
    value = float(text)
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"must be in [0, 1), got {text}")
    return value


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {text}")
    return value


def run_script(main: Callable[[Sequence[str] | None], int | None], argv: Sequence[str] | None = None) -> int:
    """Run a script's `main(argv)` and return its exit code.

    A `YoloError` (the project's own) prints "error: message" and returns its `exit_code`.
    SIGTERM raises `utils.errors.Interrupted` (a KeyboardInterrupt) in the main thread, so it
    unwinds the script as Ctrl-C does, and returns 143 (Ctrl-C: 130); a second SIGTERM is ignored
    until then, so the clean-up is not cut short. Any other exception is a bug: its traceback is
    printed and the code is 70, which no documented outcome uses. SystemExit (argparse's usage
    errors, --help) passes through.
    """
    previous = _handle_sigterm()
    try:
        return int(main(argv) or 0)
    except YoloError as err:
        print(f"error: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt as err:
        terminated = isinstance(err, Interrupted)
        print(f"terminated ({err.signal_name})" if terminated else "interrupted", file=sys.stderr)
        return err.exit_code if terminated else EXIT_SIGINT
    except Exception:
        traceback.print_exc()
        print(f"error: an unexpected error, a bug (exit code {EXIT_BUG}): the traceback above", file=sys.stderr)
        return EXIT_BUG
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _handle_sigterm():
    """Make SIGTERM raise Interrupted in the main thread; returns the handler it replaced (None
    off the main thread, where Python cannot set one)."""
    if threading.current_thread() is not threading.main_thread():
        return None

    def terminate(signum, frame):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # once: the clean-up it starts must finish
        raise Interrupted("SIGTERM", EXIT_SIGTERM)

    return signal.signal(signal.SIGTERM, terminate)


# ------------------------------------------------------------------------------------------- logging
LOGGER_NAME = "yolov4_tiny"  # the library's root logger (utils/__init__.py gives it a NullHandler)
LEVEL_PREFIXES = {logging.DEBUG: "debug: ", logging.INFO: "", logging.WARNING: "warning: "}


def add_verbosity_arguments(parser: argparse.ArgumentParser) -> None:
    """`-v/--verbose` (debug lines too) and `-q/--quiet` (warnings and errors only); see `setup_logging`."""
    group = parser.add_mutually_exclusive_group()
    group.add_argument("-v", "--verbose", action="store_true", help="also print debug lines")
    group.add_argument("-q", "--quiet", action="store_true", help="print warnings and errors only")


def verbosity_level(args: argparse.Namespace) -> int:
    """The logging level `add_verbosity_arguments`' options ask for: DEBUG, WARNING, else INFO."""
    if getattr(args, "verbose", False):
        return logging.DEBUG
    return logging.WARNING if getattr(args, "quiet", False) else logging.INFO


def setup_logging(args_or_level: argparse.Namespace | int = logging.INFO) -> logging.Logger:
    """Print the library's messages (the `yolov4_tiny` logger) on stderr, from the level of `-v`/`-q`
    (or a logging level): INFO as the message alone, WARNING as "warning: message", ERROR as "error:
    message", DEBUG as "debug: message". A second call replaces the first's handler; the messages
    do not also go to the root logger's handlers (no line twice). Returns the logger."""
    level = args_or_level if isinstance(args_or_level, int) else verbosity_level(args_or_level)
    logger = logging.getLogger(LOGGER_NAME)
    for handler in [h for h in logger.handlers if isinstance(h, ScriptHandler)]:
        logger.removeHandler(handler)
    handler = ScriptHandler()
    handler.setFormatter(MessageFormatter())
    logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False
    return logger


class MessageFormatter(logging.Formatter):
    """A record as a script's user reads it: its level's prefix ("warning: ", none for INFO), then
    the message (and a traceback, when one was logged)."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        prefix = LEVEL_PREFIXES.get(record.levelno, "error: " if record.levelno > logging.WARNING else "debug: ")
        return prefix + record.getMessage()


class ScriptHandler(logging.StreamHandler):
    """Writes to the current `sys.stderr` (looked up at each line, so a test's capture or a
    redirection made later still gets it), through tqdm when a progress bar is showing, so a line
    does not cut the bar."""

    def __init__(self):
        super().__init__(sys.stderr)

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:  # StreamHandler.__init__ sets it; the current stderr is used instead
        pass

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = self.format(record)
            tqdm = sys.modules.get("tqdm")  # a bar can only be showing when tqdm was imported
            if tqdm is not None:
                tqdm.tqdm.write(message, file=sys.stderr)  # clears the bars, writes, draws them again
            else:
                sys.stderr.write(message + "\n")
                sys.stderr.flush()
        except Exception:
            self.handleError(record)
