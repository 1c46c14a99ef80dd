"""Replay a cascade over recorded answers: verify each prompt's first choice on its recorded response.

For a config with ``policy.cascade``, each prompt is decided by the gateway's own PolicyEngine. Where the
decision cascades, the first fitting model's *recorded* answer goes through the verifiers, in the order
dispatch runs them; a rejected answer is charged (its recorded cost) and the next model of the chain
answers — its recorded score is what the request got — up to ``max_escalations``, the last one
unverified, exactly as dispatch does. A cascade is a choice policy whose prompts carry an extra cost:
the rejected attempts and any judge call.

What cannot run on one recorded answer per model, and is skipped (reported under ``unavailable``):
    agreement      needs further samples of a live model
    judge          needs a live review model — unless ``oracle_judge`` (see below)
    not_truncated  recorded answers keep no finish_reason
    every verifier on a dataset without recorded answers (routellm-mmlu)

``oracle_judge=True`` models the judge, on datasets graded by a GPT-4 judge (arena-bench-v1,
routellm-mtbench), with the recorded grade of the answer itself: an **oracle-judge upper bound** — a
perfect judge that agrees with the benchmark's own grader — never a real verifier's result. Each judge
call is charged at the judge model's prices for the judge prompt's tokens (request + answer + rubric).

The curve (``Routing.sweep``) is a strictness sweep: the verifiers are switched on one at a time in run
order (the first point has none: the policy's first choices; the last is the configured cascade), and
an oracle judge's ``min_score`` steps from 2 to 10; ``tierwise eval`` closes it with always-cheapest and
always-strongest, as for every choice policy. List verifiers most precise first and the curve bends up.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..features import extract_features
from ..policy.cascade import (
    DEFAULT_RUBRIC,
    JudgeVerifier,
    Verifier,
    answers_unverified,
    build_verifiers,
    judge_messages,
)
from ..policy.engine import PolicyEngine
from .fleet import EvalFleet
from .records import EvalDataset
from .replay import Matrices

UNAVAILABLE = {
    "agreement": "needs more samples of a live model; the data records one answer per model",
    "judge": "needs a live review model (oracle_judge models an upper bound on judge-graded sets)",
    "not_truncated": "recorded answers keep no finish_reason",
}
JUDGE_OUTPUT_TOKENS = 5  # "Score: 7"


@dataclass(slots=True)
class CascadeReplay:
    """What a cascade did over a dataset."""

    choice: np.ndarray  # fleet index that answered each prompt (-1: none could)
    extra_cost: np.ndarray  # USD per prompt beyond the answering call: rejected attempts, judge calls
    first: np.ndarray  # fleet index of the first choice (-1: none)
    verified: np.ndarray  # bool: the first choice's answer went through the verifiers
    rejections: np.ndarray  # (prompts, verifiers) bool: each verifier alone rejects the first answer
    verifiers: tuple[str, ...]  # names, in run order (the columns of ``rejections``)
    sweep: list[tuple[str, np.ndarray, np.ndarray]] = field(default_factory=list)  # (label, choice, extra)
    unavailable: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0


class _Step:
    """One verifier in the replay: rejects(prompt, model) at a strictness, and what a call costs."""

    def __init__(self, verifier: Verifier, rejects: Callable[[int, int, float | None], bool]) -> None:
        self.verifier = verifier
        self.rejects = rejects
        self.judge_cost: np.ndarray | None = None  # per prompt × model, for an oracle judge


def _completion(text: str) -> dict[str, Any]:
    return {
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}]
    }


def replay_cascade(
    engine: PolicyEngine,
    dataset: EvalDataset,
    fleet: EvalFleet,
    data: Matrices,
    *,
    oracle_judge: bool = False,
    strictness_sweep: bool = True,
    verdicts: dict[tuple[int, int, int], bool] | None = None,
) -> CascadeReplay:
    """Decide every prompt, verify recorded answers where the decision cascades, and sweep strictness
    (``strictness_sweep=False``: only the configured cascade, its ``sweep`` that one point).

    ``verdicts`` keeps the offline verifiers' verdicts (verifier, prompt, model) across replays of the
    same dataset and cascade, which then verify each recorded answer once."""
    started = time.perf_counter()
    config = fleet.config
    cascade = config.policy.cascade
    if cascade is None:
        raise ValueError("replay_cascade: the config has no policy.cascade")
    verifiers = build_verifiers(cascade)
    index = {model.name: i for i, model in enumerate(fleet.models)}
    n = len(dataset.prompts)

    # Decisions: each prompt's fitting chain and whether it cascades.
    chains: list[list[int]] = []
    cascades = np.zeros(n, dtype=bool)
    for i, prompt in enumerate(dataset.prompts):
        features = extract_features({"model": "auto", "messages": prompt.messages})
        decision = engine.decide(features)
        needed = features.context_needed()
        chains.append([index[name] for name in decision.chain if fleet.models[index[name]].fits(needed)])
        cascades[i] = decision.cascade

    responses: list[list[str | None]] = [
        [p.results[name].response if name in p.results else None for name in fleet.dataset_models]
        for p in dataset.prompts
    ]
    has_answers = any(r is not None for row in responses for r in row)
    judged = "judge" in dataset.score_scale.lower()

    unavailable: dict[str, str] = {}
    steps: list[_Step] = []
    memo = {} if verdicts is None else verdicts
    for k, verifier in enumerate(verifiers):
        if not has_answers:
            unavailable[verifier.name] = f"{dataset.name} records no answers to verify"
            continue
        if verifier.kind == "judge" and oracle_judge and judged:
            assert isinstance(verifier, JudgeVerifier)
            step = _Step(verifier, _oracle_rejects(data))
            step.judge_cost = _judge_costs(dataset, fleet, verifier)
            steps.append(step)
            continue
        if not verifier.offline:
            unavailable[verifier.name] = UNAVAILABLE.get(verifier.kind, "needs a live model")
            if verifier.kind == "judge" and oracle_judge:
                unavailable[verifier.name] += f"; {dataset.name} is not graded by a judge"
            continue
        steps.append(_Step(verifier, _offline_rejects(verifier, k, dataset, responses, memo)))

    def walk(active: list[tuple[_Step, float | None]]) -> tuple[np.ndarray, np.ndarray]:
        choice = np.full(n, -1, dtype=np.int64)
        extra = np.zeros(n)
        for i in range(n):
            chain = chains[i]
            if not chain:
                continue
            if not cascades[i] or not active:
                choice[i] = chain[0]
                continue
            for position, j in enumerate(chain):  # every model passed over was a rejection
                # every model passed over was a rejection, so its position counts them
                if answers_unverified(position, len(chain), position, cascade.max_escalations):
                    choice[i] = j
                    break
                if responses[i][j] is None:  # nothing recorded to verify: accepted unverified
                    choice[i] = j
                    break
                rejected = False
                for step, strictness in active:  # run order: the first rejection decides
                    if step.judge_cost is not None:
                        extra[i] += step.judge_cost[i, j]
                    if step.rejects(i, j, strictness):
                        rejected = True
                        break
                if not rejected:
                    choice[i] = j
                    break
                extra[i] += data.costs[i, j]
        return choice, extra

    configured = [(step, _strictness(step.verifier)) for step in steps]
    sweep: list[tuple[str, np.ndarray, np.ndarray]] = []
    if not strictness_sweep:
        sweep.append(("configured", *walk(configured)))
    else:
        sweep.append(("no verifier", *walk([])))
    for k, step in enumerate(steps if strictness_sweep else ()):
        for strictness in _variants(step, oracle_judge):
            label = f"+{step.verifier.name}" + (f" ≥ {strictness:g}" if strictness is not None else "")
            sweep.append((label, *walk([*configured[:k], (step, strictness)])))
    _, choice, extra = sweep[-1]  # the last step at its configured strictness: the configured cascade

    first = np.array([chain[0] if chain else -1 for chain in chains], dtype=np.int64)
    verified = np.array(
        [
            bool(steps) and cascades[i] and len(chain) > 1 and responses[i][chain[0]] is not None
            for i, chain in enumerate(chains)
        ],
        dtype=bool,
    )
    rejections = np.zeros((n, len(steps)), dtype=bool)
    for i in np.flatnonzero(verified):
        for k, (step, strictness) in enumerate(configured):
            rejections[i, k] = step.rejects(int(i), int(first[i]), strictness)
    return CascadeReplay(
        choice=choice,
        extra_cost=extra,
        first=first,
        verified=verified,
        rejections=rejections,
        verifiers=tuple(step.verifier.name for step in steps),
        sweep=sweep,
        unavailable=unavailable,
        seconds=time.perf_counter() - started,
    )


def _strictness(verifier: Verifier) -> float | None:
    return verifier.min_score if isinstance(verifier, JudgeVerifier) else None


def _variants(step: _Step, oracle_judge: bool) -> list[float | None]:
    """The strictness levels a verifier contributes to the sweep, ending with its configured one."""
    configured = _strictness(step.verifier)
    if configured is None or not oracle_judge:
        return [configured]
    levels = sorted({float(s) for s in range(2, 11)} - {configured})
    return [*levels, configured]


def _offline_rejects(
    verifier: Verifier,
    k: int,
    dataset: EvalDataset,
    responses: list[list[str | None]],
    memo: dict[tuple[int, int, int], bool],
) -> Callable[[int, int, float | None], bool]:
    prompts = dataset.prompts

    def rejects(i: int, j: int, _strictness: float | None) -> bool:
        key = (k, i, j)
        if key not in memo:
            body = {"model": "auto", "messages": list(prompts[i].messages)}
            memo[key] = not verifier.check(body, _completion(responses[i][j] or "")).accept
        return memo[key]

    return rejects


def _oracle_rejects(data: Matrices) -> Callable[[int, int, float | None], bool]:
    """The recorded judge grade of the answer itself (1–10), against the threshold: an upper bound."""

    def rejects(i: int, j: int, min_score: float | None) -> bool:
        grade = data.scores[i, j] * 10
        return bool(np.isnan(grade) or grade < (min_score or 0))

    return rejects


def _judge_costs(dataset: EvalDataset, fleet: EvalFleet, verifier: JudgeVerifier) -> np.ndarray:
    """USD of one judge call per prompt × model: the judge's prices × (request + answer + rubric) tokens."""
    assert verifier.model is not None
    judge = fleet.config.model(verifier.model)
    empty = judge_messages({"messages": []}, _completion(""), verifier.rubric or DEFAULT_RUBRIC)
    rubric_tokens = sum(len(message["content"]) for message in empty) // 4
    costs = np.zeros((len(dataset.prompts), len(fleet.models)))
    for i, prompt in enumerate(dataset.prompts):
        for j, name in enumerate(fleet.dataset_models):
            result = prompt.results.get(name)
            if result is None:
                continue
            request = result.input_tokens
            if request is None:
                request = sum(len(str(msg.get("content", ""))) for msg in prompt.messages) // 4
            answer = result.output_tokens or len(result.response or "") // 4
            costs[i, j] = judge.cost(request + answer + rubric_tokens, JUDGE_OUTPUT_TOKENS)
    return costs
