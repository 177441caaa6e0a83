"""--time's arithmetic (utils/training/budget.py) on fake clocks; the trainer's use of it is in test_trainer.py."""

import itertools
import math

import pytest

from utils.training.budget import MIN_LAST_EPOCH, TimeBudget, evaluations_between, fit_epochs


class FakeClock:
    def __init__(self, now=0.0):
        self.now = now

    def __call__(self):
        return self.now


def test_evaluations_between_counts_the_periodic_epochs_and_the_last():
    assert evaluations_between(2, 12, 3) == 4  # 3, 6, 9, 12 (the last is periodic)
    assert evaluations_between(2, 13, 3) == 5  # 3, 6, 9, 12 and the last, 13
    assert evaluations_between(3, 4, 3) == 1  # only the last
    assert evaluations_between(5, 5, 3) == 0  # no epoch left
    assert evaluations_between(0, 10, 0) == 0  # --eval-period 0


def test_fit_epochs_ends_on_the_budget_with_a_share_of_the_last_epoch():
    # 240 s left after 2 epochs, 20 s an epoch, 10 s an evaluation every 3: exactly 10 more epochs
    # (200 s) and 4 evaluations (3, 6, 9, 12).
    assert fit_epochs(240, 2, 20.0, 10.0, 3) == 12
    # 10 s less: the 12th epoch trains half its steps (9 * 20 + 10 + 4 * 10 = 230).
    assert fit_epochs(230, 2, 20.0, 10.0, 3) == pytest.approx(11.5)
    # 5 s an epoch of fixed costs (val loss, saves) on top: 10 epochs cost 50 of them.
    assert fit_epochs(290, 2, 20.0, 10.0, 3, fixed_s=5.0) == 12
    assert fit_epochs(10, 4, 20.0, 0.0, 0) == 4.5  # half an epoch
    assert fit_epochs(3, 4, 20.0, 0.0, 0) == 4  # 0.15 of an epoch (< MIN_LAST_EPOCH): not worth its tail
    assert fit_epochs(-5, 4, 20.0, 0.0, 0) == 4
    with pytest.raises(ValueError):
        fit_epochs(100, 1, 0.0, 1.0, 1)


def test_fit_epochs_is_the_longest_run_that_fits():
    """Brute force: the planned run's cost is within the time left, and no longer run (a further
    share of an epoch, or one more epoch of at least MIN_LAST_EPOCH) fits."""

    def cost(end, done, train_s, eval_s, period, fixed_s):
        count = math.ceil(end - done - 1e-9)
        return (end - done) * train_s + count * fixed_s + evaluations_between(done, done + count, period) * eval_s

    for remaining, done, train_s, eval_s, period, fixed_s in itertools.product(
        (0.0, 33.0, 100.0, 451.5), (0, 1, 7), (3.0, 7.5), (0.0, 2.0, 9.0), (0, 1, 4), (0.0, 1.5)
    ):
        end = fit_epochs(remaining, done, train_s, eval_s, period, fixed_s)
        args = (done, train_s, eval_s, period, fixed_s)
        assert end >= done and cost(end, *args) <= remaining + 1e-6
        if end > done:  # the last epoch is at least MIN_LAST_EPOCH of one
            assert end - math.floor(end - 1e-9) >= MIN_LAST_EPOCH - 1e-9 or end == math.floor(end)
        longer = [math.floor(end + 1e-9) + MIN_LAST_EPOCH + k for k in range(0, 3)]
        longer += [end + 0.01] if end != math.floor(end) else []
        assert all(cost(e, *args) > remaining for e in longer if e > end), (remaining, args, end)


def _budget(seconds, clock):
    budget = TimeBudget(seconds, clock)
    budget.start()
    return budget


def test_the_plan_goes_up_and_down_with_the_measured_times():
    clock = FakeClock()
    budget = _budget(300, clock)
    clock.now = 40.0  # epoch 1: 30 s of steps (tracing included) + a 10 s evaluation
    budget.add("train", 30.0)
    budget.add("eval", 10.0)
    # 260 s left: 7 whole epochs at 30 s and 2/3 of an 8th, with evaluations after 3, 6 and 9.
    assert budget.refit(1, 3) == pytest.approx(8 + 2 / 3)
    clock.now = 60.0
    budget.add("train", 20.0)  # steady: faster than the first, so the plan grows
    assert budget.estimate("train") == 20.0 and budget.estimate("eval") == 10.0
    assert budget.refit(2, 3) == 12  # 60 + 10 * 20 + 4 * 10 = 300
    clock.now = 85.0
    budget.add("train", 20.0)
    budget.add("eval", 5.0)  # the first evaluation (tracing) is left out now
    assert budget.refit(3, 3) == pytest.approx(12.75)  # 85 + 9.75 * 20 + 4 * 5 (6, 9, 12, 13) = 300
    for now, seconds in ((125.0, 40.0), (165.0, 40.0), (205.0, 40.0)):  # slower epochs: it shrinks
        clock.now = now
        budget.add("train", seconds)
    assert budget.estimate("train") == 40.0  # the latest RECENT measurements
    assert budget.refit(6, 3) == pytest.approx(8.25)  # 205 + 2.25 * 40 + 5 (the 9th, last, evaluated) = 300
    clock.now = 210.0
    budget.add("overhead", 4.0)
    assert budget.estimate("overhead") == 4.0


def test_time_up_leaves_the_epochs_tail_its_time():
    clock = FakeClock()
    budget = _budget(100, clock)
    budget.add("val", 3.0)
    budget.add("eval", 5.0)
    budget.add("overhead", 2.0)
    clock.now = 89.0
    assert not budget.time_up()  # 89 + 10 < 100
    clock.now = 90.0
    assert budget.time_up() and not budget.time_up(evaluated=False)  # 95 without the evaluation


def test_state_restores_the_plan_the_time_used_and_the_measurements():
    clock = FakeClock(1000.0)
    budget = _budget(300, clock)
    for seconds in (30.0, 20.0, 20.0):
        clock.now += seconds
        budget.add("train", seconds)
        budget.refit(len(budget.first["train"]) + len(budget.steady["train"]), 0)
    state = budget.state()
    assert state["fitted"] == pytest.approx(14.5) and state["used"] == 70.0  # 70 + 11.5 * 20 = 300

    later = FakeClock(5.0)  # another process: its clock starts anywhere
    resumed = _budget(300, later)
    resumed.restore(state)
    assert resumed.fitted == pytest.approx(14.5) and resumed.elapsed() == 70.0
    later.now += 45.0  # the resumed process's first epoch (tracing): kept apart from the steady ones
    resumed.add("train", 45.0)
    assert resumed.estimate("train") == 20.0 and resumed.first["train"] == [30.0, 45.0]
    assert resumed.refit(4, 0) == pytest.approx(13.25)  # 115 + 9.25 * 20 = 300


def test_a_state_from_before_the_parts_keeps_its_time_and_measures_again():
    old = {"seconds": 300.0, "fitted": 12, "used": 80.0, "steady_epochs": [20.0], "first_epochs": [30.0],
           "steady_evaluations": [], "first_evaluations": [10.0]}  # fmt: skip
    budget = _budget(300, FakeClock())
    budget.restore(old)
    assert budget.elapsed() == 80.0 and budget.fitted is None and budget.evaluations == []
