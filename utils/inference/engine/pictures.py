"""The pictures besides drawn boxes: objectness heatmaps, attention maps and Grad-CAM panels.

Each function takes a letterboxed batch (`Detector.preprocess`) and the batch's `Result`s (their
images set) and fills in each result's picture and what its record holds.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from utils.inference.detector import Detections, Detector
from utils.inference.drawing import class_colors, draw_detections, heatmap_overlay, normalize_map, panel_grid
from utils.inference.engine.results import Result
from utils.inference.letterbox import LetterboxInfo, unletterbox_boxes
from utils.inference.postprocess import objectness_map

if TYPE_CHECKING:  # explain.py imports TensorFlow, which other Keras backends run without
    from utils.inference.explain import AttentionMap, AttentionProbe, ExplainedDetection, GradCam


def _unit_floats(batch: np.ndarray) -> np.ndarray:
    """uint8 (N, h, w, 3) -> float32 in [0, 1], what the model takes."""
    return batch.astype(np.float32) / np.float32(255)


def heatmap_pictures(detector: Detector, batch: np.ndarray, infos: Sequence[LetterboxInfo], results: list[Result]):
    """Each image with its objectness (max over anchors and heads) overlaid, and its detections."""
    raw = detector.raw_outputs(batch)
    maps = objectness_map(raw, detector.anchors_mask, detector.num_classes)
    for i, (result, dets) in enumerate(zip(results, detector.postprocess_raw(raw, infos), strict=True)):
        result.detections = dets
        result.picture = heatmap_overlay(result.image, [m[i] for m in maps], infos[i], detector.input_shape)


def attention_pictures(
    probe: AttentionProbe, batch: np.ndarray, infos: Sequence[LetterboxInfo], input_hw, results: list[Result]
) -> None:
    """Each image with a panel per attention insertion point; the record's "panels" hold each
    map's block, meaning and range (the colours span that range)."""
    maps = probe(_unit_floats(batch))
    for i, result in enumerate(results):
        result.picture, result.panels = attention_picture(result.image, maps, i, infos[i], input_hw)


def attention_picture(
    image: np.ndarray, maps: Sequence[AttentionMap], i: int, info: LetterboxInfo, input_hw
) -> tuple[np.ndarray, list[dict]]:
    """Image `i` of a batch's attention maps: (a panel per insertion point, their records)."""
    panels, captions, records = [], [], []
    for found in maps:
        values, low, high = normalize_map(found.values[i])  # the colours span the map's own range
        panels.append(heatmap_overlay(image, [values], info, input_hw))
        h, w, c = found.feature_shape
        point = found.point.removeprefix("attention_")
        captions.append(f"{point} {h}x{w}x{c}: {found.block.upper()} {found.what} {low:.3f}-{high:.3f}")
        records.append({"point": found.point, "block": found.block, "what": found.what, "min": low, "max": high})
    return panel_grid(panels, captions), records


def cam_pictures(
    cam: GradCam, detector: Detector, batch: np.ndarray, infos: Sequence[LetterboxInfo], top: int, results: list[Result]
) -> None:
    """Each image's `top` best detections, a panel each: its Grad-CAM and its box. The record's
    detections add where each came from: "head" (P5 / P4), "cell" [row, column], "anchor"."""
    found = cam.explain(_unit_floats(batch), conf=detector.conf, nms_iou=detector.nms_iou, top=max(1, top))
    for result, explained, info in zip(results, found, infos, strict=True):
        cam_picture(result, explained, info, detector.input_shape, detector.conf)


def cam_picture(
    result: Result, explained: Sequence[ExplainedDetection], info: LetterboxInfo, input_hw, conf: float
) -> None:
    """One image's explained detections into `result`: its picture (a panel per detection, its
    CAM and box; the image and a note when there is none), its detections and their extras."""
    names, image = result.class_names, result.image
    colors = class_colors(len(names))
    panels, captions, boxes, extras = [], [], [], []
    for det in explained:
        box = unletterbox_boxes(det.box[None], info)
        overlay = heatmap_overlay(image, [det.cam], info, input_hw)
        class_ids = np.array([det.class_id], np.int32)
        panels.append(draw_detections(overlay, box, np.array([det.score]), class_ids, names, colors))
        level, (row, col) = ("P5", "P4")[det.head], det.cell
        captions.append(f"{names[det.class_id]} {det.score:.2f}: {level} cell {row},{col} anchor {det.anchor}")
        boxes.append(box[0])
        extras.append({"head": level, "cell": [row, col], "anchor": det.anchor})
    if not explained:
        panels, captions = [image], [f"no detection above --conf {conf:g}"]
    result.picture = panel_grid(panels, captions)
    result.detections = Detections(
        np.array(boxes, np.float32).reshape(-1, 4),
        np.array([det.score for det in explained], np.float32),
        np.array([det.class_id for det in explained], np.int32),
    )
    result.extras = extras
