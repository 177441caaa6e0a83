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
5    ``sa``    self-attention over positions (SAGAN, Zhang et al., ICML 2019;
               non-local, Wang et al., CVPR 2018); by default at feat2 (13x13) only
===  ========  ===========================================================

Identity start (``identity_init=True``, saved in each block's config; nets.yolo passes it when
darknet weights load or blocks sit at points other than their default, see nets/yolo.py): the
block's last gate layer starts at zero (kernel and bias) and its gate is 2 * sigmoid(z) in (0, 2)
instead of sigmoid(z) in (0, 1), so every factor starts at exactly 1 and the block passes its
input through unchanged; it learns from the first step (the zeroed layer's gradient is not zero).
SE: fc2. CBAM: the shared MLP's second layer and the spatial conv. ECA: its 1-D conv (no bias).
CA: conv_h and conv_w. Without the flag (the default, and every model saved before it existed)
the blocks compute as the papers do. Self-attention always starts as the identity (gamma = 0).

User blocks (no phi): ``--attention MODULE:CLASS`` (a module on the Python path, or a path to a
``.py`` file: ``--attention path/to/blocks.py:MyBlock``), or ``--attention NAME`` for a class that
its module registers with ``@register_attention("NAME")`` once the module is imported. The
contract a block must keep (checked once, before a model is built: `check_attention_block`):

- it is a ``keras.layers.Layer`` subclass that can be built with no arguments (defaults only);
- shape in = shape out: (N, H, W, C) -> (N, H, W, C), with H and W possibly unknown (None);
- it infers C in ``build(input_shape)``, since it sits where C is 128, 256 and 512;
- ``get_config()`` returns every constructor argument, so ``from_config(get_config())`` rebuilds it;
- optional: ``attention_weights(x) -> dict`` of the factors ``call`` multiplies x by, for
  predict.py --mode attention: a "spatial" (N, H, W) or a "channel" (N, C) entry is drawn;
- optional: an ``identity_init`` constructor argument (saved in ``get_config``): when the block
  accepts it, a model that needs its blocks to start as the identity passes ``identity_init=True``
  (see above); a block without it starts as it initialises itself;
- optional: a class attribute ``default_points``, the insertion points (nets.yolo.INSERTION_POINTS)
  used when ``--attention-at`` is not given (default: feat1, feat2, p5_upsample).

``nets/attention_template.py`` is a working block to copy. A saved model records its block's module
(config "attention_module"); loading it never imports code: import the module first (predict.py
--attention-module), or the load says which module to import.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import math
import sys
from pathlib import Path

import keras
import numpy as np
from keras import layers, ops

from utils.errors import YoloError

PACKAGE = "yolov4_tiny"
USER_PACKAGE = "yolov4_tiny_user"  # where user blocks without a Keras registration of their own go


class AttentionError(YoloError, ValueError):
    """An attention choice that cannot be used: an unknown name or phi, a module that does not import."""


class BlockContractError(AttentionError):
    """A user attention block that breaks the contract (module docstring); the message names the block."""


class UnregisteredBlockError(AttentionError):
    """A saved model's attention block is not registered: the message names the module to import."""


def _gate(z, identity_init: bool):
    """sigmoid(z), or 2 * sigmoid(z) for a block that starts as the identity (its z starts at 0): every
    block's gate, after a gate layer without activation."""
    return 2.0 * ops.sigmoid(z) if identity_init else ops.sigmoid(z)


def _zero_or(default: str, identity_init: bool) -> str:
    return "zeros" if identity_init else default


def _identity_config(block) -> dict:
    # Only when set: the configs of blocks saved before the flag existed stay as they were.
    return {"identity_init": True} if block.identity_init else {}


@keras.saving.register_keras_serializable(package=PACKAGE)
class SEBlock(layers.Layer):
    """Squeeze-and-Excitation: GAP -> FC(C/r) -> ReLU -> FC(C) -> sigmoid, then scale the input.

    Args:
        reduction: the paper's r (16).
        identity_init: start as the identity: fc2 starts at zero, the gate is 2 * sigmoid (module docstring).
    """

    def __init__(self, reduction: int = 16, identity_init: bool = False, **kwargs):
        super().__init__(**kwargs)
        if reduction < 1:
            raise ValueError(f"reduction must be >= 1, got {reduction}")
        self.reduction = reduction
        self.identity_init = bool(identity_init)

    def build(self, input_shape):
        channels = input_shape[-1]
        self.squeeze = layers.Dense(max(1, channels // self.reduction), activation="relu", name="fc1")
        init = _zero_or("glorot_uniform", self.identity_init)
        self.excite = layers.Dense(channels, kernel_initializer=init, name="fc2")
        self.squeeze.build((None, channels))
        self.excite.build((None, max(1, channels // self.reduction)))

    def attention_weights(self, x) -> dict:
        """What the block multiplies `x` (N, H, W, C) by: {"channel": (N, C) in (0, 1)} ((0, 2) with identity_init)."""
        excite = self.excite(self.squeeze(ops.mean(x, axis=(1, 2))))
        return {"channel": _gate(excite, self.identity_init)}

    def call(self, x):
        return x * self.attention_weights(x)["channel"][:, None, None, :]

    def get_config(self):
        return {**super().get_config(), "reduction": self.reduction, **_identity_config(self)}


@keras.saving.register_keras_serializable(package=PACKAGE)
class CBAMBlock(layers.Layer):
    """CBAM: channel attention, then spatial attention.

    Channel: sigmoid(MLP(avgpool(x)) + MLP(maxpool(x))) with one shared MLP (C -> C/r -> C).
    Spatial: sigmoid(conv_k([mean_c(x'), max_c(x')])) with a k x k conv to one channel.

    Args:
        reduction: the MLP's r (16 in the paper).
        kernel_size: the spatial conv's size (7 in the paper).
        identity_init: start as the identity: mlp_fc2 and the spatial conv start at zero, both gates are
            2 * sigmoid (module docstring).
    """

    def __init__(self, reduction: int = 16, kernel_size: int = 7, identity_init: bool = False, **kwargs):
        super().__init__(**kwargs)
        if reduction < 1:
            raise ValueError(f"reduction must be >= 1, got {reduction}")
        self.reduction = reduction
        self.kernel_size = kernel_size
        self.identity_init = bool(identity_init)

    def build(self, input_shape):
        channels = input_shape[-1]
        hidden = max(1, channels // self.reduction)
        zero = self.identity_init
        self.mlp_hidden = layers.Dense(hidden, activation="relu", name="mlp_fc1")
        self.mlp_out = layers.Dense(channels, kernel_initializer=_zero_or("glorot_uniform", zero), name="mlp_fc2")
        self.spatial_conv = layers.Conv2D(
            1, self.kernel_size, padding="same", kernel_initializer=_zero_or("glorot_uniform", zero),
            name="spatial_conv",
        )
        self.mlp_hidden.build((None, channels))
        self.mlp_out.build((None, hidden))
        self.spatial_conv.build((None, None, None, 2))

    def _attend(self, x):
        """(channel weights (N, C), x after the channel attention, spatial weights (N, H, W, 1))."""
        avg = self.mlp_out(self.mlp_hidden(ops.mean(x, axis=(1, 2))))
        mx = self.mlp_out(self.mlp_hidden(ops.max(x, axis=(1, 2))))
        channel = _gate(avg + mx, self.identity_init)
        x = x * channel[:, None, None, :]
        pooled = ops.concatenate(
            [ops.mean(x, axis=-1, keepdims=True), ops.max(x, axis=-1, keepdims=True)], axis=-1
        )
        spatial = self.spatial_conv(pooled)
        return channel, x, _gate(spatial, self.identity_init)

    def attention_weights(self, x) -> dict:
        """What the block multiplies `x` (N, H, W, C) by: {"channel": (N, C), "spatial": (N, H, W)},
        both in (0, 1) ((0, 2) with identity_init); the spatial map is computed on x after the channel
        attention."""
        channel, _, spatial = self._attend(x)
        return {"channel": channel, "spatial": spatial[..., 0]}

    def call(self, x):
        _, x, spatial = self._attend(x)
        return x * spatial

    def get_config(self):
        return {
            **super().get_config(), "reduction": self.reduction, "kernel_size": self.kernel_size,
            **_identity_config(self),
        }


def eca_kernel_size(channels: int, gamma: float = 2, b: float = 1) -> int:
    """ECA's adaptive kernel size: k = |log2(C)/gamma + b/gamma|, made odd (rounding up)."""
    k = int(abs((math.log2(channels) + b) / gamma))
    return k if k % 2 else k + 1


@keras.saving.register_keras_serializable(package=PACKAGE)
class ECABlock(layers.Layer):
    """Efficient Channel Attention: GAP -> 1-D conv across channels (no bias) -> sigmoid -> scale.

    Args:
        gamma, b: the paper's constants for the adaptive kernel size (2 and 1).
        identity_init: start as the identity: the conv starts at zero, the gate is 2 * sigmoid (module docstring).
    """

    def __init__(self, gamma: float = 2, b: float = 1, identity_init: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.gamma = gamma
        self.b = b
        self.identity_init = bool(identity_init)

    def build(self, input_shape):
        self.kernel_size = eca_kernel_size(input_shape[-1], self.gamma, self.b)
        self.conv = layers.Conv1D(
            1, self.kernel_size, padding="same", use_bias=False,
            kernel_initializer=_zero_or("glorot_uniform", self.identity_init), name="conv",
        )
        self.conv.build((None, input_shape[-1], 1))

    def attention_weights(self, x) -> dict:
        """What the block multiplies `x` (N, H, W, C) by: {"channel": (N, C) in (0, 1)} ((0, 2) with identity_init)."""
        weights = ops.mean(x, axis=(1, 2))[:, :, None]  # (N, C, 1): channels are the 1-D axis
        return {"channel": _gate(self.conv(weights), self.identity_init)[:, :, 0]}

    def call(self, x):
        return x * self.attention_weights(x)["channel"][:, None, None, :]

    def get_config(self):
        return {**super().get_config(), "gamma": self.gamma, "b": self.b, **_identity_config(self)}


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
        identity_init: start as the identity: conv_h and conv_w start at zero, their gates are
            2 * sigmoid (module docstring).
    """

    def __init__(self, reduction: int = 32, min_channels: int = 8, identity_init: bool = False, **kwargs):
        super().__init__(**kwargs)
        if reduction < 1:
            raise ValueError(f"reduction must be >= 1, got {reduction}")
        self.reduction = reduction
        self.min_channels = min_channels
        self.identity_init = bool(identity_init)

    def build(self, input_shape):
        channels = input_shape[-1]
        hidden = max(self.min_channels, channels // self.reduction)
        # The reference code gives this conv a bias, but the BN right after it cancels any bias.
        self.conv_shared = layers.Conv2D(hidden, 1, use_bias=False, name="conv1")
        self.bn = layers.BatchNormalization(name="bn1")
        init = _zero_or("glorot_uniform", self.identity_init)
        self.conv_h = layers.Conv2D(channels, 1, kernel_initializer=init, name="conv_h")
        self.conv_w = layers.Conv2D(channels, 1, kernel_initializer=init, name="conv_w")
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
        a_h = _gate(self.conv_h(y_h), self.identity_init)  # (N, H, 1, C): one weight per row
        a_w = ops.transpose(_gate(self.conv_w(y_w), self.identity_init), (0, 2, 1, 3))  # (N, 1, W, C): per column
        return a_h, a_w

    def attention_weights(self, x, training=None) -> dict:
        """What the block multiplies `x` (N, H, W, C) by: {"height": (N, H, C), "width": (N, W, C)},
        in (0, 1) ((0, 2) with identity_init); pixel (i, j) of channel c is scaled by height[i, c] * width[j, c]."""
        a_h, a_w = self._attend(x, training=training)
        return {"height": a_h[:, :, 0, :], "width": a_w[:, 0, :, :]}

    def call(self, x, training=None):
        a_h, a_w = self._attend(x, training=training)
        return x * a_h * a_w

    def get_config(self):
        return {
            **super().get_config(), "reduction": self.reduction, "min_channels": self.min_channels,
            **_identity_config(self),
        }


@keras.saving.register_keras_serializable(package=PACKAGE)
class SelfAttention(layers.Layer):
    """Self-attention over the positions of a feature map: SAGAN's block (Zhang et al., "Self-Attention
    Generative Adversarial Networks", ICML 2019), the embedded-Gaussian non-local block (Wang et al.,
    "Non-local Neural Networks", CVPR 2018) with SAGAN's learned residual scale.

    With x (N, H, W, C) and P = H * W positions, 1x1 convolutions give the query f(x), key g(x)
    and value h(x), each of C' = max(1, C / reduction) channels (SAGAN: C / 8), with biases but the
    key's (a key bias shifts every score of a query alike, which the softmax ignores);
    beta = softmax over the key positions of f(x) g(x)^T, (N, P, P), unscaled as in SAGAN;
    o = v(beta h(x)), a 1x1 conv back to C channels; out = x + gamma * o, gamma a learned scalar
    that starts at 0, so the block starts as the identity whatever loads around it.
    Every position attends to every other: the cost grows with P^2, so its default insertion point
    is feat2 (13x13 at 416) alone. Parameters: 4 C C' + 2 C' + C + 1 (131,713 for C = 512).

    Args:
        reduction: C / C' (SAGAN's 8).
    """

    default_points = ("feat2",)
    starts_as_identity = True  # gamma starts at 0: no identity_init needed (accepts_identity_init)

    def __init__(self, reduction: int = 8, **kwargs):
        super().__init__(**kwargs)
        if reduction < 1:
            raise ValueError(f"reduction must be >= 1, got {reduction}")
        self.reduction = reduction

    def build(self, input_shape):
        channels = input_shape[-1]
        inner = self.inner_channels = max(1, channels // self.reduction)
        self.query = layers.Conv2D(inner, 1, name="query")
        # No key bias: it adds query . bias to every key position alike, which the softmax ignores.
        self.key = layers.Conv2D(inner, 1, use_bias=False, name="key")
        self.value = layers.Conv2D(inner, 1, name="value")
        self.out = layers.Conv2D(channels, 1, name="out")
        for conv in (self.query, self.key, self.value):
            conv.build((None, None, None, channels))
        self.out.build((None, None, None, inner))
        self.gamma = self.add_weight(shape=(), initializer="zeros", name="gamma")

    def _attend(self, x):
        """(beta (N, P, P): row i is how query position i spreads over the P key positions, the
        attended values (N, H, W, C'))."""
        shape = ops.shape(x)
        # The channel count stays static: a conv on an unknown channel count is compiled apart by
        # Keras (XLA), which ONNX export cannot convert.
        inner = self.inner_channels
        flat = (shape[0], shape[1] * shape[2], inner)
        query = ops.reshape(self.query(x), flat)  # (N, P, C')
        key = ops.reshape(self.key(x), flat)
        value = ops.reshape(self.value(x), flat)
        # Scores and softmax in float32: unscaled dot products can overflow float16 (mixed precision).
        scores = ops.matmul(ops.cast(query, "float32"), ops.transpose(ops.cast(key, "float32"), (0, 2, 1)))
        beta = ops.softmax(scores, axis=-1)  # (N, P, P)
        attended = ops.reshape(ops.matmul(ops.cast(beta, value.dtype), value), (shape[0], shape[1], shape[2], inner))
        return beta, attended

    def attention_weights(self, x) -> dict:
        """{"attention": beta (N, P, P) with P = H * W positions in row-major order, each row a
        softmax over the key positions; "gamma": the residual scale}. Not a factor of x: the block
        adds gamma * o to x (predict.py --mode attention draws the attention each position receives)."""
        beta, _ = self._attend(x)
        return {"attention": beta, "gamma": self.gamma}

    def call(self, x):
        _, attended = self._attend(x)
        return x + ops.cast(self.gamma, x.dtype) * self.out(attended)

    def get_config(self):
        return {**super().get_config(), "reduction": self.reduction}


# The registry. `None` means no block is inserted.
ATTENTION_BLOCKS: dict[str, type[layers.Layer] | None] = {
    "none": None,
    "se": SEBlock,
    "cbam": CBAMBlock,
    "eca": ECABlock,
    "ca": CoordAttention,
    "sa": SelfAttention,
}
# phi N selects PHI_TO_ATTENTION[N].
PHI_TO_ATTENTION = ("none", "se", "cbam", "eca", "ca", "sa")
BUILTIN_NAMES = frozenset(ATTENTION_BLOCKS)
# User blocks: registry key -> the module they come from (a dotted name or a .py file's path).
ATTENTION_MODULES: dict[str, str] = {}


def register_attention(name: str):
    """Class decorator: `--attention NAME` picks this block once its module is imported.

        @register_attention("myblock")
        class MyBlock(keras.layers.Layer): ...

    The class is also registered with Keras (package "yolov4_tiny_user" unless it has a registration
    of its own), so a model holding it reloads in safe mode.
    """
    key = name.lower()
    if key in BUILTIN_NAMES or ":" in key or not key:
        raise AttentionError(f"register_attention({name!r}): that name is built in or not a plain name")

    def decorator(cls):
        _check_is_layer(cls, key)
        _register(key, cls, _module_ref(cls))
        return cls

    return decorator


def _check_is_layer(cls, label: str) -> None:
    if not (isinstance(cls, type) and issubclass(cls, layers.Layer)):
        raise BlockContractError(f"attention block {label!r}: {cls!r} is not a keras.layers.Layer subclass")


def _register(key: str, cls: type, module_ref: str) -> None:
    if keras.saving.get_registered_object(keras.saving.get_registered_name(cls)) is not cls:
        keras.saving.register_keras_serializable(package=USER_PACKAGE)(cls)
    ATTENTION_BLOCKS[key] = cls
    ATTENTION_MODULES[key] = module_ref


# Modules imported from a .py file by path: resolved path -> module.
_FILE_MODULES: dict[str, object] = {}


def _module_ref(cls: type) -> str:
    """How to import the module `cls` comes from: its file path when it was loaded from a file."""
    for path, module in _FILE_MODULES.items():
        if module.__name__ == cls.__module__:
            return path
    return cls.__module__


def _is_file_ref(module_ref: str) -> bool:
    return module_ref.endswith(".py") or "/" in module_ref or "\\" in module_ref


def imported_module(module_ref: str):
    """The module `module_ref` (a dotted name or a .py path) if it is already imported, else None."""
    if _is_file_ref(module_ref):
        return _FILE_MODULES.get(str(Path(module_ref).resolve()))
    return sys.modules.get(module_ref)


def import_attention_module(module_ref: str):
    """Import a module of attention blocks: a dotted name on the Python path, or a path to a .py file
    (imported once per resolved path). Raises AttentionError naming it when it does not import."""
    module = imported_module(module_ref)
    if module is not None:
        return module
    try:
        if not _is_file_ref(module_ref):
            return importlib.import_module(module_ref)
        path = Path(module_ref).resolve()
        if not path.is_file():
            raise AttentionError(f"attention module {module_ref}: no such file")
        spec = importlib.util.spec_from_file_location(f"_user_attention_{path.stem}", path)
        module = importlib.util.module_from_spec(spec)
        _FILE_MODULES[str(path)] = module  # before exec: its @register_attention records the path
        sys.modules[spec.name] = module
        try:
            spec.loader.exec_module(module)
        except BaseException:
            del _FILE_MODULES[str(path)], sys.modules[spec.name]
            raise
        return module
    except ImportError as err:
        raise AttentionError(f"attention module {module_ref!r} does not import: {err}") from None
    except SyntaxError as err:
        raise AttentionError(f"attention module {module_ref!r} does not import: {err}") from None


def _split_spec(spec: str) -> tuple[str, str]:
    module_ref, _, class_name = spec.rpartition(":")
    if not module_ref or not class_name.isidentifier():
        raise AttentionError(f"--attention {spec!r}: expected MODULE:CLASS or path/to/file.py:CLASS")
    return module_ref, class_name


def _canonical_spec(spec: str) -> str:
    module_ref, class_name = _split_spec(spec)
    if _is_file_ref(module_ref):
        module_ref = str(Path(module_ref).resolve())
    return f"{module_ref}:{class_name}"


def _find_block(attention: str, allow_import: bool) -> str | None:
    """The registry key for `attention`, registering a MODULE:CLASS spec when its module is imported
    (or, with `allow_import`, importable); None when it is not registered."""
    key = attention.lower()
    if key in ATTENTION_BLOCKS:
        return key
    if ":" not in attention:
        return None
    spec = _canonical_spec(attention)
    if spec in ATTENTION_BLOCKS:
        return spec
    module_ref, class_name = _split_spec(spec)
    module = import_attention_module(module_ref) if allow_import else imported_module(module_ref)
    if module is None:
        return None
    if not hasattr(module, class_name):
        raise AttentionError(f"attention module {module_ref!r} has no {class_name!r}")
    cls = getattr(module, class_name)
    _check_is_layer(cls, spec)
    _register(spec, cls, module_ref)
    return spec


def find_attention(attention: str, attention_module: str | None = None) -> str:
    """The registry key of a saved model's block, importing nothing (safe mode): a block whose module
    was not imported raises UnregisteredBlockError naming the module to import."""
    key = _find_block(attention, allow_import=False)
    if key is not None:
        return key
    module_ref = attention_module or (_split_spec(attention)[0] if ":" in attention else None)
    where = f"import its module {module_ref!r} first" if module_ref else "import the module that registers it first"
    raise UnregisteredBlockError(
        f"attention block {attention!r} is not registered: {where} (predict.py, get_map.py: --attention-module "
        f"{module_ref or 'MODULE'}); a saved model never imports code itself"
    )


def attention_module(attention: str) -> str | None:
    """The module a user block comes from (a dotted name or a .py path); None for a built-in block."""
    return ATTENTION_MODULES.get(attention.lower(), ATTENTION_MODULES.get(attention))


_CHECKED: set[type] = set()
_PROBE_SHAPE = (2, 6, 4, 32)  # non-square, so a block that swaps H and W is caught


def check_attention_block(attention: str) -> None:
    """Check a user block against the contract (module docstring) once per class, before a model is
    built. Raises BlockContractError naming the block and what it gets wrong."""
    cls = ATTENTION_BLOCKS.get(attention)
    if cls is None or attention in BUILTIN_NAMES or cls in _CHECKED:
        return
    label = f"attention block {attention!r} ({cls.__name__})"
    _check_is_layer(cls, attention)
    try:
        block = cls()
    except Exception as err:  # the user's constructor: any failure is the finding
        raise BlockContractError(f"{label}: cannot be made with no arguments ({type(err).__name__}: {err})") from None
    x = np.random.default_rng(0).normal(size=_PROBE_SHAPE).astype("float32")
    try:
        out = block(x)
        symbolic = block(keras.Input(shape=(None, None, _PROBE_SHAPE[-1])))
    except Exception as err:
        raise BlockContractError(
            f"{label}: fails on an input of shape {_PROBE_SHAPE} or (None, None, None, {_PROBE_SHAPE[-1]}) "
            f"({type(err).__name__}: {err})"
        ) from None
    if tuple(out.shape) != _PROBE_SHAPE or tuple(symbolic.shape) != (None, None, None, _PROBE_SHAPE[-1]):
        raise BlockContractError(
            f"{label}: output shape {tuple(out.shape)} differs from its input shape {_PROBE_SHAPE} "
            f"(unknown height and width: {tuple(symbolic.shape)}); a block must map (N, H, W, C) to the same shape"
        )
    try:
        config = block.get_config()
        clone = cls.from_config(config)
        clone(x)
        clone.set_weights(block.get_weights())
        same = np.allclose(np.asarray(clone(x)), np.asarray(out), atol=1e-5)
    except Exception as err:
        raise BlockContractError(
            f"{label}: from_config(get_config()) does not rebuild it ({type(err).__name__}: {err}); "
            "get_config() must return every constructor argument"
        ) from None
    if type(block).get_config is not layers.Layer.get_config:  # written by hand: it must be complete
        wanted = [
            p.name for p in inspect.signature(cls.__init__).parameters.values()
            if p.name != "self" and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
        ]
        missing = [name for name in wanted if name not in config]
        if missing:
            raise BlockContractError(
                f"{label}: get_config() lacks the constructor argument(s) {', '.join(missing)}; "
                "return every one (from_config(get_config()) must rebuild the same block)"
            )
    if not same or clone.get_config() != config:
        raise BlockContractError(
            f"{label}: from_config(get_config()) gives a different block; get_config() must return every "
            "constructor argument"
        )
    _CHECKED.add(cls)


def resolve_attention(phi: int | None = None, attention: str | None = None) -> str:
    """Turn `--phi N` or `--attention NAME` into a registry key; an unknown value raises AttentionError.

    NAME is a built-in name, a name registered with `register_attention`, or MODULE:CLASS
    (imported here; its key is MODULE:CLASS with a file's path made absolute). A user block is
    checked against the contract (`check_attention_block`). When both are given they must agree.
    """
    name = None
    if phi is not None:
        if not 0 <= int(phi) < len(PHI_TO_ATTENTION):
            choices = ", ".join(f"{i}={n}" for i, n in enumerate(PHI_TO_ATTENTION))
            raise AttentionError(f"phi must be one of {choices}; got {phi}")
        name = PHI_TO_ATTENTION[int(phi)]
    if attention is not None:
        key = _find_block(attention, allow_import=True)
        if key is None:
            raise AttentionError(
                f"Unknown attention {attention!r}; expected one of {list(ATTENTION_BLOCKS)}, or MODULE:CLASS "
                "(a module on the Python path or a .py file)"
            )
        if name is not None and name != key:
            raise AttentionError(f"--phi {phi} means {name!r} but --attention says {attention!r}")
        check_attention_block(key)
        name = key
    return name or "none"


def accepts_identity_init(attention: str) -> bool:
    """Whether the block `attention` (a registry key) takes `identity_init` (module docstring)."""
    cls = ATTENTION_BLOCKS.get(attention)
    return cls is not None and "identity_init" in inspect.signature(cls.__init__).parameters


def can_start_as_identity(attention: str) -> bool:
    """Whether the block `attention` (a registry key) starts as the identity when asked to: it takes
    `identity_init`, or always does (a class attribute `starts_as_identity`, as self-attention's)."""
    cls = ATTENTION_BLOCKS.get(attention)
    return cls is not None and (accepts_identity_init(attention) or getattr(cls, "starts_as_identity", False))


def make_attention(attention: str, identity_init: bool = False, **kwargs) -> layers.Layer | None:
    """A fresh block from the registry (kwargs go to its constructor), or None for `none`.
    identity_init: make it start as the identity, where the block takes that argument."""
    key = resolve_attention(attention=attention)
    block = ATTENTION_BLOCKS[key]
    if block is None:
        return None
    if identity_init and accepts_identity_init(key):
        kwargs["identity_init"] = True
    return block(**kwargs)
