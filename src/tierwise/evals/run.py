"""``tierwise eval``: replay policies over a dataset and compute every metric of the report, a cascade
replay's details included (``cascade_summary``).

The report's quality is the mean recorded score (0..1) of the answers a policy's choices would have
got; cost is the mean USD per request. Metrics follow their references (see ``metrics.py`` and
``curves.py``): APGR and CPT on the strong-call-share curve as RouteLLM computes them, AIQ on the
cost curve as RouterBench defines it, savings at quality parity with always-strongest on the hull of
the cost curve. Confidence intervals are seeded percentile bootstraps over prompts.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .._version import __version__
from . import metrics
from .baselines import BASELINES, ZERO_ROUTER, baseline, baselines_for
from .cascade import CascadeReplay
from .curves import (
    DECILE_PCTS,
    expected_random_curve,
    nondecreasing_convex_hull,
    oracle_binary_curve,
    oracle_frontier,
    oracle_graded_curve,
    qcut_thresholds,
)
from .fleet import EvalFleet
from .records import EvalDataset
from .replay import Matrices, Point, matrices, operating_point, threshold_choices
from .routing import EvalPolicy, Routing
from .splits import Split


@dataclass(slots=True)
class Curves:
    share: tuple[np.ndarray, np.ndarray]  # (strong-call %, quality)
    cost: tuple[np.ndarray, np.ndarray]  # (mean USD per request, quality)


@dataclass(slots=True)
class Evaluated:
    """One policy on one set of test prompts."""

    point: Point
    curves: Curves
    routing: Routing


@dataclass(slots=True)
class EvalReport:
    dataset: EvalDataset
    fleet: EvalFleet
    policies: dict[str, dict[str, Any]] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        d = self.dataset
        return {
            "tierwise_version": __version__,
            "dataset": {
                "name": d.name,
                "prompts": len(d),
                "removed_contaminated": d.removed,
                "sha256": d.content_hash,
                "tokenizer": d.tokenizer,
                "score_scale": d.score_scale,
                "source": d.source,
            },
            "fleet": [
                {
                    "name": m.name,
                    "dataset_model": dm,
                    "tier": m.tier,
                    "price": {
                        "input_per_mtok": m.price.input_per_mtok,
                        "output_per_mtok": m.price.output_per_mtok,
                    },
                }
                for m, dm in zip(self.fleet.models, self.fleet.dataset_models, strict=True)
            ],
            **self.meta,
            "policies": self.policies,
        }


def _nanmean(values: np.ndarray) -> float:
    return float(np.nanmean(values)) if np.any(~np.isnan(values)) else math.nan


class _Context:
    """The fleet-wide references every policy is measured against, on one set of prompts."""

    def __init__(self, fleet: EvalFleet, data: Matrices) -> None:
        self.fleet = fleet
        self.data = data
        self.weak, self.strong = fleet.cheapest, fleet.strongest
        self.weak_point = operating_point(np.full(len(data), self.weak), data, self.strong)
        self.strong_point = operating_point(np.full(len(data), self.strong), data, self.strong)


def _curves(routing: Routing, ctx: _Context) -> tuple[Point, Curves]:
    data = ctx.data
    if routing.scores is not None:
        thresholds = qcut_thresholds(routing.scores)
        points = [
            operating_point(c, data, ctx.strong)
            for c in threshold_choices(routing.scores, thresholds, ctx.weak, ctx.strong)
        ]
        at_half = operating_point(np.where(routing.scores >= 0.5, ctx.strong, ctx.weak), data, ctx.strong)
        point = at_half
    else:
        assert routing.choice is not None
        point = operating_point(routing.choice, data, ctx.strong, routing.extra_cost)
        constant = len(routing.choice) > 0 and bool(np.all(routing.choice == routing.choice[0]))
        # A policy that sends everything to one model is a single point, not a curve.
        points = [point] if constant else [ctx.weak_point, point, ctx.strong_point]
        if routing.sweep:  # a cascade: its strictness sweep between the two ends (evals/cascade.py)
            swept = [operating_point(c, data, ctx.strong, e) for c, e in routing.sweep]
            points = [ctx.weak_point, *swept, ctx.strong_point]
    points.sort(key=lambda p: (p.strong_share, p.cost))
    share = (np.array([p.strong_share * 100 for p in points]), np.array([p.quality for p in points]))
    by_cost = sorted(points, key=lambda p: p.cost)
    cost = (np.array([p.cost for p in by_cost]), np.array([p.quality for p in by_cost]))
    return point, Curves(share, cost)


def _oracle_curves(ctx: _Context, point: Point) -> Curves:
    """RouteLLM's optimal-router curve on the cheap/strong pair, and the N-model oracle cost frontier."""
    weak = ctx.data.scores[:, ctx.weak]
    strong = ctx.data.scores[:, ctx.strong]
    both = ~(np.isnan(weak) | np.isnan(strong))
    values = np.concatenate([weak[both], strong[both]])
    if np.all((values == 0) | (values == 1)):
        share = oracle_binary_curve(weak[both] == 1, strong[both] == 1, scale=1.0)
    else:
        share = oracle_graded_curve(weak[both], strong[both], scale=1.0)
    scored = ~np.all(np.isnan(ctx.data.scores), axis=1)
    frontier = oracle_frontier(ctx.data.scores[scored], ctx.data.costs[scored])
    return Curves(
        (np.asarray(share.strong_pct), np.asarray(share.quality)),
        (np.asarray(frontier.cost), np.asarray(frontier.quality)),
    )


def _evaluate(policy: EvalPolicy, dataset: EvalDataset, ctx: _Context) -> Evaluated:
    routing = policy.route(dataset, ctx.data)
    point, curves = _curves(routing, ctx)
    if policy.name == "oracle":
        curves = _oracle_curves(ctx, point)
    return Evaluated(point, curves, routing)


def _summary(ev: Evaluated, ctx: _Context) -> dict[str, Any]:
    weak_q, strong_q = ctx.weak_point.quality, ctx.strong_point.quality
    share_x, share_q = ev.curves.share
    cost_x, cost_q = ev.curves.cost
    spans = len(share_x) > 1 and share_x.max() > share_x.min()
    gap = strong_q - weak_q

    def maybe(fn: Callable[[], float | None]) -> float | None:
        try:
            value = fn()
        except ValueError:
            return None
        return None if value is None or not math.isfinite(value) else float(value)

    cpts = {}
    for pct in (20, 50, 80):
        cpts[f"cpt_{pct}"] = (
            maybe(
                lambda pct=pct: metrics.cpt(
                    share_x, share_q, weak_quality=weak_q, strong_quality=strong_q, recovered=pct / 100
                )
            )
            if spans
            else None
        )
    strongest_cost = ctx.strong_point.cost
    return {
        "quality": ev.point.quality,
        "cost_usd": ev.point.cost,
        "cost_per_1k_usd": ev.point.cost * 1000,
        "strong_share": ev.point.strong_share,
        "pgr": maybe(lambda: metrics.pgr(ev.point.quality, weak_quality=weak_q, strong_quality=strong_q))
        if gap
        else None,
        "apgr": maybe(lambda: metrics.apgr(share_x, share_q, weak_quality=weak_q, strong_quality=strong_q))
        if spans and gap
        else None,
        **cpts,
        "aiq": maybe(lambda: metrics.aiq(cost_x, cost_q, c_min=ctx.weak_point.cost, c_max=strongest_cost)),
        "savings_at_parity": maybe(
            lambda: metrics.savings_at_parity(
                cost_x, cost_q, strongest_cost=strongest_cost, strongest_quality=strong_q
            )
        ),
        "savings_at_95": maybe(
            lambda: metrics.savings_at_parity(
                cost_x, cost_q, strongest_cost=strongest_cost, strongest_quality=strong_q, fraction=0.95
            )
        ),
        "savings_pct": (1 - ev.point.cost / strongest_cost) * 100 if strongest_cost else None,
        "curve": [[float(c), float(q)] for c, q in zip(cost_x, cost_q, strict=True)],
        "curve_strong_share": [[float(s) / 100, float(q)] for s, q in zip(share_x, share_q, strict=True)],
    }


def _bootstrap(
    policy: Evaluated, ctx: _Context, *, n_boot: int, seed: int, oracle: bool = False
) -> dict[str, list[float]]:
    """95% percentile intervals of quality, cost and APGR, resampling prompts."""
    data = ctx.data
    routing = policy.routing
    weak_scores = data.scores[:, ctx.weak]
    strong_scores = data.scores[:, ctx.strong]
    rows = np.arange(len(data))
    if routing.choice is not None:
        picked = np.where(routing.choice >= 0, routing.choice, 0)
        scores = np.where(routing.choice >= 0, data.scores[rows, picked], 0.0)
        costs = np.where(routing.choice >= 0, data.costs[rows, picked], 0.0)
        if routing.extra_cost is not None:
            costs = costs + routing.extra_cost
        share = (routing.choice == ctx.strong).astype(float)
    else:
        assert routing.scores is not None
        mask = routing.scores >= 0.5
        scores = np.where(mask, strong_scores, weak_scores)
        costs = np.where(mask, data.costs[:, ctx.strong], data.costs[:, ctx.weak])
        share = mask.astype(float)
    out = {
        "quality": metrics.bootstrap_ci(lambda i: _nanmean(scores[i]), len(data), n_boot=n_boot, seed=seed),
        "cost_usd": metrics.bootstrap_ci(
            lambda i: float(costs[i].mean()), len(data), n_boot=n_boot, seed=seed
        ),
    }

    def sweep_curve(i: np.ndarray, w: float, s: float) -> tuple[np.ndarray, np.ndarray]:
        """A cascade's share curve on the resampled prompts: its sweep between the two ends."""
        xs, ys = [0.0], [w]
        for choice, _ in routing.sweep or ():
            served = choice[i] >= 0
            xs.append(float((choice[i] == ctx.strong).mean() * 100))
            ys.append(_nanmean(np.where(served, data.scores[i, np.where(served, choice[i], 0)], 0.0)))
        xs.append(100.0)
        ys.append(s)
        order = np.argsort(xs, kind="stable")
        return np.array(xs)[order], np.array(ys)[order]

    def cpt50_of(i: np.ndarray) -> float:
        w, s = _nanmean(weak_scores[i]), _nanmean(strong_scores[i])
        x, y = sweep_curve(i, w, s)
        return metrics.cpt(x, y, weak_quality=w, strong_quality=s, recovered=0.5) if s != w else math.nan

    def aiq_of(i: np.ndarray) -> float:
        """AIQ of a swept curve on the resampled prompts, between its two ends' costs."""
        low, high = float(data.costs[i, ctx.weak].mean()), float(data.costs[i, ctx.strong].mean())
        xs, ys = [low], [_nanmean(weak_scores[i])]
        for choice, extra in routing.sweep or ():
            served = choice[i] >= 0
            picked = np.where(served, choice[i], 0)
            xs.append(float((np.where(served, data.costs[i, picked], 0.0) + extra[i]).mean()))
            ys.append(_nanmean(np.where(served, data.scores[i, picked], 0.0)))
        xs.append(high)
        ys.append(_nanmean(strong_scores[i]))
        return metrics.aiq(xs, ys, c_min=low, c_max=high) if high > low else math.nan

    def apgr_of(i: np.ndarray) -> float:
        w, s = _nanmean(weak_scores[i]), _nanmean(strong_scores[i])
        if s == w:
            return math.nan
        if routing.sweep:
            x, y = sweep_curve(i, w, s)
            return metrics.apgr(x, y, weak_quality=w, strong_quality=s)
        if routing.choice is not None:
            q = _nanmean(scores[i])
            x = np.array([0.0, share[i].mean() * 100, 100.0])
            y = np.array([w, q, s])
            order = np.argsort(x, kind="stable")
            return metrics.apgr(x[order], y[order], weak_quality=w, strong_quality=s)
        assert routing.scores is not None
        sub = routing.scores[i]
        thresholds = qcut_thresholds(sub)
        xs, ys = [], []
        for choice in threshold_choices(sub, thresholds, 0, 1):
            xs.append(choice.mean() * 100)
            ys.append(_nanmean(np.where(choice == 1, strong_scores[i], weak_scores[i])))
        order = np.argsort(xs, kind="stable")
        return metrics.apgr(np.array(xs)[order], np.array(ys)[order], weak_quality=w, strong_quality=s)

    # The oracle's curve is RouteLLM's optimal-router sweep, not its operating point's mixtures: its
    # APGR is not resampled here.
    if policy.curves.share[0].max() > policy.curves.share[0].min() and not oracle:
        with contextlib.suppress(ValueError):
            out["apgr"] = metrics.bootstrap_ci(apgr_of, len(data), n_boot=n_boot, seed=seed)
        if routing.sweep:
            with contextlib.suppress(ValueError):
                out["cpt_50"] = metrics.bootstrap_ci(cpt50_of, len(data), n_boot=n_boot, seed=seed)
            with contextlib.suppress(ValueError):
                out["aiq"] = metrics.bootstrap_ci(aiq_of, len(data), n_boot=n_boot, seed=seed)
    return {k: [float(v[0]), float(v[1])] for k, v in out.items()}


def summarise(
    routing: Routing, fleet: EvalFleet, data: Matrices, *, n_boot: int = 1000, seed: int = 0
) -> dict[str, Any]:
    """Every metric of one routing over ``data``'s prompts, with 95% bootstrap intervals — as
    ``evaluate`` reports a policy without folds (used to pool a policy's out-of-fold routings)."""
    ctx = _Context(fleet, data)
    point, curves = _curves(routing, ctx)
    ev = Evaluated(point, curves, routing)
    out = _summary(ev, ctx)
    if n_boot:
        out["ci95"] = _bootstrap(ev, ctx, n_boot=n_boot, seed=seed)
    return out


def _rate(hits: int, total: int) -> float | None:
    return hits / total if total else None


def _detection(replay: CascadeReplay, data: Matrices, fleet: EvalFleet) -> dict[str, Any]:
    """How well each verifier alone, and the cascade as configured, flag a bad first answer.

    Among the verified prompts: *wrong* is a first answer scoring 0 (correct/incorrect sets only);
    *worse* is a first answer scoring below the strongest model's recorded answer (escalating helps).
    """
    rows = np.flatnonzero(replay.verified)
    first = replay.first[rows]
    weak = data.scores[rows, first]
    strong = data.scores[rows, fleet.strongest]
    known = ~np.isnan(weak)
    binary = bool(np.all(np.isin(weak[known], (0.0, 1.0))))
    wrong = known & (weak == 0) if binary else None
    worse = known & ~np.isnan(strong) & (weak < strong)
    columns = {name: replay.rejections[rows, k] for k, name in enumerate(replay.verifiers)}
    columns["cascade"] = replay.choice[rows] != first
    out: dict[str, Any] = {"verified_prompts": len(rows)}
    for name, flagged in columns.items():
        stats: dict[str, Any] = {"flagged": int(flagged.sum())}
        for label, bad in (("wrong", wrong), ("worse", worse)):
            if bad is None:
                continue
            stats[f"precision_{label}"] = _rate(int((flagged & bad).sum()), int(flagged.sum()))
            stats[f"recall_{label}"] = _rate(int((flagged & bad).sum()), int(bad.sum()))
        out[name] = stats
    if wrong is not None:
        out["first_answers_wrong"] = int(wrong.sum())
    out["first_answers_worse"] = int(worse.sum())
    return out


def cascade_summary(
    replay: CascadeReplay, data: Matrices, fleet: EvalFleet, *, oracle_judge: bool
) -> dict[str, Any]:
    """A cascade replay's details for the report: what ran, what was escalated, what it cost, the sweep."""
    strong = fleet.strongest
    escalated = (replay.choice != replay.first) & (replay.first >= 0)
    return {
        "verifiers": list(replay.verifiers),
        "unavailable": replay.unavailable,
        "oracle_judge": oracle_judge,
        "oracle_judge_note": (
            "the judge is modelled by the answer's recorded GPT-4 grade: an upper bound, not a verifier"
            if oracle_judge and any("judge" in name for name in replay.verifiers)
            else None
        ),
        "escalated": int(escalated.sum()),
        "escalated_share": float(escalated.mean()) if len(escalated) else 0.0,
        "extra_cost_per_1k_usd": float(replay.extra_cost.mean() * 1000) if len(escalated) else 0.0,
        "detection": _detection(replay, data, fleet),
        "sweep": [
            {
                "step": label,
                "quality": (p := operating_point(choice, data, strong, extra)).quality,
                "cost_per_1k_usd": p.cost * 1000,
                "strong_share": p.strong_share,
            }
            for label, choice, extra in replay.sweep
        ],
        "replay_seconds": replay.seconds,
    }


def evaluate(
    dataset: EvalDataset,
    policies: list[EvalPolicy],
    *,
    fleet: EvalFleet,
    seed: int = 0,
    n_boot: int = 1000,
    folds: list[Split] | None = None,
    split: str = "none",
    progress: Callable[[str], None] | None = None,
) -> EvalReport:
    """Evaluate ``policies`` and the baselines on ``dataset`` (on each test fold if ``folds``).

    ``progress`` is called once per policy and fold, as each finishes: ``steps(len(policies), folds)`` calls.
    """
    started = time.perf_counter()
    names = [p.name for p in policies]
    everything = list(policies) + [
        baseline(b, fleet, seed=seed) for b in baselines_for(fleet) if b not in names
    ]
    report = EvalReport(dataset, fleet, meta={"seed": seed, "bootstrap": n_boot, "split": split})
    fold_sets = folds or [(np.arange(0), np.arange(len(dataset)))]
    per_fold: dict[str, list[dict[str, Any]]] = {p.name: [] for p in everything}
    routings: dict[str, list[tuple[np.ndarray, Routing]]] = {p.name: [] for p in everything}
    fleets: dict[str, EvalFleet] = {}
    versions: dict[str, str] = {}
    for k, (train_idx, test_idx) in enumerate(fold_sets):
        test = dataset.subset(list(test_idx))
        train = dataset.subset(list(train_idx))
        contexts: dict[int, _Context] = {}  # one per fleet: a config policy may bring its own prices
        for policy in everything:
            own = policy.fleet(dataset)
            ctx = contexts.get(id(own))
            if ctx is None:
                ctx = contexts[id(own)] = _Context(own, matrices(test, own))
            if len(train_idx):
                policy.fit(train, matrices(train, own))
            ev = _evaluate(policy, test, ctx)
            summary = _summary(ev, ctx)
            if not folds and n_boot:
                summary["ci95"] = _bootstrap(
                    ev, ctx, n_boot=n_boot, seed=seed, oracle=policy.name == "oracle"
                )
            if policy.name == ZERO_ROUTER:
                _cost_axis_only(summary)
            if ev.routing.details:
                summary["details"] = ev.routing.details
            if ev.routing.version:
                versions[policy.name] = ev.routing.version
            if policy.name == "random":
                w, s = ctx.weak_point.quality, ctx.strong_point.quality
                x, y = expected_random_curve(w, s, strong_pcts=DECILE_PCTS)
                summary["expected_apgr"] = (
                    metrics.apgr(x, y, weak_quality=w, strong_quality=s) if s != w else None
                )
            per_fold[policy.name].append(summary)
            routings[policy.name].append((np.asarray(test_idx), ev.routing))
            fleets[policy.name] = own
            if progress:
                progress(f"fold {k + 1}/{len(fold_sets)}: {policy.name}")
    for name, runs in per_fold.items():
        if len(runs) == 1:
            report.policies[name] = runs[0]
        else:
            rows = np.concatenate([idx for idx, _ in routings[name]])
            pooled_data = matrices(dataset.subset(list(rows)), fleets[name])
            report.policies[name] = _pooled(
                name,
                [r for _, r in routings[name]],
                runs,
                fleets[name],
                pooled_data,
                n_boot=n_boot,
                seed=seed,
            )
        if name in versions:
            report.policies[name]["policy_version"] = versions[name]
    report.meta["elapsed_s"] = round(time.perf_counter() - started, 3)
    return report


def steps(n_policies: int, folds: list[Split] | None, *, models: int = 2) -> int:
    """How many times ``evaluate`` calls ``progress``: every policy and baseline (the zero router's
    past two ``models``), on every fold."""
    return (n_policies + len(BASELINES) + (models > 2)) * (len(folds) if folds else 1)


# What a cross-validated report's top-level figures are computed over; the README quotes the same.
POOLED = "pooled over the out-of-fold prompts of every test fold"


def pool_routings(parts: list[Routing]) -> Routing:
    """Each test fold's routing, concatenated in fold order (point k of a sweep pools each fold's point k)."""

    def cat(arrays: list[np.ndarray | None]) -> np.ndarray | None:
        present = [a for a in arrays if a is not None]
        return np.concatenate(present) if present and len(present) == len(arrays) else None

    extra = None
    if any(p.extra_cost is not None for p in parts):
        extra = np.concatenate(
            [p.extra_cost if p.extra_cost is not None else np.zeros(_size(p)) for p in parts]
        )
    sweep = None
    if all(p.sweep for p in parts) and len({len(p.sweep or ()) for p in parts}) == 1:
        sweep = [
            (np.concatenate([c for c, _ in points]), np.concatenate([e for _, e in points]))
            for points in zip(*(p.sweep or () for p in parts), strict=True)
        ]
    return Routing(
        choice=cat([p.choice for p in parts]),
        scores=cat([p.scores for p in parts]),
        version=parts[0].version,
        extra_cost=extra,
        sweep=sweep,
    )


def _cost_axis_only(summary: dict[str, Any]) -> None:
    """The zero router mixes models by cost: its curve is the single models' hull, and on the
    strong-share axis (APGR, CPT) it has none."""
    for key in ("apgr", "cpt_20", "cpt_50", "cpt_80", "pgr"):
        summary[key] = None
    summary["curve_strong_share"] = []
    hull = nondecreasing_convex_hull([c for c, _ in summary["curve"]], [q for _, q in summary["curve"]])
    summary["curve"] = [[float(c), float(q)] for c, q in zip(hull.cost, hull.quality, strict=True)]
    for key in ("apgr", "cpt_50"):
        summary.get("ci95", {}).pop(key, None)


def _size(routing: Routing) -> int:
    arr = routing.choice if routing.choice is not None else routing.scores
    assert arr is not None
    return len(arr)


def _pooled(
    name: str,
    parts: list[Routing],
    runs: list[dict[str, Any]],
    fleet: EvalFleet,
    data: Matrices,
    *,
    n_boot: int,
    seed: int,
) -> dict[str, Any]:
    """One figure per metric for a cross-validated policy: every metric on the pooled out-of-fold
    prompts (``POOLED``), with 95% intervals; each fold's own figures stay under ``per_fold``."""
    ctx = _Context(fleet, data)
    routing = pool_routings(parts)
    point, curves = _curves(routing, ctx)
    if name == "oracle":
        curves = _oracle_curves(ctx, point)
    ev = Evaluated(point, curves, routing)
    out: dict[str, Any] = {"folds": len(runs), "metrics_over": POOLED, **_summary(ev, ctx)}
    if n_boot:
        out["ci95"] = _bootstrap(ev, ctx, n_boot=n_boot, seed=seed, oracle=name == "oracle")
    if name == "random":
        w, s = ctx.weak_point.quality, ctx.strong_point.quality
        x, y = expected_random_curve(w, s, strong_pcts=DECILE_PCTS)
        out["expected_apgr"] = metrics.apgr(x, y, weak_quality=w, strong_quality=s) if s != w else None
    if name == ZERO_ROUTER:
        _cost_axis_only(out)
    keys = ("quality", "cost_usd", "strong_share", "apgr", "cpt_50", "aiq")
    out["per_fold"] = [
        {**{k: r.get(k) for k in keys}, **({"details": r["details"]} if "details" in r else {})} for r in runs
    ]
    return out
