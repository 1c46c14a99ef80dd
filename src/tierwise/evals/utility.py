"""``--policy utility[:CONFIG]``: per request, predict every model's quality *and* cost, choose by
expected quality − λ·cost.

On a fleet of many models the learned router's gap threshold (``learned.py``) ignores what a model's
answer will cost; here each model's cost on the prompt is predicted too (its recorded cost: price ×
the tokens it would write, so a verbose cheap model is not cheap), and λ sweeps the trade-off. The
families compared, each predicting quality and log-cost per model from the prompt's features
(``policy/learned.py``'s embedding and structural values, standardised):

* ``ridge``: one ridge regression per model and target (closed form);
* ``knn``: the k most similar training prompts (cosine), weighted by similarity;
* ``cluster``: k-means clusters of the embeddings, a quality/cost table per cluster, shrunk to the
  overall means;
* ``mf``: RouteLLM's matrix factorisation on our embeddings: the prompt projected to d dimensions,
  each model a d-vector, quality = σ(model · projection + bias), fitted by gradient descent;
* ``blend``: the mean of a ridge, a kNN and a cluster table's predictions.

Only the models on the training prompts' single-model hull (mean cost, mean quality) are chosen
from. The winner is the family with the best AIQ of its λ-sweep over out-of-fold predictions of the
training prompts (inner cross-validation with a fixed seed; the test prompts are never seen). Its
operating point is the largest λ whose out-of-fold quality reaches 95% of the strongest model's.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ..embeddings import StaticEmbeddings, load_wordllama
from ..features import extract_features
from ..policy.learned import encode
from . import metrics
from .curves import nondecreasing_convex_hull
from .fleet import EvalFleet, fleet_for
from .records import EvalDataset
from .replay import Matrices
from .routing import Routing

# λ per unit of the strongest model's mean cost: 0 (best predicted quality) to "cheapest always".
LAMBDAS = np.r_[0.0, np.geomspace(1e-3, 30.0, 80), 1e6]
CANDIDATES: tuple[tuple[str, dict[str, Any]], ...] = (
    ("ridge", {"alpha": 10.0}),
    ("ridge", {"alpha": 100.0}),
    ("knn", {"k": 15}),
    ("knn", {"k": 50}),
    ("cluster", {"k": 8}),
    ("cluster", {"k": 20}),
    ("mf", {"dim": 16}),
    ("blend", {}),
)
QUALITY_FLOOR = 0.95

Predictor = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]  # features → (quality, log cost)


def _ridge(x: np.ndarray, q: np.ndarray, c: np.ndarray, *, alpha: float, seed: int) -> Predictor:
    xb = np.c_[x, np.ones(len(x))]
    reg = alpha * np.eye(xb.shape[1])
    reg[-1, -1] = 0.0  # the intercept is not shrunk
    w = np.linalg.solve(xb.T @ xb + reg, xb.T @ np.c_[q, c])
    n = q.shape[1]
    return lambda z: ((out := np.c_[z, np.ones(len(z))] @ w)[:, :n], out[:, n:])


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def _knn(x: np.ndarray, q: np.ndarray, c: np.ndarray, *, k: int, seed: int) -> Predictor:
    base = _unit(x)

    def predict(z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        sims = _unit(z) @ base.T
        kk = min(k, base.shape[0])
        idx = np.argpartition(-sims, kk - 1, axis=1)[:, :kk]
        w = np.maximum(np.take_along_axis(sims, idx, axis=1), 0.0) + 1e-6
        w = w / w.sum(axis=1, keepdims=True)
        return np.einsum("ij,ijm->im", w, q[idx]), np.einsum("ij,ijm->im", w, c[idx])

    return predict


def _kmeans(x: np.ndarray, k: int, seed: int, rounds: int = 25) -> np.ndarray:
    """Lloyd's k-means (cosine, on unit vectors), seeded: the cluster centres."""
    rng = np.random.default_rng(seed)
    centres = x[rng.choice(len(x), size=k, replace=False)]
    for _ in range(rounds):
        labels = np.argmax(x @ centres.T, axis=1)
        for j in range(k):
            if np.any(labels == j):
                centres[j] = x[labels == j].mean(axis=0)
        centres = _unit(centres)
    return centres


def _cluster(x: np.ndarray, q: np.ndarray, c: np.ndarray, *, k: int, seed: int) -> Predictor:
    centres = _kmeans(_unit(x), min(k, len(x)), seed)
    labels = np.argmax(_unit(x) @ centres.T, axis=1)
    prior = 5.0  # prompts' worth of the overall mean in each cluster's table
    tq, tc = np.empty((len(centres), q.shape[1])), np.empty((len(centres), c.shape[1]))
    for j in range(len(centres)):
        m = labels == j
        tq[j] = (q[m].sum(axis=0) + prior * q.mean(axis=0)) / (m.sum() + prior)
        tc[j] = (c[m].sum(axis=0) + prior * c.mean(axis=0)) / (m.sum() + prior)

    def predict(z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        nearest = np.argmax(_unit(z) @ centres.T, axis=1)
        return tq[nearest], tc[nearest]

    return predict


def _mf(x: np.ndarray, q: np.ndarray, c: np.ndarray, *, dim: int, seed: int) -> Predictor:
    rng = np.random.default_rng(seed)
    n, f = x.shape
    m = q.shape[1]
    proj = rng.normal(0, 0.1, (f, dim))
    models = rng.normal(0, 0.1, (m, dim))
    bias = np.log(np.clip(q.mean(axis=0), 1e-3, 1 - 1e-3) / np.clip(1 - q.mean(axis=0), 1e-3, 1))
    rate, decay = 0.05, 1e-3
    for _ in range(300):  # full-batch gradient descent on the squared error of σ(·)
        h = x @ proj
        p = 1.0 / (1.0 + np.exp(-(h @ models.T + bias)))
        g = (p - q) * p * (1 - p) / n
        models -= rate * (g.T @ h + decay * models)
        proj -= rate * (x.T @ (g @ models) + decay * proj)
        bias -= rate * g.sum(axis=0)
    cost = _ridge(x, q, c, alpha=100.0, seed=seed)  # cost has no low-rank structure to share

    def predict(z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return 1.0 / (1.0 + np.exp(-((z @ proj) @ models.T + bias))), cost(z)[1]

    return predict


def _blend(x: np.ndarray, q: np.ndarray, c: np.ndarray, *, seed: int) -> Predictor:
    """The mean prediction of a ridge, a kNN and a cluster table: their errors differ."""
    parts = [
        _ridge(x, q, c, alpha=100.0, seed=seed),
        _knn(x, q, c, k=15, seed=seed),
        _cluster(x, q, c, k=20, seed=seed),
    ]

    def predict(z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        out = [part(z) for part in parts]
        return np.mean([o[0] for o in out], axis=0), np.mean([o[1] for o in out], axis=0)

    return predict


FAMILIES: dict[str, Callable[..., Predictor]] = {
    "ridge": _ridge,
    "knn": _knn,
    "cluster": _cluster,
    "mf": _mf,
    "blend": _blend,
}


def sweep(
    quality: np.ndarray, log_cost: np.ndarray, scale: float, allowed: np.ndarray | None = None
) -> list[np.ndarray]:
    """Per λ of ``LAMBDAS``: each prompt's model maximising predicted quality − λ·cost / scale, among
    the ``allowed`` models (all by default)."""
    cost = np.exp(log_cost) / scale
    if allowed is not None:
        quality = np.where(allowed, quality, -np.inf)
    return [np.argmax(quality - (lam + 1e-9) * cost, axis=1) for lam in LAMBDAS]


def on_hull(data: Matrices) -> np.ndarray:
    """The models on the hull of the single models' mean cost and quality: a model below it is beaten
    on average by a mixture of two others, and choosing it per prompt mostly adds prediction noise."""
    quality = np.nan_to_num(np.nanmean(data.scores, axis=0), nan=0.0)
    cost = data.costs.mean(axis=0)
    hull = nondecreasing_convex_hull(cost, quality)
    return np.array(
        [
            any(c == hc and q == hq for hc, hq in zip(hull.cost, hull.quality, strict=True))
            for c, q in zip(cost, quality, strict=True)
        ]
    )


def _curve(choices: list[np.ndarray], scores: np.ndarray, costs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    rows = np.arange(len(scores))
    return (
        np.array([costs[rows, ch].mean() for ch in choices]),
        np.array([scores[rows, ch].mean() for ch in choices]),
    )


def _targets(data: Matrices) -> tuple[np.ndarray, np.ndarray]:
    scores = np.where(np.isnan(data.scores), np.nanmean(data.scores, axis=0), data.scores)
    return scores, np.log(np.maximum(data.costs, 1e-12))


def select(
    x: np.ndarray, data: Matrices, *, cheapest: int, strongest: int, seed: int, folds: int = 3
) -> tuple[tuple[str, dict[str, Any]], list[dict[str, Any]], np.ndarray]:
    """The candidate with the best inner-CV AIQ on these (training) prompts; every candidate's AIQ; and
    the winner's out-of-fold predicted quality and log cost, stacked as [quality | log cost]."""
    q, c = _targets(data)
    fold_of = np.random.default_rng(seed).permutation(len(x)) % folds
    lo, hi = float(data.costs[:, cheapest].mean()), float(data.costs[:, strongest].mean())
    scores = np.nan_to_num(data.scores, nan=0.0)
    results, best, best_oof = [], -np.inf, np.empty(0)
    for family, params in CANDIDATES:
        oq, oc = np.empty_like(q), np.empty_like(c)
        for k in range(folds):
            tr, te = fold_of != k, fold_of == k
            predict = FAMILIES[family](x[tr], q[tr], c[tr], seed=seed, **params)
            oq[te], oc[te] = predict(x[te])
        cost, qual = _curve(sweep(oq, oc, hi, on_hull(data)), scores, data.costs)
        aiq = float(
            metrics.aiq(
                np.r_[lo, cost, hi],
                np.r_[scores[:, cheapest].mean(), qual, scores[:, strongest].mean()],
                c_min=lo,
                c_max=hi,
            )
        )
        results.append({"family": family, "params": params, "aiq": aiq})
        if aiq > best:
            best, winner, best_oof = aiq, (family, params), np.c_[oq, oc]
    return winner, results, best_oof


class UtilityPolicy:
    """The quality − λ·cost router as an evaluation policy (see the module docstring)."""

    def __init__(
        self,
        name: str = "utility",
        *,
        config: str | Path | None = None,
        seed: int = 0,
        embedder: StaticEmbeddings | None = None,
    ) -> None:
        self.name = name
        self._config = config
        self._fleet: EvalFleet | None = None
        self._seed = seed
        self._embedder = embedder
        self._train: tuple[EvalDataset, Matrices] | None = None

    def fleet(self, dataset: EvalDataset) -> EvalFleet:
        if self._fleet is None:
            self._fleet = fleet_for(self._config, dataset)
        return self._fleet

    def fit(self, train: EvalDataset, data: Matrices) -> None:
        """Remember the fold's training prompts and their recorded scores and costs."""
        self._train = (train, data)

    def _features(self, dataset: EvalDataset) -> np.ndarray:
        if self._embedder is None:
            self._embedder = load_wordllama()
        return np.stack(
            [
                encode(extract_features({"messages": list(p.messages)}), self._embedder).dense
                for p in dataset.prompts
            ]
        ).astype(float)

    def route(self, dataset: EvalDataset, data: Matrices) -> Routing:
        if self._train is None or not len(self._train[0]):
            raise ValueError("--policy utility needs training data: --cv K (train on the other folds)")
        fleet = self.fleet(dataset)
        started = time.perf_counter()
        train, train_data = self._train
        x, z = self._features(train), self._features(dataset)
        mean, std = x.mean(axis=0), x.std(axis=0) + 1e-6
        x, z = (x - mean) / std, (z - mean) / std
        (family, params), candidates, oof = select(
            x, train_data, cheapest=fleet.cheapest, strongest=fleet.strongest, seed=self._seed
        )
        scale = float(train_data.costs[:, fleet.strongest].mean())
        # The operating λ: the largest whose out-of-fold quality reaches the floor on the training prompts.
        m = len(fleet.models)
        scores = np.nan_to_num(train_data.scores, nan=0.0)
        allowed = on_hull(train_data)
        _, oof_quality = _curve(sweep(oof[:, :m], oof[:, m:], scale, allowed), scores, train_data.costs)
        floor = QUALITY_FLOOR * scores[:, fleet.strongest].mean()
        ok = np.flatnonzero(oof_quality >= floor)
        at = int(ok[-1]) if ok.size else 0
        q, c = _targets(train_data)
        predict = FAMILIES[family](x, q, c, seed=self._seed, **params)
        choices = sweep(*predict(z), scale, allowed)
        zeros = np.zeros(len(dataset))
        details = {
            "family": family,
            "params": params,
            "lambda": float(LAMBDAS[at]),
            "candidates": candidates,
            "train_prompts": len(train),
            "train_seconds": round(time.perf_counter() - started, 2),
        }
        return Routing(
            choice=choices[at],
            version=f"utility-{family}",
            details=details,
            sweep=[(ch, zeros) for ch in choices],
        )


def make_utility_policy(spec: str, dataset: EvalDataset, *, seed: int = 0) -> UtilityPolicy:
    """``utility`` (the dataset's default fleet) or ``utility:CONFIG.yaml`` (that config's fleet)."""
    return UtilityPolicy(config=spec.split(":", 1)[1] if ":" in spec else None, seed=seed)
