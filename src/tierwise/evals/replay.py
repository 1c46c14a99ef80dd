"""Replay a policy over a dataset: the gateway's own policy objects, no HTTP.

Each prompt goes through ``features.extract_features`` and ``PolicyEngine.decide`` exactly as a
request to the gateway would; the first model of the decision's chain whose context window fits is
the one that answers (dispatch's skip rule), and its recorded score and cost are what the request
got. Costs are the data's own where it gives them, else its token counts × the fleet's prices.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from ..features import extract_features
from ..policy.engine import PolicyEngine
from .fleet import EvalFleet
from .records import EvalDataset


@dataclass(frozen=True, slots=True)
class Matrices:
    """Per prompt × fleet model: the recorded score (nan if missing) and the USD cost of one call."""

    scores: np.ndarray
    costs: np.ndarray

    def __len__(self) -> int:
        return int(self.scores.shape[0])

    def take(self, indices: np.ndarray) -> Matrices:
        return Matrices(self.scores[indices], self.costs[indices])


def matrices(dataset: EvalDataset, fleet: EvalFleet) -> Matrices:
    n, m = len(dataset.prompts), len(fleet.models)
    scores = np.full((n, m), np.nan)
    costs = np.zeros((n, m))
    for i, prompt in enumerate(dataset.prompts):
        for j, (model, name) in enumerate(zip(fleet.models, fleet.dataset_models, strict=True)):
            result = prompt.results.get(name)
            if result is None:
                continue
            if result.score is not None:
                scores[i, j] = result.score
            if result.cost_usd is not None:
                costs[i, j] = result.cost_usd
            else:
                tokens_in = result.input_tokens
                if tokens_in is None:  # estimate as the gateway does: characters / 4
                    tokens_in = sum(len(str(msg.get("content", ""))) for msg in prompt.messages) // 4
                costs[i, j] = model.cost(tokens_in, result.output_tokens or 0)
    return Matrices(scores, costs)


@dataclass(slots=True)
class RulesReplay:
    """What a rules policy did over a dataset."""

    choice: np.ndarray  # fleet index per prompt; -1 where no model of the chain could fit the prompt
    rules: Counter[str] = field(default_factory=Counter)  # decisions per rule name
    seconds: float = 0.0


def replay_rules(
    engine: PolicyEngine,
    dataset: EvalDataset,
    fleet: EvalFleet,
    *,
    progress: Callable[[int], None] | None = None,
) -> RulesReplay:
    """Decide every prompt with the engine; return the model each one would be answered by."""
    started = time.perf_counter()
    index = {model.name: i for i, model in enumerate(fleet.models)}
    choice = np.empty(len(dataset.prompts), dtype=np.int64)
    rules: Counter[str] = Counter()
    for i, prompt in enumerate(dataset.prompts):
        features = extract_features({"model": "auto", "messages": prompt.messages})
        decision = engine.decide(features)
        rules[decision.rule] += 1
        needed = features.context_needed()
        choice[i] = next(
            (index[name] for name in decision.chain if fleet.models[index[name]].fits(needed)), -1
        )
        if progress is not None and i % 1000 == 999:
            progress(1000)
    if progress is not None:
        progress(len(dataset.prompts) % 1000)
    return RulesReplay(choice, rules, time.perf_counter() - started)


@dataclass(frozen=True, slots=True)
class Point:
    """One operating point: mean quality (0..1), mean USD per request, share sent to the strongest."""

    quality: float
    cost: float
    strong_share: float


def operating_point(
    choice: np.ndarray, data: Matrices, strongest: int, extra_cost: np.ndarray | None = None
) -> Point:
    """Quality and cost when each prompt is answered by ``choice[i]`` (−1: the request failed, no answer).

    Missing scores are skipped, as RouteLLM's pandas means skip them; a failed request scores 0.
    ``extra_cost`` (USD per prompt) is what a prompt paid besides its answer: a cascade's rejected
    attempts and judge calls.
    """
    rows = np.arange(len(choice))
    served = choice >= 0
    picked = np.where(served, choice, 0)
    scores = np.where(served, data.scores[rows, picked], 0.0)
    costs = np.where(served, data.costs[rows, picked], 0.0)
    if extra_cost is not None:
        costs = costs + extra_cost
    quality = float(np.nanmean(scores)) if np.any(~np.isnan(scores)) else float("nan")
    return Point(quality, float(costs.mean()), float(np.mean(choice == strongest)))


def threshold_choices(scores: np.ndarray, thresholds: np.ndarray, weak: int, strong: int) -> list[np.ndarray]:
    """RouteLLM's sweep: strong where score ≥ threshold, except ``>`` at the last threshold."""
    out = []
    last = len(thresholds) - 1
    for i, threshold in enumerate(thresholds):
        strong_mask = scores > threshold if i == last else scores >= threshold
        out.append(np.where(strong_mask, strong, weak))
    return out
