"""Cost–quality curves of routing policies, built as RouteLLM and RouterBench build them.

Two kinds of curve, both plain numpy arrays (``metrics.py`` turns them into numbers):

* a ``ShareCurve`` (RouteLLM, Ong et al. 2024; lm-sys/RouteLLM ``routellm/evals/evaluate.py`` and
  ``benchmarks.py``): x is the percentage of calls sent to the strong model (0–100), y the quality
  (accuracy × 100 on a correct/incorrect benchmark, the mean 1–10 grade on MT-Bench);
* a ``CostCurve`` (RouterBench, Hu et al. 2024, "RouterBench: A Benchmark for Multi-LLM Routing
  System"; withmartian/routerbench ``evaluation/AIQ.py``): x is cost, y quality.

Every function is pure. Where a reference has a quirk, its numbers are reproduced and the docstring
says so, so that the published values come out of the published data.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = [
    "DECILE_PCTS",
    "CostCurve",
    "ShareCurve",
    "expected_random_curve",
    "nondecreasing_convex_hull",
    "oracle_best",
    "oracle_binary_curve",
    "oracle_frontier",
    "oracle_graded_curve",
    "qcut_thresholds",
    "random_router_scores",
    "route_to_strong",
    "strong_share",
    "threshold_curve",
]

FloatArray = NDArray[np.float64]
DECILE_PCTS: tuple[int, ...] = tuple(range(0, 101, 10))  # RouteLLM's oracle budgets: 0, 10, …, 100 %


class ShareCurve(NamedTuple):
    """RouteLLM's curve: one point per operating point, sorted by ``strong_pct`` (0–100)."""

    strong_pct: FloatArray
    quality: FloatArray


class CostCurve(NamedTuple):
    """RouterBench's curve: one point per configuration (or hull vertex), in cost order."""

    cost: FloatArray
    quality: FloatArray


def qcut_thresholds(router_scores: ArrayLike, n_bins: int = 10) -> FloatArray:
    """The edges of ``pd.qcut(scores, n_bins, retbins=True, duplicates="drop")``: RouteLLM's thresholds.

    pandas 2.x, which RouteLLM ran on, computes them as
    ``np.percentile(scores, np.linspace(0, 1, n_bins + 1) * 100)`` (linear interpolation); this is
    that, bit for bit. pandas 3 nudges quantiles that are not representable up by one ulp, moving
    edges by ~1e-15; we keep the pandas 2 edges. Tied scores repeat edges, on which RouteLLM's call
    (``duplicates="raise"``) fails; we drop repeats as ``duplicates="drop"`` does (keeping both edges
    when there are only two, as pandas does), so scores with ties give fewer points.
    """
    scores = _vector(router_scores, "router_scores")
    if n_bins < 1:
        raise ValueError(f"n_bins: must be at least 1, got {n_bins}")
    edges = np.percentile(scores, np.linspace(0, 1, n_bins + 1) * 100)
    if len(edges) == 2:
        return edges
    _, first = np.unique(edges, return_index=True)
    return edges[np.sort(first)]  # pandas' unique keeps first-seen order


def route_to_strong(router_scores: ArrayLike, thresholds: ArrayLike) -> NDArray[np.bool_]:
    """RouteLLM's selection, a row per threshold: strong where ``score >= t``, ``score > t`` at the last.

    The strict last edge (the maximum score) makes the last point send no call to the strong model.
    """
    scores = _vector(router_scores, "router_scores")
    edges = _vector(thresholds, "thresholds")
    chosen = scores[None, :] >= edges[:, None]
    chosen[-1] = scores > edges[-1]
    return chosen


def threshold_curve(
    router_scores: ArrayLike,
    weak_results: ArrayLike,
    strong_results: ArrayLike,
    *,
    n_bins: int = 10,
    scale: float = 100.0,
) -> ShareCurve:
    """RouteLLM's ``Benchmark.evaluate``: a point per qcut edge of the router's scores, by strong share.

    ``weak_results``/``strong_results`` are each model's per-prompt score (1/0 correct, or a grade); a
    point's quality is the mean routed score × ``scale`` (100 for accuracy; pass 1 for MT-Bench grades).
    """
    scores = _vector(router_scores, "router_scores")
    weak, strong = _pair(weak_results, strong_results, ("weak_results", "strong_results"))
    if len(weak) != len(scores):
        raise ValueError(f"router_scores has {len(scores)} prompts but the results have {len(weak)}")
    chosen = route_to_strong(scores, qcut_thresholds(scores, n_bins))
    strong_pct = chosen.sum(axis=1) / len(scores) * 100
    quality = np.where(chosen, strong, weak).mean(axis=1) * scale
    order = np.argsort(strong_pct, kind="stable")  # RouteLLM: sort_values(by=["strong_percentage"])
    return ShareCurve(strong_pct[order], quality[order])


def oracle_binary_curve(
    weak_correct: ArrayLike,
    strong_correct: ArrayLike,
    *,
    strong_pcts: Sequence[float] = DECILE_PCTS,
    scale: float = 100.0,
) -> ShareCurve:
    """RouteLLM's ``get_optimal_accuracy`` for a correct/incorrect benchmark (MMLU, GSM8K), per budget.

    ``(weak right + min(n × pct/100, #(weak wrong, strong right))) / n × scale``. As in RouteLLM the
    budget is not rounded to whole calls, and x is the budget: once every rescuable prompt is rescued
    the curve is flat while x keeps rising (what RouteLLM plots, and what its oracle APGR integrates).
    """
    weak, strong = _pair(weak_correct, strong_correct, ("weak_correct", "strong_correct"))
    if not np.all(np.isin(weak, (0, 1)) & np.isin(strong, (0, 1))):
        raise ValueError("oracle_binary_curve: results must be 0/1 or bool; grades: oracle_graded_curve")
    n = len(weak)
    weak_right = int(np.count_nonzero(weak == 1))
    rescuable = int(np.count_nonzero((weak == 0) & (strong == 1)))
    pcts = np.asarray(strong_pcts, dtype=float)
    quality = [(weak_right + min(n * (pct / 100), rescuable)) / n * scale for pct in pcts]
    return ShareCurve(pcts, np.asarray(quality))


def oracle_graded_curve(
    weak_scores: ArrayLike,
    strong_scores: ArrayLike,
    *,
    strong_pcts: Sequence[float] = DECILE_PCTS,
    budget_n: int | None = None,
    scale: float = 1.0,
) -> ShareCurve:
    """RouteLLM's ``MTBench.get_optimal_accuracy``: the best mean grade given a strong-call budget.

    With k = ``int(budget_n × pct/100)`` and prompts sorted by ``strong − weak`` (descending): if more
    than k differences are positive, the top k get the strong score, else every positive one does. RouteLLM
    writes the first branch as ``.loc[:k] = strong`` then ``.loc[k:] = weak``; ``.loc`` slices include
    both ends, so row k is written twice and ends weak: exactly k rows (not k + 1) get the strong
    score. ``budget_n`` defaults to the number of prompts; RouteLLM takes it from the decontaminated
    question count while averaging over every judged question: pass that count to match its numbers.
    """
    weak, strong = _pair(weak_scores, strong_scores, ("weak_scores", "strong_scores"))
    diff = strong - weak
    by_gain = np.argsort(-diff, kind="stable")
    positive = diff > 0
    budget = len(diff) if budget_n is None else budget_n
    pcts = np.asarray(strong_pcts, dtype=float)
    quality = []
    for pct in pcts:
        k = int(budget * (pct / 100))
        if np.count_nonzero(positive) > k:
            take = np.zeros(len(diff), dtype=bool)
            take[by_gain[:k]] = True  # rows 0..k-1: the second .loc slice set row k back to weak
        else:
            take = positive
        quality.append(np.where(take, strong, weak).mean() * scale)
    return ShareCurve(pcts, np.asarray(quality))


def random_router_scores(n_prompts: int, *, seed: int = 0) -> FloatArray:
    """RouteLLM's random router: ``random.seed(seed)``, then ``random.uniform(0, 1)`` per prompt in order.

    The same Mersenne Twister numbers as RouteLLM's, from a private generator: the global ``random``
    state is left alone.
    """
    rng = random.Random(seed)
    return np.array([rng.uniform(0, 1) for _ in range(n_prompts)], dtype=float)


def expected_random_curve(
    weak_quality: float, strong_quality: float, *, strong_pcts: Sequence[float] = DECILE_PCTS
) -> ShareCurve:
    """The random router's expectation: a straight line from always-weak to always-strong (APGR 0.5)."""
    pcts = np.asarray(strong_pcts, dtype=float)
    return ShareCurve(pcts, weak_quality + (strong_quality - weak_quality) * pcts / 100)


def strong_share(routed_to_strong: ArrayLike) -> float:
    """The fraction (0–1) of prompts routed to the strong model; × 100 is RouteLLM's strong_percentage."""
    mask = np.asarray(routed_to_strong, dtype=bool)
    if mask.ndim != 1 or mask.size == 0:
        raise ValueError(f"routed_to_strong: expected a non-empty 1-D mask, got shape {mask.shape}")
    return float(np.count_nonzero(mask) / mask.size)


def nondecreasing_convex_hull(cost: ArrayLike, quality: ArrayLike) -> CostCurve:
    """RouterBench's non-decreasing convex hull R̃ of a set of configurations: its vertices by cost.

    R̃(c) is the best quality reachable at cost ≤ c by randomly mixing configurations: the upper
    convex hull of the points no cheaper-or-equal point matches, from the cheapest (the best of them
    on a tie) to the cheapest point of maximum quality, flat after. Vertices rise strictly in cost and
    quality; collinear points are dropped. It has the values RouterBench's
    ``get_non_descreasing_convex_hull_of`` computes at each configuration's cost, by monotone chain
    instead of its pairwise scan.
    """
    c, q = _pair(cost, quality, ("cost", "quality"))
    hull_c, hull_q = _upper_hull(c, q)
    return CostCurve(np.asarray(hull_c), np.asarray(hull_q))


def oracle_best(scores: ArrayLike, costs: ArrayLike) -> NDArray[np.intp]:
    """Per prompt, the oracle's model: the cheapest of those with the maximum score.

    ``scores``/``costs`` are prompts × models; a nan score is missing and never chosen. Equal cost
    too → the lower column index.
    """
    s, c = _matrices(scores, costs)
    s = np.where(np.isnan(s), -np.inf, s)
    best: NDArray[np.intp] = np.argmin(np.where(s == s.max(axis=1, keepdims=True), c, np.inf), axis=1)
    return best


def oracle_frontier(scores: ArrayLike, costs: ArrayLike) -> CostCurve:
    """The N-model oracle's curve: mean cost and score when each prompt takes ``argmax score − λ·cost``.

    One point per distinct choice as λ sweeps from ∞ (each prompt's cheapest model, the best of them
    on a tie) down to 0 (``oracle_best``); nan scores are never chosen, ties go to the cheaper model.
    Exact, not on a λ grid: as λ falls a prompt's choice walks up the upper convex hull of its
    (cost, score) points, switching at each hull edge's slope, so all prompts' edges in descending
    slope order (equal slopes merged into one point) visit every λ at which some choice changes.
    """
    s, c = _matrices(scores, costs)
    start_cost = start_score = 0.0
    slopes, d_cost, d_score = [], [], []
    for row_s, row_c in zip(s, c, strict=True):
        known = ~np.isnan(row_s)
        hull_c, hull_q = _upper_hull(row_c[known], row_s[known])
        start_cost += hull_c[0]
        start_score += hull_q[0]
        dc, dq = np.diff(hull_c), np.diff(hull_q)
        slopes.append(dq / dc)
        d_cost.append(dc)
        d_score.append(dq)
    slope = np.concatenate(slopes)
    order = np.argsort(-slope, kind="stable")
    slope = slope[order]
    total_cost = start_cost + np.cumsum(np.concatenate(d_cost)[order])
    total_score = start_score + np.cumsum(np.concatenate(d_score)[order])
    group_end = np.append(slope[1:] != slope[:-1], True)[: len(slope)]
    n = len(s)
    return CostCurve(
        np.concatenate(([start_cost], total_cost[group_end])) / n,
        np.concatenate(([start_score], total_score[group_end])) / n,
    )


def _upper_hull(c: FloatArray, q: FloatArray) -> tuple[list[float], list[float]]:
    """Vertices of the non-decreasing upper convex hull: monotone chain over non-dominated points."""
    hull_c: list[float] = []
    hull_q: list[float] = []
    best = -np.inf
    for i in np.lexsort((-q, c)):  # by cost; among equal costs, best quality first
        ci, qi = float(c[i]), float(q[i])
        if qi <= best:
            continue  # a cheaper-or-equal point is at least as good
        best = qi
        # drop the last vertex while it is not strictly above the chord from the one before to here
        while len(hull_c) >= 2 and _not_above(hull_c[-2], hull_q[-2], hull_c[-1], hull_q[-1], ci, qi):
            hull_c.pop()
            hull_q.pop()
        hull_c.append(ci)
        hull_q.append(qi)
    return hull_c, hull_q


def _not_above(c0: float, q0: float, c1: float, q1: float, c2: float, q2: float) -> bool:
    """Whether (c1, q1) is on or below the chord from (c0, q0) to (c2, q2), with c0 < c1 < c2."""
    return (c1 - c0) * (q2 - q0) >= (q1 - q0) * (c2 - c0)


def _vector(values: ArrayLike, name: str) -> FloatArray:
    arr = np.asarray(values, dtype=float)
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"{name}: expected a non-empty 1-D sequence, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name}: every value must be finite (found nan or inf)")
    return arr


def _pair(x: ArrayLike, y: ArrayLike, names: tuple[str, str]) -> tuple[FloatArray, FloatArray]:
    a, b = _vector(x, names[0]), _vector(y, names[1])
    if len(a) != len(b):
        raise ValueError(f"{names[0]} has {len(a)} values but {names[1]} has {len(b)}")
    return a, b


def _matrices(scores: ArrayLike, costs: ArrayLike) -> tuple[FloatArray, FloatArray]:
    s, c = np.asarray(scores, dtype=float), np.asarray(costs, dtype=float)
    if s.ndim != 2 or s.shape != c.shape or s.size == 0:
        raise ValueError(f"scores {s.shape}, costs {c.shape}: expected equal non-empty prompts × models")
    unscored = np.flatnonzero(np.all(np.isnan(s), axis=1))
    if unscored.size:
        raise ValueError(f"scores: prompt {unscored[0]} has no score from any model; drop it first")
    if not np.all(np.isfinite(c[~np.isnan(s)])):
        raise ValueError("costs: every scored (prompt, model) needs a finite cost")
    return s, c
