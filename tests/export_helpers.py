"""Shared by the export tests: a small random YoloV4Tiny that actually detects something."""

from __future__ import annotations

import keras
import numpy as np

from nets.yolo import YoloV4Tiny
from utils.data.demo import DEMO_CLASSES

INPUT_HW = (128, 128)
CONF = 0.3


def make_detecting_model(images: np.ndarray, seed: int = 0) -> YoloV4Tiny:
    """A 3-class YoloV4Tiny (demo classes) whose random heads are rescaled so that, on `images`
    (float32 (N, H, W, 3) in [0, 1]), objectness and class logits spread over about +-4 and
    a few percent of the anchors score above CONF: a random model with a few detections per image.
    """
    keras.utils.set_random_seed(seed)
    model = YoloV4Tiny(len(DEMO_CLASSES), class_names=list(DEMO_CLASSES), input_shape=(None, None, 3))
    heads = model(images, training=False)
    num_per_anchor = 5 + model.num_classes
    for layer_name, raw in zip(("conv_29", "conv_36"), heads):
        layer = model.get_layer(layer_name)
        kernel, bias = layer.get_weights()
        raw = np.asarray(raw).reshape(-1, 3, num_per_anchor)
        for anchor in range(3):
            for channel in range(4, num_per_anchor):  # objectness, then classes; box channels unchanged
                column = anchor * num_per_anchor + channel
                values = raw[:, anchor, channel]
                factor = 2.0 / max(float(values.std()), 1e-6)
                kernel[..., column] *= factor
                bias[column] = bias[column] * factor - float(values.mean()) * factor
                if channel == 4:  # objectness: the top 1% of anchors above logit 0
                    bias[column] -= float(np.percentile((values - values.mean()) * factor, 99))
        layer.set_weights([kernel, bias])
    return model


def detecting_keras_detector(images: list[np.ndarray]):
    """(a Detector over `make_detecting_model`, the float32 letterboxed inputs it was made to detect
    on): `images` (uint8 HWC) letterboxed by the detector's own code, then the random heads rescaled
    to detect on them. The export tests' reference model."""
    from utils.inference.detector import Detector

    probe = Detector(
        lambda x: x, num_classes=3, anchors=np.ones((6, 2)), anchors_mask=((3, 4, 5), (1, 2, 3)), scale_x_y=1.0,
        input_shape=INPUT_HW, graph_forward=False,
    )  # fmt: skip
    batch, _ = probe.preprocess(images)
    inputs = batch.astype(np.float32) / 255.0
    return Detector.from_model(make_detecting_model(inputs), input_shape=INPUT_HW, conf=CONF), inputs
