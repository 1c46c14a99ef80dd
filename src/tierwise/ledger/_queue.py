"""The write-behind machinery every ledger backend shares: a bounded queue and one writer task.

``record`` puts a row on the queue and only waits when the queue is full (back-pressure: a slow
store slows requests down rather than losing their rows). One writer task takes what is queued, up
to ``BATCH_SIZE`` rows at a time, and hands the batch to the backend's ``_write_batch``. A failing
write is retried with backoff for as long as the process runs; only ``close`` gives up, after a few
more tries, so that shutdown cannot hang on a dead store — and it logs how many rows were lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from .base import LedgerRow

log = logging.getLogger("tierwise.ledger")

BATCH_SIZE = 500
# After the first row of a batch arrives, wait this long for more before writing: at low request rates
# one transaction per request would cost more CPU than the request itself. flush() and close() cut it short.
LINGER_S = 0.05


class WriteBehindLedger:
    """Base class of the ledger backends; subclasses provide ``_open``, ``_write_batch`` and
    ``_close_store`` (and ``fetch``/``count``)."""

    # Backoff between retries of a failed write: RETRY_BASE_S, doubling, capped at RETRY_CAP_S.
    RETRY_BASE_S = 0.05
    RETRY_CAP_S = 5.0
    # Once close() is waiting, each failed write gets this many more tries (at most
    # CLOSE_BACKOFF_CAP_S apart) before every row still unwritten is given up.
    CLOSE_ATTEMPTS = 3
    CLOSE_BACKOFF_CAP_S = 0.5
    # A long outage logs its first few failures, then one line per LOG_EVERY_S.
    LOG_EVERY_S = 30.0

    def __init__(self, *, queue_size: int = 10000) -> None:
        if queue_size < 1:
            raise ValueError(f"ledger: queue_size must be at least 1, got {queue_size}")
        self._queue: asyncio.Queue[LedgerRow] = asyncio.Queue(maxsize=queue_size)
        self._writer: asyncio.Task[None] | None = None
        self._closed = False
        self._closing = asyncio.Event()
        self._hurry = asyncio.Event()  # set by flush()/close(): write what is queued now
        self._waiting_puts = 0  # record() calls blocked on a full queue
        self._abandoned = False  # close() gave up on the store: drop what is left, counted
        self._lost = 0
        self._last_failure_log = -float("inf")

    # -- what a backend provides ---------------------------------------------------------------

    async def _open(self) -> None:
        """Connect and create the schema if needed."""
        raise NotImplementedError

    async def _write_batch(self, rows: list[LedgerRow]) -> None:
        """Write ``rows`` durably, all or nothing. Rows whose id is already stored are skipped, so a
        batch retried after an ambiguous failure never duplicates."""
        raise NotImplementedError

    async def _close_store(self) -> None:
        """Release connections; called once, after the writer has stopped."""
        raise NotImplementedError

    # -- the Ledger protocol -------------------------------------------------------------------

    async def start(self) -> None:
        """Create tables if needed and start the background writer."""
        if self._closed:
            raise RuntimeError("ledger is closed")
        if self._writer is not None:
            return
        await self._open()
        self._writer = asyncio.create_task(self._run_writer(), name=f"{type(self).__name__} writer")
        self._writer.add_done_callback(_report_writer_crash)

    async def record(self, row: LedgerRow) -> None:
        """Accept a row for writing. Returns at once unless the queue is full."""
        if self._closed:
            raise RuntimeError("ledger is closed")
        if self._writer is None:
            raise RuntimeError("ledger is not started: await start() first")
        try:
            self._queue.put_nowait(row)
        except asyncio.QueueFull:
            self._waiting_puts += 1
            try:
                await self._queue.put(row)
            finally:
                self._waiting_puts -= 1

    async def flush(self) -> None:
        """Wait until every row accepted so far is written."""
        self._hurry.set()
        await self._queue.join()

    async def close(self) -> None:
        """Flush, stop the writer and release the store. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        self._closing.set()  # cuts short a retry backoff in progress
        self._hurry.set()
        if self._writer is not None:
            # A record() that was blocked on the full queue before close still gets its row in.
            while True:
                await self._queue.join()
                if self._waiting_puts == 0 and self._queue.empty():
                    break
                await asyncio.sleep(0)
            self._writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._writer
            self._writer = None
        await self._close_store()
        if self._lost:
            log.error(
                "ledger: %d accepted rows were NOT written: the store kept failing while closing "
                "(see the write errors above)",
                self._lost,
            )

    # -- the writer ----------------------------------------------------------------------------

    async def _run_writer(self) -> None:
        queue = self._queue
        while True:
            batch = [await queue.get()]
            if queue.qsize() < BATCH_SIZE and not self._hurry.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._hurry.wait(), LINGER_S)
            if not self._closing.is_set():
                self._hurry.clear()
            while len(batch) < BATCH_SIZE:
                try:
                    batch.append(queue.get_nowait())
                except asyncio.QueueEmpty:
                    break
            try:
                await self._write_with_retry(batch)
            finally:
                for _ in batch:
                    queue.task_done()

    async def _write_with_retry(self, batch: list[LedgerRow]) -> None:
        failures = 0
        failures_while_closing = 0
        while not self._abandoned:
            try:
                await self._write_batch(batch)
            except Exception as exc:
                failures += 1
                if self._closing.is_set():
                    failures_while_closing += 1
                    if failures_while_closing >= self.CLOSE_ATTEMPTS:
                        self._log_failure(exc, len(batch), failures, force=True)
                        self._abandoned = True
                        break
                self._log_failure(exc, len(batch), failures)
                await self._backoff(failures)
            else:
                if failures:
                    log.warning("ledger: wrote %d rows after %d failed tries", len(batch), failures)
                return
        self._lost += len(batch)

    async def _backoff(self, failures: int) -> None:
        delay = min(self.RETRY_BASE_S * 2 ** (failures - 1), self.RETRY_CAP_S)
        if self._closing.is_set():
            await asyncio.sleep(min(delay, self.CLOSE_BACKOFF_CAP_S))
            return
        # Sleep, but wake as soon as close() is called so that shutdown is not held up.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._closing.wait(), delay)

    def _log_failure(self, exc: Exception, rows: int, failures: int, *, force: bool = False) -> None:
        now = time.monotonic()
        if not force and failures > 3 and now - self._last_failure_log < self.LOG_EVERY_S:
            return
        self._last_failure_log = now
        # The class and message only: a row's content is never logged.
        log.warning(
            "ledger: writing %d rows failed (try %d, %d more rows queued): %s: %s",
            rows,
            failures,
            self._queue.qsize(),
            type(exc).__name__,
            exc,
        )


def _report_writer_crash(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("ledger: the writer task stopped unexpectedly", exc_info=task.exception())
