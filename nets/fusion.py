"""BiFPN's fast normalised fusion (Tan et al., "EfficientDet: Scalable and Efficient Object Detection",
CVPR 2020, eq. 3), in place of the neck's plain concatenation (`--fusion weighted`).

YOLOv4-tiny's neck concatenates the P5 upsample (26x26x128 at 416) with feat1 (26x26x256) into
26x26x384 for conv_35. Weighted fusion needs inputs of one width, and conv_35 (darknet's weights)
needs 384 channels in, so each input i is projected by a 1x1 convolution P_i (no bias) to the
concatenation's width, 384, and the projections are summed with BiFPN's weights:

    out = n * sum_i (w_i / (eps + sum_j w_j)) * P_i(x_i),  w_i = ReLU(v_i), v_i learned, starting at 1

with n = 2 inputs and eps = 1e-4 (the paper's). P_i starts as the embedding of input i into its own
channels of the concatenation ([up, feat1]: up into channels 0-127, feat1 into 128-383), so the sum
of the projections is the concatenation itself and, with equal weights, the fusion starts as
n / (n + eps) = 0.99995 times the concatenation: darknet weights keep (almost exactly) their
accuracy. The factor n is ours: it keeps the fused scale that of the concatenation (BiFPN's nodes
start from scratch and need no such care).

Cost: 128 * 384 + 256 * 384 + 2 = 147,458 parameters, 2 * 26 * 26 * 384 * 384 = 199 MFLOPs (plus
the element-wise work) at 416. Before the 3x3 conv_35 the fusion is linear, so the projections
re-parametrise what conv_35 could learn itself; what the fusion adds are the normalised per-input
weights (BiFPN's point: inputs of different resolutions contribute unequally).
"""

from __future__ import annotations

import keras
import numpy as np
from keras import layers, ops

from nets.attention import PACKAGE

FUSIONS = ("concat", "weighted")


@keras.saving.register_keras_serializable(package=PACKAGE)
class WeightedFusion(layers.Layer):
    """Fast normalised fusion of n inputs (N, H, W, C_i) into (N, H, W, width) (module docstring).

    Args:
        width: output channels; None for the sum of the inputs' channels (the concatenation's).
        epsilon: BiFPN's eps (1e-4).
    """

    def __init__(self, width: int | None = None, epsilon: float = 1e-4, **kwargs):
        super().__init__(**kwargs)
        self.width = width
        self.epsilon = float(epsilon)

    def build(self, input_shape):
        channels = [int(shape[-1]) for shape in input_shape]
        width = self.width or sum(channels)
        self.projections = []
        start = 0
        for i, c in enumerate(channels):
            conv = layers.Conv2D(width, 1, use_bias=False, name=f"project_{i}")
            conv.build((None, None, None, c))
            embedding = np.zeros((1, 1, c, width), np.float32)  # input i into its own slice of the concatenation
            rows = np.arange(min(c, width - start))
            embedding[0, 0, rows, (start + rows) % width] = 1.0
            conv.kernel.assign(embedding)
            self.projections.append(conv)
            start += c
        self.fusion_weights = self.add_weight(shape=(len(channels),), initializer="ones", name="fusion_weights")

    def normalised_weights(self):
        """(n,) w_i / (eps + sum_j w_j), w = ReLU(v): what input i's projection is weighted by (times n)."""
        w = ops.relu(self.fusion_weights)
        return w / (self.epsilon + ops.sum(w))

    def projected(self, inputs) -> list:
        """Each input's weighted projection, n * w_i * P_i(x_i): the terms the fusion sums."""
        weights = ops.cast(self.normalised_weights() * len(inputs), inputs[0].dtype)
        return [weights[i] * conv(x) for i, (conv, x) in enumerate(zip(self.projections, inputs))]

    def attention_weights(self, inputs) -> dict:
        """{"inputs": (n,) the normalised weights, "spatial": (N, H, W) the first input's (the P5
        upsample's) share of the fused activation energy per pixel, ||t_0||^2 / sum_i ||t_i||^2
        over the channels, t_i the weighted projections}."""
        energies = [ops.sum(ops.square(t), axis=-1) for t in self.projected(inputs)]
        total = sum(energies[1:], energies[0])
        share = ops.where(total > 1e-12, energies[0] / ops.maximum(total, 1e-12), 0.5)
        return {"inputs": self.normalised_weights(), "spatial": share}

    def call(self, inputs):
        terms = self.projected(inputs)
        return sum(terms[1:], terms[0])

    def compute_output_shape(self, input_shape):
        return (*input_shape[0][:-1], self.width or sum(int(s[-1]) for s in input_shape))

    def get_config(self):
        return {**super().get_config(), "width": self.width, "epsilon": self.epsilon}
