"""Planted objects and a detector that sees them only when they are big enough in its input: the
small-object problem of sliced inference, without training a model.

`ColourDetector` is an honest detector of pure red (class 0) and pure blue (class 1) squares: it
letterboxes each image into its input as the `Detector` does (utils.inference.letterbox), finds the
connected regions of the colour there with OpenCV, and reports those at least `min_side` pixels
wide and high in its input, boxes mapped back to the image. A square that shrinks below `min_side`
in the letterbox (a small object in a large image) is missed, as a real model misses it.
"""

from __future__ import annotations

import cv2
import numpy as np

from utils.inference.detector import Detections
from utils.inference.letterbox import letterbox, unletterbox_boxes

COLOURS = ((255, 0, 0), (0, 0, 255))  # class 0 red, class 1 blue
BACKGROUND = 110  # grey, far from both colours


class ColourDetector:
    """Finds red and blue squares at least `min_side` pixels wide in its `input_shape` input."""

    def __init__(self, input_shape=(416, 416), min_side: int = 12, nms_iou: float = 0.3, max_detections: int = 100):
        self.input_shape = tuple(input_shape)
        self.min_side = min_side
        self.nms_iou = nms_iou
        self.max_detections = max_detections
        self.conf = 0.5
        self.batch_size = 8
        self.class_names = ["red", "blue"]
        self.num_classes = 2
        self.seen_shapes: list[tuple[int, ...]] = []  # every image detect() was given

    def detect(self, images, batch_size=None) -> list[Detections]:
        results = []
        for image in images:
            self.seen_shapes.append(image.shape)
            boxed, info = letterbox(image, self.input_shape)
            boxes, class_ids = [], []
            for class_id, colour in enumerate(COLOURS):
                near = np.all(np.abs(boxed.astype(np.int16) - np.array(colour, np.int16)) <= 60, axis=-1)
                _, _, stats, _ = cv2.connectedComponentsWithStats(near.astype(np.uint8), connectivity=8)
                for x, y, w, h, _ in stats[1:]:
                    if w >= self.min_side and h >= self.min_side:
                        boxes.append([x, y, x + w, y + h])
                        class_ids.append(class_id)
            boxes = unletterbox_boxes(np.array(boxes, np.float32).reshape(-1, 4), info)
            results.append(Detections(boxes, np.full(len(boxes), 0.9, np.float32), np.array(class_ids, np.int32)))
        return results


def planted_image(hw, squares) -> np.ndarray:
    """A grey uint8 (h, w, 3) image with `squares`: (x0, y0, side, class_id) each, pixel coordinates."""
    image = np.full((*hw, 3), BACKGROUND, np.uint8)
    for x0, y0, side, class_id in squares:
        image[y0 : y0 + side, x0 : x0 + side] = COLOURS[class_id]
    return image
