"""What the predictor makes of one image or video frame, and its JSON record (the only place a
record is built: predict.py --json, `JsonRecords`, a user's own sink); what a run did (`RunStats`).

Imports no TensorFlow: predict.py reaches this module before the model loads.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from utils.inference.drawing import draw_detections

if TYPE_CHECKING:
    from utils.inference.detector import Detections


@dataclass
class Result:
    """One image or video frame through the detector.

    source: what the record names: the image's path, or "<video>#frame=<index>" for a frame.
    class_names: the detector's class names (for labels and records).
    path: the image file (None for a frame). frame: the frame's index in its video (None for a file).
    image: uint8 RGB (H, W, 3) as displayed (EXIF orientation applied); None when it could not be read.
    detections: boxes in pixel xyxy of `image` (`Detections`); None for a failure and for
        attention pictures. With tracking, the tracks' boxes.
    extras: per detection, the fields its record adds ({"track_id": 3}; cam: head, cell, anchor).
    panels: attention pictures: per insertion point {"point", "block", "what", "min", "max"}.
    error: why the image could not be read (then image and detections are None).
    captured, started: time.perf_counter() when a frame was read, and when its detection began.
    """

    source: str
    class_names: Sequence[str] = ()
    path: Path | None = None
    frame: int | None = None
    image: np.ndarray | None = None
    detections: Detections | None = None
    extras: list[dict] | None = None
    panels: list[dict] | None = None
    error: str | None = None
    captured: float | None = None
    started: float | None = None
    _picture: np.ndarray | None = field(default=None, repr=False)

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def picture(self) -> np.ndarray | None:
        """What is saved or shown, uint8 RGB: the heatmap / attention / cam picture the predictor
        made, else the image with its detections drawn (drawn on first use); None for a failure."""
        if self._picture is None and self.image is not None and self.detections is not None:
            dets, names, labels = self.detections, self.class_names, None
            if self.extras and all("track_id" in extra for extra in self.extras):
                ids = zip(self.extras, dets.class_ids, strict=True)
                labels = [f"#{extra['track_id']} {names[int(class_id)]}" for extra, class_id in ids]
            self._picture = draw_detections(self.image, dets.boxes, dets.scores, dets.class_ids, names, labels=labels)
        return self._picture

    @picture.setter
    def picture(self, value: np.ndarray) -> None:
        self._picture = value

    def counts(self) -> str:
        """Detections per class, most first: "2 cat, 1 dog" (or "no detections")."""
        if self.detections is None:
            return "no detections"
        counts = Counter(self.class_names[int(c)] for c in self.detections.class_ids)
        return ", ".join(f"{n} {name}" for name, n in sorted(counts.items(), key=lambda kv: -kv[1])) or "no detections"

    def record(self) -> dict:
        """The JSON record: {"image", "width", "height", "detections"} with each detection
        {"class_id", "class_name", "score", "box": [x_min, y_min, x_max, y_max]} (pixels of the
        image as displayed) plus its `extras`; attention pictures have "panels" instead of
        "detections"; a failure is {"image", "error"}."""
        if self.error is not None or self.image is None:
            return {"image": self.source, "error": self.error or "no image"}
        height, width = self.image.shape[:2]
        record = {"image": self.source, "width": width, "height": height}
        if self.panels is not None:
            record["panels"] = self.panels
            return record
        detections = self.detections.to_records(self.class_names) if self.detections is not None else []
        for detection, extra in zip(detections, self.extras or [{}] * len(detections), strict=True):
            detection.update(extra)
        record["detections"] = detections
        return record


@dataclass
class RunStats:
    """What `Predictor.run` did, filled in as it goes (so it is there when a run ends by an error).

    processed: images or frames detected on. failed: files that could not be read.
    fps: frames: the rate of detection and drawing, smoothed, at the end.
    lags: live sources: seconds from each frame's capture to the end of its sinks.
    dropped: live sources: frames skipped to stay current.
    """

    processed: int = 0
    failed: int = 0
    fps: float = 0.0
    lags: list[float] = field(default_factory=list)
    dropped: int = 0

    def video_summary(self) -> str:
        """ "120 frames, 23.4 FPS at the end" (and, from a live source, the lag and the frames skipped)."""
        summary = f"{self.processed} frames, {self.fps:.1f} FPS at the end"
        if self.lags:
            summary += (
                f"; lag from capture to display: median {1000 * float(np.median(self.lags)):.0f} ms, "
                f"max {1000 * max(self.lags):.0f} ms; {self.dropped} older frames skipped to stay current"
            )
        return summary
