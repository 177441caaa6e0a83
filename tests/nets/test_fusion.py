"""BiFPN's fast normalised fusion (nets/fusion.py): the shared layer checks, and what it computes."""

import keras
import numpy as np
import pytest

from nets.fusion import WeightedFusion
from tests.layer_checks import check_gradient_step


def inputs(seed=0, shape=(2, 6, 10)):
    rng = np.random.default_rng(seed)
    return [rng.normal(size=(*shape, 8)).astype("float32"), rng.normal(size=(*shape, 16)).astype("float32")]


def test_output_shape_is_the_concatenations_eagerly_and_symbolically():
    assert tuple(WeightedFusion()(inputs()).shape) == (2, 6, 10, 24)
    assert tuple(WeightedFusion(width=12)(inputs()).shape) == (2, 6, 10, 12)
    symbolic = [keras.Input(shape=(None, None, 8)), keras.Input(shape=(None, None, 16))]
    assert tuple(WeightedFusion()(symbolic).shape) == (None, None, None, 24)


def test_starts_as_the_concatenation():
    # Equal weights and embedding projections: n / (n + eps) times [x0, x1].
    x = inputs()
    out = np.asarray(WeightedFusion()(x))
    np.testing.assert_allclose(out, np.concatenate(x, axis=-1) * 2 / (2 + 1e-4), rtol=1e-6, atol=1e-7)


def test_weights_are_the_papers_fast_normalisation():
    x = inputs()
    layer = WeightedFusion()
    layer(x)
    layer.fusion_weights.assign([3.0, -1.0])  # ReLU: the second input drops out
    np.testing.assert_allclose(np.asarray(layer.normalised_weights()), [3 / (3 + 1e-4), 0.0], rtol=1e-6)
    out = np.asarray(layer(x))
    np.testing.assert_allclose(out[..., :8], x[0] * 2 * 3 / (3 + 1e-4), rtol=1e-5)
    np.testing.assert_array_equal(out[..., 8:], 0.0)
    share = np.asarray(layer.attention_weights(x)["spatial"])
    np.testing.assert_allclose(share, 1.0, rtol=1e-6)  # all the fused energy comes from the first input


def test_config_round_trip_and_save_load(tmp_path):
    x = inputs()
    layer = WeightedFusion(width=24, epsilon=1e-3, name="fuse")
    layer(x)
    layer.fusion_weights.assign([0.3, 2.0])
    clone = WeightedFusion.from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()
    clone(x)
    clone.set_weights(layer.get_weights())
    np.testing.assert_allclose(np.asarray(clone(x)), np.asarray(layer(x)), atol=1e-6)

    symbolic = [keras.Input(shape=(None, None, 8)), keras.Input(shape=(None, None, 16))]
    model = keras.Model(symbolic, WeightedFusion()(symbolic))
    model.layers[-1].fusion_weights.assign([0.5, 1.5])
    model.save(tmp_path / "fusion.keras")
    loaded = keras.saving.load_model(tmp_path / "fusion.keras")
    np.testing.assert_array_equal(np.asarray(loaded(x)), np.asarray(model(x)))


def test_one_training_step_changes_every_weight():
    keras.utils.set_random_seed(0)
    x = inputs()

    class Wrapped(keras.layers.Layer):  # check_gradient_step feeds one tensor: split it back into two inputs
        def __init__(self):
            super().__init__()
            self.fusion = WeightedFusion()

        def call(self, x):
            return self.fusion([x[..., :8], x[..., 8:]])

    check_gradient_step(Wrapped(), np.concatenate(x, axis=-1))


@pytest.mark.parametrize("width", [None, 12])
def test_parameter_count(width):
    layer = WeightedFusion(width=width)
    layer(inputs())
    out = width or 24
    assert sum(int(np.prod(w.shape)) for w in layer.weights) == 8 * out + 16 * out + 2
