"""Letterbox: aspect-preserving resize into the network input with grey padding, and its inverse.

An image of (h, w) is resized to (new_h, new_w) = (round(h * s), round(w * s)) with
s = min(in_h / h, in_w / w), and pasted at (pad_y, pad_x) = ((in_h - new_h) // 2,
(in_w - new_w) // 2) on a grey canvas. In continuous pixel coordinates (see utils.boxes) this maps

    x_net = x * scale_x + pad_x,   scale_x = new_w / w
    y_net = y * scale_y + pad_y,   scale_y = new_h / h

exactly (the image edges 0 and w land on pad_x and pad_x + new_w); `unletterbox_boxes` applies the
inverse of that map. Per-axis scales are used because rounding makes new_w / w and new_h / h differ
slightly from s; using s for both would shift boxes by up to half a pixel on odd sizes.

Resizing is cv2.resize (bilinear) on the CPU side: about 1 ms for a 640x480 image, and the
whole pipeline measured faster than with the resize + pad inside the TensorFlow graph
(benchmarks/bench_inference.py --variants).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from utils.boxes import clip_boxes

# Darknet fills the letterbox border with 0.5 grey.
LETTERBOX_FILL = 128


@dataclass(frozen=True)
class LetterboxInfo:
    """How one image was placed in the network input.

    image_hw: (h, w) of the original image. new_hw: size it was resized to.
    pad_xy: (pad_x, pad_y) offset of its top-left corner in the network input.
    """

    image_hw: tuple[int, int]
    new_hw: tuple[int, int]
    pad_xy: tuple[int, int]

    @property
    def scale_xy(self) -> tuple[float, float]:
        return self.new_hw[1] / self.image_hw[1], self.new_hw[0] / self.image_hw[0]


def letterbox_info(image_hw: tuple[int, int], input_hw: tuple[int, int]) -> LetterboxInfo:
    """Where an image of `image_hw` = (h, w) goes in a network input of `input_hw` = (h, w)."""
    h, w = int(image_hw[0]), int(image_hw[1])
    in_h, in_w = int(input_hw[0]), int(input_hw[1])
    if h < 1 or w < 1:
        raise ValueError(f"image must be at least 1x1, got {image_hw}")
    scale = min(in_h / h, in_w / w)
    new_h = min(in_h, max(1, round(h * scale)))
    new_w = min(in_w, max(1, round(w * scale)))
    return LetterboxInfo((h, w), (new_h, new_w), ((in_w - new_w) // 2, (in_h - new_h) // 2))


def letterbox(
    image: np.ndarray, input_hw: tuple[int, int], out: np.ndarray | None = None
) -> tuple[np.ndarray, LetterboxInfo]:
    """Resize `image` into a network input of `input_hw`, keeping its aspect ratio.

    Args:
        image: uint8 (H, W, 3).
        input_hw: network input (height, width).
        out: optional uint8 (in_h, in_w, 3) array to write into (e.g. one slot of a batch).

    Returns:
        (letterboxed uint8 (in_h, in_w, 3), LetterboxInfo).
    """
    if image.ndim != 3 or image.shape[-1] != 3:
        raise ValueError(f"expected an (H, W, 3) image, got shape {image.shape}")
    info = letterbox_info(image.shape[:2], input_hw)
    in_h, in_w = int(input_hw[0]), int(input_hw[1])
    if out is None:
        out = np.empty((in_h, in_w, 3), dtype=np.uint8)
    (new_h, new_w), (pad_x, pad_y) = info.new_hw, info.pad_xy
    if (new_h, new_w) != (in_h, in_w):
        out[:pad_y] = LETTERBOX_FILL
        out[pad_y + new_h :] = LETTERBOX_FILL
        out[pad_y : pad_y + new_h, :pad_x] = LETTERBOX_FILL
        out[pad_y : pad_y + new_h, pad_x + new_w :] = LETTERBOX_FILL
    target = out[pad_y : pad_y + new_h, pad_x : pad_x + new_w]
    if image.shape[:2] == (new_h, new_w):
        target[...] = image
    else:
        cv2.resize(image, (new_w, new_h), dst=target, interpolation=cv2.INTER_LINEAR)
    return out, info


def letterbox_boxes(boxes: np.ndarray, info: LetterboxInfo) -> np.ndarray:
    """Map pixel xyxy boxes (N, 4) from the original image into the network input."""
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    (sx, sy), (px, py) = info.scale_xy, info.pad_xy
    return boxes * np.array([sx, sy, sx, sy], np.float32) + np.array([px, py, px, py], np.float32)


def unletterbox_boxes(boxes: np.ndarray, info: LetterboxInfo, clip: bool = True) -> np.ndarray:
    """The exact inverse of `letterbox_boxes`: pixel xyxy (N, 4) in the network input to pixel
    xyxy in the original image, clipped to it when `clip`."""
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    (sx, sy), (px, py) = info.scale_xy, info.pad_xy
    out = (boxes - np.array([px, py, px, py], np.float32)) / np.array([sx, sy, sx, sy], np.float32)
    if clip:
        out = clip_boxes(out, info.image_hw)
    return out.astype(np.float32, copy=False)
