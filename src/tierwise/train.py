"""``tierwise train``: labelled prompts → a learned-router artefact (see ``artefact.py``).

1. **Rows.** Every prompt of the training datasets becomes one row: its Features (as the gateway
   computes them), its encoding (``policy.learned.encode``) and, per fleet model, the recorded score
   (0..1, nan where the data has none) and the cost of one call. Fleet models are matched to each
   dataset's models by upstream id, name, or the name after a ``/`` (``mistralai/Mixtral-…``).
   Several datasets count equally (each one's rows weigh 1 / its size), so 14,000 MMLU questions do
   not drown 300 Arena conversations.
2. **Family and hyper-parameters by measurement**, on the training rows only: each candidate of
   ``CANDIDATES`` predicts every row out of fold (``inner_folds``-fold CV over distinct prompt texts,
   fixed seed); the one with the best out-of-fold APGR of the cheapest-vs-reference pair, averaged over
   the training datasets, wins (ties: the first listed, the cheapest to serve).
3. **Calibration on held-out data**: the winner's out-of-fold predictions are routed at ~200
   thresholds with ``policy.learned.route_many``; the strong-call share, $ per 1k requests and quality
   measured there is the table a target is read from.
4. **Refit** the winner on all rows, write the artefact.

Training needs scikit-learn (the ``learned`` extra); serving does not.
"""

from __future__ import annotations

import hashlib
import math
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

from .errors import ConfigError
from .evals.curves import qcut_thresholds
from .evals.metrics import apgr as _apgr
from .evals.metrics import cpt as _cpt
from .evals.records import EvalDataset
from .evals.splits import kfold
from .features import Features, extract_features
from .messages import message_text
from .policy.learned import (
    FEATURE_VERSION,
    Calibration,
    Embedder,
    encode,
    gap_scores,
    make_scorer,
    route_many,
    threshold_for,
)

VOCAB = 32_000  # the Llama-2 tokenizer of the wordllama table
# Fixed before any test result was looked at; the order is the tie-break (cheapest to serve first).
CANDIDATES: tuple[tuple[str, dict[str, Any]], ...] = (
    ("linear", {"C": 0.1}),
    ("linear", {"C": 0.3}),
    ("linear", {"C": 1.0}),
    ("knn", {"k": 25}),
    ("knn", {"k": 100}),
    ("mlp", {"hidden": 32, "alpha": 0.1}),
    ("mlp", {"hidden": 32, "alpha": 1.0}),
)
DEFAULT_TARGET: dict[str, float] = {"quality_floor": 0.95}


@dataclass(frozen=True, slots=True)
class FleetModel:
    name: str
    input_per_mtok: float
    output_per_mtok: float
    upstream: str | None = None

    @property
    def price(self) -> float:
        return self.input_per_mtok + self.output_per_mtok

    def to_json(self) -> dict[str, Any]:
        """The model's entry in an artefact's ``models`` (each router adds fields of its own)."""
        return {
            "name": self.name,
            "upstream": self.upstream,
            "price": {"input_per_mtok": self.input_per_mtok, "output_per_mtok": self.output_per_mtok},
        }


def ordered_fleet(models: Sequence[FleetModel], reference: str) -> tuple[list[FleetModel], int]:
    """The fleet cheapest first (the reference first among equal prices), and the reference's index.
    ConfigError when the reference is not in it."""
    ordered = sorted(models, key=lambda m: (m.price, m.name != reference))
    names = [m.name for m in ordered]
    if reference not in names:
        raise ConfigError(
            f"tierwise train: reference model {reference!r} is not in the fleet ({', '.join(names)})"
        )
    return ordered, names.index(reference)


def check_enough_prompts(texts: Sequence[str], inner_folds: int) -> None:
    """ConfigError unless there are 5 distinct prompts per inner fold at least."""
    units = len(set(texts))
    if units < 5 * inner_folds:
        raise ConfigError(
            f"tierwise train: {units} distinct prompts are too few for {inner_folds}-fold selection and "
            f"calibration; give at least {5 * inner_folds}"
        )


@dataclass(slots=True)
class TrainingSet:
    texts: list[str]
    dense: np.ndarray  # n × D
    tokens: list[np.ndarray]
    quality: np.ndarray  # n × models, nan where not recorded
    cost: np.ndarray  # n × models, USD per call
    weight: np.ndarray  # n, sums to n
    source: np.ndarray  # n, index of the row's dataset
    datasets: list[dict[str, Any]]
    mapping: list[dict[str, str | None]]  # per dataset: fleet name → dataset model
    sha256: str = ""

    def __len__(self) -> int:
        return len(self.texts)


@dataclass(slots=True)
class Trained:
    meta: dict[str, Any]
    arrays: dict[str, np.ndarray]
    oof_quality: np.ndarray = field(repr=False, default_factory=lambda: np.zeros((0, 0)))
    texts: list[str] = field(repr=False, default_factory=list)  # the prompt text of each oof_quality row


def _sklearn() -> Any:
    try:
        import sklearn
    except ImportError:
        raise ConfigError("tierwise train needs scikit-learn: pip install 'tierwise[learned]'") from None
    return sklearn


def _matches(dataset_model: str, wanted: str) -> bool:
    return (
        dataset_model == wanted
        or dataset_model.endswith("/" + wanted)
        or wanted.endswith("/" + dataset_model)
    )


def dataset_model(model: FleetModel, dataset: EvalDataset) -> str | None:
    """The dataset's name for a fleet model: its upstream id, its name, or either after a ``/``."""
    for wanted in (model.upstream, model.name):
        if wanted is None:
            continue
        for candidate in dataset.models:
            if _matches(candidate, wanted):
                return candidate
    return None


def text_of(messages: Sequence[dict[str, Any]]) -> str:
    """The text a prompt is identified by in splits (its last message, as ``tierwise eval`` does)."""
    return message_text(messages[-1]) if messages else ""


def build_training_set(
    datasets: Sequence[EvalDataset],
    models: Sequence[FleetModel],
    embedder: Embedder,
    *,
    exclude_texts: frozenset[str] | set[str] = frozenset(),
) -> TrainingSet:
    """Rows of every dataset's prompts (less those whose text is in ``exclude_texts``)."""
    texts: list[str] = []
    dense: list[np.ndarray] = []
    tokens: list[np.ndarray] = []
    quality: list[list[float]] = []
    cost: list[list[float]] = []
    weight: list[float] = []
    source: list[int] = []
    described, mapping = [], []
    for dataset in datasets:
        names = {m.name: dataset_model(m, dataset) for m in models}
        mapping.append(names)
        kept = 0
        for prompt in dataset.prompts:
            text = text_of(prompt.messages)
            if text in exclude_texts:
                continue
            row_q, row_c = [], []
            for model in models:
                result = prompt.results.get(names[model.name] or "")
                if result is None:
                    row_q.append(math.nan)
                    row_c.append(math.nan)
                    continue
                row_q.append(math.nan if result.score is None else float(result.score))
                if result.cost_usd is not None:
                    row_c.append(result.cost_usd)
                else:
                    tokens_in = result.input_tokens
                    if tokens_in is None:
                        tokens_in = sum(len(str(m.get("content", ""))) for m in prompt.messages) // 4
                    row_c.append(
                        (
                            tokens_in * model.input_per_mtok
                            + (result.output_tokens or 0) * model.output_per_mtok
                        )
                        / 1e6
                    )
            if all(math.isnan(q) for q in row_q):
                continue
            features: Features = extract_features({"messages": list(prompt.messages)})
            encoded = encode(features, embedder)
            texts.append(text)
            dense.append(encoded.dense)
            tokens.append(encoded.tokens)
            quality.append(row_q)
            cost.append(row_c)
            kept += 1
        weight.extend([1.0 / max(kept, 1)] * kept)
        source.extend([len(described)] * kept)
        described.append({"name": dataset.name, "sha256": dataset.content_hash, "prompts": kept})
    if not texts:
        raise ConfigError("tierwise train: no training prompt has a score for any fleet model")
    w = np.asarray(weight)
    q = np.asarray(quality, dtype=np.float64)
    for j, model in enumerate(models):
        if np.all(np.isnan(q[:, j])):
            raise ConfigError(
                f"tierwise train: fleet model {model.name!r} has no score in the training data "
                f"({', '.join(d.name for d in datasets)})"
            )
    digest = hashlib.sha256()
    for text, row in zip(texts, quality, strict=True):
        digest.update(orjson.dumps([text, [None if math.isnan(v) else round(v, 6) for v in row]]))
    return TrainingSet(
        texts=texts,
        dense=np.stack(dense).astype(np.float32),
        tokens=tokens,
        quality=q,
        cost=np.nan_to_num(np.asarray(cost, dtype=np.float64), nan=0.0),
        weight=w * len(w) / w.sum(),
        source=np.asarray(source, dtype=np.int64),
        datasets=described,
        mapping=mapping,
        sha256=digest.hexdigest(),
    )


# -- fitting one family ------------------------------------------------------------------------------------


def _standardise(dense: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mean = dense.mean(axis=0)
    scale = dense.std(axis=0)
    scale[scale < 1e-6] = 1.0
    return mean.astype(np.float32), scale.astype(np.float32)


def _token_matrix(tokens: Sequence[np.ndarray]) -> Any:
    from scipy import sparse

    indptr = np.zeros(len(tokens) + 1, dtype=np.int64)
    indptr[1:] = np.cumsum([len(t) for t in tokens])
    indices = np.concatenate(tokens) if tokens else np.zeros(0, dtype=np.int64)
    data = np.concatenate(
        [np.full(len(t), 1 / math.sqrt(len(t)), dtype=np.float32) for t in tokens if len(t)]
    )
    return sparse.csr_matrix((data, np.minimum(indices, VOCAB - 1), indptr), shape=(len(tokens), VOCAB))


def fit_family(
    family: str, params: dict[str, Any], ts: TrainingSet, rows: np.ndarray, *, seed: int = 0
) -> dict[str, np.ndarray]:
    """The arrays of one family fitted on ``rows`` of the training set (scores of each model: soft
    labels, each row weighted by its dataset's weight)."""
    _sklearn()
    from sklearn.exceptions import ConvergenceWarning

    # An iteration cap reached is a fine model here: the selection measures it out of fold.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return _fit(family, params, ts, rows, seed=seed)


def _fit(
    family: str, params: dict[str, Any], ts: TrainingSet, rows: np.ndarray, *, seed: int
) -> dict[str, np.ndarray]:
    dense, quality, weight = ts.dense[rows], ts.quality[rows], ts.weight[rows]
    n_models = quality.shape[1]
    if family == "knn":
        dim = ts.dense.shape[1] - _n_structural()
        return {"points": dense[:, :dim].astype(np.float16), "scores": quality.astype(np.float16)}
    mean, scale = _standardise(dense)
    if family == "linear":
        # Raw features: the unit-length embedding's small coordinates are penalised harder than the
        # 0..1 structural values and token weights, which measured better than standardising (GSM8K
        # inner CV: APGR 0.59 vs 0.55) — the 256 embedding dimensions overfit when scaled up.
        mean, scale = np.zeros_like(mean), np.ones_like(scale)
    x = (dense - mean) / scale
    if family == "linear":
        from scipy import sparse
        from sklearn.linear_model import LogisticRegression

        full = sparse.hstack([sparse.csr_matrix(x), _token_matrix([ts.tokens[i] for i in rows])]).tocsr()
        w_dense = np.zeros((n_models, x.shape[1]), dtype=np.float32)
        w_tokens = np.zeros((n_models, VOCAB), dtype=np.float32)
        bias = np.zeros(n_models, dtype=np.float32)
        for j in range(n_models):
            have = np.flatnonzero(~np.isnan(quality[:, j]))
            q = quality[have, j]
            # Soft labels: each row once as "good" weighted q, once as "not good" weighted 1 − q.
            xs = sparse.vstack([full[have], full[have]])
            ys = np.r_[np.ones(len(have)), np.zeros(len(have))]
            ws = np.r_[q, 1 - q] * np.r_[weight[have], weight[have]]
            if ws[ys == 1].sum() <= 0 or ws[ys == 0].sum() <= 0:  # always (or never) good: a constant
                bias[j] = 10.0 if ws[ys == 1].sum() > 0 else -10.0
                continue
            model = LogisticRegression(C=params["C"], max_iter=2000)
            model.fit(xs, ys, sample_weight=ws)
            w_dense[j] = model.coef_[0, : x.shape[1]]
            w_tokens[j] = model.coef_[0, x.shape[1] :]
            bias[j] = model.intercept_[0]
        return {"mean": mean, "scale": scale, "w_dense": w_dense, "w_tokens": w_tokens, "bias": bias}
    if family == "mlp":
        from sklearn.neural_network import MLPRegressor

        hidden = int(params["hidden"])
        w1 = np.zeros((n_models, x.shape[1], hidden), dtype=np.float32)
        b1 = np.zeros((n_models, hidden), dtype=np.float32)
        w2 = np.zeros((n_models, hidden), dtype=np.float32)
        b2 = np.zeros(n_models, dtype=np.float32)
        for j in range(n_models):
            have = np.flatnonzero(~np.isnan(quality[:, j]))
            model = MLPRegressor(
                hidden_layer_sizes=(hidden,),
                alpha=params["alpha"],
                max_iter=300,
                random_state=seed,
                learning_rate_init=1e-3,
            )
            model.fit(x[have], quality[have, j], sample_weight=weight[have])
            w1[j], b1[j] = model.coefs_[0], model.intercepts_[0]
            w2[j], b2[j] = model.coefs_[1][:, 0], model.intercepts_[1][0]
        return {"mean": mean, "scale": scale, "w1": w1, "b1": b1, "w2": w2, "b2": b2}
    raise ValueError(f"unknown model family {family!r}")


def _n_structural() -> int:
    from .policy.learned import STRUCTURAL

    return len(STRUCTURAL)


def predict(
    family: str, params: dict[str, Any], arrays: dict[str, np.ndarray], ts: TrainingSet, rows: np.ndarray
) -> np.ndarray:
    scorer = make_scorer(family, arrays, params)
    return scorer.predict(ts.dense[rows], [ts.tokens[i] for i in rows])


# -- measuring ---------------------------------------------------------------------------------------------


def pair_metrics(score: np.ndarray, weak: np.ndarray, strong: np.ndarray) -> tuple[float, float]:
    """APGR and CPT(50%) of a "send to strongest" score, RouteLLM's 10-bin sweep (rows with both scores)."""
    both = ~(np.isnan(weak) | np.isnan(strong))
    score, weak, strong = score[both], weak[both], strong[both]
    w, s = float(weak.mean()), float(strong.mean())
    if len(score) < 10 or s == w:
        return math.nan, math.nan
    thresholds = qcut_thresholds(score)
    xs, ys = [], []
    for i, t in enumerate(thresholds):
        chosen = score > t if i == len(thresholds) - 1 else score >= t
        xs.append(chosen.mean() * 100)
        ys.append(float(np.where(chosen, strong, weak).mean()))
    order = np.argsort(xs, kind="stable")
    x, y = np.asarray(xs)[order], np.asarray(ys)[order]
    return _apgr(x, y, weak_quality=w, strong_quality=s), _cpt(
        x, y, weak_quality=w, strong_quality=s, recovered=0.5
    )


def selection_metrics(oof: np.ndarray, ts: TrainingSet, reference: int, weak: int) -> tuple[float, float]:
    """Out-of-fold APGR and CPT(50%) of the weak/reference pair, averaged over the training datasets
    (each counts once, as in training; a dataset without 10 rows scored by both is left out)."""
    score = gap_scores(oof, reference, weak)
    results = []
    for source in np.unique(ts.source):
        rows = ts.source == source
        apgr, cpt50 = pair_metrics(score[rows], ts.quality[rows, weak], ts.quality[rows, reference])
        if not np.isnan(apgr):
            results.append((apgr, cpt50))
    if not results:
        return math.nan, math.nan
    apgrs, cpts = zip(*results, strict=True)
    return float(np.mean(apgrs)), float(np.mean(cpts))


def _weak_index(ts: TrainingSet, reference: int) -> int:
    """The cheapest model with scores beside the reference's (the pair the selection measures)."""
    for j in range(ts.quality.shape[1]):
        if j != reference and np.any(~np.isnan(ts.quality[:, j]) & ~np.isnan(ts.quality[:, reference])):
            return j
    return 0


def out_of_fold(
    family: str,
    params: dict[str, Any],
    ts: TrainingSet,
    folds: Sequence[tuple[np.ndarray, np.ndarray]],
    seed: int,
) -> np.ndarray:
    oof = np.full(ts.quality.shape, np.nan)
    for train_rows, test_rows in folds:
        arrays = fit_family(family, params, ts, train_rows, seed=seed)
        oof[test_rows] = predict(family, params, arrays, ts, test_rows)
    return oof


def calibrate(oof: np.ndarray, ts: TrainingSet, reference: int, *, points: int = 201) -> Calibration:
    """Operating points of held-out predictions over a threshold grid (rows where the reference has a
    score, each weighted as in training, so every dataset counts once; a model without a recorded score
    on a row is never chosen there)."""
    rows = ~np.isnan(ts.quality[:, reference])
    predicted = np.where(np.isnan(ts.quality[rows]), -np.inf, oof[rows])
    quality, cost, weight = ts.quality[rows], ts.cost[rows], ts.weight[rows] / ts.weight[rows].sum()
    gaps = predicted[:, reference : reference + 1] - predicted
    finite = gaps[np.isfinite(gaps) & (np.arange(gaps.shape[1]) != reference)]
    if finite.size == 0:
        finite = np.zeros(1)
    grid = np.unique(np.r_[finite.min() - 1e-6, np.quantile(finite, np.linspace(0, 1, points)), finite.max()])
    n = len(quality)
    base = float(weight @ quality[:, reference])
    shares, costs, quals = [], [], []
    for t in grid:
        chosen = route_many(predicted, reference, float(t))
        shares.append(float(weight @ (chosen == reference)))
        costs.append(float(weight @ cost[np.arange(n), chosen] * 1000))
        quals.append(float(weight @ quality[np.arange(n), chosen]))
    q = np.asarray(quals)
    return Calibration(grid, np.asarray(shares), np.asarray(costs), q, q / base if base > 0 else q)


# -- the whole procedure -----------------------------------------------------------------------------------


def train_router(
    datasets: Sequence[EvalDataset],
    models: Sequence[FleetModel],
    *,
    reference: str,
    embedder: Embedder,
    candidates: Sequence[tuple[str, dict[str, Any]]] = CANDIDATES,
    inner_folds: int = 3,
    seed: int = 0,
    exclude_texts: frozenset[str] | set[str] = frozenset(),
    default_target: dict[str, float] | None = None,
    progress: Callable[[str], None] | None = None,
) -> Trained:
    """Select, calibrate and fit a router for ``models`` (any order; stored cheapest first)."""
    _sklearn()
    ordered, ref = ordered_fleet(models, reference)
    names = [m.name for m in ordered]
    ts = build_training_set(datasets, ordered, embedder, exclude_texts=exclude_texts)
    weak = _weak_index(ts, ref)
    check_enough_prompts(ts.texts, inner_folds)
    folds = kfold(ts.texts, inner_folds, seed=seed)
    comparison: list[dict[str, Any]] = []
    best: tuple[float, int, np.ndarray] | None = None
    for i, (family, params) in enumerate(candidates):
        started = time.perf_counter()
        oof = out_of_fold(family, params, ts, folds, seed)
        apgr, cpt50 = selection_metrics(oof, ts, ref, weak)
        seconds = time.perf_counter() - started
        comparison.append(
            {"family": family, "params": params, "apgr": apgr, "cpt_50": cpt50, "seconds": seconds}
        )
        if progress:
            progress(f"{family} {params}: out-of-fold APGR {apgr:.3f} ({seconds:.1f} s)")
        key = -math.inf if math.isnan(apgr) else apgr
        if best is None or key > best[0]:
            best = (key, i, oof)
    assert best is not None
    family, params = candidates[best[1]]
    oof = best[2]
    calibration = calibrate(oof, ts, ref)
    target = default_target or DEFAULT_TARGET
    arrays = fit_family(family, params, ts, np.arange(len(ts)), seed=seed)
    fleet = [{**m.to_json(), "dataset_models": [mapping[m.name] for mapping in ts.mapping]} for m in ordered]
    meta = {
        "feature_version": FEATURE_VERSION,
        "embedding": {"package": "wordllama==0.4.0.post1", "table": "l2_supercat_256", "dim": embedder.dim},
        "family": family,
        "params": params,
        "models": fleet,
        "reference": ref,
        "training": {
            "datasets": ts.datasets,
            "rows": len(ts),
            "data_sha256": ts.sha256,
            "inner_folds": len(folds),
            "seed": seed,
            "excluded_texts": len(exclude_texts),
        },
        "calibration": calibration.to_json(),
        "default_target": target,
        "default_threshold": threshold_for(calibration, **target),
        "metrics": {
            "selection": "out-of-fold APGR of the cheapest-vs-reference pair, inner CV on the training rows, "
            "mean over the training datasets",
            "pair": [names[weak], names[ref]],
            "candidates": comparison,
            "chosen_oof_apgr": comparison[best[1]]["apgr"],
            "chosen_oof_cpt_50": comparison[best[1]]["cpt_50"],
        },
    }
    return Trained(meta, arrays, oof, ts.texts)
