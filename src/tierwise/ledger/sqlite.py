"""The embedded ledger: one SQLite file in WAL mode, written from a worker thread."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

import orjson

from . import _rows
from ._queue import WriteBehindLedger
from .base import LedgerRow

SCHEMA_VERSION = 1

_SCHEMA = f"""
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
INSERT INTO schema_version (version) SELECT {SCHEMA_VERSION} WHERE NOT EXISTS (SELECT 1 FROM schema_version);
"""

_COLUMN_LIST = ", ".join(_rows.COLUMNS)
# OR IGNORE: a row id already stored (a batch retried after an ambiguous failure, or a caller
# recording the same request twice) is skipped instead of failing the whole batch forever.
_INSERT = f"INSERT OR IGNORE INTO requests ({_COLUMN_LIST}) VALUES ({', '.join('?' * len(_rows.COLUMNS))})"
_SELECT = f"SELECT {_COLUMN_LIST} FROM requests"


class SqliteLedger(WriteBehindLedger):
    """Ledger in one SQLite file. Reads (``fetch``, ``count``) use their own connection and work
    without ``start``; a path whose file does not exist yet holds no rows."""

    def __init__(self, path: str, *, queue_size: int = 10000) -> None:
        super().__init__(queue_size=queue_size)
        self.path = path
        self._conn: sqlite3.Connection | None = None  # the writer's, and only the writer's

    async def _open(self) -> None:
        self._conn = await asyncio.to_thread(self._connect_writer)

    def _connect_writer(self) -> sqlite3.Connection:
        Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        # isolation_level=None: transactions are begun and committed explicitly, one per batch.
        conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            # NORMAL in WAL mode: a power cut may lose the last commits, never corrupt the file.
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA busy_timeout=5000")
            conn.executescript(f"BEGIN;{_SCHEMA}COMMIT;")
        except BaseException:
            conn.close()
            raise
        return conn

    async def _write_batch(self, rows: list[LedgerRow]) -> None:
        # Encode here, on the event loop, so the thread only holds the GIL for sqlite itself.
        values = [_encode(row) for row in rows]
        await asyncio.to_thread(self._insert, values)

    def _insert(self, values: list[tuple[Any, ...]]) -> None:
        conn = self._conn
        assert conn is not None, "writer connection used before start()"
        conn.execute("BEGIN")
        try:
            conn.executemany(_INSERT, values)
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    async def _close_store(self) -> None:
        if self._conn is not None:
            conn, self._conn = self._conn, None
            await asyncio.to_thread(conn.close)

    async def fetch(self, *, since: float | None = None, limit: int | None = None) -> list[LedgerRow]:
        """Rows in arrival order (oldest first), optionally only those at or after ``since``."""
        sql = _SELECT
        params: list[Any] = []
        if since is not None:
            sql += " WHERE ts >= ?"
            params.append(since)
        sql += " ORDER BY ts, rowid"
        if limit is not None:
            sql += " LIMIT ?"
            params.append(limit)
        records = await asyncio.to_thread(self._read, sql, params)
        return [_decode(record) for record in records]

    async def count(self) -> int:
        records = await asyncio.to_thread(self._read, "SELECT count(*) FROM requests", [])
        return int(records[0][0]) if records else 0

    def _read(self, sql: str, params: list[Any]) -> list[tuple[Any, ...]]:
        if not Path(self.path).exists():
            return []
        conn = sqlite3.connect(self.path)
        try:
            conn.execute("PRAGMA query_only=1")
            return conn.execute(sql, params).fetchall()
        finally:
            conn.close()


def _encode(row: LedgerRow) -> tuple[Any, ...]:
    return (
        *_rows.row_values(row),
        _rows.dumps(row.features).decode(),
        _rows.dumps(row.decision).decode(),
        _rows.dumps(_rows.attempts_to_json(row.attempts)).decode(),
    )


def _decode(record: tuple[Any, ...]) -> LedgerRow:
    n = len(_rows.SCALAR_COLUMNS)
    features, decision, attempts = record[n:]
    return _rows.build_row(record[:n], orjson.loads(features), orjson.loads(decision), orjson.loads(attempts))
