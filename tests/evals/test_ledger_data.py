"""Training data from ledger rows: feedback and cascade verdicts become per-model labels."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tierwise.evals.ledger_data import ledger_dataset
from tierwise.ledger import Attempt, Feedback, LedgerRow

ROOT = Path(__file__).resolve().parents[2]
ASK = [{"role": "user", "content": "What is 17 * 23?"}]


def _row(
    rid: str,
    attempts: list[Attempt],
    *,
    prompt: list | None = ASK,
    final: str | None = "cheap",
    status: str = "ok",
) -> LedgerRow:
    return LedgerRow(
        id=rid,
        ts=1.0,
        requested_model="auto",
        stream=False,
        features={"task": "math"},
        decision={},
        policy_version="p",
        status=status,
        http_status=200 if status == "ok" else 502,
        final_model=final,
        attempts=attempts,
        prompt=prompt,
        cost_usd=sum(a.cost_usd for a in attempts),
    )


def _answer(model: str, status: str = "ok", *, verified: bool = False, cost: float = 0.001) -> Attempt:
    return Attempt(
        model=model,
        provider="p",
        status=status,
        input_tokens=10,
        output_tokens=5,
        cost_usd=cost,
        verified=verified,
    )


def test_verdicts_and_feedback_become_labels() -> None:
    rows = [
        # The cascade rejected the cheap answer, the strong one answered; the caller liked it.
        _row("r1", [_answer("cheap", "rejected"), _answer("strong", cost=0.03)], final="strong"),
        # The cheap answer passed the verifiers.
        _row("r2", [_answer("cheap", verified=True)]),
        # Verified, but the caller says it was wrong: feedback wins for that answer.
        _row("r3", [_answer("cheap", verified=True)]),
        # No cascade, no feedback: nothing to learn from.
        _row("r4", [_answer("cheap")]),
        # Feedback, but the prompt was not kept.
        _row("r5", [_answer("cheap")], prompt=None),
    ]
    feedback = [
        Feedback("r1", 1.0, ts=10.0),
        Feedback("r3", 1.0, ts=10.0),
        Feedback("r3", 0.0, ts=11.0),  # the latest grade wins
        Feedback("r5", 1.0, ts=10.0),
        Feedback("gone", 0.5, ts=10.0),
    ]
    dataset, counts = ledger_dataset(rows, feedback)
    scores = {p.id: {m: r.score for m, r in p.results.items()} for p in dataset.prompts}
    assert scores == {"r1": {"cheap": 0.0, "strong": 1.0}, "r2": {"cheap": 1.0}, "r3": {"cheap": 0.0}}
    assert dataset.models == ("cheap", "strong")
    assert dataset.prompts[0].messages == tuple(ASK)
    assert dataset.prompts[0].results["strong"].cost_usd == 0.03  # each answer's own cost
    assert (counts.rows, counts.with_prompt, counts.labelled) == (5, 4, 3)
    assert (counts.feedback_labels, counts.verifier_labels) == (2, 2)
    assert counts.feedback_without_row == 2  # r5 has no prompt, "gone" no row


def test_side_calls_are_not_answers_and_failed_requests_keep_their_rejections() -> None:
    judge = Attempt(model="strong", provider="p", status="ok", purpose="judge", verified=False)
    sample = Attempt(model="cheap", provider="p", status="ok", purpose="sample")
    failed = _row(
        "r1",
        [_answer("cheap", "rejected"), judge, sample, _answer("strong", "UpstreamTimeout")],
        final=None,
        status="error",
    )
    dataset, _ = ledger_dataset([failed], [Feedback("r1", 1.0, ts=1.0)])
    # The rejection still says the cheap answer was not good enough; the feedback grades no answer.
    assert {m: r.score for m, r in dataset.prompts[0].results.items()} == {"cheap": 0.0}


def test_the_content_hash_follows_the_labels() -> None:
    rows = [_row("r1", [_answer("cheap", verified=True)])]
    a, _ = ledger_dataset(rows, [])
    b, _ = ledger_dataset(rows, [Feedback("r1", 0.0, ts=1.0)])
    assert a.content_hash != b.content_hash
    assert ledger_dataset(rows, [])[0].content_hash == a.content_hash


def test_the_ledger_loop_simulation_runs(tmp_path: Path) -> None:
    """scripts/ledger_loop.py (the README's numbers) on a small slice: serve, grade, train, measure."""
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts" / "ledger_loop.py"),
            "--limit",
            "200",
            "--families",
            "linear",
            "--runs",
            "0.5/0.5",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert any(line.startswith("every answer labelled (offline benchmark)") for line in lines)
    [ledger] = [line for line in lines if line.startswith("ledger: 50% graded, 50% shadowed")]
    assert "100 prompts:" in ledger  # every traffic prompt got a label: a verdict, a grade or a shadow


def test_a_shadow_label_yields_to_the_callers_and_outranks_the_verdict() -> None:
    rows = [
        _row("r1", [_answer("cheap", verified=True)]),  # verified, but the shadow disagreed
        _row("r2", [_answer("cheap")]),  # unverified; the shadow agreed, then the caller said no
    ]
    feedback = [
        Feedback("r1", 0.0, ts=5.0, source="shadow"),
        Feedback("r2", 0.0, ts=1.0),  # earlier than the shadow's, and still the caller's word wins
        Feedback("r2", 1.0, ts=5.0, source="shadow"),
    ]
    dataset, counts = ledger_dataset(rows, feedback)
    assert {p.id: p.results["cheap"].score for p in dataset.prompts} == {"r1": 0.0, "r2": 0.0}
    assert (counts.feedback_labels, counts.shadow_labels, counts.verifier_labels) == (1, 1, 0)


def test_a_shadow_that_agrees_labels_its_own_answer_too() -> None:
    def shadow_row(of: str) -> LedgerRow:
        row = _row(f"{of}.shadow", [_answer("strong", cost=0.02)], prompt=None, final="strong")
        row.decision = {"layer": "shadow", "of": of, "chain": ["strong"]}
        return row

    rows = [
        _row("r1", [_answer("cheap")]),
        shadow_row("r1"),
        _row("r2", [_answer("cheap")]),
        shadow_row("r2"),
    ]
    feedback = [Feedback("r1", 1.0, ts=1.0, source="shadow"), Feedback("r2", 0.0, ts=1.0, source="shadow")]
    dataset, counts = ledger_dataset(rows, feedback)
    scores = {p.id: {m: r.score for m, r in p.results.items()} for p in dataset.prompts}
    # Agreeing: both answers are labelled good. Disagreeing: the served one is the 0; which of the two
    # was wrong is not known, so the shadow model's own answer stays unlabelled.
    assert scores == {"r1": {"cheap": 1.0, "strong": 1.0}, "r2": {"cheap": 0.0}}
    assert dataset.prompts[0].results["strong"].cost_usd == 0.02
    assert counts.rows == 4 and counts.with_prompt == 2 and counts.shadow_labels == 2
