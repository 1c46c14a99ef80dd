"""The write-behind queue shared by the ledger backends, driven through a list-backed backend."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest

from tierwise.ledger import LedgerRow
from tierwise.ledger._queue import BATCH_SIZE, LINGER_S, WriteBehindLedger

from .rows import make_rows


class ListLedger(WriteBehindLedger):
    """Stores batches in a list; can be told to fail, or to wait for a gate, before writing."""

    def __init__(self, *, queue_size: int = 10000, failures: int = 0) -> None:
        super().__init__(queue_size=queue_size)
        self.failures_left = failures
        self.gate = asyncio.Event()
        self.gate.set()
        self.batches: list[list[LedgerRow]] = []
        self.calls = 0
        self.closed_store = False

    async def _open(self) -> None:
        return None

    async def _write_batch(self, rows: list[LedgerRow]) -> None:
        self.calls += 1
        await self.gate.wait()
        if self.failures_left:
            self.failures_left -= 1
            raise OSError("disk on fire")
        self.batches.append(list(rows))

    async def _close_store(self) -> None:
        self.closed_store = True

    @property
    def written(self) -> list[LedgerRow]:
        return [row for batch in self.batches for row in batch]


async def test_every_row_is_written_in_order() -> None:
    ledger = ListLedger()
    await ledger.start()
    rows = make_rows(1234)
    for row in rows:
        await ledger.record(row)
    await ledger.flush()
    assert ledger.written == rows
    assert all(len(batch) <= BATCH_SIZE for batch in ledger.batches)
    await ledger.close()
    assert ledger.closed_store


async def test_a_full_queue_makes_record_wait_and_loses_nothing() -> None:
    ledger = ListLedger(queue_size=2)
    await ledger.start()
    ledger.gate.clear()  # the store stalls
    rows = make_rows(50)
    submitting = asyncio.create_task(_record_all(ledger, rows))
    await asyncio.sleep(0.05)
    # One row is held by the stalled writer, two fill the queue, and record() waits on the fourth.
    assert not submitting.done()
    assert ledger._queue.qsize() == 2
    ledger.gate.set()
    await submitting
    await ledger.close()
    assert ledger.written == rows


async def test_close_admits_records_that_were_waiting_on_a_full_queue() -> None:
    ledger = ListLedger(queue_size=1)
    await ledger.start()
    ledger.gate.clear()
    rows = make_rows(20)
    waiting = [asyncio.create_task(ledger.record(row)) for row in rows]
    await asyncio.sleep(0.02)
    closing = asyncio.create_task(ledger.close())
    await asyncio.sleep(0.02)
    ledger.gate.set()
    await asyncio.gather(*waiting)
    await closing
    assert sorted(r.id for r in ledger.written) == sorted(r.id for r in rows)


async def test_a_failing_write_is_retried_until_it_succeeds(caplog: pytest.LogCaptureFixture) -> None:
    ledger = ListLedger(failures=2)
    await ledger.start()
    rows = make_rows(10)
    for row in rows:
        await ledger.record(row)
    await ledger.flush()
    assert ledger.written == rows
    assert ledger.calls == 3
    messages = [r.getMessage() for r in caplog.records if r.name == "tierwise.ledger"]
    assert sum("OSError: disk on fire" in m for m in messages) == 2
    assert any("after 2 failed tries" in m for m in messages)
    # What the rows hold is never logged.
    assert not any("req-000001" in m or "classify" in m for m in messages)
    await ledger.close()


async def test_close_gives_up_on_a_dead_store_and_says_how_many_rows_are_lost(
    caplog: pytest.LogCaptureFixture,
) -> None:
    ledger = ListLedger(failures=10**9)
    await ledger.start()
    for row in make_rows(1200):
        await ledger.record(row)
    await asyncio.sleep(0.2)  # a few retries while running: the batch is kept, not dropped
    assert ledger.calls >= 2
    assert ledger.written == []
    started = time.monotonic()
    await ledger.close()
    assert time.monotonic() - started < 10  # generous: close must return, not hang
    assert ledger.closed_store
    lost = [r for r in caplog.records if r.levelno == logging.ERROR and "NOT written" in r.getMessage()]
    assert len(lost) == 1
    assert "1200 accepted rows" in lost[0].getMessage()


async def test_close_cuts_a_long_backoff_short() -> None:
    ledger = ListLedger(failures=3)
    ledger.RETRY_BASE_S = 30.0  # the first retry would be 30 s away
    await ledger.start()
    rows = make_rows(3)
    for row in rows:
        await ledger.record(row)
    await asyncio.sleep(LINGER_S + 0.05)  # the first write (which fails) has happened
    started = time.monotonic()
    await ledger.close()
    assert time.monotonic() - started < 10
    # One failure before close, two after it, and the last of the CLOSE_ATTEMPTS tries succeeds.
    assert ledger.calls == 4
    assert ledger.written == rows


async def test_record_needs_a_started_and_open_ledger() -> None:
    ledger = ListLedger()
    with pytest.raises(RuntimeError, match="not started"):
        await ledger.record(make_rows(1)[0])
    await ledger.start()
    await ledger.close()
    await ledger.close()  # twice is fine
    with pytest.raises(RuntimeError, match="ledger is closed"):
        await ledger.record(make_rows(1)[0])
    with pytest.raises(RuntimeError, match="ledger is closed"):
        await ledger.start()


def test_queue_size_must_be_positive() -> None:
    with pytest.raises(ValueError, match="queue_size"):
        ListLedger(queue_size=0)


async def _record_all(ledger: WriteBehindLedger, rows: list[LedgerRow]) -> None:
    for row in rows:
        await ledger.record(row)
