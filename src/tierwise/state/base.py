"""Shared counters: per-model cooldowns (the circuit breaker) the dispatcher consults, spend, and what
access control keeps (budget and rate-limit counters, virtual keys and their revocation).

The breaker is opened in one of two ways (``policy.cooldown.mode``): ``record_failure`` counts
consecutive failures here, shared by replicas; or a replica that judged a model's failure ratio from its
own calls (``breaker.py``) opens it with ``eject``. Either way every replica sees it in ``cooling``.

In-process by default (``memory://``); Redis (``redis://``) when several replicas must agree.
Methods take whole sets so a Redis backend answers a request's chain in one round trip.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class Counter:
    """One counter an admission checks and adds to: a rate-limit window or a budget period.

    ``strict``: refuse when ``value + amount > limit`` (rate limits: the request itself must fit);
    else refuse only once ``value >= limit`` (budgets: a period is open until it is spent).
    ``ttl_s`` bounds the counter's life past its window or period.
    """

    key: str
    amount: float
    limit: float
    ttl_s: float
    strict: bool = True


@dataclass(frozen=True, slots=True)
class Admission:
    """``refused``: the index of the first counter that refused (nothing was added), or None when every
    counter took its amount. ``values``: each counter's value before this admission."""

    refused: int | None
    values: tuple[float, ...]


class State(Protocol):
    async def cooling(self, models: Sequence[str]) -> frozenset[str]:
        """The subset of ``models`` whose breaker is open right now."""
        ...

    async def record_failure(self, model: str, *, threshold: int, cooldown_s: float) -> bool:
        """Count a failed attempt; open the breaker for ``cooldown_s`` once ``threshold`` consecutive
        failures are reached. Returns True when this failure opened it."""
        ...

    async def record_success(self, model: str) -> None:
        """Reset the model's consecutive-failure count."""

    async def eject(self, model: str, seconds: float) -> bool:
        """Open the model's breaker for ``seconds`` unless it is open already (an open one is not
        extended). Returns True when this call opened it."""
        ...

    async def add_spend(self, key: str, usd: float) -> float:
        """Add to a spend counter (a virtual key or tenant); return the new total."""
        ...

    async def spend(self, key: str) -> float: ...

    async def admit(self, counters: Sequence[Counter]) -> Admission:
        """Check every counter against its limit and, only if all pass, add every amount, atomically."""
        ...

    async def adjust(self, counters: Sequence[Counter]) -> None:
        """Add each counter's ``amount`` (negative to give back) without checking its limit."""
        ...

    async def put_key(self, key_id: str, key_hash: str, record: str) -> None:
        """Store a virtual key's record (JSON, never the secret) under its id and the hash of its secret."""
        ...

    async def key_by_hash(self, key_hash: str) -> str | None:
        """The record of the key whose secret hashes to ``key_hash``."""
        ...

    async def get_key(self, key_id: str) -> str | None: ...

    async def list_keys(self) -> list[str]:
        """Every stored key's record."""
        ...

    async def revoke(self, key_id: str) -> None:
        """Mark a key revoked for every replica (config keys as well as stored ones)."""
        ...

    async def is_revoked(self, key_id: str) -> bool: ...

    async def close(self) -> None: ...
