"""The policies ``tierwise eval`` can replay, and how each one sweeps its cost–quality curve.

Two kinds:

* **Choice policies** pick one fleet model per prompt: a rules config (the gateway's own engine),
  ``always-cheapest``, ``always-strongest``, ``oracle``. A deterministic policy has one operating point;
  its curve runs from always-cheapest through that point to always-strongest, the mixtures one gets by
  randomly sending a share of its traffic to either end (every point on it is achievable).
* **Score policies** give each prompt a score, higher meaning "send to the strongest"; the curve is
  RouteLLM's sweep over the 10-bin quantile thresholds of those scores. ``random`` is one; the learned
  router will be another. Their operating point is the threshold 0.5.

A policy may ``fit`` on training prompts before it routes test prompts; the built-ins need no training.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from ..config import load_config
from ..policy.engine import PolicyEngine
from .curves import oracle_best, random_router_scores
from .fleet import EvalFleet, default_fleet, fleet_from_config
from .records import EvalDataset
from .replay import Matrices, replay_rules

BUILTIN = ("rules", "random", "oracle", "always-cheapest", "always-strongest")
BASELINES = ("always-cheapest", "always-strongest", "random", "oracle")


@dataclass(slots=True)
class Routing:
    """What a policy did on a set of prompts: a fleet index per prompt, or a score per prompt."""

    choice: np.ndarray | None = None  # fleet index per prompt (−1: could not be served)
    scores: np.ndarray | None = None  # "send to strongest" score per prompt
    version: str = ""  # the policy version (rules configs) for the report
    details: dict[str, object] | None = None
    extra_cost: np.ndarray | None = None  # USD per prompt besides its answer: a cascade's rejected calls
    sweep: list[tuple[np.ndarray, np.ndarray]] | None = None  # a cascade's curve: (choice, extra_cost)s


class EvalPolicy(Protocol):
    name: str

    def fleet(self, dataset: EvalDataset) -> EvalFleet: ...

    def fit(self, train: EvalDataset, data: Matrices) -> None: ...

    def route(self, dataset: EvalDataset, data: Matrices) -> Routing: ...


class RulesPolicy:
    """A config's policy, run through the gateway's PolicyEngine; with ``policy.cascade``, its verifiers
    judge the recorded answers (``evals/cascade.py``; ``oracle_judge``: see there)."""

    def __init__(self, name: str, path: str | Path | None, *, oracle_judge: bool = False) -> None:
        self.name = name
        self._path = path
        self._fleet: EvalFleet | None = None
        self.oracle_judge = oracle_judge

    def fleet(self, dataset: EvalDataset) -> EvalFleet:
        if self._fleet is None:
            if self._path is None:
                self._fleet = default_fleet(dataset)
            else:
                self._fleet = fleet_from_config(load_config(self._path), dataset)
        return self._fleet

    def fit(self, train: EvalDataset, data: Matrices) -> None:
        """Rules are written, not trained."""

    def route(self, dataset: EvalDataset, data: Matrices) -> Routing:
        fleet = self.fleet(dataset)
        learned = None
        if fleet.config.policy.learned is not None:  # replay the whole hybrid, as the gateway runs it
            from ..artefact import load_learned_router

            learned = load_learned_router(fleet.config)
        engine = PolicyEngine(fleet.config, learned=learned)
        if fleet.config.policy.cascade is not None:
            from .cascade import cascade_routing

            return cascade_routing(engine, dataset, fleet, data, oracle_judge=self.oracle_judge)
        replay = replay_rules(engine, dataset, fleet)
        details: dict[str, object] = {
            "rules": dict(replay.rules.most_common()),
            "replay_seconds": replay.seconds,
        }
        return Routing(choice=replay.choice, version=engine.version, details=details)


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


def make_policy(
    spec: str, dataset: EvalDataset, *, default: EvalFleet | None = None, seed: int = 0
) -> EvalPolicy:
    """A policy from the command line: a built-in name or the path of a YAML config."""
    if spec == "rules":
        return RulesPolicy("rules", None)
    if spec in BUILTIN:
        return _BaselinePolicy(spec, default or default_fleet(dataset), seed=seed)
    if spec == "learned" or spec.startswith("learned:"):  # learned[:CONFIG]; imported only when asked for
        from .learned import make_learned_policy

        return make_learned_policy(spec, dataset, seed=seed)
    path = Path(spec)
    if path.suffix in (".yaml", ".yml") or path.exists():
        return RulesPolicy(path.stem, path)
    raise ValueError(f"--policy {spec!r}: neither a built-in ({', '.join(BUILTIN)}) nor a config file")


def baseline(name: str, fleet: EvalFleet, *, seed: int = 0) -> EvalPolicy:
    return _BaselinePolicy(name, fleet, seed=seed)
