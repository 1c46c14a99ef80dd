"""The policies ``tierwise eval`` can replay, how each one sweeps its cost–quality curve, and
``make_policy``, which builds one from the command line.

Two kinds:

* **Choice policies** pick one fleet model per prompt: a rules config (the gateway's own engine),
  ``always-cheapest``, ``always-strongest``, ``oracle``. A deterministic policy has one operating point;
  its curve runs from always-cheapest through that point to always-strongest, the mixtures one gets by
  randomly sending a share of its traffic to either end (every point on it is achievable).
* **Score policies** give each prompt a score, higher meaning "send to the strongest"; the curve is
  RouteLLM's sweep over the 10-bin quantile thresholds of those scores. ``random`` is one
  (``baselines.py``); the learned router (``learned.py``) on a two-model fleet is another. Their operating
  point is the threshold 0.5.

A policy may ``fit`` on training prompts before it routes test prompts; the built-ins need no training.
"""

from __future__ import annotations

from pathlib import Path

from ..engines import load_engine
from ..policy.engine import PolicyEngine
from .baselines import baseline
from .cascade import replay_cascade
from .fleet import EvalFleet, default_fleet, fleet_for
from .learned import make_learned_policy
from .records import EvalDataset
from .replay import Matrices, replay_rules
from .routing import EvalPolicy, Routing
from .run import cascade_summary
from .utility import make_utility_policy

BUILTIN = ("rules", "random", "oracle", "always-cheapest", "always-strongest")


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
            self._fleet = fleet_for(self._path, dataset)
        return self._fleet

    def fit(self, train: EvalDataset, data: Matrices) -> None:
        """Rules are written, not trained."""

    def route(self, dataset: EvalDataset, data: Matrices) -> Routing:
        fleet = self.fleet(dataset)
        engine = load_engine(fleet.config)  # with a learned router: the whole hybrid, as the gateway runs it
        if fleet.config.policy.cascade is not None:
            return _cascade_routing(engine, dataset, fleet, data, oracle_judge=self.oracle_judge)
        replay = replay_rules(engine, dataset, fleet)
        details: dict[str, object] = {
            "rules": dict(replay.rules.most_common()),
            "replay_seconds": replay.seconds,
        }
        return Routing(choice=replay.choice, version=engine.version, details=details)


def _cascade_routing(
    engine: PolicyEngine,
    dataset: EvalDataset,
    fleet: EvalFleet,
    data: Matrices,
    *,
    oracle_judge: bool = False,
) -> Routing:
    """The cascade as an evaluated policy: its choices, extra costs, strictness sweep and details."""
    replay = replay_cascade(engine, dataset, fleet, data, oracle_judge=oracle_judge)
    return Routing(
        choice=replay.choice,
        version=engine.version,
        details={"cascade": cascade_summary(replay, data, fleet, oracle_judge=oracle_judge)},
        extra_cost=replay.extra_cost,
        sweep=[(choice, extra) for _, choice, extra in replay.sweep],
    )


def make_policy(
    spec: str, dataset: EvalDataset, *, default: EvalFleet | None = None, seed: int = 0
) -> EvalPolicy:
    """A policy from the command line: a built-in name or the path of a YAML config."""
    if spec == "rules":
        return RulesPolicy("rules", None)
    if spec in BUILTIN:
        return baseline(spec, default or default_fleet(dataset), seed=seed)
    if spec == "learned" or spec.startswith("learned:"):  # learned[:CONFIG]
        return make_learned_policy(spec, dataset, seed=seed)
    if spec == "utility" or spec.startswith("utility:"):  # utility[:CONFIG]: quality − λ·cost
        return make_utility_policy(spec, dataset, seed=seed)
    path = Path(spec)
    if path.suffix in (".yaml", ".yml") or path.exists():
        return RulesPolicy(path.stem, path)
    raise ValueError(f"--policy {spec!r}: neither a built-in ({', '.join(BUILTIN)}) nor a config file")
