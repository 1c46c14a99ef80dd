"""Summary statistics against hand-computed cases (RouteLLM's AUC/APGR/CPT/PGR, RouterBench's AIQ)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tierwise.evals.curves import (
    expected_random_curve,
    oracle_binary_curve,
    random_router_scores,
    threshold_curve,
)
from tierwise.evals.metrics import (
    aiq,
    apgr,
    auc,
    bootstrap_ci,
    cost_at_quality,
    cpt,
    cpt_first_reach,
    pgr,
    savings_at_parity,
)

WEAK, STRONG = 50.0, 70.0
LINE_X, LINE_Y = [0, 50, 100], [50, 60, 70]


def test_auc_and_apgr_of_a_straight_line() -> None:
    # 0.5 × (50 + 60)/2 + 0.5 × (60 + 70)/2 = 60; weak area 50, strong area 70
    assert auc(LINE_X, LINE_Y) == 60
    assert apgr(LINE_X, LINE_Y, weak_quality=WEAK, strong_quality=STRONG) == 0.5
    assert apgr(LINE_X[::-1], LINE_Y[::-1], weak_quality=WEAK, strong_quality=STRONG) == 0.5  # sorts first


def test_auc_is_numpys_trapezoid() -> None:
    rng = np.random.default_rng(0)
    x, y = np.sort(rng.random(11)) * 100, rng.random(11)
    trapezoid = getattr(np, "trapezoid", None) or np.trapz  # renamed in numpy 2.0
    assert auc(x, y) == trapezoid(y, x / 100)


def test_apgr_of_a_curve_that_is_strong_at_zero_calls() -> None:
    # the jump at x = 0 has no width, so the area is the strong one
    assert apgr([0, 0, 100], [WEAK, STRONG, STRONG], weak_quality=WEAK, strong_quality=STRONG) == 1.0
    assert apgr([0, 100], [STRONG, STRONG], weak_quality=WEAK, strong_quality=STRONG) == 1.0


def test_apgr_over_a_partial_range_is_normalised_over_it() -> None:
    # x from 20 % to 60 %: area 0.4 × 65 = 26, weak 0.4 × 50 = 20, strong 0.4 × 70 = 28 → 6 / 8
    assert apgr([20, 60], [60, 70], weak_quality=WEAK, strong_quality=STRONG) == pytest.approx(0.75)
    assert apgr([0, 50], [50, 70], weak_quality=WEAK, strong_quality=STRONG) == pytest.approx(0.5)


def test_apgr_rejects_a_zero_reference_area() -> None:
    with pytest.raises(ValueError, match="zero reference area"):
        apgr([40], [60], weak_quality=WEAK, strong_quality=STRONG)
    with pytest.raises(ValueError, match="zero reference area"):
        apgr(LINE_X, LINE_Y, weak_quality=WEAK, strong_quality=WEAK)


@given(
    st.lists(st.tuples(st.integers(0, 1000), st.floats(0, 1)), min_size=2, max_size=20).filter(
        lambda pts: max(x for x, _ in pts) > min(x for x, _ in pts)
    )
)
def test_no_curve_between_weak_and_strong_beats_strong_at_zero_calls(points: list[tuple[int, float]]) -> None:
    x = [p / 10 for p, _ in points]  # strong-call percentages to one decimal
    y = [WEAK + (STRONG - WEAK) * share for _, share in points]  # every point between weak and strong
    jump = apgr(x, [STRONG] * len(x), weak_quality=WEAK, strong_quality=STRONG)
    assert jump == pytest.approx(1.0)
    assert -1e-9 <= apgr(x, y, weak_quality=WEAK, strong_quality=STRONG) <= jump + 1e-9


def test_pgr() -> None:
    assert pgr(60, weak_quality=WEAK, strong_quality=STRONG) == 0.5
    assert pgr(75, weak_quality=WEAK, strong_quality=STRONG) == 1.25
    with pytest.raises(ValueError, match="gap is zero"):
        pgr(60, weak_quality=WEAK, strong_quality=WEAK)


@pytest.mark.parametrize(("recovered", "calls"), [(0.2, 20), (0.5, 50), (0.8, 80), (0.0, 0), (1.0, 100)])
def test_cpt_on_a_monotone_curve(recovered: float, calls: float) -> None:
    # target = weak + recovered × 20 on the line 50 + x/5
    kwargs = {"weak_quality": WEAK, "strong_quality": STRONG, "recovered": recovered}
    assert cpt(LINE_X, LINE_Y, **kwargs) == pytest.approx(calls)
    assert cpt_first_reach(LINE_X, LINE_Y, **kwargs) == pytest.approx(calls)


DIP_X, DIP_Y = [0, 25, 50, 75, 100], [50, 66, 55, 68, 70]


def test_cpt_reproduces_np_interp_on_a_curve_that_dips() -> None:
    # target 66 (80 % of the gap): np.interp's search lands on 55 → 68, i.e. 50 + 25 × 11/13, although
    # the curve already reaches 66 at 25 % of calls
    kwargs = {"weak_quality": WEAK, "strong_quality": STRONG, "recovered": 0.8}
    assert cpt(DIP_X, DIP_Y, **kwargs) == np.interp(66, DIP_Y, DIP_X)
    assert cpt(DIP_X, DIP_Y, **kwargs) == pytest.approx(50 + 25 * 11 / 13)
    assert cpt_first_reach(DIP_X, DIP_Y, **kwargs) == 25
    # target 60: first crossing on 0 → 25, at 25 × 10/16
    half = {**kwargs, "recovered": 0.5}
    assert cpt_first_reach(DIP_X, DIP_Y, **half) == pytest.approx(15.625)


def test_cpt_above_the_curve() -> None:
    kwargs = {"weak_quality": WEAK, "strong_quality": STRONG, "recovered": 1.5}  # target 80
    assert cpt(LINE_X, LINE_Y, **kwargs) == 100  # np.interp clamps
    assert cpt_first_reach(LINE_X, LINE_Y, **kwargs) is None


def test_oracle_apgr_by_hand() -> None:
    # the six prompts of test_curves: 50, 60, 70, 80, then 250/3 seven times; weak 50, strong 200/3
    curve = oracle_binary_curve([1, 1, 0, 0, 0, 1], [1, 0, 1, 1, 0, 1])
    # area 5.5 + 6.5 + 7.5 + 49/6 + 50 = 233/3 → (233/3 − 50) / (200/3 − 50) = 83/50
    assert auc(*curve) == pytest.approx(233 / 3)
    assert apgr(*curve, weak_quality=50, strong_quality=200 / 3) == pytest.approx(1.66)


def test_expected_random_curve_has_apgr_one_half() -> None:
    curve = expected_random_curve(0.31, 0.87)
    assert apgr(*curve, weak_quality=0.31, strong_quality=0.87) == pytest.approx(0.5, abs=1e-12)


def test_random_router_apgr_is_about_one_half() -> None:
    rng = np.random.default_rng(11)
    weak = (rng.random(5000) < 0.55).astype(float)
    strong = np.maximum(weak, rng.random(5000) < 0.5)  # strong is right wherever weak is, and more
    curve = threshold_curve(random_router_scores(5000, seed=0), weak, strong)
    value = apgr(*curve, weak_quality=weak.mean() * 100, strong_quality=strong.mean() * 100)
    assert 0.45 <= value <= 0.55


# RouterBench's hull of these points (see test_curves): A (1, .2), B (2, .5), D (4, .8)
COST = [1, 2, 3, 4, 5, 2, 6, 3]
QUALITY = [0.2, 0.5, 0.55, 0.8, 0.7, 0.3, 0.8, 0.65]


def test_aiq_by_hand() -> None:
    # 1 → 2: (0.2 + 0.5)/2 = 0.35; 2 → 4: (0.5 + 0.8)/2 × 2 = 1.3; 4 → 6 flat: 1.6 → 3.25 / 5
    assert aiq(COST, QUALITY, c_min=1, c_max=6) == pytest.approx(0.65)
    # left of the cheapest point the hull's first value: + 0.2 over 0 → 1 → 3.45 / 6
    assert aiq(COST, QUALITY, c_min=0, c_max=6) == pytest.approx(0.575)
    # inside the hull: R̃(1.5) = 0.35, R̃(3) = 0.65 → (0.2125 + 0.575) / 1.5
    assert aiq(COST, QUALITY, c_min=1.5, c_max=3) == pytest.approx(0.525)
    with pytest.raises(ValueError, match="greater than c_min"):
        aiq(COST, QUALITY, c_min=2, c_max=2)


def test_cost_at_quality_on_the_hull() -> None:
    assert cost_at_quality(COST, QUALITY, 0.65) == pytest.approx(3.0)  # B → D: 2 + 0.15/0.3 × 2
    assert cost_at_quality(COST, QUALITY, 0.8) == 4
    assert cost_at_quality(COST, QUALITY, 0.1) == 1  # the cheapest point already does
    assert cost_at_quality(COST, QUALITY, 0.81) is None


def test_cost_at_quality_on_the_points_themselves() -> None:
    cost, quality = [1, 2, 3, 4], [0.2, 0.5, 0.4, 0.9]
    assert cost_at_quality(cost, quality, 0.45, hull=False) == pytest.approx(1 + 0.25 / 0.3)
    assert cost_at_quality(cost, quality, 0.7, hull=False) == pytest.approx(3.6)  # 3 + 0.3/0.5
    assert cost_at_quality(cost, quality, 0.7) == pytest.approx(3.0)  # hull A, B, D: 2 + 0.2/0.4 × 2


def test_savings_at_parity() -> None:
    cost, quality = [1, 2, 4], [0.2, 0.5, 0.9]
    # quality 0.8 first reached at 2 + 0.3/0.4 × 2 = 3.5 → 1 − 3.5/5
    assert savings_at_parity(cost, quality, strongest_cost=5, strongest_quality=0.8) == pytest.approx(0.3)
    half = savings_at_parity(cost, quality, strongest_cost=5, strongest_quality=0.8, fraction=0.625)
    assert half == pytest.approx(0.6)  # quality 0.5 at cost 2
    assert savings_at_parity(cost, quality, strongest_cost=5, strongest_quality=1.0) is None
    assert savings_at_parity(cost, quality, strongest_cost=0, strongest_quality=0.8) is None


def test_bootstrap_ci_of_a_mean() -> None:
    values = np.random.default_rng(3).normal(10, 2, size=400)

    def mean(idx: np.ndarray) -> float:
        return float(values[idx].mean())

    low, high = bootstrap_ci(mean, len(values), seed=7)
    assert low < values.mean() < high
    assert high - low == pytest.approx(2 * 1.96 * 2 / np.sqrt(400), rel=0.25)  # about ± 1.96 σ/√n
    assert bootstrap_ci(mean, len(values), seed=7) == (low, high)
    assert bootstrap_ci(mean, len(values), seed=8) != (low, high)


def test_bootstrap_ci_of_a_constant_and_bad_arguments() -> None:
    assert bootstrap_ci(lambda idx: 4.0, 10, n_boot=50) == (4.0, 4.0)
    with pytest.raises(ValueError, match="alpha"):
        bootstrap_ci(lambda idx: 4.0, 10, alpha=1.0)
    with pytest.raises(ValueError, match="at least 1"):
        bootstrap_ci(lambda idx: 4.0, 0)
