"""The PostgreSQL server the tests use (``TIERWISE_TEST_POSTGRES``; trust auth on 127.0.0.1 by default)
and a table of each test's own on it. Tests that need it skip, saying why, when none is reachable."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator

import pytest

URL = os.environ.get("TIERWISE_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")


async def unreachable() -> str | None:
    """Why no test can use the server, or None when it answers."""
    asyncpg = pytest.importorskip("asyncpg", reason="the PostgreSQL ledger needs asyncpg")
    from tierwise.ledger.postgres import PostgresLedger

    try:
        conn = await asyncpg.connect(URL, timeout=2)
    except (OSError, TimeoutError, asyncpg.PostgresError) as exc:
        return f"no PostgreSQL at {PostgresLedger(URL).where}: {type(exc).__name__}: {exc}"
    await conn.close()
    return None


@pytest.fixture
async def table() -> AsyncIterator[str]:
    """A table name unique to the test; the table is dropped afterwards."""
    reason = await unreachable()
    if reason:
        pytest.skip(reason)
    import asyncpg

    name = f"tw_test_{uuid.uuid4().hex[:12]}"
    yield name
    conn = await asyncpg.connect(URL, timeout=5)
    try:
        await conn.execute(
            f'DROP TABLE IF EXISTS "{name}"; DROP TABLE IF EXISTS "{name}_schema_version"; '
            f'DROP TABLE IF EXISTS "{name}_feedback"'
        )
    finally:
        await conn.close()
