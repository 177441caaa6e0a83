"""Attention blocks and the registry that `--phi` / `--attention` pick from.

Every block maps (N, H, W, C) to the same shape, infers C in `build()`, and is registered for
safe `.keras` loading. Inputs are channels-last; H and W may be unknown (None). Each block's
`attention_weights(x)` returns the factors its `call` multiplies x by (per channel, per pixel,
per row and column), which `call` itself uses; predict.py --mode attention draws them.

phi -> name (the one place this mapping is written):

===  ========  ===========================================================
phi  name      block
===  ========  ===========================================================
0    ``none``  no attention
1    ``se``    Squeeze-and-Excitation (Hu et al., CVPR 2018)
2    ``cbam``  Convolutional Block Attention Module (Woo et al., ECCV 2018)
3    ``eca``   Efficient Channel Attention (Wang et al., CVPR 2020)
4    ``ca``    Coordinate Attention (Hou et al., CVPR 2021)
===  ========  ===========================================================
"""

from __future__ import annotations

import math

import keras
from keras import layers, ops

PACKAGE = "yolov4_tiny"


@keras.saving.register_keras_serializable(package=PACKAGE)
class SEBlock(layers.Layer):
    """Squeeze-and-Excitation: GAP -> FC(C/r) -> ReLU -> FC(C) -> sigmoid, then scale the input.

    Args:
        reduction: the paper's r (16).
    """

    def __init__(self, reduction: int = 16, **kwargs):
        super().__init__(**kwargs)
        if reduction < 1:
            raise ValueError(f"reduction must be >= 1, got {reduction}")
        self.reduction = reduction

    def build(self, input_shape):
        channels = input_shape[-1]
        self.squeeze = layers.Dense(max(1, channels // self.reduction), activation="relu", name="fc1")
        self.excite = layers.Dense(channels, activation="sigmoid", name="fc2")
        self.squeeze.build((None, channels))
        self.excite.build((None, max(1, channels // self.reduction)))

    def attention_weights(self, x) -> dict:
        """What the block multiplies `x` (N, H, W, C) by: {"channel": (N, C) in (0, 1)}."""
        return {"channel": self.excite(self.squeeze(ops.mean(x, axis=(1, 2))))}

    def call(self, x):
        return x * self.attention_weights(x)["channel"][:, None, None, :]

    def get_config(self):
        return {**super().get_config(), "reduction": self.reduction}


@keras.saving.register_keras_serializable(package=PACKAGE)
class CBAMBlock(layers.Layer):
    """CBAM: channel attention, then spatial attention.

    Channel: sigmoid(MLP(avgpool(x)) + MLP(maxpool(x))) with one shared MLP (C -> C/r -> C).
    Spatial: sigmoid(conv_k([mean_c(x'), max_c(x')])) with a k x k conv to one channel.

    Args:
        reduction: the MLP's r (16 in the paper).
        kernel_size: the spatial conv's size (7 in the paper).
    """

    def __init__(self, reduction: int = 16, kernel_size: int = 7, **kwargs):
        super().__init__(**kwargs)
        if reduction < 1:
            raise ValueError(f"reduction must be >= 1, got {reduction}")
        self.reduction = reduction
        self.kernel_size = kernel_size

    def build(self, input_shape):
        channels = input_shape[-1]
        hidden = max(1, channels // self.reduction)
        self.mlp_hidden = layers.Dense(hidden, activation="relu", name="mlp_fc1")
        self.mlp_out = layers.Dense(channels, name="mlp_fc2")
        self.spatial_conv = layers.Conv2D(
            1, self.kernel_size, padding="same", activation="sigmoid", name="spatial_conv"
        )
        self.mlp_hidden.build((None, channels))
        self.mlp_out.build((None, hidden))
        self.spatial_conv.build((None, None, None, 2))

    def _attend(self, x):
        """(channel weights (N, C), x after the channel attention, spatial weights (N, H, W, 1))."""
        avg = self.mlp_out(self.mlp_hidden(ops.mean(x, axis=(1, 2))))
        mx = self.mlp_out(self.mlp_hidden(ops.max(x, axis=(1, 2))))
        channel = ops.sigmoid(avg + mx)
        x = x * channel[:, None, None, :]
        pooled = ops.concatenate(
            [ops.mean(x, axis=-1, keepdims=True), ops.max(x, axis=-1, keepdims=True)], axis=-1
        )
        return channel, x, self.spatial_conv(pooled)

    def attention_weights(self, x) -> dict:
        """What the block multiplies `x` (N, H, W, C) by: {"channel": (N, C), "spatial": (N, H, W)},
        both in (0, 1); the spatial map is computed on x after the channel attention."""
        channel, _, spatial = self._attend(x)
        return {"channel": channel, "spatial": spatial[..., 0]}

    def call(self, x):
        _, x, spatial = self._attend(x)
        return x * spatial

    def get_config(self):
        return {**super().get_config(), "reduction": self.reduction, "kernel_size": self.kernel_size}


def eca_kernel_size(channels: int, gamma: float = 2, b: float = 1) -> int:
    """ECA's adaptive kernel size: k = |log2(C)/gamma + b/gamma|, made odd (rounding up)."""
    k = int(abs((math.log2(channels) + b) / gamma))
    return k if k % 2 else k + 1


@keras.saving.register_keras_serializable(package=PACKAGE)
class ECABlock(layers.Layer):
    """Efficient Channel Attention: GAP -> 1-D conv across channels (no bias) -> sigmoid -> scale.

    Args:
        gamma, b: the paper's constants for the adaptive kernel size (2 and 1).
    """

    def __init__(self, gamma: float = 2, b: float = 1, **kwargs):
        super().__init__(**kwargs)
        self.gamma = gamma
        self.b = b

    def build(self, input_shape):
        self.kernel_size = eca_kernel_size(input_shape[-1], self.gamma, self.b)
        self.conv = layers.Conv1D(1, self.kernel_size, padding="same", use_bias=False, name="conv")
        self.conv.build((None, input_shape[-1], 1))

    def attention_weights(self, x) -> dict:
        """What the block multiplies `x` (N, H, W, C) by: {"channel": (N, C) in (0, 1)}."""
        weights = ops.mean(x, axis=(1, 2))[:, :, None]  # (N, C, 1): channels are the 1-D axis
        return {"channel": ops.sigmoid(self.conv(weights))[:, :, 0]}

    def call(self, x):
        return x * self.attention_weights(x)["channel"][:, None, None, :]

    def get_config(self):
        return {**super().get_config(), "gamma": self.gamma, "b": self.b}


@keras.saving.register_keras_serializable(package=PACKAGE)
class CoordAttention(layers.Layer):
    """Coordinate Attention (Hou et al., CVPR 2021).

    x_h = mean over W -> (N, H, 1, C); x_w = mean over H -> (N, W, 1, C) after a transpose.
    Both are concatenated along the spatial axis -> (N, H + W, 1, C), go through a shared
    1x1 conv to max(min_channels, C / reduction) channels, BN and h-swish, are split back
    into the H part and the W part (in that order), and each gets its own 1x1 conv and sigmoid.
    out = x * a_h * a_w, where a_h varies only along rows and a_w only along columns.

    Args:
        reduction: the paper's r (32).
        min_channels: the paper's floor on the hidden width (8).
    """

    def __init__(self, reduction: int = 32, min_channels: int = 8, **kwargs):
        super().__init__(**kwargs)
        if reduction < 1:
            raise ValueError(f"reduction must be >= 1, got {reduction}")
        self.reduction = reduction
        self.min_channels = min_channels

    def build(self, input_shape):
        channels = input_shape[-1]
        hidden = max(self.min_channels, channels // self.reduction)
        # The reference code gives this conv a bias, but the BN right after it cancels any bias.
        self.conv_shared = layers.Conv2D(hidden, 1, use_bias=False, name="conv1")
        self.bn = layers.BatchNormalization(name="bn1")
        self.conv_h = layers.Conv2D(channels, 1, activation="sigmoid", name="conv_h")
        self.conv_w = layers.Conv2D(channels, 1, activation="sigmoid", name="conv_w")
        self.conv_shared.build((None, None, 1, channels))
        self.bn.build((None, None, 1, hidden))
        self.conv_h.build((None, None, 1, hidden))
        self.conv_w.build((None, None, 1, hidden))

    def _attend(self, x, training=None):
        """(a_h (N, H, 1, C), a_w (N, 1, W, C)): the row and the column weights."""
        height = ops.shape(x)[1]
        x_h = ops.mean(x, axis=2, keepdims=True)  # (N, H, 1, C)
        x_w = ops.transpose(ops.mean(x, axis=1, keepdims=True), (0, 2, 1, 3))  # (N, W, 1, C)
        y = ops.concatenate([x_h, x_w], axis=1)  # (N, H + W, 1, C)
        y = self.bn(self.conv_shared(y), training=training)
        y = y * ops.relu6(y + 3.0) / 6.0  # h-swish
        y_h, y_w = y[:, :height], y[:, height:]  # split in the order they were concatenated
        a_h = self.conv_h(y_h)  # (N, H, 1, C): one weight per row
        a_w = ops.transpose(self.conv_w(y_w), (0, 2, 1, 3))  # (N, 1, W, C): one per column
        return a_h, a_w

    def attention_weights(self, x, training=None) -> dict:
        """What the block multiplies `x` (N, H, W, C) by: {"height": (N, H, C), "width": (N, W, C)},
        in (0, 1); pixel (i, j) of channel c is scaled by height[i, c] * width[j, c]."""
        a_h, a_w = self._attend(x, training=training)
        return {"height": a_h[:, :, 0, :], "width": a_w[:, 0, :, :]}

    def call(self, x, training=None):
        a_h, a_w = self._attend(x, training=training)
        return x * a_h * a_w

    def get_config(self):
        return {**super().get_config(), "reduction": self.reduction, "min_channels": self.min_channels}


# The registry. `None` means no block is inserted.
ATTENTION_BLOCKS: dict[str, type[layers.Layer] | None] = {
    "none": None,
    "se": SEBlock,
    "cbam": CBAMBlock,
    "eca": ECABlock,
    "ca": CoordAttention,
}
# phi N selects PHI_TO_ATTENTION[N].
PHI_TO_ATTENTION = ("none", "se", "cbam", "eca", "ca")


def resolve_attention(phi: int | None = None, attention: str | None = None) -> str:
    """Turn `--phi N` or `--attention NAME` into a registry name; an unknown value raises ValueError.

    When both are given they must agree.
    """
    name = None
    if phi is not None:
        if not 0 <= int(phi) < len(PHI_TO_ATTENTION):
            choices = ", ".join(f"{i}={n}" for i, n in enumerate(PHI_TO_ATTENTION))
            raise ValueError(f"phi must be one of {choices}; got {phi}")
        name = PHI_TO_ATTENTION[int(phi)]
    if attention is not None:
        key = attention.lower()
        if key not in ATTENTION_BLOCKS:
            raise ValueError(f"Unknown attention {attention!r}; expected one of {list(ATTENTION_BLOCKS)}")
        if name is not None and name != key:
            raise ValueError(f"--phi {phi} means {name!r} but --attention says {attention!r}")
        name = key
    return name or "none"


def make_attention(attention: str, **kwargs) -> layers.Layer | None:
    """A fresh block from the registry (kwargs go to its constructor), or None for `none`."""
    block = ATTENTION_BLOCKS[resolve_attention(attention=attention)]
    return None if block is None else block(**kwargs)
