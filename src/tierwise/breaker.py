"""The failure-ratio breaker: a model whose recent calls fail too often is ejected for a while.

Each process judges from its own calls, as Envoy's outlier detection judges each host from one proxy:
per model, a sliding window of ``cooldown.window_s`` in ``BUCKETS`` time buckets counts successes and
retryable failures in plain ints, so recording a success is an increment — no I/O, no allocation. Only a
failure can trip it: when the window holds at least ``min_calls`` calls of which at least
``failure_ratio`` failed, ``failure`` returns an ``Ejection``, and the dispatcher publishes it through
the state store (``State.eject``), which every replica honours.

An ejection lasts ``seconds`` — or, with ``max_seconds``, ``seconds`` times the number of recent
ejections, at most ``max_seconds``, where each ``window_s`` a model stays in forgets one. Calls that end
while this process knows the model is ejected are not counted, and the window restarts: the model comes
back half-open. Until its first success, ``failures`` failed calls in a row eject it again, so a model
still down is found after a few calls rather than after ``min_calls``, which at low traffic would take
most of an ejection's length.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from .config import CooldownConfig

BUCKETS = 10
# ``failed >= ratio * calls`` in floats can miss by one ulp (0.3 * 10 = 3.0000000000000004).
_EPSILON = 1e-9


@dataclass(frozen=True, slots=True)
class Ejection:
    """A tripped breaker: eject the model for ``seconds``; ``failed`` of its last ``calls`` failed."""

    seconds: float
    failed: int
    calls: int


class _Window:
    __slots__ = ("ejected_until", "ejections", "failed", "half_open", "ok", "streak", "tick")

    def __init__(self) -> None:
        self.ok = [0] * BUCKETS
        self.failed = [0] * BUCKETS
        self.tick = [-1] * BUCKETS  # the bucket number each slot counts; -1: empty
        self.ejected_until = 0.0
        self.ejections = 0  # recent ejections: the multiplier of the next one's length
        self.half_open = False  # back from an ejection, no success yet
        self.streak = 0  # failures in a row while half-open


class RatioBreaker:
    """Per-model failure ratios of this process's calls; decides ejections, does no I/O."""

    def __init__(self, cooldown: CooldownConfig, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._window_s = cooldown.window_s
        self._bucket_s = cooldown.window_s / BUCKETS
        self._min_calls = cooldown.min_calls
        self._ratio = cooldown.failure_ratio - _EPSILON
        self._failures = cooldown.failures
        self._seconds = cooldown.seconds
        self._max_seconds = cooldown.max_seconds if cooldown.max_seconds is not None else cooldown.seconds
        self._windows: dict[str, _Window] = {}

    def success(self, model: str) -> None:
        """Count a successful call of ``model``."""
        window = self._windows.get(model)
        if window is None:
            window = self._windows[model] = _Window()
        now = self._clock()
        if now < window.ejected_until:
            return
        window.half_open = False
        tick = int(now // self._bucket_s)
        slot = tick % BUCKETS
        if window.tick[slot] != tick:
            window.tick[slot], window.ok[slot], window.failed[slot] = tick, 0, 0
        window.ok[slot] += 1

    def failure(self, model: str) -> Ejection | None:
        """Count a failed call of ``model`` (a retryable failure: the upstream's fault); the Ejection
        when this failure trips the breaker, else None."""
        window = self._windows.get(model)
        if window is None:
            window = self._windows[model] = _Window()
        now = self._clock()
        if now < window.ejected_until:
            return None
        tick = int(now // self._bucket_s)
        slot = tick % BUCKETS
        if window.tick[slot] != tick:
            window.tick[slot], window.ok[slot], window.failed[slot] = tick, 0, 0
        window.failed[slot] += 1
        if window.half_open:
            window.streak += 1
            streak = window.streak
            if streak >= self._failures:
                return Ejection(self._eject(window, now), streak, streak)
        calls = failed = 0
        oldest = tick - BUCKETS + 1
        for i in range(BUCKETS):
            if window.tick[i] >= oldest:
                calls += window.ok[i] + window.failed[i]
                failed += window.failed[i]
        if calls < self._min_calls or failed < self._ratio * calls:
            return None
        return Ejection(self._eject(window, now), failed, calls)

    def _eject(self, window: _Window, now: float) -> float:
        if window.ejections:
            # Forgive one past ejection per window the model has stayed in since the last one ended.
            quiet = int((now - window.ejected_until) // self._window_s)
            window.ejections = max(0, window.ejections - quiet)
        window.ejections += 1
        seconds = min(self._max_seconds, self._seconds * window.ejections)
        window.ejected_until = now + seconds
        window.half_open, window.streak = True, 0
        for i in range(BUCKETS):  # the model's return is judged on new calls only
            window.tick[i] = -1
        return seconds
