"""An inference-only forward of a functional Keras model: convolution weights as graph constants,
batch-norms folded into the convolution before them. Public Keras API only
(`keras.models.clone_model`, `layer.input` / `layer.output`).

    conv(x, W) * s + (beta - m * s) == conv(x, W * s) + (beta - m * s),   s = gamma / sqrt(v + eps).

Why: constants created while a tf.function traces the forward are Const nodes of its graph (not
captured variables), which lets TensorFlow's grappler + oneDNN fuse conv + bias + LeakyReLU into
one kernel and cache the reordered weights; the folded batch-norm then costs nothing.
`benchmarks/bench_inference.py --variants` times it against calling the Keras model.
"""

from __future__ import annotations

from collections.abc import Callable

import keras
import numpy as np
import tensorflow as tf

from nets.attention import PACKAGE


@keras.saving.register_keras_serializable(package=PACKAGE)
class FoldedConv2D(keras.layers.Layer):
    """A 2-D convolution (NHWC) whose kernel and bias are NumPy float32 arrays, made tf constants
    in `call` (so, in a traced function, Const nodes of the graph). No trainable weights.

    Inputs are cast to the layer's compute dtype as Keras casts them for a Conv2D under the same
    dtype policy, and the kernel and bias are cast to it too.
    """

    def __init__(self, kernel, bias=None, strides=(1, 1), padding="valid", dilation_rate=(1, 1), **kwargs):
        super().__init__(trainable=False, **kwargs)
        self.kernel_value = np.asarray(kernel, np.float32)
        self.bias_value = None if bias is None else np.asarray(bias, np.float32)
        self.strides = tuple(int(s) for s in strides)
        self.padding = str(padding).lower()
        self.dilation_rate = tuple(int(d) for d in dilation_rate)

    def call(self, x):
        dtype = self.compute_dtype
        x = tf.cast(x, dtype)
        kernel = tf.cast(tf.constant(self.kernel_value), dtype)
        y = tf.nn.conv2d(x, kernel, self.strides, self.padding.upper(), dilations=self.dilation_rate)
        if self.bias_value is not None:
            y = tf.nn.bias_add(y, tf.cast(tf.constant(self.bias_value), dtype))
        return y

    def compute_output_shape(self, input_shape):
        out = []
        for size, k, s, d in zip(input_shape[1:3], self.kernel_value.shape[:2], self.strides, self.dilation_rate):
            if size is None:
                out.append(None)
            elif self.padding == "same":
                out.append(-(-size // s))
            else:
                out.append((size - d * (k - 1) - 1) // s + 1)
        return (input_shape[0], *out, self.kernel_value.shape[-1])

    def get_config(self):
        return {
            **super().get_config(),
            "kernel": self.kernel_value.tolist(),
            "bias": None if self.bias_value is None else self.bias_value.tolist(),
            "strides": list(self.strides),
            "padding": self.padding,
            "dilation_rate": list(self.dilation_rate),
        }


def _plain_conv(layer) -> bool:
    """A Conv2D that FoldedConv2D computes exactly: channels-last, not grouped, no activation."""
    return (
        type(layer) is keras.layers.Conv2D
        and layer.groups == 1
        and layer.data_format == "channels_last"
        and layer.activation is keras.activations.linear
    )


def _foldable_bn(layer) -> bool:
    return type(layer) is keras.layers.BatchNormalization and layer.axis in (-1, 3)


def _conv_bn_pairs(model) -> dict[str, str]:
    """batch-norm name -> conv name for each BatchNormalization whose input is the output of a
    plain Conv2D that nothing else reads (no other layer, not a model output)."""
    consumers: dict[int, int] = {}
    for tensor in keras.tree.flatten(model.outputs):
        consumers[id(tensor)] = consumers.get(id(tensor), 0) + 1
    producer: dict[int, keras.layers.Layer] = {}
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        for tensor in keras.tree.flatten(layer.input):
            consumers[id(tensor)] = consumers.get(id(tensor), 0) + 1
        for tensor in keras.tree.flatten(layer.output):
            producer[id(tensor)] = layer
    pairs = {}
    for layer in model.layers:
        if not _foldable_bn(layer):
            continue
        inputs = keras.tree.flatten(layer.input)
        if len(inputs) != 1:
            continue
        conv = producer.get(id(inputs[0]))
        if conv is not None and _plain_conv(conv) and consumers.get(id(inputs[0])) == 1:
            pairs[layer.name] = conv.name
    return pairs


def _folded_weights(conv, bn=None) -> tuple[np.ndarray, np.ndarray | None]:
    """The conv's kernel and bias as float32 NumPy copies, the batch-norm folded in (float64 maths)."""
    kernel = np.array(keras.ops.convert_to_numpy(conv.kernel), np.float64)
    bias = np.array(keras.ops.convert_to_numpy(conv.bias), np.float64) if conv.use_bias else None
    if bn is not None:

        def value(variable):
            return np.asarray(keras.ops.convert_to_numpy(variable), np.float64)

        gamma = value(bn.gamma) if bn.scale else 1.0
        beta = value(bn.beta) if bn.center else 0.0
        scale = gamma / np.sqrt(value(bn.moving_variance) + bn.epsilon)
        kernel = kernel * scale
        bias = beta + ((0.0 if bias is None else bias) - value(bn.moving_mean)) * scale
    return kernel.astype(np.float32), None if bias is None else bias.astype(np.float32)


def _clone(model, pairs: dict[str, str]):
    """clone_model with plain convs -> FoldedConv2D (their pair's batch-norm folded in), the paired
    batch-norms -> Identity, every other layer the model's own object. Also returns, per layer
    name, how often the clone called it and which inputs it read (to check the pairs)."""
    bn_of = {conv: bn for bn, conv in pairs.items()}
    layers_by_name = {layer.name: layer for layer in model.layers}

    def clone_function(layer):
        if _plain_conv(layer):
            bn = layers_by_name[bn_of[layer.name]] if layer.name in bn_of else None
            kernel, bias = _folded_weights(layer, bn)
            return FoldedConv2D(
                kernel,
                bias,
                layer.strides,
                layer.padding,
                layer.dilation_rate,
                name=layer.name,
                dtype=layer.dtype_policy,
            )
        if layer.name in pairs:
            return keras.layers.Identity(name=layer.name, dtype=layer.dtype_policy)
        return layer

    calls: dict[str, list] = {}

    def call_function(layer, *args, **kwargs):
        if isinstance(layer, FoldedConv2D) or layer.name in pairs:
            # The replacements take the one input alone (the graph also passes mask= / training=).
            args, kwargs = args[:1], {}
        outputs = layer(*args, **kwargs)
        inputs = [id(t) for t in keras.tree.flatten((args, kwargs)) if isinstance(t, keras.KerasTensor)]
        calls.setdefault(layer.name, []).append((inputs, [id(t) for t in keras.tree.flatten(outputs)]))
        return outputs

    clone = keras.models.clone_model(model, clone_function=clone_function, call_function=call_function)
    return clone, calls


def _broken_pairs(clone, pairs: dict[str, str], calls: dict[str, list]) -> set[str]:
    """The batch-norm names whose pair the cloned graph shows not to be foldable: the conv or the
    batch-norm called more than once (shared layers), or the conv's output read by anything but
    its batch-norm."""
    reads: dict[int, int] = {}
    for tensor in keras.tree.flatten(clone.outputs):
        reads[id(tensor)] = reads.get(id(tensor), 0) + 1
    for layer_calls in calls.values():
        for inputs, _ in layer_calls:
            for tensor_id in inputs:
                reads[tensor_id] = reads.get(tensor_id, 0) + 1
    broken = set()
    for bn, conv in pairs.items():
        if len(calls.get(conv, ())) != 1 or len(calls.get(bn, ())) != 1:
            broken.add(bn)
            continue
        (_, conv_outputs), ((bn_inputs, _),) = calls[conv][0], calls[bn]
        if conv_outputs != bn_inputs or reads.get(conv_outputs[0]) != 1:
            broken.add(bn)
    return broken


def frozen_forward(model, fold_bn: bool = True) -> Callable[[tf.Tensor], list[tf.Tensor]]:
    """An inference-only forward of a functional Keras model (e.g. `nets.yolo.YoloV4Tiny`): every
    plain Conv2D becomes a convolution with CONSTANT weights, and every BatchNormalization right
    after one is folded into it (see the module docstring).

    A batch-norm is folded only when its single input is such a conv's output that nothing else
    reads; every other layer (attention blocks, pooling, ...) is the model's own layer object and
    runs as it is. The model's weights are not changed; the folded ones are a snapshot: build a
    new forward after changing the model's weights. Under a mixed-precision policy the folded
    convs compute in the conv layer's compute dtype, as the Keras layer does.

    fold_bn: False keeps the batch-norms (the convs still get constant weights).

    Building it calls the model's own layers on new symbolic inputs (as clone_model does with
    shared layers), which adds nothing to the model's weights, config or saved file.

    Returns: a callable float32 (N, H, W, 3) -> list of raw heads, to trace in a tf.function;
    its `num_folded` attribute says how many batch-norms were folded, its `model` attribute is
    the inference-only functional copy it runs.
    """
    pairs = _conv_bn_pairs(model) if fold_bn else {}
    clone, calls = _clone(model, pairs)
    broken = _broken_pairs(clone, pairs, calls)
    if broken:  # shared layers or extra readers that layer.input / layer.output could not show
        pairs = {bn: conv for bn, conv in pairs.items() if bn not in broken}
        clone, _ = _clone(model, pairs)

    def forward(images):
        outputs = clone(images, training=False)
        return list(outputs) if isinstance(outputs, (list, tuple)) else [outputs]

    forward.num_folded = len(pairs)  # type: ignore[attr-defined]
    forward.model = clone  # type: ignore[attr-defined]
    return forward
