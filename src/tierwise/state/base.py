"""Shared counters the dispatcher consults: per-model cooldowns (the circuit breaker) and spend.

The breaker is opened in one of two ways (``policy.cooldown.mode``): ``record_failure`` counts
consecutive failures here, shared by replicas; or a replica that judged a model's failure ratio from its
own calls (``breaker.py``) opens it with ``eject``. Either way every replica sees it in ``cooling``.

In-process by default (``memory://``); Redis (``redis://``) when several replicas must agree.
Methods take whole sets so a Redis backend answers a request's chain in one round trip.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol


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

    async def close(self) -> None: ...
