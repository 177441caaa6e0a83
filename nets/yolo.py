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
    AttentionError,
    attention_module,
    can_start_as_identity,
    find_attention,
    make_attention,
    resolve_attention,
)
from nets.backbone import cspdarknet53_tiny, darknet_conv
from nets.fusion import FUSIONS, WeightedFusion
from nets.model_data import (
    ANCHORS_MASK,
    DARKNET_SCALE_X_Y,
    HEAD_CONV_INDICES,
    INPUT_MULTIPLE,
    MAX_CLASSES,
    MAX_INPUT_SIDE,
    load_anchors,
)

# Where attention can go (`--attention-at`): point -> what it follows, shape at 416. A block at point
# P is the layer "attention_P". In network order.
INSERTION_POINTS = {
    "stage1": "the first CSP stage's output (cfg layer 9, maxpool), 52x52x128",
    "stage2": "the second CSP stage's output (cfg layer 17, maxpool), 26x26x256",
    "feat1": "feat1, the third CSP stage's route to the neck (cfg layer 23), 26x26x256",
    "stage3": "the third CSP stage's output (cfg layer 25, maxpool), 13x13x512",
    "feat2": "feat2, the backbone's output (cfg layer 26), 13x13x512",
    "head_p5": "the P5 head's input (cfg layer 28, before conv_29), 13x13x512",
    "p5_upsample": "the P5 upsample (cfg layer 33, before the route to feat1), 26x26x128",
    "head_p4": "the P4 head's input (cfg layer 35, before conv_36), 26x26x256",
}
# The three points of the card, where phi 1-4 go unless --attention-at says otherwise.
DEFAULT_POINTS = ("feat1", "feat2", "p5_upsample")
# The layer names of the default points.
ATTENTION_POINTS = tuple(f"attention_{point}" for point in DEFAULT_POINTS)
# The weighted fusion's layer (--fusion weighted), in place of darknet's route_34.
FUSION_LAYER = "fusion_34"


def default_points(attention: str) -> tuple[str, ...]:
    """Where block `attention` (a registry key) goes unless told: its class's `default_points`
    (self-attention: feat2 only), else DEFAULT_POINTS; () for "none"."""
    block = ATTENTION_BLOCKS.get(attention)
    return () if block is None else tuple(getattr(block, "default_points", DEFAULT_POINTS))


def parse_points(points: str | Sequence[str]) -> tuple[str, ...]:
    """Insertion points from "feat1,feat2" or a sequence of names, in network order
    (INSERTION_POINTS). Raises AttentionError naming the valid points for an unknown or repeated one."""
    names = [p.strip().lower() for p in (points.split(",") if isinstance(points, str) else points)]
    names = [name for name in names if name]
    unknown = [name for name in names if name not in INSERTION_POINTS]
    if unknown or len(set(names)) != len(names) or not names:
        problem = f"unknown {', '.join(unknown)}" if unknown else "repeated or empty"
        raise AttentionError(
            f"--attention-at {','.join(names) or repr(points)}: {problem}; the points are "
            f"{', '.join(INSERTION_POINTS)} (default {','.join(DEFAULT_POINTS)})"
        )
    return tuple(point for point in INSERTION_POINTS if point in names)


def check_fusion(fusion: str) -> str:
    if fusion not in FUSIONS:
        raise AttentionError(f"--fusion must be one of {', '.join(FUSIONS)}, got {fusion!r}")
    return fusion

def _head(x, num_outputs: int, index: int):
    # Heads stay float32 under mixed precision: the loss and the decoder need the range.
    return layers.Conv2D(num_outputs, 1, name=f"conv_{index}", dtype="float32")(x)


def _attender(attention: str, points: Sequence[str], identity_init: bool):
    """attend(x, point): x through a fresh block named "attention_<point>" where `points` has it."""

    def attend(x, point: str):
        if point not in points:
            return x
        block = make_attention(attention, identity_init=identity_init, name=f"attention_{point}")
        return x if block is None else block(x)

    return attend


def _check_arguments(num_classes, anchors_mask, anchors, input_shape, class_names) -> None:
    if not 1 <= num_classes <= MAX_CLASSES:
        raise ValueError(f"num_classes must be 1 to {MAX_CLASSES}, got {num_classes}")
    if class_names is not None and len(class_names) != num_classes:
        raise ValueError(f"{len(class_names)} class names given for {num_classes} classes")
    if len(anchors_mask) != 2 or len({len(m) for m in anchors_mask}) != 1:
        raise ValueError(f"anchors_mask must give the same number of anchors to each of 2 heads: {anchors_mask}")
    if max(max(m) for m in anchors_mask) >= len(anchors):
        raise ValueError(f"anchors_mask {anchors_mask} refers past the {len(anchors)} anchors")
    if len(input_shape) != 3 or input_shape[-1] != 3:
        raise ValueError(f"input_shape must be (height, width, 3), got {input_shape}")
    for size in input_shape[:2]:
        if size is not None and (size % INPUT_MULTIPLE or not 0 < size <= MAX_INPUT_SIDE):
            raise ValueError(
                f"input height and width must be multiples of {INPUT_MULTIPLE} up to {MAX_INPUT_SIDE}, "
                f"got {input_shape}"
            )


@keras.saving.register_keras_serializable(package=PACKAGE)
class YoloV4Tiny(keras.Model):
    """YOLOv4-tiny with attention blocks at chosen insertion points (by default after feat1, after
    feat2 and after the P5 upsample) and the P5 upsample fused with feat1 by concatenation or weights.

    Args:
        num_classes: number of classes (1 to MAX_CLASSES).
        attention: a name from `nets.attention.ATTENTION_BLOCKS` ("none", "se", "cbam", "eca", "ca", "sa"), a
            name a user module registered, or MODULE:CLASS (see nets.attention: user blocks).
        anchors: (num_anchors, 2) anchor widths and heights in input pixels; darknet's by default.
        anchors_mask: per head (coarse first), the indices of its anchors.
        input_shape: (height, width, 3), multiples of 32 up to MAX_INPUT_SIDE; None for any such size.
        class_names: optional names, kept in the saved model.
        scale_x_y: darknet's centre-decoding scale (1.05 in yolov4-tiny.cfg).
        attention_at: the insertion points (names of INSERTION_POINTS, "feat1,feat2" or a sequence);
            None for the block's default (`default_points`).
        fusion: "concat" (darknet's route) or "weighted" (nets.fusion.WeightedFusion) at the P5 upsample.
        identity_init: blocks that take it start as the identity (nets.attention), so that weights
            loaded around them (darknet's) keep what they compute.
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
        attention_at: str | Sequence[str] | None = None,
        fusion: str = "concat",
        identity_init: bool = False,
        **kwargs,
    ):
        attention = resolve_attention(attention=attention)
        anchors = load_anchors().tolist() if anchors is None else [[float(w), float(h)] for w, h in anchors]
        anchors_mask = [[int(i) for i in mask] for mask in anchors_mask]
        input_shape = tuple(input_shape)
        _check_arguments(num_classes, anchors_mask, anchors, input_shape, class_names)
        points = default_points(attention) if attention_at is None or attention == "none" else parse_points(
            attention_at)
        attend = _attender(attention, points, bool(identity_init))

        num_outputs = len(anchors_mask[0]) * (5 + num_classes)
        inputs = keras.Input(shape=input_shape, name="image")
        feat1, feat2 = cspdarknet53_tiny(inputs, attend)  # 26x26x256, 13x13x512
        feat1 = attend(feat1, "feat1")
        feat2 = attend(feat2, "feat2")

        p5 = darknet_conv(feat2, 256, 1, 27)  # 13x13x512 -> 13x13x256
        x = darknet_conv(p5, 512, 3, 28)  # -> 13x13x512
        x = attend(x, "head_p5")
        out_p5 = _head(x, num_outputs, HEAD_CONV_INDICES[0])  # -> 13x13x(3*(5+C))

        x = darknet_conv(p5, 128, 1, 32)  # 13x13x256 -> 13x13x128
        x = layers.UpSampling2D(2, name="upsample_33")(x)  # -> 26x26x128
        x = attend(x, "p5_upsample")
        # darknet's order: upsample, then layer 23; 26x26x128 + 26x26x256 -> 26x26x384 either way
        if check_fusion(fusion) == "weighted":
            x = WeightedFusion(name=FUSION_LAYER)([x, feat1])
        else:
            x = layers.Concatenate(name="route_34")([x, feat1])
        x = darknet_conv(x, 256, 3, 35)  # 26x26x384 -> 26x26x256
        x = attend(x, "head_p4")
        out_p4 = _head(x, num_outputs, HEAD_CONV_INDICES[1])  # -> 26x26x(3*(5+C))

        # A user block's key may hold a path: the model is named after its class.
        label = attention if attention in BUILTIN_NAMES else ATTENTION_BLOCKS[attention].__name__.lower()
        kwargs.setdefault("name", f"yolov4_tiny_{label}")
        super().__init__(inputs=inputs, outputs=[out_p5, out_p4], **kwargs)
        self.num_classes = num_classes
        self.attention = attention
        self.attention_at = points
        self.fusion = fusion
        # Recorded only where it took effect: blocks that start as the identity when asked to.
        self.identity_init = bool(identity_init) and bool(points) and can_start_as_identity(attention)
        self.anchors = anchors
        self.anchors_mask = anchors_mask
        self.image_shape = input_shape
        self.class_names = list(class_names) if class_names is not None else None
        self.scale_x_y = float(scale_x_y)

    @property
    def default_placement(self) -> bool:
        """Whether the blocks sit at their default points (DEFAULT_POINTS, or the block's own)."""
        return self.attention_at == default_points(self.attention)

    @property
    def attention_layers(self) -> list[str]:
        """The names of the model's attention blocks, in network order ("attention_<point>")."""
        return [f"attention_{point}" for point in self.attention_at]

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
            # Only what differs from the defaults: a model saved before these existed keeps its config.
            **({"attention_at": list(self.attention_at)} if not self.default_placement else {}),
            **({"fusion": self.fusion} if self.fusion != "concat" else {}),
            **({"identity_init": True} if self.identity_init else {}),
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
    """The classic entry point: `phi` 0-5 picks the attention block (see nets.attention)."""
    return YoloV4Tiny(
        num_classes,
        attention=resolve_attention(phi=phi),
        anchors_mask=anchors_mask,
        input_shape=input_shape,
        **kwargs,
    )
