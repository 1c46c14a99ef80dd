"""Replay uses the gateway's own decisions; operating points and sweeps match the reference curves."""

from __future__ import annotations

import numpy as np
import pytest

from tierwise.config import load_config
from tierwise.evals.curves import qcut_thresholds, random_router_scores, threshold_curve
from tierwise.evals.datasets import load_dataset
from tierwise.evals.fleet import default_fleet, fleet_from_config
from tierwise.evals.replay import matrices, operating_point, replay_rules, threshold_choices
from tierwise.policy.engine import PolicyEngine
from tierwise.router import Router


def test_rules_replay_makes_the_gateways_decisions() -> None:
    dataset = load_dataset("arena-bench-v1")
    router = Router(load_config("examples/demo.yaml"), ledger=None)
    fleet = fleet_from_config(router.config, dataset)
    replay = replay_rules(PolicyEngine(router.config), dataset, fleet)
    for i, prompt in enumerate(dataset.prompts[:100]):
        _, decision = router.explain({"model": "auto", "messages": list(prompt.messages)})
        assert fleet.models[replay.choice[i]].name == decision.chain[0]


def test_threshold_sweep_matches_routellm_curve() -> None:
    dataset = load_dataset("routellm-gsm8k")
    fleet = default_fleet(dataset)
    data = matrices(dataset, fleet)
    scores = random_router_scores(len(data), seed=0)
    weak, strong = fleet.cheapest, fleet.strongest
    ours = [
        operating_point(c, data, strong)
        for c in threshold_choices(scores, qcut_thresholds(scores), weak, strong)
    ]
    reference = threshold_curve(scores, data.scores[:, weak], data.scores[:, strong], scale=1.0)
    assert np.allclose(sorted(p.strong_share * 100 for p in ours), np.sort(reference.strong_pct))
    assert np.allclose(sorted(p.quality for p in ours), np.sort(reference.quality))


def test_operating_point_skips_missing_and_fails_unservable() -> None:
    from tierwise.evals.replay import Matrices

    data = Matrices(
        np.array([[1.0, 1.0], [np.nan, 0.5], [0.0, 1.0]]), np.array([[1.0, 10], [1, 10], [1, 10]])
    )
    point = operating_point(np.array([0, 0, 1]), data, strongest=1)
    assert point.quality == pytest.approx(1.0)  # (1 + 1) / 2: the missing score is skipped
    assert point.cost == pytest.approx(4.0) and point.strong_share == pytest.approx(1 / 3)
    failed = operating_point(np.array([-1, 1, 1]), data, strongest=1)
    assert failed.quality == pytest.approx(0.5) and failed.cost == pytest.approx(20 / 3)


def test_costs_come_from_tokens_and_prices() -> None:
    dataset = load_dataset("routellm-mtbench")
    fleet = default_fleet(dataset)
    data = matrices(dataset, fleet)
    result = dataset.prompts[0].results[fleet.dataset_models[fleet.strongest]]
    expected = (result.input_tokens * 10 + result.output_tokens * 30) / 1e6
    assert data.costs[0, fleet.strongest] == pytest.approx(expected)
