"""``--policy learned``: train the learned router on training prompts, score the test prompts.

Training happens when the test prompts are known (in ``route``), on the fold's training prompts plus
any ``--train-data`` sets, less every prompt whose text is among the test prompts: train and test never
share a prompt text, whatever the sets. Model family, hyper-parameters and calibration come from inner
cross-validation on those training rows only (``tierwise.train``).

On a two-model fleet the policy is a *score* policy (RouteLLM's sweep): the score is the predicted gap
between the strongest and the cheapest model, squashed so that 0.5 is the calibrated threshold of the
target (default: 95% of always-strongest quality) — so the report's operating point is the one the
gateway would run. On a larger fleet it is a *choice* policy at that threshold whose curve is its
threshold sweep (``Routing.sweep``: the table's AIQ and savings, the plot, and with ``--cv`` the sweep
pooled point by point over folds); each fold's ``details`` keeps that fold's sweep, its AIQ and the
zero router's (``baselines.py`` reports the zero router itself).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..embeddings import StaticEmbeddings, load_wordllama
from ..features import extract_features
from ..policy.learned import Calibration, encode, gap_scores, make_scorer, route_many, threshold_for
from ..train import CANDIDATES, DEFAULT_TARGET, FleetModel, Trained, text_of, train_router
from . import metrics
from .curves import nondecreasing_convex_hull
from .fleet import EvalFleet, fleet_for
from .hybrid import hybrid_routing, recalibrate_for_hybrid
from .records import EvalDataset
from .replay import Matrices
from .routing import Routing
from .run import cascade_summary

# A gap 0.05 above the threshold scores ~0.73: steep enough to read, strictly monotone (no ties).
_SQUASH = 0.05


class LearnedPolicy:
    """The learned router as an evaluation policy (see the module docstring)."""

    def __init__(
        self,
        name: str = "learned",
        *,
        config: str | Path | None = None,
        fleet: EvalFleet | None = None,
        train_sets: Sequence[EvalDataset] = (),
        target: dict[str, float] | None = None,
        seed: int = 0,
        candidates: Sequence[tuple[str, dict[str, Any]]] = CANDIDATES,
        inner_folds: int = 3,
        embedder: StaticEmbeddings | None = None,
    ) -> None:
        self.name = name
        self._config = config
        self._fleet = fleet
        self.train_sets = list(train_sets)
        self._target = dict(target or DEFAULT_TARGET)
        self._seed = seed
        self.candidates = tuple(candidates)
        self._inner_folds = inner_folds
        self._embedder = embedder
        self._fold: EvalDataset | None = None
        self.trained: list[Trained] = []  # one per route() call, for inspection

    def fleet(self, dataset: EvalDataset) -> EvalFleet:
        if self._fleet is None:
            self._fleet = fleet_for(self._config, dataset)
        return self._fleet

    def fit(self, train: EvalDataset, data: Matrices) -> None:
        """Remember the fold's training prompts; training waits for the test prompts (see ``route``)."""
        self._fold = train

    def _embeddings(self) -> StaticEmbeddings:
        if self._embedder is None:
            self._embedder = load_wordllama()
        return self._embedder

    def route(self, dataset: EvalDataset, data: Matrices) -> Routing:
        fleet = self.fleet(dataset)
        sets = ([self._fold] if self._fold is not None and len(self._fold) else []) + self.train_sets
        if not sets:
            raise ValueError(
                "--policy learned needs training data: --cv K (train on the other folds) or --train-data"
            )
        embedder = self._embeddings()
        models = [
            FleetModel(m.name, m.price.input_per_mtok, m.price.output_per_mtok, upstream)
            for m, upstream in zip(fleet.models, fleet.dataset_models, strict=True)
        ]
        started = time.perf_counter()
        trained = train_router(
            sets,
            models,
            reference=fleet.models[fleet.strongest].name,
            embedder=embedder,
            candidates=self.candidates,
            inner_folds=self._inner_folds,
            seed=self._seed,
            exclude_texts=frozenset(text_of(p.messages) for p in dataset.prompts),
            default_target=self._target,
        )
        self.trained.append(trained)
        train_seconds = time.perf_counter() - started
        meta = trained.meta
        scorer = make_scorer(meta["family"], trained.arrays, meta["params"])
        encoded = [
            encode(extract_features({"messages": list(p.messages)}), embedder) for p in dataset.prompts
        ]
        quality = scorer.predict(np.stack([e.dense for e in encoded]), [e.tokens for e in encoded])
        # The trainer stores models cheapest first; map back to the fleet's order.
        order = [m["name"] for m in meta["models"]]
        quality = quality[:, [order.index(m.name) for m in fleet.models]]
        threshold = float(meta["default_threshold"])
        details: dict[str, Any] = {
            "family": meta["family"],
            "params": meta["params"],
            "target": self._target,
            "threshold": threshold,
            "train_rows": meta["training"]["rows"],
            "train_datasets": [d["name"] for d in meta["training"]["datasets"]],
            "inner_cv_apgr": meta["metrics"]["chosen_oof_apgr"],
            "candidates": [
                {"family": c["family"], "params": c["params"], "apgr": c["apgr"], "cpt_50": c["cpt_50"]}
                for c in meta["metrics"]["candidates"]
            ],
            "train_seconds": round(train_seconds, 2),
        }
        by_price = sorted(range(len(fleet.models)), key=lambda j: (_price(fleet, j), j != fleet.strongest))
        ranked = quality[:, by_price]
        reference = by_price.index(fleet.strongest)
        if self._config is not None and fleet.config.policy.cascade is not None:
            return self._hybrid(trained, dataset, data, fleet, threshold, details)
        if len(fleet.models) == 2:
            gap = gap_scores(ranked, reference, 0 if reference == 1 else 1)
            scores = 1.0 / (1.0 + np.exp(-(gap - threshold) / _SQUASH))
            return Routing(scores=scores, version=f"learned-{meta['family']}", details=details)
        chosen = np.asarray(by_price)[route_many(ranked, reference, threshold)]
        choices = sweep_choices(ranked, by_price, reference)
        details["sweep"] = _sweep(choices, data, fleet)
        # The threshold sweep is the policy's curve (table, plot, pooled over folds point by point).
        zeros = np.zeros(len(chosen))
        return Routing(
            choice=chosen,
            version=f"learned-{meta['family']}",
            details=details,
            sweep=[(c, zeros) for c in choices],
        )

    def _hybrid(
        self,
        trained: Trained,
        dataset: EvalDataset,
        data: Matrices,
        fleet: EvalFleet,
        threshold: float,
        details: dict[str, Any],
    ) -> Routing:
        """The config's whole hybrid, as the gateway runs it (``evals/hybrid.py``): the threshold is
        recalibrated for the hybrid on the training prompts, then the test prompts are replayed."""
        sets = ([self._fold] if self._fold is not None and len(self._fold) else []) + self.train_sets
        details = dict(details)
        if recalibrate_for_hybrid(trained, sets, fleet.config, self._target, self._embeddings()):
            threshold = float(trained.meta["default_threshold"])
            details["threshold"] = threshold
            details["calibration_of"] = trained.meta["calibration_of"]
        else:
            details["calibration_of"] = "the learned router alone: no training set records answers"
        at_target, sweep = hybrid_routing(trained, self._embeddings(), dataset, fleet, data, threshold)
        details["cascade"] = cascade_summary(at_target, data, fleet, oracle_judge=False)
        return Routing(
            choice=at_target.choice,
            version=f"learned-{trained.meta['family']}+cascade",
            details=details,
            extra_cost=at_target.extra_cost,
            sweep=sweep,
        )


def _price(fleet: EvalFleet, j: int) -> float:
    return fleet.models[j].price.input_per_mtok + fleet.models[j].price.output_per_mtok


SWEEP_POINTS = 101  # thresholds at the gaps' quantiles: the same count on every fold, so folds pool


def sweep_choices(ranked: np.ndarray, by_price: list[int], reference: int) -> list[np.ndarray]:
    """The N-model router's choices (fleet indices) at each threshold of its sweep, cheapest end first."""
    gaps = ranked[:, reference : reference + 1] - ranked
    grid = np.r_[gaps.min() - 1e-6, np.quantile(gaps, np.linspace(0, 1, SWEEP_POINTS)), gaps.max()]
    return [np.asarray(by_price)[route_many(ranked, reference, float(t))] for t in grid]


def _sweep(choices: list[np.ndarray], data: Matrices, fleet: EvalFleet) -> dict[str, Any]:
    """The N-model router's cost–quality curve over thresholds, its AIQ and cost at strongest quality,
    and the same for the zero router (mixtures of single models), on one fold's test prompts."""
    rows = np.arange(len(data))
    scored = np.nan_to_num(data.scores, nan=0.0)
    costs = [float(data.costs[rows, chosen].mean()) for chosen in choices]
    quals = [float(scored[rows, chosen].mean()) for chosen in choices]
    strongest = fleet.strongest
    c_max = float(data.costs[:, strongest].mean())
    c_min = float(data.costs[:, fleet.cheapest].mean())
    top = float(scored[:, strongest].mean())
    by_cost = np.argsort(data.costs.mean(axis=0), kind="stable")
    single_c = data.costs.mean(axis=0)[by_cost]
    single_q = scored.mean(axis=0)[by_cost]
    hull = nondecreasing_convex_hull(single_c, single_q)
    order = np.argsort(costs, kind="stable")
    c, q = np.asarray(costs)[order], np.asarray(quals)[order]
    learned_hull = nondecreasing_convex_hull(c, q)

    def safe(value: Any) -> float | None:
        return None if value is None else float(value)

    return {
        "curve": [[float(a), float(b)] for a, b in zip(c, q, strict=True)],
        "aiq": safe(metrics.aiq(c, q, c_min=c_min, c_max=c_max)),
        "cost_at_strongest_quality": safe(metrics.cost_at_quality(c, q, top)),
        "strongest_cost": c_max,
        "strongest_quality": top,
        "hull_points": len(learned_hull.cost),
        "zero_router": {
            "aiq": safe(metrics.aiq(hull.cost, hull.quality, c_min=c_min, c_max=c_max)),
            "cost_at_strongest_quality": safe(metrics.cost_at_quality(single_c, single_q, top)),
        },
    }


def make_learned_policy(spec: str, dataset: EvalDataset, *, seed: int = 0, **kwargs: Any) -> LearnedPolicy:
    """``learned`` (the dataset's default fleet) or ``learned:CONFIG.yaml`` (that config's fleet)."""
    config = spec.split(":", 1)[1] if ":" in spec else None
    return LearnedPolicy(seed=seed, config=config, **kwargs)


def threshold_of(trained: Trained, **target: float) -> float:
    """The threshold a trained router uses for a target (tests and reports)."""
    return threshold_for(Calibration.from_json(trained.meta["calibration"]), **target)
