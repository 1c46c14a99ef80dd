"""Request logs as teams have them, read one request at a time, their format detected from content.

Formats (``FORMATS`` names them; each is detected from the file's first record, never its name):

- ``openai-chat``: JSON Lines, one chat-completions request body per line (``{"model", "messages",
  …}``), optionally with the response beside it (``"response"``: a ``chat.completion`` with
  ``usage``), or ``{"request": body, "response": completion}``.
- ``openai-batch-input``: the Batch API's input file, ``{"custom_id", "method", "url", "body"}``.
- ``openai-batch-output``: its output file, ``{"custom_id", "response": {"status_code", "body":
  completion}, "error"}``. An output file holds no prompt, so it is joined by ``custom_id`` with the
  input files given beside it (read first, whatever the order given; a batch holds at most 50,000
  requests, which bounds the join's memory).
- ``litellm``: an export of LiteLLM's ``LiteLLM_SpendLogs`` table as CSV, JSON Lines or a JSON array:
  ``request_id, call_type, model, spend, prompt_tokens, completion_tokens, total_tokens, startTime,
  endTime, messages, response, proxy_server_request, metadata …``. JSON columns may be JSON text (as a
  CSV export writes them). ``messages`` and ``response`` are only filled when the proxy ran with
  ``store_prompts_in_spend_logs``; otherwise the request body is looked for in
  ``proxy_server_request``, and a row with neither is counted with no prompt. Calls other than chat
  completions (embeddings, images …) are left out and counted.
- ``tierwise-ledger``: tierwise's own ledger (``sqlite:///…``, ``postgresql://…`` or a SQLite file),
  to replay another policy or fleet over past traffic. Rows keep their prompt only with
  ``storage.capture_prompts``; without it, the logged features dict stands in (``logged_features``).
- ``csv``: a plain CSV with a header naming ``prompt`` and optionally ``model``, ``input_tokens``,
  ``output_tokens``.

Files may be gzip'd. A record that cannot be read is skipped and reported with its file and line
(``LogStats.errors``); the others are still counted.
"""

from __future__ import annotations

import asyncio
import csv
import gzip
import io
import json
import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import orjson

from ..errors import TierwiseError
from ..messages import reply_text

FORMATS: tuple[str, ...] = (
    "openai-chat",
    "openai-batch-input",
    "openai-batch-output",
    "litellm",
    "tierwise-ledger",
    "csv",
)
LITELLM_CHAT_CALLS = frozenset({"completion", "acompletion", "chat_completion", "text_completion"})
# The first errors are kept word for word; past this many only their number grows.
MAX_KEPT_ERRORS = 20
_LEDGER_PAGE = 2000
csv.field_size_limit(1 << 30)  # a CSV cell may hold a whole conversation


class LogFormatError(TierwiseError):
    """A log file cannot be read at all: unknown format, unreadable file, empty log."""


class MalformedRecord(ValueError):
    """One record of a log cannot be read; the reader skips it and goes on."""


@dataclass(slots=True)
class LoggedRequest:
    """One logged request as the estimate needs it. ``body`` is None when no prompt was logged."""

    where: str  # "file:line", for messages
    body: dict[str, Any] | None
    model: str | None = None  # the model that answered it
    input_tokens: int | None = None  # logged usage
    output_tokens: int | None = None
    spend_usd: float | None = None  # logged cost (LiteLLM's spend, the ledger's cost_usd)
    answer: str | None = None  # the logged answer's text
    logged_features: dict[str, Any] | None = None  # the ledger's features, when its prompt was not kept


@dataclass(slots=True)
class LogStats:
    """What reading the logs met: records read and skipped, formats, errors, bytes for progress."""

    records: int = 0
    skipped: int = 0
    not_chat: int = 0  # LiteLLM rows of other call types (embeddings, images …), left out
    unmatched_outputs: int = 0  # batch output lines with no input line of the same custom_id
    formats: dict[str, str] = field(default_factory=dict)  # source → format
    errors: list[str] = field(default_factory=list)
    bytes_read: int = 0

    def skip(self, message: str) -> None:
        self.skipped += 1
        if len(self.errors) < MAX_KEPT_ERRORS:
            self.errors.append(message)


# -- opening and detecting ---------------------------------------------------------------------------


def is_ledger_url(source: str) -> bool:
    return source.startswith(("sqlite:///", "postgresql://", "postgres://"))


def _open_text(path: Path) -> IO[str]:
    try:
        with path.open("rb") as raw:
            magic = raw.read(2)
        # The caller closes the wrapper, which closes the stream.
        stream: IO[bytes] = gzip.open(path, "rb") if magic == b"\x1f\x8b" else path.open("rb")  # noqa: SIM115
    except OSError as exc:
        raise LogFormatError(f"{path}: cannot read the log: {exc.strerror}") from None
    return io.TextIOWrapper(stream, encoding="utf-8", errors="replace", newline="")


def detect_format(source: str) -> str:
    """The format of a log (one of ``FORMATS``), from its content; raise LogFormatError otherwise."""
    if is_ledger_url(source):
        return "tierwise-ledger"
    path = Path(source)
    try:
        with path.open("rb") as raw:
            head = raw.read(16)
    except OSError as exc:
        raise LogFormatError(f"{source}: cannot read the log: {exc.strerror}") from None
    if head.startswith(b"SQLite format 3\x00"):
        return "tierwise-ledger"
    with _open_text(path) as text:
        try:
            start = text.read(256 * 1024)
        except (OSError, EOFError, gzip.BadGzipFile) as exc:
            raise LogFormatError(f"{source}: cannot read the log: {exc}") from None
    stripped = start.lstrip("\ufeff \t\r\n")
    if not stripped:
        raise LogFormatError(f"{source}: the log is empty")
    if stripped[0] in "{[":
        first = _first_object(stripped)
        if first is not None:
            found = _json_format(first)
            if found is not None:
                return found
        keys = ", ".join(sorted(first)[:8]) if isinstance(first, dict) else "no JSON object"
        raise LogFormatError(
            f"{source}: JSON, but not a known log format (first record's keys: {keys}); expected an "
            "OpenAI chat request per line (messages), an OpenAI batch input or output file (custom_id), "
            "or a LiteLLM spend-log export (request_id, call_type, spend)"
        )
    header = next(csv.reader(io.StringIO(stripped.split("\n", 1)[0])), [])
    columns = {c.strip().lower() for c in header}
    if {"request_id", "call_type"} <= columns or {"request_id", "spend"} <= columns:
        return "litellm"
    if "prompt" in columns:
        return "csv"
    raise LogFormatError(
        f"{source}: not a known log format (first line: {stripped[:80]!r}); expected OpenAI chat or batch "
        "JSONL, a LiteLLM spend-log export (CSV or JSON), a tierwise ledger (sqlite:///…, postgresql://…) "
        "or a CSV with a header naming prompt[,model,input_tokens,output_tokens]"
    )


def _first_object(text: str) -> Any:
    body = text[1:].lstrip() if text[0] == "[" else text
    try:
        value, _ = json.JSONDecoder().raw_decode(body)
    except json.JSONDecodeError:
        line = body.split("\n", 1)[0]
        try:
            value = orjson.loads(line)
        except orjson.JSONDecodeError:
            return None
    return value


def _json_format(record: Any) -> str | None:
    if not isinstance(record, dict):
        return None
    if "custom_id" in record and "body" in record:
        return "openai-batch-input"
    if "custom_id" in record and ("response" in record or "error" in record):
        return "openai-batch-output"
    if "request_id" in record and ("call_type" in record or "spend" in record):
        return "litellm"
    if "messages" in record or isinstance(record.get("request"), dict):
        return "openai-chat"
    return None


# -- reading ------------------------------------------------------------------------------------------


def read_logs(sources: list[str], stats: LogStats) -> Iterator[LoggedRequest]:
    """Every chat request of ``sources``, in order (batch outputs joined to their inputs).
    Malformed records are counted in ``stats`` and skipped."""
    formats = {source: detect_format(source) for source in sources}
    stats.formats.update(formats)
    outputs: dict[str, tuple[str | None, int | None, int | None, str | None]] = {}
    for source, kind in formats.items():
        if kind == "openai-batch-output":
            for where, record in _json_records(Path(source), stats):
                _batch_output(where, record, outputs, stats)
    if outputs and "openai-batch-input" not in formats.values():
        raise LogFormatError(
            "batch output files hold no prompts: give the batch input file(s) too (--logs input output)"
        )
    for source, kind in formats.items():
        if kind == "openai-batch-output":
            continue
        if kind == "tierwise-ledger":
            yield from _ledger(source, stats)
            continue
        path = Path(source)
        records = _csv_records(path, stats) if _is_csv(path, kind) else _json_records(path, stats)
        parse = _PARSERS[kind]
        for where, record in records:
            try:
                request = parse(where, record, outputs)
            except MalformedRecord as exc:
                stats.skip(f"{where}: {exc}")
                continue
            if request is None:
                stats.not_chat += 1
                continue
            stats.records += 1
            yield request
    stats.unmatched_outputs = len(outputs)


def _is_csv(path: Path, kind: str) -> bool:
    if kind == "csv":
        return True
    if kind != "litellm":
        return False
    with _open_text(path) as text:
        head = text.read(4096).lstrip("\ufeff \t\r\n")
    return not head.startswith(("{", "["))


def _lines(path: Path, stats: LogStats) -> Iterator[tuple[int, str]]:
    with _open_text(path) as text:
        for number, line in enumerate(text, 1):
            stats.bytes_read += len(line)
            yield number, line


def _json_records(path: Path, stats: LogStats) -> Iterator[tuple[str, Any]]:
    """(``file:line``, object) of a JSON Lines file or a JSON array (streamed, one element at a time)."""
    with _open_text(path) as text:
        head = text.read(4096)
    if head.lstrip("\ufeff \t\r\n").startswith("["):
        yield from _json_array(path, stats)
        return
    for number, line in _lines(path, stats):
        if not line.strip():
            continue
        try:
            yield f"{path}:{number}", orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            stats.skip(f"{path}:{number}: not JSON ({exc})")


def _json_array(path: Path, stats: LogStats) -> Iterator[tuple[str, Any]]:
    """The elements of a top-level JSON array without reading the whole file into memory."""
    decoder = json.JSONDecoder()
    with _open_text(path) as text:
        buffer = text.read(1 << 20).lstrip("\ufeff \t\r\n")[1:]  # past "["
        stats.bytes_read += len(buffer)
        index, line, done = 0, 1, False
        while True:
            while index < len(buffer) and buffer[index] in " \t\r\n,":
                line += buffer[index] == "\n"
                index += 1
            if index < len(buffer) and buffer[index] == "]":
                return
            try:
                value, end = decoder.raw_decode(buffer, index)
            except json.JSONDecodeError as exc:
                if not done:
                    more = text.read(1 << 20)
                    stats.bytes_read += len(more)
                    buffer, index, done = buffer[index:] + more, 0, not more
                    continue
                if index >= len(buffer):
                    raise LogFormatError(f"{path}: the JSON array is not closed with ']'") from None
                raise LogFormatError(
                    f"{path}:{line}: not valid JSON ({exc.msg}); a JSON array export cannot be read past it"
                ) from None
            yield f"{path}:{line}", value
            line += buffer.count("\n", index, end)
            index = end
            if index > 1 << 20:  # keep the buffer to what is not yet decoded
                buffer, index = buffer[index:], 0


def _csv_records(path: Path, stats: LogStats) -> Iterator[tuple[str, Any]]:
    with _open_text(path) as text:
        reader = csv.reader(_counted(text, stats))
        header = [c.strip().lstrip("\ufeff").strip() for c in next(reader, [])]
        for row in reader:
            where = f"{path}:{reader.line_num}"
            if not any(row):
                continue
            if len(row) != len(header):
                stats.skip(f"{where}: {len(row)} columns where the header has {len(header)}")
                continue
            yield where, dict(zip(header, row, strict=True))


def _counted(text: IO[str], stats: LogStats) -> Iterator[str]:
    for line in text:
        stats.bytes_read += len(line)
        yield line


# -- one record → LoggedRequest -----------------------------------------------------------------------


def _int(value: Any, name: str) -> int | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise MalformedRecord(f"{name}: not a number of tokens: {value!r}")
    try:
        number = int(float(value))
    except (TypeError, ValueError):
        raise MalformedRecord(f"{name}: not a number of tokens: {str(value)[:40]!r}") from None
    if number < 0:
        raise MalformedRecord(f"{name}: negative: {number}")
    return number


def _float(value: Any, name: str) -> float | None:
    if value is None or value == "":
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise MalformedRecord(f"{name}: not a number: {str(value)[:40]!r}") from None
    if number != number or number < 0:
        raise MalformedRecord(f"{name}: not a cost: {value!r}")
    return number


def _chat_body(body: Any, where: str) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise MalformedRecord(f"the request body is {type(body).__name__}, not an object")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise MalformedRecord("no messages: not a chat-completions request")
    if not all(isinstance(m, dict) for m in messages):
        raise MalformedRecord("messages: every message must be an object")
    return body


def _usage(completion: Any) -> tuple[int | None, int | None]:
    usage = completion.get("usage") if isinstance(completion, Mapping) else None
    if not isinstance(usage, Mapping):
        return None, None
    return _int(usage.get("prompt_tokens"), "usage.prompt_tokens"), _int(
        usage.get("completion_tokens"), "usage.completion_tokens"
    )


def _openai_chat(where: str, record: Any, _: Any) -> LoggedRequest:
    if not isinstance(record, dict):
        raise MalformedRecord(f"a {type(record).__name__}, not a JSON object")
    if isinstance(record.get("request"), dict):
        body, response = record["request"], record.get("response")
    else:
        response = record.get("response")
        body = {k: v for k, v in record.items() if k not in ("response", "usage")}
        if response is None and "usage" in record:
            response = {"usage": record["usage"]}
    body = _chat_body(body, where)
    input_tokens, output_tokens = _usage(response)
    model = response.get("model") if isinstance(response, Mapping) else None
    answer = reply_text(response) if isinstance(response, Mapping) and response.get("choices") else None
    return LoggedRequest(
        where,
        body,
        model=str(model or body.get("model") or "") or None,
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        answer=answer or None,
    )


def _batch_input(where: str, record: Any, outputs: dict[str, Any]) -> LoggedRequest | None:
    if not isinstance(record, dict) or "body" not in record:
        raise MalformedRecord("not a batch input line (custom_id, method, url, body)")
    url = str(record.get("url", ""))
    if url and not url.endswith("/chat/completions"):
        return None  # embeddings or responses requests of the same batch
    body = _chat_body(record["body"], where)
    model, input_tokens, output_tokens, answer = outputs.pop(str(record.get("custom_id")), (None,) * 4)
    return LoggedRequest(
        where,
        body,
        model=model or body.get("model"),
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        answer=answer,
    )


def _batch_output(where: str, record: Any, outputs: dict[str, Any], stats: LogStats) -> None:
    if not isinstance(record, dict) or "custom_id" not in record:
        stats.skip(f"{where}: not a batch output line (custom_id, response)")
        return
    response = record.get("response")
    completion = response.get("body") if isinstance(response, Mapping) else None
    if not isinstance(completion, Mapping) or (response or {}).get("status_code", 200) != 200:
        return  # a failed request of the batch: its input line is still counted, without usage
    try:
        input_tokens, output_tokens = _usage(completion)
    except MalformedRecord as exc:
        stats.skip(f"{where}: {exc}")
        return
    outputs[str(record["custom_id"])] = (
        completion.get("model"),
        input_tokens,
        output_tokens,
        reply_text(completion) or None,
    )


def _json_cell(value: Any) -> Any:
    """A JSON column of a LiteLLM export: already parsed (JSON export) or JSON text (CSV export)."""
    if isinstance(value, str):
        text = value.strip()
        if not text or text[0] not in "{[":
            return None
        try:
            return orjson.loads(text)
        except orjson.JSONDecodeError:
            raise MalformedRecord(f"a JSON column is not valid JSON: {text[:40]!r}") from None
    return value


def _litellm(where: str, record: Any, _: Any) -> LoggedRequest | None:
    if not isinstance(record, dict):
        raise MalformedRecord(f"a {type(record).__name__}, not a spend-log row")
    call_type = str(record.get("call_type") or "acompletion")
    if call_type not in LITELLM_CHAT_CALLS:
        return None
    messages = _json_cell(record.get("messages"))
    body: dict[str, Any] | None = None
    if isinstance(messages, dict) and isinstance(messages.get("messages"), list):
        messages = messages["messages"]
    if isinstance(messages, list) and messages:
        body = {"model": record.get("model"), "messages": messages}
    else:
        request = _json_cell(record.get("proxy_server_request"))
        if isinstance(request, dict) and isinstance(request.get("messages"), list) and request["messages"]:
            body = request
    if body is not None:
        body = _chat_body(body, where)
    response = _json_cell(record.get("response"))
    answer = reply_text(response) if isinstance(response, dict) else None
    return LoggedRequest(
        where,
        body,
        model=str(record.get("model") or "") or None,
        input_tokens=_int(record.get("prompt_tokens"), "prompt_tokens"),
        output_tokens=_int(record.get("completion_tokens"), "completion_tokens"),
        spend_usd=_float(record.get("spend"), "spend"),
        answer=answer or None,
    )


def _plain_csv(where: str, record: Any, _: Any) -> LoggedRequest:
    prompt = record.get("prompt") or ""
    if not prompt.strip():
        raise MalformedRecord("empty prompt")
    return LoggedRequest(
        where,
        {"model": record.get("model") or "auto", "messages": [{"role": "user", "content": prompt}]},
        model=record.get("model") or None,
        input_tokens=_int(record.get("input_tokens"), "input_tokens"),
        output_tokens=_int(record.get("output_tokens"), "output_tokens"),
    )


_PARSERS: dict[str, Callable[[str, Any, Any], LoggedRequest | None]] = {
    "openai-chat": _openai_chat,
    "openai-batch-input": _batch_input,
    "litellm": _litellm,
    "csv": _plain_csv,
}


# -- the tierwise ledger ------------------------------------------------------------------------------


def _ledger(source: str, stats: LogStats) -> Iterator[LoggedRequest]:
    """A ledger's requests, fetched a page at a time (shadow calls left out)."""
    from ..ledger import open_ledger, safe_url

    url = source if is_ledger_url(source) else f"sqlite:///{os.path.abspath(source)}"
    shown = safe_url(url)
    if url.startswith("sqlite:///") and not Path(url[len("sqlite:///") :]).exists():
        raise LogFormatError(f"{shown}: no such ledger file")
    ledger = open_ledger(url)
    loop = asyncio.new_event_loop()
    try:
        if not url.startswith("sqlite:///"):  # a SQLite file is read without starting a writer
            loop.run_until_complete(ledger.start())
        since: float | None = None
        seen_at_since: set[str] = set()
        page = _LEDGER_PAGE
        while True:
            rows = loop.run_until_complete(ledger.fetch(since=since, limit=page))
            fresh = [row for row in rows if row.id not in seen_at_since]
            if not fresh:
                if len(rows) == page:  # a page of rows all at one instant: read more of them at once
                    page *= 2
                    continue
                return
            for row in fresh:
                stats.bytes_read += 1
                if row.decision.get("layer") == "shadow" or row.status != "ok":
                    continue
                stats.records += 1
                body = {"model": row.requested_model, "messages": row.prompt} if row.prompt else None
                yield LoggedRequest(
                    f"{shown}#{row.id}",
                    body,
                    model=row.final_model,
                    input_tokens=row.input_tokens,
                    output_tokens=row.output_tokens,
                    spend_usd=row.cost_usd,
                    logged_features=None if row.prompt else row.features,
                )
            last = fresh[-1].ts
            seen_at_since = {row.id for row in rows if row.ts == last} | (
                seen_at_since if since == last else set()
            )
            since = last
            if len(rows) < page:
                return
    finally:
        if not url.startswith("sqlite:///"):
            loop.run_until_complete(ledger.close())
        loop.close()
