"""Ledger rows for tests: every field set, with None fields, attempts and prompts varying by index;
and what a spill directory holds."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from tierwise.ledger import Attempt, LedgerRow
from tierwise.ledger._rows import row_from_json, row_values

T0 = 1_760_000_000.0


def make_prompt(i: int) -> list[dict[str, Any]] | None:
    """No prompt (not captured) for every third row; otherwise messages, some with a system turn and
    non-ASCII text."""
    if i % 3 == 2:
        return None
    messages: list[dict[str, Any]] = [{"role": "user", "content": f"question {i}"}]
    if i % 4 == 0:
        messages.insert(0, {"role": "system", "content": "réponds en français — 简洁 🙂"})
    return messages


def make_row(i: int, *, prefix: str = "req") -> LedgerRow:
    ok = i % 3 != 0
    attempts = [
        Attempt(
            model="cheap-a",
            provider="openai",
            status="ok" if ok else "UpstreamTimeout",
            latency_ms=100.5 + i,
            ttft_ms=20.25 if i % 2 else None,
            input_tokens=200 + i,
            output_tokens=40 if ok else 0,
            cost_usd=0.000125 * (i + 1),
            http_status=200 if ok else None,
            error=None if ok else "cheap-a: no answer within 30 s",
            retry=0,
            verified=ok and i % 2 == 0,
        )
    ]
    if not ok:
        attempts.append(
            Attempt(
                model="strong-b", provider="anthropic", status="ok", latency_ms=900.0, retry=1, verified=True
            )
        )
    return LedgerRow(
        id=f"{prefix}-{i:06d}",
        ts=T0 + i * 0.001,
        requested_model="auto",
        stream=bool(i % 2),
        features={
            "task": "classify",
            "input_tokens": 200 + i,
            "signals": {"code": False, "math": i % 5 == 0},
        },
        decision={"chain": ["cheap-a", "strong-b"], "tier": "draft", "reason": f"rule short-draft #{i}"},
        policy_version="p-2024-01",
        status="ok",
        http_status=200,
        final_model="cheap-a" if ok else "strong-b",
        tier="draft" if i % 4 else None,
        input_tokens=200 + i,
        output_tokens=40,
        cost_usd=0.000125 * (i + 1),
        counterfactual_cost_usd=0.0031 * (i + 1),
        latency_ms=120.75 + i,
        ttft_ms=None if i % 2 else 18.5,
        error=None if ok else "cheap-a: UpstreamTimeout",
        key_id=None if i % 7 == 0 else "team-a",
        attempts=attempts,
        prompt=make_prompt(i),
    )


def make_rows(n: int, *, prefix: str = "req") -> list[LedgerRow]:
    return [make_row(i, prefix=prefix) for i in range(n)]


def v1_values(row: LedgerRow) -> tuple[object, ...]:
    """A row's column values as version 1 wrote them: no prompt column, attempts without "verified",
    JSON as text (for migration tests)."""
    attempts = [
        {k: getattr(a, k) for k in Attempt.__dataclass_fields__ if k != "verified"} for a in row.attempts
    ]
    return (*row_values(row), json.dumps(row.features), json.dumps(row.decision), json.dumps(attempts))


def spilled(directory: Path) -> list[LedgerRow]:
    """The rows waiting in a spill directory, oldest segment first."""
    return [
        row_from_json(line)
        for path in sorted(directory.glob("spill-*.jsonl"))
        for line in path.read_bytes().splitlines()
    ]


def dead_letters(directory: Path) -> list[dict[str, Any]]:
    path = directory / "dead-letter.jsonl"
    return [orjson.loads(line) for line in path.read_bytes().splitlines()] if path.exists() else []


async def wait_for(condition: Callable[[], bool], *, timeout: float = 10.0) -> None:
    """Poll ``condition`` until it holds; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not so within {timeout} s")
        await asyncio.sleep(0.02)


def _nested(depth: int) -> list[Any]:
    value: list[Any] = []
    for _ in range(depth):
        value = [value]
    return value


# Rows no store can take as they are, each spoilt one way: what they are made of, and how.
SPOILERS: dict[str, Callable[[LedgerRow], None]] = {
    "an int past 64 bits in features": lambda row: setattr(row, "features", {"n": 2**70}),
    "a prompt nested past JSON's limit": lambda row: setattr(row, "prompt", [{"content": _nested(300)}]),
    "input_tokens past 2**63": lambda row: setattr(row, "input_tokens", 2**63 + 5),
    "a NULL where the column forbids one": lambda row: setattr(row, "requested_model", None),
}
