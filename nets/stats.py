"""Parameter and FLOP counts for a model, and what each attention block costs where it sits.

FLOPs are counted by TensorFlow's graph profiler on the traced inference graph at a fixed input
size: every float operation (convolutions as 2 x multiply-adds, plus batch norm, activations,
pooling and the attention blocks' element-wise work). For phi 0 at 416 this gives 6.92 G, against
darknet's 6.91 BFLOPs, which counts the convolutions alone.
"""

from __future__ import annotations

from dataclasses import dataclass

import keras
import numpy as np
import tensorflow as tf

from nets.yolo import ATTENTION_POINTS


def count_flops(model: keras.Model, input_shape: tuple[int, ...]) -> int:
    """Float operations of one inference pass on a batch of one input of `input_shape` (no batch axis)."""

    @tf.autograph.experimental.do_not_convert
    def forward(x):
        return model(x, training=False)

    # The traced graph as it is: the profiler takes the shapes of the weights from their variable
    # reads, so it counts what a frozen copy (variables made constants) would; checked equal for phi 0-4.
    graph = tf.function(forward).get_concrete_function(tf.TensorSpec([1, *input_shape], tf.float32)).graph
    options = tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()
    options["output"] = "none"
    return int(tf.compat.v1.profiler.profile(graph=graph, options=options).total_float_ops)


def count_params(layer: keras.layers.Layer) -> int:
    """All weights, trainable or not (batch-norm statistics included, as darknet stores them)."""
    return int(sum(np.prod(w.shape) for w in layer.weights))


@dataclass
class AttentionCost:
    point: str
    input_shape: tuple[int, int, int]
    params: int
    flops: int


def attention_costs(model: keras.Model, input_hw: tuple[int, int]) -> list[AttentionCost]:
    """Parameters and FLOPs of each attention block in `model` at network input (height, width)."""
    fixed = type(model).from_config({**model.get_config(), "input_shape": [*input_hw, 3]})
    costs = []
    for point in ATTENTION_POINTS:
        try:
            layer = fixed.get_layer(point)
        except ValueError:
            continue
        shape = tuple(int(d) for d in layer.input.shape[1:])
        inputs = keras.Input(shape=shape)
        block = keras.Model(inputs, type(layer).from_config(layer.get_config())(inputs))
        costs.append(AttentionCost(point, shape, count_params(layer), count_flops(block, shape)))
    return costs
