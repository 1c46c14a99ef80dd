"""In-process state: breaker and spend counters in plain dicts, for a single replica."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

# A failure older than this no longer counts towards the breaker's threshold (same as RedisState).
FAILURE_WINDOW_S = 300.0


class MemoryState:
    """Counters of one process. The methods are async to match ``State`` but never wait.

    ``clock`` is the monotonic clock cooldowns are measured on (a simulation may pass its own).
    """

    def __init__(
        self, *, failure_window_s: float = FAILURE_WINDOW_S, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._failure_window_s = failure_window_s
        self._clock = clock
        self._failures: dict[str, tuple[int, float]] = {}  # model -> (consecutive count, last at)
        self._open_until: dict[str, float] = {}  # model -> clock() when its cooldown ends
        self._spend: dict[str, float] = {}

    async def cooling(self, models: Sequence[str]) -> frozenset[str]:
        """The subset of ``models`` whose breaker is open right now."""
        if not self._open_until:
            return frozenset()
        now = self._clock()
        return frozenset(m for m in models if self._open_until.get(m, 0.0) > now)

    async def record_failure(self, model: str, *, threshold: int, cooldown_s: float) -> bool:
        """Count a failed attempt; open the breaker once ``threshold`` consecutive failures are
        reached. Returns True when this failure opened it."""
        now = self._clock()
        if self._open_until.get(model, 0.0) > now:
            # Already open: a failure of a call started before it opened neither counts nor extends it.
            return False
        count, last = self._failures.get(model, (0, now))
        count = count + 1 if now - last <= self._failure_window_s else 1
        if count >= threshold:
            self._failures.pop(model, None)
            self._open_until[model] = now + cooldown_s
            return True
        self._failures[model] = (count, now)
        return False

    async def record_success(self, model: str) -> None:
        """Reset the model's consecutive-failure count."""
        self._failures.pop(model, None)

    async def eject(self, model: str, seconds: float) -> bool:
        """Open the model's breaker for ``seconds`` unless it is open already. True when this opened it."""
        now = self._clock()
        if self._open_until.get(model, 0.0) > now:
            return False
        self._failures.pop(model, None)
        self._open_until[model] = now + seconds
        return True

    async def add_spend(self, key: str, usd: float) -> float:
        """Add to a spend counter (a virtual key or tenant); return the new total."""
        total = self._spend.get(key, 0.0) + usd
        self._spend[key] = total
        return total

    async def spend(self, key: str) -> float:
        return self._spend.get(key, 0.0)

    async def close(self) -> None:
        return None
