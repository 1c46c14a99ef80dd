"""The hybrid — a learned router in the engine's learned layer, its cheap answers verified by the
config's cascade — replayed on recorded answers, and its threshold calibrated as the hybrid.

A router calibrated alone (``train.calibrate``) assumes a cheap answer is kept. Behind a cascade, some
are rejected and re-asked of a stronger model, which raises quality and cost at every threshold: a
target such as "95% of always-strongest quality" is then met at a far higher threshold (fewer direct
strong calls) than the router alone needs. ``hybrid_calibration`` measures the operating points of
the whole hybrid instead: the router's *out-of-fold* predictions of the training prompts (never a
prediction of a prompt it was fitted on) stand in the learned layer, the config's ``PolicyEngine``
decides, and the cascade is replayed over each training set's recorded answers
(``evals/cascade.py``), at a grid of thresholds. Each training set counts once, as in training.

``hybrid_routing`` is the evaluated policy: the same replay on test prompts, with the router scoring
them, at the calibrated threshold, and its curve over the deciles of the router's gap scores.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..config import Config
from ..features import Features, extract_features
from ..policy.engine import PolicyEngine
from ..policy.learned import Calibration, Embedder, LearnedRouter, Scorer, make_scorer, threshold_for
from ..train import Trained, text_of
from .cascade import CascadeReplay, replay_cascade
from .fleet import EvalFleet, fleet_from_config
from .records import EvalDataset
from .replay import Matrices, matrices

GRID_POINTS = 41  # thresholds of the calibration: quantiles of the out-of-fold gaps
SWEEP_POINTS = 11  # the evaluated curve: RouteLLM's 10 bins


class _Predicted(LearnedRouter):
    """The learned layer, answering from a table of predictions keyed by the prompt's text: the
    out-of-fold predictions of the training prompts (calibration), or the test prompts' own, computed
    once for every point of the sweep. A prompt missing from the table is scored by the fitted model —
    in calibration, a prompt whose last message is not the user's has another key in training
    (``train.text_of``), so it is scored in sample: rare, and said here."""

    def __init__(
        self, by_text: dict[str, np.ndarray], scorer: Scorer, embedder: Embedder, **kwargs: Any
    ) -> None:
        super().__init__(scorer, embedder, **kwargs)
        self._by_text = by_text

    def quality(self, features: Features) -> np.ndarray:
        row = self._by_text.get(features.text)
        return super().quality(features) if row is None else row[self._columns]


def _router(trained: Trained, threshold: float, band: float, **kwargs: Any) -> dict[str, Any]:
    meta = trained.meta
    return {
        "models": [m["name"] for m in meta["models"]],
        "reference": int(meta["reference"]),
        "threshold": threshold,
        "uncertain_band": band,
        "version": f"learned-{meta['family']}",
        **kwargs,
    }


def _band(config: Config) -> float:
    return config.policy.learned.uncertain_band if config.policy.learned is not None else 0.0


def _replay(
    router: LearnedRouter,
    dataset: EvalDataset,
    fleet: EvalFleet,
    data: Matrices,
    verdicts: dict[tuple[int, int, int], bool],
) -> CascadeReplay:
    engine = PolicyEngine(fleet.config, learned=router)
    return replay_cascade(engine, dataset, fleet, data, strictness_sweep=False, verdicts=verdicts)


def _gaps(quality: np.ndarray, reference: int) -> np.ndarray:
    """Each row's predicted gap from the reference to every other model (the router's thresholds)."""
    others = [j for j in range(quality.shape[1]) if j != reference]
    return (quality[:, reference : reference + 1] - quality)[:, others]


def _edges(gaps: np.ndarray, points: int) -> np.ndarray:
    """Thresholds from "no gap is small enough" to "every gap is": ascending, ends included."""
    finite = gaps[np.isfinite(gaps)]
    if finite.size == 0:
        finite = np.zeros(1)
    inner = np.quantile(finite, np.linspace(0, 1, points))[1:-1]
    return np.unique(np.r_[finite.min() - 1e-9, inner, finite.max() + 1e-9])


def hybrid_calibration(
    trained: Trained, training_sets: Sequence[EvalDataset], config: Config, embedder: Embedder
) -> tuple[Calibration, list[str]] | None:
    """The hybrid's operating points over a threshold grid, measured on the training sets that record
    answers of every fleet model, and the names of those sets; None when no set does."""
    meta = trained.meta
    reference = int(meta["reference"])
    by_text: dict[str, np.ndarray] = {}
    for text, row in zip(trained.texts, trained.oof_quality, strict=True):
        by_text.setdefault(text, row)
    usable: list[tuple[EvalDataset, EvalFleet, Matrices]] = []
    for dataset in training_sets:
        if not all(m.upstream in dataset.models for m in config.models):
            continue
        kept = [i for i, p in enumerate(dataset.prompts) if text_of(p.messages) in by_text]
        if not kept or not any(r.response for p in dataset.prompts[:50] for r in p.results.values()):
            continue  # no recorded answers to verify: the cascade is not replayable on it
        subset = dataset.subset(kept)
        fleet = fleet_from_config(config, subset)
        usable.append((subset, fleet, matrices(subset, fleet)))
    if not usable:
        return None
    thresholds = _edges(_gaps(trained.oof_quality, reference), GRID_POINTS)
    scorer = make_scorer(meta["family"], trained.arrays, meta["params"])
    band = _band(config)
    per_set = np.zeros((len(usable), len(thresholds), 3))  # strong share, $/1k, quality
    strongest = np.zeros(len(usable))
    for d, (dataset, fleet, data) in enumerate(usable):
        rows = np.arange(len(data))
        strongest[d] = float(np.nanmean(data.scores[:, fleet.strongest]))
        verdicts: dict[tuple[int, int, int], bool] = {}  # each answer verified once, at any threshold
        for k, threshold in enumerate(thresholds):
            router = _Predicted(by_text, scorer, embedder, **_router(trained, float(threshold), band))
            replay = _replay(router, dataset, fleet, data, verdicts)
            served = replay.choice >= 0
            picked = np.where(served, replay.choice, 0)
            scores = np.where(served, np.nan_to_num(data.scores[rows, picked]), 0.0)
            costs = np.where(served, data.costs[rows, picked], 0.0) + replay.extra_cost
            per_set[d, k] = (np.mean(replay.choice == fleet.strongest), costs.mean() * 1000, scores.mean())
    share, cost, quality = per_set.mean(axis=0).T
    base = float(strongest.mean())
    calibration = Calibration(thresholds, share, cost, quality, quality / base if base > 0 else quality)
    return calibration, [d.name for d, _, _ in usable]


def hybrid_routing(
    trained: Trained,
    embedder: Embedder,
    dataset: EvalDataset,
    fleet: EvalFleet,
    data: Matrices,
    threshold: float,
    *,
    scorer: Scorer | None = None,
) -> tuple[CascadeReplay, list[tuple[np.ndarray, np.ndarray]]]:
    """The hybrid on test prompts at ``threshold``, and its curve: (choice, extra cost) at thresholds
    over the deciles of the router's gaps on these prompts, from none sent straight to the strongest to
    all (the cascade verifying what the router keeps cheap at every point)."""
    meta = trained.meta
    scorer = scorer or make_scorer(meta["family"], trained.arrays, meta["params"])
    band = _band(fleet.config)

    # Each test prompt is encoded and scored once; the replays at every threshold look it up.
    probe = LearnedRouter(scorer, embedder, **_router(trained, threshold, band))
    by_text: dict[str, np.ndarray] = {}
    ambiguous: set[str] = set()  # one text, several conversations scoring differently: score each
    rows = []
    for prompt in dataset.prompts:
        features = extract_features({"messages": list(prompt.messages)})
        row = probe.quality(features)
        rows.append(row)
        known = by_text.setdefault(features.text, row)
        if known is not row and not np.array_equal(known, row):
            ambiguous.add(features.text)
    for text in ambiguous:
        del by_text[text]
    quality = np.stack(rows)
    verdicts: dict[tuple[int, int, int], bool] = {}

    def at(value: float) -> CascadeReplay:
        router = _Predicted(by_text, scorer, embedder, **_router(trained, value, band))
        return _replay(router, dataset, fleet, data, verdicts)

    edges = _edges(_gaps(quality, int(meta["reference"])), SWEEP_POINTS)[::-1]  # none → all to the strongest
    sweep = [(r.choice, r.extra_cost) for r in map(at, edges)]
    return at(threshold), sweep


def recalibrate_for_hybrid(
    trained: Trained,
    training_sets: Sequence[EvalDataset],
    config: Config,
    target: dict[str, float],
    embedder: Embedder,
) -> bool:
    """Replace a freshly trained router's calibration and default threshold by the hybrid's (the
    config's cascade behind it), when a training set records answers to replay it on; True if so."""
    calibrated = hybrid_calibration(trained, training_sets, config, embedder)
    if calibrated is None:
        return False
    calibration, names = calibrated
    meta = trained.meta
    meta["calibration"] = calibration.to_json()
    meta["calibration_of"] = {"hybrid": "learned layer + the config's cascade", "datasets": names}
    meta["default_threshold"] = threshold_for(calibration, **target)
    return True
