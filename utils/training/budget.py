"""--time: fit the number of epochs to a wall-clock budget for the whole run.

The budget counts from the start of `Trainer.run()` (set-up included). After each epoch the
trainer reports how long it took, without its val mAP evaluation, and how long the evaluation took
when there was one; `TimeBudget.refit` then fits the number of epochs:

    the most epochs E such that  elapsed + (E - done) * epoch_s + evaluations(done, E) * eval_s <= budget

where `epoch_s` is the mean time of the epochs measured and `eval_s` that of the evaluations,
each leaving out the first of each process once a later one was measured (it includes tracing
the steps or the detector), and `evaluations(done, E)` the evaluations of epochs done+1 .. E
(every --eval-period epochs, and the last one). With --time the first epoch is evaluated, so
its cost is known from the start.

The count is fixed after the second epoch of the run (the first steady measurement), or after
the first when no second epoch fits. From then on it only goes down: when later epochs turn out
slower, the count shrinks so the run still ends in time; a faster epoch never lengthens the run.
So the run ends at most one epoch (and its evaluation) past the budget, and only when an epoch
was slower than all before it. The trainer rebuilds the learning-rate schedule for the fitted
count whenever it changes; the resume state (`state()`) keeps the count and the measurements.

Everything here is a pure function of the measurements; the clock is injected (tests use fake ones).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable


def evaluations_between(epochs_done: int, epochs: int, eval_period: int) -> int:
    """How many of epochs epochs_done+1 .. epochs (1-based) are evaluated: every `eval_period`-th
    and the last (none when eval_period is 0)."""
    if eval_period <= 0 or epochs <= epochs_done:
        return 0
    periodic = epochs // eval_period - epochs_done // eval_period
    return periodic + (0 if epochs % eval_period == 0 else 1)


def fit_epochs(remaining_s: float, epochs_done: int, epoch_s: float, eval_s: float, eval_period: int) -> int:
    """The most epochs E >= epochs_done whose epochs after `epochs_done` fit in `remaining_s`:
    (E - epochs_done) * epoch_s + evaluations_between(epochs_done, E, eval_period) * eval_s <= remaining_s.

    Args:
        remaining_s: seconds left of the budget (may be negative: then E = epochs_done).
        epochs_done: epochs finished.
        epoch_s: seconds per epoch without the evaluation (> 0).
        eval_s: seconds per val mAP evaluation (>= 0).
        eval_period: --eval-period (0: no evaluation).
    """
    if not epoch_s > 0 or not eval_s >= 0:
        raise ValueError(f"epoch time must be > 0 and evaluation time >= 0, got {epoch_s}, {eval_s}")

    def cost(epochs: int) -> float:
        return (epochs - epochs_done) * epoch_s + evaluations_between(epochs_done, epochs, eval_period) * eval_s

    if remaining_s <= 0:
        return epochs_done
    low, high = epochs_done, epochs_done + math.floor(remaining_s / epoch_s) + 1  # cost(high) > remaining_s
    while high - low > 1:  # cost(low) <= remaining_s < cost(high); cost grows with the epochs
        middle = (low + high) // 2
        low, high = (middle, high) if cost(middle) <= remaining_s else (low, middle)
    return low


class TimeBudget:
    """The measurements and the fitted epoch count of a --time run (see the module docstring).

    Args:
        seconds: the budget.
        clock: returns seconds (time.monotonic by default; tests pass a fake clock).
    """

    def __init__(self, seconds: float, clock: Callable[[], float] = time.monotonic):
        if not seconds > 0:
            raise ValueError(f"the time budget must be > 0 seconds, got {seconds}")
        self.seconds = float(seconds)
        self.clock = clock
        self.fitted: int | None = None  # None until the count is fixed
        self.used = 0.0  # seconds used by the processes before this one (a resumed run)
        self.steady_epochs: list[float] = []  # epochs after the first of their process, without evaluation
        self.first_epochs: list[float] = []  # the first epoch of each process (tracing included)
        self.steady_evaluations: list[float] = []  # likewise the val mAP evaluations
        self.first_evaluations: list[float] = []
        self._started = clock()
        self._process_epochs = self._process_evaluations = 0

    def start(self) -> None:
        """Start counting this process's time (at the start of the run)."""
        self._started = self.clock()
        self._process_epochs = self._process_evaluations = 0

    @property
    def evaluations(self) -> list[float]:
        """Every evaluation time measured."""
        return self.first_evaluations + self.steady_evaluations

    def elapsed(self) -> float:
        """Seconds of the budget used so far."""
        return self.used + self.clock() - self._started

    def add_epoch(self, seconds: float, eval_seconds: float | None = None) -> None:
        """Record an epoch: its time without the val mAP evaluation, and the evaluation's time if it had one."""
        (self.steady_epochs if self._process_epochs else self.first_epochs).append(float(seconds))
        self._process_epochs += 1
        if eval_seconds is not None:
            kept = self.steady_evaluations if self._process_evaluations else self.first_evaluations
            kept.append(float(eval_seconds))
            self._process_evaluations += 1

    def estimates(self) -> tuple[float, float]:
        """(seconds per epoch without evaluation, seconds per evaluation) from what was measured."""
        epochs = self.steady_epochs or self.first_epochs
        if not epochs:
            raise ValueError("no epoch measured yet")
        evaluations = self.steady_evaluations or self.first_evaluations
        mean_eval = sum(evaluations) / len(evaluations) if evaluations else 0.0
        return max(sum(epochs) / len(epochs), 1e-9), mean_eval

    def refit(self, epochs_done: int, eval_period: int) -> int | None:
        """Fit the epoch count after `epochs_done` epochs (call after add_epoch). Returns the count,
        or None while it is not fixed yet (after the first epoch, when a second one fits)."""
        epoch_s, eval_s = self.estimates()
        candidate = max(1, fit_epochs(self.seconds - self.elapsed(), epochs_done, epoch_s, eval_s, eval_period))
        if self.fitted is not None:
            self.fitted = min(self.fitted, candidate)
        elif self.steady_epochs or candidate <= epochs_done:
            self.fitted = candidate
        return self.fitted

    def state(self) -> dict:
        """What a resumed run needs (JSON): the count, the time used, the measurements."""
        return {
            "seconds": self.seconds,
            "fitted": self.fitted,
            "used": self.elapsed(),
            "steady_epochs": list(self.steady_epochs),
            "first_epochs": list(self.first_epochs),
            "steady_evaluations": list(self.steady_evaluations),
            "first_evaluations": list(self.first_evaluations),
        }

    def restore(self, state: dict) -> None:
        """Continue the run `state` describes (its budget may have been given again with another
        --time: the new budget counts, the time already used stays used)."""
        self.fitted = state["fitted"]
        self.used = float(state["used"])
        self.steady_epochs = [float(s) for s in state["steady_epochs"]]
        self.first_epochs = [float(s) for s in state["first_epochs"]]
        self.steady_evaluations = [float(s) for s in state["steady_evaluations"]]
        self.first_evaluations = [float(s) for s in state["first_evaluations"]]
