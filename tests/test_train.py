"""train.py on real data: rows and hashes, selection by inner CV, calibration that holds out of sample."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from tierwise.embeddings import StaticEmbeddings, load_wordllama
from tierwise.errors import ConfigError
from tierwise.evals.datasets import load_dataset
from tierwise.evals.fleet import default_fleet
from tierwise.evals.splits import kfold
from tierwise.policy.learned import Calibration, make_scorer, route_many, threshold_for
from tierwise.train import FleetModel, build_training_set, text_of, train_router

LINEAR = (("linear", {"C": 0.1}),)


@pytest.fixture(scope="module")
def embedder() -> StaticEmbeddings:
    return load_wordllama()


def _models(name: str) -> tuple[list[FleetModel], str]:
    dataset = load_dataset(name)
    fleet = default_fleet(dataset)
    models = [
        FleetModel(m.name, m.price.input_per_mtok, m.price.output_per_mtok, upstream)
        for m, upstream in zip(fleet.models, fleet.dataset_models, strict=True)
    ]
    return models, fleet.models[fleet.strongest].name


def test_rows_match_fleet_models_across_datasets_and_hash_the_data(embedder: StaticEmbeddings) -> None:
    models, _ = _models("arena-bench-v1")  # Mixtral, GPT-3.5, GPT-4 under arena's names
    arena, mtbench = load_dataset("arena-bench-v1"), load_dataset("routellm-mtbench")
    ts = build_training_set([arena, mtbench], models, embedder)
    # RouteLLM names Mixtral "mistralai/Mixtral-8x7B-Instruct-v0.1": matched after the "/".
    assert ts.mapping[1]["Mixtral-8x7B-Instruct-v0.1"] == "mistralai/Mixtral-8x7B-Instruct-v0.1"
    assert ts.mapping[1]["gpt-3.5-turbo-1106"] is None  # MT-Bench has no GPT-3.5: its scores are nan
    assert len(ts) == 372 and np.isnan(ts.quality[300:, 1]).all()
    # Each dataset weighs the same in total, whatever its size.
    assert ts.weight[:300].sum() == pytest.approx(ts.weight[300:].sum())
    again = build_training_set([arena, mtbench], models, embedder)
    assert again.sha256 == ts.sha256
    fewer = build_training_set(
        [arena, mtbench], models, embedder, exclude_texts={text_of(arena.prompts[0].messages)}
    )
    assert len(fewer) == 371 and fewer.sha256 != ts.sha256


def test_a_fleet_model_without_scores_is_an_error(embedder: StaticEmbeddings) -> None:
    models, _ = _models("arena-bench-v1")
    with pytest.raises(ConfigError, match=r"'gpt-3\.5-turbo-1106' has no score"):
        build_training_set([load_dataset("routellm-mtbench")], models, embedder)


def test_missing_scikit_learn_asks_for_the_extra(
    monkeypatch: pytest.MonkeyPatch, embedder: StaticEmbeddings
) -> None:
    monkeypatch.setitem(sys.modules, "sklearn", None)
    models, reference = _models("routellm-mtbench")
    with pytest.raises(ConfigError, match=r"pip install 'tierwise\[learned\]'"):
        train_router([load_dataset("routellm-mtbench")], models, reference=reference, embedder=embedder)


def test_selection_records_every_candidate_and_refits_the_best(embedder: StaticEmbeddings) -> None:
    models, reference = _models("arena-bench-v1")
    candidates = (("knn", {"k": 10}), ("knn", {"k": 50}))
    trained = train_router(
        [load_dataset("arena-bench-v1")],
        models,
        reference=reference,
        embedder=embedder,
        candidates=candidates,
    )
    measured = trained.meta["metrics"]["candidates"]
    assert [c["params"]["k"] for c in measured] == [10, 50]
    best = max(measured, key=lambda c: c["apgr"])
    assert (trained.meta["family"], trained.meta["params"]) == (best["family"], best["params"])
    assert [m["name"] for m in trained.meta["models"]] == [
        "Mixtral-8x7B-Instruct-v0.1",
        "gpt-3.5-turbo-1106",
        "gpt-4-1106-preview",
    ]  # cheapest first
    assert trained.meta["reference"] == 2 and trained.oof_quality.shape == (300, 3)


@pytest.fixture(scope="module")
def held_out(embedder: StaticEmbeddings) -> tuple:
    """A router trained on two thirds of GSM8K, and the other third as training rows (never seen)."""
    dataset = load_dataset("routellm-gsm8k")
    models, reference = _models("routellm-gsm8k")
    train_idx, test_idx = kfold([text_of(p.messages) for p in dataset.prompts], 3, seed=0)[0]
    train, test = dataset.subset(list(train_idx)), dataset.subset(list(test_idx))
    trained = train_router([train], models, reference=reference, embedder=embedder, candidates=LINEAR)
    fleet = [FleetModel(m["name"], **m["price"], upstream=m["upstream"]) for m in trained.meta["models"]]
    ts = build_training_set([test], fleet, embedder)
    assert not set(ts.texts) & {text_of(p.messages) for p in train.prompts}
    quality = make_scorer(trained.meta["family"], trained.arrays, trained.meta["params"]).predict(
        ts.dense, ts.tokens
    )
    return trained, ts, quality


@pytest.mark.parametrize(
    ("target", "measure", "tolerance"),
    [
        ({"quality_floor": 0.95}, "quality_rel", 0.03),
        ({"strong_share": 0.5}, "strong_share", 0.08),
        ({"budget_per_1k_usd": 2.5}, "cost_per_1k_usd", 0.4),
    ],
)
def test_calibration_meets_its_target_on_held_out_prompts(
    held_out: tuple, target: dict[str, float], measure: str, tolerance: float
) -> None:
    trained, ts, quality = held_out
    threshold = threshold_for(Calibration.from_json(trained.meta["calibration"]), **target)
    chosen = route_many(quality, trained.meta["reference"], threshold)
    rows = np.arange(len(ts))
    measured = {
        "quality_rel": ts.quality[rows, chosen].mean() / ts.quality[:, 1].mean(),
        "strong_share": float(np.mean(chosen == 1)),
        "cost_per_1k_usd": float(ts.cost[rows, chosen].mean() * 1000),
    }[measure]
    value = next(iter(target.values()))
    if measure == "quality_rel":
        assert measured >= value - tolerance
        assert np.mean(chosen == 1) < 0.95  # and it did save something
    else:
        assert abs(measured - value) <= tolerance


def test_default_threshold_is_the_default_target(held_out: tuple) -> None:
    trained = held_out[0]
    assert trained.meta["default_target"] == {"quality_floor": 0.95}
    calibration = Calibration.from_json(trained.meta["calibration"])
    assert trained.meta["default_threshold"] == threshold_for(calibration, quality_floor=0.95)


def test_train_command_writes_a_utility_router_the_route_command_explains(tmp_path: Path) -> None:
    from tests.evals.utility_data import config_text, write_dataset
    from tests.harness import run_cli

    data = write_dataset(tmp_path / "t.jsonl")
    fleet = tmp_path / "fleet.yaml"
    fleet.write_text(config_text())
    out = tmp_path / "utility.npz"
    common = ("train", "--router", "utility", "--data", str(data), "--config", str(fleet), "--out", str(out))
    done = run_cli(*common, "--families", "ridge,knn")
    assert done.returncode == 0, done.stderr
    assert "utility ridge" in done.stdout or "utility knn" in done.stdout
    assert "out-of-fold AIQ" in done.stderr and "λ" in done.stdout
    routed = tmp_path / "routed.yaml"
    routed.write_text(config_text(out))
    explained = run_cli("route", "--config", str(routed), "Prove that 9 squared plus 9 is even.")
    assert explained.returncode == 0, explained.stderr
    assert "predicted quality" in explained.stdout and "cost $" in explained.stdout
    wrong = run_cli(*common, "--families", "linear")
    assert wrong.returncode == 2 and "none of ridge, knn, cluster, mf, blend" in wrong.stderr
