"""What does the ledger's journal cost per row? One command, about 20 seconds:

    python bench/journal.py [--rows 20000] [--rounds 5]

A SQLite ledger in a temporary directory takes ``--rows`` rows shaped like a gateway's (features,
decision, two attempts, no prompt), with ``storage.journal`` on and off, ``--rounds`` times each,
alternating. For each it measures the wall time of the ``record`` calls alone (what a request pays on
the event loop before its answer is sent) and the process CPU time of recording and writing every
row (``record`` + ``flush``: the batched SQLite writes and, with the journal, retiring its parts). The
JSON summary gives the median of each in µs per row, and the journal's share: on minus off.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from tierwise.ledger import Attempt, LedgerRow, SqliteLedger  # noqa: E402


def gateway_row(i: int) -> LedgerRow:
    """A row like the gateway's for a short request that fell back once."""
    return LedgerRow(
        id=f"req_{i:024x}",
        ts=1_760_000_000.0 + i / 1000,
        requested_model="auto",
        stream=bool(i % 2),
        features={
            "task": "classify",
            "task_source": "inferred",
            "input_tokens": 16,
            "max_output_tokens": 50,
            "turns": 1,
            "risk": "normal",
            "quality": "normal",
            "has_code": False,
            "has_tools": False,
            "stream": bool(i % 2),
        },
        decision={
            "chain": ["draft-1", "review-1"],
            "tier": "draft",
            "reason": "rule cheap-task: task='classify' in "
            "[summarize,classify,extract,translate,format,qa] → draft",
            "rule": "cheap-task",
            "layer": "rules",
        },
        policy_version="fabe598ca020",
        status="ok",
        http_status=200,
        final_model="review-1",
        tier="review",
        input_tokens=16,
        output_tokens=8,
        cost_usd=0.000048,
        counterfactual_cost_usd=0.000168,
        latency_ms=12.5,
        ttft_ms=4.2 if i % 2 else None,
        attempts=[
            Attempt(
                model="draft-1",
                provider="cheap",
                status="UpstreamUnavailable",
                latency_ms=3.1,
                http_status=500,
                error="draft-1: HTTP 500",
            ),
            Attempt(
                model="review-1",
                provider="backup",
                status="ok",
                latency_ms=9.0,
                input_tokens=16,
                output_tokens=8,
                cost_usd=0.000048,
            ),
        ],
    )


async def one_round(rows: list[LedgerRow], *, journal: bool, workdir: Path) -> tuple[float, float]:
    """(µs per row of the record calls, µs of process CPU per row of record + flush)."""
    path = workdir / f"ledger-{journal}-{time.monotonic_ns()}.db"
    ledger = SqliteLedger(str(path), journal=journal, queue_size=len(rows))
    await ledger.start()
    cpu = time.process_time()
    wall = 0.0
    # In slices, as requests arrive: the writer runs between them, as it does under load.
    for start in range(0, len(rows), 50):
        began = time.perf_counter()
        for row in rows[start : start + 50]:
            await ledger.record(row)
        wall += time.perf_counter() - began
        await asyncio.sleep(0)
    await ledger.flush()
    cpu = time.process_time() - cpu
    await ledger.close()
    assert await ledger.count() == len(rows)
    return wall / len(rows) * 1e6, cpu / len(rows) * 1e6


async def run(args: argparse.Namespace) -> dict[str, Any]:
    rows = [gateway_row(i) for i in range(args.rows)]
    results: dict[bool, list[tuple[float, float]]] = {True: [], False: []}
    with tempfile.TemporaryDirectory(prefix="tierwise-journal-") as tmp:
        await one_round(rows[:1000], journal=True, workdir=Path(tmp))  # warm up
        for _ in range(args.rounds):
            for journal in (False, True):
                results[journal].append(await one_round(rows, journal=journal, workdir=Path(tmp)))

    def median(journal: bool, index: int) -> float:
        return statistics.median(r[index] for r in results[journal])

    return {
        "command": "python bench/journal.py " + " ".join(sys.argv[1:]),
        "rows": args.rows,
        "rounds": args.rounds,
        "record_us_per_row": {
            "journal_off": round(median(False, 0), 2),
            "journal_on": round(median(True, 0), 2),
        },
        "cpu_us_per_row_record_and_write": {
            "journal_off": round(median(False, 1), 2),
            "journal_on": round(median(True, 1), 2),
        },
        "journal_us_per_row": {
            "record": round(median(True, 0) - median(False, 0), 2),
            "cpu": round(median(True, 1) - median(False, 1), 2),
        },
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    print(json.dumps(asyncio.run(run(args)), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
