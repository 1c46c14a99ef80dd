"""The ledger report, against hand-computed figures."""

from __future__ import annotations

import pytest

from tierwise.ledger import LedgerRow
from tierwise.report import render, summarize


def row(
    i: int,
    *,
    task: str,
    model: str | None,
    tier: str | None,
    cost: float,
    cf: float,
    chain: list[str],
    status: str = "ok",
) -> LedgerRow:
    return LedgerRow(
        id=f"r{i}",
        ts=float(i),
        requested_model="auto",
        stream=False,
        features={"task": task},
        decision={"chain": chain},
        policy_version="v",
        status=status,
        http_status=200 if status == "ok" else 502,
        final_model=model,
        tier=tier,
        cost_usd=cost,
        counterfactual_cost_usd=cf,
        latency_ms=float(10 * i),
    )


ROWS = [
    row(1, task="classify", model="d", tier="draft", cost=0.001, cf=0.02, chain=["d", "r"]),
    row(2, task="classify", model="r", tier="review", cost=0.004, cf=0.02, chain=["d", "r"]),  # a fallback
    row(3, task="code", model="e", tier="execution", cost=0.03, cf=0.03, chain=["e"]),
    row(4, task="code", model=None, tier=None, cost=0.0, cf=0.0, chain=["e"], status="error"),
]


def test_summary_figures() -> None:
    s = summarize(ROWS)
    assert s["requests"] == 4 and s["errors"] == 1
    assert s["fallback_rate"] == pytest.approx(0.25)
    assert s["cost_usd"] == pytest.approx(0.035)
    assert s["savings_usd"] == pytest.approx(0.07 - 0.035)
    assert s["savings_pct"] == pytest.approx(50.0)
    assert s["by_task"]["classify"]["fallback_rate"] == pytest.approx(0.5)
    assert s["by_task"]["classify"]["tiers"] == {"draft": 1, "review": 1}
    assert s["by_model"]["d"]["share"] == pytest.approx(0.25)
    assert s["by_tier"]["execution"]["cost_usd"] == pytest.approx(0.03)


def test_render_and_empty() -> None:
    text = render(summarize(ROWS))
    assert "saved $0.0350 (50.0%)" in text and "classify" in text
    assert summarize([])["requests"] == 0
    assert "requests 0" in render(summarize([]))
