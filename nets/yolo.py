"""YOLOv4-tiny: CSPDarknet53-tiny, a small FPN neck and two raw YOLO heads, with pluggable attention.

The model is a functional `keras.Model` subclass whose config holds everything needed to rebuild
and decode it (classes, attention, anchors, masks, scale_x_y), so a saved `.keras` file reloads
with plain `keras.saving.load_model(path)` and still knows what it is.

Outputs, coarse first (the order of `nets.model_data.STRIDES`):
    P5 head: (N, H/32, W/32, A * (5 + num_classes))   13x13 at 416
    P4 head: (N, H/16, W/16, A * (5 + num_classes))   26x26 at 416
with A = 3 anchors per cell; per anchor the channels are tx, ty, tw, th, objectness, classes,
all raw (before any activation), as darknet lays them out.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
from keras import layers

from nets.attention import (
    ATTENTION_BLOCKS,
    BUILTIN_NAMES,
    PACKAGE,
    attention_module,
    find_attention,
    make_attention,
    resolve_attention,
)
from nets.backbone import cspdarknet53_tiny, darknet_conv
from nets.model_data import (
    ANCHORS_MASK,
    DARKNET_SCALE_X_Y,
    HEAD_CONV_INDICES,
    INPUT_MULTIPLE,
    MAX_CLASSES,
    MAX_INPUT_SIDE,
    load_anchors,
)

# Where attention goes, by the names its layers get.
ATTENTION_POINTS = ("attention_feat1", "attention_feat2", "attention_p5_upsample")

def _head(x, num_outputs: int, index: int):
    # Heads stay float32 under mixed precision: the loss and the decoder need the range.
    return layers.Conv2D(num_outputs, 1, name=f"conv_{index}", dtype="float32")(x)


def _attend(x, attention: str, point: str):
    block = make_attention(attention, name=point)
    return x if block is None else block(x)


@keras.saving.register_keras_serializable(package=PACKAGE)
class YoloV4Tiny(keras.Model):
    """YOLOv4-tiny with attention after feat1, after feat2 and after the P5 upsample.

    Args:
        num_classes: number of classes (1 to MAX_CLASSES).
        attention: a name from `nets.attention.ATTENTION_BLOCKS` ("none", "se", "cbam", "eca", "ca"), a
            name a user module registered, or MODULE:CLASS (see nets.attention: user blocks).
        anchors: (num_anchors, 2) anchor widths and heights in input pixels; darknet's by default.
        anchors_mask: per head (coarse first), the indices of its anchors.
        input_shape: (height, width, 3), multiples of 32 up to MAX_INPUT_SIDE; None for any such size.
        class_names: optional names, kept in the saved model.
        scale_x_y: darknet's centre-decoding scale (1.05 in yolov4-tiny.cfg).
    """

    def __init__(
        self,
        num_classes: int,
        attention: str = "none",
        anchors: Sequence[Sequence[float]] | None = None,
        anchors_mask: Sequence[Sequence[int]] = ANCHORS_MASK,
        input_shape: Sequence[int | None] = (None, None, 3),
        class_names: Sequence[str] | None = None,
        scale_x_y: float = DARKNET_SCALE_X_Y,
        **kwargs,
    ):
        attention = resolve_attention(attention=attention)
        if not 1 <= num_classes <= MAX_CLASSES:
            raise ValueError(f"num_classes must be 1 to {MAX_CLASSES}, got {num_classes}")
        if class_names is not None and len(class_names) != num_classes:
            raise ValueError(f"{len(class_names)} class names given for {num_classes} classes")
        anchors = load_anchors().tolist() if anchors is None else [[float(w), float(h)] for w, h in anchors]
        anchors_mask = [[int(i) for i in mask] for mask in anchors_mask]
        if len(anchors_mask) != 2 or len({len(m) for m in anchors_mask}) != 1:
            raise ValueError(f"anchors_mask must give the same number of anchors to each of 2 heads: {anchors_mask}")
        if max(max(m) for m in anchors_mask) >= len(anchors):
            raise ValueError(f"anchors_mask {anchors_mask} refers past the {len(anchors)} anchors")
        input_shape = tuple(input_shape)
        if len(input_shape) != 3 or input_shape[-1] != 3:
            raise ValueError(f"input_shape must be (height, width, 3), got {input_shape}")
        for size in input_shape[:2]:
            if size is not None and (size % INPUT_MULTIPLE or not 0 < size <= MAX_INPUT_SIDE):
                raise ValueError(
                    f"input height and width must be multiples of {INPUT_MULTIPLE} up to {MAX_INPUT_SIDE}, "
                    f"got {input_shape}"
                )

        num_outputs = len(anchors_mask[0]) * (5 + num_classes)
        inputs = keras.Input(shape=input_shape, name="image")
        feat1, feat2 = cspdarknet53_tiny(inputs)  # 26x26x256, 13x13x512
        feat1 = _attend(feat1, attention, ATTENTION_POINTS[0])
        feat2 = _attend(feat2, attention, ATTENTION_POINTS[1])

        p5 = darknet_conv(feat2, 256, 1, 27)  # 13x13x512 -> 13x13x256
        x = darknet_conv(p5, 512, 3, 28)  # -> 13x13x512
        out_p5 = _head(x, num_outputs, HEAD_CONV_INDICES[0])  # -> 13x13x(3*(5+C))

        x = darknet_conv(p5, 128, 1, 32)  # 13x13x256 -> 13x13x128
        x = layers.UpSampling2D(2, name="upsample_33")(x)  # -> 26x26x128
        x = _attend(x, attention, ATTENTION_POINTS[2])
        x = layers.Concatenate(name="route_34")([x, feat1])  # darknet's order: upsample, then layer 23
        x = darknet_conv(x, 256, 3, 35)  # 26x26x384 -> 26x26x256
        out_p4 = _head(x, num_outputs, HEAD_CONV_INDICES[1])  # -> 26x26x(3*(5+C))

        # A user block's key may hold a path: the model is named after its class.
        label = attention if attention in BUILTIN_NAMES else ATTENTION_BLOCKS[attention].__name__.lower()
        kwargs.setdefault("name", f"yolov4_tiny_{label}")
        super().__init__(inputs=inputs, outputs=[out_p5, out_p4], **kwargs)
        self.num_classes = num_classes
        self.attention = attention
        self.anchors = anchors
        self.anchors_mask = anchors_mask
        self.image_shape = input_shape
        self.class_names = list(class_names) if class_names is not None else None
        self.scale_x_y = float(scale_x_y)

    def get_config(self):
        # A user block's module, so a load that lacks it can say which module to import (built-ins: none).
        module = attention_module(self.attention)
        return {
            **({"attention_module": module} if module else {}),
            "name": self.name,
            "trainable": self.trainable,
            "num_classes": self.num_classes,
            "attention": self.attention,
            "anchors": self.anchors,
            "anchors_mask": self.anchors_mask,
            "input_shape": list(self.image_shape),
            "class_names": self.class_names,
            "scale_x_y": self.scale_x_y,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        # Safe mode: a user block must already be imported (UnregisteredBlockError names its module).
        config["attention"] = find_attention(config.get("attention", "none"), config.pop("attention_module", None))
        return cls(**config)

    def at_input_size(self, input_hw: Sequence[int] | None = None) -> YoloV4Tiny:
        """This model, with its weights and dtype policy, for input (height, width); None for any
        multiple of 32. The network is fully convolutional, so a model trained at one size runs at
        another with the same weights; a model saved with a fixed input (train.py builds at its
        --input-size) is rebuilt, a model that already takes `input_hw` (its own size, or any) is
        returned as it is. ValueError for a size that is not a multiple of 32 up to MAX_INPUT_SIDE.
        """
        shape = (None, None, 3) if input_hw is None else (*(int(v) for v in input_hw), 3)
        if tuple(self.image_shape) in (shape, (None, None, 3)):
            return self
        previous = keras.config.dtype_policy()
        keras.config.set_dtype_policy(self.dtype_policy)  # a mixed-precision copy stays one
        try:
            copy = type(self).from_config({**self.get_config(), "input_shape": list(shape)})
        finally:
            keras.config.set_dtype_policy(previous)
        copy.set_weights(self.get_weights())
        return copy


def yolo_body(
    input_shape: Sequence[int | None],
    anchors_mask: Sequence[Sequence[int]],
    num_classes: int,
    phi: int = 0,
    **kwargs,
) -> YoloV4Tiny:
    """The classic entry point: `phi` 0-4 picks the attention block (see nets.attention)."""
    return YoloV4Tiny(
        num_classes,
        attention=resolve_attention(phi=phi),
        anchors_mask=anchors_mask,
        input_shape=input_shape,
        **kwargs,
    )
