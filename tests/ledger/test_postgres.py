"""The PostgreSQL ledger against the real server (skipped, saying why, when none is reachable)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

asyncpg = pytest.importorskip("asyncpg", reason="the PostgreSQL ledger needs asyncpg")

from tierwise.errors import LedgerUnavailable  # noqa: E402
from tierwise.ledger import Attempt, Feedback, LedgerRow, open_ledger  # noqa: E402
from tierwise.ledger.postgres import PostgresLedger  # noqa: E402

from .postgres_server import URL  # noqa: E402  (the `table` fixture comes from conftest.py)
from .rows import SPOILERS, T0, dead_letters, make_row, make_rows, spilled, v1_values, wait_for  # noqa: E402


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


async def test_concurrent_load_then_close_keeps_every_accepted_row(table: str, tmp_path: Path) -> None:
    ledger = PostgresLedger(URL, table=table, queue_size=1000, spill_dir=str(tmp_path))
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


async def test_a_tiny_queue_overflows_into_the_spill_and_loses_nothing(table: str, tmp_path: Path) -> None:
    ledger = PostgresLedger(URL, table=table, queue_size=2, spill_dir=str(tmp_path))
    await ledger.start()
    rows = make_rows(300)
    await asyncio.gather(*(ledger.record(row) for row in rows))
    await ledger.flush()
    assert await ledger.fetch() == rows
    await ledger.close()


async def test_a_batch_retried_after_it_committed_is_not_duplicated(
    table: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    ledger = PostgresLedger(URL, table=table, spill_dir=str(tmp_path / "spill"))
    real_write = ledger._write_records
    lost_acks = 0

    async def commit_then_fail(records: list[Any]) -> None:
        nonlocal lost_acks
        await real_write(records)
        if lost_acks < 2:
            lost_acks += 1  # the commit reached the server but its answer did not reach us
            raise ConnectionResetError("connection reset by peer")

    monkeypatch.setattr(ledger, "_write_records", commit_then_fail)
    await ledger.start()
    rows = make_rows(40)
    for row in rows:
        await ledger.record(row)
    await ledger.flush()  # into the spill: the store seemed down
    await wait_for(lambda: ledger.health().state == "ok")  # and replayed from it
    assert lost_acks == 2
    assert await ledger.count() == 40
    assert await ledger.fetch() == rows
    await ledger.close()


@pytest.mark.parametrize("spoiler", SPOILERS)
async def test_a_row_that_cannot_be_written_is_dead_lettered_and_the_rows_around_it_are_written(
    table: str, spoiler: str, tmp_path: Path
) -> None:
    ledger = PostgresLedger(URL, table=table, spill_dir=str(tmp_path))
    await ledger.start()
    rows = make_rows(20)
    SPOILERS[spoiler](rows[7])
    for row in rows:
        await ledger.record(row)
    await ledger.flush()
    assert await ledger.fetch() == rows[:7] + rows[8:]
    health = ledger.health()
    assert (health.state, health.dead_letters, health.lost_rows) == ("ok", 1, 0)
    (letter,) = dead_letters(tmp_path)
    assert letter["row"]["id"] == rows[7].id
    await ledger.record(make_row(20))  # and the writer goes on
    await ledger.flush()
    assert await ledger.count() == 20
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


async def test_an_unreachable_server_starts_degraded_and_never_shows_the_password(tmp_path: Path) -> None:
    ledger = PostgresLedger("postgresql://admin:hunter2@127.0.0.1:1/app", spill_dir=str(tmp_path))
    await ledger.start()  # does not fail: the server may come back
    health = ledger.health()
    assert health.state == "degraded"
    assert health.last_error is not None and "ConnectionRefusedError" in health.last_error
    await ledger.record(make_row(1))  # kept, in the spill
    with pytest.raises(LedgerUnavailable) as caught:
        await ledger.get("req-000001")
    message = str(caught.value)
    assert message.startswith("ledger: PostgreSQL at 127.0.0.1:1/app is unavailable (ConnectionRefusedError")
    assert caught.value.retry_after is not None and caught.value.retry_after >= 1
    await ledger.close()
    for text in (message, str(health), *(p.read_text() for p in tmp_path.rglob("*.jsonl"))):
        assert "hunter2" not in text
        assert "admin" not in text
    assert [row.id for row in spilled(tmp_path)] == ["req-000001"]


async def test_a_wrong_database_fails_start_without_the_password(table: str) -> None:
    url = URL.replace("@", ":hunter2@", 1).rsplit("/", 1)[0] + "/no_such_database_tw"
    ledger = PostgresLedger(url)
    with pytest.raises(ConnectionError) as caught:
        await ledger.start()
    message = str(caught.value)
    assert message.startswith(f"ledger: cannot connect to PostgreSQL at {ledger.where}: ")
    assert "InvalidCatalogNameError" in message
    assert "hunter2" not in message
    await ledger.close()


async def test_reads_before_start_are_refused() -> None:
    ledger = PostgresLedger(URL)
    with pytest.raises(RuntimeError, match="not started"):
        await ledger.count()


@pytest.mark.parametrize("name", ["requests; DROP TABLE x", "1abc", "a" * 49, ""])
def test_table_name_must_be_an_identifier(name: str) -> None:
    with pytest.raises(ValueError, match="table name"):
        PostgresLedger(URL, table=name)


async def test_prompts_and_verified_round_trip_exactly(table: str) -> None:
    ledger = PostgresLedger(URL, table=table)
    await ledger.start()
    rows = [make_row(i) for i in range(4)]
    rows[0].prompt = None
    rows[1].prompt = []
    rows[2].prompt = [
        {"role": "system", "content": 'Antworte kurz. 日本語も可 — \u00e9 \U0001f600 \\ " \n\t'},
        {"role": "user", "content": [{"type": "text", "text": "what is 2+2?"}], "name": "ünïcode"},
        {"role": "assistant", "content": None, "tool_calls": [{"id": "c1", "function": {"arguments": "{}"}}]},
    ]
    rows[3].attempts = [
        Attempt(model="cheap-a", provider="openai", status="ok", verified=True),
        Attempt(model="judge", provider="openai", status="ok", purpose="judge"),
    ]
    for row in rows:
        await ledger.record(row)
    await ledger.flush()
    stored = await ledger.fetch()
    assert stored == rows
    assert stored[0].prompt is None
    assert [a.verified for a in stored[3].attempts] == [True, False]
    async with ledger._acquire() as conn:  # not captured is SQL NULL, not the JSON null
        assert await conn.fetchval(f'SELECT prompt IS NULL FROM "{table}" WHERE id = $1', rows[0].id)
    await ledger.close()


async def test_get_finds_a_written_row_only(table: str) -> None:
    ledger = PostgresLedger(URL, table=table)
    real_write = ledger._write_records
    gate = asyncio.Event()

    async def gated_write(records: list[Any]) -> None:
        await gate.wait()
        await real_write(records)

    ledger._write_records = gated_write  # type: ignore[method-assign]
    await ledger.start()
    rows = make_rows(3)
    for row in rows:
        await ledger.record(row)
    await asyncio.sleep(0.1)
    assert await ledger.get(rows[1].id) is None  # still queued: get does not flush, the caller does
    gate.set()
    await ledger.flush()
    assert await ledger.get(rows[1].id) == rows[1]
    assert await ledger.get("req-999999") is None
    assert await ledger.get("") is None
    await ledger.close()


async def test_feedback_is_stored_at_once_in_arrival_order(table: str) -> None:
    ledger = PostgresLedger(URL, table=table)
    await ledger.start()
    given = [
        Feedback(request_id="req-000001", score=1.0, ts=T0 + 5),
        Feedback(request_id="req-000002", score=0.0, ts=T0 + 1, comment="wrong: it said 5 😞"),
        Feedback(request_id="req-000001", score=0.25, ts=T0 + 3, comment="on second thought…"),
        Feedback(request_id="req-000003", score=0.5, ts=T0 + 3),  # same ts: insertion order breaks the tie
        Feedback(request_id="req-000001", score=1.0, ts=T0 + 5),  # an exact repeat is kept too
        Feedback(request_id="req-000004", score=0.0, ts=T0 + 6, comment="gpt-4: disagrees", source="shadow"),
    ]
    for feedback in given:
        await ledger.record_feedback(feedback)
    # No flush: record_feedback does not go through the queue; another replica sees it at once.
    reader = PostgresLedger(URL, table=table)
    await reader.start()
    expected = [given[1], given[2], given[3], given[0], given[4], given[5]]
    assert await reader.fetch_feedback() == expected
    assert await reader.fetch_feedback(since=T0 + 3) == expected[1:]
    assert await reader.fetch_feedback(since=T0 + 100) == []
    assert await reader.count() == 0  # feedback needs no row
    await reader.close()
    await ledger.close()


async def test_feedback_needs_start_and_is_refused_after_close(table: str) -> None:
    feedback = Feedback(request_id="req-000001", score=1.0, ts=T0)
    ledger = PostgresLedger(URL, table=table)
    with pytest.raises(RuntimeError, match="not started"):
        await ledger.record_feedback(feedback)
    await ledger.start()
    await ledger.record_feedback(feedback)
    await ledger.close()
    with pytest.raises(RuntimeError, match="ledger is closed"):
        await ledger.record_feedback(feedback)
    reader = PostgresLedger(URL, table=table)
    await reader.start()
    assert await reader.fetch_feedback() == [feedback]
    await reader.close()


async def test_nul_characters_in_prompts_and_feedback_are_replaced_not_fatal(table: str) -> None:
    ledger = PostgresLedger(URL, table=table)
    await ledger.start()
    row = make_row(1)
    row.prompt = [{"role": "user", "content": "a\x00b", "name\x00": "x"}]
    await ledger.record(row)
    await ledger.record_feedback(
        Feedback(request_id="req\x00-1", score=0.0, ts=T0, comment="bad \x00 answer")
    )
    await ledger.flush()
    (stored,) = await ledger.fetch()
    assert stored.prompt == [{"role": "user", "content": "a\ufffdb", "name\ufffd": "x"}]
    assert await ledger.fetch_feedback() == [
        Feedback(request_id="req\ufffd-1", score=0.0, ts=T0, comment="bad \ufffd answer")
    ]
    await ledger.close()


async def test_start_does_not_wait_for_readers_when_there_is_nothing_to_migrate(table: str) -> None:
    """Adding the prompt column needs an ACCESS EXCLUSIVE lock; an up-to-date table must not ask for it,
    or each replica's start would queue behind (and then block everything behind itself) a long read."""
    first = PostgresLedger(URL, table=table)
    await first.start()
    await first.close()
    reader = await asyncpg.connect(URL, timeout=5)
    try:
        async with reader.transaction():
            await reader.fetch(f'SELECT count(*) FROM "{table}"')  # holds ACCESS SHARE until the end
            second = PostgresLedger(URL, table=table)
            await asyncio.wait_for(second.start(), 10)
            await second.close()
    finally:
        await reader.close()


# The table of schema version 1, as tierwise created it before prompts and feedback (copied verbatim
# from postgres.py at that version): the migration test starts from a table made with exactly this.
V1_SCHEMA = """
            CREATE TABLE IF NOT EXISTS {t} (
                seq BIGINT GENERATED ALWAYS AS IDENTITY,
                id TEXT PRIMARY KEY,
                ts DOUBLE PRECISION NOT NULL,
                requested_model TEXT NOT NULL,
                stream BOOLEAN NOT NULL,
                policy_version TEXT NOT NULL,
                status TEXT NOT NULL,
                http_status INTEGER NOT NULL,
                final_model TEXT,
                tier TEXT,
                input_tokens BIGINT NOT NULL,
                output_tokens BIGINT NOT NULL,
                cost_usd DOUBLE PRECISION NOT NULL,
                counterfactual_cost_usd DOUBLE PRECISION NOT NULL,
                latency_ms DOUBLE PRECISION NOT NULL,
                ttft_ms DOUBLE PRECISION,
                error TEXT,
                key_id TEXT,
                features JSONB NOT NULL,
                decision JSONB NOT NULL,
                attempts JSONB NOT NULL
            );
            CREATE INDEX IF NOT EXISTS "{table}_ts" ON {t} (ts);
            CREATE TABLE IF NOT EXISTS "{table}_schema_version" (version INTEGER NOT NULL);
            INSERT INTO "{table}_schema_version" (version)
                SELECT 1 WHERE NOT EXISTS (SELECT 1 FROM "{table}_schema_version");
"""
V1_COLUMNS = (
    "id, ts, requested_model, stream, policy_version, status, http_status, final_model, tier, input_tokens,"
    " output_tokens, cost_usd, counterfactual_cost_usd, latency_ms, ttft_ms, error, key_id, features,"
    " decision, attempts"
)


def _as_v1(row: LedgerRow) -> LedgerRow:
    """How a row version 1 wrote reads back now."""
    row.prompt = None
    for attempt in row.attempts:
        attempt.verified = False
    return row


async def test_a_version_1_table_is_migrated_by_start(table: str) -> None:
    old = _as_v1(make_row(1, prefix="old"))
    late = _as_v1(make_row(3, prefix="late"))
    placeholders = ", ".join(f"${i}" for i in range(1, 21))
    # An old replica: it made the table, wrote a row, and has its COPY staging table (without prompt)
    # on its connection before the new version migrates.
    replica = await asyncpg.connect(URL, timeout=5)
    try:
        await replica.execute(V1_SCHEMA.format(t=f'"{table}"', table=table))
        await replica.execute(
            f'INSERT INTO "{table}" ({V1_COLUMNS}) VALUES ({placeholders})', *v1_values(old)
        )
        staging = f"{table}_incoming"
        await replica.execute(
            f'CREATE TEMPORARY TABLE "{staging}" ON COMMIT DELETE ROWS '
            f'AS SELECT {V1_COLUMNS} FROM "{table}" WITH NO DATA'
        )

        ledger = PostgresLedger(URL, table=table)
        await ledger.start()
        new = make_row(2)
        new.prompt = [{"role": "user", "content": "question 2, après la migration"}]
        await ledger.record(new)
        await ledger.flush()
        feedback = Feedback(request_id=old.id, score=0.0, ts=T0 + 9, comment="grading an old answer")
        await ledger.record_feedback(feedback)

        # The old replica keeps writing through its staging table after the migration.
        async with replica.transaction():
            await replica.execute(
                f'INSERT INTO "{staging}" ({V1_COLUMNS}) VALUES ({placeholders})', *v1_values(late)
            )
            await replica.execute(
                f'INSERT INTO "{table}" ({V1_COLUMNS}) SELECT {V1_COLUMNS} FROM "{staging}" '
                "ON CONFLICT (id) DO NOTHING"
            )
    finally:
        await replica.close()

    assert await ledger.fetch() == [old, new, late]
    assert await ledger.get(old.id) == old
    assert await ledger.fetch_feedback() == [feedback]
    async with ledger._acquire() as conn:
        assert await conn.fetchval(f'SELECT version FROM "{table}_schema_version"') == 2
        assert await conn.fetchval(f'SELECT count(*) FROM "{table}_schema_version"') == 1
    await ledger.close()

    # Starting again (and several at once) on the migrated table changes nothing.
    again = [PostgresLedger(URL, table=table) for _ in range(3)]
    await asyncio.gather(*(ledger.start() for ledger in again))
    assert await again[0].fetch() == [old, new, late]
    assert await again[0].fetch_feedback() == [feedback]
    await asyncio.gather(*(ledger.close() for ledger in again))


async def test_replicas_starting_together_on_a_version_1_table_migrate_it_once(table: str) -> None:
    conn = await asyncpg.connect(URL, timeout=5)
    try:
        await conn.execute(V1_SCHEMA.format(t=f'"{table}"', table=table))
    finally:
        await conn.close()
    ledgers = [PostgresLedger(URL, table=table) for _ in range(4)]
    await asyncio.gather(*(ledger.start() for ledger in ledgers))
    for i, ledger in enumerate(ledgers):
        await ledger.record(make_row(i))
    await asyncio.gather(*(ledger.close() for ledger in ledgers))
    reader = PostgresLedger(URL, table=table)
    await reader.start()
    assert await reader.fetch() == make_rows(4)
    await reader.close()
