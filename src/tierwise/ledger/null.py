"""A ledger that accepts every row and keeps none: the floor for benchmarks without a ledger.

It keeps no feedback either, and says so: ``record_feedback`` raises rather than drop a caller's grade
silently (the router refuses feedback with a client error before it gets here).
"""

from __future__ import annotations

from .base import Feedback, LedgerHealth, LedgerRow


class NullLedger:
    def __init__(self) -> None:
        self._closed = False

    async def start(self) -> None:
        if self._closed:
            raise RuntimeError("ledger is closed")

    async def record(self, row: LedgerRow) -> None:
        if self._closed:
            raise RuntimeError("ledger is closed")

    async def flush(self) -> None:
        return None

    async def close(self) -> None:
        self._closed = True

    def health(self) -> LedgerHealth:
        return LedgerHealth(state="ok")

    async def fetch(self, *, since: float | None = None, limit: int | None = None) -> list[LedgerRow]:
        return []

    async def count(self) -> int:
        return 0

    async def get(self, request_id: str) -> LedgerRow | None:
        return None

    async def record_feedback(self, feedback: Feedback) -> None:
        if self._closed:
            raise RuntimeError("ledger is closed")
        raise RuntimeError("the none ledger keeps no feedback")

    async def fetch_feedback(self, *, since: float | None = None) -> list[Feedback]:
        return []
