"""--time's arithmetic (utils/training/budget.py) on fake clocks; the trainer's use of it is in test_trainer.py."""

import itertools

import pytest

from utils.training.budget import TimeBudget, evaluations_between, fit_epochs


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


def test_fit_epochs_is_the_most_that_fits():
    # 240 s left after 2 epochs, 20 s an epoch, 10 s an evaluation every 3: 12 epochs cost 200 + 4 * 10.
    assert fit_epochs(240, 2, 20.0, 10.0, 3) == 12
    assert fit_epochs(239.9, 2, 20.0, 10.0, 3) == 11  # 180 + 4 * 10 (9, 11 the last) = 220
    assert fit_epochs(10, 4, 20.0, 0.0, 0) == 4  # not even one more
    assert fit_epochs(-5, 4, 20.0, 0.0, 0) == 4
    with pytest.raises(ValueError):
        fit_epochs(100, 1, 0.0, 1.0, 1)


def test_fit_epochs_agrees_with_counting_epoch_by_epoch():
    for remaining, done, epoch_s, eval_s, period in itertools.product(
        (0.0, 33.0, 100.0, 451.5), (0, 1, 7), (3.0, 7.5), (0.0, 2.0, 9.0), (0, 1, 4)
    ):
        epochs, spent = done, 0.0
        while True:  # add epochs one by one while the next fits (its evaluation, then a final one, included)
            nxt = epochs + 1
            cost = (nxt - done) * epoch_s + evaluations_between(done, nxt, period) * eval_s
            if cost > remaining:
                break
            epochs, spent = nxt, cost
        assert fit_epochs(remaining, done, epoch_s, eval_s, period) == epochs, (remaining, done, epoch_s, period)
        assert spent <= remaining


def test_the_count_is_fixed_on_the_second_epoch_then_only_goes_down():
    clock = FakeClock()
    budget = TimeBudget(300, clock)
    budget.start()
    clock.now = 40.0  # epoch 1: 30 s (tracing included) + a 10 s evaluation
    budget.add_epoch(30.0, 10.0)
    assert budget.refit(1, 3) is None  # 7 more epochs would fit on 30 s each: wait for a steady one
    clock.now = 60.0
    budget.add_epoch(20.0)
    assert budget.estimates() == (20.0, 10.0)  # the second epoch's time, not the first's
    assert budget.refit(2, 3) == 12  # 60 + 10 * 20 + 4 * 10 = 300
    clock.now = 85.0
    budget.add_epoch(20.0, 5.0)
    assert budget.estimates() == (20.0, 5.0)  # the first evaluation (tracing) left out too
    assert budget.refit(3, 3) == 12  # 13: 85 + 10 * 20 + 4 * 5 = 305
    clock.now = 95.0  # a fast epoch: 13 would fit (95 + 9 * 16.7 + 4 * 5 = 265), the count does not grow
    budget.add_epoch(10.0)
    assert budget.refit(4, 3) == 12
    clock.now = 175.0  # a slow one: it shrinks
    budget.add_epoch(80.0)
    assert budget.estimates() == (32.5, 5.0)
    assert budget.refit(5, 3) == 8  # 175 + 3 * 32.5 + 2 * 5 (6, and 8 the last) = 282.5; 9: 315


def test_the_first_epoch_fixes_the_count_when_no_second_fits():
    clock = FakeClock()
    budget = TimeBudget(50, clock)
    budget.start()
    clock.now = 40.0
    budget.add_epoch(40.0)
    assert budget.refit(1, 0) == 1


def test_state_restores_the_count_the_time_used_and_the_measurements():
    clock = FakeClock(1000.0)
    budget = TimeBudget(300, clock)
    budget.start()
    for seconds in (30.0, 20.0, 20.0):
        clock.now += seconds
        budget.add_epoch(seconds)
        budget.refit(len(budget.first_epochs) + len(budget.steady_epochs), 0)
    state = budget.state()
    assert state["fitted"] == 14 and state["used"] == 70.0  # 70 + 11 * 20 <= 300

    later = FakeClock(5.0)  # another process: its clock starts anywhere
    resumed = TimeBudget(300, later)
    resumed.start()
    resumed.restore(state)
    assert resumed.fitted == 14 and resumed.elapsed() == 70.0
    later.now += 45.0  # the resumed process's first epoch (tracing): kept apart from the steady ones
    resumed.add_epoch(45.0)
    assert resumed.estimates() == (20.0, 0.0) and resumed.first_epochs == [30.0, 45.0]
    assert resumed.refit(4, 0) == 13  # 115 + 9 * 20 = 295
