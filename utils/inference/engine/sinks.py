"""Where results go: pictures in a folder (and crops), a video file, a live window, JSON records.

A sink is a context manager with `write(result)`. `Predictor.run` enters every sink, writes each
result to them in the order given, and leaves them on every way out (the end, an error, Ctrl-C,
SIGTERM through utils.cli.run_script), so a video is closed playable and the JSON array complete.
A sink whose `write` returns False ends the run (a window's q or Esc). Write your own by
subclassing `Sink`.

`check_outputs` is the check before the model loads: what a run writes can be written, and writing
it destroys no input. Imports no TensorFlow.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from utils.data.images import KEEP_SUFFIXES
from utils.files import OutputError, atomic_write, check_writable_folder, is_within, unique_name
from utils.inference.engine.results import Result
from utils.inference.video import VideoSource, display_available

logger = logging.getLogger("yolov4_tiny.inference")


def output_name(path: Path, suffix: str = "") -> str:
    """The name of `path`'s picture: its stem + `suffix`, its suffix when PIL writes it losslessly
    enough (KEEP_SUFFIXES), else .png."""
    keep = path.suffix.lower() if path.suffix.lower() in KEEP_SUFFIXES else ".png"
    return f"{path.stem}{suffix}{keep}"


def save_rgb(image: np.ndarray, path: Path) -> None:
    """`image` (RGB uint8) at `path`, written atomically: a full disk or a kill leaves no half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda temp: Image.fromarray(image).save(temp))


def save_crops(result: Result, folder: Path, stem: str, taken: set[str]) -> int:
    """Each detection of `result` as `<stem>_<k>_<class>.png` in `folder`, under a name not in
    `taken`; returns how many were saved (a box with no pixel inside the image is skipped)."""
    image, dets = result.image, result.detections
    height, width = image.shape[:2]
    saved = 0
    for k, (box, class_id) in enumerate(zip(dets.boxes, dets.class_ids, strict=True)):
        x1, y1 = max(0, int(np.floor(box[0]))), max(0, int(np.floor(box[1])))
        x2, y2 = min(width, int(np.ceil(box[2]))), min(height, int(np.ceil(box[3])))
        if x2 <= x1 or y2 <= y1:
            continue
        name = result.class_names[int(class_id)].replace("/", "_").replace(" ", "_")
        save_rgb(image[y1:y2, x1:x2], folder / unique_name(f"{stem}_{k}_{name}.png", taken))
        saved += 1
    return saved


def check_outputs(
    inputs: Sequence[str | Path],
    *,
    folder: str | Path | None = None,
    holds_inputs: bool = False,
    json_path: str | Path | None = None,
) -> None:
    """Before the model loads: what the run writes can be written, and writing it destroys no input.

    inputs: the sources as given (files, folders, video names) and the image files found in them.
    folder: where the run writes (pictures, a video); None: nothing. holds_inputs: the pictures
        take the inputs' names (the image modes), so a `folder` that is a source folder or holds an
        input, at any depth, is refused: an annotated copy never replaces its original.
    json_path: the JSON file; refused when it is a folder or one of the inputs.
    Raises OutputError (exit code 2).
    """
    inputs = [Path(p) for p in inputs]
    if folder is not None:
        held = next((p for p in inputs if is_within(p, folder)), None) if holds_inputs else None
        if held is not None:
            raise OutputError(
                f"--output {folder} holds the input {held}: the annotated copies would overwrite the "
                "originals; choose an --output outside the inputs"
            )
        check_writable_folder(folder)
    if json_path is not None:
        json_path = Path(json_path)
        if json_path.is_dir():
            raise OutputError(f"--json {json_path}: a folder; give a file name")
        if any(p.is_file() and p.resolve() == json_path.resolve() for p in inputs):
            raise OutputError(f"--json {json_path} is an input; give another file name")
        check_writable_folder(json_path.parent, "--json")


class Sink:
    """Where results go: `write` each result (False ends the run); used as a context manager,
    whose exit closes it."""

    def __enter__(self) -> Sink:
        return self

    def __exit__(self, exc_type, exc, traceback) -> None:
        self.close()

    def write(self, result: Result) -> bool | None:
        raise NotImplementedError

    def close(self) -> None:
        """Release what the sink holds (nothing by default)."""


class ImageFolder(Sink):
    """Each result's picture in `folder` under its input's name plus `suffix` ("rgb.jpg",
    "rgb_heatmap.jpg"): two inputs of one name (a/x.jpg and b/x.jpg, x.png and x.gif) get x.jpg
    and x_1.jpg; a frame is "<video stem>_<index>.png". Written atomically, so a full disk or a
    kill leaves no half-written picture. crops: also each detection as its own image in
    `folder`/crops ("x_1_0_cat.png"). Failures are skipped; `written` counts the pictures."""

    def __init__(self, folder: str | Path, suffix: str = "", crops: bool = False):
        self.folder, self.suffix, self.crops = Path(folder), suffix, crops
        self.written = 0
        self._taken: set[str] = set()
        self._crops_taken: set[str] = set()

    def write(self, result: Result) -> None:
        if not result.ok:
            return
        path = result.path
        if path is None:  # a video frame
            path = Path(f"{Path(result.source.split('#frame=')[0]).stem}_{result.frame or 0:06d}.png")
        name = unique_name(output_name(path, self.suffix), self._taken)
        save_rgb(result.picture, self.folder / name)
        self.written += 1
        if self.crops and result.detections is not None:
            save_crops(result, self.folder / "crops", Path(name).stem, self._crops_taken)


class JsonRecords(Sink):
    """Each result's `Result.record()` in a JSON file, written as they come.

    The file is a JSON array, one record a line, flushed after each: what is done is on disk at
    once, and the array is closed on every way out (the end, an error, Ctrl-C, SIGTERM); a kill
    nothing can handle (SIGKILL) leaves every finished line, only the closing "]" missing. The file
    is made with the first record (a run that ends at the end with none writes "[]", one that fails
    before its first leaves no file).
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._file = None

    def write(self, result: Result) -> None:
        self.append(result.record())

    def append(self, record: dict) -> None:
        """One more record (any JSON-ready dict)."""
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

    def __exit__(self, exc_type, exc, traceback) -> None:
        if self._file is None and exc_type is not None:
            return
        try:
            self._write("[]\n" if self._file is None else "\n]\n")
        finally:
            self.close()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()


def video_output_name(source: VideoSource) -> str:
    """The annotated video's file name: "clip_detected.mp4" for clip.mp4 (or a sequence, less its
    "%"), "camera0.mp4" for camera 0, "<last part of the URL>_detected.mp4" for a stream."""
    name = f"camera{source.source}.mp4" if source.kind == "camera" else f"{Path(source.source).stem}_detected.mp4"
    return name.replace("%", "")


class VideoFile(Sink):
    """The results' pictures as an MP4 video (mp4v) at `fps` frames per second, its size that of
    the first picture; opened with the first frame and closed (playable) on every way out."""

    def __init__(self, path: str | Path, fps: float):
        self.path, self.fps = Path(path), float(fps)
        self.frames = 0
        self._writer = None

    def write(self, result: Result) -> None:
        if not result.ok:
            return
        picture = cv2.cvtColor(result.picture, cv2.COLOR_RGB2BGR)
        if self._writer is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            size = (picture.shape[1], picture.shape[0])
            self._writer = cv2.VideoWriter(str(self.path), cv2.VideoWriter_fourcc(*"mp4v"), self.fps, size)
            if not self._writer.isOpened():
                self._writer = None
                raise OutputError(f"{self.path}: cannot write video")
        self._writer.write(picture)
        self.frames += 1

    def close(self) -> None:
        if self._writer is not None:
            self._writer.release()


class Window(Sink):
    """Each picture in a live window titled `title`; q or Esc ends the run. Where no window can
    be opened (e.g. opencv-python-headless) it says so once, in the log, and the run goes on."""

    def __init__(self, title: str):
        self.title = title
        self._shown = self._failed = False

    def write(self, result: Result) -> bool:
        if self._failed or not result.ok:
            return True
        try:
            cv2.imshow(self.title, cv2.cvtColor(result.picture, cv2.COLOR_RGB2BGR))
            self._shown = True
            return cv2.waitKey(1) & 0xFF not in (ord("q"), 27)
        except cv2.error as err:
            logger.warning("no live window (%s)", err.msg.strip())
            self._failed = True
            return True

    def close(self) -> None:
        if self._shown:
            cv2.destroyAllWindows()


def make_sinks(
    source: Sequence[Path] | VideoSource,
    *,
    folder: str | Path | None = None,
    suffix: str = "",
    crops: bool = False,
    save_video: bool = False,
    json_path: str | Path | None = None,
    window_title: str | None = None,
) -> list[Sink]:
    """The usual sinks of `source`, in the order they must run: the pictures (image files:
    `ImageFolder` in `folder` with `suffix` and `crops`) or the video (`save_video`: a `VideoFile`
    in `folder`, named by `video_output_name`, at the rate the source delivers), then the records
    (`json_path`), then a live window (video only, `window_title`, where a display exists)."""
    video = isinstance(source, VideoSource)
    if video and save_video and folder is None:
        raise ValueError("make_sinks: save_video needs the folder to write the video in")
    sinks: list[Sink] = []
    if video and save_video:
        sinks.append(VideoFile(Path(folder) / video_output_name(source), source.delivered_fps))
    elif not video and folder is not None:
        sinks.append(ImageFolder(folder, suffix, crops=crops))
    if json_path is not None:
        sinks.append(JsonRecords(json_path))
    if video and window_title is not None and display_available():
        sinks.append(Window(window_title))
    return sinks
