"""Sliced inference (SAHI) and test-time augmentation: one detector run over several views of
each image, the boxes mapped back to the image and merged. For small objects.

    detector = load_detector("logs/best.keras", slice=640, overlap=0.2, augment=True)
    [dets] = detector.detect([image])   # the same `Detections`: pixel xyxy in the image
    # or wrap any detector: MultiPassDetector(detector, slice=640)

The views of an image
---------------------
* the image itself, letterboxed to the model's input as ever;
* with `slice=T`: square tiles of T x T pixels of the image (T clamped to the image's sides),
  `overlap` of a tile's side shared at least between neighbours (`tile_windows`). A row of tiles
  starts at the left border and ends at the right one, the tiles spread evenly between them, so a
  border tile is shifted inside the image, never padded. Each tile is letterboxed to the model's
  input, so an object covers input / T times the pixels it has in the image;
* with `augment`: every window above (image and tiles) also at 0.83x flipped left-right and at
  0.67x of the size it has in the input, as ultralytics' `_predict_augment` does (scales 1, 0.83,
  0.67; the flip at 0.83). A smaller view is the window resized and centred on grey in the input.
  Scales above 1 are what `slice` gives.

The merge rule (`merge_detections`)
-----------------------------------
1. Cut boxes go: a box from a tile that touches one of the tile's inner edges (a side that is
   not the image's border; within EDGE_MARGIN pixels of the model's input) is dropped when a
   larger box of the same class, from any view, covers at least CUT_COVER of it. An object cut
   by a seam then keeps the box of the view that saw it whole (a neighbouring tile, the image).
2. Per-class NMS at the detector's `nms_iou` over all the rest, best score first, at most
   `max_detections` kept. Test-time augmentation merges by this NMS too (no box fusion), as
   ultralytics does.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from utils.boxes import box_area, box_intersection_aligned, box_iou, clip_boxes
from utils.defaults import SLICE_OVERLAP
from utils.errors import YoloError
from utils.inference.detector import Detections
from utils.inference.letterbox import LETTERBOX_FILL

logger = logging.getLogger("yolov4_tiny.inference")

AUGMENT_VIEWS = ((1.0, False), (0.83, True), (0.67, False))  # (scale, flip left-right), ultralytics'
MIN_TILE = 32  # pixels: the model's stride; a smaller tile holds nothing it can find
EDGE_MARGIN = 2.0  # pixels of the model's input: a box this close to a tile's inner edge is cut there
CUT_COVER = 0.6  # a cut box goes when a larger same-class box covers this fraction of it


class SlicingError(YoloError, ValueError):
    """Slicing or augmentation options that cannot work; the message says which."""


def check_pass_options(slice: int | None, overlap: float) -> None:
    """Raise SlicingError for a tile side under MIN_TILE or an overlap outside [0, 1)."""
    if slice is not None and int(slice) < MIN_TILE:
        raise SlicingError(f"slice: tiles of at least {MIN_TILE} pixels, got {slice}")
    if not 0.0 <= float(overlap) < 1.0:
        raise SlicingError(f"overlap: a fraction of the tile in [0, 1), got {overlap}")


def _starts(length: int, tile: int, overlap: float) -> list[int]:
    """Where the tiles of one axis start: from 0 to length - tile, spread evenly, neighbours
    sharing at least round(tile * overlap) pixels."""
    if length <= tile:
        return [0]
    stride = max(1, tile - round(tile * overlap))
    count = math.ceil((length - tile) / stride) + 1
    return [round(i * (length - tile) / (count - 1)) for i in range(count)]


def tile_windows(image_hw: tuple[int, int], tile: int, overlap: float = SLICE_OVERLAP) -> np.ndarray:
    """The tiles that cover an image of (h, w): int32 (K, 4) pixel xyxy, row by row.

    Each tile is min(tile, w) x min(tile, h), inside the image; neighbours overlap by at least
    round(tile * overlap) pixels. An image no larger than a tile is one tile: the image.
    """
    check_pass_options(tile, overlap)
    h, w = int(image_hw[0]), int(image_hw[1])
    tw, th = min(tile, w), min(tile, h)
    return np.array(
        [[x, y, x + tw, y + th] for y in _starts(h, th, overlap) for x in _starts(w, tw, overlap)], np.int32
    ).reshape(-1, 4)


@dataclass(frozen=True)
class View:
    """One pass over an image: its `window` (pixel xyxy, ints), flipped left-right or not, at
    `scale` of the size the window has letterboxed in the model's input."""

    window: tuple[int, int, int, int]
    scale: float = 1.0
    flip: bool = False
    is_tile: bool = False

    def render(self, image: np.ndarray, input_hw: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        """The view's uint8 image for the detector, and the map (sx, sy, ox, oy) of its boxes
        back to the window's pixels: window_xy = (view_xy - (ox, oy)) / (sx, sy)."""
        x0, y0, x1, y1 = self.window
        crop = image[y0:y1, x0:x1]
        if self.flip:
            crop = crop[:, ::-1]
        if self.scale == 1.0:  # the detector letterboxes it
            return np.ascontiguousarray(crop), np.array([1, 1, 0, 0], np.float32)
        in_h, in_w = int(input_hw[0]), int(input_hw[1])
        ch, cw = crop.shape[:2]
        fit = min(in_h / ch, in_w / cw) * self.scale
        new_w, new_h = max(1, round(cw * fit)), max(1, round(ch * fit))
        canvas = np.full((in_h, in_w, 3), LETTERBOX_FILL, np.uint8)
        ox, oy = (in_w - new_w) // 2, (in_h - new_h) // 2
        canvas[oy : oy + new_h, ox : ox + new_w] = cv2.resize(
            np.ascontiguousarray(crop), (new_w, new_h), interpolation=cv2.INTER_AREA
        )
        return canvas, np.array([new_w / cw, new_h / ch, ox, oy], np.float32)

    def to_image(self, boxes: np.ndarray, mapping: np.ndarray) -> np.ndarray:
        """Pixel xyxy (N, 4) in the rendered view -> pixel xyxy in the image, clipped to the window."""
        sx, sy, ox, oy = (float(v) for v in mapping)
        x0, y0, x1, y1 = self.window
        out = (np.asarray(boxes, np.float32).reshape(-1, 4) - [ox, oy, ox, oy]) / [sx, sy, sx, sy]
        if self.flip:
            out[:, [0, 2]] = (x1 - x0) - out[:, [2, 0]]
        out = clip_boxes(out.astype(np.float32), (y1 - y0, x1 - x0)) + np.array([x0, y0, x0, y0], np.float32)
        return out.astype(np.float32)

    def edge_margin(self, input_hw: tuple[int, int]) -> float:
        """EDGE_MARGIN pixels of the model's input, in pixels of the image."""
        x0, y0, x1, y1 = self.window
        fit = min(input_hw[0] / (y1 - y0), input_hw[1] / (x1 - x0)) * self.scale
        return EDGE_MARGIN / fit


def image_views(
    image_hw: tuple[int, int],
    slice: int | None = None,
    overlap: float = SLICE_OVERLAP,
    augment: bool = False,
) -> list[View]:
    """The views of an image of (h, w): the image, its tiles (`slice`), each also at the
    AUGMENT_VIEWS scales and flips (`augment`). An image that fits in one tile has no tiles."""
    h, w = int(image_hw[0]), int(image_hw[1])
    windows = [((0, 0, w, h), False)]
    if slice is not None:
        tiles = tile_windows((h, w), slice, overlap)
        if len(tiles) > 1 or tuple(tiles[0]) != (0, 0, w, h):
            windows += [(tuple(int(v) for v in tile), True) for tile in tiles]
    passes = AUGMENT_VIEWS if augment else ((1.0, False),)
    return [View(window, scale, flip, is_tile) for window, is_tile in windows for scale, flip in passes]


def _touches_inner_edge(boxes: np.ndarray, view: View, image_hw: tuple[int, int], margin: float) -> np.ndarray:
    """(N,) bool: the boxes (image pixels) that reach a side of the view's tile that is not the image's border."""
    if not view.is_tile:
        return np.zeros(len(boxes), bool)
    x0, y0, x1, y1 = view.window
    h, w = image_hw
    return (
        ((x0 > 0) & (boxes[:, 0] <= x0 + margin))
        | ((y0 > 0) & (boxes[:, 1] <= y0 + margin))
        | ((x1 < w) & (boxes[:, 2] >= x1 - margin))
        | ((y1 < h) & (boxes[:, 3] >= y1 - margin))
    )


def _covered_by_larger(boxes: np.ndarray, class_ids: np.ndarray, candidates: np.ndarray) -> np.ndarray:
    """(N,) bool: the candidates a larger box of their class covers by at least CUT_COVER of their area."""
    out = np.zeros(len(boxes), bool)
    if not candidates.any():
        return out
    areas = box_area(boxes.astype(np.float64))
    inter = box_intersection_aligned(boxes[candidates][:, None, :], boxes[None, :, :])
    cover = np.divide(inter, areas[candidates][:, None], out=np.zeros_like(inter), where=areas[candidates][:, None] > 0)
    larger = areas[None, :] > areas[candidates][:, None]
    same = class_ids[None, :] == class_ids[candidates][:, None]
    out[candidates] = ((cover >= CUT_COVER) & larger & same).any(axis=1)
    return out


def per_class_nms(boxes: np.ndarray, scores: np.ndarray, class_ids: np.ndarray, iou: float) -> np.ndarray:
    """Greedy per-class NMS over pixel xyxy (N, 4): indices kept, best score first. A box goes when
    it overlaps a better kept box of its class by IoU > `iou` (as the detector's own NMS)."""
    keep = []
    for class_id in np.unique(class_ids):
        members = np.flatnonzero(class_ids == class_id)
        members = members[np.argsort(-scores[members], kind="stable")]
        overlaps = box_iou(boxes[members], boxes[members])  # one class at a time: (n, n), not (N, N)
        suppressed = np.zeros(len(members), bool)
        for i in range(len(members)):
            if not suppressed[i]:
                keep.append(members[i])
                suppressed |= overlaps[i] > iou
    keep = np.array(keep, np.int64)
    return keep[np.argsort(-scores[keep], kind="stable")]


def merge_detections(
    parts: Sequence[tuple[View, Detections]],
    image_hw: tuple[int, int],
    input_hw: tuple[int, int],
    nms_iou: float,
    max_detections: int,
) -> Detections:
    """The detections of every view of one image (boxes already in the image's pixels) merged by
    the rule in the module docstring: cut boxes at inner tile edges dropped, then per-class NMS."""
    parts = [(view, dets) for view, dets in parts if len(dets)]
    if not parts:
        return Detections()
    boxes = np.concatenate([d.boxes for _, d in parts]).astype(np.float32)
    scores = np.concatenate([d.scores for _, d in parts]).astype(np.float32)
    class_ids = np.concatenate([d.class_ids for _, d in parts]).astype(np.int32)
    at_edge = np.concatenate([_touches_inner_edge(d.boxes, v, image_hw, v.edge_margin(input_hw)) for v, d in parts])
    kept = ~_covered_by_larger(boxes, class_ids, at_edge)
    boxes, scores, class_ids = boxes[kept], scores[kept], class_ids[kept]
    best = per_class_nms(boxes, scores, class_ids, nms_iou)[:max_detections]
    return Detections(boxes[best], scores[best], class_ids[best])


class MultiPassDetector:
    """A detector run over several views of each image (tiles, flips, scales), its boxes merged.

    Args:
        detector: any detector with `detect(images, batch_size=None) -> list[Detections]` (pixel
            xyxy in each image) and `input_shape`, `nms_iou`, `max_detections`: a `Detector`.
        slice: tile side in pixels of the image (None: no tiles). overlap: fraction of a tile
            shared with its neighbours, in [0, 1). augment: test-time augmentation.

    Every other attribute (class_names, conf, input_shape, backend, preprocess, raw_outputs, ...)
    is the wrapped detector's, so a single pass still runs as before; `detect` is the multi-pass
    one. `detect_batch` (a letterboxed batch) has no whole images to slice: not offered.
    Raises SlicingError for a tile under MIN_TILE pixels or an overlap outside [0, 1).
    """

    def __init__(self, detector, *, slice: int | None = None, overlap: float = SLICE_OVERLAP, augment: bool = False):
        check_pass_options(slice, overlap)
        self.detector = detector
        self.slice = None if slice is None else int(slice)
        self.overlap = float(overlap)
        self.augment = bool(augment)

    def __getattr__(self, name: str):
        if name == "detect_batch":
            raise AttributeError(f"{type(self).__name__} detects whole images (detect), not letterboxed batches")
        if name.startswith("__") or "detector" not in self.__dict__:  # copy, pickle: no forwarding
            raise AttributeError(name)
        return getattr(self.__dict__["detector"], name)

    def describe(self) -> str:
        """What runs per image: "the image and 640-pixel tiles (overlap 0.2), each 3 ways (test-time augmentation)"."""
        text = "the image"
        if self.slice is not None:
            text += f" and {self.slice}-pixel tiles (overlap {self.overlap:g})"
        if self.augment:
            text += f", each {len(AUGMENT_VIEWS)} ways (test-time augmentation: scales 1, 0.83 flipped, 0.67)"
        return text

    def views(self, image_hw: tuple[int, int]) -> list[View]:
        """The views of an image of (h, w) (`image_views`)."""
        return image_views(image_hw, self.slice, self.overlap, self.augment)

    def detect(self, images: Sequence[np.ndarray], batch_size: int | None = None) -> list[Detections]:
        """Detect objects in uint8 RGB (H, W, 3) images: every view through the wrapped
        detector, `batch_size` views per call, merged per image.

        Returns: one `Detections` per image, boxes in pixel xyxy of that image.
        """
        if isinstance(images, np.ndarray) and images.ndim == 3:
            raise ValueError("detect() takes a list of images; wrap a single image as [image]")
        input_hw = tuple(int(v) for v in self.detector.input_shape)
        results = []
        for image in images:
            image = np.asarray(image)
            if image.ndim != 3 or image.shape[-1] != 3:
                raise ValueError(f"images must be uint8 (H, W, 3) RGB arrays, got {image.dtype} {image.shape}")
            views = self.views(image.shape[:2])
            rendered = [view.render(image, input_hw) for view in views]
            found = self.detector.detect([pixels for pixels, _ in rendered], batch_size=batch_size)
            parts = [
                (view, Detections(view.to_image(dets.boxes, mapping), dets.scores, dets.class_ids))
                for view, (_, mapping), dets in zip(views, rendered, found, strict=True)
            ]
            merged = merge_detections(
                parts, image.shape[:2], input_hw, self.detector.nms_iou, self.detector.max_detections
            )
            logger.debug(f"{len(views)} views, {sum(len(d) for _, d in parts)} boxes -> {len(merged)} merged")
            results.append(merged)
        return results


def with_passes(detector, slice: int | None = None, overlap: float = SLICE_OVERLAP, augment: bool = False):
    """`detector` wrapped in a MultiPassDetector when slicing or augmentation is asked for, else itself."""
    if slice is None and not augment:
        check_pass_options(None, overlap)
        return detector
    return MultiPassDetector(detector, slice=slice, overlap=overlap, augment=augment)
