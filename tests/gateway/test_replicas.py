"""What a SIGKILL loses, and replicas as one gateway.

A request's row is recorded (journaled) before the last byte of its answer is sent, JSON or streamed.
A gateway SIGKILLed right after answering requests (JSON and streamed) loses none of their rows: the
next start finds them in the journal and writes each once (SQLite and PostgreSQL). And a short run of
``bench/replicas.py`` (two replicas on the real PostgreSQL and Redis, one SIGKILLed mid-load, one
provider failing) finds every answered request in the ledger exactly once and the breaker's ejection
shared; it skips, saying why, when PostgreSQL or Redis is not there.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import subprocess
import sys
import uuid
from pathlib import Path

import aiohttp
import pytest
import yaml

from tests.fakes.upstream import FakeUpstream
from tests.harness import Stack, fleet_config, serve_log, start_serve
from tests.ledger.postgres_server import URL as POSTGRES
from tests.ledger.postgres_server import unreachable as postgres_unreachable
from tierwise.ledger import LedgerRow

ROOT = Path(__file__).resolve().parents[2]
# A database of its own: the run deletes the tierwise:* keys of the database it is given.
REDIS = os.environ.get("TIERWISE_TEST_REDIS_REPLICAS", "redis://127.0.0.1:6379/14")
MESSAGES = [{"role": "user", "content": "Classify: spam or not? 'WIN $$$ now'"}]


async def _answer(http: aiohttp.ClientSession, base: str, stream: bool) -> str:
    """One request, answered: its request id, once the client has the whole JSON body or ``[DONE]``."""
    body = {"model": "auto", "messages": MESSAGES, "max_tokens": 20, "stream": stream}
    async with http.post(f"{base}/v1/chat/completions", json=body) as r:
        assert r.status == 200
        request_id = r.headers["x-tierwise-request-id"]
        if stream:
            lines = [line.strip() async for line in r.content]
            assert lines[-2:] == [b"data: [DONE]", b""] or lines[-1] == b"data: [DONE]"
        else:
            assert (await r.json())["choices"]
    return request_id


@pytest.mark.parametrize("stream", [False, True])
async def test_a_request_is_recorded_before_its_answer_ends(stack: Stack, stream: bool) -> None:
    # A record() that takes a while: had the answer's end (the JSON body, or [DONE]) gone out before
    # its row was recorded, the client would see it first.
    ledger = stack.router.ledger
    record = ledger.record
    recorded: set[str] = set()

    async def slow_record(row: LedgerRow) -> None:
        await asyncio.sleep(0.2)
        await record(row)
        recorded.add(row.id)

    ledger.record = slow_record  # type: ignore[method-assign]
    body = {"model": "auto", "messages": MESSAGES, "max_tokens": 20, "stream": stream}
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"{stack.base_url}/chat/completions", json=body) as r,
    ):
        assert r.status == 200
        request_id = r.headers["x-tierwise-request-id"]
        if not stream:
            await r.read()
            assert request_id in recorded
            return
        async for line in r.content:
            if line.strip() == b"data: [DONE]":
                assert request_id in recorded
                return
    raise AssertionError("the stream did not end with [DONE]")


@pytest.mark.parametrize("ledger", ["sqlite", "postgres"])
async def test_a_sigkill_right_after_answers_loses_none_of_their_rows(tmp_path: Path, ledger: str) -> None:
    schema = f"tw_kill_{uuid.uuid4().hex[:10]}"
    if ledger == "postgres":
        reason = await postgres_unreachable()
        if reason:
            pytest.skip(reason)
        import asyncpg

        admin = await asyncpg.connect(POSTGRES, timeout=5)
        await admin.execute(f'CREATE SCHEMA "{schema}"')
        url = f"{POSTGRES}{'&' if '?' in POSTGRES else '?'}search_path={schema}"
    else:
        url = f"sqlite:///{tmp_path / 'ledger.db'}"
    upstream = await FakeUpstream(kind="openai", reply="one two three four five six seven eight").start()
    config = fleet_config({"cheap": upstream.url, "backup": upstream.url, "strong": upstream.url}, ledger=url)
    config["providers"]["strong"]["kind"] = "openai"
    config["storage"]["spill_dir"] = str(tmp_path / "spill")
    path = tmp_path / "tierwise.yaml"
    path.write_text(yaml.safe_dump(config))
    proc, base = await start_serve(path, stdout=asyncio.subprocess.DEVNULL)
    port = int(base.rpartition(":")[2])
    try:
        async with aiohttp.ClientSession() as http:
            answered: list[str] = []
            for start in range(0, 80, 8):  # 8 at a time, every other one streamed
                answered += await asyncio.gather(
                    *(_answer(http, base, i % 2 == 1) for i in range(start, start + 8))
                )
            proc.send_signal(signal.SIGKILL)  # at once: the write behind the last answers has not run
            assert await proc.wait() == -signal.SIGKILL
            assert list((tmp_path / "spill").glob("journal-*.jsonl"))
            proc, base = await start_serve(path, port=port, stdout=asyncio.subprocess.DEVNULL)
            # The start replays the journal; a graceful stop then flushes what it has.
            proc.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(proc.wait(), 30) == 0
        assert b"journaled by a process that stopped" in serve_log(proc)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        await upstream.stop()
        if ledger == "postgres":
            try:
                ids = [r["id"] for r in await admin.fetch(f'SELECT id FROM "{schema}".tierwise_requests')]
            finally:
                await admin.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
                await admin.close()
    if ledger == "sqlite":
        with sqlite3.connect(tmp_path / "ledger.db") as conn:
            ids = [row[0] for row in conn.execute("SELECT id FROM requests")]
    assert len(answered) == 80
    assert sorted(ids) == sorted(answered)  # every answered request once, nothing else
    assert not (tmp_path / "spill").exists()  # the journal replayed and deleted


async def test_replicas_behave_as_one_gateway_through_a_kill_and_a_failing_provider() -> None:
    command = [
        sys.executable,
        str(ROOT / "bench" / "replicas.py"),
        "--replicas",
        "2",
        "--requests",
        "200",
        "--concurrency",
        "20",
        # Early enough that requests remain for both replicas once replica 0 alone has seen the
        # provider fail long enough to eject it (its window also holds the successes before).
        "--kill-at",
        "0.2",
        "--fault-at",
        "0.4",
        "--redis",
        REDIS,
        "--postgres",
        POSTGRES,
    ]
    done = await asyncio.to_thread(
        subprocess.run, command, capture_output=True, text=True, timeout=120, cwd=ROOT
    )
    if done.returncode == 2:
        pytest.skip(json.loads(done.stdout)["skipped"])
    assert done.stdout, done.stderr[-3000:]
    summary = json.loads(done.stdout)
    assert summary["requests_sent"] == 200
    assert summary["answered"] >= 100, summary
    ledger = summary["ledger"]
    assert (ledger["answered_missing"], ledger["answered_duplicated"]) == (0, 0), summary
    assert ledger["answered_without_request_id_header"] == 0
    assert summary["kill"]["replica"] == 1
    cooldown = summary["cooldown_shared"]
    assert cooldown["ejection_opened_by"] == ["replica-0"], summary
    # Replica 1 never saw the provider fail, yet avoided it once replica 0 had ejected it.
    assert cooldown["calls_to_it_before_ejection"]["replica-1"] == 0, summary
    assert cooldown["requests_during_ejection"]["replica-1"] > 0, summary
    assert cooldown["calls_to_it_during_ejection"] == {"replica-0": 0, "replica-1": 0}, summary
    assert summary["ok"] and done.returncode == 0
