"""`tierwise eval` end to end: RouteLLM's published baseline figures as regression values."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.harness import run_cli
from tierwise.evals.datasets import load_dataset
from tierwise.evals.fleet import default_fleet
from tierwise.evals.policies import make_policy
from tierwise.evals.run import evaluate

REQUIRED = {
    "quality",
    "cost_usd",
    "strong_share",
    "apgr",
    "cpt_50",
    "cpt_80",
    "aiq",
    "savings_at_parity",
    "curve",
}


@pytest.fixture(scope="module")
def reports() -> dict:
    out = {}
    for name in ("routellm-mmlu", "routellm-gsm8k", "routellm-mtbench", "arena-bench-v1"):
        dataset = load_dataset(name)
        out[name] = evaluate(
            dataset, [make_policy("rules", dataset)], fleet=default_fleet(dataset), n_boot=100
        )
    return out


# Published in the RouteLLM paper / reproduced by its evaluate.py: random ≈ 0.50; oracle as below.
@pytest.mark.parametrize(
    ("name", "oracle", "random"),
    [
        ("routellm-mmlu", 1.2896, 0.4926),
        ("routellm-gsm8k", 1.1309, 0.4857),
        ("routellm-mtbench", 0.9567, 0.5020),
    ],
)
def test_reproduces_routellm_baselines(reports: dict, name: str, oracle: float, random: float) -> None:
    policies = reports[name].policies
    assert policies["oracle"]["apgr"] == pytest.approx(oracle, abs=5e-4)
    assert policies["random"]["apgr"] == pytest.approx(random, abs=5e-4)
    assert abs(policies["random"]["apgr"] - 0.5) < 0.02
    assert policies["random"]["expected_apgr"] == pytest.approx(0.5)


def test_report_has_every_metric_for_every_policy(reports: dict) -> None:
    for report in reports.values():
        data = report.to_json()
        zero = {"zero-router"} if len(data["fleet"]) > 2 else set()  # arena's fleet has a review model
        assert (
            set(data["policies"])
            == {"rules", "always-cheapest", "always-strongest", "random", "oracle"} | zero
        )
        for metrics in data["policies"].values():
            assert set(metrics) >= REQUIRED
            assert all(len(point) == 2 for point in metrics["curve"])
        assert data["dataset"]["sha256"] and data["seed"] == 0
        assert data["policies"]["rules"]["policy_version"]
        json.dumps(data, allow_nan=False)


def test_baselines_bracket_the_policies(reports: dict) -> None:
    for report in reports.values():
        p = report.policies
        cheap, strong = p["always-cheapest"], p["always-strongest"]
        assert cheap["apgr"] is None and strong["apgr"] is None  # single points have no curve
        assert strong["strong_share"] == 1.0 and cheap["strong_share"] == 0.0
        assert cheap["cost_usd"] < p["rules"]["cost_usd"] <= strong["cost_usd"]
        assert p["oracle"]["quality"] >= strong["quality"]
        assert strong["savings_at_parity"] == 0.0


def test_arena_rules_match_the_demo(reports: dict) -> None:
    # The same policy objects as the gateway: the demo's 300 requests gave 37/87/176 per tier.
    rules = reports["arena-bench-v1"].policies["rules"]
    assert rules["details"]["rules"]["code-math"] == 149
    assert rules["quality"] == pytest.approx(0.8075, abs=1e-3)
    assert rules["savings_pct"] == pytest.approx(39.1, abs=0.2)


def test_confidence_intervals_contain_the_estimate(reports: dict) -> None:
    for report in reports.values():
        for name in ("rules", "random"):
            m = report.policies[name]
            lo, hi = m["ci95"]["quality"]
            assert lo <= m["quality"] <= hi
            lo, hi = m["ci95"]["apgr"]
            assert lo <= m["apgr"] <= hi


def test_cross_validated_and_held_out_subjects() -> None:
    from tierwise.evals.splits import group_folds, kfold

    dataset = load_dataset("routellm-gsm8k")
    texts = [p.messages[-1]["content"] for p in dataset.prompts]
    report = evaluate(
        dataset,
        [make_policy("rules", dataset)],
        fleet=default_fleet(dataset),
        folds=kfold(texts, 5, seed=0),
        split="5-fold random",
    )
    rules = report.policies["rules"]
    assert rules["folds"] == 5 and len(rules["per_fold"]) == 5
    assert rules["metrics_over"].startswith("pooled") and "apgr_fold_std" not in rules
    assert rules["ci95"]["apgr"][0] <= rules["apgr"] <= rules["ci95"]["apgr"][1]
    mmlu = load_dataset("routellm-mmlu")
    folds = group_folds(
        [p.messages[-1]["content"] for p in mmlu.prompts], [p.category for p in mmlu.prompts], 5
    )
    for train, test in folds:
        texts = [p.messages[-1]["content"] for p in mmlu.prompts]
        assert {texts[i] for i in train}.isdisjoint({texts[i] for i in test})  # the hard guarantee
        # 78 question texts are listed under several subjects (105 rows); each text stays with its first
        # subject, so a held-out fold is whole subjects but for those few rows.
        train_subjects = {mmlu.prompts[i].category for i in train}
        leaked = sum(mmlu.prompts[i].category in train_subjects for i in test)
        assert leaked <= len(texts) - len(set(texts))


def test_cli_writes_report_and_plot(tmp_path: Path) -> None:
    result = run_cli(
        "eval",
        "--data",
        "routellm-mtbench",
        "--policy",
        "rules",
        "--policy",
        "random",
        "--out",
        str(tmp_path),
        "--bootstrap",
        "50",
    )
    assert result.returncode == 0, result.stderr
    assert "routellm-mtbench: 72 prompts" in result.stdout
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["policies"]["oracle"]["apgr"] == pytest.approx(0.9567, abs=5e-4)
    assert (tmp_path / "curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_user_dataset_with_a_config_policy(tmp_path: Path) -> None:
    rows = []
    for i in range(40):
        prompt = f"Translate to French: sentence {i}" if i % 2 else f"Write a Python function number {i}"
        rows.append(
            {
                "prompt_id": str(i),
                "prompt": prompt,
                "model": "small",
                "score": 1.0 if i % 2 else 0.2,
                "input_tokens": 20,
                "output_tokens": 30,
            }
        )
        rows.append(
            {
                "prompt_id": str(i),
                "prompt": prompt,
                "model": "big",
                "score": 1.0,
                "input_tokens": 20,
                "output_tokens": 30,
            }
        )
    data = tmp_path / "logs.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    config = tmp_path / "fleet.yaml"
    config.write_text(
        "providers: {logs: {kind: replay, dataset: logs.jsonl}}\n"
        "models:\n"
        "  - {name: s, provider: logs, upstream: small, tier: draft, context_window: 8000,"
        " price: {input_per_mtok: 0.1, output_per_mtok: 0.2}}\n"
        "  - {name: b, provider: logs, upstream: big, tier: execution, context_window: 8000,"
        " price: {input_per_mtok: 5, output_per_mtok: 15}}\n"
    )
    result = run_cli(
        "eval",
        "--data",
        str(data),
        "--policy",
        str(config),
        "--out",
        str(tmp_path / "out"),
        "--no-plot",
        "--bootstrap",
        "0",
    )
    assert result.returncode == 0, result.stderr
    fleet_policy = json.loads((tmp_path / "out" / "report.json").read_text())["policies"]["fleet"]
    # translations go to the draft model (right every time), code to the strong one: oracle quality
    assert fleet_policy["quality"] == pytest.approx(1.0)
    assert fleet_policy["strong_share"] == pytest.approx(0.5)


def test_unknown_policy_and_dataset_are_clear_errors(tmp_path: Path) -> None:
    bad = run_cli("eval", "--data", "routellm-mtbench", "--policy", "smart", "--out", str(tmp_path))
    assert bad.returncode == 2 and "--policy 'smart'" in bad.stderr
    missing = run_cli("eval", "--data", "nope", "--out", str(tmp_path))
    assert missing.returncode != 0 and "routellm-mmlu" in missing.stderr
