"""arena-bench-v1 as an evaluation dataset: the arena format (:mod:`tierwise.arena_data`) read into an
:class:`EvalDataset`, grades 1–10 divided by 10, with list prices for its models.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from ..arena_data import BUILTIN, ArenaData, builtin_bytes, parse_arena
from ..errors import ConfigError, DatasetError
from ..features import extract_features
from .records import CL100K, EvalDataset, EvalPrompt, ModelResult

# Public list prices per 1M tokens (input, output) when the data was made (shared/data/README.md).
ARENA_PRICES: dict[str, tuple[float, float]] = {
    "gpt-4-1106-preview": (10.0, 30.0),
    "gpt-3.5-turbo-1106": (1.0, 2.0),
    "claude-2.1": (8.0, 24.0),
    "claude-instant-1": (0.80, 2.40),
    "Mixtral-8x7B-Instruct-v0.1": (0.60, 0.60),
    "Llama-2-70b-chat": (0.90, 0.90),
    "Mistral-7B-Instruct-v0.1": (0.20, 0.20),
    "Starling-LM-7B-alpha": (0.20, 0.20),
    "openchat_3.5": (0.20, 0.20),  # "other 7B open models ≈ $0.20/$0.20"
}


def load_arena_bench(*, data_dir: str | os.PathLike[str] | None = None) -> EvalDataset:
    """arena-bench-v1 as read by :mod:`tierwise.arena_data`, scores = grade / 10.

    The source files all 300 prompts under one category, so ``category`` is tierwise's own inferred task
    type (``tierwise.features.extract_features(...).task``: qa, code, math, …), which gives held-out splits a
    real distribution shift to test. The pair is Mixtral-8x7B (weak) and GPT-4-1106 (strong), as in RouteLLM.
    With ``data_dir``, the compact file ``data_dir/arena-bench-v1/arena-bench-v1.jsonl.gz`` is read: the
    original arena-hard-auto files become one with ``scripts/build_arena_data.py``.
    """
    if data_dir is None:
        try:
            raw = builtin_bytes()
        except ConfigError as exc:
            raise DatasetError(str(exc)) from None
        return arena_dataset(raw, source=BUILTIN, name=BUILTIN, tokenizer=CL100K)
    path = Path(data_dir) / BUILTIN / f"{BUILTIN}.jsonl.gz"
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DatasetError(
            f"{path}: cannot read ({exc.strerror}): {BUILTIN} is read from its compact file; make it from "
            "the arena-hard-auto files with scripts/build_arena_data.py --source DIR --out DIR, or leave out "
            "data_dir to read the shipped copy"
        ) from None
    return arena_dataset(raw, source=str(path), name=BUILTIN, tokenizer=CL100K)


def arena_dataset(raw: bytes, *, source: str, name: str, tokenizer: str) -> EvalDataset:
    """The bytes of a file in the arena format as an evaluation dataset."""
    try:
        data: ArenaData = parse_arena(raw, source=source)
    except ConfigError as exc:
        raise DatasetError(str(exc)) from None
    prompts = []
    for question in data.questions:
        messages = ({"role": "user", "content": question.prompt},)
        results = {
            model: ModelResult(
                score=None if result.score is None else result.score / 10,
                input_tokens=question.input_tokens,
                output_tokens=result.output_tokens,
                response=result.answer,
            )
            for model, result in data.results[question.id].items()
        }
        category = extract_features({"messages": list(messages)}).task
        prompts.append(EvalPrompt(id=question.id, messages=messages, results=results, category=category))
    weak, strong = "Mixtral-8x7B-Instruct-v0.1", "gpt-4-1106-preview"
    return EvalDataset(
        name=name,
        prompts=tuple(prompts),
        models=data.models,
        content_hash=hashlib.sha256(raw).hexdigest(),
        tokenizer=tokenizer,
        score_scale="GPT-4 judge grade 1–10 / 10",
        weak=weak if weak in data.models else None,
        strong=strong if strong in data.models else None,
        prices={model: price for model, price in ARENA_PRICES.items() if model in data.models},
        source=source,
    )
