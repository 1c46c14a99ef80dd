"""The shape every evaluation dataset loads into: prompts × models → score, tokens, cost.

Scores are on 0..1 (a correct/incorrect benchmark is 0 or 1, a 1–10 judge grade is divided by 10);
``None`` is a missing score, never a zero. Costs come from the data when it gives them, else from token
counts × the prices of a fleet, at evaluation time.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

# How the shipped datasets' tokens were counted (scripts/build_*_data.py), for ``EvalDataset.tokenizer``.
CL100K = "cl100k_base (tiktoken), plain text of prompts and recorded answers"


@dataclass(frozen=True, slots=True)
class ModelResult:
    score: float | None  # 0..1; None: missing
    input_tokens: int | None = None
    output_tokens: int | None = None
    cost_usd: float | None = None  # when the data gives the cost itself
    response: str | None = None


@dataclass(frozen=True, slots=True)
class EvalPrompt:
    id: str
    messages: tuple[dict[str, Any], ...]  # what the router sees (OpenAI chat messages)
    results: Mapping[str, ModelResult]  # dataset model name → its result on this prompt
    category: str | None = None  # MMLU subject, a task category, … (for held-out splits)


@dataclass(frozen=True, slots=True)
class EvalDataset:
    name: str
    prompts: tuple[EvalPrompt, ...]
    models: tuple[str, ...]
    content_hash: str  # sha256 of the source files' bytes, for reports
    tokenizer: str  # what counted the tokens: "cl100k_base (tiktoken)", "given by the data", …
    score_scale: str  # how scores were mapped to 0..1: "correct = 1", "judge grade 1–10 / 10"
    weak: str | None = None  # the benchmark's cheap model, where it has a canonical pair
    strong: str | None = None  # … and its strong one
    prices: Mapping[str, tuple[float, float]] = field(default_factory=dict)  # list USD per 1M in/out
    removed: int = 0  # prompts dropped as contaminated
    source: str = ""  # where the data came from (path or package copy)

    def __len__(self) -> int:
        return len(self.prompts)

    def score_matrix(self, models: tuple[str, ...]) -> list[list[float]]:
        """Scores as rows of floats per prompt, ``nan`` where missing (numpy-free; evals may wrap it)."""
        out = []
        for prompt in self.prompts:
            row = []
            for model in models:
                result = prompt.results.get(model)
                row.append(math.nan if result is None or result.score is None else result.score)
            out.append(row)
        return out

    def subset(self, indices: list[int], *, name: str | None = None) -> EvalDataset:
        """The same dataset restricted to some prompts (for folds and held-out splits)."""
        return EvalDataset(
            name=name or self.name,
            prompts=tuple(self.prompts[i] for i in indices),
            models=self.models,
            content_hash=self.content_hash,
            tokenizer=self.tokenizer,
            score_scale=self.score_scale,
            weak=self.weak,
            strong=self.strong,
            prices=self.prices,
            removed=self.removed,
            source=self.source,
        )
