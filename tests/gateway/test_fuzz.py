"""A seeded fuzz run against a real ``tierwise serve``: 2,000 malformed bodies, headers and hints.

Only 4xx in the OpenAI format for what is malformed, 200 for what is not; no 5xx, no hang; and
afterwards the ledger has written one row for every answered request. ``bench/fuzz.py`` runs 10,000.
"""

from __future__ import annotations

import asyncio
import signal
import sqlite3
from pathlib import Path

import yaml

from tests.fakes.hostile import hostile_requests, send_probes
from tests.fakes.upstream import FakeUpstream
from tests.harness import fleet_config, serve_log, start_serve

PROBES = 2000


def fuzz_config(urls: dict[str, str], ledger: str) -> dict:
    """The test fleet with prompt capture on and a cascade on draft answers: both read the body."""
    config = fleet_config(urls, ledger=ledger)
    config["storage"] = {"ledger": ledger, "capture_prompts": True}
    config["server"] = {}  # the default limits, as a user runs it
    config["policy"]["cascade"] = {
        "verifiers": [{"kind": "json_schema"}, {"kind": "tool_calls"}, {"kind": "non_empty"}],
        "tiers": ["draft"],
    }
    return config


async def test_hostile_requests_get_4xx_and_the_ledger_keeps_writing(tmp_path: Path) -> None:
    upstreams = [
        await FakeUpstream(kind="openai", reply="cheap answer").start(),
        await FakeUpstream(kind="openai", reply="backup answer").start(),
        await FakeUpstream(kind="anthropic", reply="strong answer").start(),
    ]
    db = tmp_path / "ledger.db"
    urls = dict(zip(("cheap", "backup", "strong"), (u.url for u in upstreams), strict=True))
    path = tmp_path / "tierwise.yaml"
    path.write_text(yaml.safe_dump(fuzz_config(urls, f"sqlite:///{db}")))
    proc, base = await start_serve(path)
    try:
        result = await send_probes(base, list(hostile_requests(seed=20261130, n=PROBES)), concurrency=8)
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 60) == 0
        stderr = serve_log(proc)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        for upstream in upstreams:
            await upstream.stop()
    assert result.sent == PROBES
    assert result.server_errors == []
    assert result.hangs == []
    assert result.invalid_answers == []
    assert result.failed_valid == []
    assert sum(n for status, n in result.statuses.items() if 400 <= status < 500) > PROBES // 2
    assert len(result.answered_ids) > PROBES // 10
    assert b"Traceback" not in stderr, stderr.decode()[-3000:]
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT id, http_status FROM requests").fetchall()
    answered = [row_id for row_id, status in rows if status == 200]
    assert sorted(answered) == sorted(result.answered_ids)  # one row per answered request, no more
