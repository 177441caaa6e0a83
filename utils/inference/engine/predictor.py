"""The prediction engine: sources -> a `Detector` -> results -> sinks, shared by predict.py and
Python users.

    from utils.inference import ImageFolder, JsonRecords, Predictor

    predictor = Predictor("logs/best.keras", conf=0.5)      # any load_detector option
    for result in predictor.stream("clip.mp4"):              # images, folders, videos, cameras, streams
        print(result.source, result.counts(), result.record())
    results = predictor.predict(["street.jpg", "photos/"])   # a list (files and folders)
    stats = predictor.run("photos/", [ImageFolder("out"), JsonRecords("dets.json")])

Sources (`open_source`): an image file, a folder (its files, sorted), a list of those; a video
file, a camera index ("0"), a stream URL (rtsp://, http://, ...) or an image sequence
("frames/%05d.jpg"), read on a thread (utils/inference/video.py). A file that is not a readable
image gives a `Result` with an `error`, and the rest go on.

Pictures (`Result.picture`): "boxes", the detections drawn (default); "heatmap", the objectness
map; "attention", what the attention blocks do (phi 1-5, --fusion weighted); "cam", Grad-CAM of the best detections
(utils/inference/explain.py). Attention and cam read the Keras model's layers, so they load the
Keras model whatever the backend would be, and need TensorFlow as the Keras backend (on another,
such as KERAS_BACKEND=jax, they raise TensorFlowRequired; the boxes and heatmap pictures run there).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import ExitStack, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np

from utils.data.images import image_batches, load_image
from utils.inference.detector import Detections, Detector, require_tensorflow
from utils.inference.drawing import draw_text
from utils.inference.engine import pictures
from utils.inference.engine.loader import describe_runtime, load_detector
from utils.inference.engine.results import Result, RunStats
from utils.inference.engine.sinks import Sink
from utils.inference.slicing import MultiPassDetector, SlicingError
from utils.inference.tracking import ByteTracker
from utils.inference.video import Source, VideoSource, open_source

if TYPE_CHECKING:  # explain.py imports TensorFlow: imported when the attention or cam pictures are asked for
    from utils.inference.explain import AttentionProbe, GradCam

logger = logging.getLogger("yolov4_tiny.inference")

PICTURES = ("boxes", "heatmap", "attention", "cam")
EXPLAINED = ("attention", "cam")  # read the Keras model's layers
TIMED_STAGES = {
    "preprocess": "letterbox",
    "model": "uint8 batch -> raw heads",
    "postprocess": "decode + NMS + boxes to the image",
    "total": "image -> boxes, as predict runs it",
}


@dataclass
class Timing:
    """`Predictor.time`: median milliseconds per image of each stage over `runs` runs, and the result."""

    source: str
    input_shape: tuple[int, int]
    runs: int
    median_ms: dict[str, float]
    result: Result

    def report(self) -> str:
        """The medians, a line per stage, under a heading naming the image, input and runs."""
        in_h, in_w = self.input_shape
        lines = [f"{self.source}, input {in_h}x{in_w}, batch 1, median of {self.runs} runs, ms per image:"]
        for stage, ms in self.median_ms.items():
            rate = f"; {1000 / ms:.1f} FPS" if stage == "total" else ""
            lines.append(f"  {stage:<11} {ms:8.2f}  ({TIMED_STAGES[stage]}{rate})")
        return "\n".join(lines)


class Predictor:
    """Images, folders, videos, cameras and streams through a detector, to results and sinks.

    Args:
        weights: a .keras model, darknet .weights (with cfg_path=), or a model exported by
            export.py; loaded by `load_detector` (attention and cam: the Keras model, on TensorFlow).
        detector: a ready `Detector` (or `MultiPassDetector`) instead of weights.
        picture: what `Result.picture` shows: "boxes" (default), "heatmap", "attention", "cam".
        top: cam: the detections explained per image (the best ones).
        track: video: keep an ID per object across frames ("boxes" pictures; "track_id" in records).
        every: video files and sequences: detect on every N-th frame.
        load_kwargs: `load_detector`'s options (conf, nms_iou, input_shape, backend, precision, half,
            slice, overlap, augment, ...).

    Raises ModelLoadError for weights that are not a model of ours, ExplainError when the
    picture cannot be made with this model (attention of a model without blocks or weighted
    fusion, cam of an exported one), TensorFlowRequired for attention and cam on another Keras
    backend than TensorFlow, SlicingError for slice or augment with another picture than
    "boxes", before any image is read.
    """

    def __init__(
        self,
        weights: str | Path | None = None,
        *,
        detector: Detector | MultiPassDetector | None = None,
        picture: str = "boxes",
        top: int = 4,
        track: bool = False,
        every: int = 1,
        **load_kwargs,
    ):
        if picture not in PICTURES:
            raise ValueError(f"unknown picture {picture!r}; choose one of {', '.join(PICTURES)}")
        if (weights is None) == (detector is None):
            raise ValueError("give weights or a detector (one of them)")
        if picture in EXPLAINED:
            require_tensorflow(f"the {picture} pictures (predict.py --mode {picture})")
        self.picture, self.top, self.track, self.every = picture, max(1, int(top)), track, every
        passes = (
            load_kwargs.get("slice") is not None
            or load_kwargs.get("augment")
            or isinstance(detector, MultiPassDetector)
        )
        if passes and picture != "boxes":
            raise SlicingError(f"slice and augment apply to the boxes pictures; the {picture} pictures are of one pass")
        if detector is None and picture in EXPLAINED:
            detector = _load_keras_detector(weights, picture=picture, **load_kwargs)
        elif detector is None:
            detector = load_detector(weights, **load_kwargs)
        self.detector = detector
        self._explainer = _explainer(detector, picture)  # attention of a model with nothing to draw: refused here

    def describe(self) -> str:
        """What runs: "2 classes, input (416, 416), ONNX Runtime on CPU, float32", and on a second
        line the cached ONNX export it runs, if any."""
        detector = self.detector
        runtime = describe_runtime(detector)
        text = f"{detector.num_classes} classes, input {detector.input_shape}, {runtime}"
        if isinstance(detector, MultiPassDetector):
            text += f"; per image: {detector.describe()}"
        if getattr(detector, "onnx_path", None) is not None:
            text += f"\n  its ONNX export, cached: {detector.onnx_path} (--backend keras: TensorFlow instead)"
        return text

    # ------------------------------------------------------------------ results
    def stream(self, source: Source, kind: str = "auto") -> Iterator[Result]:
        """A `Result` per image, or per frame of a video, as they come (`open_source`'s `source`
        and `kind`). Images are read and detected `detector.batch_size` at a time; in each batch
        the files that could not be read come first. A video source is closed when the stream
        ends or is closed."""
        source = open_source(source, kind=kind, every=self.every)
        with source if isinstance(source, VideoSource) else nullcontext():
            yield from self._results(source)

    def _results(self, source: list[Path] | VideoSource) -> Iterator[Result]:
        """`stream`'s results from a source `open_source` made (a video is closed by the caller)."""
        if isinstance(source, VideoSource):
            yield from self._frames(source)
            return
        for chunk in image_batches(source, self.detector.batch_size):
            for path, err in chunk.failures:
                yield Result(str(path), self.detector.class_names, path=Path(path), error=str(err))
            if chunk.images:
                metas = [{"source": str(path), "path": Path(path)} for path in chunk.items]
                yield from self._detect(chunk.images, metas)

    def predict(self, source: Source, kind: str = "auto") -> list[Result]:
        """Every result of `stream(source, kind)` in a list (not for cameras and streams: they do not end)."""
        return list(self.stream(source, kind))

    def run(
        self,
        source: Source,
        sinks: Sequence[Sink] = (),
        *,
        kind: str = "auto",
        max_frames: int | None = None,
        on_result: Callable[[Result], object] | None = None,
        stats: RunStats | None = None,
    ) -> RunStats:
        """Each result of `stream(source, kind)` to every sink in turn, then to `on_result` (progress,
        printing). A frame's picture gets the FPS drawn on it first. Ends at the end of the source,
        after `max_frames` results, or when a sink's write returns False (a window's q / Esc).

        The source and the sinks are closed on every way out (an error, Ctrl-C, SIGTERM): a video
        file stays playable, JSON records a complete array. stats: filled as the run goes (pass
        one to read it when the run ends by an error). Raises StreamEndedError (exit code 1) when
        a camera or stream goes down mid-run, after what came before went through the sinks.
        """
        stats = stats if stats is not None else RunStats()
        source = open_source(source, kind=kind, every=self.every)
        with ExitStack() as stack:
            if isinstance(source, VideoSource):
                stack.enter_context(source)
            for sink in sinks:
                stack.enter_context(sink)
            for result in self._results(source):
                if result.frame is not None and result.ok:
                    self._draw_fps(result, stats)
                keep_going = [sink.write(result) is not False for sink in sinks]
                _count(result, stats, source)
                if on_result is not None:
                    on_result(result)
                if not all(keep_going) or (max_frames and stats.processed + stats.failed >= max_frames):
                    break
        return stats

    # ------------------------------------------------------------------ the steps
    def _detect(self, images: list[np.ndarray], metas: list[dict]) -> list[Result]:
        """Results of a batch of uint8 RGB images; `metas`: each result's other fields."""
        detector = self.detector
        names = detector.class_names
        results = [Result(class_names=names, image=image, **meta) for image, meta in zip(images, metas, strict=True)]
        if self.picture == "boxes":  # detect: a MultiPassDetector's own (tiles, augmentation), else one batch
            for result, dets in zip(results, detector.detect(images), strict=True):
                result.detections = dets
            return results
        batch, infos = detector.preprocess(images)
        if self.picture == "heatmap":
            pictures.heatmap_pictures(detector, batch, infos, results)
        elif self.picture == "attention":
            pictures.attention_pictures(self._explainer, batch, infos, detector.input_shape, results)
        else:
            pictures.cam_pictures(self._explainer, detector, batch, infos, self.top, results)
        return results

    def _frames(self, video: VideoSource) -> Iterator[Result]:
        tracker = ByteTracker(high_score=self.detector.conf) if self.track and self.picture == "boxes" else None
        for frame in video:
            started = time.perf_counter()
            rgb = cv2.cvtColor(frame.image, cv2.COLOR_BGR2RGB)
            meta = {"source": f"{video.source}#frame={frame.index}", "frame": frame.index}
            [result] = self._detect([rgb], [{**meta, "captured": frame.captured, "started": started}])
            if tracker is not None:
                dets = result.detections
                tracks = tracker.update(dets.boxes, dets.scores, dets.class_ids)
                result.detections = Detections(
                    np.array([t.box for t in tracks], np.float32).reshape(-1, 4),
                    np.array([t.score for t in tracks], np.float32),
                    np.array([t.class_id for t in tracks], np.int32),
                )
                result.extras = [{"track_id": t.track_id} for t in tracks]
            yield result

    @staticmethod
    def _draw_fps(result: Result, stats: RunStats) -> None:
        """The frame rate (detection and drawing, smoothed) onto a frame's picture."""
        picture = result.picture
        elapsed = max(time.perf_counter() - (result.started or 0.0), 1e-9)
        stats.fps = 1.0 / elapsed if stats.fps == 0 else 0.9 * stats.fps + 0.1 / elapsed
        result.picture = draw_text(picture, f"FPS {stats.fps:.1f}")

    # ------------------------------------------------------------------ timing
    def time(
        self, image: str | Path | None = None, runs: int = 100, progress: Callable[[Iterable], Iterable] = iter
    ) -> Timing:
        """Median milliseconds per image of each stage (preprocess, model, postprocess, and the
        whole path as `detect` runs it, "total") over `runs` runs on `image` (a synthetic 640x480
        one when None), after 3 warm-up runs. progress: wraps the runs (e.g. tqdm)."""
        detector = self.detector
        if image is not None:
            name, pixels = str(image), load_image(image)
        else:
            name = "synthetic 640x480"
            pixels = np.random.default_rng(0).integers(0, 256, (480, 640, 3), dtype=np.uint8)
        batch, infos = detector.preprocess([pixels])
        for _ in range(3):  # warm up (trace, allocate)
            detector.postprocess_raw(detector.raw_outputs(batch), infos)
            dets = detector.detect([pixels])[0]
        stages: dict[str, list[float]] = {stage: [] for stage in TIMED_STAGES}
        for _ in progress(range(runs)):
            t0 = time.perf_counter()
            batch, infos = detector.preprocess([pixels])
            t1 = time.perf_counter()
            raw = detector.raw_outputs(batch)
            t2 = time.perf_counter()
            detector.postprocess_raw(raw, infos)
            t3 = time.perf_counter()
            dets = detector.detect([pixels])[0]  # the whole path, as predict uses it (one graph on TensorFlow)
            t4 = time.perf_counter()
            for key, seconds in zip(stages, (t1 - t0, t2 - t1, t3 - t2, t4 - t3), strict=True):
                stages[key].append(1000.0 * seconds)
        median = {key: float(np.median(values)) for key, values in stages.items()}
        result = Result(name, detector.class_names, image=pixels, detections=dets)
        return Timing(name, tuple(detector.input_shape), runs, median, result)


def _count(result: Result, stats: RunStats, source) -> None:
    """`result` into `stats` (after its sinks: a live frame's lag runs to the end of its display)."""
    if result.ok:
        stats.processed += 1
    else:
        stats.failed += 1
    if isinstance(source, VideoSource) and source.live and result.captured is not None:
        stats.lags.append(time.perf_counter() - result.captured)
        stats.dropped = source.dropped


def _load_keras_detector(weights: str | Path, *, picture: str, **load_kwargs) -> Detector:
    """The detector of the attention and cam pictures: always over the Keras model (they read its
    layers), whatever backend the path would pick, in float32 (mixed precision does not apply)."""
    from utils.inference.explain import ExplainError

    backend = load_kwargs.pop("backend", None)
    if backend not in (None, "auto", "keras"):
        raise ExplainError(
            f"the {picture} pictures read the Keras model's layers; they cannot run on backend {backend}"
        )
    if load_kwargs.get("cfg_path") is None and Path(weights).suffix.lower() != ".keras":
        raise ExplainError(
            f"the {picture} pictures read the Keras model's layers: give a .keras model (or darknet .weights "
            f"with their cfg), not {weights}"
        )
    precision = load_kwargs.pop("precision", "auto")
    if load_kwargs.pop("half", False) or precision not in ("auto", "float32"):
        logger.warning("the %s pictures run in float32; --half and --precision do not apply", picture)
    return load_detector(weights, backend="keras", precision="float32", **load_kwargs)


def _explainer(detector: Detector, picture: str) -> AttentionProbe | GradCam | None:
    """What makes the attention or cam pictures, from the detector's Keras model."""
    if picture not in EXPLAINED:
        return None
    from utils.inference.explain import AttentionProbe, ExplainError, GradCam

    model = getattr(detector, "model", None)
    if model is None:
        raise ExplainError(f"the {picture} pictures read the Keras model's layers; this detector has no Keras model")
    return AttentionProbe(model) if picture == "attention" else GradCam(model)
