"""The utility router: every fleet model's predicted quality *and* cost → the model maximising
quality − λ·cost.

Pure, like the rest of ``policy/``: the arrays (a fitted predictor, the feature standardisation, the
static embedding table) are loaded elsewhere (``tierwise.artefact``) and passed in; ``choose`` reads only
the request's Features. numpy only: nothing here needs scikit-learn.

For one request the router encodes the prompt exactly as the learned router does
(``policy.learned.encode``: the mean static embedding and the structural values), standardises it with
the training rows' mean and spread, and predicts for each model m its quality ``q_m`` (the expected score
on 0..1) and its cost ``c_m`` in USD. The cost is predicted in one of two ways, per model, fixed when it
was trained:

* from tokens (the data gave token counts): the number of output tokens m would write is predicted
  (``log1p`` of it), and ``c_m = (input tokens × input price + output tokens × output price) / 1e6`` at
  the *fleet's* prices — so a price change in the config applies without retraining;
* from recorded cost (the data gave ``cost_usd`` per answer): ``log`` of that cost is predicted.

The request goes to ``argmax_m q_m − λ · c_m / scale`` over the models allowed to be chosen (those on
the training prompts' single-model cost–quality hull, or all of them, whichever measured better at
training), where ``scale`` is the strongest model's mean cost on the training prompts, so λ is
"quality given up per strongest-call's worth of spend". Predicted quality may be recalibrated per
model (a line fitted on held-out predictions at training, when that measured better). λ comes
from a target (a quality floor relative to the strongest, a budget or a strong-call share) read off the
calibration table measured on out-of-fold predictions at training time (``policy.learned.threshold_for``:
the λ grid plays the threshold's part, larger is cheaper), or is set directly (``cost_weight``).

The families (``FAMILIES``), each a multi-output regressor of [quality | cost target] per model:

* ``ridge``: one linear model per output (closed form);
* ``knn``: the ``k`` most similar training prompts (cosine), weighted by similarity;
* ``cluster``: the nearest k-means centre's table of mean targets (shrunk to the overall means);
* ``mf``: RouteLLM's matrix factorisation: quality = σ(model vector · projected prompt + bias), the
  cost targets from a ridge;
* ``blend``: the mean of a ridge's, a kNN's and a cluster table's predictions;
* ``ensemble``: the mean of the predictions of every member listed in its parameters (at training:
  every other candidate, none singled out).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from ..features import Features
from .engine import LearnedChoice
from .learned import Embedder, encode

FAMILIES: tuple[str, ...] = ("ridge", "knn", "cluster", "mf", "blend", "ensemble")
# λ per unit of the strongest model's mean cost: 0 (best predicted quality) up to "always the cheapest".
LAMBDAS: np.ndarray = np.r_[0.0, np.geomspace(1e-3, 30.0, 80), 1e6]
# Added to λ so that equal predicted quality goes to the cheaper model, even at λ = 0.
_TIE = 1e-9


class Predictor(Protocol):
    def predict(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Standardised features (n × F) → predicted quality and cost target (each n × models)."""
        ...


def unit(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (cosine similarity is then a dot product)."""
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


class RidgePredictor:
    def __init__(self, arrays: Mapping[str, np.ndarray]) -> None:
        self.weights = np.asarray(arrays["weights"], dtype=np.float64)  # (F + 1) × 2m, intercept last

    def predict(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        out = x @ self.weights[:-1] + self.weights[-1]
        m = out.shape[1] // 2
        return out[:, :m], out[:, m:]


class KNNPredictor:
    def __init__(self, arrays: Mapping[str, np.ndarray], *, k: int) -> None:
        self.points = np.asarray(arrays["points"], dtype=np.float64)  # N × F, unit length
        self.quality = np.asarray(arrays["quality"], dtype=np.float64)  # N × m
        self.cost = np.asarray(arrays["cost"], dtype=np.float64)  # N × m
        self.k = max(1, min(int(k), len(self.points)))

    def predict(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        sims = unit(x) @ self.points.T
        idx = np.argpartition(-sims, self.k - 1, axis=1)[:, : self.k]
        w = np.maximum(np.take_along_axis(sims, idx, axis=1), 0.0) + 1e-6
        w = w / w.sum(axis=1, keepdims=True)
        return np.einsum("ij,ijm->im", w, self.quality[idx]), np.einsum("ij,ijm->im", w, self.cost[idx])


class ClusterPredictor:
    def __init__(self, arrays: Mapping[str, np.ndarray]) -> None:
        self.centres = np.asarray(arrays["centres"], dtype=np.float64)  # k × F, unit length
        self.quality = np.asarray(arrays["quality"], dtype=np.float64)  # k × m
        self.cost = np.asarray(arrays["cost"], dtype=np.float64)

    def predict(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        nearest = np.argmax(unit(x) @ self.centres.T, axis=1)
        return self.quality[nearest], self.cost[nearest]


class MFPredictor:
    def __init__(self, arrays: Mapping[str, np.ndarray]) -> None:
        self.projection = np.asarray(arrays["projection"], dtype=np.float64)  # F × d
        self.models = np.asarray(arrays["models"], dtype=np.float64)  # m × d
        self.bias = np.asarray(arrays["bias"], dtype=np.float64)  # m
        self.cost = RidgePredictor({"weights": arrays["cost_weights"]})

    def predict(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        logits = (x @ self.projection) @ self.models.T + self.bias
        return 1.0 / (1.0 + np.exp(-logits)), self.cost.predict(x)[1]


BLEND_PARTS: tuple[tuple[str, str, dict[str, Any]], ...] = (
    ("ridge", "ridge", {"alpha": 100.0}),
    ("knn", "knn", {"k": 15}),
    ("cluster", "cluster", {"k": 20}),
)


class BlendPredictor:
    """The mean of its parts' predictions (their errors differ); arrays are stored as ``part.name``."""

    def __init__(self, arrays: Mapping[str, np.ndarray]) -> None:
        self.parts = [
            make_predictor(family, _prefixed(arrays, prefix), params)
            for prefix, family, params in BLEND_PARTS
        ]

    def predict(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        out = [part.predict(x) for part in self.parts]
        return np.mean([o[0] for o in out], axis=0), np.mean([o[1] for o in out], axis=0)


class EnsemblePredictor:
    """The mean prediction of ``members`` (family, params), member i's arrays stored as ``mi.name``."""

    def __init__(self, arrays: Mapping[str, np.ndarray], members: Sequence[Sequence[Any]]) -> None:
        self.parts = [
            make_predictor(family, _prefixed(arrays, f"m{i}"), params)
            for i, (family, params) in enumerate(members)
        ]

    def predict(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        out = [part.predict(x) for part in self.parts]
        return np.mean([o[0] for o in out], axis=0), np.mean([o[1] for o in out], axis=0)


def _prefixed(arrays: Mapping[str, np.ndarray], prefix: str) -> dict[str, np.ndarray]:
    start = prefix + "."
    return {name[len(start) :]: value for name, value in arrays.items() if name.startswith(start)}


class CalibratedPredictor:
    """Another predictor's quality mapped through a line per model, ``a + b·q`` (fitted on held-out
    predictions at training time, when the inner cross-validation found that it helps)."""

    def __init__(self, inner: Predictor, line: np.ndarray) -> None:
        self.inner = inner
        self.line = np.asarray(line, dtype=np.float64)  # 2 × models: [a; b]

    def predict(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        quality, cost = self.inner.predict(x)
        return self.line[0] + self.line[1] * quality, cost


def make_predictor(family: str, arrays: Mapping[str, np.ndarray], params: Mapping[str, Any]) -> Predictor:
    """The predictor of one family from its arrays (as ``tierwise.train_utility`` fits them), with
    its quality calibration when the arrays hold one (``quality_calibration``)."""
    if "quality_calibration" in arrays:
        rest = {k: v for k, v in arrays.items() if k != "quality_calibration"}
        return CalibratedPredictor(make_predictor(family, rest, params), arrays["quality_calibration"])
    if family == "ridge":
        return RidgePredictor(arrays)
    if family == "knn":
        return KNNPredictor(arrays, k=int(params["k"]))
    if family == "cluster":
        return ClusterPredictor(arrays)
    if family == "mf":
        return MFPredictor(arrays)
    if family == "blend":
        return BlendPredictor(arrays)
    if family == "ensemble":
        return EnsemblePredictor(arrays, params["members"])
    raise ValueError(f"unknown utility family {family!r}; known: {', '.join(FAMILIES)}")


# -- from predictions to a choice -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CostModel:
    """How each model's cost target becomes USD (see the module docstring), at the fleet's prices."""

    from_tokens: np.ndarray  # bool per model: the target is log1p(output tokens), else log(USD)
    input_per_mtok: np.ndarray  # USD per 1M tokens, per model
    output_per_mtok: np.ndarray

    def usd(self, target: np.ndarray, input_tokens: np.ndarray) -> np.ndarray:
        """Predicted USD per call (n × models) from the cost targets and each prompt's input tokens."""
        output_tokens = np.maximum(np.expm1(target), 0.0)
        by_tokens = (
            np.asarray(input_tokens, dtype=np.float64)[:, None] * self.input_per_mtok
            + output_tokens * self.output_per_mtok
        ) / 1e6
        return np.where(self.from_tokens, by_tokens, np.exp(target))


def choose_many(
    quality: np.ndarray, cost: np.ndarray, cost_weight: float, scale: float, allowed: np.ndarray | None = None
) -> np.ndarray:
    """Per row, the column maximising quality − cost_weight · cost / scale among the ``allowed`` ones
    (all by default); on equal utility the first column. The one place the trade-off is applied."""
    utility = quality - (cost_weight + _TIE) * cost / scale
    if allowed is not None:
        utility = np.where(allowed, utility, -np.inf)
    return np.argmax(utility, axis=1)


def sweep(
    quality: np.ndarray, cost: np.ndarray, scale: float, allowed: np.ndarray | None = None
) -> list[np.ndarray]:
    """The choices at each λ of ``LAMBDAS``, best predicted quality first, the cheapest last."""
    return [choose_many(quality, cost, float(lam), scale, allowed) for lam in LAMBDAS]


def predict_rows(
    predictor: Predictor,
    dense: np.ndarray,
    input_tokens: np.ndarray,
    *,
    mean: np.ndarray,
    scale: np.ndarray,
    costs: CostModel,
) -> tuple[np.ndarray, np.ndarray]:
    """Predicted quality and USD cost (n × models) of encoded prompts (``Encoded.dense`` rows)."""
    quality, target = predictor.predict((np.asarray(dense, dtype=np.float64) - mean) / scale)
    return quality, costs.usd(target, input_tokens)


class UtilityRouter:
    """Implements ``policy.engine.LearnedRouter`` by quality − λ·cost. ``models`` are fleet names, in
    the predictor's column order given by ``columns``. Build once; ``choose`` is safe to call
    concurrently."""

    def __init__(
        self,
        predictor: Predictor,
        embedder: Embedder,
        *,
        models: Sequence[str],
        columns: Sequence[int],
        mean: np.ndarray,
        scale: np.ndarray,
        costs: CostModel,
        allowed: np.ndarray,
        cost_weight: float,
        cost_scale: float,
        uncertain_band: float = 0.0,
        version: str,
    ) -> None:
        self.predictor = predictor
        self.embedder = embedder
        self.models = tuple(models)
        self._columns = np.asarray(columns, dtype=np.int64)
        self.mean = np.asarray(mean, dtype=np.float64)
        self.scale = np.asarray(scale, dtype=np.float64)
        self.costs = costs  # already restricted to ``models``, in their order
        self.allowed = np.asarray(allowed, dtype=bool)
        self.cost_weight = float(cost_weight)
        self.cost_scale = float(cost_scale)
        self.uncertain_band = float(uncertain_band)
        self.version = version

    def predict(self, features: Features) -> tuple[np.ndarray, np.ndarray]:
        """Predicted quality and USD cost of each model (``self.models`` order) for one request."""
        encoded = encode(features, self.embedder)
        x = (encoded.dense[None, :].astype(np.float64) - self.mean) / self.scale
        quality, target = self.predictor.predict(x)
        quality, target = quality[:, self._columns], target[:, self._columns]
        return quality[0], self.costs.usd(target, np.array([features.input_tokens]))[0]

    def choose(self, features: Features) -> LearnedChoice:
        quality, cost = self.predict(features)
        utility = quality - (self.cost_weight + _TIE) * cost / self.cost_scale
        utility = np.where(self.allowed, utility, -np.inf)
        index = int(np.argmax(utility))
        others = np.delete(utility, index)
        runner_up = float(others.max()) if others.size else -np.inf
        # Uncertain: another model's utility is within the band of the chosen one's.
        uncertain = self.uncertain_band > 0 and utility[index] - runner_up <= self.uncertain_band
        explain = (
            f"predicted quality {quality[index]:.3f}, cost ${cost[index]:.6f} "
            f"(λ {self.cost_weight:.4g} per ${self.cost_scale:.6f})"
        )
        return LearnedChoice(self.models[index], float(quality[index]), bool(uncertain), explain)
