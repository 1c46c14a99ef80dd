"""The failure-ratio breaker on a hand-driven clock: when it ejects, for how long, how a model comes back."""

from __future__ import annotations

import random

import pytest

from tierwise.breaker import RatioBreaker
from tierwise.config import CooldownConfig


class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def breaker(clock: Clock, **cooldown: float) -> RatioBreaker:
    settings = {"failure_ratio": 0.5, "min_calls": 10, "window_s": 10, "seconds": 10, "max_seconds": 30}
    return RatioBreaker(CooldownConfig(**(settings | cooldown)), clock=clock)


def test_fewer_calls_than_min_calls_never_eject() -> None:
    clock = Clock()
    b = breaker(clock)
    assert [b.failure("m") for _ in range(9)] == [None] * 9
    ejection = b.failure("m")  # the tenth call, all failed
    assert ejection is not None
    assert (ejection.seconds, ejection.failed, ejection.calls) == (10, 10, 10)


def test_ejects_when_the_failure_ratio_is_reached() -> None:
    clock = Clock()
    b = breaker(clock)
    for _ in range(6):
        b.success("m")
    assert [b.failure("m") for _ in range(5)] == [None] * 5  # 5 of 11: 45%
    ejection = b.failure("m")  # 6 of 12: 50%
    assert ejection is not None and (ejection.failed, ejection.calls) == (6, 12)


def test_random_errors_below_the_ratio_never_eject() -> None:
    clock = Clock()
    b = breaker(clock, min_calls=20)
    draw = random.Random(7).random
    for i in range(20_000):  # 200 calls a second for 100 s, 30% failing
        clock.now = 1000 + i / 200
        if draw() < 0.3:
            assert b.failure("m") is None
        else:
            b.success("m")


def test_old_calls_leave_the_window() -> None:
    clock = Clock()
    b = breaker(clock)
    for _ in range(9):
        assert b.failure("m") is None
    clock.now += 10.5  # a whole window later: those nine failures are gone
    assert b.failure("m") is None
    for _ in range(8):
        assert b.failure("m") is None
    assert b.failure("m") is not None


def test_models_are_judged_apart() -> None:
    clock = Clock()
    b = breaker(clock)
    for _ in range(9):
        b.failure("a")
        b.failure("b")
    assert b.failure("a") is not None
    b.success("b")  # b: 9 of 10 failed, and its tenth call succeeded
    assert b.failure("b") is not None


def test_calls_during_an_ejection_are_not_counted() -> None:
    clock = Clock()
    b = breaker(clock)
    for _ in range(10):
        ejection = b.failure("m")
    assert ejection is not None
    clock.now += 5
    # Calls already in flight when it tripped, or tried last because the fallback failed.
    assert [b.failure("m") for _ in range(50)] == [None] * 50
    b.success("m")


def test_back_half_open_a_few_failures_in_a_row_eject_again_for_longer() -> None:
    clock = Clock()
    b = breaker(clock, failures=3, seconds=10, max_seconds=25)
    for _ in range(10):
        b.failure("m")
    lengths = []
    for _ in range(3):
        clock.now += 10.5 if not lengths else lengths[-1] + 0.5
        outcomes = [b.failure("m") for _ in range(3)]
        assert outcomes[:2] == [None, None]
        assert outcomes[2] is not None and (outcomes[2].failed, outcomes[2].calls) == (3, 3)
        lengths.append(outcomes[2].seconds)
    assert lengths == [20, 25, 25]  # 10 × 2, 10 × 3 capped at max_seconds, and capped again


def test_a_success_after_the_ejection_closes_the_breaker() -> None:
    clock = Clock()
    b = breaker(clock, failures=3)
    for _ in range(10):
        b.failure("m")
    clock.now += 10.5
    b.failure("m")
    b.success("m")
    # Judged by the ratio again: failures in a row no longer eject before min_calls.
    assert [b.failure("m") for _ in range(7)] == [None] * 7
    assert b.failure("m") is not None  # 9 of 10 calls since it came back


def test_a_model_that_stays_in_is_forgiven_its_past_ejections() -> None:
    clock = Clock()
    b = breaker(clock, seconds=10, max_seconds=100)
    for _ in range(10):
        b.failure("m")  # ejected for 10 s
    clock.now += 10.5
    b.failure("m")
    b.failure("m")
    ejection = b.failure("m")
    assert ejection is not None and ejection.seconds == 20  # back and down again: twice as long
    clock.now += 20.5
    b.success("m")
    clock.now += 25  # two whole windows in service: both past ejections forgiven
    for _ in range(9):
        b.failure("m")
    ejection = b.failure("m")
    assert ejection is not None and ejection.seconds == 10


@pytest.mark.parametrize(("ratio", "failed"), [(0.3, 3), (0.7, 7), (1.0, 10)])
def test_the_ratio_is_reached_exactly(ratio: float, failed: int) -> None:
    clock = Clock()
    b = breaker(clock, failure_ratio=ratio)
    for _ in range(10 - failed):
        b.success("m")
    outcomes = [b.failure("m") for _ in range(failed)]
    assert outcomes[-1] is not None and outcomes[:-1] == [None] * (failed - 1)
