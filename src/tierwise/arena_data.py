"""Recorded answers in the arena format: what the replay provider serves and ``evals/arena.py`` evaluates.

The shipped dataset, arena-bench-v1, holds 300 real Chatbot-Arena prompts with the recorded answers of 15
models, their GPT-4 judge grades (1–10) and token counts, in ``tierwise/data/arena-bench-v1/``
(Apache-2.0, see its README).

The file is gzip'd JSON Lines, one question per line::

    {"question_id": "…", "prompt": "…", "input_tokens": 42,
     "models": {"gpt-4-1106-preview": {"answer": "…", "score": 9.0, "output_tokens": 512}, …}}

``answer`` may be null (left out to keep the file small) and ``score`` may be null (the judge's verdict
could not be parsed): both mean *missing*, never zero. The same format, gzip'd or plain, can be given as a
path to serve or evaluate another dataset.
"""

from __future__ import annotations

import gzip
import math
import os
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path
from typing import Any

import orjson

from .errors import ConfigError

BUILTIN = "arena-bench-v1"
_BUILTIN_FILE = f"data/{BUILTIN}/{BUILTIN}.jsonl.gz"  # inside the tierwise package
_GZIP_MAGIC = b"\x1f\x8b"


@dataclass(frozen=True, slots=True)
class Question:
    id: str
    prompt: str
    input_tokens: int  # of the prompt text alone


@dataclass(frozen=True, slots=True)
class Result:
    """One model's recorded result on one question."""

    answer: str | None  # None: not in the file (trimmed); "" is a recorded empty answer
    score: float | None  # judge grade; None: the verdict could not be parsed
    output_tokens: int


@dataclass(frozen=True, slots=True)
class ArenaData:
    """Questions × models × (answer, score, tokens). Immutable; build it with :func:`load_arena`."""

    source: str
    questions: tuple[Question, ...] = field(repr=False)
    models: tuple[str, ...]
    results: Mapping[str, Mapping[str, Result]] = field(repr=False)  # question id → model → result
    _questions: dict[str, Question] = field(init=False, repr=False, compare=False)
    _prompts: dict[str, str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        prompts: dict[str, str] = {}
        for question in self.questions:
            # Identical prompts are indistinguishable to a replay: the first one answers.
            prompts.setdefault(question.prompt.strip(), question.id)
        object.__setattr__(self, "_questions", {q.id: q for q in self.questions})
        object.__setattr__(self, "_prompts", prompts)

    def question(self, qid: str) -> Question:
        try:
            return self._questions[qid]
        except KeyError:
            raise KeyError(f"{self.source}: no question {qid!r}") from None

    def result(self, qid: str, model: str) -> Result | None:
        return self.results.get(qid, {}).get(model)

    def answer(self, qid: str, model: str) -> str | None:
        """The model's recorded answer, or None if the dataset has none for this question."""
        result = self.result(qid, model)
        return result.answer if result else None

    def score(self, qid: str, model: str) -> float | None:
        """The judge's grade of the model's answer, or None if missing (never 0 for missing)."""
        result = self.result(qid, model)
        return result.score if result else None

    def tokens(self, qid: str, model: str) -> tuple[int, int]:
        """(input tokens of the prompt, output tokens of the model's answer)."""
        result = self.result(qid, model)
        if result is None:
            raise KeyError(f"{self.source}: no result of {model!r} for question {qid!r}")
        return self._questions[qid].input_tokens, result.output_tokens

    def by_prompt(self, text: str) -> str | None:
        """The id of the question whose prompt is ``text`` (compared after stripping whitespace)."""
        return self._prompts.get(text.strip())

    def mean_score(self, model: str, qids: Iterable[str] | None = None) -> float | None:
        """Mean grade of ``model`` over ``qids`` (default: all questions), missing grades left out."""
        ids = (q.id for q in self.questions) if qids is None else qids
        scores = [s for s in (self.score(qid, model) for qid in ids) if s is not None]
        return sum(scores) / len(scores) if scores else None


def load_arena(path: str | os.PathLike[str] | None = None) -> ArenaData:
    """Read the shipped arena-bench-v1 (``path`` None or ``"arena-bench-v1"``) or a file of the same format.

    Raises ConfigError naming the file, the line and what is wrong.
    """
    if path is None or str(path) == BUILTIN:
        return parse_arena(builtin_bytes(), source=BUILTIN)
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the dataset: {exc.strerror}") from None
    return parse_arena(raw, source=str(path))


def builtin_bytes() -> bytes:
    """The bytes of the arena-bench-v1 copy shipped inside the tierwise package."""
    resource = files("tierwise")
    for part in _BUILTIN_FILE.split("/"):
        resource = resource.joinpath(part)
    try:
        return resource.read_bytes()
    except OSError as exc:
        raise ConfigError(
            f"{BUILTIN}: the shipped dataset tierwise/{_BUILTIN_FILE} cannot be read ({exc.strerror}); "
            "reinstall tierwise"
        ) from None


def parse_arena(raw: bytes, *, source: str = "dataset") -> ArenaData:
    """Parse the bytes of a dataset file (gzip'd or plain JSON Lines)."""
    if raw.startswith(_GZIP_MAGIC):
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as exc:
            raise ConfigError(f"{source}: not a valid gzip file: {exc}") from None
    questions: list[Question] = []
    results: dict[str, dict[str, Result]] = {}
    models: dict[str, None] = {}  # ordered set
    # Split on b"\n" only: JSON strings may hold U+2028 and the like, which str.splitlines would cut at.
    for number, line in enumerate(raw.split(b"\n"), 1):
        if not line.strip():
            continue
        where = f"{source}: line {number}"
        try:
            row = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            raise ConfigError(f"{where}: not valid JSON: {exc}") from None
        question, entries = _parse_row(row, where)
        if question.id in results:
            raise ConfigError(f"{where}: question_id {question.id!r} appears twice")
        questions.append(question)
        results[question.id] = entries
        models.update(dict.fromkeys(entries))
    if not questions:
        raise ConfigError(f"{source}: the dataset holds no questions")
    return ArenaData(source=source, questions=tuple(questions), models=tuple(models), results=results)


def _parse_row(row: Any, where: str) -> tuple[Question, dict[str, Result]]:
    if not isinstance(row, dict):
        raise ConfigError(f"{where}: expected a JSON object, got {type(row).__name__}")
    qid = _required(row, "question_id", where)
    if not isinstance(qid, str) or not qid:
        raise ConfigError(f"{where}: question_id: must be a non-empty string")
    prompt = _required(row, "prompt", where)
    if not isinstance(prompt, str):
        raise ConfigError(f"{where}: prompt: must be a string")
    input_tokens = _count(_required(row, "input_tokens", where), f"{where}: input_tokens")
    models = _required(row, "models", where)
    if not isinstance(models, dict):
        raise ConfigError(f"{where}: models: must be an object mapping model names to results")
    entries = {}
    for name, entry in models.items():
        at = f"{where}: models.{name}"
        if not isinstance(entry, dict):
            raise ConfigError(f"{at}: must be an object with answer, score and output_tokens")
        answer = _required(entry, "answer", at)
        if answer is not None and not isinstance(answer, str):
            raise ConfigError(f"{at}.answer: must be a string or null")
        score = _required(entry, "score", at)
        if score is not None and (
            isinstance(score, bool) or not isinstance(score, int | float) or not math.isfinite(score)
        ):
            raise ConfigError(f"{at}.score: must be a number or null, got {score!r}")
        tokens = _count(_required(entry, "output_tokens", at), f"{at}.output_tokens")
        entries[name] = Result(
            answer=answer, score=None if score is None else float(score), output_tokens=tokens
        )
    return Question(id=qid, prompt=prompt, input_tokens=input_tokens), entries


def _required(mapping: dict[str, Any], key: str, where: str) -> Any:
    if key not in mapping:
        raise ConfigError(f"{where}: {key}: required")
    return mapping[key]


def _count(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(f"{where}: must be an integer ≥ 0, got {value!r}")
    return value
