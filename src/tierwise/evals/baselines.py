"""The baselines every report compares a policy with: always-cheapest, always-strongest, random, oracle.

``random`` is a score policy (RouteLLM's random router, seeded); the others choose one model per prompt.
"""

from __future__ import annotations

import numpy as np

from .curves import oracle_best, random_router_scores
from .fleet import EvalFleet
from .records import EvalDataset
from .replay import Matrices
from .routing import EvalPolicy, Routing

BASELINES = ("always-cheapest", "always-strongest", "random", "oracle")


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
        raise ValueError(f"unknown baseline {self.name!r}")


def baseline(name: str, fleet: EvalFleet, *, seed: int = 0) -> EvalPolicy:
    """The baseline ``name`` (one of ``BASELINES``) on ``fleet``."""
    return _BaselinePolicy(name, fleet, seed=seed)
