"""Shared state in Redis, so that every replica sees the same cooldowns and spend.

Keys (``prefix`` defaults to ``tierwise:``):
``{prefix}cool:{model}``   present while the model's breaker is open; expires after the cooldown (PX).
                           Set by ``record_failure``'s script or by ``eject`` (SET NX PX: not extended)
``{prefix}fails:{model}``  consecutive failures (INCR); deleted on success, expires after a quiet window
``{prefix}spend:{key}``    spend in USD (INCRBYFLOAT)
``{prefix}ctr:{key}``      a budget period's or rate-limit window's counter (USD or requests or tokens);
                           checked and added to by ``_ADMIT`` in one step, expires after its period
``{prefix}key:{id}``       a virtual key's record (JSON: tenant, grants, hash; never the secret)
``{prefix}keyhash:{hash}`` the id of the key whose secret has that SHA-256; ``{prefix}keys`` the set of ids
``{prefix}revoked:{id}``   present once a key is revoked (config keys included)

Fail-open: when Redis cannot be reached, ``cooling`` answers "nothing is cooling" and failures and
successes are not recorded. An unreachable state store must not make every model look down: the
breaker exists to route around a failing upstream, and closing it on our own outage would turn a
Redis problem into a total outage. Spend added meanwhile is kept in memory and pushed to Redis with
the key's next update (or at ``close``), so budgets lose nothing a live process saw.

Budgets and rate limits fail open too, with local accounting: while Redis is unreachable each replica
admits against its own in-memory counters (so one replica still enforces its limits alone, and N
replicas together may admit up to N times a limit for the outage's length). Refusing every request
because the counter store is down would turn a Redis outage into a total one; the money at risk is
bounded by the outage's length. Key lookups do not fail open: a key created at run time cannot be
checked without Redis, so its requests get 503 (``StateUnavailable``); config keys still work, and a
revocation this replica has seen stays in force.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import AsyncIterator, Sequence
from urllib.parse import urlsplit

import redis.asyncio as redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from ..errors import StateUnavailable
from .base import Admission, Counter
from .memory import MemoryState

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

# Every counter is checked before any is added to, so a refused request takes nothing from any window
# or budget, and N replicas admitting together can never pass a limit that one step would not.
# ARGV per counter: amount, limit, ttl (ms), strict (1: refuse past value + amount > limit; 0: refuse at
# value >= limit). Returns {refused index (0: none), every value before, …} as strings (a Lua number
# would be truncated to an integer on the way out).
_ADMIT = """
local values = {}
local refused = 0
for i = 1, #KEYS do
    local v = tonumber(redis.call('GET', KEYS[i]) or '0')
    local base = (i - 1) * 4
    local amount = tonumber(ARGV[base + 1])
    local limit = tonumber(ARGV[base + 2])
    values[i] = tostring(v)
    local over
    if ARGV[base + 4] == '1' then over = v + amount > limit else over = v >= limit end
    if over and refused == 0 then refused = i end
end
if refused == 0 then
    for i = 1, #KEYS do
        local base = (i - 1) * 4
        if tonumber(ARGV[base + 1]) ~= 0 then
            redis.call('INCRBYFLOAT', KEYS[i], ARGV[base + 1])
            redis.call('PEXPIRE', KEYS[i], ARGV[base + 3])
        end
    end
end
local out = {refused}
for i = 1, #KEYS do out[i + 1] = values[i] end
return out
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
        self._admit = self._client.register_script(_ADMIT)
        self._local = MemoryState()  # budgets and rate limits while Redis is unreachable
        self._revoked_seen: set[str] = set()
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

    async def admit(self, counters: Sequence[Counter]) -> Admission:
        """Check every counter and, only if all pass, add every amount: one script, atomic across
        replicas. Unreachable: admitted against this replica's own counters (see the module doc)."""
        if not counters:
            return Admission(None, ())
        if not self._skipping():
            args: list[float | int | str] = []
            for c in counters:
                args += [repr(float(c.amount)), repr(float(c.limit)), _ms(c.ttl_s), "1" if c.strict else "0"]
            try:
                out = await self._admit(keys=[f"{self.prefix}ctr:{c.key}" for c in counters], args=args)
            except _UNREACHABLE as exc:
                self._unreachable(exc)
            else:
                self._reachable()
                refused = int(out[0])
                values = tuple(float(v) for v in out[1:])
                return Admission(refused - 1 if refused else None, values)
        return await self._local.admit(counters)

    async def adjust(self, counters: Sequence[Counter]) -> None:
        """Add each amount without checking limits (settling a reservation), in one pipeline."""
        counters = [c for c in counters if c.amount]
        if not counters:
            return
        if not self._skipping():
            try:
                async with self._client.pipeline(transaction=False) as pipe:
                    for c in counters:
                        key = f"{self.prefix}ctr:{c.key}"
                        pipe.incrbyfloat(key, c.amount)
                        pipe.pexpire(key, _ms(c.ttl_s))
                    await pipe.execute()
            except _UNREACHABLE as exc:
                self._unreachable(exc)
            else:
                self._reachable()
                return
        await self._local.adjust(counters)

    async def put_key(self, key_id: str, key_hash: str, record: str) -> None:
        """Store a key's record; raises StateUnavailable when Redis cannot be reached."""
        async with self._strict(), self._client.pipeline(transaction=True) as pipe:
            pipe.set(f"{self.prefix}key:{key_id}", record)
            pipe.set(f"{self.prefix}keyhash:{key_hash}", key_id)
            pipe.sadd(f"{self.prefix}keys", key_id)
            await pipe.execute()

    async def key_by_hash(self, key_hash: str) -> str | None:
        """The record of the key whose secret hashes to ``key_hash``; StateUnavailable when Redis is down."""
        async with self._strict():
            key_id = await self._client.get(f"{self.prefix}keyhash:{key_hash}")
            if key_id is None:
                return None
            return _text(await self._client.get(f"{self.prefix}key:{key_id.decode()}"))

    async def get_key(self, key_id: str) -> str | None:
        async with self._strict():
            return _text(await self._client.get(f"{self.prefix}key:{key_id}"))

    async def list_keys(self) -> list[str]:
        async with self._strict():
            ids = sorted(i.decode() for i in await self._client.smembers(f"{self.prefix}keys"))
            if not ids:
                return []
            values = await self._client.mget([f"{self.prefix}key:{i}" for i in ids])
        return [v.decode() for v in values if v is not None]

    async def revoke(self, key_id: str) -> None:
        """Revoke for every replica; raises StateUnavailable when Redis cannot be reached."""
        async with self._strict():
            await self._client.set(f"{self.prefix}revoked:{key_id}", b"1")
        self._revoked_seen.add(key_id)

    async def is_revoked(self, key_id: str) -> bool:
        """Whether a config key was revoked. Unreachable: only revocations this replica has seen count."""
        if key_id in self._revoked_seen:
            return True
        if self._skipping():
            return False
        try:
            revoked = bool(await self._client.exists(f"{self.prefix}revoked:{key_id}"))
        except _UNREACHABLE as exc:
            self._unreachable(exc)
            return False
        self._reachable()
        if revoked:
            self._revoked_seen.add(key_id)
        return revoked

    @contextlib.asynccontextmanager
    async def _strict(self) -> AsyncIterator[None]:
        if self._skipping():
            raise StateUnavailable(f"the state store (Redis at {self.where}) is unreachable", retry_after=1.0)
        try:
            yield
        except _UNREACHABLE as exc:
            self._unreachable(exc)
            raise StateUnavailable(
                f"the state store (Redis at {self.where}) is unreachable", retry_after=1.0
            ) from None
        self._reachable()

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


def _ms(seconds: float) -> int:
    return max(1, round(seconds * 1000))


def _text(value: bytes | None) -> str | None:
    return None if value is None else value.decode()


def _describe(url: str) -> str:
    """host:port/db of a Redis URL, without the user or password."""
    parts = urlsplit(url)
    try:
        port = parts.port or 6379
    except ValueError:
        port = "?"
    return f"{parts.hostname or 'localhost'}:{port}{parts.path or '/0'}"
