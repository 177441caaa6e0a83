"""The checks every custom layer must pass (in the spirit of keras-hub's `run_layer_test`)."""

from __future__ import annotations

from collections.abc import Callable

import keras
import numpy as np
import tensorflow as tf


def check_shape_preserved(make_layer: Callable[[], keras.layers.Layer], shapes) -> None:
    """Output shape equals input shape, eagerly and symbolically with unknown H and W."""
    for shape in shapes:
        x = np.random.default_rng(0).normal(size=shape).astype("float32")
        assert tuple(make_layer()(x).shape) == shape
    channels = shapes[0][-1]
    symbolic = keras.Input(shape=(None, None, channels))
    assert tuple(make_layer()(symbolic).shape) == (None, None, None, channels)


def check_config_round_trip(layer: keras.layers.Layer, x: np.ndarray) -> None:
    layer(x)
    clone = type(layer).from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()
    clone(x)
    clone.set_weights(layer.get_weights())
    np.testing.assert_allclose(clone(x), layer(x), atol=1e-6)


def check_save_load(layer: keras.layers.Layer, x: np.ndarray, tmp_path) -> None:
    """A model holding the layer reloads with plain load_model (safe mode, no custom_objects)."""
    inputs = keras.Input(shape=(None, None, x.shape[-1]))
    model = keras.Model(inputs, layer(inputs))
    path = tmp_path / "layer.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_array_equal(np.asarray(loaded(x)), np.asarray(model(x)))


def check_gradient_step(layer: keras.layers.Layer, x: np.ndarray) -> None:
    """One SGD step on a simple loss changes every trainable weight."""
    layer(x)
    assert layer.trainable_weights, "the layer has nothing to train"
    before = [w.numpy().copy() for w in layer.trainable_weights]
    target = tf.random.stateless_normal(x.shape, seed=(1, 2))
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(tf.square(layer(x, training=True) - target))
    grads = tape.gradient(loss, layer.trainable_weights)
    keras.optimizers.SGD(0.1).apply_gradients(zip(grads, layer.trainable_weights))
    for weight, old in zip(layer.trainable_weights, before):
        assert not np.allclose(weight.numpy(), old), f"{weight.path} did not change"


def randomise_batch_norms(model, seed=0):
    """Non-trivial statistics, so that a folded conv differs from the model's own kernel."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            n = layer.moving_mean.shape[0]
            layer.moving_mean.assign(rng.normal(0, 0.2, n).astype(np.float32))
            layer.moving_variance.assign(rng.uniform(0.5, 2.0, n).astype(np.float32))
            layer.gamma.assign(rng.uniform(0.5, 1.5, n).astype(np.float32))
            layer.beta.assign(rng.normal(0, 0.2, n).astype(np.float32))
    return model
