"""--time: fit the training to a wall-clock budget for the whole run, and end on it.

The budget counts from the start of `Trainer.run()` (set-up included). The trainer times four
parts of each epoch on its clock and reports them here (`TimeBudget.add`):

    "train"     the training steps (of a whole epoch: a shortened one is scaled up)
    "val"       the val loss
    "eval"      the val mAP evaluation, in the epochs that have one
    "overhead"  what the callbacks do after it (checkpoint, weights, results.csv, plots)

Each part's estimate is the mean of its latest `RECENT` measurements, leaving out the first of
each process once a later one was measured (it includes tracing the steps or the detector). After every epoch,
`refit` plans where the run ends, as a fractional epoch count E:

    the largest E such that, with N = ceil(E - done) epochs still to start,
        (E - done) * train + N * (val + overhead) + evaluations(done, done + N) * eval  <=  time left

where `evaluations` counts the epochs evaluated (every --eval-period-th and the last), and the last
epoch may be a share of one (at least `MIN_LAST_EPOCH`), so the training ends on the budget rather
than up to an epoch before it. The plan goes up as well as down: a run whose later epochs are
faster than its first (tracing, a cold cache) gets more epochs. The trainer fits the learning-rate
schedule to E each time, so the rate at any point is that of a schedule over the whole run as now
planned (a fractional count is a schedule of that length), and the run anneals to its final rate at
its end whatever the count turned out to be.

Within an epoch the trainer stops the steps early when the time left is what the epoch's val loss,
evaluation and saves are estimated to take (`time_up`): an epoch slower than planned cuts itself
short and becomes the last, so a run ends within its budget up to the error of those estimates.

Everything here is a pure function of the measurements; the clock is injected (tests use fake ones).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

PARTS = ("train", "val", "eval", "overhead")
# The shortest last epoch worth its val loss, evaluation and saves: a share of an epoch's steps.
MIN_LAST_EPOCH = 0.2
# Estimates are the mean of this many latest measurements of a part.
RECENT = 3


def evaluations_between(epochs_done: int, epochs: int, eval_period: int) -> int:
    """How many of epochs epochs_done+1 .. epochs (1-based) are evaluated: every `eval_period`-th
    and the last (none when eval_period is 0)."""
    if eval_period <= 0 or epochs <= epochs_done:
        return 0
    periodic = epochs // eval_period - epochs_done // eval_period
    return periodic + (0 if epochs % eval_period == 0 else 1)


def fit_epochs(
    remaining_s: float,
    epochs_done: int,
    train_s: float,
    eval_s: float,
    eval_period: int,
    fixed_s: float = 0.0,
    min_last: float = MIN_LAST_EPOCH,
) -> float:
    """Where a run that has `remaining_s` left after `epochs_done` epochs should end: the largest
    fractional epoch count E >= epochs_done that fits (see the module docstring), or epochs_done
    when not even `min_last` of an epoch does.

    Args:
        remaining_s: seconds left of the budget (may be negative).
        epochs_done: epochs finished.
        train_s: seconds of training steps per whole epoch (> 0).
        eval_s: seconds per val mAP evaluation (>= 0).
        eval_period: --eval-period (0: no evaluation).
        fixed_s: seconds every epoch costs whatever its length: val loss and saves (>= 0).
        min_last: the shortest last epoch, as a share of one.
    """
    if not train_s > 0 or not eval_s >= 0 or not fixed_s >= 0:
        raise ValueError(f"epoch times must be > 0 (train) and >= 0 (the rest), got {train_s}, {eval_s}, {fixed_s}")
    best = float(epochs_done)
    # N epochs still to start: the training time left after their fixed costs must hold N - 1 whole
    # epochs and at least min_last of the N-th. That room shrinks and the need grows with N.
    for count in range(1, math.floor(max(remaining_s, 0.0) / train_s) + 2):
        fixed = count * fixed_s + evaluations_between(epochs_done, epochs_done + count, eval_period) * eval_s
        room = (remaining_s - fixed) / train_s
        if room < count - 1 + min_last:
            break
        best = epochs_done + min(room, float(count))
    return best


class TimeBudget:
    """The measurements and the planned end of a --time run (see the module docstring).

    Args:
        seconds: the budget.
        clock: returns seconds (time.monotonic by default; tests pass a fake clock).
    """

    def __init__(self, seconds: float, clock: Callable[[], float] = time.monotonic):
        if not seconds > 0:
            raise ValueError(f"the time budget must be > 0 seconds, got {seconds}")
        self.seconds = float(seconds)
        self.clock = clock
        self.fitted: float | None = None  # the planned end, a fractional epoch count; None until fitted
        self.used = 0.0  # seconds used by the processes before this one (a resumed run)
        # Per part: the first measurement of each process (tracing included), and the later ones.
        self.first: dict[str, list[float]] = {part: [] for part in PARTS}
        self.steady: dict[str, list[float]] = {part: [] for part in PARTS}
        self._started = clock()
        self._in_process = dict.fromkeys(PARTS, 0)

    def start(self) -> None:
        """Start counting this process's time (at the start of the run)."""
        self._started = self.clock()
        self._in_process = dict.fromkeys(PARTS, 0)

    def elapsed(self) -> float:
        """Seconds of the budget used so far."""
        return self.used + self.clock() - self._started

    def add(self, part: str, seconds: float) -> None:
        """Record one measurement of `part` (one of PARTS): "train" of a whole epoch."""
        (self.steady if self._in_process[part] else self.first)[part].append(float(seconds))
        self._in_process[part] += 1

    def estimate(self, part: str) -> float:
        """Seconds of `part`: the mean of its last RECENT steady measurements (an epoch's speed
        shifts when mosaic ends or a phase changes), else of its first ones, else 0."""
        values = self.steady[part][-RECENT:] or self.first[part]
        return sum(values) / len(values) if values else 0.0

    @property
    def evaluations(self) -> list[float]:
        """Every evaluation time measured."""
        return self.first["eval"] + self.steady["eval"]

    def refit(self, epochs_done: int, eval_period: int) -> float:
        """Plan the end after `epochs_done` epochs (call after adding their times): the fractional
        epoch count (see fit_epochs), at least epochs_done, and at least 1."""
        if not (self.steady["train"] or self.first["train"]):
            raise ValueError("no epoch measured yet")
        train_s = max(self.estimate("train"), 1e-9)
        fixed_s = self.estimate("val") + self.estimate("overhead")
        remaining = self.seconds - self.elapsed()
        planned = fit_epochs(remaining, epochs_done, train_s, self.estimate("eval"), eval_period, fixed_s)
        self.fitted = max(planned, 1.0)
        return self.fitted

    def time_up(self, evaluated: bool = True) -> bool:
        """Whether the training steps must stop now for the epoch's val loss, its evaluation (when
        `evaluated`) and its saves to end within the budget."""
        reserve = self.estimate("val") + self.estimate("overhead") + (self.estimate("eval") if evaluated else 0.0)
        return self.elapsed() + reserve >= self.seconds

    def state(self) -> dict:
        """What a resumed run needs (JSON): the plan, the time used, the measurements."""
        return {
            "seconds": self.seconds,
            "fitted": self.fitted,
            "used": self.elapsed(),
            "first": {part: list(values) for part, values in self.first.items()},
            "steady": {part: list(values) for part, values in self.steady.items()},
        }

    def restore(self, state: dict) -> None:
        """Continue the run `state` describes (its budget may have been given again with another
        --time: the new budget counts, the time already used stays used). A state from before the
        parts were measured apart keeps its time used and measures again."""
        self.used = float(state["used"])
        if "first" not in state:
            return
        self.fitted = None if state["fitted"] is None else float(state["fitted"])
        self.first = {part: [float(s) for s in state["first"].get(part, [])] for part in PARTS}
        self.steady = {part: [float(s) for s in state["steady"].get(part, [])] for part in PARTS}
