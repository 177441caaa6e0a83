"""frozen_forward: batch-norms folded into constant-weight convolutions, the model left as it was."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from nets.attention import PHI_TO_ATTENTION
from nets.yolo import YoloV4Tiny
from tests.layer_checks import randomise_batch_norms
from utils.inference.folding import frozen_forward
from utils.inference.precision import to_mixed_precision

X = np.random.default_rng(0).uniform(0, 1, (2, 64, 64, 3)).astype(np.float32)


def _conv_bn_pairs(model) -> int:
    """Batch-norms of the model whose input is a Conv2D's output (counted independently of folding)."""
    conv_outputs = {id(layer.output) for layer in model.layers if type(layer) is keras.layers.Conv2D}
    return sum(
        1
        for layer in model.layers
        if isinstance(layer, keras.layers.BatchNormalization) and id(layer.input) in conv_outputs
    )


def _assert_close(ours, reference, rtol=1e-4):
    assert len(ours) == len(reference)
    for a, b in zip(ours, reference, strict=True):
        a, b = np.asarray(a), np.asarray(b)
        assert a.shape == b.shape and a.dtype == b.dtype
        np.testing.assert_allclose(a, b, rtol=rtol, atol=rtol * np.abs(b).max())


@pytest.mark.parametrize("attention", PHI_TO_ATTENTION)  # phi 0-4
def test_folded_forward_equals_the_keras_model_for_every_attention(attention):
    model = randomise_batch_norms(YoloV4Tiny(2, attention=attention))
    forward = frozen_forward(model)
    assert forward.num_folded == _conv_bn_pairs(model) == 19  # every darknet conv's batch-norm
    _assert_close(tf.function(forward)(X), model(X, training=False))


def test_the_model_is_not_changed_and_the_weights_are_a_snapshot():
    model = randomise_batch_norms(YoloV4Tiny(2, attention="ca"))
    weights = [np.array(w) for w in model.get_weights()]
    reference = [np.asarray(h) for h in model(X, training=False)]
    forward = frozen_forward(model)
    folded = [np.asarray(h) for h in tf.function(forward)(X)]
    # Folding wrote nothing into the model: its weights and its outputs are the same.
    for before, after in zip(weights, model.get_weights(), strict=True):
        np.testing.assert_array_equal(before, after)
    for before, after in zip(reference, model(X, training=False), strict=True):
        np.testing.assert_array_equal(before, np.asarray(after))
    # A second fold of the same model gives the same forward (nothing was folded twice).
    _assert_close(tf.function(frozen_forward(model))(X), folded, rtol=1e-6)
    # Changing the model afterwards does not change a forward already built.
    conv = model.get_layer("conv_0")
    conv.kernel.assign(np.zeros(conv.kernel.shape, np.float32))
    _assert_close(tf.function(forward)(X), folded, rtol=1e-6)


def test_conv_weights_are_graph_constants():
    """The speed win: no variable of a conv or batch-norm is captured by the traced graph (phi 0
    has no other weights), so its weights are Const nodes that grappler and oneDNN can fuse."""
    model = YoloV4Tiny(2)
    spec = tf.TensorSpec([None, 64, 64, 3], tf.float32)
    assert len(tf.function(frozen_forward(model)).get_concrete_function(spec).captured_inputs) == 0
    assert len(tf.function(lambda x: model(x, training=False)).get_concrete_function(spec).captured_inputs) > 0


def test_without_folding_the_batch_norms_still_run():
    model = randomise_batch_norms(YoloV4Tiny(2))
    forward = frozen_forward(model, fold_bn=False)
    assert forward.num_folded == 0
    _assert_close(tf.function(forward)(X), model(X, training=False))


@pytest.mark.slow
def test_mixed_precision_folds_in_the_layers_compute_dtype():
    model = to_mixed_precision(randomise_batch_norms(YoloV4Tiny(2, attention="se")), "mixed_bfloat16")
    forward = frozen_forward(model)
    assert forward.num_folded == 19
    conv = model.get_layer("conv_0")
    assert forward.model.get_layer("conv_0").compute_dtype == conv.compute_dtype == "bfloat16"
    ours, reference = tf.function(forward)(X), model(X, training=False)
    for a, b in zip(ours, reference, strict=True):
        assert a.dtype == b.dtype == tf.float32  # the heads stay float32
        # bfloat16 has 8 bits of mantissa: folding rounds differently from conv-then-BN.
        assert np.abs(np.asarray(a) - np.asarray(b)).mean() < 0.02 * np.abs(np.asarray(b)).mean()


def test_only_batch_norms_that_alone_read_a_conv_are_folded():
    """A conv whose output is also read elsewhere, and a conv + batch-norm called twice (shared),
    keep their batch-norms; a plain conv + batch-norm is folded."""
    inputs = keras.Input((8, 8, 4))
    shared_conv = keras.layers.Conv2D(4, 3, padding="same", use_bias=False, name="shared_conv")
    shared_bn = keras.layers.BatchNormalization(name="shared_bn")
    x = shared_bn(shared_conv(inputs))
    x = shared_bn(shared_conv(x))  # called a second time
    conv = keras.layers.Conv2D(4, 1, name="read_twice")(x)
    y = keras.layers.BatchNormalization(name="bn_read_twice")(conv)
    y = keras.layers.Add()([y, conv])  # the conv's output is read by the add too
    z = keras.layers.Conv2D(3, 3, strides=2, name="plain")(y)
    z = keras.layers.BatchNormalization(name="bn_plain")(z)
    model = randomise_batch_norms(keras.Model(inputs, [z, y]))
    forward = frozen_forward(model)
    assert forward.num_folded == 1
    x = np.random.default_rng(1).uniform(-1, 1, (2, 8, 8, 4)).astype(np.float32)
    _assert_close(tf.function(forward)(x), model(x, training=False))
