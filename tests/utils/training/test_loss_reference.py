"""The keras.ops loss equals the TensorFlow loss it replaced (commit 05a9ef9) on fixed batches, to
1e-5: values, per-head sums and gradients (tests/fixtures/loss_reference.npz; loss_reference.py), on
TensorFlow, JAX and torch."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from tests.utils.training.loss_reference import CASES, batch, loss_options
from utils.training.loss import YoloLoss

ROOT = Path(__file__).resolve().parents[3]
REFERENCE = ROOT / "tests" / "fixtures" / "loss_reference.npz"


def _values(case: str) -> dict:
    """The loss's values for `case` on the fixed batch, named as in the reference file."""
    heads, gt = batch()
    fn = YoloLoss(**loss_options(case))
    heads = [tf.constant(h) for h in heads]
    with tf.GradientTape() as tape:
        tape.watch(heads)
        per_image, parts = fn(heads, tf.constant(gt))
        loss, batch_parts = fn.batch_loss(heads, tf.constant(gt), len(gt))
        objective = loss if case == "mean" else tf.reduce_sum(per_image)
    grads = tape.gradient(objective, heads)
    levels, _ = fn.level_sums(heads, tf.constant(gt))
    values = {"per_image": per_image, "batch_loss": loss, **parts}
    values.update({f"batch_{k}": v for k, v in batch_parts.items()})
    values.update({f"level{i}_{k}": v for i, sums in enumerate(levels) for k, v in sums.items()})
    values.update({f"grad{i}": g for i, g in enumerate(grads)})
    return {k: np.asarray(v) for k, v in values.items()}


@pytest.mark.parametrize("case", sorted(CASES))
def test_the_loss_is_todays_loss(case):
    reference = np.load(REFERENCE)
    got = _values(case)
    expected = {k.split("/", 1)[1]: reference[k] for k in reference.files if k.startswith(case + "/")}
    assert sorted(got) == sorted(expected)
    for name, value in expected.items():
        np.testing.assert_allclose(got[name], value, rtol=1e-5, atol=1e-5, err_msg=f"{case}: {name}")


JAX_CHECK = """
import numpy as np, jax
from tests.utils.training.loss_reference import batch, loss_options
from utils.training.loss import YoloLoss
reference = np.load("tests/fixtures/loss_reference.npz")
heads, gt = batch()
for case in ("neighbor_cells", "iou_target_smoothing", "mean"):  # between them, every branch of the loss
    fn = YoloLoss(**loss_options(case))
    per_image, parts = jax.jit(fn)(heads, gt)
    np.testing.assert_allclose(per_image, reference[case + "/per_image"], rtol=1e-5, atol=1e-5, err_msg=case)
    grad = jax.grad(lambda h: fn.batch_loss(h, gt, len(gt))[0])(heads)
    scale = 1.0 if case == "mean" else 1.0 / len(gt)
    for i, g in enumerate(grad):
        np.testing.assert_allclose(g, reference[f"{case}/grad{i}"] * scale, rtol=1e-4, atol=1e-6, err_msg=case)
print("ok")
"""


TORCH_CHECK = """
import numpy as np, torch
from tests.utils.training.loss_reference import batch, loss_options
from utils.training.loss import YoloLoss
reference = np.load("tests/fixtures/loss_reference.npz")
heads, gt = batch()
for case in ("neighbor_cells", "iou_target_smoothing", "mean"):
    fn = YoloLoss(**loss_options(case))
    inputs = [torch.tensor(h, requires_grad=True) for h in heads]
    per_image, parts = fn(inputs, torch.tensor(gt))
    np.testing.assert_allclose(per_image.detach().numpy(), reference[case + "/per_image"], rtol=1e-5, atol=1e-5)
    grad = torch.autograd.grad(fn.batch_loss(inputs, torch.tensor(gt), len(gt))[0], inputs)
    scale = 1.0 if case == "mean" else 1.0 / len(gt)
    for i, g in enumerate(grad):
        np.testing.assert_allclose(g.numpy(), reference[f"{case}/grad{i}"] * scale, rtol=1e-4, atol=1e-6, err_msg=case)
print("ok")
"""


@pytest.mark.slow
@pytest.mark.parametrize("backend, check", [("jax", JAX_CHECK), ("torch", TORCH_CHECK)])
def test_the_loss_on_another_backend_has_the_same_values_and_gradients(backend, check):
    """On JAX jitted, on torch through its autograd. A backend that is not installed is skipped."""
    pytest.importorskip(backend, reason=f"{backend} is not installed: Keras' {backend} backend is not checked")
    env = {**os.environ, "KERAS_BACKEND": backend, "JAX_PLATFORMS": "cpu"}
    done = subprocess.run(
        [sys.executable, "-c", check], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0 and done.stdout.strip().endswith("ok"), done.stderr[-3000:]
