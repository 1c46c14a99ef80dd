"""The SQLite ledger against real files."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from tierwise.ledger import LedgerRow, SqliteLedger

from .rows import T0, make_row, make_rows


@pytest.fixture
def db_path(tmp_path: Path) -> str:
    return str(tmp_path / "nested" / "dir" / "ledger.db")  # the parent directories do not exist yet


async def test_rows_round_trip_field_for_field(db_path: str) -> None:
    ledger = SqliteLedger(db_path)
    await ledger.start()
    rows = make_rows(600)  # more than one batch
    for row in rows:
        await ledger.record(row)
    await ledger.flush()
    assert await ledger.count() == 600
    assert await ledger.fetch() == rows
    await ledger.close()


async def test_fetch_since_and_limit(db_path: str) -> None:
    ledger = SqliteLedger(db_path)
    await ledger.start()
    rows = make_rows(20)
    for row in reversed(rows):  # arrival order is by ts, not by insertion
        await ledger.record(row)
    await ledger.close()
    assert await ledger.fetch(since=rows[15].ts) == rows[15:]
    assert await ledger.fetch(limit=3) == rows[:3]
    assert await ledger.fetch(since=rows[10].ts, limit=2) == rows[10:12]
    assert await ledger.fetch(since=T0 + 10_000) == []


async def test_concurrent_load_then_close_keeps_every_accepted_row(db_path: str) -> None:
    ledger = SqliteLedger(db_path, queue_size=1000)
    await ledger.start()

    async def submit(task: int) -> list[str]:
        rows = make_rows(100, prefix=f"t{task}")
        for row in rows:
            await ledger.record(row)
            if row.id.endswith("7"):
                await asyncio.sleep(0)
        return [row.id for row in rows]

    ids = [i for chunk in await asyncio.gather(*(submit(t) for t in range(50))) for i in chunk]
    await ledger.close()

    reopened = SqliteLedger(db_path)
    await reopened.start()
    assert await reopened.count() == 5000
    assert sorted(row.id for row in await reopened.fetch()) == sorted(ids)
    await reopened.close()


async def test_a_tiny_queue_applies_back_pressure_and_loses_nothing(db_path: str) -> None:
    ledger = SqliteLedger(db_path, queue_size=2)
    await ledger.start()
    rows = make_rows(300)
    await asyncio.gather(*(ledger.record(row) for row in rows))
    await ledger.close()
    assert await ledger.fetch() == rows


async def test_a_failing_write_is_retried_and_every_row_lands(
    db_path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    ledger = SqliteLedger(db_path)
    real_insert = ledger._insert
    failures = 0

    def flaky_insert(values: list) -> None:
        nonlocal failures
        if failures < 2:
            failures += 1
            raise sqlite3.OperationalError("database is locked")
        real_insert(values)

    monkeypatch.setattr(ledger, "_insert", flaky_insert)
    await ledger.start()
    rows = make_rows(50)
    for row in rows:
        await ledger.record(row)
    await ledger.close()
    assert failures == 2
    assert await ledger.fetch() == rows


async def test_a_row_recorded_twice_is_stored_once(db_path: str) -> None:
    ledger = SqliteLedger(db_path)
    await ledger.start()
    row = make_row(1)
    await ledger.record(row)
    await ledger.flush()
    await ledger.record(row)  # e.g. a retried batch whose first try did commit
    await ledger.record(make_row(2))
    await ledger.close()
    assert [r.id for r in await ledger.fetch()] == [row.id, make_row(2).id]


async def test_feature_values_json_cannot_hold_do_not_stall_the_writer(db_path: str) -> None:
    ledger = SqliteLedger(db_path)
    await ledger.start()
    row = make_row(1)
    row.features = {"tags": {"b", "a"}, "path": Path("/x"), 3: "int key"}
    await ledger.record(row)
    await ledger.close()
    (stored,) = await ledger.fetch()
    assert stored.features == {"tags": ["a", "b"], "path": "/x", "3": "int key"}


async def test_file_is_wal_with_a_schema_version(db_path: str) -> None:
    ledger = SqliteLedger(db_path)
    await ledger.start()
    await ledger.close()
    conn = sqlite3.connect(db_path)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        assert conn.execute("SELECT version FROM schema_version").fetchall() == [(1,)]
        columns = [r[1] for r in conn.execute("PRAGMA table_info(requests)")]
        assert sorted(columns) == sorted(LedgerRow.__dataclass_fields__)  # one column per field
    finally:
        conn.close()


async def test_reads_need_no_start_and_create_nothing(tmp_path: Path) -> None:
    path = tmp_path / "absent.db"
    ledger = SqliteLedger(str(path))
    assert await ledger.fetch() == []
    assert await ledger.count() == 0
    assert not path.exists()
    await ledger.close()
