"""The SQLite ledger against real files."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from tierwise.ledger import Attempt, Feedback, LedgerRow, SqliteLedger

from .rows import SPOILERS, T0, dead_letters, make_row, make_rows, v1_values

# The schema of version 1 files, as tierwise wrote them before prompts and feedback (copied verbatim
# from sqlite.py at that version): the migration tests start from a file made with exactly this.
V1_SCHEMA = """
CREATE TABLE IF NOT EXISTS requests (
    id TEXT PRIMARY KEY,
    ts REAL NOT NULL,
    requested_model TEXT NOT NULL,
    stream INTEGER NOT NULL,
    policy_version TEXT NOT NULL,
    status TEXT NOT NULL,
    http_status INTEGER NOT NULL,
    final_model TEXT,
    tier TEXT,
    input_tokens INTEGER NOT NULL,
    output_tokens INTEGER NOT NULL,
    cost_usd REAL NOT NULL,
    counterfactual_cost_usd REAL NOT NULL,
    latency_ms REAL NOT NULL,
    ttft_ms REAL,
    error TEXT,
    key_id TEXT,
    features TEXT NOT NULL,
    decision TEXT NOT NULL,
    attempts TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS requests_ts ON requests (ts);
CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL);
INSERT INTO schema_version (version) SELECT 1 WHERE NOT EXISTS (SELECT 1 FROM schema_version);
"""


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


async def test_a_tiny_queue_overflows_into_the_spill_and_loses_nothing(db_path: str) -> None:
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


@pytest.mark.parametrize("spoiler", SPOILERS)
async def test_a_row_that_cannot_be_written_is_dead_lettered_and_the_rows_around_it_are_written(
    db_path: str, spoiler: str
) -> None:
    ledger = SqliteLedger(db_path)
    await ledger.start()
    rows = make_rows(20)
    SPOILERS[spoiler](rows[7])
    for row in rows:
        await ledger.record(row)
    await ledger.flush()
    assert await ledger.fetch() == rows[:7] + rows[8:]
    health = ledger.health()
    assert (health.state, health.dead_letters, health.lost_rows) == ("ok", 1, 0)
    (letter,) = dead_letters(Path(f"{db_path}.spill"))
    assert letter["row"]["id"] == rows[7].id
    await ledger.record(make_row(20))  # and the writer goes on
    await ledger.close()
    assert await ledger.count() == 20


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
        assert conn.execute("SELECT version FROM schema_version").fetchall() == [(2,)]
        columns = [r[1] for r in conn.execute("PRAGMA table_info(requests)")]
        assert sorted(columns) == sorted(LedgerRow.__dataclass_fields__)  # one column per field
        feedback_columns = [r[1] for r in conn.execute("PRAGMA table_info(feedback)")]
        assert sorted(feedback_columns) == sorted(Feedback.__dataclass_fields__)
    finally:
        conn.close()


async def test_reads_need_no_start_and_create_nothing(tmp_path: Path) -> None:
    path = tmp_path / "absent.db"
    ledger = SqliteLedger(str(path))
    assert await ledger.fetch() == []
    assert await ledger.count() == 0
    assert await ledger.get("req-000001") is None
    assert await ledger.fetch_feedback() == []
    assert not path.exists()
    await ledger.close()


async def test_prompts_round_trip_exactly_and_none_stays_none(db_path: str) -> None:
    ledger = SqliteLedger(db_path)
    await ledger.start()
    rows = [make_row(i) for i in range(5)]
    rows[0].prompt = None
    rows[1].prompt = []
    rows[2].prompt = [
        {"role": "system", "content": 'Antworte kurz. 日本語も可 — \u00e9 \U0001f600 \\ " \n\t'},
        {"role": "user", "content": [{"type": "text", "text": "what is 2+2?"}], "name": "ünïcode"},
        {"role": "assistant", "content": None, "tool_calls": [{"id": "c1", "function": {"arguments": "{}"}}]},
    ]
    rows[3].prompt = [{"role": "user", "content": "x" * 200_000}]  # a long prompt is kept whole
    for row in rows:
        await ledger.record(row)
    await ledger.close()
    stored = await ledger.fetch()
    assert stored == rows
    assert stored[0].prompt is None
    assert stored[1].prompt == []
    conn = sqlite3.connect(db_path)
    try:  # not captured is NULL in the file, not the JSON text 'null'
        assert conn.execute("SELECT prompt FROM requests WHERE id = ?", (rows[0].id,)).fetchone() == (None,)
    finally:
        conn.close()


async def test_verified_attempts_round_trip(db_path: str) -> None:
    ledger = SqliteLedger(db_path)
    await ledger.start()
    row = make_row(1)
    row.attempts = [
        Attempt(model="cheap-a", provider="openai", status="ok", purpose="answer", verified=False),
        Attempt(model="judge", provider="openai", status="ok", purpose="judge"),
        Attempt(model="cheap-b", provider="openai", status="ok", purpose="answer", verified=True),
    ]
    await ledger.record(row)
    await ledger.close()
    (stored,) = await ledger.fetch()
    assert [a.verified for a in stored.attempts] == [False, False, True]
    assert stored == row


async def test_get_finds_a_written_row_only(db_path: str) -> None:
    ledger = SqliteLedger(db_path)
    await ledger.start()
    rows = make_rows(10)
    for row in rows[:5]:
        await ledger.record(row)
    await ledger.flush()
    # A row still queued is not there yet: get does not flush, the caller does. Holding the writer
    # connection's lock keeps the writer from writing it meanwhile.
    with ledger._conn_lock:
        await ledger.record(rows[5])
        await asyncio.sleep(0.1)  # the writer has taken the row and waits for the lock
        assert await ledger.get(rows[5].id) is None
    await ledger.flush()
    assert await ledger.get(rows[5].id) == rows[5]
    assert await ledger.get(rows[2].id) == rows[2]
    assert await ledger.get("req-999999") is None
    assert await ledger.get("") is None
    await ledger.close()
    reader = SqliteLedger(db_path)  # a fresh instance, never started
    assert await reader.get(rows[4].id) == rows[4]


async def test_feedback_is_stored_at_once_in_arrival_order(db_path: str) -> None:
    ledger = SqliteLedger(db_path)
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
    # No flush: record_feedback does not go through the queue; a fresh reader sees it at once.
    reader = SqliteLedger(db_path)
    expected = [given[1], given[2], given[3], given[0], given[4], given[5]]
    assert await reader.fetch_feedback() == expected
    assert await reader.fetch_feedback(since=T0 + 3) == expected[1:]
    assert await reader.fetch_feedback(since=T0 + 100) == []
    assert [f.score for f in await ledger.fetch_feedback() if f.request_id == "req-000001"] == [
        0.25,
        1.0,
        1.0,
    ]
    # Feedback needs no row: the request may still be queued, or the row never written.
    assert await ledger.count() == 0
    await ledger.close()
    assert await ledger.fetch_feedback() == expected  # reads still work after close


async def test_feedback_needs_start_and_is_refused_after_close(db_path: str) -> None:
    feedback = Feedback(request_id="req-000001", score=1.0, ts=T0)
    ledger = SqliteLedger(db_path)
    with pytest.raises(RuntimeError, match="not started"):
        await ledger.record_feedback(feedback)
    await ledger.start()
    await ledger.record_feedback(feedback)
    await ledger.close()
    with pytest.raises(RuntimeError, match="ledger is closed"):
        await ledger.record_feedback(feedback)
    assert await ledger.fetch_feedback() == [feedback]


async def test_feedback_recorded_while_batches_are_written_is_neither_lost_nor_mixed_in(
    db_path: str,
) -> None:
    """Feedback and row batches share the writer's connection, from different threads."""
    ledger = SqliteLedger(db_path, queue_size=100)
    await ledger.start()
    rows = make_rows(3000)
    feedbacks = [Feedback(request_id=f"req-{i:06d}", score=i % 2, ts=T0 + i) for i in range(200)]

    async def rows_in() -> None:
        for row in rows:
            await ledger.record(row)

    async def feedback_in() -> None:
        for feedback in feedbacks:
            await ledger.record_feedback(feedback)

    await asyncio.gather(rows_in(), feedback_in(), feedback_in())
    await ledger.close()
    assert await ledger.count() == 3000
    assert await ledger.fetch_feedback() == [f for f in feedbacks for _ in range(2)]


class _SlowFailingConnection:
    """Wraps the writer's connection: the first batch inserts its rows, then stalls inside its open
    transaction and fails (so it is rolled back and retried)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn
        self.in_transaction = threading.Event()
        self.failed = False

    def execute(self, sql: str, *args: Any) -> sqlite3.Cursor:
        return self._conn.execute(sql, *args)

    def executemany(self, sql: str, values: Any) -> sqlite3.Cursor:
        cursor = self._conn.executemany(sql, values)
        if not self.failed:
            self.failed = True
            self.in_transaction.set()
            time.sleep(0.3)
            raise sqlite3.OperationalError("disk I/O error")
        return cursor

    def close(self) -> None:
        self._conn.close()


async def test_feedback_never_joins_a_batch_transaction(db_path: str) -> None:
    """A feedback recorded while a batch's transaction is open is committed on its own, when
    record_feedback returns, and survives that batch being rolled back."""
    ledger = SqliteLedger(db_path)
    await ledger.start()
    assert ledger._conn is not None
    wrapped = _SlowFailingConnection(ledger._conn)
    ledger._conn = wrapped  # type: ignore[assignment]
    row = make_row(1)
    await ledger.record(row)
    assert await asyncio.to_thread(wrapped.in_transaction.wait, 5)
    feedback = Feedback(request_id=row.id, score=1.0, ts=T0)
    await ledger.record_feedback(feedback)
    assert await SqliteLedger(db_path).fetch_feedback() == [feedback]  # committed on return
    await ledger.close()  # the batch is retried and lands
    assert await ledger.fetch() == [row]
    assert await ledger.fetch_feedback() == [feedback]


async def test_feedback_racing_close_is_stored_or_refused(db_path: str) -> None:
    ledger = SqliteLedger(db_path)
    await ledger.start()
    feedbacks = [Feedback(request_id=f"req-{i}", score=1.0, ts=T0 + i) for i in range(50)]
    results = await asyncio.gather(
        *(ledger.record_feedback(f) for f in feedbacks), ledger.close(), return_exceptions=True
    )
    stored = await ledger.fetch_feedback()
    for feedback, result in zip(feedbacks, results, strict=False):
        if result is None:
            assert feedback in stored
        else:
            assert isinstance(result, RuntimeError)
            assert str(result) == "ledger is closed"
            assert feedback not in stored


def _make_v1_file(path: str) -> LedgerRow:
    """A ledger file as version 1 wrote it, holding one row; returns that row as it reads back now."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    row = make_row(1, prefix="old")
    row.prompt = None  # version 1 had no column for it
    for attempt in row.attempts:
        attempt.verified = False  # nor the field: its JSON has no "verified" key
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.executescript(f"BEGIN;{V1_SCHEMA}COMMIT;")
        conn.execute(
            "INSERT INTO requests (id, ts, requested_model, stream, policy_version, status, http_status,"
            " final_model, tier, input_tokens, output_tokens, cost_usd, counterfactual_cost_usd,"
            " latency_ms, ttft_ms, error, key_id, features, decision, attempts)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            v1_values(row),
        )
    finally:
        conn.close()
    return row


async def test_a_version_1_file_is_migrated_by_start(db_path: str) -> None:
    old = _make_v1_file(db_path)
    ledger = SqliteLedger(db_path)
    await ledger.start()
    new = make_row(2)
    new.prompt = [{"role": "user", "content": "question 2, après la migration"}]
    await ledger.record(new)
    await ledger.flush()
    assert await ledger.fetch() == [old, new]
    assert await ledger.get(old.id) == old
    feedback = Feedback(request_id=old.id, score=0.0, ts=T0 + 9, comment="grading an old answer")
    await ledger.record_feedback(feedback)
    assert await ledger.fetch_feedback() == [feedback]
    await ledger.close()
    conn = sqlite3.connect(db_path)
    try:
        assert conn.execute("SELECT version FROM schema_version").fetchall() == [(2,)]
        columns = [r[1] for r in conn.execute("PRAGMA table_info(requests)")]
        assert columns[-1] == "prompt"
        assert sorted(columns) == sorted(LedgerRow.__dataclass_fields__)
    finally:
        conn.close()
    # Starting again on the migrated file changes nothing.
    again = SqliteLedger(db_path)
    await again.start()
    await again.close()
    assert await again.fetch() == [old, new]
    assert await again.fetch_feedback() == [feedback]


async def test_two_writers_starting_on_one_version_1_file_migrate_it_once(db_path: str) -> None:
    old = _make_v1_file(db_path)
    ledgers = [SqliteLedger(db_path) for _ in range(4)]
    await asyncio.gather(*(ledger.start() for ledger in ledgers))
    for i, ledger in enumerate(ledgers):
        await ledger.record(make_row(10 + i))
    await asyncio.gather(*(ledger.close() for ledger in ledgers))
    assert await ledgers[0].fetch() == [old, *(make_row(10 + i) for i in range(4))]


async def test_reads_of_a_version_1_file_need_no_migration_and_change_nothing(db_path: str) -> None:
    old = _make_v1_file(db_path)
    with open(db_path, "rb") as f:
        before = f.read()
    reader = SqliteLedger(db_path)  # never started: reads only
    assert await reader.fetch() == [old]
    assert await reader.fetch(since=old.ts, limit=1) == [old]
    assert await reader.count() == 1
    assert await reader.get(old.id) == old
    assert await reader.get("missing") is None
    assert await reader.fetch_feedback() == []
    with open(db_path, "rb") as f:
        assert f.read() == before
    conn = sqlite3.connect(db_path)
    try:
        assert conn.execute("SELECT version FROM schema_version").fetchall() == [(1,)]
        assert "prompt" not in [r[1] for r in conn.execute("PRAGMA table_info(requests)")]
    finally:
        conn.close()
