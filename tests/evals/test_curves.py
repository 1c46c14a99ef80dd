"""Curves against hand-computed cases (RouteLLM's threshold sweep and oracle, RouterBench's hull)."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tierwise.evals.curves import (
    expected_random_curve,
    nondecreasing_convex_hull,
    oracle_best,
    oracle_binary_curve,
    oracle_frontier,
    oracle_graded_curve,
    qcut_thresholds,
    random_router_scores,
    route_to_strong,
    strong_share,
    threshold_curve,
)

nan = math.nan


def test_qcut_edges_interpolate_linearly() -> None:
    # n = 4: quantile q sits at position 3q in the sorted scores, e.g. 0.1 → 0.3 of the way from 0 to 10
    edges = qcut_thresholds([30.0, 0.0, 20.0, 10.0])
    assert edges == pytest.approx([0, 3, 6, 9, 12, 15, 18, 21, 24, 27, 30])


def test_qcut_drops_repeated_edges_of_tied_scores() -> None:
    # positions 9q: 0.1…0.5 fall among the six zeros; 0.6 → 5.4 → 0.4 of the way from 0 to 1, …
    edges = qcut_thresholds([0, 0, 0, 0, 0, 0, 1, 2, 3, 4])
    assert edges == pytest.approx([0, 0.4, 1.3, 2.2, 3.1, 4])


def test_qcut_of_constant_scores() -> None:
    assert list(qcut_thresholds([0.5, 0.5, 0.5])) == [0.5]
    assert list(qcut_thresholds([0.5, 0.5], n_bins=1)) == [0.5, 0.5]  # pandas keeps a lone pair


def test_selection_is_inclusive_except_at_the_last_edge() -> None:
    scores = [0, 0, 0, 0, 0, 0, 1, 2, 3, 4]
    chosen = route_to_strong(scores, qcut_thresholds(scores))
    assert list(chosen.sum(axis=1)) == [10, 4, 3, 2, 1, 0]  # ≥ 0 takes all; > 4 (the max) takes none
    # an edge is inclusive unless it is the last: 4.0 takes the prompt scoring 4, then not
    assert list(route_to_strong(scores, [1.3, 4.0]).sum(axis=1)) == [3, 0]
    assert list(route_to_strong(scores, [4.0, 4.0]).sum(axis=1)) == [1, 0]


def test_threshold_curve_by_hand() -> None:
    # edges with n_bins=2: min 0.1, median 0.5, max 0.9
    scores = [0.5, 0.1, 0.9, 0.3, 0.7]
    weak = [1, 0, 0, 1, 0]
    strong = [1, 1, 1, 0, 1]
    curve = threshold_curve(scores, weak, strong, n_bins=2)
    # 0.9 (strict): nobody strong → weak's 2/5; ≥ 0.5: prompts 0, 2, 4 strong → 1+0+1+1+1 = 4/5; ≥ 0.1: all
    assert list(curve.strong_pct) == [0, 60, 100]
    assert list(curve.quality) == pytest.approx([40, 80, 80])
    graded = threshold_curve(scores, [5, 5, 5, 5, 5], [9, 9, 9, 9, 9], n_bins=2, scale=1.0)
    assert list(graded.quality) == pytest.approx([5, 7.4, 9])


def test_threshold_curve_rejects_mismatched_lengths() -> None:
    with pytest.raises(ValueError, match="router_scores has 2 prompts"):
        threshold_curve([0.1, 0.2], [1, 0, 1], [1, 1, 1])
    with pytest.raises(ValueError, match="finite"):
        threshold_curve([0.1, nan], [1, 0], [1, 1])


def test_oracle_binary_six_prompts() -> None:
    weak = [1, 1, 0, 0, 0, 1]  # 3 right
    strong = [1, 0, 1, 1, 0, 1]  # prompts 2 and 3: weak wrong, strong right
    curve = oracle_binary_curve(weak, strong)
    # (3 + min(6 × pct/100, 2)) / 6 × 100; the budget is fractional: 10 % of 6 is 0.6 of a call
    expected = [50, 60, 70, 80] + [500 / 6] * 7
    assert list(curve.strong_pct) == list(range(0, 101, 10))
    assert list(curve.quality) == pytest.approx(expected)
    with pytest.raises(ValueError, match="0/1"):
        oracle_binary_curve([0.5, 1], [1, 1])


def test_oracle_graded_gives_the_strong_score_to_exactly_k_rows() -> None:
    weak = [1, 2, 3, 4, 6]
    strong = [9, 8, 7, 6, 5]  # gains 8, 6, 4, 2, −1: four positive
    curve = oracle_graded_curve(weak, strong, strong_pcts=[0, 20, 40, 60, 80, 100])
    # k = 0, 1, 2, 3 < 4 positive: the k largest gains (RouteLLM's .loc[:k] then .loc[k:] leaves row k
    # weak, so not k + 1: at 40 % that would be 9+8+7+4+6 = 6.8); k = 4, 5: every positive gain
    assert list(curve.quality) == pytest.approx([16 / 5, 24 / 5, 30 / 5, 34 / 5, 36 / 5, 36 / 5])


def test_oracle_graded_budget_from_another_count() -> None:
    # RouteLLM: budget from the decontaminated count (3 here), mean over every judged prompt (5)
    curve = oracle_graded_curve([1, 2, 3, 4, 6], [9, 8, 7, 6, 5], strong_pcts=[100], budget_n=3)
    assert list(curve.quality) == pytest.approx([34 / 5])


def test_random_router_is_routellms_stream_and_leaves_global_state() -> None:
    random.seed(123)
    before = random.getstate()
    scores = random_router_scores(5, seed=0)
    assert random.getstate() == before
    rng = random.Random(0)
    assert list(scores) == [rng.uniform(0, 1) for _ in range(5)]
    assert list(random_router_scores(5, seed=0)) == list(scores)
    assert list(random_router_scores(5, seed=1)) != list(scores)


def test_expected_random_curve_is_the_straight_line() -> None:
    curve = expected_random_curve(50, 70, strong_pcts=[0, 25, 100])
    assert list(curve.strong_pct) == [0, 25, 100]
    assert list(curve.quality) == [50, 55, 70]


def test_strong_share() -> None:
    assert strong_share([True, False, False, True]) == 0.5
    with pytest.raises(ValueError):
        strong_share([])


# RouterBench: A (1, .2), B (2, .5), C (3, .55) under the chord B–D, D (4, .8), E (5, .7) and G (6, .8)
# dominated by D, F (2, .3) dominated by B at the same cost, K (3, .65) on the chord B–D.
POINTS_COST = [1, 2, 3, 4, 5, 2, 6, 3]
POINTS_QUALITY = [0.2, 0.5, 0.55, 0.8, 0.7, 0.3, 0.8, 0.65]


def test_hull_by_hand() -> None:
    hull = nondecreasing_convex_hull(POINTS_COST, POINTS_QUALITY)
    # slopes A→B 0.3, B→D 0.15: concave; C is below B–D, K on it, E, F, G dominated
    assert list(hull.cost) == [1, 2, 4]
    assert list(hull.quality) == [0.2, 0.5, 0.8]


def test_hull_drops_a_dip_and_keeps_the_best_of_equal_costs() -> None:
    hull = nondecreasing_convex_hull([1, 1, 2, 3], [0.1, 0.4, 0.3, 0.9])
    assert list(zip(hull.cost, hull.quality, strict=True)) == [(1, 0.4), (3, 0.9)]
    single = nondecreasing_convex_hull([3, 1], [0.5, 0.9])  # the cheapest is also the best
    assert list(zip(single.cost, single.quality, strict=True)) == [(1, 0.9)]


@given(
    st.lists(
        st.tuples(st.floats(0, 100, allow_nan=False), st.floats(0, 1, allow_nan=False)),
        min_size=1,
        max_size=30,
    )
)
def test_hull_is_nondecreasing_and_above_every_point(points: list[tuple[float, float]]) -> None:
    cost = np.array([c for c, _ in points])
    quality = np.array([q for _, q in points])
    hull = nondecreasing_convex_hull(cost, quality)
    assert np.all(np.diff(hull.cost) > 0) and np.all(np.diff(hull.quality) > 0)
    assert np.all(np.interp(cost, hull.cost, hull.quality) >= quality - 1e-9)
    assert hull.cost[0] == cost.min() and hull.quality[-1] == quality.max()


SCORES = [[0.2, 0.6, 1.0], [0.5, nan, 0.5]]
COSTS = [[1, 2, 4], [1, 1, 3]]


def test_oracle_best_takes_the_cheapest_best() -> None:
    assert list(oracle_best(SCORES, COSTS)) == [2, 0]
    assert list(oracle_best([[1, 1]], [[3, 2]])) == [1]
    assert list(oracle_best([[1, 1]], [[2, 2]])) == [0]
    assert list(oracle_best([[nan, 0.0]], [[0, 5]])) == [1]  # a missing score is never chosen


def test_oracle_frontier_by_hand() -> None:
    curve = oracle_frontier(SCORES, COSTS)
    # λ = ∞: models 0 and 0 → totals (2, 0.7); below λ = 0.4 prompt 0 moves to model 1 (+1, +0.4),
    # below λ = 0.2 to model 2 (+2, +0.4); prompt 1 never moves (model 2 costs more for the same score)
    assert list(curve.cost) == pytest.approx([1.0, 1.5, 2.5])
    assert list(curve.quality) == pytest.approx([0.35, 0.55, 0.75])
    best = oracle_best(SCORES, COSTS)
    assert (curve.cost[-1], curve.quality[-1]) == pytest.approx(
        (np.mean(np.array(COSTS)[[0, 1], best]), np.mean(np.array(SCORES)[[0, 1], best]))
    )


def test_oracle_frontier_merges_equal_slopes() -> None:
    curve = oracle_frontier([[0, 1], [0, 1]], [[1, 2], [1, 2]])
    assert list(curve.cost) == [1, 2] and list(curve.quality) == [0, 1]


def test_oracle_frontier_matches_a_brute_force_lambda_sweep() -> None:
    rng = np.random.default_rng(5)
    scores = rng.integers(0, 5, size=(12, 4)) / 4.0
    scores[rng.random(scores.shape) < 0.2] = nan
    scores[:, 0] = np.where(np.isnan(scores[:, 0]), 0.0, scores[:, 0])  # every prompt keeps a score
    costs = rng.integers(1, 6, size=(12, 4)).astype(float)
    curve = oracle_frontier(scores, costs)
    known = ~np.isnan(scores)
    pairs = [
        (scores[i, a] - scores[i, b]) / (costs[i, a] - costs[i, b])
        for i in range(12)
        for a in range(4)
        for b in range(4)
        if known[i, a] and known[i, b] and costs[i, a] != costs[i, b]
    ]
    ties = sorted({p for p in pairs if p > 0})
    lambdas = [0.0, *ties, *(np.array(ties) + 1e-6), *(np.array(ties) - 1e-6), 1e9]
    swept = set()
    for lam in lambdas:
        value = np.where(known, scores - lam * costs, -np.inf)
        # argmax, ties → cheaper: among the maxima, the lowest cost
        best = np.argmin(
            np.where(np.isclose(value, value.max(axis=1, keepdims=True), rtol=0, atol=1e-12), costs, np.inf),
            axis=1,
        )
        rows = np.arange(12)
        swept.add((round(costs[rows, best].mean(), 9), round(scores[rows, best].mean(), 9)))
    frontier = {(round(c, 9), round(q, 9)) for c, q in zip(curve.cost, curve.quality, strict=True)}
    assert swept == frontier


def test_oracle_needs_a_score_per_prompt() -> None:
    with pytest.raises(ValueError, match="prompt 1 has no score"):
        oracle_best([[1.0], [nan]], [[1.0], [1.0]])
    with pytest.raises(ValueError, match="finite cost"):
        oracle_frontier([[1.0]], [[nan]])
