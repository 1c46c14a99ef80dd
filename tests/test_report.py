"""The ledger report, against hand-computed figures."""

from __future__ import annotations

from dataclasses import replace

import pytest

from tierwise.ledger import Attempt, Feedback, LedgerRow
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


def test_feedback_and_cascade_verdicts_in_the_report() -> None:
    rows = [
        replace(ROWS[0], attempts=[Attempt(model="d", provider="p", status="ok", verified=True)]),
        replace(
            ROWS[1],
            attempts=[
                Attempt(model="d", provider="p", status="rejected"),
                Attempt(model="r", provider="p", status="ok"),
            ],
        ),
        *ROWS[2:],
    ]
    feedback = [
        Feedback("r1", 0.0, ts=1.0),
        Feedback("r1", 1.0, ts=2.0),  # the latest grade counts
        Feedback("r3", 0.5, ts=1.0),
    ]
    s = summarize(rows, feedback)
    assert s["graded"] == 2 and s["mean_score"] == pytest.approx(0.75)
    assert s["by_model"]["d"]["graded"] == 1 and s["by_model"]["d"]["mean_score"] == 1.0
    assert s["by_model"]["r"]["mean_score"] is None
    assert s["by_task"]["code"]["mean_score"] == 0.5
    assert s["cascade"] == {"d": {"accepted": 1, "rejected": 1}}
    text = render(s)
    assert "feedback on 2 requests, mean score 0.750" in text
    assert "cascade  d: 1 answers accepted, 1 rejected" in text
    assert "graded  score" in text
    assert "graded" not in render(summarize(ROWS))  # no feedback, no quality columns


def test_per_key_and_per_tenant_figures() -> None:
    keyed = [
        replace(
            ROWS[0], key_id="k1", decision={"chain": ["d"], "tenant": "acme", "reason": "rule x → draft"}
        ),
        replace(
            ROWS[1],
            key_id="k2",
            decision={
                "chain": ["d"],
                "tenant": "acme",
                "reason": "rule y → review; budget: tenant acme … → draft",
            },
        ),
        replace(ROWS[2], key_id="k3", decision={"chain": ["e"], "tenant": "beta", "reason": "rule z"}),
        ROWS[3],  # not keyed: in the totals, in no key's or tenant's figures
    ]
    s = summarize(keyed)
    assert set(s["by_key"]) == {"k1", "k2", "k3"}
    assert s["by_tenant"]["acme"]["requests"] == 2
    assert s["by_tenant"]["acme"]["cost_usd"] == pytest.approx(0.005)
    assert s["by_tenant"]["acme"]["budget_downgraded"] == 1
    assert s["by_tenant"]["beta"]["budget_downgraded"] == 0
    text = render(s)
    assert "tenant" in text and "acme" in text and "k3" in text
