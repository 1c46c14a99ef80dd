"""The learned router: predicted quality of every fleet model → the cheapest one good enough.

Pure, like the rest of ``policy/``: the arrays (a trained model and the static embedding table) are
loaded elsewhere (``tierwise.artefact``) and passed in; ``choose`` reads only the request's Features.

For one request the router predicts, for each fleet model m, ``q_m``: the probability that m's answer
is good (on 0..1 data, the expected score — P(correct) on a right/wrong benchmark, the judge grade / 10
on a graded one). The request goes to the cheapest model whose predicted *gap* to the reference (the
fleet's strongest model, the "always-strongest" of the ledger), ``q_ref − q_m``, is at most a threshold.
A gap rather than an absolute bar: a question every model gets wrong costs nothing to send cheap, and a
hard one the cheap model gets right is only worth its price if the strong model does better.
The threshold comes from a *target* (a strong-call share, a budget per 1k requests or a quality floor)
read off the calibration table the trainer measured on held-out data (:func:`threshold_for`).

This file is the one place where the threshold is applied (:func:`route_many`, used by the trainer's
calibration and the evaluations too, and :meth:`LearnedRouter.choose`).

Features (``FEATURE_VERSION``): the mean static embedding of the last user message (wordllama,
256-d), 21 structural values from ``features.py`` (size, turns, code/math/multi-step signals, the
task), and, for the linear family, the bag of the message's token ids — the same tokens the embedding
averaged, so they cost no second tokenizer call.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from ..features import TASKS, Features
from .engine import LearnedChoice

FEATURE_VERSION = "wordllama-l2s256+struct21+tokens/1"
FAMILIES: tuple[str, ...] = ("linear", "mlp", "knn")
STRUCTURAL: tuple[str, ...] = (
    "log_input_tokens",
    "log_turns",
    "has_code",
    "has_math",
    "multi_step",
    "has_tools",
    "json_mode",
    "log_chars",
    "log_lines",
    "digit_share",
    "ends_with_question",
    *(f"task_{task}" for task in TASKS),
)
_DIGIT_WINDOW = 2000


class Embedder(Protocol):
    """What the router needs of ``tierwise.embeddings.StaticEmbeddings``."""

    dim: int
    table: np.ndarray

    def ids(self, text: str) -> list[int]: ...


def structural(features: Features) -> np.ndarray:
    """The request's structural features, scaled to about 0..1 (``STRUCTURAL`` names them)."""
    text = features.text
    head = text[:_DIGIT_WINDOW]
    values = [
        math.log1p(features.input_tokens) / 8,
        math.log1p(features.turns) / 3,
        features.has_code,
        features.has_math,
        features.multi_step,
        features.has_tools,
        features.json_mode,
        math.log1p(len(text)) / 10,
        math.log1p(text.count("\n")) / 5,
        sum(c.isdigit() for c in head) / max(len(head), 1),
        text.rstrip().endswith("?"),
    ]
    values.extend(features.task == task for task in TASKS)
    return np.array(values, dtype=np.float32)


@dataclass(frozen=True, slots=True)
class Encoded:
    """One request as the models read it."""

    dense: np.ndarray  # [unit-length embedding, structural], float32
    tokens: np.ndarray  # distinct token ids of the (clipped) last user message


def encode(features: Features, embedder: Embedder) -> Encoded:
    ids = embedder.ids(features.text)
    if ids:
        vector = embedder.table[ids].mean(axis=0)
        norm = float(np.sqrt(vector @ vector))
        if norm > 0:
            vector = vector / norm
    else:
        vector = np.zeros(embedder.dim, dtype=np.float32)
    return Encoded(np.concatenate([vector, structural(features)]), np.unique(np.asarray(ids, dtype=np.int64)))


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


# -- the model families: arrays in, predicted quality per fleet model out ---------------------------------


class Scorer(Protocol):
    def predict(self, dense: np.ndarray, tokens: Sequence[np.ndarray]) -> np.ndarray:
        """Predicted quality (n × models, 0..1) of ``dense`` rows (n × D) and their token-id sets."""
        ...


class LinearScorer:
    """Logistic regression per model over standardised dense features and the token bag
    (each distinct token counts 1/√(number of distinct tokens))."""

    def __init__(self, arrays: Mapping[str, np.ndarray]) -> None:
        self.mean, self.scale = arrays["mean"], arrays["scale"]
        self.w_dense = np.ascontiguousarray(arrays["w_dense"].T, dtype=np.float32)  # D × models
        self.w_tokens = np.ascontiguousarray(arrays["w_tokens"].T, dtype=np.float32)  # vocab × models
        self.bias = arrays["bias"].astype(np.float32)

    def predict(self, dense: np.ndarray, tokens: Sequence[np.ndarray]) -> np.ndarray:
        logits = ((dense - self.mean) / self.scale) @ self.w_dense + self.bias
        vocab = self.w_tokens.shape[0]
        for i, ids in enumerate(tokens):
            ids = ids[ids < vocab]
            if len(ids):
                logits[i] += self.w_tokens[ids].sum(axis=0) / math.sqrt(len(ids))
        return _sigmoid(logits.astype(np.float64))


class MLPScorer:
    """One hidden ReLU layer per model over standardised dense features, clipped to 0..1."""

    def __init__(self, arrays: Mapping[str, np.ndarray]) -> None:
        self.mean, self.scale = arrays["mean"], arrays["scale"]
        self.w1, self.b1 = arrays["w1"].astype(np.float32), arrays["b1"].astype(np.float32)  # M×D×H, M×H
        self.w2, self.b2 = arrays["w2"].astype(np.float32), arrays["b2"].astype(np.float32)  # M×H, M

    def predict(self, dense: np.ndarray, tokens: Sequence[np.ndarray]) -> np.ndarray:
        x = (dense - self.mean) / self.scale
        hidden = np.maximum(np.einsum("nd,mdh->nmh", x, self.w1) + self.b1, 0.0)
        return np.clip(np.einsum("nmh,mh->nm", hidden, self.w2) + self.b2, 0.0, 1.0).astype(np.float64)


class KNNScorer:
    """Mean recorded score of the ``k`` training prompts nearest by cosine (the embedding part)."""

    def __init__(self, arrays: Mapping[str, np.ndarray], *, k: int) -> None:
        self.points = arrays["points"].astype(np.float32)  # N × dim, unit length
        self.scores = arrays["scores"].astype(np.float64)  # N × models, nan where not recorded
        self.k = min(k, len(self.points))
        self.prior = np.nan_to_num(np.nanmean(self.scores, axis=0), nan=0.5)

    def predict(self, dense: np.ndarray, tokens: Sequence[np.ndarray]) -> np.ndarray:
        similarity = dense[:, : self.points.shape[1]] @ self.points.T
        nearest = np.argpartition(-similarity, self.k - 1, axis=1)[:, : self.k]
        picked = self.scores[nearest]  # n × k × models
        counts = np.sum(~np.isnan(picked), axis=1)
        sums = np.nansum(picked, axis=1)
        return np.where(counts > 0, sums / np.maximum(counts, 1), self.prior)


def make_scorer(family: str, arrays: Mapping[str, np.ndarray], params: Mapping[str, Any]) -> Scorer:
    if family == "linear":
        return LinearScorer(arrays)
    if family == "mlp":
        return MLPScorer(arrays)
    if family == "knn":
        return KNNScorer(arrays, k=int(params["k"]))
    raise ValueError(f"unknown model family {family!r}; known: {', '.join(FAMILIES)}")


# -- the threshold: the one place it is applied -------------------------------------------------------------


def route_many(quality: np.ndarray, reference: int, threshold: float) -> np.ndarray:
    """Index of the chosen model per row of ``quality`` (n × models, columns cheapest first): the first
    column whose gap to ``reference`` is ≤ ``threshold``; the reference itself always qualifies."""
    gaps = quality[:, reference : reference + 1] - quality
    ok = gaps <= threshold
    ok[:, reference] = True
    return np.argmax(ok, axis=1)


def gap_scores(quality: np.ndarray, reference: int, weak: int = 0) -> np.ndarray:
    """The two-model "send to the strongest" score: the predicted gap of ``weak`` to ``reference``."""
    return quality[:, reference] - quality[:, weak]


@dataclass(frozen=True, slots=True)
class Calibration:
    """Operating points measured on held-out predictions, one per threshold (ascending)."""

    thresholds: np.ndarray
    strong_share: np.ndarray  # share of requests sent to the reference model
    cost_per_1k_usd: np.ndarray
    quality: np.ndarray  # mean recorded score
    quality_rel: np.ndarray  # quality / always-reference quality

    @classmethod
    def from_json(cls, data: Mapping[str, Sequence[float]]) -> Calibration:
        return cls(*(np.asarray(data[name], dtype=np.float64) for name in cls.__dataclass_fields__))

    def to_json(self) -> dict[str, list[float]]:
        return {name: [float(v) for v in getattr(self, name)] for name in self.__dataclass_fields__}


def threshold_for(
    calibration: Calibration,
    *,
    strong_share: float | None = None,
    budget_per_1k_usd: float | None = None,
    quality_floor: float | None = None,
) -> float:
    """The threshold that meets one target on the calibration data.

    ``strong_share``: the smallest threshold sending at most that share to the reference model;
    ``budget_per_1k_usd``: the smallest one costing at most that; ``quality_floor``: the largest one
    (the cheapest) keeping at least that share of always-reference quality. When nothing meets the
    target, the extreme that comes closest (everything to the reference, or everything cheapest).
    """
    c = calibration
    if strong_share is not None:
        ok = np.flatnonzero(c.strong_share <= strong_share + 1e-12)
        return float(c.thresholds[ok[0]] if len(ok) else c.thresholds[-1])
    if budget_per_1k_usd is not None:
        ok = np.flatnonzero(c.cost_per_1k_usd <= budget_per_1k_usd + 1e-12)
        return float(c.thresholds[ok[0]] if len(ok) else c.thresholds[-1])
    if quality_floor is not None:
        ok = np.flatnonzero(c.quality_rel >= quality_floor - 1e-12)
        return float(c.thresholds[ok[-1]] if len(ok) else c.thresholds[0])
    raise ValueError("threshold_for: give one of strong_share, budget_per_1k_usd or quality_floor")


# -- the router the engine calls ---------------------------------------------------------------------------


class LearnedRouter:
    """Implements ``policy.engine.LearnedRouter``. ``models`` are fleet names, cheapest first;
    ``reference`` indexes the strongest. Build once; ``choose`` is safe to call concurrently."""

    def __init__(
        self,
        scorer: Scorer,
        embedder: Embedder,
        *,
        models: Sequence[str],
        reference: int,
        threshold: float,
        uncertain_band: float = 0.0,
        version: str,
        columns: Sequence[int] | None = None,
    ) -> None:
        self.scorer = scorer
        self.embedder = embedder
        self.models = tuple(models)
        self.reference = reference
        self.threshold = float(threshold)
        self.uncertain_band = float(uncertain_band)
        self.version = version
        # Which of the scorer's output columns each fleet model is (the artefact may know more models).
        self._columns = np.asarray(columns if columns is not None else range(len(self.models)))

    def quality(self, features: Features) -> np.ndarray:
        """Predicted quality of each model (``self.models`` order) for one request."""
        encoded = encode(features, self.embedder)
        return self.scorer.predict(encoded.dense[None, :], [encoded.tokens])[0][self._columns]

    def choose(self, features: Features) -> LearnedChoice:
        quality = self.quality(features)
        index = int(route_many(quality[None, :], self.reference, self.threshold)[0])
        gaps = quality[self.reference] - quality
        # Uncertain: the choice barely cleared the threshold, or a cheaper model barely missed it.
        band = self.uncertain_band
        uncertain = band > 0 and (
            (index != self.reference and gaps[index] > self.threshold - band)
            or any(gaps[j] <= self.threshold + band for j in range(index))
        )
        return LearnedChoice(self.models[index], float(gaps[0]), bool(uncertain))
