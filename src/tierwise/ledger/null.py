"""A ledger that accepts every row and keeps none: the floor for benchmarks without a ledger."""

from __future__ import annotations

from .base import LedgerRow


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

    async def fetch(self, *, since: float | None = None, limit: int | None = None) -> list[LedgerRow]:
        return []

    async def count(self) -> int:
        return 0
