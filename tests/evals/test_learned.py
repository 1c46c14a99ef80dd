"""--policy learned: train on training prompts only, score test prompts; the CLI train → eval loop."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.harness import run_cli
from tierwise.config import load_config
from tierwise.embeddings import StaticEmbeddings, load_wordllama
from tierwise.evals.cascade import replay_cascade
from tierwise.evals.datasets import load_dataset
from tierwise.evals.fleet import fleet_from_config
from tierwise.evals.learned import SWEEP_POINTS, LearnedPolicy
from tierwise.evals.replay import matrices
from tierwise.policy.engine import PolicyEngine

ROOT = Path(__file__).resolve().parents[2]
KNN = (("knn", {"k": 25}),)  # the fastest family to fit: these tests are about the protocol


@pytest.fixture(scope="module")
def embedder() -> StaticEmbeddings:
    return load_wordllama()


def test_train_and_test_never_share_a_prompt_text(embedder: StaticEmbeddings) -> None:
    arena = load_dataset("arena-bench-v1")
    test = arena.subset(list(range(100)))
    policy = LearnedPolicy(train_sets=[arena], candidates=KNN, embedder=embedder)
    routing = policy.route(test, matrices(test, policy.fleet(test)))
    # Trained on all of arena-bench-v1 less the 100 test prompts.
    assert policy.trained[0].meta["training"]["rows"] == 200
    assert policy.trained[0].meta["training"]["excluded_texts"] == 100
    assert routing.scores is None  # arena's default fleet has three models: a choice policy
    assert routing.choice is not None and len(routing.choice) == 100


def test_without_training_data_it_says_what_to_pass(embedder: StaticEmbeddings) -> None:
    data = load_dataset("routellm-mtbench")
    policy = LearnedPolicy(embedder=embedder)
    with pytest.raises(ValueError, match=r"--cv K .* or --train-data"):
        policy.route(data, matrices(data, policy.fleet(data)))


def test_many_models_report_a_threshold_sweep_against_the_zero_router(embedder: StaticEmbeddings) -> None:
    arena = load_dataset("arena-bench-v1")
    config = ROOT / "examples" / "arena-fleet.yaml"
    fleet = fleet_from_config(load_config(config), arena)
    test = arena.subset(list(range(0, 300, 3)))
    policy = LearnedPolicy(config=config, train_sets=[arena], candidates=KNN, embedder=embedder)
    routing = policy.route(test, matrices(test, fleet))
    assert len(fleet.models) == 15 and routing.choice is not None
    sweep = routing.details["sweep"]
    assert 0 < sweep["aiq"] <= 1 and 0 < sweep["zero_router"]["aiq"] <= 1
    costs = [c for c, _ in sweep["curve"]]
    assert costs == sorted(costs) and costs[0] < costs[-1]
    # The 15 models' picks span more than the ends of the fleet.
    assert len(np.unique(routing.choice)) >= 2
    # The sweep is the policy's curve: as many thresholds on every fold, so folds pool point by point.
    assert routing.sweep is not None and len(routing.sweep) == SWEEP_POINTS + 2


def test_cli_train_then_eval_learned(tmp_path: Path) -> None:
    artefact = tmp_path / "router.npz"
    trained = run_cli(
        "train",
        "--data",
        "routellm-mtbench",
        "--families",
        "linear",
        "--strong-share",
        "0.5",
        "--out",
        str(artefact),
    )
    assert trained.returncode == 0, trained.stderr
    assert "wrote" in trained.stdout and artefact.exists()
    assert "out-of-fold APGR" in trained.stderr  # the candidates' comparison, as it runs
    config = tmp_path / "learned.yaml"
    config.write_text(
        (ROOT / "examples" / "learned.yaml")
        .read_text()
        .replace("../src/tierwise/data/routers/demo.npz", "router.npz")
    )
    routed = run_cli("route", "--config", str(config), "--explain", "What is 17 * 23?", "--json")
    assert routed.returncode == 0, routed.stderr
    assert json.loads(routed.stdout)["decision"]["layer"] == "learned"

    out = tmp_path / "eval"
    result = run_cli(
        "eval",
        "--data",
        "routellm-mtbench",
        "--policy",
        "learned",
        "--cv",
        "3",
        "--split",
        "random",
        "--bootstrap",
        "50",
        "--no-plot",
        "--out",
        str(out),
    )
    assert result.returncode == 0, result.stderr
    report = json.loads((out / "report.json").read_text())
    learned = report["policies"]["learned"]
    assert learned["folds"] == 3 and learned["metrics_over"].startswith("pooled")
    assert len(learned["per_fold"]) == 3 and all("family" in f["details"] for f in learned["per_fold"])
    low, high = learned["ci95"]["apgr"]
    assert low <= learned["apgr"] <= high
    assert "pooled" not in learned  # one figure per metric
    assert "every figure pooled over the out-of-fold prompts" in result.stdout


def test_train_data_flag_and_subject_split(tmp_path: Path) -> None:
    result = run_cli(
        "eval",
        "--data",
        "arena-bench-v1",
        "--policy",
        "random",
        "--cv",
        "3",
        "--split",
        "subject",
        "--bootstrap",
        "0",
        "--no-plot",
        "--out",
        str(tmp_path),
    )
    assert result.returncode == 0, result.stderr
    assert json.loads((tmp_path / "report.json").read_text())["split"] == "3-fold subject"
    bad = run_cli(
        "eval",
        "--data",
        "routellm-mtbench",
        "--policy",
        "learned",
        "--train-data",
        "no-such-set",
        "--out",
        str(tmp_path),
    )
    assert bad.returncode != 0 and "no-such-set" in bad.stderr


# -- the hybrid: a config with a cascade replays the learned layer and the cascade together --------------

CASCADE = ROOT / "examples" / "cascade-gsm8k.yaml"


def test_a_config_with_a_cascade_replays_the_whole_hybrid(embedder: StaticEmbeddings) -> None:
    gsm8k = load_dataset("routellm-gsm8k")
    fleet = fleet_from_config(load_config(CASCADE), gsm8k)
    train, test = gsm8k.subset(list(range(300))), gsm8k.subset(list(range(1000, 1200)))
    data = matrices(test, fleet)
    policy = LearnedPolicy(config=CASCADE, train_sets=[train], candidates=KNN, embedder=embedder)
    routing = policy.route(test, data)
    assert routing.choice is not None and routing.extra_cost is not None and routing.sweep is not None
    assert routing.version.endswith("+cascade")
    cheap, strong = fleet.cheapest, fleet.strongest
    # Sent straight to the strongest by the router: no cheap attempt, nothing extra charged. Answered
    # by the strongest after the cheap answer was rejected: the rejected attempt is charged.
    escalated = routing.extra_cost > 0
    assert np.allclose(routing.extra_cost[escalated], data.costs[escalated, cheap])
    assert np.all(routing.choice[escalated] == strong)
    # The threshold sweep runs from "router sends none to the strongest" (the cascade alone) to "all".
    shares = [float(np.mean(choice == strong)) for choice, _ in routing.sweep]
    assert len(shares) == 11 and shares[-1] == 1.0
    assert shares == sorted(shares)
    first_choice, first_extra = routing.sweep[0]
    alone = replay_cascade(PolicyEngine(fleet.config), test, fleet, data, strictness_sweep=False)
    assert np.array_equal(first_choice, alone.choice) and np.allclose(first_extra, alone.extra_cost)
    assert routing.sweep[-1][1].sum() == 0  # all sent straight to the strongest: no cheap call anywhere
    assert routing.details["cascade"]["detection"]["first_answers_wrong"] > 0


def test_hybrid_gsm8k_regression(tmp_path: Path) -> None:
    """The learned layer + cascade on GSM8K, 5-fold nested CV (seed 0, 1,000 resamples): measured once;
    a change here is a change in what the README claims."""
    out = tmp_path / "hybrid"
    result = run_cli(
        "eval",
        "--data",
        "routellm-gsm8k",
        "--policy",
        f"learned:{CASCADE}",
        "--cv",
        "5",
        "--no-plot",
        "--out",
        str(out),
    )
    assert result.returncode == 0, result.stderr
    pooled = json.loads((out / "report.json").read_text())["policies"]["learned"]
    assert pooled["metrics_over"].startswith("pooled")
    assert pooled["apgr"] == pytest.approx(0.769, abs=2e-3)
    assert pooled["cpt_50"] == pytest.approx(20.48, abs=0.1)
    assert pooled["ci95"]["apgr"] == pytest.approx([0.722, 0.821], abs=3e-3)
    # The operating point: the threshold calibrated on each fold's training prompts for 95% of
    # GPT-4's quality, as the hybrid; on the test prompts it keeps 95.7% for 45% of GPT-4's cost.
    assert pooled["quality"] == pytest.approx(0.821, abs=2e-3)
    assert pooled["cost_per_1k_usd"] == pytest.approx(1.946, abs=0.01)
    assert all(f["details"]["calibration_of"]["datasets"] == ["routellm-gsm8k"] for f in pooled["per_fold"])


def test_train_with_a_cascade_config_calibrates_the_hybrid(tmp_path: Path) -> None:
    artefact = tmp_path / "router-gsm8k.npz"
    trained = run_cli(
        "train",
        "--data",
        "routellm-gsm8k",
        "--config",
        str(CASCADE),
        "--families",
        "linear",
        "--out",
        str(artefact),
    )
    assert trained.returncode == 0, trained.stderr
    assert "calibrated as the hybrid" in trained.stderr
    from tierwise.artefact import read_artefact

    meta = read_artefact(artefact).meta
    assert meta["calibration_of"]["datasets"] == ["routellm-gsm8k"]
    # Behind the cascade a rejected cheap answer is re-asked of GPT-4, so the hybrid keeps 95% of its
    # quality with fewer direct GPT-4 calls than the router alone would need.
    calibration = meta["calibration"]
    at = calibration["thresholds"].index(
        min(calibration["thresholds"], key=lambda t: abs(t - meta["default_threshold"]))
    )
    assert calibration["quality_rel"][at] >= 0.95
    assert calibration["strong_share"][at] < 0.5

    config = tmp_path / "hybrid.yaml"
    config.write_text(
        CASCADE.read_text().replace(
            "  # learned: {artefact: router-gsm8k.npz", "  learned: {artefact: router-gsm8k.npz"
        )
    )
    routed = run_cli(
        "route", "--config", str(config), "--explain", "Tom has 3 boxes of 12 eggs. How many eggs?"
    )
    assert routed.returncode == 0, routed.stderr
    assert "layer    learned" in routed.stdout
    assert "mixtral-8x7b's answer is verified (not_truncated, no_refusal, arithmetic" in routed.stdout


def test_the_hybrid_replay_honours_cascade_when_uncertain(embedder: StaticEmbeddings, tmp_path: Path) -> None:
    """`when: uncertain` verifies only answers whose score lies within `uncertain_band` of the threshold."""
    import yaml

    gsm8k = load_dataset("routellm-gsm8k")
    train, test = gsm8k.subset(list(range(300))), gsm8k.subset(list(range(1000, 1150)))

    def run(band: float) -> Any:
        doc = yaml.safe_load(CASCADE.read_text())
        doc["policy"]["cascade"]["when"] = "uncertain"
        doc["policy"]["learned"] = {"artefact": "unused.npz", "uncertain_band": band}
        path = tmp_path / f"uncertain-{band}.yaml"
        path.write_text(yaml.safe_dump(doc))
        fleet = fleet_from_config(load_config(path), test)
        policy = LearnedPolicy(config=path, train_sets=[train], candidates=KNN, embedder=embedder)
        return policy.route(test, matrices(test, fleet)), fleet

    never, _ = run(0.0)
    assert never.extra_cost is not None and not never.extra_cost.any()  # nothing is verified
    assert never.details["cascade"]["detection"]["verified_prompts"] == 0
    everything, _ = run(1.0)  # every score is "uncertain": every cheap answer is verified
    assert everything.details["cascade"]["detection"]["verified_prompts"] > 0
    assert (everything.extra_cost > 0).any()
