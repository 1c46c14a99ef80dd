"""Replaying a cascade on recorded answers: the cheap attempt is charged, escalation follows dispatch's
rules, what cannot run offline says so, and the GSM8K numbers are pinned as regression values."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from tests.harness import run_cli
from tierwise.config import parse_config
from tierwise.evals.cascade import replay_cascade
from tierwise.evals.datasets import load_dataset, load_generic
from tierwise.evals.fleet import fleet_from_config
from tierwise.evals.policies import RulesPolicy
from tierwise.evals.replay import matrices, operating_point
from tierwise.evals.run import evaluate
from tierwise.policy.engine import PolicyEngine

EXAMPLE = Path(__file__).parents[2] / "examples" / "cascade-gsm8k.yaml"


@pytest.fixture(scope="module")
def gsm8k_report(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("cascade-gsm8k")
    done = run_cli(
        "eval", "--data", "routellm-gsm8k", "--policy", str(EXAMPLE), "--out", str(out), "--no-plot"
    )
    assert done.returncode == 0, done.stderr
    return json.loads((out / "report.json").read_text())["policies"]["cascade-gsm8k"]


def test_gsm8k_cascade_regression(gsm8k_report: dict[str, Any]) -> None:
    """Measured once (seed 0, 1,000 bootstrap resamples); a change here is a change in what we claim."""
    r = gsm8k_report
    assert r["quality"] == pytest.approx(0.80566, abs=1e-4)
    assert r["cost_per_1k_usd"] == pytest.approx(1.6805, abs=1e-3)
    assert r["strong_share"] == pytest.approx(409 / 1307)
    assert r["apgr"] == pytest.approx(0.7488, abs=1e-3)
    assert r["cpt_50"] == pytest.approx(16.03, abs=0.05)
    assert r["ci95"]["apgr"] == pytest.approx([0.711, 0.795], abs=2e-3)
    assert r["ci95"]["cpt_50"] == pytest.approx([13.68, 18.31], abs=0.05)
    cascade = r["details"]["cascade"]
    assert cascade["unavailable"] == {"not_truncated": "recorded answers keep no finish_reason"}
    detection = cascade["detection"]
    assert detection["first_answers_wrong"] == 474
    assert (detection["arithmetic"]["flagged"], detection["arithmetic"]["precision_wrong"]) == (
        89,
        pytest.approx(83 / 89),
    )
    assert detection["cascade"]["precision_wrong"] == pytest.approx(0.7017, abs=1e-4)
    assert detection["cascade"]["recall_wrong"] == pytest.approx(0.6055, abs=1e-4)
    steps = [s["step"] for s in cascade["sweep"]]
    assert steps == [
        "no verifier",
        "+no_refusal",
        "+arithmetic",
        "+final-answer",
        "+whole-number",
        "+uses_numbers",
    ]
    shares = [s["strong_share"] for s in cascade["sweep"]]
    assert shares == sorted(shares)  # each verifier escalates more: a curve, not a cloud


def test_replay_charges_the_cheap_attempt() -> None:
    dataset = load_dataset("routellm-gsm8k")
    policy = RulesPolicy("cascade", EXAMPLE)
    fleet = policy.fleet(dataset)
    data = matrices(dataset, fleet)
    routing = policy.route(dataset, data)
    assert routing.choice is not None and routing.extra_cost is not None
    cheap, strong = fleet.cheapest, fleet.strongest
    escalated = routing.choice == strong
    assert np.allclose(routing.extra_cost[escalated], data.costs[escalated, cheap])
    assert np.all(routing.extra_cost[~escalated] == 0)
    point = operating_point(routing.choice, data, strong, routing.extra_cost)
    rows = np.arange(len(data))
    expected = (data.costs[rows, routing.choice] + np.where(escalated, data.costs[:, cheap], 0)).mean()
    assert point.cost == pytest.approx(expected)
    assert point.cost > operating_point(routing.choice, data, strong).cost  # what a plain router would claim


# -- dispatch's rules, on a small dataset of our own ---------------------------------------------------


def _dataset(tmp_path: Path) -> Any:
    rows = []
    answers = {  # prompt → (small, medium, large) answers; "#### n" passes the format check
        "p1": ("#### 1", "#### 1", "#### 1"),
        "p2": ("no final answer", "#### 2", "#### 2"),
        "p3": ("no final answer", "still none", "#### 3"),
    }
    scores = {"p1": (1, 1, 1), "p2": (0, 1, 1), "p3": (0, 0, 1)}
    for pid, texts in answers.items():
        for model, text, score in zip(("small", "medium", "large"), texts, scores[pid], strict=True):
            rows.append(
                {
                    "prompt_id": pid,
                    "prompt": f"question {pid}",
                    "model": model,
                    "score": score,
                    "input_tokens": 10,
                    "output_tokens": 10,
                    "response": text,
                }
            )
    path = tmp_path / "mini.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return load_generic(path)


def _fleet(dataset: Any, **cascade: Any) -> Any:
    models = [
        {
            "name": name,
            "provider": "p",
            "upstream": name,
            "tier": tier,
            "context_window": 8000,
            "price": {"input_per_mtok": price, "output_per_mtok": price},
        }
        for name, tier, price in (
            ("small", "draft", 1),
            ("medium", "review", 10),
            ("large", "execution", 100),
        )
    ]
    config = parse_config(
        {
            "providers": {"p": {"kind": "openai", "base_url": "http://127.0.0.1:9/v1"}},
            "models": models,
            "policy": {
                "rules": [],
                "default": {"tier": "draft", "fallbacks": ["review", "execution"]},
                "cascade": {"verifiers": [{"kind": "regex", "pattern": "####"}], **cascade},
            },
            "storage": {"ledger": "none"},
        }
    )
    return fleet_from_config(config, dataset)


@pytest.mark.parametrize(
    ("max_escalations", "answered", "extra"), [(1, [0, 1, 1], [0, 20, 20]), (2, [0, 1, 2], [0, 20, 220])]
)
def test_escalation_follows_dispatch(
    tmp_path: Path, max_escalations: int, answered: list[int], extra: list[float]
) -> None:
    dataset = _dataset(tmp_path)
    fleet = _fleet(dataset, max_escalations=max_escalations)
    data = matrices(dataset, fleet)
    replay = replay_cascade(PolicyEngine(fleet.config), dataset, fleet, data)
    assert replay.choice.tolist() == answered  # the model after the last escalation answers unverified
    assert (replay.extra_cost * 1e6).round(6).tolist() == extra  # rejected answers: 20 tokens × $1 or $10 /M


def test_a_cascade_limited_to_other_tiers_does_not_run(tmp_path: Path) -> None:
    dataset = _dataset(tmp_path)
    fleet = _fleet(dataset, tiers=["execution"])
    replay = replay_cascade(PolicyEngine(fleet.config), dataset, fleet, matrices(dataset, fleet))
    assert replay.choice.tolist() == [0, 0, 0] and not replay.verified.any()


# -- what cannot run offline ---------------------------------------------------------------------------


def _arena_config(tmp_path: Path, dataset_models: tuple[str, str], **judge: Any) -> Path:
    config = yaml.safe_load(EXAMPLE.read_text())
    config["models"][0]["upstream"], config["models"][1]["upstream"] = dataset_models
    config["policy"]["cascade"]["verifiers"] = [
        {"kind": "no_refusal"},
        {"kind": "agreement"},
        {"kind": "judge", "model": "gpt-4-1106", "min_score": 7, **judge},
    ]
    path = tmp_path / "cascade.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_live_verifiers_are_skipped_and_named(tmp_path: Path) -> None:
    dataset = load_dataset("arena-bench-v1")
    path = _arena_config(tmp_path, ("Mixtral-8x7B-Instruct-v0.1", "gpt-4-1106-preview"))
    report = evaluate(
        dataset, [RulesPolicy("c", path)], fleet=RulesPolicy("c", path).fleet(dataset), n_boot=0
    )
    cascade = report.policies["c"]["details"]["cascade"]
    assert set(cascade["unavailable"]) == {"agreement", "judge"}
    assert "live" in cascade["unavailable"]["agreement"] and cascade["oracle_judge"] is False


def test_oracle_judge_is_an_upper_bound_and_is_charged(tmp_path: Path) -> None:
    dataset = load_dataset("arena-bench-v1")
    path = _arena_config(tmp_path, ("Mixtral-8x7B-Instruct-v0.1", "gpt-4-1106-preview"))
    policy = RulesPolicy("c", path, oracle_judge=True)
    fleet = policy.fleet(dataset)
    data = matrices(dataset, fleet)
    replay = replay_cascade(PolicyEngine(fleet.config), dataset, fleet, data, oracle_judge=True)
    assert replay.verifiers == ("no_refusal", "judge") and set(replay.unavailable) == {"agreement"}
    cheap, strong = fleet.cheapest, fleet.strongest
    grades = data.scores[:, cheap] * 10
    refused, judged_low = replay.rejections[:, 0], replay.rejections[:, 1]
    assert np.array_equal(judged_low, np.isnan(grades) | (grades < 7))  # the recorded grade is the judge
    escalated = replay.choice == strong
    assert np.array_equal(escalated, refused | judged_low)
    # A refusal is rejected before the judge is paid; every other prompt paid for one judge call.
    assert np.allclose(replay.extra_cost[refused], data.costs[refused, cheap])
    reached = ~refused
    judge_cost = replay.extra_cost[reached] - np.where(escalated[reached], data.costs[reached, cheap], 0)
    assert np.all(judge_cost > 0)
    routing = policy.route(dataset, data)
    cascade: Any = routing.details["cascade"]  # type: ignore[index]
    assert "upper bound" in cascade["oracle_judge_note"]
    assert [s["step"] for s in cascade["sweep"]][-1] == "+judge ≥ 7"
    assert len(cascade["sweep"]) == 2 + 9  # none, +no_refusal, then judge ≥ 2 … 10 (≥ 7 last)


def test_no_recorded_answers_no_verification() -> None:
    dataset = load_dataset("routellm-mmlu")
    subset = dataset.subset(list(range(300)))
    config = yaml.safe_load(EXAMPLE.read_text())
    policy = RulesPolicy("c", EXAMPLE)
    fleet = policy.fleet(subset)
    routing = policy.route(subset, matrices(subset, fleet))
    assert routing.choice is not None and np.all(routing.choice == fleet.cheapest)
    unavailable: Any = routing.details["cascade"]["unavailable"]  # type: ignore[index]
    assert len(unavailable) == len(config["policy"]["cascade"]["verifiers"])
    assert all("records no answers" in why for why in unavailable.values())
