"""Training data from the gateway's own traffic: ledger rows joined with feedback and verifier outcomes.

Every ledger row whose prompt was kept (``storage.capture_prompts``) and that carries at least one
label becomes one prompt of an ``EvalDataset`` whose models are the fleet's model names. A row's
labels, per model that answered it:

1. the caller's feedback on the request (``POST /v1/feedback``, ``Router.afeedback``) grades the final
   answer, so it labels the model that gave it — the latest feedback wins;
2. else the shadow model's agreement with that answer (``policy.shadow``: feedback of source
   ``shadow``, 1 agree, 0 disagree). Where they agree, the shadow model's own answer is labelled 1
   too (two models reaching the same answer are most likely both right); where they disagree its
   label stays missing, since either may be the wrong one;
3. else the cascade's verdict on that model's answer: 1 where the verifiers accepted it
   (``Attempt.verified``), 0 where they rejected it (status ``rejected``). A rejected answer stays a
   0 even when feedback grades the answer that replaced it.

A model with no label on a row has a missing score there, never a zero; each answer's cost is its
attempt's own. Verifier labels are weak — the checks catch some wrong answers, not all — and they
only exist for models a cascade verified, so the strongest model mostly gets labels from feedback:
train on the ledger together with a labelled dataset (``--data``) until feedback has accumulated.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

import orjson

from ..ledger import Attempt, Feedback, LedgerRow, open_ledger, safe_url
from .records import EvalDataset, EvalPrompt, ModelResult

SCORE_SCALE = "feedback score 0..1; else cascade verdict: accepted = 1, rejected = 0"


@dataclass(frozen=True, slots=True)
class LedgerCounts:
    """What the ledger held and how much of it became training data."""

    rows: int
    with_prompt: int
    labelled: int
    feedback_labels: int
    verifier_labels: int
    feedback_without_row: int  # feedback whose request is not among ``rows`` (or has no prompt)
    shadow_labels: int = 0

    def describe(self) -> str:
        return (
            f"{self.rows} ledger rows, {self.with_prompt} with their prompt, {self.labelled} labelled "
            f"({self.feedback_labels} by feedback, {self.shadow_labels} by shadow calls, "
            f"{self.verifier_labels} by the cascade's verifiers)"
        )


def ledger_dataset(
    rows: Sequence[LedgerRow], feedback: Sequence[Feedback], *, name: str = "ledger"
) -> tuple[EvalDataset, LedgerCounts]:
    """The labelled prompts of ``rows`` (see the module docstring) and what was counted."""
    latest: dict[str, Feedback] = {}  # the caller's latest grade, else the shadow's
    for item in sorted(feedback, key=lambda f: (f.source == "caller", f.ts)):
        latest[item.request_id] = item
    prompts: list[EvalPrompt] = []
    models: set[str] = set()
    with_prompt = by_feedback = by_shadow = by_verifier = 0
    used_feedback: set[str] = set()
    digest = hashlib.sha256()
    shadows = {  # request id → its shadow call's row
        str(row.decision.get("of")): row for row in rows if row.decision.get("layer") == "shadow"
    }
    for row in rows:
        if not row.prompt:
            continue
        with_prompt += 1
        results: dict[str, ModelResult] = {}
        for attempt in row.attempts:
            if attempt.purpose != "answer":
                continue
            if attempt.status == "rejected" or (attempt.status == "ok" and attempt.verified):
                score = 0.0 if attempt.status == "rejected" else 1.0
                results[attempt.model] = _result(
                    score, attempt.input_tokens, attempt.output_tokens, attempt.cost_usd
                )
                by_verifier += 1
        graded = latest.get(row.id)
        if graded is not None and row.status == "ok" and row.final_model is not None:
            answer = _final_attempt(row)
            if row.final_model in results and results[row.final_model].score == 1.0:
                by_verifier -= 1  # feedback replaces the verifier's label of the same answer
            cost = answer.cost_usd if answer is not None else row.cost_usd
            tokens = (
                (answer.input_tokens, answer.output_tokens)
                if answer
                else (row.input_tokens, row.output_tokens)
            )
            results[row.final_model] = _result(graded.score, *tokens, cost)
            used_feedback.add(row.id)
            if graded.source == "shadow":
                by_shadow += 1
                shadow = shadows.get(row.id)
                if graded.score >= 0.5 and shadow is not None and shadow.final_model is not None:
                    results.setdefault(
                        shadow.final_model,
                        _result(1.0, shadow.input_tokens, shadow.output_tokens, shadow.cost_usd),
                    )
            else:
                by_feedback += 1
        if not results:
            continue
        models.update(results)
        prompts.append(
            EvalPrompt(
                id=row.id,
                messages=tuple(row.prompt),
                results=results,
                category=str(row.features.get("task")) if row.features.get("task") else None,
            )
        )
        digest.update(orjson.dumps([row.id, {m: r.score for m, r in sorted(results.items())}]))
    dataset = EvalDataset(
        name=name,
        prompts=tuple(prompts),
        models=tuple(sorted(models)),
        content_hash=digest.hexdigest(),
        tokenizer="the upstreams' own usage, from the ledger",
        score_scale=SCORE_SCALE,
        source=name,
    )
    counts = LedgerCounts(
        rows=len(rows),
        with_prompt=with_prompt,
        labelled=len(prompts),
        feedback_labels=by_feedback,
        verifier_labels=by_verifier,
        feedback_without_row=len(set(latest) - used_feedback),
        shadow_labels=by_shadow,
    )
    return dataset, counts


def _result(score: float, input_tokens: int, output_tokens: int, cost_usd: float) -> ModelResult:
    return ModelResult(score=score, input_tokens=input_tokens, output_tokens=output_tokens, cost_usd=cost_usd)


def _final_attempt(row: LedgerRow) -> Attempt | None:
    """The attempt whose answer the client got: the last successful answer of the final model."""
    for attempt in reversed(row.attempts):
        if attempt.purpose == "answer" and attempt.model == row.final_model and attempt.status == "ok":
            return attempt
    return None


async def load_ledger_dataset(url: str, *, since: float | None = None) -> tuple[EvalDataset, LedgerCounts]:
    """Read a ledger (``sqlite:///…`` or ``postgresql://…``) and build its training data."""
    ledger = open_ledger(url)
    await ledger.start()
    try:
        rows = await ledger.fetch(since=since)
        feedback = await ledger.fetch_feedback(since=since)
    finally:
        await ledger.close()
    return ledger_dataset(rows, feedback, name=f"ledger:{safe_url(url)}")
