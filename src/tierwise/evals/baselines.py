"""The baselines every report compares a policy with: always-cheapest, always-strongest, random, oracle,
and on a fleet of more than two models RouterBench's zero router.

``random`` is a score policy (RouteLLM's random router, seeded); the others choose one model per prompt.
The zero router's curve is the single models' cost–quality points, so its hull mixes adjacent models;
its operating point is that mixture at 95% of always-strongest's quality, drawn per prompt (seeded).
Like the oracle, it reads the test prompts' own means: a reference, not a deployable policy.
"""

from __future__ import annotations

import numpy as np

from .curves import nondecreasing_convex_hull, oracle_best, random_router_scores
from .fleet import EvalFleet
from .records import EvalDataset
from .replay import Matrices
from .routing import EvalPolicy, Routing

BASELINES = ("always-cheapest", "always-strongest", "random", "oracle")
ZERO_ROUTER = "zero-router"  # a baseline only where more than two models make mixing them a curve
ZERO_ROUTER_TARGET = 0.95  # its operating point: this share of always-strongest's quality


class _BaselinePolicy:
    def __init__(self, name: str, fleet: EvalFleet, *, seed: int = 0) -> None:
        self.name = name
        self._fleet = fleet
        self._seed = seed

    def fleet(self, dataset: EvalDataset) -> EvalFleet:
        return self._fleet

    def fit(self, train: EvalDataset, data: Matrices) -> None:
        """Baselines do not train."""

    def route(self, dataset: EvalDataset, data: Matrices) -> Routing:
        n = len(data)
        if self.name == "always-cheapest":
            return Routing(choice=np.full(n, self._fleet.cheapest, dtype=np.int64))
        if self.name == "always-strongest":
            return Routing(choice=np.full(n, self._fleet.strongest, dtype=np.int64))
        if self.name == "oracle":
            # The cheapest model with the best recorded score; a prompt no model has a score for goes
            # to the strongest.
            scored = ~np.all(np.isnan(data.scores), axis=1)
            choice = np.full(n, self._fleet.strongest, dtype=np.int64)
            if scored.any():
                choice[scored] = oracle_best(np.nan_to_num(data.scores[scored], nan=-1.0), data.costs[scored])
            return Routing(choice=choice)
        if self.name == "random":
            return Routing(scores=random_router_scores(n, seed=self._seed))
        if self.name == ZERO_ROUTER:
            return self._zero_router(data)
        raise ValueError(f"unknown baseline {self.name!r}")

    def _zero_router(self, data: Matrices) -> Routing:
        n = len(data)
        quality = np.array(
            [np.nanmean(col) if np.any(~np.isnan(col)) else 0.0 for col in data.scores.T], dtype=float
        )
        cost = data.costs.mean(axis=0)
        order = [int(j) for j in np.argsort(cost, kind="stable")]
        sweep = [(np.full(n, j, dtype=np.int64), np.zeros(n)) for j in order]
        hull = nondecreasing_convex_hull(cost, quality)
        # Each hull vertex is a single model: the cheapest with that (cost, quality).
        vertices = [
            next(j for j in order if cost[j] == c and quality[j] == q)
            for c, q in zip(hull.cost, hull.quality, strict=True)
        ]
        target = ZERO_ROUTER_TARGET * quality[self._fleet.strongest]
        above = [k for k, j in enumerate(vertices) if quality[j] >= target]
        k = above[0] if above else len(vertices) - 1
        choice = np.full(n, vertices[k], dtype=np.int64)
        if k > 0 and above:
            lo, hi = vertices[k - 1], vertices[k]
            share = (target - quality[lo]) / (quality[hi] - quality[lo])
            # Exactly that share of the prompts, drawn at random: no sampling noise in the mixture.
            upper = np.random.default_rng(self._seed).permutation(n)[: int(np.ceil(share * n))]
            choice = np.full(n, lo, dtype=np.int64)
            choice[upper] = hi
        return Routing(choice=choice, sweep=sweep)


def baselines_for(fleet: EvalFleet) -> tuple[str, ...]:
    """The baselines of a report on ``fleet``: the zero router joins them past two models."""
    return BASELINES + ((ZERO_ROUTER,) if len(fleet.models) > 2 else ())


def baseline(name: str, fleet: EvalFleet, *, seed: int = 0) -> EvalPolicy:
    """The baseline ``name`` (one of ``baselines_for(fleet)``) on ``fleet``."""
    return _BaselinePolicy(name, fleet, seed=seed)
