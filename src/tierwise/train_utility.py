"""``tierwise train --router utility``: labelled prompts → a utility-router artefact (quality − λ·cost,
``policy/utility.py``). ``tierwise eval --policy utility`` fits through the same functions, per fold.

1. **Rows** (:func:`build_rows`): every prompt of the training datasets with a score for some fleet
   model; its encoding (``policy.learned.encode``, as the gateway computes it), and per fleet model the
   recorded score and a cost target. A model's cost is learned from the data's token counts when every
   answer of it has them and none has ``cost_usd`` (the target is ``log1p`` of its output tokens,
   priced at the fleet's prices when routing), else from each answer's ``cost_usd`` (``log`` USD; an
   answer with tokens only is priced at the training fleet's prices). Rows count equally.
2. **Family and variant by measurement** (:func:`select`), on the training rows only: every
   candidate of ``CANDIDATES`` predicts every row out of fold (``inner_folds``-fold CV over distinct
   prompt texts, fixed seed), and is measured four ways: its predicted quality raw or recalibrated
   per model (a line fitted on the other folds' held-out predictions), choosing among the models on
   the training rows' single-model hull or among all of them. The winner has the best AIQ of its
   λ-sweep over those predictions (ties: the first measured).
3. **Calibration**: the winner's out-of-fold sweep gives, per λ, the strong-call share, $ per 1k
   requests and quality that a target is read from (``policy.learned.threshold_for``).
4. **Refit** the winner on all rows.

numpy only: no scikit-learn is needed to train this router either.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from .errors import ConfigError
from .evals import metrics
from .evals.curves import nondecreasing_convex_hull
from .evals.records import EvalDataset
from .evals.splits import kfold
from .features import extract_features
from .policy.learned import FEATURE_VERSION, Calibration, Embedder, encode, threshold_for
from .policy.utility import (
    BLEND_PARTS,
    LAMBDAS,
    CostModel,
    make_predictor,
    predict_rows,
    sweep,
    unit,
)
from .train import (
    DEFAULT_TARGET,
    FleetModel,
    Trained,
    check_enough_prompts,
    dataset_model,
    ordered_fleet,
    text_of,
)

# The families the evaluation compared from its first run; the order is the tie-break.
SINGLE_FAMILIES: tuple[tuple[str, dict[str, Any]], ...] = (
    ("ridge", {"alpha": 10.0}),
    ("ridge", {"alpha": 100.0}),
    ("knn", {"k": 15}),
    ("knn", {"k": 50}),
    ("cluster", {"k": 8}),
    ("cluster", {"k": 20}),
    ("mf", {"dim": 16}),
    ("blend", {}),
)
# The mean of every candidate above: an ensemble that singles none out, so its inner-CV figure is as
# honest as theirs. Measured last (ties go to a single family, cheaper to serve).
ENSEMBLE: tuple[str, dict[str, Any]] = ("ensemble", {"members": [[f, p] for f, p in SINGLE_FAMILIES]})
CANDIDATES: tuple[tuple[str, dict[str, Any]], ...] = (*SINGLE_FAMILIES, ENSEMBLE)


@dataclass(slots=True)
class UtilityRows:
    """Training prompts × fleet models, as the utility router learns from them."""

    texts: list[str]
    dense: np.ndarray  # n × F, ``Encoded.dense``
    input_tokens: np.ndarray  # n, as the gateway counts them (``Features.input_tokens``)
    quality: np.ndarray  # n × m, nan where not recorded
    cost: np.ndarray  # n × m, USD of the recorded answer, nan where none
    cost_target: np.ndarray  # n × m, log1p(output tokens) or log(USD), nan where none
    from_tokens: np.ndarray  # m, bool
    datasets: list[dict[str, Any]]
    sha256: str = ""  # of the rows' texts, scores and costs

    def __len__(self) -> int:
        return len(self.texts)

    def take(self, rows: np.ndarray) -> UtilityRows:
        return UtilityRows(
            [self.texts[i] for i in rows],
            self.dense[rows],
            self.input_tokens[rows],
            self.quality[rows],
            self.cost[rows],
            self.cost_target[rows],
            self.from_tokens,
            self.datasets,
            self.sha256,
        )


def encode_prompts(prompts: Sequence[Any], embedder: Embedder) -> tuple[np.ndarray, np.ndarray]:
    """Dense encodings and input-token counts of ``EvalPrompt``s, exactly as the gateway computes them."""
    dense, tokens = [], []
    for prompt in prompts:
        features = extract_features({"messages": list(prompt.messages)})
        dense.append(encode(features, embedder).dense)
        tokens.append(features.input_tokens)
    return np.stack(dense).astype(np.float64), np.asarray(tokens, dtype=np.float64)


def build_rows(
    datasets: Sequence[EvalDataset],
    models: Sequence[FleetModel],
    embedder: Embedder,
    *,
    exclude_texts: frozenset[str] | set[str] = frozenset(),
) -> UtilityRows:
    """Rows of every dataset's prompts (less those whose text is in ``exclude_texts``)."""
    kept_prompts, quality, cost, out_tokens, recorded_usd = [], [], [], [], []
    any_usd = np.zeros(len(models), dtype=bool)
    no_tokens = np.zeros(len(models), dtype=bool)
    described = []
    for dataset in datasets:
        names = [dataset_model(m, dataset) for m in models]
        kept = 0
        for prompt in dataset.prompts:
            if text_of(prompt.messages) in exclude_texts:
                continue
            row_q, row_c, row_out, row_usd = [], [], [], []
            for j, (model, name) in enumerate(zip(models, names, strict=True)):
                result = prompt.results.get(name or "")
                if result is None:
                    row_q.append(math.nan)
                    row_c.append(math.nan)
                    row_out.append(math.nan)
                    row_usd.append(math.nan)
                    continue
                row_q.append(math.nan if result.score is None else float(result.score))
                if result.cost_usd is not None:
                    any_usd[j] = True
                    usd = float(result.cost_usd)
                else:
                    tokens_in = result.input_tokens
                    if tokens_in is None:  # estimate as the gateway does: characters / 4
                        tokens_in = sum(len(str(m.get("content", ""))) for m in prompt.messages) // 4
                    usd = (
                        tokens_in * model.input_per_mtok + (result.output_tokens or 0) * model.output_per_mtok
                    ) / 1e6
                if result.output_tokens is None:
                    no_tokens[j] = True
                row_c.append(usd)
                row_usd.append(usd)
                row_out.append(math.nan if result.output_tokens is None else float(result.output_tokens))
            if all(math.isnan(q) for q in row_q):
                continue
            kept_prompts.append(prompt)
            quality.append(row_q)
            cost.append(row_c)
            out_tokens.append(row_out)
            recorded_usd.append(row_usd)
            kept += 1
        described.append({"name": dataset.name, "sha256": dataset.content_hash, "prompts": kept})
    if not kept_prompts:
        raise ConfigError("tierwise train: no training prompt has a score for any fleet model")
    q = np.asarray(quality, dtype=np.float64)
    for j, model in enumerate(models):
        if np.all(np.isnan(q[:, j])):
            raise ConfigError(
                f"tierwise train: fleet model {model.name!r} has no score in the training data "
                f"({', '.join(d.name for d in datasets)})"
            )
    from_tokens = ~(any_usd | no_tokens)
    with np.errstate(divide="ignore"):
        target = np.where(
            from_tokens,
            np.log1p(np.asarray(out_tokens, dtype=np.float64)),
            np.log(np.maximum(np.asarray(recorded_usd, dtype=np.float64), 1e-12)),
        )
    dense, input_tokens = encode_prompts(kept_prompts, embedder)
    texts = [text_of(p.messages) for p in kept_prompts]
    digest = hashlib.sha256()
    for text, row_q, row_c in zip(texts, quality, cost, strict=True):
        digest.update(orjson.dumps([text, [_rounded(v) for v in row_q], [_rounded(v) for v in row_c]]))
    return UtilityRows(
        texts=texts,
        dense=dense,
        input_tokens=input_tokens,
        quality=q,
        cost=np.asarray(cost, dtype=np.float64),
        cost_target=target,
        from_tokens=from_tokens,
        datasets=described,
        sha256=digest.hexdigest(),
    )


def _rounded(value: float) -> float | None:
    return None if math.isnan(value) else round(value, 9)


# -- fitting one family: arrays that ``policy.utility.make_predictor`` reads ------------------------------


def _filled(values: np.ndarray) -> np.ndarray:
    """Missing entries replaced by their column's mean (a model's typical score or cost)."""
    present = ~np.isnan(values)
    sums = np.where(present, values, 0.0).sum(axis=0)
    means = np.where(present.any(axis=0), sums / np.maximum(present.sum(axis=0), 1), 0.0)
    return np.where(np.isnan(values), means, values)


def _ridge(x: np.ndarray, y: np.ndarray, alpha: float) -> np.ndarray:
    xb = np.c_[x, np.ones(len(x))]
    reg = alpha * np.eye(xb.shape[1])
    reg[-1, -1] = 0.0  # the intercept is not shrunk
    return np.linalg.solve(xb.T @ xb + reg, xb.T @ y)


def _kmeans(x: np.ndarray, k: int, seed: int, rounds: int = 25) -> np.ndarray:
    """Lloyd's k-means (cosine, on unit vectors), seeded: the cluster centres."""
    rng = np.random.default_rng(seed)
    centres = x[rng.choice(len(x), size=k, replace=False)]
    for _ in range(rounds):
        labels = np.argmax(x @ centres.T, axis=1)
        for j in range(k):
            if np.any(labels == j):
                centres[j] = x[labels == j].mean(axis=0)
        centres = unit(centres)
    return centres


def _mf(x: np.ndarray, q: np.ndarray, *, dim: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    n, f = x.shape
    m = q.shape[1]
    projection = rng.normal(0, 0.1, (f, dim))
    models = rng.normal(0, 0.1, (m, dim))
    mean = np.clip(q.mean(axis=0), 1e-3, 1 - 1e-3)
    bias = np.log(mean / (1 - mean))
    rate, decay = 0.05, 1e-3
    for _ in range(300):  # full-batch gradient descent on the squared error of σ(·)
        h = x @ projection
        p = 1.0 / (1.0 + np.exp(-(h @ models.T + bias)))
        g = (p - q) * p * (1 - p) / n
        models -= rate * (g.T @ h + decay * models)
        projection -= rate * (x.T @ (g @ models) + decay * projection)
        bias -= rate * g.sum(axis=0)
    return {"projection": projection, "models": models, "bias": bias}


def fit_family(
    family: str, params: dict[str, Any], x: np.ndarray, q: np.ndarray, c: np.ndarray, *, seed: int
) -> dict[str, np.ndarray]:
    """The arrays of one family fitted on standardised features ``x`` and complete targets: quality
    ``q`` and cost target ``c`` (n × models each, no nan)."""
    if family == "ridge":
        return {"weights": _ridge(x, np.c_[q, c], float(params["alpha"]))}
    if family == "knn":
        return {"points": unit(x), "quality": q, "cost": c}
    if family == "cluster":
        points = unit(x)
        centres = _kmeans(points, min(int(params["k"]), len(x)), seed)
        labels = np.argmax(points @ centres.T, axis=1)
        prior = 5.0  # prompts' worth of the overall mean in each cluster's table
        counts = np.bincount(labels, minlength=len(centres))[:, None]
        sums_q = np.zeros((len(centres), q.shape[1]))
        sums_c = np.zeros((len(centres), c.shape[1]))
        np.add.at(sums_q, labels, q)
        np.add.at(sums_c, labels, c)
        return {
            "centres": centres,
            "quality": (sums_q + prior * q.mean(axis=0)) / (counts + prior),
            "cost": (sums_c + prior * c.mean(axis=0)) / (counts + prior),
        }
    if family == "mf":
        # Cost has no low-rank structure to share with quality: a ridge predicts it.
        arrays = _mf(x, q, dim=int(params["dim"]), seed=seed)
        arrays["cost_weights"] = _ridge(x, np.c_[q, c], 100.0)
        return arrays
    if family in ("blend", "ensemble"):
        parts = (
            BLEND_PARTS
            if family == "blend"
            else tuple((f"m{i}", f, p) for i, (f, p) in enumerate(params["members"]))
        )
        out: dict[str, np.ndarray] = {}
        for prefix, part, part_params in parts:
            for name, value in fit_family(part, part_params, x, q, c, seed=seed).items():
                out[f"{prefix}.{name}"] = value
        return out
    raise ValueError(f"unknown utility family {family!r}")


# -- standardisation, hull, curves -------------------------------------------------------------------------


def standardisation(dense: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mean = dense.mean(axis=0)
    scale = dense.std(axis=0)
    scale[scale < 1e-6] = 1.0
    return mean, scale


def on_hull(quality: np.ndarray, cost: np.ndarray) -> np.ndarray:
    """The models on the hull of the single models' mean cost and quality: a model below it is beaten
    on average by a mixture of two others, and choosing it per prompt mostly adds prediction noise."""
    q = np.nan_to_num(np.nanmean(quality, axis=0), nan=0.0)
    c = np.nan_to_num(np.nanmean(cost, axis=0), nan=0.0)
    hull = nondecreasing_convex_hull(c, q)
    points = set(zip(hull.cost.tolist(), hull.quality.tolist(), strict=True))
    return np.array([(float(a), float(b)) in points for a, b in zip(c, q, strict=True)])


def _curve(choices: list[np.ndarray], scores: np.ndarray, costs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    rows = np.arange(len(scores))
    return (
        np.array([costs[rows, ch].mean() for ch in choices]),
        np.array([scores[rows, ch].mean() for ch in choices]),
    )


def sweep_aiq(
    choices: list[np.ndarray], scores: np.ndarray, costs: np.ndarray, cheapest: int, strongest: int
) -> float:
    """AIQ of a λ-sweep's curve between always-cheapest and always-strongest (recorded scores, nan as 0)."""
    scores = np.nan_to_num(scores, nan=0.0)
    costs = np.nan_to_num(costs, nan=0.0)
    lo, hi = float(costs[:, cheapest].mean()), float(costs[:, strongest].mean())
    if not hi > lo:
        return math.nan
    cost, qual = _curve(choices, scores, costs)
    return float(
        metrics.aiq(
            np.r_[lo, cost, hi],
            np.r_[scores[:, cheapest].mean(), qual, scores[:, strongest].mean()],
            c_min=lo,
            c_max=hi,
        )
    )


def calibrate(choices: list[np.ndarray], rows: UtilityRows, reference: int) -> Calibration:
    """Per λ of ``LAMBDAS`` (the thresholds), what the sweep did on the rows: share sent to the
    reference, $ per 1k requests and quality (a model without a recorded score counts 0 there)."""
    scores = np.nan_to_num(rows.quality, nan=0.0)
    costs = np.nan_to_num(rows.cost, nan=0.0)
    cost, quality = _curve(choices, scores, costs)
    share = np.array([float(np.mean(ch == reference)) for ch in choices])
    base = float(scores[:, reference].mean())
    return Calibration(LAMBDAS.copy(), share, cost * 1000, quality, quality / base if base > 0 else quality)


@dataclass(frozen=True, slots=True)
class Fitted:
    """One family fitted on some rows, ready to predict other rows."""

    family: str
    params: dict[str, Any]
    arrays: dict[str, np.ndarray]
    mean: np.ndarray
    scale: np.ndarray
    costs: CostModel

    def predict(self, dense: np.ndarray, input_tokens: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Predicted quality and USD cost (rows × models) through ``policy.utility``, as served."""
        return predict_rows(
            make_predictor(self.family, self.arrays, self.params),
            dense,
            input_tokens,
            mean=self.mean,
            scale=self.scale,
            costs=self.costs,
        )

    def predict_targets(self, dense: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Predicted quality and cost *targets* (before pricing), for averaging predictors."""
        x = (np.asarray(dense, dtype=np.float64) - self.mean) / self.scale
        return make_predictor(self.family, self.arrays, self.params).predict(x)


def cost_model(models: Sequence[FleetModel], from_tokens: np.ndarray) -> CostModel:
    return CostModel(
        np.asarray(from_tokens, dtype=bool),
        np.array([m.input_per_mtok for m in models], dtype=np.float64),
        np.array([m.output_per_mtok for m in models], dtype=np.float64),
    )


def fit(
    family: str, params: dict[str, Any], rows: UtilityRows, models: Sequence[FleetModel], *, seed: int
) -> Fitted:
    """Fit one family on ``rows`` (standardisation included)."""
    mean, scale = standardisation(rows.dense)
    x = (rows.dense - mean) / scale
    arrays = fit_family(family, params, x, _filled(rows.quality), _filled(rows.cost_target), seed=seed)
    return Fitted(family, params, arrays, mean, scale, cost_model(models, rows.from_tokens))


def calibration_of(predicted: np.ndarray, recorded: np.ndarray) -> np.ndarray:
    """Per model, the line ``a + b·predicted`` closest to the recorded scores (least squares over rows
    with a score; a slope below 0 becomes a constant): a 2 × models array [a; b]."""
    m = predicted.shape[1]
    out = np.zeros((2, m))
    for j in range(m):
        have = ~np.isnan(recorded[:, j])
        x, y = predicted[have, j], recorded[have, j]
        if len(x) < 2 or float(np.var(x)) < 1e-12:
            out[:, j] = (float(y.mean()) if len(y) else 0.0, 0.0)
            continue
        slope = max(float(np.cov(x, y, bias=True)[0, 1] / np.var(x)), 0.0)
        out[:, j] = (float(y.mean() - slope * x.mean()), slope)
    return out


def _cross_calibrated(
    predicted: np.ndarray, recorded: np.ndarray, folds: Sequence[tuple[np.ndarray, np.ndarray]]
) -> np.ndarray:
    """Out-of-fold predictions calibrated fold by fold on the other folds' rows, so that the selection
    measures calibration on rows it was not fitted on."""
    out = np.empty_like(predicted)
    for train_rows, test_rows in folds:
        line = calibration_of(predicted[train_rows], recorded[train_rows])
        out[test_rows] = line[0] + line[1] * predicted[test_rows]
    return out


CHOICE_SETS: tuple[str, ...] = ("hull", "all")  # the models a router may choose (see ``on_hull``)


@dataclass(frozen=True, slots=True)
class Selection:
    """What the inner cross-validation chose, and what it measured."""

    candidate: int  # index into the candidates
    calibrated: bool  # predicted quality recalibrated per model (``calibration_of``)
    choice_set: str  # one of CHOICE_SETS
    results: list[dict[str, Any]]  # every candidate × variant, with its AIQ
    choices: list[np.ndarray]  # the winner's out-of-fold λ-sweep
    aiq: float  # the winner's out-of-fold AIQ
    calibration: np.ndarray  # the winner's calibration lines, fitted on all its out-of-fold rows


def select(
    rows: UtilityRows,
    models: Sequence[FleetModel],
    *,
    cheapest: int,
    reference: int,
    hull: np.ndarray,
    candidates: Sequence[tuple[str, dict[str, Any]]] = CANDIDATES,
    inner_folds: int = 3,
    seed: int = 0,
    progress: Callable[[str], None] | None = None,
) -> Selection:
    """Every candidate family predicts every row out of fold; each is measured raw and calibrated,
    choosing among the ``hull`` models or all of them, by the AIQ of its λ-sweep. The best wins (ties:
    the first measured: candidates in order, raw before calibrated, hull before all)."""
    folds = kfold(rows.texts, inner_folds, seed=seed)
    results: list[dict[str, Any]] = []
    best: tuple[float, Selection] | None = None
    n, m = rows.quality.shape
    scale = float(np.nanmean(rows.cost[:, reference]))
    sets = {"hull": hull, "all": np.ones(m, dtype=bool)}
    costs = cost_model(models, rows.from_tokens)
    measured: dict[str, tuple[np.ndarray, np.ndarray]] = {}  # candidate → out-of-fold (quality, target)
    for i, (family, params) in enumerate(candidates):
        started = time.perf_counter()
        members = [repr(list(member)) for member in params.get("members", ())] if family == "ensemble" else []
        if members and all(key in measured for key in members):
            # The members' out-of-fold predictions are already there: their mean is the ensemble's.
            quality = np.mean([measured[key][0] for key in members], axis=0)
            target = np.mean([measured[key][1] for key in members], axis=0)
        else:
            quality, target = np.empty((n, m)), np.empty((n, m))
            for train_rows, test_rows in folds:
                fitted = fit(family, params, rows.take(train_rows), models, seed=seed)
                quality[test_rows], target[test_rows] = fitted.predict_targets(rows.dense[test_rows])
        measured[repr([family, params])] = (quality, target)
        cost = costs.usd(target, rows.input_tokens)
        variants = {False: quality, True: _cross_calibrated(quality, rows.quality, folds)}
        seconds = time.perf_counter() - started
        for calibrated, predicted in variants.items():
            for choice_set in CHOICE_SETS:
                choices = sweep(predicted, cost, scale, sets[choice_set])
                aiq = sweep_aiq(choices, rows.quality, rows.cost, cheapest, reference)
                results.append(
                    {
                        "family": family,
                        "params": params,
                        "calibrated": calibrated,
                        "choice_set": choice_set,
                        "aiq": aiq,
                        "seconds": round(seconds, 2),
                    }
                )
                if progress:
                    label = f"ensemble of {len(members)}" if members else f"{family} {params}"
                    progress(
                        f"{label}{' calibrated' if calibrated else ''}, {choice_set} models: "
                        f"out-of-fold AIQ {aiq:.3f}"
                    )
                key = -math.inf if math.isnan(aiq) else aiq
                if best is None or key > best[0]:
                    line = calibration_of(quality, rows.quality) if calibrated else _identity(m)
                    best = (key, Selection(i, calibrated, choice_set, results, choices, aiq, line))
    assert best is not None
    return best[1]


def _identity(m: int) -> np.ndarray:
    return np.r_[np.zeros((1, m)), np.ones((1, m))]


def train_utility_router(
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
    """Select, calibrate and fit a utility router for ``models`` (stored cheapest first)."""
    ordered, ref = ordered_fleet(models, reference)
    rows = build_rows(datasets, ordered, embedder, exclude_texts=exclude_texts)
    check_enough_prompts(rows.texts, inner_folds)
    cheapest = 0  # ordered by price
    hull = on_hull(rows.quality, rows.cost)
    hull[ref] = True  # the reference is always a choice: the quality end of the sweep
    chosen = select(
        rows,
        ordered,
        cheapest=cheapest,
        reference=ref,
        hull=hull,
        candidates=candidates,
        inner_folds=inner_folds,
        seed=seed,
        progress=progress,
    )
    family, params = candidates[chosen.candidate]
    allowed = hull if chosen.choice_set == "hull" else np.ones(len(ordered), dtype=bool)
    calibration = calibrate(chosen.choices, rows, ref)
    target = dict(default_target or DEFAULT_TARGET)
    fitted = fit(family, params, rows, ordered, seed=seed)
    arrays = {"mean": fitted.mean, "scale": fitted.scale, **fitted.arrays}
    if chosen.calibrated:
        arrays["quality_calibration"] = chosen.calibration
    meta = {
        "router": "utility",
        "feature_version": FEATURE_VERSION,
        "embedding": {"package": "wordllama==0.4.0.post1", "table": "l2_supercat_256", "dim": embedder.dim},
        "family": family,
        "params": params,
        "calibrated": chosen.calibrated,
        "choice_set": chosen.choice_set,
        "models": [
            {
                **m.to_json(),
                "cost_from": "tokens" if rows.from_tokens[j] else "cost_usd",
                "allowed": bool(allowed[j]),
            }
            for j, m in enumerate(ordered)
        ],
        "reference": ref,
        "cost_scale_usd": float(np.nanmean(rows.cost[:, ref])),
        "training": {
            "datasets": rows.datasets,
            "rows": len(rows),
            "data_sha256": rows.sha256,
            "inner_folds": inner_folds,
            "seed": seed,
            "excluded_texts": len(exclude_texts),
        },
        "calibration": calibration.to_json(),
        "default_target": target,
        "default_cost_weight": threshold_for(calibration, **target),
        "metrics": {
            "selection": "AIQ of the λ-sweep over out-of-fold predictions, inner CV on the training rows",
            "candidates": chosen.results,
            "chosen_oof_aiq": chosen.aiq,
        },
    }
    return Trained(meta, arrays)


def fitted_of(trained: Trained) -> Fitted:
    """A trained utility router's predictor at its training prices (columns: ``meta['models']``)."""
    meta = trained.meta
    models = [
        FleetModel(m["name"], m["price"]["input_per_mtok"], m["price"]["output_per_mtok"], m["upstream"])
        for m in meta["models"]
    ]
    from_tokens = np.array([m["cost_from"] == "tokens" for m in meta["models"]])
    arrays = {k: v for k, v in trained.arrays.items() if k not in ("mean", "scale")}
    return Fitted(
        meta["family"],
        meta["params"],
        arrays,
        trained.arrays["mean"],
        trained.arrays["scale"],
        cost_model(models, from_tokens),
    )
