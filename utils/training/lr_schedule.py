"""Learning rate: scaled by batch size, warm-up, then cosine or step decay (the YOLOX/bubbliiiing recipe).

The rate is a pure function of the (fractional) epoch, so resuming a run resumes its schedule.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

NOMINAL_BATCH_SIZE = 64
# Bounds on the batch-scaled initial rate, per optimizer (bubbliiiing's lr_limit_min / max).
LR_LIMITS = {"sgd": (5e-4, 5e-2), "adam": (3e-4, 1e-3)}
DEFAULT_LR = {"sgd": 1e-2, "adam": 1e-3}


def scaled_lr(lr: float, batch_size: int, optimizer: str, floor_ratio: float = 1.0) -> float:
    """`lr` times batch_size / NOMINAL_BATCH_SIZE, clamped to the optimizer's limits (times floor_ratio)."""
    low, high = LR_LIMITS[optimizer]
    return min(max(batch_size / NOMINAL_BATCH_SIZE * lr, low * floor_ratio), high * floor_ratio)


@dataclass(frozen=True)
class LRSchedule:
    """Warm-up then cosine or step decay over `total_epochs`.

    Args:
        max_lr: the rate after warm-up.
        min_lr: the final rate.
        total_epochs: length of the schedule.
        decay: "cos" or "step".
        warmup_epochs: quadratic warm-up from warmup_start_ratio * max_lr.
        flat_epochs: the last epochs held at min_lr ("cos" only, YOLOX's no-aug tail).
        step_count: number of steps of the "step" decay.
    """

    max_lr: float
    min_lr: float
    total_epochs: float
    decay: str = "cos"
    warmup_epochs: float = 1.0
    warmup_start_ratio: float = 0.1
    flat_epochs: float = 0.0
    step_count: int = 10

    def __post_init__(self):
        if self.decay not in ("cos", "step"):
            raise ValueError(f"lr decay must be 'cos' or 'step', got {self.decay!r}")

    def __call__(self, epoch: float) -> float:
        """The rate at fractional `epoch` (0 = start of training)."""
        warmup = min(self.warmup_epochs, self.total_epochs)
        if self.decay == "cos":
            start = max(self.warmup_start_ratio * self.max_lr, 1e-6)
            if epoch < warmup:
                return (self.max_lr - start) * (epoch / warmup) ** 2 + start
            span = self.total_epochs - warmup - self.flat_epochs
            if epoch >= self.total_epochs - self.flat_epochs or span <= 0:
                return self.min_lr
            progress = (epoch - warmup) / span
            return self.min_lr + 0.5 * (self.max_lr - self.min_lr) * (1.0 + math.cos(math.pi * progress))
        step_size = self.total_epochs / self.step_count
        rate = (self.min_lr / self.max_lr) ** (1 / (self.step_count - 1))
        return self.max_lr * rate ** min(int(epoch // step_size), self.step_count - 1)
