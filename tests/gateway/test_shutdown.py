"""A graceful stop under load loses no ledger row: `tierwise serve` as a real process, SIGTERM mid-load."""

from __future__ import annotations

import asyncio
import signal
import sqlite3
from pathlib import Path

import aiohttp
import orjson
import yaml

from tests.fakes.upstream import FakeUpstream
from tests.harness import fleet_config, start_serve


async def test_sigterm_under_load_keeps_every_answered_row(tmp_path: Path) -> None:
    upstream = await FakeUpstream(kind="openai", reply="ok", delay_s=0.3).start()
    upstream.fault("slow")  # every answer takes 0.3 s, so many requests are in flight at SIGTERM
    db = tmp_path / "ledger.db"
    config = fleet_config(
        {"cheap": upstream.url, "backup": upstream.url, "strong": "http://127.0.0.1:9"},
        ledger=f"sqlite:///{db}",
    )
    config["providers"]["strong"] = {"kind": "openai", "base_url": upstream.url}
    config["providers"]["cheap"]["timeouts"] = {"first_byte": 10, "total": 20}
    path = tmp_path / "tierwise.yaml"
    path.write_text(yaml.safe_dump(config))
    proc, base = await start_serve(path)
    try:
        body = {
            "model": "auto",
            "messages": [{"role": "user", "content": "Classify: spam or not? 'WIN $$$'"}],
        }

        async def one(http: aiohttp.ClientSession) -> str | None:
            try:
                async with http.post(f"{base}/v1/chat/completions", json=body) as r:
                    await r.read()
                    return r.headers.get("x-tierwise-request-id") if r.status == 200 else None
            except aiohttp.ClientError:
                return None  # refused after the listener closed: never accepted

        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
            tasks = [asyncio.create_task(one(http)) for _ in range(150)]
            # Stop it once requests are in flight upstream (a fixed sleep could come before the gateway
            # has read any on a busy machine); each takes 0.3 s there, so many are still running.
            for _ in range(200):
                if len(upstream.requests) >= 20:
                    break
                await asyncio.sleep(0.01)
            proc.send_signal(signal.SIGTERM)
            late = [asyncio.create_task(one(http)) for _ in range(50)]
            answered = [r for r in await asyncio.gather(*tasks, *late) if r]
        assert await asyncio.wait_for(proc.wait(), 30) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        await upstream.stop()
    assert len(answered) >= 100  # the in-flight requests were allowed to finish
    with sqlite3.connect(db) as conn:
        logged = {row[0] for row in conn.execute("SELECT id FROM requests")}
    assert set(answered) <= logged
    assert len(logged) == len(upstream.requests)  # one row per request that reached an upstream


async def test_a_stream_cut_by_the_stop_ends_with_an_error_event(tmp_path: Path) -> None:
    # A stream still running when --shutdown-timeout runs out used to be cut with neither an error
    # event nor [DONE]: a client could not tell it from a complete answer.
    upstream = await FakeUpstream(kind="openai", reply="word " * 400, chunk_delay_s=0.02).start()
    db = tmp_path / "ledger.db"
    config = fleet_config(
        {"cheap": upstream.url, "backup": upstream.url, "strong": upstream.url}, ledger=f"sqlite:///{db}"
    )
    config["providers"]["strong"]["kind"] = "openai"
    path = tmp_path / "tierwise.yaml"
    path.write_text(yaml.safe_dump(config))
    proc, base = await start_serve(path, "--shutdown-timeout", "1.5")
    events: list[bytes] = []
    try:
        body = {
            "model": "auto",
            "stream": True,
            "messages": [{"role": "user", "content": "Classify: spam or not? 'WIN $$$'"}],
        }
        async with aiohttp.ClientSession() as http, http.post(f"{base}/v1/chat/completions", json=body) as r:
            assert r.status == 200
            request_id = r.headers["x-tierwise-request-id"]
            stopped_at = None
            async for line in r.content:
                if line.startswith(b"data: "):
                    events.append(line[6:].strip())
                if len(events) == 5 and stopped_at is None:
                    proc.send_signal(signal.SIGTERM)
                    stopped_at = asyncio.get_running_loop().time()
        assert await asyncio.wait_for(proc.wait(), 30) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        await upstream.stop()
    assert 10 < len(events) < 400  # it was streaming, and it did not finish
    assert b"[DONE]" not in events
    last = orjson.loads(events[-1])
    assert last["error"]["code"] == "stream_interrupted"
    assert "gateway stopped" in last["error"]["message"]
    with sqlite3.connect(db) as conn:
        status, http_status = conn.execute(
            "SELECT status, http_status FROM requests WHERE id = ?", (request_id,)
        ).fetchone()
    assert (status, http_status) == ("interrupted", 503)  # the server's doing, not the client's
