"""``--policy utility[:CONFIG]``: per request, predict every model's quality *and* cost, choose by
expected quality − λ·cost (``policy/utility.py``, the router the gateway runs).

Training happens when the test prompts are known (in ``route``), on the fold's training prompts less
every prompt whose text is among the test prompts, through ``tierwise.train_utility`` — the code
``tierwise train --router utility`` runs: family, quality calibration and the models it may choose
(the training prompts' single-model hull, or all) by inner cross-validation (the AIQ of each
variant's λ-sweep over out-of-fold predictions of the training prompts; the test prompts are never
seen), and λ's operating point read off that out-of-fold sweep for the target (default: 95% of
always-strongest quality). The test prompts are then predicted through ``policy.utility``'s
predictors, as the gateway predicts a request.

A *choice* policy at the calibrated λ whose curve is its λ-sweep (``Routing.sweep``: the table's AIQ
and savings, the plot, and with ``--cv`` pooled point by point over folds).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from ..embeddings import StaticEmbeddings, load_wordllama
from ..policy.utility import LAMBDAS, sweep
from ..train import DEFAULT_TARGET, FleetModel, text_of
from ..train_utility import encode_prompts, fitted_of, train_utility_router
from .fleet import EvalFleet, fleet_for
from .records import EvalDataset
from .replay import Matrices
from .routing import Routing


class UtilityPolicy:
    """The quality − λ·cost router as an evaluation policy (see the module docstring)."""

    def __init__(
        self,
        name: str = "utility",
        *,
        config: str | Path | None = None,
        seed: int = 0,
        target: dict[str, float] | None = None,
        embedder: StaticEmbeddings | None = None,
    ) -> None:
        self.name = name
        self._config = config
        self._fleet: EvalFleet | None = None
        self._seed = seed
        self._target = dict(target or DEFAULT_TARGET)
        self._embedder = embedder
        self._train: EvalDataset | None = None

    def fleet(self, dataset: EvalDataset) -> EvalFleet:
        if self._fleet is None:
            self._fleet = fleet_for(self._config, dataset)
        return self._fleet

    def fit(self, train: EvalDataset, data: Matrices) -> None:
        """Remember the fold's training prompts; training waits for the test prompts (see ``route``)."""
        self._train = train

    def _embeddings(self) -> StaticEmbeddings:
        if self._embedder is None:
            self._embedder = load_wordllama()
        return self._embedder

    def route(self, dataset: EvalDataset, data: Matrices) -> Routing:
        if self._train is None or not len(self._train):
            raise ValueError("--policy utility needs training data: --cv K (train on the other folds)")
        fleet = self.fleet(dataset)
        started = time.perf_counter()
        models = [
            FleetModel(m.name, m.price.input_per_mtok, m.price.output_per_mtok, upstream)
            for m, upstream in zip(fleet.models, fleet.dataset_models, strict=True)
        ]
        trained = train_utility_router(
            [self._train],
            models,
            reference=fleet.models[fleet.strongest].name,
            embedder=self._embeddings(),
            seed=self._seed,
            exclude_texts=frozenset(text_of(p.messages) for p in dataset.prompts),
            default_target=self._target,
        )
        meta = trained.meta
        dense, input_tokens = encode_prompts(dataset.prompts, self._embeddings())
        quality, cost = fitted_of(trained).predict(dense, input_tokens)
        # The trainer stores models cheapest first; map its columns back to the fleet's order.
        order = [m["name"] for m in meta["models"]]
        columns = [order.index(m.name) for m in fleet.models]
        quality, cost = quality[:, columns], cost[:, columns]
        allowed = np.array([meta["models"][c]["allowed"] for c in columns])
        choices = sweep(quality, cost, float(meta["cost_scale_usd"]), allowed)
        cost_weight = float(meta["default_cost_weight"])
        at = int(np.argmin(np.abs(LAMBDAS - cost_weight)))  # λ is one of the grid's
        zeros = np.zeros(len(dataset))
        details: dict[str, Any] = {
            "family": meta["family"],
            "params": meta["params"],
            "target": self._target,
            "lambda": cost_weight,
            "cost_from": {m["name"]: m["cost_from"] for m in meta["models"]},
            "calibrated": meta["calibrated"],
            "choice_set": meta["choice_set"],
            "allowed": [m["name"] for m in meta["models"] if m["allowed"]],
            "candidates": meta["metrics"]["candidates"],
            "inner_cv_aiq": meta["metrics"]["chosen_oof_aiq"],
            "train_prompts": meta["training"]["rows"],
            "train_seconds": round(time.perf_counter() - started, 2),
        }
        return Routing(
            choice=choices[at],
            version=f"utility-{meta['family']}",
            details=details,
            sweep=[(ch, zeros) for ch in choices],
        )


def make_utility_policy(spec: str, dataset: EvalDataset, *, seed: int = 0) -> UtilityPolicy:
    """``utility`` (the dataset's default fleet) or ``utility:CONFIG.yaml`` (that config's fleet)."""
    return UtilityPolicy(config=spec.split(":", 1)[1] if ":" in spec else None, seed=seed)
