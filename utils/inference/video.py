"""What predict.py reads from: image files and folders, video files, cameras, network streams and
numbered image sequences. `open_source` tells them apart: a list of image files, or a `VideoSource`.

Video-like sources are read on a thread of their own, so the detector never waits on the source:

* a **file** or an **image sequence** (`frames/img_%04d.jpg`) is read ahead into a small bounded
  queue, and every frame reaches the detector (the output has every frame, or every `every`-th);
* a **camera** or a **stream** (rtsp://, rtmp://, http(s)://, udp://, tcp://) runs at its own pace:
  the reader keeps only the newest frame, so when detection is slower than the source the
  detector always gets the latest picture, older ones are dropped (counted), and no queue grows.
  A stream that stops delivering is reopened a few times; if it stays down the run ends with
  `StreamEndedError` (exit code 1) after everything written so far has been closed properly. So
  does a stream that keeps coming back only to drop again: the attempts count from the last time
  it delivered for RECOVERED_AFTER_S without a break, not from each reopening.

Nothing here imports TensorFlow: predict.py checks its sources before it loads the model.
"""

from __future__ import annotations

import os
import queue
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from utils.errors import YoloError

STREAM_SCHEMES = ("rtsp://", "rtsps://", "rtmp://", "http://", "https://", "udp://", "tcp://")
# How long OpenCV may wait for a source to open or deliver a frame.
OPEN_TIMEOUT_MS = 5000
# A stream that stops delivering is reopened this many times, this far apart, before the run ends.
RECONNECT_ATTEMPTS = 3
RECONNECT_DELAY_S = 1.0
# A reopened stream has recovered (its next outage gets RECONNECT_ATTEMPTS afresh) once it has
# delivered this long; one that drops sooner uses up the attempts left, so a flapping stream ends.
RECOVERED_AFTER_S = 30.0
# Frames of a file read ahead of the detector.
READ_AHEAD = 8
# What open_source can be asked for, and the file suffixes it takes for videos.
SOURCE_KINDS = ("auto", "images", "folders", "video")
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv", ".ts")


class SourceError(YoloError):
    """A source (image folder, video file, camera, stream) that cannot be opened or read."""


class StreamEndedError(YoloError):
    """A camera or stream that stopped delivering frames in the middle of a run (and did not come
    back after the reconnect attempts). What was processed before is kept."""

    exit_code = 1


def list_images(sources: Sequence[str], folder_only: bool) -> list[Path]:
    """Expand sources: a folder gives every non-hidden file in it (sorted); a file gives itself."""
    paths: list[Path] = []
    for source in sources:
        path = Path(source)
        if path.is_dir():
            paths.extend(sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith(".")))
        elif folder_only:
            raise SourceError(f"{path}: not a folder (dir_predict takes a folder)")
        else:
            paths.append(path)
    return paths


def source_kind(source: str) -> str:
    """"camera" (an index such as 0), "stream" (a URL), "sequence" (a printf pattern such as
    frames/img_%04d.jpg) or "file"."""
    if source.isdigit():
        return "camera"
    if source.lower().startswith(STREAM_SCHEMES):
        return "stream"
    if "%" in Path(source).name:
        return "sequence"
    return "file"


def _open(source: str, kind: str) -> cv2.VideoCapture:
    params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, OPEN_TIMEOUT_MS, cv2.CAP_PROP_READ_TIMEOUT_MSEC, OPEN_TIMEOUT_MS]
    if kind == "camera":
        return cv2.VideoCapture(int(source), cv2.CAP_ANY, params)
    if kind == "sequence":
        return cv2.VideoCapture(source, cv2.CAP_IMAGES)
    return cv2.VideoCapture(source, cv2.CAP_ANY, params)


@dataclass
class Frame:
    """One frame: `index` counts the source's frames from 0 (dropped ones included), `image` is
    BGR uint8 (H, W, 3) as OpenCV reads it, `captured` the time.perf_counter() it was read."""

    index: int
    image: np.ndarray
    captured: float


class VideoSource:
    """A video file, camera, stream or image sequence, read on a background thread.

    Iterate it for `Frame`s; `close()` (or a `with` block) stops the thread and releases the source.
    Opening raises SourceError at once (within OPEN_TIMEOUT_MS) when the source cannot be opened
    or delivers no first frame.

    Args:
        source: a camera index ("0"), a URL, an image-sequence pattern or a video file.
        every: use every `every`-th frame of a file or sequence (1: all). Live sources already drop
            what the detector cannot keep up with, so `every` thins them further the same way.
        live: keep only the newest frame (True for cameras and streams by default).
    """

    def __init__(self, source: str, every: int = 1, live: bool | None = None):
        if every < 1:
            raise SourceError(f"--every must be >= 1, got {every}")
        self.source = str(source)
        self.kind = source_kind(self.source)
        self.live = self.kind in ("camera", "stream") if live is None else live
        self.every = int(every)
        if self.kind == "file" and not Path(self.source).is_file():
            raise SourceError(f"{self.source}: no such video file")
        self._capture = _open(self.source, self.kind)
        if not self._capture.isOpened():
            self._capture.release()
            hint = " (no such camera?)" if self.kind == "camera" else ""
            raise SourceError(f"cannot open {self.describe()}{hint}")
        ok, first = self._capture.read()
        if not ok:
            self._capture.release()
            raise SourceError(f"{self.describe()}: opened but no frame could be read")
        self.fps = self._capture.get(cv2.CAP_PROP_FPS)
        self.fps = self.fps if 0 < self.fps < 1000 else 25.0
        count = int(self._capture.get(cv2.CAP_PROP_FRAME_COUNT)) if not self.live else 0
        self.frame_count = count if count > 0 else None
        self.frame_size = (first.shape[1], first.shape[0])  # (width, height)
        self.dropped = 0  # frames a live source delivered that the detector never saw
        self.reconnects = 0
        self._attempts = 0  # reconnect attempts of the current outage (see RECOVERED_AFTER_S)
        self._reopened_at: float | None = None
        self.error: StreamEndedError | None = None
        self._stop = threading.Event()
        self._ended = threading.Event()
        self._latest: Frame | None = None
        self._latest_lock = threading.Condition()
        self._queue: queue.Queue[Frame | None] = queue.Queue(maxsize=READ_AHEAD)
        self._thread = threading.Thread(target=self._read_loop, args=(first,), name="video-reader", daemon=True)
        self._thread.start()

    @property
    def delivered_fps(self) -> float:
        """The rate of the frames it delivers: a file's or sequence's rate / `every`, a live source's own."""
        return self.fps if self.live else self.fps / self.every

    @property
    def delivered_count(self) -> int | None:
        """How many frames a file or sequence delivers; None when unknown (a live source)."""
        return -(-self.frame_count // self.every) if self.frame_count else None

    def describe(self) -> str:
        return {"camera": f"camera {self.source}", "stream": f"stream {self.source}"}.get(
            self.kind, f"video {self.source}"
        )

    # -- the reader thread -----------------------------------------------------------------------
    def _read_loop(self, first: np.ndarray) -> None:
        index, image = 0, first
        try:
            while not self._stop.is_set():
                if index % self.every == 0:
                    self._deliver(Frame(index, image, time.perf_counter()))
                ok, image = self._capture.read()
                while not ok and self.live and not self._stop.is_set():
                    ok, image = self._reconnect()
                    if not ok:
                        return
                if not ok:
                    return
                index += 1
        finally:
            self._capture.release()
            self._ended.set()
            if not self.live:
                self._put(None)  # end of the file
            with self._latest_lock:
                self._latest_lock.notify_all()

    def _reconnect(self) -> tuple[bool, np.ndarray | None]:
        """Reopen a live source that stopped delivering; after RECONNECT_ATTEMPTS, record the error.

        The attempts start afresh only when the source had delivered for RECOVERED_AFTER_S since
        it was last reopened: one that comes back and drops again at once ends too."""
        if self._reopened_at is None or time.perf_counter() - self._reopened_at >= RECOVERED_AFTER_S:
            self._attempts = 0
        while self._attempts < RECONNECT_ATTEMPTS:
            self._attempts += 1
            if self._stop.wait(RECONNECT_DELAY_S):
                return False, None
            self.reconnects += 1
            self._capture.release()
            self._capture = _open(self.source, self.kind)
            if self._capture.isOpened():
                ok, image = self._capture.read()
                if ok:
                    self._reopened_at = time.perf_counter()
                    return True, image
        self.error = StreamEndedError(
            f"{self.describe()} stopped delivering frames and did not come back to stay after "
            f"{RECONNECT_ATTEMPTS} attempts to reopen it; the frames processed so far are kept"
        )
        return False, None

    def _deliver(self, frame: Frame) -> None:
        if self.live:
            with self._latest_lock:
                if self._latest is not None:
                    self.dropped += 1  # the detector never took it: replaced by a newer frame
                self._latest = frame
                self._latest_lock.notify_all()
        else:
            self._put(frame)

    def _put(self, item) -> None:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    # -- the consumer side -----------------------------------------------------------------------
    def read(self) -> Frame | None:
        """The next frame (a file's next one, a live source's newest one), or None at the end.

        Raises StreamEndedError when a live source went down for good (after the frames before it).
        """
        if not self.live:
            while True:
                try:
                    return self._queue.get(timeout=0.1)
                except queue.Empty:
                    if self._ended.is_set() and self._queue.empty():
                        return None
        with self._latest_lock:
            while self._latest is None and not self._ended.is_set():
                self._latest_lock.wait(0.1)
            frame, self._latest = self._latest, None
        if frame is None and self.error is not None:
            raise self.error
        return frame

    def __iter__(self) -> Iterator[Frame]:
        while (frame := self.read()) is not None:
            yield frame

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=OPEN_TIMEOUT_MS / 1000 + 1)

    def __enter__(self) -> VideoSource:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def is_video(source: str | Path) -> bool:
    """Whether `source` names a video: a camera index, a stream URL, an image sequence, or a file
    with a video suffix (VIDEO_SUFFIXES)."""
    source = str(source)
    return source_kind(source) != "file" or Path(source).suffix.lower() in VIDEO_SUFFIXES


def open_source(source: Source, *, kind: str = "auto", every: int = 1) -> list[Path] | VideoSource:
    """The image files of `source` (files, and folders: their non-hidden files, sorted), or one
    video source opened (`every`: every N-th frame of a file or sequence).

    kind: "auto" (one source that `is_video` is a video, anything else images), "images",
    "folders" (every source a folder) or "video". Raises SourceError: no images, a video that will
    not open, a file where a folder was asked for.
    """
    if kind not in SOURCE_KINDS:
        raise ValueError(f"unknown source kind {kind!r}; choose one of {', '.join(SOURCE_KINDS)}")
    if isinstance(source, VideoSource):
        return source
    sources = [source] if isinstance(source, (str, Path)) else list(source)
    if kind == "video" or (kind == "auto" and len(sources) == 1 and is_video(sources[0])):
        if len(sources) != 1:
            raise SourceError("a video is one source: a video file, camera index, stream URL or image sequence")
        return VideoSource(str(sources[0]), every=every)
    paths = list_images([str(s) for s in sources], folder_only=kind == "folders")
    if not paths:
        where = f" in {', '.join(map(str, sources))}" if sources else ": give image files or folders"
        raise SourceError(f"no input images{where}")
    return paths


def display_available() -> bool:
    """Whether a window can be opened (a display on Linux; always elsewhere)."""
    if sys.platform.startswith("linux"):
        return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
    return True


Source = str | Path | Sequence[str | Path] | VideoSource  # what open_source takes
