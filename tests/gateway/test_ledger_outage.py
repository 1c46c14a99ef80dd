"""The ledger's PostgreSQL goes away under a real `tierwise serve`: requests are still answered, feedback
says 503 with Retry-After at once, a SIGTERM mid-outage loses no row, and the next serve writes them
(skipped, saying why, when no PostgreSQL server is reachable)."""

from __future__ import annotations

import asyncio
import signal
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
import yaml

asyncpg = pytest.importorskip("asyncpg", reason="the PostgreSQL ledger needs asyncpg")

from tests.fakes.tcp_proxy import TcpProxy  # noqa: E402
from tests.fakes.upstream import FakeUpstream  # noqa: E402
from tests.harness import fleet_config, serve_log, start_serve  # noqa: E402
from tests.ledger.postgres_server import URL, unreachable  # noqa: E402

BODY = {"model": "auto", "messages": [{"role": "user", "content": "Classify: spam or not? 'WIN $$$'"}]}
REQUEST_TIMEOUT_S = 5.0


@pytest.fixture
async def database() -> AsyncIterator[str]:
    """A database of its own (the gateway's ledger uses the default table name); dropped afterwards."""
    reason = await unreachable()
    if reason:
        pytest.skip(reason)
    name = f"tw_test_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(URL, timeout=5)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        yield name
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


async def _stop(proc: asyncio.subprocess.Process) -> bytes:
    proc.send_signal(signal.SIGTERM)
    await asyncio.wait_for(proc.communicate(), 30)
    stderr = serve_log(proc)
    assert proc.returncode == 0, stderr.decode()
    return stderr


async def _chat(http: aiohttp.ClientSession, base: str) -> tuple[int, str | None, float]:
    started = time.monotonic()
    async with http.post(f"{base}/v1/chat/completions", json=BODY) as r:
        await r.read()
        return r.status, r.headers.get("x-tierwise-request-id"), time.monotonic() - started


async def _stored(database: str, ids: list[str]) -> dict[str, int]:
    """How many times each of ``ids`` is in the ledger table (read directly, not through the proxy)."""
    conn = await asyncpg.connect(URL.rsplit("/", 1)[0] + f"/{database}", timeout=5)
    try:
        if not await conn.fetchval("SELECT to_regclass('tierwise_requests') IS NOT NULL"):
            return {}
        records = await conn.fetch(
            "SELECT id, count(*) FROM tierwise_requests WHERE id = ANY($1) GROUP BY id", ids
        )
        return {r[0]: r[1] for r in records}
    finally:
        await conn.close()


async def test_a_store_outage_under_serve_loses_no_answered_request(database: str, tmp_path: Path) -> None:
    head, _, rest = URL.partition("@")
    host, _, port = rest.split("/", 1)[0].partition(":")
    upstream = await FakeUpstream(kind="openai", reply="not spam").start()
    proxy = await TcpProxy(host, int(port or 5432)).start()
    spill = tmp_path / "spill"
    config = fleet_config(
        {"cheap": upstream.url, "backup": upstream.url, "strong": "http://127.0.0.1:9"},
        ledger=f"{head}@127.0.0.1:{proxy.port}/{database}",
    )
    config["storage"]["spill_dir"] = str(spill)
    path = tmp_path / "tierwise.yaml"
    path.write_text(yaml.safe_dump(config))
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)
    procs: list[asyncio.subprocess.Process] = []
    try:
        proc, base = await start_serve(path)
        procs.append(proc)
        async with aiohttp.ClientSession(timeout=timeout) as http:
            before = [await _chat(http, base) for _ in range(5)]
            proxy.refuse()  # the server goes away: open connections reset, new ones refused
            during = []
            for _ in range(8):
                during += await asyncio.gather(*(_chat(http, base) for _ in range(10)))
                await asyncio.sleep(0.05)
            # Feedback cannot be stored: 503 at once, and when to come back.
            started = time.monotonic()
            async with http.post(f"{base}/v1/feedback", json={"request_id": during[-1][1], "score": 1}) as r:
                feedback_status, retry_after, error = r.status, r.headers.get("Retry-After"), await r.json()
            feedback_s = time.monotonic() - started
            async with http.get(f"{base}/healthz") as r:  # honest: serving, but the ledger is degraded
                health_status, health = r.status, await r.json()
        stderr = await _stop(proc)  # SIGTERM mid-outage
        assert health_status == 200 and health["status"] == "degraded"
        assert health["ledger"]["state"] == "degraded" and health["ledger"]["spilled_rows"] > 0
        assert health["ledger"]["last_error"] and "@" not in health["ledger"]["last_error"]
        assert all(status == 200 for status, _, _ in before + during)
        assert max(seconds for _, _, seconds in during) < 1.0  # none waited on the ledger
        assert feedback_status == 503 and error["error"]["code"] == "ledger_unavailable"
        assert retry_after is not None and int(retry_after) >= 1
        assert feedback_s < 1.0
        assert b"wait in the spill" in stderr
        assert list(spill.glob("spill-*.jsonl"))

        await proxy.restore()
        proc, base = await start_serve(path)  # the next serve, same configuration
        procs.append(proc)
        answered = [request_id for _, request_id, _ in before + during if request_id]
        assert len(answered) == 85
        deadline = time.monotonic() + 15
        while (stored := await _stored(database, answered)).keys() != set(answered):
            assert time.monotonic() < deadline, f"{len(stored)} of {len(answered)} rows stored"
            await asyncio.sleep(0.1)
        assert set(stored.values()) == {1}  # each exactly once
        feedback = {"request_id": during[-1][1], "score": 1}
        async with (
            aiohttp.ClientSession(timeout=timeout) as http,
            http.post(f"{base}/v1/feedback", json=feedback) as r,
        ):
            assert r.status == 200  # stored now: the row is in the table
        async with aiohttp.ClientSession(timeout=timeout) as http, http.get(f"{base}/healthz") as r:
            assert (await r.json())["status"] == "ok"
        await _stop(proc)
        assert list(spill.glob("spill-*")) == []
    finally:
        for proc in procs:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        await proxy.stop()
        await upstream.stop()
