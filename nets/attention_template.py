"""A template for your own attention block: copy this file anywhere, rename the class and the
registered name, change `build` and `attention_weights`, then train with either of

    python train.py --attention path/to/my_blocks.py:SpatialGate ...   # a file, by path
    python train.py --attention my_blocks:SpatialGate ...               # a module on the Python path

(or `--attention spatial_gate` from Python code that imported the module, thanks to the decorator).
Nothing in the project needs editing. The contract (nets/attention.py, checked before training):
shape in = shape out, channels inferred in `build()`, every constructor argument in `get_config()`;
`attention_weights(x)` is optional and feeds predict.py --mode attention; so is `identity_init`, which
lets the block start as the identity where a model asks it to (darknet weights, --attention-at).

To predict with or load a model trained this way, import the module first:
`python predict.py --weights run/best.keras --attention-module path/to/my_blocks.py ...`.

This block itself works (tests/nets/test_attention_template.py): a spatial gate, sigmoid(k x k conv
of the channel mean and max) per pixel, the spatial half of CBAM without its channel half.
"""

from __future__ import annotations

from keras import layers, ops

from nets.attention import register_attention


@register_attention("spatial_gate")  # change the name when you copy the file
class SpatialGate(layers.Layer):
    """x * sigmoid(conv_k([mean_c(x), max_c(x)])): one weight per pixel, shared by the channels.

    Args:
        kernel_size: the gate conv's size.
        identity_init: optional in the contract: start as the identity (the conv starts at zero and
            the gate is 2 * sigmoid, so every weight starts at exactly 1).
    """

    def __init__(self, kernel_size: int = 7, identity_init: bool = False, **kwargs):  # every argument has a default
        super().__init__(**kwargs)
        self.kernel_size = kernel_size
        self.identity_init = bool(identity_init)

    def build(self, input_shape):
        # (N, H, W, C): C is known here (128 to 512, by insertion point); never pass it in.
        init = "zeros" if self.identity_init else "glorot_uniform"
        self.conv = layers.Conv2D(1, self.kernel_size, padding="same", kernel_initializer=init, name="gate_conv")
        self.conv.build((None, None, None, 2))

    def attention_weights(self, x) -> dict:
        """What `call` multiplies x (N, H, W, C) by: {"spatial": (N, H, W) in (0, 1)}, (0, 2) with identity_init."""
        pooled = ops.concatenate([ops.mean(x, axis=-1, keepdims=True), ops.max(x, axis=-1, keepdims=True)], axis=-1)
        gate = ops.sigmoid(self.conv(pooled)[..., 0])
        return {"spatial": 2.0 * gate if self.identity_init else gate}

    def call(self, x):
        return x * self.attention_weights(x)["spatial"][..., None]  # (N, H, W, C), as it came in

    def get_config(self):
        # every constructor argument
        return {**super().get_config(), "kernel_size": self.kernel_size, "identity_init": self.identity_init}

