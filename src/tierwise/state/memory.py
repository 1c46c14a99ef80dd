"""In-process state: breaker, spend, budget and rate-limit counters and keys in plain dicts, for a
single replica."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from .base import Admission, Counter

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
        self._counters: dict[str, tuple[float, float]] = {}  # key -> (value, clock() when it expires)
        self._keys: dict[str, str] = {}  # key id -> record
        self._key_ids: dict[str, str] = {}  # hash of the secret -> key id
        self._revoked: set[str] = set()

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

    def _value(self, key: str, now: float) -> float:
        entry = self._counters.get(key)
        if entry is None:
            return 0.0
        if entry[1] <= now:
            del self._counters[key]
            return 0.0
        return entry[0]

    async def admit(self, counters: Sequence[Counter]) -> Admission:
        """Check every counter against its limit and, only if all pass, add every amount."""
        now = self._clock()
        values = tuple(self._value(c.key, now) for c in counters)
        for i, (counter, value) in enumerate(zip(counters, values, strict=True)):
            over = value + counter.amount > counter.limit if counter.strict else value >= counter.limit
            if over:
                return Admission(i, values)
        await self.adjust(counters)
        return Admission(None, values)

    async def adjust(self, counters: Sequence[Counter]) -> None:
        """Add each counter's amount without checking its limit."""
        now = self._clock()
        if len(self._counters) > 10_000:  # expired windows are dropped now and then, not on every call
            for key in [k for k, (_, until) in self._counters.items() if until <= now]:
                del self._counters[key]
        for c in counters:
            if c.amount:
                self._counters[c.key] = (self._value(c.key, now) + c.amount, now + c.ttl_s)

    async def put_key(self, key_id: str, key_hash: str, record: str) -> None:
        """Store a key's record under its id and the hash of its secret."""
        self._keys[key_id] = record
        self._key_ids[key_hash] = key_id

    async def key_by_hash(self, key_hash: str) -> str | None:
        key_id = self._key_ids.get(key_hash)
        return None if key_id is None else self._keys.get(key_id)

    async def get_key(self, key_id: str) -> str | None:
        return self._keys.get(key_id)

    async def list_keys(self) -> list[str]:
        return list(self._keys.values())

    async def revoke(self, key_id: str) -> None:
        self._revoked.add(key_id)

    async def is_revoked(self, key_id: str) -> bool:
        return key_id in self._revoked

    async def close(self) -> None:
        return None
