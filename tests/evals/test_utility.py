"""The quality − λ·cost router: its sweep's ends, the hull rule, a selection that depends on the seed
alone, costs learned from token counts or from recorded USD, and the eval's and the gateway's
predictions and choices agreeing on the same prompts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.evals.utility_data import INPUT_TOKENS, MODELS, config_text, prompt_text, write_dataset
from tierwise.artefact import write_artefact
from tierwise.config import load_config
from tierwise.embeddings import StaticEmbeddings, load_wordllama
from tierwise.engines import load_engine
from tierwise.evals.datasets import load_dataset
from tierwise.evals.fleet import fleet_for
from tierwise.evals.replay import matrices
from tierwise.evals.utility import UtilityPolicy
from tierwise.features import extract_features
from tierwise.policy.utility import LAMBDAS, CostModel, choose_many, sweep
from tierwise.train import FleetModel
from tierwise.train_utility import (
    CANDIDATES,
    build_rows,
    calibration_of,
    fit,
    fitted_of,
    on_hull,
    select,
    train_utility_router,
)

FLEET = [FleetModel(name, p_in, p_out, name) for name, (p_in, p_out), _ in MODELS]


@pytest.fixture(scope="module")
def embedder() -> StaticEmbeddings:
    return load_wordllama()


def test_the_sweep_runs_from_best_quality_to_cheapest() -> None:
    quality = np.array([[0.2, 0.5, 0.9], [0.9, 0.9, 0.9]])
    cost = np.array([[1.0, 2.0, 10.0], [1.0, 2.0, 10.0]])
    choices = sweep(quality, cost, 10.0)
    assert len(choices) == len(LAMBDAS)
    assert choices[0].tolist() == [2, 0]  # λ = 0: best predicted quality, the cheaper on a tie
    assert choices[-1].tolist() == [0, 0]  # λ huge: the cheapest
    # A model that may not be chosen never is, even when it is the best and the cheapest.
    allowed = np.array([False, True, True])
    assert all(0 not in c for c in sweep(quality, cost, 10.0, allowed))
    assert choose_many(quality, cost, 1e6, 10.0, allowed).tolist() == [1, 1]


def test_only_models_on_the_training_hull_are_allowed() -> None:
    quality = np.tile([0.3, 0.6, 0.9, 0.6], (5, 1))
    cost = np.tile([1.0, 2.0, 10.0, 20.0], (5, 1))  # the fourth: dearer than the best and worse
    assert on_hull(quality, cost).tolist() == [True, True, True, False]


def test_costs_are_learned_from_token_counts_and_priced_at_the_fleets_prices(
    tmp_path: Path, embedder: StaticEmbeddings
) -> None:
    rows = build_rows([load_dataset(str(write_dataset(tmp_path / "t.jsonl")))], FLEET, embedder)
    assert rows.from_tokens.tolist() == [True, True, True]
    mid = rows.cost_target[:, 1]
    assert np.allclose(mid[::2], np.log1p(60)) and np.allclose(mid[1::2], np.log1p(900))
    fitted = fit("knn", {"k": 1}, rows, FLEET, seed=0)  # its own rows back: the recorded targets
    _, cost = fitted.predict(rows.dense[:2], rows.input_tokens[:2])
    # The mid model's long proofs make it dearer per prompt, not per token.
    tokens_in = rows.input_tokens[:2]
    assert cost[:, 1] == pytest.approx((tokens_in * 1.0 + np.array([60, 900]) * 2.0) / 1e6)
    # A price change in the config applies without retraining: same tokens, new prices.
    dearer = CostModel(
        fitted.costs.from_tokens, fitted.costs.input_per_mtok, fitted.costs.output_per_mtok * 2
    )
    quality, again = fitted.predict(rows.dense[:2], rows.input_tokens[:2])
    raw = np.log1p(np.array([[40, 60, 120], [40, 900, 120]]))
    assert dearer.usd(raw, tokens_in)[:, 1] == pytest.approx(
        (tokens_in * 1.0 + np.array([60, 900]) * 4.0) / 1e6
    )
    assert again == pytest.approx(cost) and quality.shape == (2, 3)


def test_costs_are_learned_from_recorded_usd_when_the_data_gives_them(
    tmp_path: Path, embedder: StaticEmbeddings
) -> None:
    rows = build_rows([load_dataset(str(write_dataset(tmp_path / "u.jsonl", usd=True)))], FLEET, embedder)
    assert rows.from_tokens.tolist() == [False, False, False]
    recorded = (INPUT_TOKENS * 1.0 + np.array([60, 900]) * 2.0) / 1e6
    assert np.exp(rows.cost_target[:2, 1]) == pytest.approx(recorded)
    fitted = fit("knn", {"k": 1}, rows, FLEET, seed=0)
    _, cost = fitted.predict(rows.dense[:2], rows.input_tokens[:2])
    assert cost[:, 1] == pytest.approx(recorded)  # the data's own cost, whatever the fleet's prices


def test_family_selection_is_deterministic_by_seed(tmp_path: Path, embedder: StaticEmbeddings) -> None:
    rows = build_rows([load_dataset(str(write_dataset(tmp_path / "t.jsonl")))], FLEET, embedder)
    hull = np.array([True, False, True])
    first = select(rows, FLEET, cheapest=0, reference=2, hull=hull, seed=0)
    again = select(rows, FLEET, cheapest=0, reference=2, hull=hull, seed=0)
    assert (first.candidate, first.calibrated, first.choice_set) == (
        again.candidate,
        again.calibrated,
        again.choice_set,
    )
    assert [r["aiq"] for r in first.results] == [r["aiq"] for r in again.results]
    for a, b in zip(first.choices, again.choices, strict=True):
        np.testing.assert_array_equal(a, b)
    # Every candidate measured raw and calibrated, on the hull's models and on all of them.
    assert len(first.results) == len(CANDIDATES) * 4
    assert first.aiq == max(r["aiq"] for r in first.results)
    # The mid model is off this (given) hull but is the one good and cheap on proofs: all models win.
    assert first.choice_set == "all"


def test_calibration_is_a_line_per_model_fitted_on_held_out_predictions() -> None:
    predicted = np.array([[0.2, 0.5], [0.4, 0.5], [0.6, 0.5]])
    recorded = np.array([[0.1, 0.3], [0.5, 0.9], [0.9, np.nan]])
    line = calibration_of(predicted, recorded)
    assert line[:, 0] == pytest.approx([-0.3, 2.0])  # 0.1, 0.5, 0.9 = −0.3 + 2·(0.2, 0.4, 0.6)
    assert line[:, 1] == pytest.approx([0.6, 0.0])  # a constant prediction: the recorded mean


def test_the_eval_and_the_gateway_predict_and_choose_alike(
    tmp_path: Path, embedder: StaticEmbeddings
) -> None:
    """The eval fits through ``train_utility`` and predicts through ``policy.utility``; an artefact
    trained on the same prompts, loaded by the gateway's ``load_engine``, routes each prompt the same."""
    dataset = load_dataset(str(write_dataset(tmp_path / "t.jsonl")))
    train, test = dataset.subset(list(range(48))), dataset.subset(list(range(48, 60)))
    fleet_yaml = tmp_path / "fleet.yaml"
    fleet_yaml.write_text(config_text())
    fleet = fleet_for(fleet_yaml, dataset)
    policy = UtilityPolicy(config=fleet_yaml, embedder=embedder)
    policy.fit(train, matrices(train, fleet))
    routing = policy.route(test, matrices(test, fleet))
    assert routing.choice is not None and routing.details is not None

    trained = train_utility_router([train], FLEET, reference="large", embedder=embedder)
    assert trained.meta["family"] == routing.details["family"]
    assert trained.meta["default_cost_weight"] == routing.details["lambda"]
    artefact = write_artefact(tmp_path / "utility.npz", trained.meta, trained.arrays)
    routed = tmp_path / "routed.yaml"
    routed.write_text(config_text(artefact))
    engine = load_engine(load_config(routed))
    router = engine.learned
    assert router is not None and router.version.startswith(f"{trained.meta['family']}-")

    fitted = fitted_of(trained)
    for i, prompt in enumerate(test.prompts):
        features = extract_features({"model": "auto", "messages": list(prompt.messages)})
        quality, cost = router.predict(features)  # type: ignore[attr-defined]
        eval_quality, eval_cost = fitted.predict(*_encoded(prompt, embedder))
        assert quality == pytest.approx(eval_quality[0]) and cost == pytest.approx(eval_cost[0])
        decision = engine.decide(features)
        assert decision.layer == "learned"
        assert decision.chain[0] == fleet.models[routing.choice[i]].name
        assert "predicted quality" in decision.reason and "cost $" in decision.reason
    # The prompt decides: poems (even ids) and proofs (odd ids) do not go to the same model.
    assert prompt_text(48).startswith("Write") and prompt_text(49).startswith("Prove")
    assert set(routing.choice[::2]).isdisjoint(routing.choice[1::2])


def _encoded(prompt, embedder: StaticEmbeddings):  # type: ignore[no-untyped-def]
    from tierwise.train_utility import encode_prompts

    return encode_prompts([prompt], embedder)


def test_the_ensemble_predicts_the_mean_of_its_members(tmp_path: Path, embedder: StaticEmbeddings) -> None:
    from tierwise.train_utility import ENSEMBLE

    rows = build_rows([load_dataset(str(write_dataset(tmp_path / "t.jsonl")))], FLEET, embedder)
    family, params = ENSEMBLE
    ensemble = fit(family, params, rows, FLEET, seed=0)
    members = [fit(f, p, rows, FLEET, seed=0) for f, p in params["members"]]
    quality, target = ensemble.predict_targets(rows.dense)
    parts = [member.predict_targets(rows.dense) for member in members]
    assert len(parts) == len(params["members"]) > 2
    np.testing.assert_allclose(quality, np.mean([q for q, _ in parts], axis=0))
    np.testing.assert_allclose(target, np.mean([t for _, t in parts], axis=0))
