"""The scale-out ledger: one PostgreSQL table shared by every replica, written through asyncpg.

Tables: ``{table}`` (one row per request; ``prompt`` JSONB holds the captured messages, NULL when
prompts are not captured), ``{table}_feedback`` (append-only, several per request allowed) and
``{table}_schema_version``. A version 1 schema (no ``prompt`` column, no feedback table) is migrated
by ``start``.

While the server cannot be reached, rows wait in the spill (by default
``./tierwise-spill/<host>-<port>-<db>-<table>/``, from the working directory at construction).
"""

from __future__ import annotations

import asyncio
import os
import re
from typing import Any, NoReturn
from urllib.parse import urlsplit

import asyncpg
import orjson

from . import _rows
from ._queue import SPILL_MAX_BYTES, Kind, WriteBehindLedger
from .base import Feedback, LedgerRow

SCHEMA_VERSION = 2
CONNECT_TIMEOUT_S = 5.0
COMMAND_TIMEOUT_S = 60.0  # reads for reports may be long
# get() and record_feedback(): a caller waits on them. Their pool acquire (a connect, when the pool has
# none) and their query each get this long.
ASK_OPERATION_TIMEOUT_S = 2.0
CLOSE_POOL_TIMEOUT_S = 2.0

# The server is down, restarting, unreachable or out of resources: try again later.
_UNAVAILABLE = (
    asyncpg.PostgresConnectionError,
    asyncpg.exceptions.OperatorInterventionError,  # shutdown, cannot connect now, statement cancelled
    asyncpg.exceptions.InsufficientResourcesError,  # disk full, out of memory, too many connections
    asyncpg.exceptions.ReadOnlySQLTransactionError,  # a standby, mid-failover
    asyncpg.InterfaceError,  # the connection is closed, the pool is closing
)
# The row is wrong: the server rejects its values (out of range, constraint violations, too large), or
# asyncpg cannot encode them (OverflowError for an int a column cannot hold; its client-side DataError,
# a ValueError).
_DATA = (
    asyncpg.DataError,
    asyncpg.IntegrityConstraintViolationError,
    asyncpg.exceptions.ProgramLimitExceededError,
    OverflowError,
    TypeError,
    ValueError,
)
# Wrong credentials, database or privileges: start() fails on these rather than serve without a ledger.
_MISCONFIGURED = (
    asyncpg.exceptions.InvalidAuthorizationSpecificationError,
    asyncpg.exceptions.InvalidCatalogNameError,
    asyncpg.exceptions.InsufficientPrivilegeError,
    asyncpg.exceptions.ClientConfigurationError,
)

_TABLE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,47}")


class PostgresLedger(WriteBehindLedger):
    """Ledger in the PostgreSQL table ``table`` (created if missing) plus ``{table}_feedback`` and
    ``{table}_schema_version``. Every method but ``close`` needs ``start`` (which creates or migrates
    the schema)."""

    def __init__(
        self,
        url: str,
        *,
        queue_size: int = 10000,
        table: str = "tierwise_requests",
        spill_dir: str | None = None,
        spill_max_bytes: int = SPILL_MAX_BYTES,
        journal: bool = True,
    ) -> None:
        if not _TABLE_NAME.fullmatch(table):
            raise ValueError(
                f"ledger: table name {table!r} must be a plain identifier (letters, digits, _; at most 48)"
            )
        super().__init__(
            queue_size=queue_size,
            spill_dir=spill_dir if spill_dir is not None else _default_spill_dir(url, table),
            spill_max_bytes=spill_max_bytes,
            journal=journal,
        )
        self._url = url  # may hold a password: never logged or shown, see self.where
        self._password = urlsplit(url).password
        self.table = table
        self.where = _describe(url)
        self._store_name = f"PostgreSQL at {self.where}"
        self._pool: asyncpg.Pool | None = None
        t = f'"{table}"'
        cols = ", ".join(_rows.COLUMNS)
        # Batches go in by COPY into a per-connection temporary table, then one INSERT … SELECT:
        # for 500 rows that is about 40% faster than executemany, and ON CONFLICT still applies, so a
        # retried batch whose first try did commit never duplicates its rows.
        # The staging table copies the columns of the main table as they are when it is first created
        # on a connection. That is always after the schema step of _open(): _write_records only runs
        # once _open() has migrated, so a staging table without ``prompt`` cannot exist in this
        # process. (A replica still on version 1 has its own staging table without ``prompt`` and
        # inserts only its own columns: NULL prompt. Fine.)
        self._staging = f"{table}_incoming"
        self._create_staging = (
            f'CREATE TEMPORARY TABLE IF NOT EXISTS "{self._staging}" ON COMMIT DELETE ROWS '
            f"AS SELECT {cols} FROM {t} WITH NO DATA"
        )
        self._insert = (
            f'INSERT INTO {t} ({cols}) SELECT {cols} FROM "{self._staging}" ON CONFLICT (id) DO NOTHING'
        )
        self._select = f"SELECT {', '.join(_rows.COLUMNS)} FROM {t}"
        fb = f'"{table}_feedback"'
        self._insert_feedback = (
            f"INSERT INTO {fb} (request_id, ts, score, comment, source) VALUES ($1, $2, $3, $4, $5)"
        )
        self._select_feedback = f"SELECT request_id, ts, score, comment, source FROM {fb}"
        self._schema = f"""
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
                attempts JSONB NOT NULL,
                prompt JSONB
            );
            CREATE INDEX IF NOT EXISTS "{table}_ts" ON {t} (ts);
            CREATE TABLE IF NOT EXISTS {fb} (
                seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                request_id TEXT NOT NULL,
                ts DOUBLE PRECISION NOT NULL,
                score DOUBLE PRECISION NOT NULL,
                comment TEXT,
                source TEXT NOT NULL DEFAULT 'caller'
            );
            -- "_rid", not "_request_id": with a 48-character table name that would pass PostgreSQL's
            -- 63-byte identifier limit and be truncated (with a NOTICE on every start).
            CREATE INDEX IF NOT EXISTS "{table}_feedback_rid" ON {fb} (request_id);
            CREATE TABLE IF NOT EXISTS "{table}_schema_version" (version INTEGER NOT NULL);
            INSERT INTO "{table}_schema_version" (version)
                SELECT {SCHEMA_VERSION} WHERE NOT EXISTS (SELECT 1 FROM "{table}_schema_version");
            -- Never downgrades: a schema a newer version has written keeps its number.
            UPDATE "{table}_schema_version" SET version = {SCHEMA_VERSION} WHERE version < {SCHEMA_VERSION};
        """
        # Version 1 tables lack the column; ADD COLUMN appends it, the same place as in CREATE above.
        # Run only when the column is missing (see _open): ALTER TABLE takes an ACCESS EXCLUSIVE lock
        # even when IF NOT EXISTS makes it a no-op, which would stall every replica's reads and writes
        # (behind any long report query) on each start.
        self._add_prompt = f"ALTER TABLE {t} ADD COLUMN IF NOT EXISTS prompt JSONB"
        self._has_prompt = (
            "SELECT EXISTS (SELECT 1 FROM pg_attribute"
            " WHERE attrelid = $1::regclass AND attname = 'prompt' AND NOT attisdropped)"
        )

    async def _open(self) -> None:
        # min_size=0: connections are made when needed. With a floor, asyncpg would keep reconnecting
        # in the background through an outage, logging a traceback each time.
        pool = await asyncpg.create_pool(
            self._url,
            min_size=0,
            max_size=4,
            timeout=CONNECT_TIMEOUT_S,
            command_timeout=COMMAND_TIMEOUT_S,
            init=_init_connection,
        )
        try:
            async with pool.acquire(timeout=CONNECT_TIMEOUT_S) as conn, conn.transaction():
                # Replicas starting together would race on CREATE TABLE IF NOT EXISTS and ADD COLUMN
                # IF NOT EXISTS (neither is atomic in PostgreSQL); a transaction-scoped advisory lock
                # serialises them.
                await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", f"tierwise:{self.table}")
                await conn.execute(self._schema)
                if not await conn.fetchval(self._has_prompt, f'"{self.table}"'):
                    await conn.execute(self._add_prompt)
        except BaseException:
            pool.terminate()  # not close(): that waits on the server, which may be what failed
            raise
        self._pool = pool

    def _encode(self, row: LedgerRow) -> tuple[Any, ...]:
        return _encode(row)

    async def _write_records(self, records: list[Any]) -> None:
        async with self._acquire(timeout=self.WRITE_TIMEOUT_S) as conn, conn.transaction():
            await conn.execute(self._create_staging)
            await conn.copy_records_to_table(self._staging, records=records, columns=_rows.COLUMNS)
            await conn.execute(self._insert)

    async def _ping(self) -> None:
        async with self._acquire(timeout=CONNECT_TIMEOUT_S) as conn:
            await conn.fetchval("SELECT 1", timeout=CONNECT_TIMEOUT_S)

    def _classify(self, exc: BaseException) -> Kind:
        # _DATA before _UNAVAILABLE: asyncpg's client-side DataError is an InterfaceError too.
        if isinstance(exc, _DATA):
            return "data"
        if isinstance(exc, _UNAVAILABLE):
            return "unavailable"
        return super()._classify(exc)

    def _fatal_at_start(self, exc: BaseException) -> bool:
        return isinstance(exc, _MISCONFIGURED)

    def _raise_open_failure(self, exc: Exception) -> NoReturn:
        raise ConnectionError(
            f"ledger: cannot connect to PostgreSQL at {self.where}: {self._describe(exc)}"
        ) from None

    def _redact(self, text: str) -> str:
        return text.replace(self._password, "***") if self._password else text

    async def _close_store(self) -> None:
        if self._pool is not None:
            pool, self._pool = self._pool, None
            try:
                await asyncio.wait_for(pool.close(), CLOSE_POOL_TIMEOUT_S)
            except TimeoutError:  # a connection still held by a write abandoned on a dead server
                pool.terminate()

    async def fetch(self, *, since: float | None = None, limit: int | None = None) -> list[LedgerRow]:
        """Rows in arrival order (oldest first), optionally only those at or after ``since``."""
        sql = self._select
        params: list[Any] = []
        if since is not None:
            params.append(since)
            sql += f" WHERE ts >= ${len(params)}"
        sql += " ORDER BY ts, seq"
        if limit is not None:
            params.append(limit)
            sql += f" LIMIT ${len(params)}"
        async with self._acquire() as conn:
            records = await conn.fetch(sql, *params)
        return [_decode(r) for r in records]

    async def get(self, request_id: str) -> LedgerRow | None:
        """The row of one request, if it has been written (``flush`` first to see queued rows). Raises
        LedgerUnavailable at once while the server is unavailable (the row may be in the spill)."""
        self._check_started()
        return await self._ask(self._get(request_id))

    async def _get(self, request_id: str) -> LedgerRow | None:
        async with self._acquire(timeout=ASK_OPERATION_TIMEOUT_S) as conn:
            record = await conn.fetchrow(
                f"{self._select} WHERE id = $1", _no_nul(request_id), timeout=ASK_OPERATION_TIMEOUT_S
            )
        return None if record is None else _decode(record)

    async def record_feedback(self, feedback: Feedback) -> None:
        """Store one feedback, committed when this returns (not through the write-behind queue). Raises
        LedgerUnavailable at once while the server is unavailable."""
        if self._closed:
            raise RuntimeError("ledger is closed")
        self._check_started()
        await self._ask(self._insert_one_feedback(feedback))

    async def _insert_one_feedback(self, feedback: Feedback) -> None:
        comment = None if feedback.comment is None else _no_nul(feedback.comment)
        async with self._acquire(timeout=ASK_OPERATION_TIMEOUT_S) as conn:
            # One statement outside a transaction block: committed when execute returns.
            await conn.execute(
                self._insert_feedback,
                _no_nul(feedback.request_id),
                feedback.ts,
                feedback.score,
                comment,
                _no_nul(feedback.source),
                timeout=ASK_OPERATION_TIMEOUT_S,
            )

    async def fetch_feedback(self, *, since: float | None = None) -> list[Feedback]:
        """Every feedback in arrival order, optionally only those at or after ``since``."""
        sql = self._select_feedback
        params: list[Any] = []
        if since is not None:
            params.append(since)
            sql += " WHERE ts >= $1"
        sql += " ORDER BY ts, seq"
        async with self._acquire() as conn:
            records = await conn.fetch(sql, *params)
        return [Feedback(request_id=r[0], ts=r[1], score=r[2], comment=r[3], source=r[4]) for r in records]

    async def count(self) -> int:
        async with self._acquire() as conn:
            return int(await conn.fetchval(f'SELECT count(*) FROM "{self.table}"'))

    def _check_started(self) -> None:
        if self._pool is None and self._writer is None:
            raise RuntimeError("ledger is not started: await start() first")

    def _acquire(self, *, timeout: float = CONNECT_TIMEOUT_S) -> Any:
        self._check_started()
        if self._pool is None:  # started, but the server has not answered yet
            raise self._unavailable()
        return self._pool.acquire(timeout=timeout)


async def _init_connection(conn: asyncpg.Connection) -> None:
    # JSONB in binary form is a version byte then the JSON text: orjson encodes and decodes it,
    # which spares the extra str round trip of asyncpg's default text codec.
    await conn.set_type_codec(
        "jsonb", schema="pg_catalog", encoder=_encode_jsonb, decoder=_decode_jsonb, format="binary"
    )


def _encode_jsonb(value: Any) -> bytes:
    # Rows arrive already encoded (by _encode, one row at a time, so that a value JSON cannot hold
    # fails its own row and not a whole COPY).
    return value if type(value) is bytes else _jsonb(value)


def _jsonb(value: Any) -> bytes:
    data = _rows.dumps(value)
    if b"\\u0000" in data:  # PostgreSQL rejects NUL in JSONB and TEXT alike
        data = _rows.dumps(_scrub(value))
    return b"\x01" + data


def _decode_jsonb(data: bytes) -> Any:
    return orjson.loads(data[1:])


def _encode(row: LedgerRow) -> tuple[Any, ...]:
    scalars = tuple(_no_nul(v) if isinstance(v, str) else v for v in _rows.row_values(row))
    return (
        *scalars,
        _jsonb(row.features),
        _jsonb(row.decision),
        _jsonb(_rows.attempts_to_json(row.attempts)),
        None if row.prompt is None else _jsonb(row.prompt),
    )


def _decode(record: asyncpg.Record) -> LedgerRow:
    n = len(_rows.SCALAR_COLUMNS)
    return _rows.build_row(
        tuple(record)[:n], record["features"], record["decision"], record["attempts"], record["prompt"]
    )


def _no_nul(text: str) -> str:
    # A NUL from an upstream error message would otherwise fail the batch on every retry.
    return text.replace("\x00", "\ufffd") if "\x00" in text else text


def _scrub(value: Any) -> Any:
    if isinstance(value, str):
        return _no_nul(value)
    if isinstance(value, dict):
        return {_scrub(k): _scrub(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_scrub(v) for v in value]
    return value


def _default_spill_dir(url: str, table: str) -> str:
    parts = urlsplit(url)
    try:
        port = parts.port or 5432
    except ValueError:
        port = 0
    name = f"{parts.hostname or 'localhost'}-{port}-{parts.path.lstrip('/') or 'default'}-{table}"
    return os.path.abspath(os.path.join("tierwise-spill", re.sub(r"[^A-Za-z0-9._-]", "_", name)))


def _describe(url: str) -> str:
    """host:port/db of a PostgreSQL URL, without the user or password."""
    parts = urlsplit(url)
    try:
        port = parts.port or 5432
    except ValueError:
        port = "?"
    return f"{parts.hostname or 'localhost'}:{port}/{parts.path.lstrip('/') or '(default db)'}"
