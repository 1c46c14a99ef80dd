"""Hostile input against a real ``tierwise serve``: does anything get a 5xx, hang, or stop the ledger?

    python bench/fuzz.py [--probes 10000] [--seed 1] [--concurrency 16]

Starts three fake upstreams and ``tierwise serve`` (prompt capture and a cascade on, the default
limits, a SQLite ledger in a temporary directory), sends the seeded probes of ``tests/fakes/hostile.py``
(malformed JSON and encodings, fields of the wrong type or range, nesting to 5,000 levels, oversized
requests, hostile hint headers and metadata, bad feedback, wrong paths), stops the gateway with SIGTERM
and reads its ledger. Exits 1 if any probe got a 5xx or no answer, if a well-formed request was not
answered 200, or if the ledger's rows of answered requests differ from the answers. ``make test`` runs
2,000 of them (tests/gateway/test_fuzz.py).
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.fakes.hostile import hostile_requests, send_probes
from tests.fakes.upstream import FakeUpstream
from tests.gateway.test_fuzz import fuzz_config
from tests.harness import API_KEY, serve_log, start_serve  # noqa: F401  (API_KEY: sets TW_TEST_KEY for the fleet)


async def run(probes: int, seed: int, concurrency: int) -> int:
    upstreams = [
        await FakeUpstream(kind="openai", reply="cheap answer").start(),
        await FakeUpstream(kind="openai", reply="backup answer").start(),
        await FakeUpstream(kind="anthropic", reply="strong answer").start(),
    ]
    with tempfile.TemporaryDirectory(prefix="tierwise-fuzz-") as tmp:
        db = Path(tmp) / "ledger.db"
        urls = dict(zip(("cheap", "backup", "strong"), (u.url for u in upstreams), strict=True))
        config = Path(tmp) / "tierwise.yaml"
        config.write_text(yaml.safe_dump(fuzz_config(urls, f"sqlite:///{db}")))
        proc, base = await start_serve(config, stdout=asyncio.subprocess.DEVNULL)
        try:
            started = time.perf_counter()
            result = await send_probes(
                base, list(hostile_requests(seed=seed, n=probes)), concurrency=concurrency
            )
            elapsed = time.perf_counter() - started
            proc.send_signal(signal.SIGTERM)
            code = await asyncio.wait_for(proc.wait(), 60)
            stderr = serve_log(proc).decode(errors="replace")
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
            for upstream in upstreams:
                await upstream.stop()
        with sqlite3.connect(db) as conn:
            rows = conn.execute("SELECT id, http_status FROM requests").fetchall()
    answered_rows = {row_id for row_id, status in rows if status == 200}
    rate = result.sent / elapsed
    print(f"{result.sent} probes (seed {seed}) in {elapsed:.1f} s, {rate:.0f}/s, concurrency {concurrency}")
    print("statuses: " + ", ".join(f"{s}: {n}" for s, n in sorted(result.statuses.items())))
    checks = {
        "5xx answers": result.server_errors,
        "no answer within 20 s": result.hangs,
        "4xx without an OpenAI error body": result.invalid_answers,
        "well-formed requests not answered 200": result.failed_valid,
        "answered requests without a ledger row": sorted(result.answered_ids - answered_rows),
        "ledger rows of 200s nobody received": sorted(answered_rows - result.answered_ids),
        "tracebacks in the gateway's log": [line for line in stderr.splitlines() if "Traceback" in line],
    }
    failed = False
    for name, items in checks.items():
        print(f"{name}: {len(items)}")
        for item in items[:5]:
            print(f"    {item}")
        failed = failed or bool(items)
    print(f"gateway exit code: {code}; ledger rows: {len(rows)} ({len(answered_rows)} answered 200)")
    return 1 if failed or code != 0 else 0


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--probes", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()
    return asyncio.run(run(args.probes, args.seed, args.concurrency))


if __name__ == "__main__":
    sys.exit(main())
