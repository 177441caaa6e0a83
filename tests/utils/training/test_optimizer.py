"""Weight decay: coupled L2 through SGD's momentum by default, decoupled (AdamW) for Adam; kernels only."""

import keras
import numpy as np
import pytest

from nets.attention import CoordAttention
from utils.training.optimizer import is_decayed, make_optimizer


def _model():
    """Convolution kernels and biases, batch-norm scales and offsets, and a nested batch norm (CA's)."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(8, 3, padding="same", name="conv_a")(inputs)
    x = keras.layers.BatchNormalization(name="bn_a")(x)
    x = CoordAttention(name="ca")(x)
    outputs = keras.layers.Conv2D(2, 1, name="head")(x)
    return keras.Model(inputs, outputs)


def _zero_step(optimizer, variables):
    optimizer.apply_gradients([(np.zeros(v.shape, np.float32), v) for v in variables])


def test_every_replica_copy_of_a_kernel_decays():
    """Under MirroredStrategy the update step sees each replica's copy: "conv/kernel/replica_1:0"
    is a kernel too, or the replicas' weights drift apart."""
    from types import SimpleNamespace

    names = ["conv/kernel:0", "conv/kernel/replica_1:0", "ca/conv_h/kernel/replica_3:0", "kernel"]
    assert all(is_decayed(SimpleNamespace(name=name)) for name in names)
    names = ["bn/gamma/replica_1:0", "conv/bias/replica_1:0", "bn/beta:0", "replica_1"]
    assert not any(is_decayed(SimpleNamespace(name=name)) for name in names)


def test_coupled_l2_goes_through_the_momentum_and_spares_bn_and_biases():
    """Two steps with a zero loss gradient: the gradient is l2 * w, so Nesterov SGD moves a kernel
    by -(1 + m) * lr * l2 * w on the first step and carries the velocity into the second;
    batch-norm gammas and betas (CA's nested one too) and biases do not move."""
    lr, l2, m = 0.5, 0.1, 0.9
    model = _model()
    variables = model.trainable_variables
    optimizer = make_optimizer("sgd", lr, m, l2, "coupled")
    optimizer.build(variables)
    before = [v.numpy() for v in variables]
    _zero_step(optimizer, variables)
    middle = [v.numpy() for v in variables]
    _zero_step(optimizer, variables)
    kinds = set()
    for variable, w0, w1 in zip(variables, before, middle, strict=True):
        kinds.add(variable.name)
        if variable.name != "kernel":
            np.testing.assert_array_equal(variable.numpy(), w0, err_msg=variable.path)
            continue
        velocity = -lr * l2 * w0  # first step: v = m * 0 - lr * g
        np.testing.assert_allclose(w1, w0 + m * velocity - lr * l2 * w0, rtol=1e-5, err_msg=variable.path)
        velocity2 = m * velocity - lr * l2 * w1
        np.testing.assert_allclose(variable.numpy(), w1 + m * velocity2 - lr * l2 * w1, rtol=1e-5)
    assert kinds == {"kernel", "bias", "gamma", "beta"}
    assert {v.path for v in variables if not is_decayed(v)} >= {"ca/bn1/gamma", "ca/bn1/beta", "head/bias"}


def test_steady_state_coupled_decay_is_1_over_1_minus_m_times_the_decoupled_one():
    """The issue's 16x: with momentum 0.937, coupled L2 shrinks a kernel by about lr * wd / (1 - m)
    per step once the velocity has built up (16.2x lr * wd here, where the kernel also shrinks
    while it builds); decoupled decay by lr * wd, whatever the momentum."""
    lr, wd, m = 0.1, 1e-3, 0.937
    rates = {}
    for mode in ("coupled", "decoupled"):
        kernel = keras.Variable(np.ones((1, 1, 1, 1), np.float32), name="kernel")
        optimizer = make_optimizer("sgd", lr, m, wd, mode)
        optimizer.build([kernel])
        for _ in range(300):
            _zero_step(optimizer, [kernel])
        before = float(kernel.numpy().ravel()[0])
        for _ in range(100):
            _zero_step(optimizer, [kernel])
        rates[mode] = 1 - (float(kernel.numpy().ravel()[0]) / before) ** (1 / 100)
    assert rates["decoupled"] == pytest.approx(lr * wd, rel=1e-3)
    assert rates["coupled"] / rates["decoupled"] == pytest.approx(1 / (1 - m), rel=0.05)


def test_decoupled_adam_multiplies_kernels_by_1_minus_lr_wd():
    lr, wd = 0.5, 0.1
    model = _model()
    variables = model.trainable_variables
    optimizer = make_optimizer("adam", lr, 0.9, wd, "decoupled")
    optimizer.build(variables)
    before = [v.numpy() for v in variables]
    _zero_step(optimizer, variables)
    for variable, old in zip(variables, before, strict=True):
        expected = old * (1 - lr * wd) if variable.name == "kernel" else old
        np.testing.assert_allclose(variable.numpy(), expected, rtol=1e-6, err_msg=variable.path)
    with pytest.raises(ValueError, match="coupled"):
        make_optimizer("sgd", lr, 0.9, wd, "l2")
