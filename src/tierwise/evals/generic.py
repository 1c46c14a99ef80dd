"""Your own logs as an evaluation dataset: the generic format, read by ``load_generic`` (or
``evals.datasets.load_dataset`` given a path). Errors are :class:`~tierwise.errors.DatasetError`,
naming the file, the row and the column.

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
:mod:`tierwise.arena_data`) is recognised and read as such.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import math
import os
import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import orjson

from ..errors import DatasetError
from .arena import arena_dataset
from .records import EvalDataset, EvalPrompt, ModelResult

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
        records = jsonl_records(data, label)
        first = records[0][1] if records else {}
        if "question_id" in first and "models" in first and "prompt_id" not in first:
            return arena_dataset(raw, source=str(path), name=name, tokenizer="given by the data")
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


def jsonl_records(data: bytes, label: str | Path) -> list[tuple[str, Any]]:
    """Each JSON value of JSON Lines bytes, with where it is (``"line 3"``); blank lines are skipped."""
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
