"""The zero router: a baseline of every report on more than two models, its curve the single models' hull."""

from __future__ import annotations

import numpy as np
import pytest

from tierwise.evals import metrics
from tierwise.evals.fleet import default_fleet
from tierwise.evals.records import EvalDataset, EvalPrompt, ModelResult
from tierwise.evals.run import evaluate
from tierwise.evals.splits import kfold

CHEAP, MID, STRONG = "mistralai/Mixtral-8x7B-Instruct-v0.1", "gpt-3.5-turbo-1106", "gpt-4-1106-preview"
PRICES = {CHEAP: (0.6, 0.6), MID: (1.0, 2.0), STRONG: (10.0, 30.0)}


def _dataset(n: int = 60, *, models: tuple[str, ...] = (CHEAP, MID, STRONG)) -> EvalDataset:
    rng = np.random.default_rng(7)
    accuracy = {CHEAP: 0.4, MID: 0.7, STRONG: 0.9}
    prompts = tuple(
        EvalPrompt(
            id=f"p{i}",
            messages=({"role": "user", "content": f"question number {i}: what is {i} + {i}?"},),
            results={
                m: ModelResult(float(rng.random() < accuracy[m]), input_tokens=100, output_tokens=200)
                for m in models
            },
        )
        for i in range(n)
    )
    return EvalDataset(
        name="synthetic",
        prompts=prompts,
        models=models,
        content_hash="0" * 64,
        tokenizer="given by the data",
        score_scale="correct = 1",
        weak=CHEAP,
        strong=STRONG,
        prices={m: PRICES[m] for m in models},
    )


def test_three_models_add_the_zero_router_on_the_cost_axis_only() -> None:
    data = _dataset()
    fleet = default_fleet(data)
    assert len(fleet.models) == 3
    report = evaluate(data, [], fleet=fleet, n_boot=50)
    zero = report.policies["zero-router"]
    # Its curve is the hull of the three single models, its AIQ that hull's.
    assert zero["apgr"] is None and zero["cpt_50"] is None
    costs = np.array([c for c, _ in zero["curve"]])
    quals = np.array([q for _, q in zero["curve"]])
    lo, hi = report.policies["always-cheapest"]["cost_usd"], report.policies["always-strongest"]["cost_usd"]
    assert zero["aiq"] == pytest.approx(metrics.aiq(costs, quals, c_min=lo, c_max=hi))
    assert zero["ci95"]["aiq"][0] <= zero["aiq"] <= zero["ci95"]["aiq"][1]
    # Its operating point mixes two adjacent models (at 95% of always-strongest's quality in expectation).
    assert lo < zero["cost_usd"] < hi and 0 < zero["strong_share"] < 1


def test_two_models_have_no_zero_router() -> None:
    data = _dataset(models=(CHEAP, STRONG))
    report = evaluate(data, [], fleet=default_fleet(data), n_boot=0)
    assert "zero-router" not in report.policies


def test_cross_validated_figures_are_pooled_and_reproduce() -> None:
    data = _dataset()
    folds = kfold([p.messages[0]["content"] for p in data.prompts], 3, seed=0)

    def run() -> dict:
        return evaluate(data, [], fleet=default_fleet(data), n_boot=50, folds=folds, split="3-fold").policies

    first, second = run(), run()
    assert first == second  # same seed, same numbers
    zero = first["zero-router"]
    assert zero["metrics_over"].startswith("pooled") and len(zero["per_fold"]) == 3
    assert "aiq" in zero["ci95"] and len(zero["curve"]) >= 3
