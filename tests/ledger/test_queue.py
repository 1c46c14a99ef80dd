"""The write-behind queue shared by the ledger backends, driven through a list-backed backend: batching,
the spill while the store is unavailable, dead letters for rows no store takes, and health."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import Any

import pytest

from tierwise.errors import LedgerUnavailable
from tierwise.ledger import LedgerRow
from tierwise.ledger._queue import BATCH_SIZE, LINGER_S, WriteBehindLedger
from tierwise.ledger._rows import dumps

from .rows import dead_letters, make_row, make_rows, spilled, wait_for


class Weird(Exception):
    """An error the ledger cannot classify."""


class ListLedger(WriteBehindLedger):
    """Stores rows in a dict by id (skipping ids it has, as the real stores do). It can be told to
    fail the next ``failures`` writes with ``error``, or to wait for a gate before writing; a row whose
    features hold ``"reject"`` makes any write holding it raise that value (the store rejects it)."""

    CLOSE_TIMEOUT_S = 0.5
    CLOSE_DOWN_TIMEOUT_S = 0.5

    def __init__(
        self,
        spill_dir: Path,
        *,
        queue_size: int = 10000,
        failures: int = 0,
        error: Exception | None = None,
        spill_max_bytes: int = 1 << 30,
    ) -> None:
        super().__init__(queue_size=queue_size, spill_dir=spill_dir, spill_max_bytes=spill_max_bytes)
        self.failures_left = failures
        self.error = error if error is not None else OSError("disk on fire")
        self.gate = asyncio.Event()
        self.gate.set()
        self.stored: dict[str, LedgerRow] = {}
        self.batches: list[int] = []  # sizes of the writes that succeeded
        self.calls = 0
        self.closed_store = False

    async def _open(self) -> None:
        return None

    def _encode(self, row: LedgerRow) -> LedgerRow:
        dumps(row.features)  # as the real backends do: raises for what JSON cannot hold
        dumps(row.prompt)
        return row

    async def _write_records(self, records: list[Any]) -> None:
        self.calls += 1
        await self.gate.wait()
        if self.failures_left:
            self.failures_left -= 1
            raise self.error
        for row in records:
            if "reject" in row.features:
                raise row.features["reject"]
        for row in records:
            self.stored.setdefault(row.id, row)
        self.batches.append(len(records))

    async def _close_store(self) -> None:
        self.closed_store = True

    async def get(self, request_id: str) -> LedgerRow | None:
        async def look() -> LedgerRow | None:
            await self.gate.wait()
            return self.stored.get(request_id)

        return await self._ask(look())

    @property
    def written(self) -> list[LedgerRow]:
        return list(self.stored.values())


@pytest.fixture
def spill(tmp_path: Path) -> Path:
    return tmp_path / "spill"


def _ids(rows: list[LedgerRow]) -> list[str]:
    return sorted(row.id for row in rows)


def _ledger_messages(caplog: pytest.LogCaptureFixture, level: int = logging.WARNING) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "tierwise.ledger" and r.levelno == level]


async def test_every_row_is_written_in_order(spill: Path) -> None:
    ledger = ListLedger(spill)
    await ledger.start()
    rows = make_rows(1234)
    for row in rows:
        await ledger.record(row)
    await ledger.flush()
    assert ledger.written == rows
    assert all(size <= BATCH_SIZE for size in ledger.batches)
    health = ledger.health()
    assert health.state == "ok"
    assert (health.queue_depth, health.queue_size, health.spilled_rows) == (0, 10000, 0)
    assert health.last_error is None
    await ledger.close()
    assert ledger.closed_store
    assert not spill.exists()  # made only when something has to wait in it


async def test_a_full_queue_sends_rows_to_the_spill_and_never_waits(spill: Path) -> None:
    ledger = ListLedger(spill, queue_size=2)
    await ledger.start()
    ledger.gate.clear()  # the store stalls: the writer holds one batch, two rows fill the queue
    rows = make_rows(50)
    started = time.monotonic()
    for row in rows:
        await ledger.record(row)
    assert time.monotonic() - started < 0.1
    health = ledger.health()
    assert health.state == "degraded"  # rows wait in the spill
    assert health.queue_depth == 2
    assert health.spilled_rows >= 45 and health.spill_bytes > 0
    ledger.gate.set()
    await ledger.flush()  # the store answers: flush waits for the spill to be written too
    assert _ids(ledger.written) == _ids(rows)
    assert ledger.health().state == "ok"
    assert ledger.health().spill_bytes == 0
    assert spilled(spill) == []
    await ledger.close()


async def test_an_unavailable_store_is_retried_through_the_spill(
    spill: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ledger = ListLedger(spill, failures=3)
    await ledger.start()
    rows = make_rows(10)
    for row in rows:
        await ledger.record(row)
    await ledger.flush()
    assert ledger.health().state == "degraded"  # the rows wait in the spill, durably
    assert ledger.health().last_error == "OSError: disk on fire"
    assert _ids(spilled(spill)) == _ids(rows)
    await wait_for(lambda: ledger.health().state == "ok")
    assert ledger.written == rows  # replayed in order
    assert ledger.calls == 4
    health = ledger.health()
    assert (health.spilled_rows, health.replayed_rows) == (10, 10)
    assert (health.dead_letters, health.lost_rows) == (0, 0)
    messages = _ledger_messages(caplog)
    assert any("is unavailable (OSError: disk on fire)" in m for m in messages)
    assert any("answers again, after 3 failed tries" in m for m in messages)
    # What the rows hold is never logged.
    assert not any("req-000001" in m or "classify" in m for m in messages)
    await ledger.close()
    assert not spill.exists()


async def test_close_during_an_outage_keeps_every_row_for_the_next_start(
    spill: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ledger = ListLedger(spill, failures=10**9)
    await ledger.start()
    rows = make_rows(1200)
    for row in rows:
        await ledger.record(row)
    await asyncio.sleep(0.1)
    assert ledger.written == []
    started = time.monotonic()
    await ledger.close()
    assert time.monotonic() - started < ListLedger.CLOSE_DOWN_TIMEOUT_S + 1  # tries the store, gives up
    assert ledger.closed_store
    assert _ids(spilled(spill)) == _ids(rows)
    assert any("wait in the spill" in m for m in _ledger_messages(caplog))
    assert _ledger_messages(caplog, logging.ERROR) == []  # nothing lost

    later = ListLedger(spill)
    assert later.health().state == "ok"
    await later.start()
    await later.flush()
    assert _ids(later.written) == _ids(rows)
    assert later.health().replayed_rows == 1200
    await later.close()
    assert not spill.exists()


async def test_close_cuts_a_long_backoff_short(spill: Path) -> None:
    ledger = ListLedger(spill, failures=2)
    ledger.RETRY_BASE_S = 30.0  # the first retry would be 30 s away
    ledger.CLOSE_DOWN_TIMEOUT_S = 5.0
    await ledger.start()
    rows = make_rows(3)
    for row in rows:
        await ledger.record(row)
    await asyncio.sleep(LINGER_S + 0.05)  # the first write (which fails) has happened
    started = time.monotonic()
    await ledger.close()
    assert time.monotonic() - started < 2
    assert ledger.calls == 3  # closing retries at once, then every CLOSE_RETRY_CAP_S at most
    assert ledger.written == rows


async def test_a_row_the_store_rejects_is_dead_lettered_and_the_rest_written(
    spill: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ledger = ListLedger(spill)
    await ledger.start()
    rows = make_rows(10)
    rows[4].features["reject"] = OverflowError("Python int too large to convert to SQLite INTEGER")
    for row in rows:
        await ledger.record(row)
    await ledger.flush()
    assert _ids(ledger.written) == _ids(rows[:4] + rows[5:])
    assert ledger.health().state == "ok"
    assert ledger.health().dead_letters == 1
    # One failed batch, nine rows alone, and the bad one SINGLE_ROW_TRIES times.
    assert ledger.calls == 1 + 9 + ledger.SINGLE_ROW_TRIES
    (letter,) = dead_letters(spill)
    assert letter["error"] == "OverflowError"
    assert letter["message"] == "Python int too large to convert to SQLite INTEGER"
    assert letter["row"]["id"] == rows[4].id
    assert letter["row"]["attempts"][0]["model"] == "cheap-a"
    assert isinstance(letter["ts"], float)
    (warning,) = [m for m in _ledger_messages(caplog) if "set aside" in m]
    assert "OverflowError: Python int too large" in warning and "dead-letter.jsonl" in warning
    assert rows[4].id not in warning and "classify" not in warning
    await ledger.close()
    assert dead_letters(spill) == [letter]  # the directory stays while it holds dead letters


@pytest.mark.parametrize(
    ("field", "value", "kept_as"),
    [
        ("features", {"n": 2**70}, {"n": str(2**70)}),
        ("prompt", "deep", None),
    ],
)
async def test_a_row_json_cannot_hold_is_dead_lettered_before_any_write(
    spill: Path, field: str, value: Any, kept_as: Any
) -> None:
    if value == "deep":
        value = []
        for _ in range(300):
            value = [value]
    ledger = ListLedger(spill)
    await ledger.start()
    rows = make_rows(5)
    setattr(rows[2], field, value)
    for row in rows:
        await ledger.record(row)
    await ledger.flush()
    assert _ids(ledger.written) == _ids(rows[:2] + rows[3:])
    assert ledger.calls == 1  # the other rows went in one batch
    (letter,) = dead_letters(spill)
    assert letter["error"] == "TypeError"  # orjson.JSONEncodeError
    assert letter["row"]["id"] == rows[2].id
    if kept_as is not None:
        assert letter["row"][field] == kept_as
    else:
        depth, node = 0, letter["row"][field]
        while isinstance(node, list):
            depth, node = depth + 1, node[0]
        assert node == "<nested too deep: cut>" and depth < 250
    await ledger.close()


async def test_a_bad_row_past_the_queue_is_dead_lettered_too(spill: Path) -> None:
    ledger = ListLedger(spill, queue_size=1)
    await ledger.start()
    ledger.gate.clear()
    rows = make_rows(5)
    rows[3].features = {"n": -(2**65)}
    for row in rows:
        await ledger.record(row)
    assert [letter["row"]["id"] for letter in dead_letters(spill)] == [rows[3].id]
    ledger.gate.set()
    await ledger.flush()
    assert _ids(ledger.written) == _ids(rows[:3] + rows[4:])
    await ledger.close()


async def test_an_unknown_error_blames_the_row_only_when_other_rows_go_in(spill: Path) -> None:
    ledger = ListLedger(spill)
    await ledger.start()
    rows = make_rows(6)
    rows[0].features["reject"] = Weird("something odd")
    for row in rows:
        await ledger.record(row)
    await ledger.flush()
    assert _ids(ledger.written) == _ids(rows[1:])
    assert [(d["error"], d["row"]["id"]) for d in dead_letters(spill)] == [("Weird", rows[0].id)]
    await ledger.close()


async def test_an_unknown_error_on_every_row_is_an_outage_not_bad_rows(spill: Path) -> None:
    ledger = ListLedger(spill, failures=10**9, error=Weird("read-only transaction"))
    await ledger.start()
    rows = make_rows(8)
    for row in rows:
        await ledger.record(row)
    await ledger.flush()
    assert ledger.health().state == "degraded"
    assert ledger.health().last_error == "Weird: read-only transaction"
    assert dead_letters(spill) == []
    assert _ids(spilled(spill)) == _ids(rows)
    ledger.failures_left = 0  # the store takes writes again
    await wait_for(lambda: ledger.health().state == "ok")
    assert _ids(ledger.written) == _ids(rows)
    assert dead_letters(spill) == []
    await ledger.close()


async def test_a_full_spill_loses_rows_counted_and_logged_and_never_blocks(
    spill: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ledger = ListLedger(spill, failures=10**9, spill_max_bytes=20_000)
    await ledger.start()
    rows = make_rows(100)
    started = time.monotonic()
    for row in rows:
        await ledger.record(row)
    await ledger.flush()
    assert time.monotonic() - started < 1
    health = ledger.health()
    assert 0 < health.spilled_rows < 100
    assert health.spilled_rows + health.lost_rows == 100
    assert health.spill_bytes <= 20_000
    errors = _ledger_messages(caplog, logging.ERROR)
    assert errors and all("LOST" in m for m in errors)
    assert len(errors) <= ledger.LOG_BURST  # rate limited
    ledger.failures_left = 0
    await ledger.close()
    assert len(ledger.written) == health.spilled_rows


async def test_reads_fail_at_once_while_the_store_is_down(spill: Path) -> None:
    ledger = ListLedger(spill, failures=1)
    await ledger.start()
    ledger.RETRY_BASE_S = 0.3
    await ledger.record(make_row(1))
    await ledger.flush()
    ledger.gate.clear()  # a read would now hang: it must not even be tried
    started = time.monotonic()
    with pytest.raises(LedgerUnavailable) as caught:
        await ledger.get("req-000001")
    assert time.monotonic() - started < 0.05
    assert caught.value.retry_after == 1.0  # never less than a second
    assert "(OSError: disk on fire)" in str(caught.value)
    ledger.gate.set()
    await wait_for(lambda: ledger.health().state == "ok")
    assert await ledger.get("req-000001") == make_row(1)
    await ledger.close()


async def test_a_read_that_finds_the_store_down_marks_it_down(spill: Path) -> None:
    ledger = ListLedger(spill)
    ledger.ASK_TIMEOUT_S = 0.1
    await ledger.start()
    ledger.gate.clear()  # reads hang: they time out
    with pytest.raises(LedgerUnavailable, match="TimeoutError"):
        await ledger.get("req-000001")
    assert ledger.health().state == "degraded"
    with pytest.raises(LedgerUnavailable):
        await ledger.get("req-000001")  # at once, now
    ledger.gate.set()
    await wait_for(lambda: ledger.health().state == "ok")  # the idle writer tried the store again
    await ledger.close()


async def test_record_needs_a_started_and_open_ledger(spill: Path) -> None:
    ledger = ListLedger(spill)
    with pytest.raises(RuntimeError, match="not started"):
        await ledger.record(make_rows(1)[0])
    await ledger.start()
    await ledger.close()
    await ledger.close()  # twice is fine
    with pytest.raises(RuntimeError, match="ledger is closed"):
        await ledger.record(make_rows(1)[0])
    with pytest.raises(RuntimeError, match="ledger is closed"):
        await ledger.start()


def test_sizes_must_make_sense(spill: Path) -> None:
    with pytest.raises(ValueError, match="queue_size"):
        ListLedger(spill, queue_size=0)
    with pytest.raises(ValueError, match="spill_max_bytes"):
        ListLedger(spill, spill_max_bytes=-1)


def test_health_as_json(spill: Path) -> None:
    assert ListLedger(spill).health().to_json() == {
        "state": "ok",
        "queue_depth": 0,
        "queue_size": 10000,
        "spill_bytes": 0,
        "spilled_rows": 0,
        "replayed_rows": 0,
        "dead_letters": 0,
        "lost_rows": 0,
        "last_error": None,
    }
