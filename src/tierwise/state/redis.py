"""Shared state in Redis, so that every replica sees the same cooldowns and spend.

Keys (``prefix`` defaults to ``tierwise:``):
``{prefix}cool:{model}``   present while the model's breaker is open; expires after the cooldown (PX).
                           Set by ``record_failure``'s script or by ``eject`` (SET NX PX: not extended)
``{prefix}fails:{model}``  consecutive failures (INCR); deleted on success, expires after a quiet window
``{prefix}spend:{key}``    spend in USD (INCRBYFLOAT)

Fail-open: when Redis cannot be reached, ``cooling`` answers "nothing is cooling" and failures and
successes are not recorded. An unreachable state store must not make every model look down: the
breaker exists to route around a failing upstream, and closing it on our own outage would turn a
Redis problem into a total outage. Spend added meanwhile is kept in memory and pushed to Redis with
the key's next update (or at ``close``), so budgets lose nothing a live process saw.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from urllib.parse import urlsplit

import redis.asyncio as redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

log = logging.getLogger("tierwise.state")

FAILURE_WINDOW_S = 300.0
TIMEOUT_S = 0.5
# After a failed call, skip Redis for this long: requests must not each pay a connect timeout.
RETRY_AFTER_S = 1.0
WARN_EVERY_S = 30.0

# Atomic across replicas: the threshold check and the opening happen in one step, so N replicas
# failing together open the breaker exactly once, on exactly the threshold-th failure.
_RECORD_FAILURE = """
if redis.call('EXISTS', KEYS[1]) == 1 then
    return 0
end
local n = redis.call('INCR', KEYS[2])
if n >= tonumber(ARGV[1]) then
    redis.call('SET', KEYS[1], '1', 'PX', ARGV[2])
    redis.call('DEL', KEYS[2])
    return 1
end
redis.call('PEXPIRE', KEYS[2], ARGV[3])
return 0
"""

_UNREACHABLE = (RedisError, OSError)


class RedisState:
    def __init__(
        self,
        url: str,
        *,
        prefix: str = "tierwise:",
        failure_window_s: float = FAILURE_WINDOW_S,
        timeout_s: float = TIMEOUT_S,
    ) -> None:
        self.prefix = prefix
        self.where = _describe(url)  # the URL may hold a password: this is what gets logged
        self._window_ms = max(1, round(failure_window_s * 1000))
        # One retry without backoff re-dials a pooled connection the server closed; more would only
        # delay the fail-open answer.
        self._client = redis.from_url(
            url, socket_connect_timeout=timeout_s, socket_timeout=timeout_s, retry=Retry(NoBackoff(), 1)
        )
        self._record_failure = self._client.register_script(_RECORD_FAILURE)
        self._down_until = -float("inf")
        self._last_warning = -float("inf")
        self._was_down = False
        self._unsynced: dict[str, float] = {}  # spend added while Redis was unreachable
        self._last_total: dict[str, float] = {}  # last total Redis reported, per spend key

    async def cooling(self, models: Sequence[str]) -> frozenset[str]:
        """The subset of ``models`` whose breaker is open right now, in one MGET."""
        if not models or self._skipping():
            return frozenset()
        try:
            values = await self._client.mget([f"{self.prefix}cool:{m}" for m in models])
        except _UNREACHABLE as exc:
            self._unreachable(exc)
            return frozenset()
        self._reachable()
        return frozenset(m for m, v in zip(models, values, strict=True) if v is not None)

    async def record_failure(self, model: str, *, threshold: int, cooldown_s: float) -> bool:
        """Count a failed attempt; open the breaker for ``cooldown_s`` once ``threshold``
        consecutive failures are reached (across all replicas). True when this failure opened it."""
        if self._skipping():
            return False
        keys = [f"{self.prefix}cool:{model}", f"{self.prefix}fails:{model}"]
        args = [max(1, threshold), max(1, round(cooldown_s * 1000)), self._window_ms]
        try:
            opened = await self._record_failure(keys=keys, args=args)
        except _UNREACHABLE as exc:
            self._unreachable(exc)
            return False
        self._reachable()
        return bool(opened)

    async def record_success(self, model: str) -> None:
        """Reset the model's consecutive-failure count."""
        if self._skipping():
            return
        try:
            await self._client.delete(f"{self.prefix}fails:{model}")
        except _UNREACHABLE as exc:
            self._unreachable(exc)
            return
        self._reachable()

    async def eject(self, model: str, seconds: float) -> bool:
        """Open the model's breaker for every replica for ``seconds`` unless it is open already (one
        SET NX PX, so replicas ejecting together neither stack nor extend it). True when this opened it."""
        if self._skipping():
            return False
        try:
            opened = await self._client.set(
                f"{self.prefix}cool:{model}", b"1", px=max(1, round(seconds * 1000)), nx=True
            )
        except _UNREACHABLE as exc:
            self._unreachable(exc)
            return False
        self._reachable()
        return bool(opened)

    async def add_spend(self, key: str, usd: float) -> float:
        """Add to a spend counter (a virtual key or tenant); return the new total."""
        amount = usd + self._unsynced.pop(key, 0.0)
        if not self._skipping():
            try:
                total = float(await self._client.incrbyfloat(f"{self.prefix}spend:{key}", amount))
            except _UNREACHABLE as exc:
                self._unreachable(exc)
            else:
                self._reachable()
                self._last_total[key] = total
                return total
        self._unsynced[key] = amount
        return self._last_total.get(key, 0.0) + amount

    async def spend(self, key: str) -> float:
        pending = self._unsynced.get(key, 0.0)
        if not self._skipping():
            try:
                value = await self._client.get(f"{self.prefix}spend:{key}")
            except _UNREACHABLE as exc:
                self._unreachable(exc)
            else:
                self._reachable()
                total = float(value) if value is not None else 0.0
                self._last_total[key] = total
                return total + pending
        return self._last_total.get(key, 0.0) + pending

    async def close(self) -> None:
        """Push spend kept in memory during an outage (if Redis is back), then disconnect."""
        for key in list(self._unsynced):
            if self._skipping():
                break
            await self.add_spend(key, 0.0)
        if self._unsynced:
            log.error(
                "state: spend of %d keys (%.6f USD) could not be saved to Redis at %s",
                len(self._unsynced),
                sum(self._unsynced.values()),
                self.where,
            )
        await self._client.aclose()

    def _skipping(self) -> bool:
        return time.monotonic() < self._down_until

    def _unreachable(self, exc: BaseException) -> None:
        now = time.monotonic()
        self._down_until = now + RETRY_AFTER_S
        self._was_down = True
        if now - self._last_warning >= WARN_EVERY_S:
            self._last_warning = now
            log.warning(
                "state: Redis at %s is unreachable (%s: %s); failing open: no model is treated as "
                "cooling and spend is kept in memory until it is back",
                self.where,
                type(exc).__name__,
                exc,
            )

    def _reachable(self) -> None:
        if self._was_down:
            self._was_down = False
            log.warning("state: Redis at %s is reachable again", self.where)


def _describe(url: str) -> str:
    """host:port/db of a Redis URL, without the user or password."""
    parts = urlsplit(url)
    try:
        port = parts.port or 6379
    except ValueError:
        port = "?"
    return f"{parts.hostname or 'localhost'}:{port}{parts.path or '/0'}"
