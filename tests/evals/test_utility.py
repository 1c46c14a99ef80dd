"""The quality − λ·cost router: its sweep's ends, and a family selection that depends on the seed alone."""

from __future__ import annotations

import numpy as np

from tierwise.evals.replay import Matrices
from tierwise.evals.utility import CANDIDATES, LAMBDAS, on_hull, select, sweep


def _training(n: int = 90, seed: int = 3) -> tuple[np.ndarray, Matrices]:
    """Three models; the middle one is good exactly where the first feature is positive."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 6))
    easy = x[:, 0] > 0
    scores = np.c_[np.where(easy, 0.6, 0.2), np.where(easy, 0.9, 0.3), np.full(n, 0.9)]
    costs = np.c_[np.full(n, 1e-4), np.full(n, 1e-3) * (1 + x[:, 1] ** 2), np.full(n, 1e-2)]
    return x, Matrices(scores=scores, costs=costs)


def test_the_sweep_runs_from_best_quality_to_cheapest() -> None:
    quality = np.array([[0.2, 0.5, 0.9], [0.9, 0.9, 0.9]])
    log_cost = np.log(np.array([[1.0, 2.0, 10.0], [1.0, 2.0, 10.0]]))
    choices = sweep(quality, log_cost, 10.0)
    assert len(choices) == len(LAMBDAS)
    assert choices[0].tolist() == [2, 0]  # λ = 0: best predicted quality, the cheaper on a tie
    assert choices[-1].tolist() == [0, 0]  # λ huge: the cheapest


def test_family_selection_is_deterministic_by_seed() -> None:
    x, data = _training()
    first = select(x, data, cheapest=0, strongest=2, seed=0)
    again = select(x, data, cheapest=0, strongest=2, seed=0)
    assert first[0] == again[0] and first[1] == again[1]
    np.testing.assert_array_equal(first[2], again[2])
    winner, results, oof = first
    assert len(results) == len(CANDIDATES)
    best = max(results, key=lambda r: r["aiq"])
    assert winner == (best["family"], best["params"])
    assert oof.shape == (len(x), 6)


def test_only_models_on_the_training_hull_are_chosen() -> None:
    _, data = _training()
    # A fourth model, dearer than the strongest and worse: never on the hull, never chosen.
    worse = Matrices(
        scores=np.c_[data.scores, data.scores[:, 1]], costs=np.c_[data.costs, data.costs[:, 2] * 2]
    )
    allowed = on_hull(worse)
    assert allowed.tolist() == [True, True, True, False]
    quality = np.tile([0.1, 0.2, 0.3, 0.99], (4, 1))
    choices = sweep(quality, np.log(np.tile([1.0, 2.0, 3.0, 0.5], (4, 1))), 3.0, allowed)
    assert all(3 not in c for c in choices)
