"""The PostgreSQL ledger while its server goes away under load and comes back, through a real TCP proxy
that resets, refuses or blackholes connections (skipped, saying why, when no server is reachable)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

asyncpg = pytest.importorskip("asyncpg", reason="the PostgreSQL ledger needs asyncpg")

from tests.fakes.tcp_proxy import TcpProxy  # noqa: E402
from tierwise.errors import LedgerUnavailable  # noqa: E402
from tierwise.ledger import Feedback  # noqa: E402
from tierwise.ledger.postgres import PostgresLedger  # noqa: E402

from .postgres_server import URL  # noqa: E402  (the `table` fixture comes from conftest.py)
from .rows import T0, make_row, spilled, wait_for  # noqa: E402

RECORD_BOUND_S = 0.5  # no record() may take longer, whatever the server does


@pytest.fixture
async def proxy() -> AsyncIterator[TcpProxy]:
    host_port = URL.split("@", 1)[1].split("/", 1)[0]
    host, _, port = host_port.partition(":")
    async with TcpProxy(host, int(port or 5432)) as p:
        yield p


def _through(proxy: TcpProxy) -> str:
    head, _, tail = URL.partition("@")
    return f"{head}@127.0.0.1:{proxy.port}/{tail.split('/', 1)[1]}"


def _ledger(proxy: TcpProxy, table: str, spill: Path, **options: int) -> PostgresLedger:
    ledger = PostgresLedger(_through(proxy), table=table, spill_dir=str(spill), **options)
    # Test-sized waits: the server is local, and tests must take seconds.
    ledger.RETRY_CAP_S = 0.3
    ledger.WRITE_TIMEOUT_S = 1.0
    ledger.ASK_TIMEOUT_S = 1.0
    ledger.CLOSE_TIMEOUT_S = ledger.CLOSE_DOWN_TIMEOUT_S = 1.0
    return ledger


async def _stored_ids(table: str) -> list[str]:
    """Every id in the table, read directly (not through the proxy), with repeats if there were any."""
    conn = await asyncpg.connect(URL, timeout=5)
    try:
        return [r[0] for r in await conn.fetch(f'SELECT id FROM "{table}"')]
    finally:
        await conn.close()


class Load:
    """A steady stream of record() calls (about 500 a second), timing each."""

    def __init__(self, ledger: PostgresLedger, prefix: str) -> None:
        self.ledger = ledger
        self.prefix = prefix
        self.ids: list[str] = []
        self.slowest = 0.0
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> Load:
        self._task = asyncio.create_task(self._run())
        return self

    async def stop(self) -> None:
        self._stop.set()
        assert self._task is not None
        await self._task

    async def _run(self) -> None:
        i = 0
        while not self._stop.is_set():
            row = make_row(i, prefix=self.prefix)
            started = time.monotonic()
            await self.ledger.record(row)
            self.slowest = max(self.slowest, time.monotonic() - started)
            self.ids.append(row.id)
            i += 1
            if i % 5 == 0:
                await asyncio.sleep(0.01)


@pytest.mark.parametrize("failure", ["refuse", "blackhole"])
async def test_an_outage_under_load_blocks_nothing_and_every_row_lands_once(
    table: str, proxy: TcpProxy, tmp_path: Path, failure: str
) -> None:
    spill = tmp_path / "spill"
    ledger = _ledger(proxy, table, spill, queue_size=200)
    await ledger.start()
    load = Load(ledger, "load").start()
    await asyncio.sleep(0.3)
    assert ledger.health().state == "ok"

    proxy.refuse() if failure == "refuse" else proxy.blackhole()
    # Refused: known at once. Blackholed: once a write has had no answer for WRITE_TIMEOUT_S (rows
    # past the full queue go to the spill meanwhile).
    await wait_for(lambda: ledger.health().last_error is not None, timeout=5)
    spilling = ledger.health().spill_bytes
    # The rows go to disk, not into memory. Not within a fixed time: when the outage breaks a write in
    # flight it is known at once, and the queue (200 rows, about 0.45 s of this load) must fill up
    # again before rows spill.
    await wait_for(lambda: ledger.health().spill_bytes > spilling, timeout=5)
    health = ledger.health()
    assert health.state == "degraded"
    assert health.last_error is not None
    # What a caller waits on fails at once, saying when to come back.
    started = time.monotonic()
    with pytest.raises(LedgerUnavailable) as caught:
        await ledger.record_feedback(Feedback(request_id=load.ids[0], score=1.0, ts=T0))
    with pytest.raises(LedgerUnavailable):
        await ledger.get(load.ids[0])
    assert time.monotonic() - started < RECORD_BOUND_S
    assert caught.value.retry_after is not None and caught.value.retry_after >= 1

    await proxy.restore()
    await asyncio.sleep(0.3)
    await load.stop()
    await ledger.flush()
    await wait_for(lambda: ledger.health().state == "ok", timeout=10)
    assert load.slowest < RECORD_BOUND_S
    stored = await _stored_ids(table)
    assert len(stored) == len(set(stored))  # none twice
    assert set(stored) == set(load.ids)  # none lost
    health = ledger.health()
    assert health.spill_bytes == 0 and spilled(spill) == []
    assert health.replayed_rows > 0 and health.lost_rows == 0 and health.dead_letters == 0
    assert await ledger.get(load.ids[-1]) is not None  # and reads work again
    await ledger.close()


async def test_rows_spilled_by_a_close_during_an_outage_land_once_after_the_next_start(
    table: str, proxy: TcpProxy, tmp_path: Path
) -> None:
    spill = tmp_path / "spill"
    ledger = _ledger(proxy, table, spill)
    await ledger.start()
    load = Load(ledger, "first").start()
    await asyncio.sleep(0.3)
    proxy.refuse()
    await asyncio.sleep(0.3)
    await load.stop()
    started = time.monotonic()
    await ledger.close()  # SIGTERM mid-outage: every accepted row goes to the spill
    assert time.monotonic() - started < ledger.CLOSE_TIMEOUT_S + 2
    assert ledger.health().lost_rows == 0
    stored = set(await _stored_ids(table))
    waiting = {row.id for row in spilled(spill)}
    # Every row not in the table waits in the spill (a few may be in both: a batch whose commit the
    # server received as the connection was cut; replaying them skips them).
    assert set(load.ids) - stored <= waiting <= set(load.ids)

    # The next process starts while the server is still away: start neither fails nor hangs.
    later = _ledger(proxy, table, spill)
    started = time.monotonic()
    await later.start()
    assert time.monotonic() - started < RECORD_BOUND_S
    assert later.health().state == "degraded"
    await later.record(make_row(0, prefix="second"))
    await proxy.restore()
    await wait_for(lambda: later.health().state == "ok", timeout=10)
    stored_now = await _stored_ids(table)
    assert len(stored_now) == len(set(stored_now))
    assert set(stored_now) == set(load.ids) | {"second-000000"}
    assert spilled(spill) == []
    await later.close()
    assert not spill.exists()
