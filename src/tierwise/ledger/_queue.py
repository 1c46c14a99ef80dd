"""The write-behind machinery every ledger backend shares: a bounded queue, one writer task, a spill.

``record`` puts a row on the queue and never waits: when the queue is full the row goes to the spill
(local append-only files, ``_spill.py``). One writer task takes what is queued, up to ``BATCH_SIZE``
rows at a time, encodes each row for the store (a row that cannot be encoded is that row's problem
alone) and writes the batch. When a write fails, what happens depends on why (``_classify``):

* the store is unavailable (connection refused or reset, timeout, database locked …): the rows go to
  the spill, and so does every row after them, until the store answers again. The writer tries it with
  capped backoff (RETRY_BASE_S doubling up to RETRY_CAP_S), replays the spill into it and deletes what
  it has written. Meanwhile ``health()`` says ``degraded`` and ``get``/``record_feedback`` raise
  LedgerUnavailable at once.
* a row is wrong (the store rejects its values): the batch is written again one row at a time, so the
  good rows land; a row that fails alone SINGLE_ROW_TRIES times goes to the dead-letter file beside the
  spill, is counted and logged, and is never tried again.
* any other error: one row at a time too. A row failing alone with it is dead-lettered if other rows
  of the batch went in (the store takes writes: the row is at fault); if none does, the store is.

So no row holds back another, an outage never blocks a request, and ``close`` during an outage leaves
every accepted row in the spill, which the next ``start`` with the same spill directory writes. Only a
full spill (``spill_max_bytes``) loses rows: counted, and logged at ERROR.

With ``journal`` on (the default), ``record`` also appends the row to this process's journal
(``_journal.py``) before queueing it, so a process killed without ``close`` (SIGKILL, OOM) loses no
row it had accepted: the next ``start`` with the same spill directory (or a living process sharing it)
finds the journal and replays it like a spill segment.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, Literal, NoReturn, TypeVar

import orjson

from ..backoff import backoff_s
from ..errors import LedgerUnavailable
from . import _rows
from ._journal import ADOPT_EVERY_S, Journal, adopt
from ._spill import Segment, Spill
from .base import LedgerHealth, LedgerRow

log = logging.getLogger("tierwise.ledger")

BATCH_SIZE = 500
# After the first row of a batch arrives, wait this long for more before writing: at low request rates
# one transaction per request would cost more CPU than the request itself. flush() and close() cut it short.
LINGER_S = 0.05
SPILL_MAX_BYTES = 1 << 30

Kind = Literal["unavailable", "data", "unknown"]
T = TypeVar("T")


class WriteBehindLedger:
    """Base class of the ledger backends; subclasses provide ``_open``, ``_encode``,
    ``_write_records`` and ``_close_store`` (and the reads), and should refine ``_classify`` and
    ``_ping`` for their store."""

    # Backoff between tries of an unavailable store: RETRY_BASE_S, doubling, capped at RETRY_CAP_S.
    RETRY_BASE_S = 0.05
    RETRY_CAP_S = 5.0
    # A write with no answer after this long is taken for an outage and its rows spilled (a write that
    # committed after all is harmless: replaying it skips the ids already stored).
    WRITE_TIMEOUT_S = 10.0
    # How long opening the store (connect, create or migrate the schema) may take.
    OPEN_TIMEOUT_S = 10.0
    # get() and record_feedback() give up on the store after this long: a caller is waiting.
    ASK_TIMEOUT_S = 3.0
    # close() lets the writer write what is queued (and replay the spill) this long, then spills the
    # rest; meanwhile an unavailable store is tried at least every CLOSE_RETRY_CAP_S. A store already
    # down when close() begins gets CLOSE_DOWN_TIMEOUT_S: an outage is not over in seconds.
    CLOSE_TIMEOUT_S = 5.0
    CLOSE_DOWN_TIMEOUT_S = 1.0
    CLOSE_RETRY_CAP_S = 0.5
    # A row whose write alone fails this many times (not for want of the store) is dead-lettered.
    SINGLE_ROW_TRIES = 3
    # Writing one row at a time, this many rows failing with an unclassified error while none went in
    # is taken for a failing store rather than bad rows.
    SUSPECT_ROWS = 3
    # Repeated warnings (an outage, dead letters, lost rows): at most LOG_BURST lines per LOG_EVERY_S.
    LOG_EVERY_S = 30.0
    LOG_BURST = 5

    _store_name = "the store"  # how messages name the store, e.g. "PostgreSQL at db:5432/app": no secret

    def __init__(
        self,
        *,
        queue_size: int = 10000,
        spill_dir: str | os.PathLike[str],
        spill_max_bytes: int = SPILL_MAX_BYTES,
        journal: bool = True,
    ) -> None:
        if queue_size < 1:
            raise ValueError(f"ledger: queue_size must be at least 1, got {queue_size}")
        if spill_max_bytes < 0:
            raise ValueError(f"ledger: spill_max_bytes must be 0 or more, got {spill_max_bytes}")
        # None wakes an idle writer (see _wake); rows are never None.
        self._queue: asyncio.Queue[LedgerRow | None] = asyncio.Queue(maxsize=queue_size)
        self._writer: asyncio.Task[None] | None = None
        self._closed = False
        self._hurry = asyncio.Event()  # set by flush()/close(): write what is queued now
        self.spill_dir = Path(spill_dir)
        self._spill = Spill(self.spill_dir, max_bytes=spill_max_bytes)
        self._journal = Journal(self.spill_dir) if journal else None
        # Rows put on the queue, and how many of them (oldest first) are written or set aside: a sealed
        # journal part is retired once every row queued before its seal is.
        self._queued = 0
        self._settled = 0
        self._adopt_at = 0.0  # monotonic time of the next look for journals killed processes left
        self._opened = False  # _open succeeded
        self._down = False  # the store's last answer was an availability error
        self._failures = 0  # availability errors in a row
        self._retry_at = 0.0  # monotonic time of the next try while down
        self._last_error: str | None = None
        self._idle = False  # the writer waits on an empty queue
        self._inflight: list[LedgerRow] = []  # taken from the queue, not yet written nor spilled
        self._segment: Segment | None = None  # the spill segment being replayed
        self._replaying: list[LedgerRow] = []  # read from it, not yet written
        self._written = 0
        self._spilled = 0
        self._replayed = 0
        self._dead = 0
        self._lost = 0
        self._log_times: dict[str, tuple[float, int]] = {}

    # -- what a backend provides ---------------------------------------------------------------

    async def _open(self) -> None:
        """Connect and create the schema if needed."""
        raise NotImplementedError

    def _encode(self, row: LedgerRow) -> Any:
        """One row as the store takes it; raises for a row that cannot be encoded."""
        raise NotImplementedError

    async def _write_records(self, records: list[Any]) -> None:
        """Write encoded rows durably, all or nothing. Rows whose id is already stored are skipped, so
        a batch written again after an ambiguous failure (or replayed from the spill) never duplicates."""
        raise NotImplementedError

    async def _ping(self) -> None:
        """Check that the store answers (after an outage with nothing spilled to try it with)."""

    async def _close_store(self) -> None:
        """Release connections; called once, after the writer has stopped."""
        raise NotImplementedError

    def _classify(self, exc: BaseException) -> Kind:
        """Why a store operation failed: the store is unavailable, the data is wrong, or unknown."""
        if isinstance(exc, OSError):  # ConnectionError and TimeoutError included
            return "unavailable"
        if isinstance(exc, OverflowError | TypeError | ValueError):  # encoding errors included
            return "data"
        return "unknown"

    def _fatal_at_start(self, exc: BaseException) -> bool:
        """Whether ``exc`` from ``_open`` in ``start`` means a wrong configuration, to raise, rather
        than an outage to ride out."""
        return self._classify(exc) != "unavailable"

    def _raise_open_failure(self, exc: Exception) -> NoReturn:
        raise exc

    def _redact(self, text: str) -> str:
        """``text`` (an error message) without secrets."""
        return text

    # -- the Ledger protocol -------------------------------------------------------------------

    async def start(self) -> None:
        """Open the store, find rows a previous run left in the spill, and start the background
        writer. A store that cannot be reached does not fail start: the ledger starts degraded (rows go
        to the spill) and the writer keeps trying it. A wrong configuration (e.g. a refused password)
        does raise."""
        if self._closed:
            raise RuntimeError("ledger is closed")
        if self._writer is not None:
            return
        self._adopt_journals()
        self._spill.scan()
        if not await self._connect(at_start=True):
            log.warning(
                "ledger: %s cannot be reached at start (%s); serving anyway: rows wait in %s until it "
                "answers",
                self._store_name,
                self._last_error,
                self.spill_dir,
            )
        self._writer = asyncio.create_task(self._run_writer(), name=f"{type(self).__name__} writer")
        self._writer.add_done_callback(_report_writer_crash)

    async def record(self, row: LedgerRow) -> None:
        """Accept a row for writing. Never waits on the store: a full queue sends the row to the spill.
        With the journal on, the row is in this process's journal file when this returns (one
        ``write()``, no fsync): a kill of the process from then on does not lose it."""
        if self._closed:
            raise RuntimeError("ledger is closed")
        if self._writer is None:
            raise RuntimeError("ledger is not started: await start() first")
        if self._journal is not None:
            self._journal_row(row)
        try:
            self._queue.put_nowait(row)
        except asyncio.QueueFull:
            self._set_aside([row])
        else:
            self._queued += 1

    def _journal_row(self, row: LedgerRow) -> None:
        assert self._journal is not None
        try:
            line = _rows.row_to_json(row)
        except Exception:  # JSON cannot hold it: the writer dead-letters it, and no replay could help
            return
        try:
            self._journal.append(line)
        except OSError as exc:
            # The row is still queued: only a kill before it is written would lose it.
            self._log_limited(
                "journal",
                logging.ERROR,
                "ledger: cannot journal rows in %s (%s: %s); they are queued, but a kill of this process "
                "before they are written would lose them",
                self.spill_dir,
                type(exc).__name__,
                exc,
            )

    async def flush(self) -> None:
        """Wait until every row accepted so far is durably written: in the store, or in the spill while
        the store is unavailable."""
        self._hurry.set()
        await self._queue.join()
        # Rows spilled while the store is up (a burst past the queue, a previous run's) are replayed now.
        while self._replay_pending() and not self._down and self._writer is not None:
            if self._writer.done():
                break
            self._hurry.set()
            await asyncio.sleep(LINGER_S)
        await self._spill.sync()

    async def close(self) -> None:
        """Write what is queued, stop the writer and release the store. Safe to call twice. What the
        store cannot take within CLOSE_TIMEOUT_S stays in the spill, for the next start to write."""
        if self._closed:
            return
        self._closed = True
        self._hurry.set()
        if self._writer is not None:
            budget = self.CLOSE_DOWN_TIMEOUT_S if self._down else self.CLOSE_TIMEOUT_S
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._write_everything(), budget)
            writer = self._writer
            while not writer.done():
                # Again if need be: a cancellation arriving just as an awaited operation ends can be
                # lost (asyncio.wait_for in Python 3.11 returns the operation's result instead).
                writer.cancel()
                await asyncio.wait((writer,), timeout=1.0)
            self._writer = None
            left, self._inflight = self._inflight, []
            while not self._queue.empty():
                row = self._queue.get_nowait()
                self._queue.task_done()
                if row is not None:
                    left.append(row)
            self._set_aside(left)
        if self._journal is not None:
            await self._journal.close()  # every accepted row is written or spilled (or counted lost) now
        if self._segment is not None:
            self._segment.release()  # its .pos says how far it was written
            self._segment = None
        await self._spill.close()
        try:
            await self._close_store()
        except Exception as exc:  # every row is written or spilled by now: nothing more to lose
            log.warning("ledger: closing %s failed: %s", self._store_name, self._describe(exc))
        if self._spill.bytes:
            log.warning(
                "ledger: %d bytes of rows wait in the spill at %s; the next start with this spill "
                "directory writes them into %s",
                self._spill.bytes,
                self.spill_dir,
                self._store_name,
            )
        if self._lost:
            log.error(
                "ledger: %d accepted rows were LOST: %s could not take them and the spill at %s was full "
                "(storage.spill_max_bytes) or could not be written",
                self._lost,
                self._store_name,
                self.spill_dir,
            )

    async def _write_everything(self) -> None:
        """flush(), then keep trying an unavailable store until the spill is written too."""
        self._retry_at = min(self._retry_at, time.monotonic())  # no backoff left over from before close
        self._wake()
        await self.flush()
        while self._replay_pending() and self._writer is not None and not self._writer.done():
            await asyncio.sleep(LINGER_S)

    def health(self) -> LedgerHealth:
        """The ledger's state and counters, at once (no I/O)."""
        return LedgerHealth(
            state="degraded" if self._down or self._replay_pending() else "ok",
            queue_depth=self._queue.qsize(),
            queue_size=self._queue.maxsize,
            spill_bytes=self._spill.bytes,
            spilled_rows=self._spilled,
            replayed_rows=self._replayed,
            dead_letters=self._dead,
            lost_rows=self._lost,
            last_error=self._last_error,
        )

    # -- for the backends' reads and feedback --------------------------------------------------

    async def _ask(self, operation: Coroutine[Any, Any, T]) -> T:
        """Run a read or a feedback write that a caller waits on: LedgerUnavailable at once while the
        store is down, and if it fails for want of the store (which then counts as down)."""
        if self._down:
            operation.close()
            raise self._unavailable()
        try:
            return await _bounded(operation, self.ASK_TIMEOUT_S)
        except Exception as exc:
            if self._classify(exc) != "unavailable":
                raise
            self._store_failed(exc)
            raise self._unavailable() from None

    def _unavailable(self) -> LedgerUnavailable:
        retry_after = max(1.0, self._retry_at - time.monotonic())
        return LedgerUnavailable(
            f"ledger: {self._store_name} is unavailable ({self._last_error}); "
            f"retry in {math.ceil(retry_after)} s",
            retry_after=retry_after,
        )

    # -- the writer ----------------------------------------------------------------------------

    async def _run_writer(self) -> None:
        while True:
            try:
                await self._write_step()
            except Exception:
                # A bug, or the disk under the spill failing: say so, keep the rows in hand if the
                # spill takes them, and go on. The writer must not stop.
                self._log_limited(
                    "writer", logging.ERROR, "ledger: the writer failed; it goes on", exc_info=True
                )
                left, self._inflight = self._inflight, []
                with contextlib.suppress(Exception):
                    self._set_aside(left)
                self._settle(len(left))
                await asyncio.sleep(self.RETRY_CAP_S)

    async def _write_step(self) -> None:
        if time.monotonic() >= self._adopt_at:
            self._adopt_journals()
        if self._replay_pending() and (not self._down or time.monotonic() >= self._retry_at):
            await self._replay_step()
            batch = self._take_queued()
        elif self._down and time.monotonic() >= self._retry_at:
            await self._probe()
            return
        else:
            # Idle, it still wakes to look for journals killed neighbours left (ADOPT_EVERY_S).
            wake_at = self._retry_at if self._down else self._adopt_at
            batch = await self._take(wake_at - time.monotonic())
        if batch:
            try:
                await self._handle(batch)
            finally:
                for _ in batch:
                    self._queue.task_done()
        if self._spill.dirty:
            await self._spill.sync()
            await self._spill.seal_if_large()
        if self._journal is not None:
            await self._journal.drop_retired()

    async def _take(self, timeout: float | None) -> list[LedgerRow]:
        """Wait for a row (at most ``timeout`` seconds), linger for more, and take up to BATCH_SIZE."""
        queue = self._queue
        self._idle = True
        try:
            if timeout is None:
                first = await queue.get()
            else:
                try:
                    async with asyncio.timeout(max(0.0, timeout)):
                        first = await queue.get()
                except TimeoutError:
                    return []
        finally:
            self._idle = False
        if first is None:  # woken by _wake
            queue.task_done()
            return []
        batch = [first]
        if queue.qsize() < BATCH_SIZE and not self._hurry.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._hurry.wait(), LINGER_S)
        hurried = self._hurry.is_set()
        if not self._closed:
            self._hurry.clear()
        self._seal_journal(now=hurried)
        self._fill(batch)
        return batch

    def _take_queued(self) -> list[LedgerRow]:
        batch: list[LedgerRow] = []
        self._seal_journal(now=True)
        self._fill(batch)
        return batch

    def _seal_journal(self, *, now: bool) -> None:
        # Just before taking rows off the queue: rows recorded from now on go to a part of their own,
        # so that this one can be retired once what is queued now is written. Under steady load a
        # part takes a second's rows; a flush (``now``) seals at once, so that it leaves no part behind.
        if self._journal is not None:
            self._journal.seal(self._queued, now=now)

    def _settle(self, rows: int) -> None:
        """The next ``rows`` queued rows (oldest first) are written, spilled or dead-lettered."""
        self._settled += rows
        if self._journal is not None:
            self._journal.retire(self._settled)

    def _adopt_journals(self) -> None:
        """Turn the journals of processes killed without closing their ledger into spill segments."""
        self._adopt_at = time.monotonic() + ADOPT_EVERY_S
        found = adopt(self.spill_dir, self._journal)
        if not found:
            return
        for path, size in found:
            self._spill.add(path, size)
        log.warning(
            "ledger: %d bytes of rows journaled by a process that stopped without closing its ledger "
            "(killed?) found in %s; writing them into %s",
            sum(size for _, size in found),
            self.spill_dir,
            self._store_name,
        )

    def _fill(self, batch: list[LedgerRow]) -> None:
        queue = self._queue
        while len(batch) < BATCH_SIZE:
            try:
                row = queue.get_nowait()
            except asyncio.QueueEmpty:
                break
            if row is None:
                queue.task_done()
            else:
                batch.append(row)

    def _wake(self) -> None:
        # The writer may be waiting on an empty queue (without a timeout, or until a retry time that
        # close() has moved): it must look again at when to try the store.
        if self._idle and self._queue.empty():
            self._idle = False
            self._queue.put_nowait(None)

    async def _handle(self, batch: list[LedgerRow]) -> None:
        self._inflight = batch
        if self._down and (not self._opened or time.monotonic() < self._retry_at):
            left = batch
        else:
            left = await self._store(batch)
        self._set_aside(left)
        self._inflight = []
        self._settle(len(batch))

    async def _probe(self) -> None:
        if not self._opened:
            await self._connect()
            return
        try:
            await _bounded(self._ping(), self.WRITE_TIMEOUT_S)
        except Exception as exc:
            self._store_failed(exc)
        else:
            self._store_answered()

    async def _connect(self, *, at_start: bool = False) -> bool:
        try:
            async with asyncio.timeout(self.OPEN_TIMEOUT_S):
                await self._open()
        except Exception as exc:
            if at_start and self._fatal_at_start(exc):
                self._raise_open_failure(exc)
            self._store_failed(exc)
            return False
        self._opened = True
        self._store_answered()
        return True

    async def _replay_step(self) -> None:
        """Write the next batch of the spill into the store (or try the one that failed again)."""
        if not self._opened and not await self._connect():
            return
        segment = self._segment
        if not self._replaying:
            if segment is None:
                segment = self._segment = await self._spill.next_segment()
                if segment is None:
                    return
            lines = segment.read(BATCH_SIZE)
            if not lines:
                self._spill.done(segment)
                self._segment = None
                if not self._spill.waiting:
                    log.warning(
                        "ledger: the spill is written into %s (%d rows replayed since start)",
                        self._store_name,
                        self._replayed,
                    )
                return
            self._replaying = self._decode(lines)
        written = self._written
        self._replaying = await self._store(self._replaying)
        self._replayed += self._written - written
        if not self._replaying and segment is not None:
            segment.written_through()

    def _decode(self, lines: list[bytes]) -> list[LedgerRow]:
        rows = []
        for line in lines:
            try:
                rows.append(_rows.row_from_json(line))
            except Exception as exc:  # a line torn by a crash, or not a row at all
                self._dead_letter(line, exc)
        return rows

    async def _store(self, rows: list[LedgerRow]) -> list[LedgerRow]:
        """Write ``rows``; return those left unwritten because the store is unavailable (every other
        row is written or dead-lettered)."""
        if not rows:
            return []
        encode = self._encode
        try:
            records = [encode(row) for row in rows]
        except Exception:
            rows, records = self._encode_each(rows)
            if not rows:
                return []
        try:
            await _bounded(self._write_records(records), self.WRITE_TIMEOUT_S)
        except Exception as exc:
            if self._classify(exc) == "unavailable":
                self._store_failed(exc)
                return rows
            return await self._store_one_by_one(rows, records)
        self._written += len(rows)
        if self._down:
            self._store_answered()
        return []

    def _encode_each(self, rows: list[LedgerRow]) -> tuple[list[LedgerRow], list[Any]]:
        kept, records = [], []
        for row in rows:
            try:
                records.append(self._encode(row))
            except Exception as exc:  # nothing about the store: this row can never be written as it is
                self._dead_letter(row, exc)
            else:
                kept.append(row)
        return kept, records

    async def _store_one_by_one(self, rows: list[LedgerRow], records: list[Any]) -> list[LedgerRow]:
        written = 0
        # Rows that failed with an unclassified error while no row had gone in yet.
        suspects: list[tuple[LedgerRow, Exception]] = []
        for i, record in enumerate(records):
            exc = await self._write_alone(record)
            if exc is None:
                written += 1
                continue
            kind = self._classify(exc)
            if kind == "unavailable":
                self._written += written
                self._store_failed(exc)
                return rows[i:] + [row for row, _ in suspects]
            if kind == "data" or written:
                self._dead_letter(rows[i], exc)
                continue
            suspects.append((rows[i], exc))
            if len(suspects) >= self.SUSPECT_ROWS:
                # Nothing goes in and nothing says why: the store is failing, not these rows. They go
                # last, so that the next try begins with other rows.
                self._store_failed(exc)
                return rows[i + 1 :] + [row for row, _ in suspects]
        self._written += written
        if suspects and not written:
            self._store_failed(suspects[0][1])
            return [row for row, _ in suspects]
        for row, exc in suspects:
            self._dead_letter(row, exc)
        if self._down:
            self._store_answered()
        return []

    async def _write_alone(self, record: Any) -> Exception | None:
        error: Exception | None = None
        for _ in range(self.SINGLE_ROW_TRIES):
            try:
                await _bounded(self._write_records([record]), self.WRITE_TIMEOUT_S)
            except Exception as exc:
                error = exc
                if self._classify(exc) == "unavailable":
                    break
            else:
                return None
        return error

    # -- what cannot be written now, or ever ---------------------------------------------------

    def _set_aside(self, rows: list[LedgerRow]) -> None:
        """Append rows to the spill; the writer fsyncs it in batches."""
        if not rows:
            return
        lines = []
        for row in rows:
            try:
                lines.append(_rows.row_to_json(row))
            except Exception as exc:  # JSON cannot hold it: no store could ever take it either
                self._dead_letter(row, exc)
        try:
            spilled = self._spill.append(lines)
        except OSError as exc:
            self._lose(len(lines), f"{type(exc).__name__}: {exc}")
            return
        self._spilled += spilled
        if spilled < len(lines):
            full = f"the spill is full (storage.spill_max_bytes={self._spill.max_bytes})"
            self._lose(len(lines) - spilled, full)

    def _dead_letter(self, row: LedgerRow | bytes, exc: BaseException) -> None:
        message = self._redact(str(exc))[:500]
        entry = {
            "ts": time.time(),
            "error": type(exc).__name__,
            "message": message,
            "row": _rows.lenient(row) if isinstance(row, LedgerRow) else row.decode("utf-8", "replace"),
        }
        try:
            line = orjson.dumps(entry, option=orjson.OPT_APPEND_NEWLINE)
        except TypeError:  # e.g. a lone surrogate in a string: keep what can be read of the row
            entry["row"] = str(entry["row"]).encode("utf-8", "replace").decode()
            line = orjson.dumps(entry, option=orjson.OPT_APPEND_NEWLINE)
        try:
            kept = self._spill.dead_letter(line)
        except OSError as error:
            self._lose(1, f"{type(error).__name__}: {error}")
            return
        if not kept:
            self._lose(1, "the dead-letter file is full (storage.spill_max_bytes)")
            return
        self._dead += 1
        # The class and message only: what a row holds is never logged.
        self._log_limited(
            "dead",
            logging.WARNING,
            "ledger: a row %s will not take was set aside in %s: %s: %s (%d so far)",
            self._store_name,
            self.spill_dir / "dead-letter.jsonl",
            type(exc).__name__,
            message[:200],
            self._dead,
        )

    def _lose(self, rows: int, reason: str) -> None:
        self._lost += rows
        self._log_limited(
            "lost",
            logging.ERROR,
            "ledger: %d rows LOST (%d so far): %s cannot take them now and the spill at %s cannot either: %s",
            rows,
            self._lost,
            self._store_name,
            self.spill_dir,
            reason,
        )

    # -- the store's state ---------------------------------------------------------------------

    def _store_failed(self, exc: BaseException) -> None:
        self._failures += 1
        cap = self.CLOSE_RETRY_CAP_S if self._closed else self.RETRY_CAP_S
        self._retry_at = time.monotonic() + backoff_s(
            min(self._failures, 17), base=self.RETRY_BASE_S, cap=cap
        )
        self._last_error = self._describe(exc)
        if not self._down:
            self._down = True
            self._log_times.pop("down", None)
            log.warning(
                "ledger: %s is unavailable (%s); rows go to the spill at %s until it answers",
                self._store_name,
                self._last_error,
                self.spill_dir,
            )
        else:
            self._log_limited(
                "down",
                logging.WARNING,
                "ledger: %s still unavailable after %d tries (%s); %d rows spilled so far",
                self._store_name,
                self._failures,
                self._last_error,
                self._spilled,
            )
        self._wake()

    def _store_answered(self) -> None:
        if self._down:
            log.warning("ledger: %s answers again, after %d failed tries", self._store_name, self._failures)
        self._down = False
        self._failures = 0
        self._last_error = None

    def _replay_pending(self) -> bool:
        return self._spill.waiting or self._segment is not None or bool(self._replaying)

    def _describe(self, exc: BaseException) -> str:
        text = self._redact(str(exc))[:300]
        return f"{type(exc).__name__}: {text}" if text else type(exc).__name__

    def _log_limited(self, key: str, level: int, message: str, *args: object, exc_info: bool = False) -> None:
        now = time.monotonic()
        since, count = self._log_times.get(key, (now, 0))
        if now - since >= self.LOG_EVERY_S:
            since, count = now, 0
        self._log_times[key] = (since, count + 1)
        if count < self.LOG_BURST:
            log.log(level, message, *args, exc_info=exc_info)


async def _bounded(operation: Coroutine[Any, Any, T], timeout: float) -> T:
    """Await ``operation`` for at most ``timeout`` seconds, then raise TimeoutError. The operation is
    cancelled but not waited for: on a dead connection its clean-up could itself hang."""
    task = asyncio.ensure_future(operation)
    try:
        done, _ = await asyncio.wait((task,), timeout=timeout)
    except asyncio.CancelledError:
        task.cancel()
        task.add_done_callback(_consume)
        raise
    if not done:
        task.cancel()
        task.add_done_callback(_consume)
        raise TimeoutError(f"no answer within {timeout:g} s")
    return task.result()


def _consume(task: asyncio.Task[Any]) -> None:
    if not task.cancelled():
        task.exception()  # retrieved, so that asyncio does not report it as never retrieved


def _report_writer_crash(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("ledger: the writer task stopped unexpectedly", exc_info=task.exception())
