import math

import pytest

from utils.training.lr_schedule import LR_LIMITS, LRSchedule, scaled_lr


def test_scaled_lr_follows_batch_size_within_limits():
    assert scaled_lr(1e-2, 64, "sgd") == pytest.approx(1e-2)
    assert scaled_lr(1e-2, 16, "sgd") == pytest.approx(2.5e-3)
    assert scaled_lr(1e-2, 1, "sgd") == LR_LIMITS["sgd"][0]
    assert scaled_lr(1e-2, 1024, "sgd") == LR_LIMITS["sgd"][1]
    assert scaled_lr(1e-3, 128, "adam") == LR_LIMITS["adam"][1]


def test_cosine_with_warmup():
    schedule = LRSchedule(max_lr=1.0, min_lr=0.01, total_epochs=10, decay="cos", warmup_epochs=2)
    assert schedule(0) == pytest.approx(0.1)  # warm-up starts at 10 %
    assert schedule(1) == pytest.approx(0.1 + 0.9 * 0.25)  # quadratic
    assert schedule(2) == pytest.approx(1.0)
    assert schedule(6) == pytest.approx(0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert schedule(10) == pytest.approx(0.01)
    values = [schedule(e / 4) for e in range(8, 40)]
    assert all(a >= b for a, b in zip(values, values[1:], strict=False))


def test_step_decay_reaches_min_lr():
    schedule = LRSchedule(max_lr=1.0, min_lr=0.001, total_epochs=10, decay="step", step_count=4)
    assert schedule(0) == pytest.approx(1.0)
    assert schedule(2.6) == pytest.approx(0.1)
    assert schedule(9.99) == pytest.approx(0.001)


def test_unknown_decay_is_rejected():
    with pytest.raises(ValueError, match="cos"):
        LRSchedule(1.0, 0.1, 10, decay="linear")
