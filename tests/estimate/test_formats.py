"""Each log format, from samples written the way each tool writes them, and what a bad record does."""

from __future__ import annotations

import asyncio
import csv
import gzip
import json
from pathlib import Path
from typing import Any

import orjson
import pytest

from tierwise.estimate.formats import LogFormatError, LogStats, detect_format, read_logs
from tierwise.ledger import Attempt, LedgerRow, open_ledger

SUMMARY = [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "Summarize this thread in 3 bullets: the deploy failed twice, then passed."},
]
CODE = [{"role": "user", "content": "Write a python function that parses ISO dates and handle bad input."}]


def completion(model: str, text: str, prompt_tokens: int, completion_tokens: int) -> dict[str, Any]:
    """A chat.completion as the openai SDK's ``model_dump()`` writes it."""
    return {
        "id": "chatcmpl-AbC123",
        "choices": [
            {
                "finish_reason": "stop",
                "index": 0,
                "logprobs": None,
                "message": {
                    "content": text,
                    "refusal": None,
                    "role": "assistant",
                    "annotations": [],
                    "audio": None,
                    "function_call": None,
                    "tool_calls": None,
                },
            }
        ],
        "created": 1735689600,
        "model": model,
        "object": "chat.completion",
        "service_tier": "default",
        "system_fingerprint": "fp_50cad350e4",
        "usage": {
            "completion_tokens": completion_tokens,
            "prompt_tokens": prompt_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
            "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0},
            "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        },
    }


def jsonl(path: Path, records: list[Any]) -> Path:
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in records))
    return path


def read(*paths: Path | str) -> tuple[list[Any], LogStats]:
    stats = LogStats()
    return list(read_logs([str(p) for p in paths], stats)), stats


def test_openai_chat_jsonl_with_and_without_responses(tmp_path: Path) -> None:
    path = jsonl(
        tmp_path / "requests.jsonl",
        [
            {
                "model": "gpt-4o",
                "messages": SUMMARY,
                "temperature": 0.2,
                "response": completion("gpt-4o-2024-08-06", "- failed\n- failed\n- passed", 41, 12),
            },
            {
                "request": {"model": "gpt-4o", "messages": CODE},
                "response": completion("gpt-4o-2024-08-06", "def parse(s): ...", 20, 300),
            },
            {"model": "gpt-4o", "messages": CODE, "usage": {"prompt_tokens": 20, "completion_tokens": 7}},
            {"model": "gpt-4o", "messages": SUMMARY},
        ],
    )
    assert detect_format(str(path)) == "openai-chat"
    requests, stats = read(path)
    assert stats.records == 4 and stats.skipped == 0
    first, second, third, fourth = requests
    assert (first.model, first.input_tokens, first.output_tokens) == ("gpt-4o-2024-08-06", 41, 12)
    assert first.answer == "- failed\n- failed\n- passed"
    assert first.body["messages"] == SUMMARY and "response" not in first.body
    assert second.body["messages"] == CODE and second.output_tokens == 300
    assert (third.input_tokens, third.output_tokens, third.model) == (20, 7, "gpt-4o")
    assert fourth.output_tokens is None and fourth.answer is None


def test_gzipped_log_is_read(tmp_path: Path) -> None:
    path = tmp_path / "requests.jsonl.gz"
    path.write_bytes(gzip.compress(orjson.dumps({"model": "gpt-4o", "messages": CODE}) + b"\n"))
    assert detect_format(str(path)) == "openai-chat"
    assert read(path)[1].records == 1


def test_openai_batch_input_joined_with_its_output(tmp_path: Path) -> None:
    inputs = jsonl(
        tmp_path / "batch_input.jsonl",
        [
            {
                "custom_id": "request-1",
                "method": "POST",
                "url": "/v1/chat/completions",
                "body": {"model": "gpt-4o", "messages": SUMMARY, "max_tokens": 1000},
            },
            {
                "custom_id": "request-2",
                "method": "POST",
                "url": "/v1/chat/completions",
                "body": {"model": "gpt-4o", "messages": CODE, "max_tokens": 1000},
            },
            {
                "custom_id": "request-3",
                "method": "POST",
                "url": "/v1/embeddings",
                "body": {"model": "text-embedding-3-small", "input": "hello"},
            },
        ],
    )
    outputs = jsonl(
        tmp_path / "batch_output.jsonl",
        [
            {
                "id": "batch_req_123",
                "custom_id": "request-2",
                "response": {
                    "status_code": 200,
                    "request_id": "req_123",
                    "body": completion("gpt-4o-2024-08-06", "def parse(s): ...", 22, 250),
                },
                "error": None,
            },
            {
                "id": "batch_req_456",
                "custom_id": "request-1",
                "response": {
                    "status_code": 200,
                    "request_id": "req_789",
                    "body": completion("gpt-4o-2024-08-06", "- a\n- b\n- c", 45, 9),
                },
                "error": None,
            },
        ],
    )
    assert detect_format(str(inputs)) == "openai-batch-input"
    assert detect_format(str(outputs)) == "openai-batch-output"
    requests, stats = read(outputs, inputs)  # any order: outputs are read first
    assert stats.records == 2 and stats.not_chat == 1 and stats.unmatched_outputs == 0
    by_text = {r.body["messages"][-1]["content"][:5]: r for r in requests}
    assert (by_text["Summa"].input_tokens, by_text["Summa"].output_tokens) == (45, 9)
    assert (by_text["Write"].input_tokens, by_text["Write"].output_tokens) == (22, 250)
    assert by_text["Write"].answer == "def parse(s): ..."
    with pytest.raises(LogFormatError, match="batch input"):
        read(outputs)


# The columns of LiteLLM's LiteLLM_SpendLogs table (schema.prisma), in table order, as
# `\copy "LiteLLM_SpendLogs" TO 'spend.csv' CSV HEADER` exports them.
LITELLM_COLUMNS = [
    "request_id", "call_type", "api_key", "spend", "total_tokens", "prompt_tokens", "completion_tokens",
    "startTime", "endTime", "completionStartTime", "model", "model_id", "model_group",
    "custom_llm_provider", "api_base", "user", "metadata", "cache_hit", "cache_key", "request_tags",
    "team_id", "end_user", "requester_ip_address", "messages", "response", "session_id", "status",
    "proxy_server_request",
]  # fmt: skip


def litellm_row(i: int, *, call_type: str = "acompletion", stored: bool = True, **values: Any) -> dict:
    messages = SUMMARY if i % 2 else CODE
    row = {
        "request_id": f"chatcmpl-{i:04d}",
        "call_type": call_type,
        "api_key": "88dc28d0f030c55ed4ab77ed8faf098196cb1c05df778539800c9f1243fe6b4b",
        "spend": 0.00231,
        "total_tokens": 320,
        "prompt_tokens": 20,
        "completion_tokens": 300,
        "startTime": "2025-06-01 10:00:00.123",
        "endTime": "2025-06-01 10:00:03.456",
        "completionStartTime": "2025-06-01 10:00:00.800",
        "model": "gpt-4o",
        "model_id": "a1b2c3",
        "model_group": "gpt-4o",
        "custom_llm_provider": "openai",
        "api_base": "https://api.openai.com/v1",
        "user": "",
        "metadata": {"user_api_key_alias": "team-a", "status": "success"},
        "cache_hit": "False",
        "cache_key": "Cache OFF",
        "request_tags": [],
        "team_id": "",
        "end_user": "",
        "requester_ip_address": "",
        "messages": messages if stored else {},
        "response": completion("gpt-4o", "ok", 20, 300) if stored else {},
        "session_id": "7f9c",
        "status": "success",
        "proxy_server_request": {"model": "gpt-4o", "messages": messages} if not stored else {},
    }
    row.update(values)
    return row


def write_litellm_csv(path: Path, rows: list[dict]) -> Path:
    with path.open("w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(LITELLM_COLUMNS)
        for row in rows:
            writer.writerow(
                [json.dumps(row[c]) if isinstance(row[c], dict | list) else row[c] for c in LITELLM_COLUMNS]
            )
    return path


def test_litellm_spend_logs_csv(tmp_path: Path) -> None:
    path = write_litellm_csv(
        tmp_path / "spend.csv",
        [
            litellm_row(1),
            # without store_prompts_in_spend_logs: the body is in proxy_server_request
            litellm_row(2, stored=False),
            litellm_row(3, stored=False, proxy_server_request={}),  # no prompt anywhere
            litellm_row(4, call_type="aembedding"),
        ],
    )
    assert detect_format(str(path)) == "litellm"
    requests, stats = read(path)
    assert stats.records == 3 and stats.not_chat == 1 and stats.skipped == 0
    stored, from_proxy, bare = requests
    assert stored.body["messages"] == SUMMARY and stored.answer == "ok"
    assert (stored.spend_usd, stored.input_tokens, stored.output_tokens) == (0.00231, 20, 300)
    assert from_proxy.body["messages"] == CODE
    assert bare.body is None and bare.spend_usd == 0.00231


def test_litellm_spend_logs_json_array_and_jsonl(tmp_path: Path) -> None:
    rows = [litellm_row(i) for i in range(1, 6)]
    array = tmp_path / "spend.json"
    array.write_text(json.dumps(rows, indent=2))  # a pretty-printed API/UI export
    lines = jsonl(tmp_path / "spend.jsonl", rows)
    for path in (array, lines):
        assert detect_format(str(path)) == "litellm"
        requests, stats = read(path)
        assert stats.records == 5 and [r.where.rsplit(":", 1)[0] for r in requests] == [str(path)] * 5
        assert requests[0].body["messages"] == SUMMARY and requests[1].body["messages"] == CODE


def test_plain_csv(tmp_path: Path) -> None:
    path = tmp_path / "prompts.csv"
    path.write_text(
        "prompt,model,input_tokens,output_tokens\n"
        '"Classify the sentiment: ""great product""",gpt-4o,12,3\n'
        "Translate hello to French,,,\n"
    )
    assert detect_format(str(path)) == "csv"
    (first, second), _ = read(path)
    assert (first.model, first.input_tokens, first.output_tokens) == ("gpt-4o", 12, 3)
    assert first.body["messages"][0]["content"] == 'Classify the sentiment: "great product"'
    assert second.model is None and second.output_tokens is None


def ledger_row(i: int, *, prompt: list | None) -> LedgerRow:
    return LedgerRow(
        id=f"req_{i}",
        ts=1000.0 + i // 3,  # several rows share an instant: paging must neither skip nor repeat them
        requested_model="auto",
        stream=False,
        features={"task": "code", "input_tokens": 30, "has_code": True, "turns": 1},
        decision={"chain": ["exec-1"], "tier": "execution", "layer": "rules"},
        policy_version="v1",
        status="ok",
        http_status=200,
        final_model="exec-1",
        tier="execution",
        input_tokens=30,
        output_tokens=200,
        cost_usd=0.00309,
        attempts=[Attempt("exec-1", "strong", "ok", input_tokens=30, output_tokens=200, cost_usd=0.00309)],
        prompt=prompt,
    )


def test_tierwise_ledger_with_and_without_captured_prompts(tmp_path: Path, monkeypatch: Any) -> None:
    db = tmp_path / "ledger.db"

    async def write() -> None:
        ledger = open_ledger(f"sqlite:///{db}")
        await ledger.start()
        for i in range(7):
            await ledger.record(ledger_row(i, prompt=CODE if i % 2 else None))
        shadow = ledger_row(99, prompt=CODE)
        shadow.decision = {"layer": "shadow", "of": "req_1"}
        await ledger.record(shadow)
        await ledger.close()

    asyncio.run(write())
    monkeypatch.setattr("tierwise.estimate.formats._LEDGER_PAGE", 2)
    for source in (f"sqlite:///{db}", str(db)):
        assert detect_format(source) == "tierwise-ledger"
        requests, stats = read(source)
        assert stats.records == 7, "shadow calls are not requests"
        assert sorted(r.where.rsplit("#", 1)[1] for r in requests) == [f"req_{i}" for i in range(7)]
        captured = [r for r in requests if r.body is not None]
        assert len(captured) == 3 and captured[0].body["messages"] == CODE
        bare = next(r for r in requests if r.body is None)
        assert bare.logged_features["task"] == "code" and bare.spend_usd == pytest.approx(0.00309)
    with pytest.raises(LogFormatError, match="no such ledger"):
        read(f"sqlite:///{tmp_path / 'missing.db'}")


def test_malformed_records_are_skipped_with_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "requests.jsonl"
    path.write_text(
        json.dumps({"model": "gpt-4o", "messages": CODE})
        + "\n{not json\n"
        + json.dumps({"model": "gpt-4o", "prompt": "a completions request"})
        + "\n\n"
        + json.dumps({"model": "gpt-4o", "messages": SUMMARY, "usage": {"prompt_tokens": "many"}})
        + "\n"
        + json.dumps({"model": "gpt-4o", "messages": SUMMARY})
        + "\n"
    )
    _, stats = read(path)
    assert stats.records == 2 and stats.skipped == 3
    assert stats.errors[0].startswith(f"{path}:2: not JSON")
    assert stats.errors[1] == f"{path}:3: no messages: not a chat-completions request"
    assert stats.errors[2].startswith(f"{path}:5: usage.prompt_tokens: not a number of tokens")


def test_unknown_format_names_the_file_and_the_formats(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("just some notes\nnothing to see\n")
    with pytest.raises(LogFormatError, match=r"notes\.txt: not a known log format.*LiteLLM"):
        detect_format(str(path))
    other = jsonl(tmp_path / "events.jsonl", [{"event": "click", "ts": 1}])
    with pytest.raises(LogFormatError, match=r"events\.jsonl: JSON, but not a known log format.*event, ts"):
        detect_format(str(other))
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    with pytest.raises(LogFormatError, match="empty"):
        detect_format(str(empty))
