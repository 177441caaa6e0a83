"""CSPDarknet53-tiny, layer for layer as darknet's yolov4-tiny.cfg defines it.

Layer names carry the cfg's layer index (counting from 0, as darknet's `route` does): the
cfg's `[convolutional]` number i is `conv_i` (+ `bn_i`, `leaky_i`), its grouped `[route]` is
`route_i`. The darknet converter relies on these names.
"""

from __future__ import annotations

import keras
from keras import layers

from nets.attention import PACKAGE

# Darknet's batch-norm epsilon (normalize_cpu adds .00001 to the variance).
BN_EPSILON = 1e-5
# Darknet's leaky activation slope.
LEAKY_SLOPE = 0.1
BN_MOMENTUM = 0.97


@keras.saving.register_keras_serializable(package=PACKAGE)
class ChannelGroup(layers.Layer):
    """Darknet's `[route] groups=G group_id=I`: keep the I-th of G equal slices of the channels."""

    def __init__(self, groups: int = 2, group_id: int = 1, **kwargs):
        super().__init__(**kwargs)
        if not 0 <= group_id < groups:
            raise ValueError(f"group_id must be in [0, {groups}), got {group_id}")
        self.groups = groups
        self.group_id = group_id

    def call(self, x):
        size = x.shape[-1] // self.groups
        return x[..., self.group_id * size : (self.group_id + 1) * size]

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], input_shape[-1] // self.groups)

    def get_config(self):
        return {**super().get_config(), "groups": self.groups, "group_id": self.group_id}


def darknet_conv(x, filters: int, size: int, index: int, strides: int = 1):
    """Darknet `[convolutional]` with batch_normalize=1, activation=leaky.

    Darknet pads `size // 2` on the top and left; with stride 2 on an even input its last
    window ends at the border, so no bottom/right padding is used. Keras' "same" would pad the
    bottom/right instead and shift every feature by one pixel.
    """
    if strides == 2:
        x = layers.ZeroPadding2D(((1, 0), (1, 0)), name=f"pad_{index}")(x)
        padding = "valid"
    else:
        padding = "same"
    x = layers.Conv2D(filters, size, strides, padding=padding, use_bias=False, name=f"conv_{index}")(x)
    x = layers.BatchNormalization(epsilon=BN_EPSILON, momentum=BN_MOMENTUM, name=f"bn_{index}")(x)
    return layers.LeakyReLU(LEAKY_SLOPE, name=f"leaky_{index}")(x)


def csp_block(x, filters: int, index: int):
    """One CSP stage: cfg layers index .. index + 7 (conv, route-group, 2 convs, route, conv,
    route, maxpool).

    Returns (pooled output, the 1x1 conv's output before the outer concatenation).
    """
    x = darknet_conv(x, filters, 3, index)  # H x W x C
    route_1 = x
    x = ChannelGroup(2, 1, name=f"route_{index + 1}")(x)  # second half: H x W x C/2
    x = darknet_conv(x, filters // 2, 3, index + 2)
    route_2 = x
    x = darknet_conv(x, filters // 2, 3, index + 3)
    x = layers.Concatenate(name=f"route_{index + 4}")([x, route_2])  # H x W x C
    x = darknet_conv(x, filters, 1, index + 5)
    feat = x
    x = layers.Concatenate(name=f"route_{index + 6}")([route_1, x])  # H x W x 2C
    x = layers.MaxPooling2D(2, 2, padding="same", name=f"maxpool_{index + 7}")(x)  # H/2 x W/2 x 2C
    return x, feat


def cspdarknet53_tiny(inputs, attend=None):
    """The backbone on a (N, H, W, 3) input in [0, 1].

    attend: optional `attend(x, point) -> x`, called on the three CSP stages' outputs with the
        points "stage1", "stage2", "stage3" (nets.yolo inserts attention blocks there).

    Returns:
        feat1: cfg layer 23, (N, H/16, W/16, 256) - 26x26x256 at 416.
        feat2: cfg layer 26, (N, H/32, W/32, 512) - 13x13x512 at 416.
    """
    attend = attend or (lambda x, point: x)
    x = darknet_conv(inputs, 32, 3, 0, strides=2)  # 416 -> 208 x 208 x 32
    x = darknet_conv(x, 64, 3, 1, strides=2)  # -> 104 x 104 x 64
    x, _ = csp_block(x, 64, 2)  # -> 52 x 52 x 128
    x = attend(x, "stage1")
    x, _ = csp_block(x, 128, 10)  # -> 26 x 26 x 256
    x = attend(x, "stage2")
    x, feat1 = csp_block(x, 256, 18)  # -> 13 x 13 x 512; feat1 26 x 26 x 256
    x = attend(x, "stage3")
    feat2 = darknet_conv(x, 512, 3, 26)  # 13 x 13 x 512
    return feat1, feat2

