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

from nets.yolo import ATTENTION_POINTS, FUSION_LAYER


def count_flops(model: keras.Model, input_shape: tuple[int, ...] | list[tuple[int, ...]]) -> int:
    """Float operations of one inference pass on a batch of one input of `input_shape` (no batch axis);
    a list of shapes for a model with several inputs."""
    several = isinstance(input_shape, list)
    specs = [tf.TensorSpec([1, *shape], tf.float32) for shape in (input_shape if several else [input_shape])]

    @tf.autograph.experimental.do_not_convert
    def forward(*x):
        return model(list(x) if several else x[0], training=False)

    # The traced graph as it is: the profiler takes the shapes of the weights from their variable
    # reads, so it counts what a frozen copy (variables made constants) would; checked equal for phi 0-4.
    graph = tf.function(forward).get_concrete_function(*specs).graph
    options = tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()
    options["output"] = "none"
    return int(tf.compat.v1.profiler.profile(graph=graph, options=options).total_float_ops)


def count_params(layer: keras.layers.Layer) -> int:
    """All weights, trainable or not (batch-norm statistics included, as darknet stores them)."""
    return int(sum(np.prod(w.shape) for w in layer.weights))


@dataclass
class AttentionCost:
    """What one block costs where it sits. point: its layer name ("attention_feat1", or "fusion_34"
    for the weighted fusion); input_shape: (h, w, C) at the network input size asked for, a list of
    them for the fusion's inputs."""

    point: str
    input_shape: tuple[int, int, int] | list[tuple[int, int, int]]
    params: int
    flops: int


def attention_costs(model: keras.Model, input_hw: tuple[int, int]) -> list[AttentionCost]:
    """Parameters and FLOPs of each attention block in `model` (at its insertion points, in network
    order), then of its weighted fusion if it has one, at network input (height, width)."""
    fixed = type(model).from_config({**model.get_config(), "input_shape": [*input_hw, 3]})
    names = [*getattr(fixed, "attention_layers", ATTENTION_POINTS), FUSION_LAYER]
    costs = []
    for name in names:
        try:
            layer = fixed.get_layer(name)
        except ValueError:
            continue
        several = isinstance(layer.input, list)
        shapes = [tuple(int(d) for d in x.shape[1:]) for x in (layer.input if several else [layer.input])]
        inputs = [keras.Input(shape=shape) for shape in shapes]
        copy = type(layer).from_config(layer.get_config())
        block = keras.Model(inputs, copy(inputs if several else inputs[0]))
        shape = shapes if several else shapes[0]
        costs.append(AttentionCost(name, shape, count_params(layer), count_flops(block, shape)))
    return costs
