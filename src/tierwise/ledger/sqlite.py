"""The embedded ledger: one SQLite file in WAL mode, written from a worker thread.

Tables: ``requests`` (one row per request; ``prompt`` holds the captured messages as JSON, NULL when
prompts are not captured), ``feedback`` (append-only, several per request allowed) and
``schema_version``. A file created by schema version 1 (no ``prompt`` column, no ``feedback`` table) is
migrated when a writer starts; reads of a file nobody has migrated yet still work, and see no prompts
and no feedback.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from . import _rows
from ._queue import SPILL_MAX_BYTES, Kind, WriteBehindLedger
from .base import Feedback, LedgerRow

SCHEMA_VERSION = 2

_CREATE_REQUESTS = """
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
    attempts TEXT NOT NULL,
    prompt TEXT
)"""
# Version 1 files lack the column; ADD COLUMN appends it, as in _CREATE_REQUESTS.
_ADD_PROMPT = "ALTER TABLE requests ADD COLUMN prompt TEXT"
# Applied after _CREATE_REQUESTS (and _ADD_PROMPT when needed), statement by statement, in one transaction.
_SCHEMA_REST: tuple[str, ...] = (
    "CREATE INDEX IF NOT EXISTS requests_ts ON requests (ts)",
    """CREATE TABLE IF NOT EXISTS feedback (
        request_id TEXT NOT NULL,
        ts REAL NOT NULL,
        score REAL NOT NULL,
        comment TEXT,
        source TEXT NOT NULL DEFAULT 'caller'
    )""",
    "CREATE INDEX IF NOT EXISTS feedback_request_id ON feedback (request_id)",
    "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)",
    f"INSERT INTO schema_version (version) SELECT {SCHEMA_VERSION} "
    "WHERE NOT EXISTS (SELECT 1 FROM schema_version)",
    # Never downgrades: a file a newer version has written keeps its number.
    f"UPDATE schema_version SET version = {SCHEMA_VERSION} WHERE version < {SCHEMA_VERSION}",
)

_COLUMN_LIST = ", ".join(_rows.COLUMNS)
# A row id already stored (a batch written again after an ambiguous failure, the spill replayed, a
# caller recording the same request twice) is skipped. ON CONFLICT (id), not OR IGNORE: OR IGNORE would
# also skip, silently, a row breaking another constraint (a NULL in a NOT NULL column), which must
# fail instead, to be dead-lettered where it can be seen.
_INSERT = (
    f"INSERT INTO requests ({_COLUMN_LIST}) VALUES ({', '.join('?' * len(_rows.COLUMNS))}) "
    "ON CONFLICT (id) DO NOTHING"
)
_INSERT_FEEDBACK = "INSERT INTO feedback (request_id, ts, score, comment, source) VALUES (?, ?, ?, ?, ?)"
_FEEDBACK_SELECT = "SELECT request_id, ts, score, comment, source FROM feedback"

_Query = Callable[[sqlite3.Connection], list[tuple[Any, ...]]]

# sqlite3.OperationalError messages that mean the file cannot be written now (another process holds
# it, the disk fails or is full), not that the row is wrong.
_UNAVAILABLE = ("locked", "busy", "disk i/o error", "unable to open", "disk is full", "readonly")


class SqliteLedger(WriteBehindLedger):
    """Ledger in one SQLite file. Reads (``fetch``, ``count``, ``get``, ``fetch_feedback``) use their
        own read-only connection and work without ``start``; a path whose file does not exist yet holds no
        rows. ``record_feedback`` needs ``start``: it writes through the writer's connection. Rows wait in
        ``spill_dir`` (default ``<path>.spill``) while the file cannot be written; the journal (``journal``,
    see ``_journal.py``) lives there too."""

    # A busy file is waited on for 5 s (busy_timeout) before SQLite says it is locked: let it say so,
    # rather than give up first and leave a feedback to commit after its caller was told it failed.
    ASK_TIMEOUT_S = 6.0

    def __init__(
        self,
        path: str,
        *,
        queue_size: int = 10000,
        spill_dir: str | None = None,
        spill_max_bytes: int = SPILL_MAX_BYTES,
        journal: bool = True,
    ) -> None:
        super().__init__(
            queue_size=queue_size,
            spill_dir=spill_dir if spill_dir is not None else f"{path}.spill",
            spill_max_bytes=spill_max_bytes,
            journal=journal,
        )
        self.path = path
        self._store_name = f"SQLite at {path}"
        self._conn: sqlite3.Connection | None = None  # the writer's, and only the writer's
        # The writer's batches and record_feedback both run on self._conn, each from whichever
        # executor thread asyncio.to_thread picks, and may overlap: one sqlite3 connection has one
        # transaction, so unserialised, a feedback could be committed or rolled back with a batch (or
        # hit "cannot start a transaction within a transaction"). Every use of self._conn, close
        # included, holds this lock. A second connection for feedback would avoid the lock, but the
        # two would then contend for SQLite's single write lock anyway (one writer per file), with
        # busy-timeouts instead of a plain wait; a feedback waits at most one batch (milliseconds).
        self._conn_lock = threading.Lock()

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
            _migrate(conn)
        except BaseException:
            conn.close()
            raise
        return conn

    def _encode(self, row: LedgerRow) -> tuple[Any, ...]:
        # On the event loop, so that the thread only holds the GIL for sqlite itself.
        return _encode(row)

    async def _write_records(self, records: list[Any]) -> None:
        await asyncio.to_thread(self._insert, records)

    async def _ping(self) -> None:
        await asyncio.to_thread(self._try_write_lock)

    def _try_write_lock(self) -> None:
        with self._conn_lock:
            conn = self._conn
            assert conn is not None, "writer connection used before start()"
            conn.execute("BEGIN IMMEDIATE")  # takes the write lock: the file can be written
            conn.execute("ROLLBACK")

    def _classify(self, exc: BaseException) -> Kind:
        if isinstance(exc, sqlite3.OperationalError):
            message = str(exc).lower()
            return "unavailable" if any(m in message for m in _UNAVAILABLE) else "unknown"
        if isinstance(exc, sqlite3.DataError | sqlite3.IntegrityError | sqlite3.InterfaceError):
            return "data"
        if isinstance(exc, sqlite3.ProgrammingError):  # "Error binding parameter …": an odd value
            return "data" if "binding" in str(exc).lower() else "unknown"
        return super()._classify(exc)

    def _insert(self, values: list[tuple[Any, ...]]) -> None:
        with self._conn_lock:
            conn = self._conn
            assert conn is not None, "writer connection used before start()"
            conn.execute("BEGIN")
            try:
                conn.executemany(_INSERT, values)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    async def record_feedback(self, feedback: Feedback) -> None:
        """Store one feedback, committed when this returns (not through the write-behind queue). Raises
        LedgerUnavailable at once while the file cannot be written."""
        if self._closed:
            raise RuntimeError("ledger is closed")
        if self._writer is None:
            raise RuntimeError("ledger is not started: await start() first")
        values = (feedback.request_id, feedback.ts, feedback.score, feedback.comment, feedback.source)
        await self._ask(asyncio.to_thread(self._insert_feedback, values))

    def _insert_feedback(self, values: tuple[Any, ...]) -> None:
        with self._conn_lock:
            conn = self._conn
            if conn is None:  # close() ran between the check in record_feedback and now
                raise RuntimeError("ledger is closed")
            # Outside BEGIN … COMMIT the single INSERT is its own transaction, committed on return
            # (to the WAL, with synchronous=NORMAL like the rows: it survives the process dying).
            conn.execute(_INSERT_FEEDBACK, values)

    async def _close_store(self) -> None:
        await asyncio.to_thread(self._close_conn)

    def _close_conn(self) -> None:
        with self._conn_lock:
            conn, self._conn = self._conn, None
            if conn is not None:
                conn.close()

    async def fetch(self, *, since: float | None = None, limit: int | None = None) -> list[LedgerRow]:
        """Rows in arrival order (oldest first), optionally only those at or after ``since``."""
        where = ""
        params: list[Any] = []
        if since is not None:
            where += " WHERE ts >= ?"
            params.append(since)
        where += " ORDER BY ts, rowid"
        if limit is not None:
            where += " LIMIT ?"
            params.append(limit)
        records = await asyncio.to_thread(self._read, _select_requests(where, params))
        return [_decode(record) for record in records]

    async def get(self, request_id: str) -> LedgerRow | None:
        """The row of one request, if it has been written (``flush`` first to see queued rows). Raises
        LedgerUnavailable at once while the file cannot be written (the row may be in the spill)."""
        query = _select_requests(" WHERE id = ?", [request_id])
        records = await self._ask(asyncio.to_thread(self._read, query))
        return _decode(records[0]) if records else None

    async def count(self) -> int:
        records = await asyncio.to_thread(
            self._read, lambda conn: conn.execute("SELECT count(*) FROM requests").fetchall()
        )
        return int(records[0][0]) if records else 0

    async def fetch_feedback(self, *, since: float | None = None) -> list[Feedback]:
        """Every feedback in arrival order, optionally only those at or after ``since``."""
        sql = _FEEDBACK_SELECT
        params: list[Any] = []
        if since is not None:
            sql += " WHERE ts >= ?"
            params.append(since)
        sql += " ORDER BY ts, rowid"

        def query(conn: sqlite3.Connection) -> list[tuple[Any, ...]]:
            if not _has_table(conn, "feedback"):  # a version 1 file no writer has migrated yet
                return []
            return conn.execute(sql, params).fetchall()

        records = await asyncio.to_thread(self._read, query)
        return [Feedback(request_id=r[0], ts=r[1], score=r[2], comment=r[3], source=r[4]) for r in records]

    def _read(self, query: _Query) -> list[tuple[Any, ...]]:
        if not Path(self.path).exists():
            return []
        conn = sqlite3.connect(self.path)
        try:
            # Reads never create or migrate anything: they run without start(), e.g. a report on a
            # ledger file another process (maybe an older version) is writing.
            conn.execute("PRAGMA query_only=1")
            return query(conn)
        finally:
            conn.close()


def _migrate(conn: sqlite3.Connection) -> None:
    """Create the schema, or bring a version 1 file up to date, in one transaction."""
    # IMMEDIATE takes the write lock before reading table_info, so two processes starting on one
    # version 1 file cannot both decide to add the column (the second waits, then sees it).
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.execute(_CREATE_REQUESTS)
        if not _has_column(conn, "requests", "prompt"):
            conn.execute(_ADD_PROMPT)
        for statement in _SCHEMA_REST:
            conn.execute(statement)
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def _has_column(conn: sqlite3.Connection, table: str, column: str) -> bool:
    return any(info[1] == column for info in conn.execute(f"PRAGMA table_info({table})"))


def _has_table(conn: sqlite3.Connection, table: str) -> bool:
    found = conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (table,))
    return found.fetchone() is not None


def _select_requests(tail: str, params: list[Any]) -> _Query:
    """A read of ``requests`` (``SELECT <columns> FROM requests`` + ``tail``) that also works on a
    version 1 file no writer has migrated: its rows read with a NULL prompt."""

    def query(conn: sqlite3.Connection) -> list[tuple[Any, ...]]:
        columns = _COLUMN_LIST
        if not _has_column(conn, "requests", "prompt"):
            columns = ", ".join(c if c != "prompt" else "NULL AS prompt" for c in _rows.COLUMNS)
        return conn.execute(f"SELECT {columns} FROM requests{tail}", params).fetchall()

    return query


def _encode(row: LedgerRow) -> tuple[Any, ...]:
    return (
        *_rows.row_values(row),
        _rows.dumps(row.features).decode(),
        _rows.dumps(row.decision).decode(),
        _rows.dumps(row.attempts).decode(),  # orjson writes each Attempt's fields, as attempts_to_json
        None if row.prompt is None else _rows.dumps(row.prompt).decode(),
    )


def _decode(record: tuple[Any, ...]) -> LedgerRow:
    n = len(_rows.SCALAR_COLUMNS)
    features, decision, attempts, prompt = record[n:]
    return _rows.build_row(
        record[:n],
        orjson.loads(features),
        orjson.loads(decision),
        orjson.loads(attempts),
        None if prompt is None else orjson.loads(prompt),
    )
