"""--policy learned: train on training prompts only, score test prompts; the CLI train → eval loop."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.harness import run_cli
from tierwise.config import load_config
from tierwise.embeddings import StaticEmbeddings, load_wordllama
from tierwise.evals.datasets import load_dataset
from tierwise.evals.fleet import fleet_from_config
from tierwise.evals.learned import LearnedPolicy
from tierwise.evals.replay import matrices

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
    assert learned["folds"] == 3 and learned["apgr"] is not None
    pooled = learned["pooled"]
    assert pooled["prompts"] == 72 and len(pooled["folds"]) == 3
    low, high = pooled["ci95"]["apgr"]
    assert low <= pooled["apgr"] <= high
    assert "learned pooled over 72 test prompts" in result.stdout


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
