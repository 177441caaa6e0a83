import keras
import numpy as np
import pytest

from nets.attention import (
    ATTENTION_BLOCKS,
    BUILTIN_NAMES,
    PHI_TO_ATTENTION,
    CBAMBlock,
    CoordAttention,
    ECABlock,
    SEBlock,
    SelfAttention,
    accepts_identity_init,
    eca_kernel_size,
    make_attention,
    resolve_attention,
)
from tests.layer_checks import check_config_round_trip, check_gradient_step, check_save_load, check_shape_preserved

BLOCKS = [SEBlock, CBAMBlock, ECABlock, CoordAttention, SelfAttention]
GATED = [SEBlock, CBAMBlock, ECABlock, CoordAttention]  # the blocks with identity_init
CHANNELS = 32


def sample(shape=(2, 6, 10, CHANNELS), seed=0):
    return np.random.default_rng(seed).normal(size=shape).astype("float32")


@pytest.mark.parametrize("block", BLOCKS, ids=lambda b: b.__name__)
class TestEveryBlock:
    def test_output_shape_equals_input_shape(self, block):
        check_shape_preserved(block, [(2, 8, 8, CHANNELS), (1, 6, 10, CHANNELS), (1, 13, 7, CHANNELS)])

    def test_config_round_trip(self, block):
        check_config_round_trip(block(name="blk"), sample())

    def test_save_and_load(self, block, tmp_path):
        check_save_load(block(), sample(), tmp_path)

    def test_gradient_step_changes_weights(self, block):
        keras.utils.set_random_seed(0)  # SE's 2 hidden ReLUs can both start dead under another test order's state
        layer = block()
        if block is SelfAttention:  # at gamma 0 only gamma has a gradient (next test): train it from gamma 0.5
            layer(sample())
            layer.gamma.assign(0.5)
        check_gradient_step(layer, sample())


def attention_map(layer, x):
    """out / x: the multiplicative attention the block applied (x must be non-zero)."""
    return np.asarray(layer(x)) / x


def test_coord_attention_row_pattern_gives_row_attention():
    # A pattern that varies only along rows (the height axis), on a non-square map.
    rng = np.random.default_rng(0)
    rows = rng.uniform(1, 3, size=(1, 6, 1, CHANNELS)).astype("float32")
    x = np.repeat(rows, 10, axis=2)  # (1, 6, 10, C): constant along each row
    attention = attention_map(CoordAttention(), x)
    # Constant along the width ...
    np.testing.assert_allclose(attention, attention[:, :, :1, :].repeat(10, axis=2), rtol=1e-5)
    # ... and not constant along the height: the rows really were told apart.
    assert np.abs(attention - attention.mean(axis=1, keepdims=True)).max() > 1e-3


def test_coord_attention_column_pattern_gives_column_attention():
    rng = np.random.default_rng(1)
    cols = rng.uniform(1, 3, size=(1, 1, 10, CHANNELS)).astype("float32")
    x = np.repeat(cols, 6, axis=1)  # (1, 6, 10, C): constant along each column
    attention = attention_map(CoordAttention(), x)
    np.testing.assert_allclose(attention, attention[:, :1].repeat(6, axis=1), rtol=1e-5)
    assert np.abs(attention - attention.mean(axis=2, keepdims=True)).max() > 1e-3


def test_coord_attention_uses_mean_pooling_and_papers_width():
    layer = CoordAttention()
    layer.build((None, None, None, 512))
    assert layer.conv_shared.filters == 512 // 32  # max(8, C / 32)
    small = CoordAttention()
    small.build((None, None, None, 64))
    assert small.conv_shared.filters == 8
    # Mean, not max: scaling one pixel of a row up moves a_h by its mean, so a pattern whose row
    # maxima are equal but whose means differ must still be told apart.
    x = np.ones((1, 4, 8, 64), "float32")
    x[0, 0, 0] = 5.0  # row 0: one big pixel
    x[0, 1, :] = 5.0 / 8 + 7.0 / 8  # row 1: the same mean as row 0, smaller max
    weights = attention_map(layer_for(x), x)
    np.testing.assert_allclose(weights[0, 0, 1:], weights[0, 1, 1:], rtol=1e-5)


def layer_for(x):
    layer = CoordAttention()
    layer(x)
    return layer


@pytest.mark.parametrize("channels, kernel", [(128, 5), (256, 5), (512, 5), (64, 3), (16, 3)])
def test_eca_kernel_size(channels, kernel):
    assert eca_kernel_size(channels) == kernel
    layer = ECABlock()
    layer.build((None, None, None, channels))
    assert tuple(layer.conv.kernel.shape) == (kernel, 1, 1)
    assert not layer.conv.use_bias


def test_se_and_cbam_use_the_papers_reduction():
    se, cbam = SEBlock(), CBAMBlock()
    se.build((None, None, None, 256))
    cbam.build((None, None, None, 256))
    assert se.squeeze.units == 16 and cbam.mlp_hidden.units == 16
    assert tuple(cbam.spatial_conv.kernel.shape) == (7, 7, 2, 1)


def test_cbam_spatial_attention_is_shared_across_channels():
    x = sample((1, 6, 10, CHANNELS)) + 3.0
    layer = CBAMBlock()
    layer(x)
    # With the channel MLP zeroed, channel attention is sigmoid(0 + 0) = 0.5 everywhere, so what
    # is left is the spatial map: one value per pixel, the same for every channel.
    for weight in layer.mlp_out.weights:
        weight.assign(np.zeros(weight.shape))
    attention = attention_map(layer, x) / 0.5
    np.testing.assert_allclose(attention, attention[..., :1].repeat(CHANNELS, axis=-1), rtol=1e-5)


def test_registry_and_phi_mapping():
    assert PHI_TO_ATTENTION == ("none", "se", "cbam", "eca", "ca", "sa")
    assert set(PHI_TO_ATTENTION) == BUILTIN_NAMES <= set(ATTENTION_BLOCKS)  # user blocks may be registered too
    assert [resolve_attention(phi=i) for i in range(6)] == list(PHI_TO_ATTENTION)
    assert resolve_attention(attention="CA") == "ca"
    assert resolve_attention() == "none"
    assert make_attention("none") is None
    assert isinstance(make_attention("eca", name="x"), ECABlock)


@pytest.mark.parametrize("kwargs, message", [
    ({"phi": 6}, "phi must be one of"),
    ({"attention": "transformer"}, "expected one of"),
    ({"phi": 1, "attention": "ca"}, "means 'se'"),
])
def test_registry_rejects_unknown_choices(kwargs, message):
    with pytest.raises(ValueError, match=message):
        resolve_attention(**kwargs)


def test_blocks_are_registered_for_safe_loading():
    for block in BLOCKS:
        assert keras.saving.get_registered_object(keras.saving.get_registered_name(block)) is block


@pytest.mark.parametrize("block", GATED, ids=lambda b: b.__name__)
class TestIdentityInit:
    def test_starts_as_the_identity(self, block):
        x = sample()
        layer = block(identity_init=True)
        np.testing.assert_array_equal(np.asarray(layer(x)), x)  # every factor is exactly 2 * sigmoid(0) = 1
        for what, weights in layer.attention_weights(x).items():
            np.testing.assert_array_equal(np.asarray(weights), np.ones(weights.shape), err_msg=what)

    def test_config_round_trip_and_save_load(self, block, tmp_path):
        layer = block(identity_init=True)
        assert layer.get_config()["identity_init"] is True
        assert "identity_init" not in block().get_config()  # configs of the blocks saved before stay as they were
        check_config_round_trip(layer, sample())
        check_save_load(block(identity_init=True), sample(), tmp_path)

    def test_one_step_leaves_the_identity(self, block):
        # The zeroed gate layer gets a gradient at once: after one step the block is no longer the identity.
        import tensorflow as tf

        keras.utils.set_random_seed(0)
        x = sample()
        layer = block(identity_init=True)
        layer(x)
        target = tf.random.stateless_normal(x.shape, seed=(1, 2))
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.square(layer(x, training=True) - target))
        grads = tape.gradient(loss, layer.trainable_weights)
        keras.optimizers.SGD(1.0).apply_gradients(zip(grads, layer.trainable_weights))
        assert np.abs(np.asarray(layer(x)) - x).max() > 1e-4

    def test_without_the_flag_the_block_is_unchanged(self, block):
        # The same draws give the same block as before identity_init existed: sigmoid gates in (0, 1).
        x = sample()
        keras.utils.set_random_seed(3)
        layer = block()
        out = np.asarray(layer(x))
        assert not np.allclose(out, x)
        for weights in layer.attention_weights(x).values():
            assert 0 < float(np.min(weights)) and float(np.max(weights)) < 1


def test_which_blocks_take_identity_init():
    assert [name for name in PHI_TO_ATTENTION[1:] if accepts_identity_init(name)] == ["se", "cbam", "eca", "ca"]
    assert isinstance(make_attention("se", identity_init=True), SEBlock)
    assert make_attention("se", identity_init=True).identity_init
    assert isinstance(make_attention("sa", identity_init=True), SelfAttention)  # always starts as the identity


def _positions(x, order):
    """x (N, H, W, C) with its H * W positions reordered by `order` (row-major), same shape."""
    n, h, w, c = x.shape
    return x.reshape(n, h * w, c)[:, order].reshape(n, h, w, c)


def _self_attention(x, gamma=0.7):
    keras.utils.set_random_seed(0)
    layer = SelfAttention()
    layer(x)
    layer.gamma.assign(gamma)
    return layer


def test_self_attention_starts_as_the_identity_with_gamma_zero():
    x = sample((2, 5, 7, CHANNELS))
    layer = SelfAttention()
    np.testing.assert_array_equal(np.asarray(layer(x)), x)
    assert float(layer.gamma.numpy()) == 0.0
    layer.gamma.assign(0.5)
    assert np.abs(np.asarray(layer(x)) - x).max() > 1e-3


def test_self_attention_at_gamma_zero_learns_gamma_first():
    x = sample()
    layer = SelfAttention()
    layer(x)
    check_gradient_step_of(layer, x, ["gamma"])


def check_gradient_step_of(layer, x, names):
    import tensorflow as tf

    target = tf.random.stateless_normal(x.shape, seed=(1, 2))
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(tf.square(layer(x, training=True) - target))
    grads = tape.gradient(loss, layer.trainable_weights)
    moving = {w.name for w, g in zip(layer.trainable_weights, grads) if g is not None and np.abs(g).max() > 0}
    assert moving == set(names)


def test_self_attention_permuting_positions_permutes_its_output():
    # 1x1 convolutions and a softmax over all positions: no position is special.
    x = sample((1, 5, 7, CHANNELS))
    layer = _self_attention(x)
    order = np.random.default_rng(1).permutation(5 * 7)
    np.testing.assert_allclose(
        np.asarray(layer(_positions(x, order))), _positions(np.asarray(layer(x)), order), rtol=1e-4, atol=1e-5
    )


def test_self_attention_rows_are_softmaxes_and_reach_every_position():
    x = sample((2, 4, 6, CHANNELS))
    layer = _self_attention(x)
    beta = np.asarray(layer.attention_weights(x)["attention"])
    assert beta.shape == (2, 24, 24)
    np.testing.assert_allclose(beta.sum(axis=-1), 1.0, rtol=1e-5)
    # A change at one position moves the output at every other position (global context).
    changed = x.copy()
    changed[:, 0, 0] += 5.0
    moved = np.abs(np.asarray(layer(changed)) - np.asarray(layer(x))).max(axis=-1)  # (N, H, W)
    assert moved.min() > 0


def test_self_attention_uses_sagans_widths():
    layer = SelfAttention()
    layer.build((None, None, None, 512))
    assert layer.query.filters == layer.key.filters == layer.value.filters == 64 and layer.out.filters == 512
    assert sum(int(np.prod(w.shape)) for w in layer.weights) == 4 * 512 * 64 + 2 * 64 + 512 + 1  # no key bias
