"""The access log: one JSON line per request (request id, key id, model, tier, task, rule, policy
version, status, latency, cost), never the prompt or a key.

The Router hands every request's ledger row to its access log. ``LoggerAccessLog`` (the default of
an in-process Router) sends the line through the ``logging`` logger ``tierwise.access``, where the
application's own handlers take it. ``StreamAccessLog`` (what ``tierwise serve`` uses) writes the
same line, in the same format as serve's other log lines, straight to a stream, a batch at a time:
``logging`` spends ~20 µs of the request's CPU on a line (a record, a lock, a flush), this ~2 µs.
The price: a process killed with SIGKILL loses the lines of its last ``flush_s`` (the ledger, not
the access log, is the record that survives a kill).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Protocol, TextIO

import orjson

from .ledger.base import LedgerRow

LOGGER = logging.getLogger("tierwise.access")
LEVELS = {"info": logging.INFO, "debug": logging.DEBUG}


def access_line(row: LedgerRow) -> bytes:
    """The access log's JSON of one request."""
    return orjson.dumps(
        {
            "request_id": row.id,
            "key_id": row.key_id,
            "requested_model": row.requested_model[:64],
            "model": row.final_model,
            "tier": row.tier,
            "task": row.features.get("task"),
            "rule": row.decision.get("rule"),
            "policy_version": row.policy_version,
            "status": row.status,
            "http_status": row.http_status,
            "stream": row.stream,
            "latency_ms": row.latency_ms,
            "cost_usd": row.cost_usd,
        }
    )


class AccessLog(Protocol):
    def write(self, row: LedgerRow) -> None: ...

    def flush(self) -> None: ...


class LoggerAccessLog:
    """Each line a ``logging`` record of the logger ``tierwise.access`` at ``level``."""

    def __init__(self, level: str = "info") -> None:
        self._level = LEVELS[level]

    def write(self, row: LedgerRow) -> None:
        if LOGGER.isEnabledFor(self._level):
            LOGGER.log(self._level, access_line(row).decode())

    def flush(self) -> None:
        """Nothing held: the handlers write each record."""


class StreamAccessLog:
    """Lines written to ``stream`` at most ``flush_s`` after their request ended, all the lines of
    that time in one write. Each line reads ``<date time,ms> <LEVEL> tierwise.access: <JSON>``, the
    format of ``tierwise serve``'s other log lines. ``flush`` writes what is held (at a stop)."""

    def __init__(self, stream: TextIO, level: str = "info", *, flush_s: float = 0.05) -> None:
        self._stream = stream
        self._tag = f" {logging.getLevelName(LEVELS[level])} tierwise.access: "
        self._flush_s = flush_s
        self._held: list[str] = []
        self._timer: asyncio.TimerHandle | None = None
        self._second = -1
        self._stamp = ""

    def write(self, row: LedgerRow) -> None:
        now = time.time()
        second = int(now)
        if second != self._second:  # the date and time change once a second: formatted then
            self._second = second
            self._stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(second))
        ms = int((now - second) * 1000)
        self._held.append(f"{self._stamp},{ms:03d}{self._tag}{access_line(row).decode()}\n")
        if self._timer is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:  # no loop to wait on: written now
                self.flush()
                return
            self._timer = loop.call_later(self._flush_s, self.flush)

    def flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self._held:
            return
        text = "".join(self._held)
        self._held.clear()
        try:
            self._stream.write(text)
            self._stream.flush()
        except (OSError, ValueError):  # stderr closed or gone: the lines are dropped, never the request
            pass
