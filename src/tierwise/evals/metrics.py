"""Summary statistics of cost–quality curves, exactly as RouteLLM and RouterBench define them.

The curves come from ``curves.py``: RouteLLM's share curves (x = % of calls to the strong model, 0–100;
lm-sys/RouteLLM ``routellm/evals/evaluate.py``) give AUC, APGR, CPT and PGR; RouterBench's cost curves
(Hu et al. 2024; withmartian/routerbench ``evaluation/AIQ.py``) give AIQ and the cost at a quality.
Every function is pure and takes plain sequences or numpy arrays.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from numpy.typing import ArrayLike, NDArray

from .curves import FloatArray, _pair, nondecreasing_convex_hull

__all__ = [
    "aiq",
    "apgr",
    "auc",
    "bootstrap_ci",
    "cost_at_quality",
    "cpt",
    "cpt_first_reach",
    "pgr",
    "savings_at_parity",
]


def auc(strong_pct: ArrayLike, quality: ArrayLike) -> float:
    """RouteLLM's AUC: ``np.trapz(accuracy, strong_percentage / 100)``, points sorted by strong share."""
    x, y = _share_sorted(strong_pct, quality)
    return _trapezoid(y, x / 100)


def apgr(strong_pct: ArrayLike, quality: ArrayLike, *, weak_quality: float, strong_quality: float) -> float:
    """RouteLLM's average performance gap recovered: ``(AUC − weak_auc) / (strong_auc − weak_auc)``.

    ``weak_auc``/``strong_auc`` integrate the constant weak/strong quality over the curve's own x values,
    so a curve that does not span 0–100 % is normalised over its own range.
    """
    x, y = _share_sorted(strong_pct, quality)
    weak_auc = _trapezoid(np.full(len(x), float(weak_quality)), x / 100)
    strong_auc = _trapezoid(np.full(len(x), float(strong_quality)), x / 100)
    if strong_auc == weak_auc:
        raise ValueError("apgr: zero reference area (the curve spans no strong share, or strong == weak)")
    return (_trapezoid(y, x / 100) - weak_auc) / (strong_auc - weak_auc)


def pgr(quality: float, *, weak_quality: float, strong_quality: float) -> float:
    """RouteLLM's performance gap recovered by one operating point: ``(q − weak) / (strong − weak)``."""
    if strong_quality == weak_quality:
        raise ValueError(f"pgr: strong_quality equals weak_quality ({weak_quality}); the gap is zero")
    return (quality - weak_quality) / (strong_quality - weak_quality)


def cpt(
    strong_pct: ArrayLike, quality: ArrayLike, *, weak_quality: float, strong_quality: float, recovered: float
) -> float:
    """RouteLLM's call-performance threshold ("20% qual", …): % strong calls to recover that gap share.

    Exactly RouteLLM's call, ``np.interp(recovered × (strong − weak) + weak, quality, strong_pct)`` with
    both in strong-share order. np.interp assumes ``quality`` increases and does not check: on a curve
    that dips the answer is wherever its binary search lands, and a target above every point gives the
    last ``strong_pct`` (usually 100). ``cpt_first_reach`` answers the same question well-defined.
    """
    x, y = _share_sorted(strong_pct, quality)
    return float(np.interp(recovered * (strong_quality - weak_quality) + weak_quality, y, x))


def cpt_first_reach(
    strong_pct: ArrayLike, quality: ArrayLike, *, weak_quality: float, strong_quality: float, recovered: float
) -> float | None:
    """The least strong-call % at which the curve, linear between points, first reaches the CPT target.

    Equals ``cpt`` on a strictly increasing curve that reaches the target; on a curve that dips it is
    the first crossing, not np.interp's guess; ``None`` if the curve never reaches the target.
    """
    x, y = _share_sorted(strong_pct, quality)
    return _first_reach(x, y, recovered * (strong_quality - weak_quality) + weak_quality)


def aiq(cost: ArrayLike, quality: ArrayLike, *, c_min: float, c_max: float) -> float:
    """RouterBench's average improvement in quality: ``(1 / (c_max − c_min)) ∫ R̃(c) dc`` on [c_min, c_max].

    R̃ is ``nondecreasing_convex_hull``; outside its cost range it takes the nearest hull value (flat
    left of the cheapest configuration, flat right of the best). This is the paper's formula;
    RouterBench's code (``calc_AIQ``) differs: it integrates from the cheapest hull point, not c_min,
    and divides by the largest cost of the routers compared, not by the cost range.
    """
    if not c_max > c_min:
        raise ValueError(f"aiq: c_max ({c_max}) must be greater than c_min ({c_min})")
    hull = nondecreasing_convex_hull(cost, quality)
    inside = hull.cost[(hull.cost > c_min) & (hull.cost < c_max)]
    xs = np.concatenate(([c_min], inside, [c_max]))
    return _trapezoid(np.interp(xs, hull.cost, hull.quality), xs) / (c_max - c_min)


def cost_at_quality(cost: ArrayLike, quality: ArrayLike, target: float, *, hull: bool = True) -> float | None:
    """The lowest cost at which the curve reaches ``target`` quality, linear between points, or None.

    With ``hull=True`` (the default) the curve is the non-decreasing convex hull: mixing two
    configurations counts as reachable. With ``hull=False`` it is the points themselves in cost order.
    """
    if hull:
        c, q = nondecreasing_convex_hull(cost, quality)
    else:
        c, q = _pair(cost, quality, ("cost", "quality"))
        order = np.lexsort((q, c))
        c, q = c[order], q[order]
    return _first_reach(c, q, target)


def savings_at_parity(
    cost: ArrayLike,
    quality: ArrayLike,
    *,
    strongest_cost: float,
    strongest_quality: float,
    fraction: float = 1.0,
    hull: bool = True,
) -> float | None:
    """``1 − cost_at_quality(fraction × strongest_quality) / strongest_cost``, or None where undefined.

    ``fraction=1`` is the saving at quality parity with always-strongest, ``0.95`` at 95 % of its quality.
    """
    at = cost_at_quality(cost, quality, fraction * strongest_quality, hull=hull)
    if at is None or strongest_cost <= 0:
        return None
    return 1 - at / strongest_cost


def bootstrap_ci(
    statistic: Callable[[NDArray[np.intp]], float],
    n_items: int,
    *,
    n_boot: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
) -> tuple[float, float]:
    """Percentile bootstrap interval of ``statistic`` over items resampled with replacement.

    Each of ``n_boot`` resamples is ``n_items`` indices drawn from ``np.random.default_rng(seed)``;
    ``statistic`` maps it to a number, and the interval is the ``alpha/2`` and ``1 − alpha/2``
    quantiles (linear interpolation). The same seed gives the same interval; a nan statistic, nan.
    """
    if n_items < 1 or n_boot < 1:
        raise ValueError(f"bootstrap_ci: n_items ({n_items}) and n_boot ({n_boot}) must be at least 1")
    if not 0 < alpha < 1:
        raise ValueError(f"bootstrap_ci: alpha must be in (0, 1), got {alpha}")
    rng = np.random.default_rng(seed)
    stats = np.array([statistic(rng.integers(0, n_items, size=n_items)) for _ in range(n_boot)], dtype=float)
    low, high = np.quantile(stats, [alpha / 2, 1 - alpha / 2])
    return float(low), float(high)


def _trapezoid(y: FloatArray, x: FloatArray) -> float:
    # np.trapz's formula (np.trapezoid since numpy 2), written out: every numpy version gives the same bits
    return float(np.sum(np.diff(x) * (y[1:] + y[:-1]) / 2.0))


def _first_reach(x: FloatArray, y: FloatArray, target: float) -> float | None:
    """The first x at which the polyline through (x, y), in the given order, reaches ``target``."""
    reached = np.flatnonzero(y >= target)
    if reached.size == 0:
        return None
    j = int(reached[0])
    if j == 0:
        return float(x[0])
    # y[j-1] < target <= y[j]: the segment rises, so the division is safe
    return float(x[j - 1] + (target - y[j - 1]) * (x[j] - x[j - 1]) / (y[j] - y[j - 1]))


def _share_sorted(strong_pct: ArrayLike, quality: ArrayLike) -> tuple[FloatArray, FloatArray]:
    x, y = _pair(strong_pct, quality, ("strong_pct", "quality"))
    order = np.argsort(x, kind="stable")  # RouteLLM: sort_values(by=["strong_percentage"])
    return x[order], y[order]
