"""The PostgreSQL ledger against the real server (skipped, saying why, when none is reachable)."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator

import pytest

asyncpg = pytest.importorskip("asyncpg", reason="the PostgreSQL ledger needs asyncpg")

from tierwise.ledger import LedgerRow, open_ledger  # noqa: E402
from tierwise.ledger.postgres import PostgresLedger  # noqa: E402

from .rows import make_row, make_rows  # noqa: E402

URL = os.environ.get("TIERWISE_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")


async def _probe() -> str | None:
    try:
        conn = await asyncpg.connect(URL, timeout=2)
    except (OSError, TimeoutError, asyncpg.PostgresError) as exc:
        return f"no PostgreSQL at {PostgresLedger(URL).where}: {type(exc).__name__}: {exc}"
    await conn.close()
    return None


@pytest.fixture
async def table() -> AsyncIterator[str]:
    """A table name unique to the test; the table is dropped afterwards."""
    reason = await _probe()
    if reason:
        pytest.skip(reason)
    name = f"tw_test_{uuid.uuid4().hex[:12]}"
    yield name
    conn = await asyncpg.connect(URL, timeout=5)
    try:
        await conn.execute(f'DROP TABLE IF EXISTS "{name}"; DROP TABLE IF EXISTS "{name}_schema_version"')
    finally:
        await conn.close()


async def test_rows_round_trip_field_for_field(table: str) -> None:
    ledger = PostgresLedger(URL, table=table)
    await ledger.start()
    rows = make_rows(1100)  # three batches
    for row in rows:
        await ledger.record(row)
    await ledger.flush()
    assert await ledger.count() == 1100
    assert await ledger.fetch() == rows
    await ledger.close()


async def test_fetch_since_and_limit(table: str) -> None:
    ledger = PostgresLedger(URL, table=table)
    await ledger.start()
    rows = make_rows(20)
    for row in reversed(rows):
        await ledger.record(row)
    await ledger.flush()
    assert await ledger.fetch(since=rows[15].ts) == rows[15:]
    assert await ledger.fetch(limit=3) == rows[:3]
    assert await ledger.fetch(since=rows[10].ts, limit=2) == rows[10:12]
    await ledger.close()


async def test_concurrent_load_then_close_keeps_every_accepted_row(table: str) -> None:
    ledger = PostgresLedger(URL, table=table, queue_size=1000)
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

    reopened = PostgresLedger(URL, table=table)
    await reopened.start()
    assert await reopened.count() == 5000
    assert sorted(row.id for row in await reopened.fetch()) == sorted(ids)
    await reopened.close()


async def test_a_tiny_queue_applies_back_pressure_and_loses_nothing(table: str) -> None:
    ledger = PostgresLedger(URL, table=table, queue_size=2)
    await ledger.start()
    rows = make_rows(300)
    await asyncio.gather(*(ledger.record(row) for row in rows))
    await ledger.flush()
    assert await ledger.fetch() == rows
    await ledger.close()


async def test_a_batch_retried_after_it_committed_is_not_duplicated(
    table: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    ledger = PostgresLedger(URL, table=table)
    real_write = ledger._write_batch
    lost_acks = 0

    async def commit_then_fail(rows: list[LedgerRow]) -> None:
        nonlocal lost_acks
        await real_write(rows)
        if lost_acks < 2:
            lost_acks += 1  # the commit reached the server but its answer did not reach us
            raise ConnectionResetError("connection reset by peer")

    monkeypatch.setattr(ledger, "_write_batch", commit_then_fail)
    await ledger.start()
    rows = make_rows(40)
    for row in rows:
        await ledger.record(row)
    await ledger.flush()
    assert lost_acks == 2
    assert await ledger.count() == 40
    assert await ledger.fetch() == rows
    await ledger.close()


async def test_nul_characters_are_replaced_not_fatal(table: str) -> None:
    ledger = PostgresLedger(URL, table=table)
    await ledger.start()
    row = make_row(3)
    row.error = "upstream said \x00 here"
    row.features = {"hint": "a\x00b", "k\x00": 1}
    await ledger.record(row)
    await ledger.flush()
    (stored,) = await ledger.fetch()
    assert stored.error == "upstream said \ufffd here"
    assert stored.features == {"hint": "a\ufffdb", "k\ufffd": 1}
    await ledger.close()


async def test_two_ledgers_on_one_table_start_together(table: str) -> None:
    """Replicas starting at once must not race on CREATE TABLE."""
    ledgers = [PostgresLedger(URL, table=table) for _ in range(4)]
    await asyncio.gather(*(ledger.start() for ledger in ledgers))
    for i, ledger in enumerate(ledgers):
        await ledger.record(make_row(i))
    await asyncio.gather(*(ledger.close() for ledger in ledgers))
    reader = PostgresLedger(URL, table=table)
    await reader.start()
    assert await reader.count() == 4
    await reader.close()


def test_open_ledger_gives_a_postgres_ledger() -> None:
    ledger = open_ledger(URL)
    assert isinstance(ledger, PostgresLedger)
    assert ledger.table == "tierwise_requests"


async def test_unreachable_server_is_a_connection_error_without_the_password() -> None:
    ledger = PostgresLedger("postgresql://admin:hunter2@127.0.0.1:1/app")
    with pytest.raises(ConnectionError) as caught:
        await ledger.start()
    message = str(caught.value)
    assert message.startswith("ledger: cannot connect to PostgreSQL at 127.0.0.1:1/app: ")
    assert "hunter2" not in message
    assert "admin" not in message
    await ledger.close()


async def test_reads_before_start_are_refused() -> None:
    ledger = PostgresLedger(URL)
    with pytest.raises(RuntimeError, match="not started"):
        await ledger.count()


@pytest.mark.parametrize("name", ["requests; DROP TABLE x", "1abc", "a" * 49, ""])
def test_table_name_must_be_an_identifier(name: str) -> None:
    with pytest.raises(ValueError, match="table name"):
        PostgresLedger(URL, table=name)
