"""The verifier-gated cascade end to end: the official openai SDK against the gateway on fake upstreams.

The fleet (tests/harness.py): draft-1 on ``cheap`` (OpenAI wire), review-1 on ``backup`` (OpenAI wire,
the judge here), exec-1 on ``strong`` (Anthropic wire). Every request starts at draft-1 and may
escalate to exec-1.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from tests.fakes.upstream import FakeUpstream
from tests.harness import Stack, start_stack

ASK = [{"role": "user", "content": "Give me the user record for Ada as JSON."}]
RECORD_SCHEMA = {
    "type": "json_schema",
    "json_schema": {
        "name": "user",
        "strict": True,
        "schema": {
            "type": "object",
            "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
            "required": ["name", "age"],
            "additionalProperties": False,
        },
    },
}
VALID = '{"name": "Ada", "age": 36}'


def cascade_policy(*verifiers: dict[str, Any], max_escalations: int = 1) -> dict[str, Any]:
    return {
        "rules": [],
        "default": {"tier": "draft", "fallbacks": ["execution"]},
        "retry": {"attempts": 2, "backoff_s": 0.01, "max_retry_after_s": 2},
        "cooldown": {"failures": 3, "seconds": 30},
        "cascade": {"verifiers": list(verifiers), "tiers": ["draft"], "max_escalations": max_escalations},
    }


def _stack(tmp_path: Path, *verifiers: dict[str, Any]) -> Stack:
    return start_stack(tmp_path, policy=cascade_policy(*verifiers))


@pytest.fixture
def schema_stack(tmp_path: Path) -> Iterator[Stack]:
    s = _stack(tmp_path, {"kind": "json_schema"}, {"kind": "no_refusal"}, {"kind": "not_truncated"})
    yield s
    s.close()


@pytest.fixture
def judge_stack(tmp_path: Path) -> Iterator[Stack]:
    s = _stack(tmp_path, {"kind": "judge", "model": "review-1", "min_score": 7, "timeout_s": 0.5})
    yield s
    s.close()


def _client(stack: Stack) -> openai.OpenAI:
    return openai.OpenAI(base_url=stack.base_url, api_key="k", max_retries=0, timeout=20)


def test_invalid_json_escalates_to_the_strong_model(schema_stack: Stack) -> None:
    schema_stack.upstreams["cheap"].reply = "Sure! Here is the record: name Ada, age 36"
    schema_stack.upstreams["strong"].reply = VALID
    with _client(schema_stack) as client:
        raw = client.chat.completions.with_raw_response.create(
            model="auto", messages=ASK, response_format=RECORD_SCHEMA
        )
    assert json.loads(raw.parse().choices[0].message.content) == {"name": "Ada", "age": 36}
    assert raw.headers["x-tierwise-model"] == "exec-1"
    assert raw.headers["x-tierwise-tier"] == "execution"
    row = schema_stack.rows()[-1]
    assert row.decision["cascade"] is True
    assert [(a.model, a.status) for a in row.attempts] == [("draft-1", "rejected"), ("exec-1", "ok")]
    rejected = row.attempts[0]
    assert rejected.cost_usd > 0 and rejected.output_tokens > 0  # the failed cheap attempt is charged
    assert rejected.error is not None and rejected.error.startswith("cascade: json_schema: not valid JSON")
    assert row.final_model == "exec-1" and row.status == "ok"
    assert row.cost_usd == pytest.approx(sum(a.cost_usd for a in row.attempts))
    assert float(raw.headers["x-tierwise-cost-usd"]) == pytest.approx(row.cost_usd, abs=1e-9)


def test_schema_violation_names_the_field(schema_stack: Stack) -> None:
    schema_stack.upstreams["cheap"].reply = '{"name": "Ada", "age": "thirty-six"}'
    with _client(schema_stack) as client:
        client.chat.completions.create(model="auto", messages=ASK, response_format=RECORD_SCHEMA)
    error = schema_stack.rows()[-1].attempts[0].error
    assert error == "cascade: json_schema: does not match the schema: $.age: expected integer, got string"


def test_an_accepted_cheap_answer_costs_one_call(schema_stack: Stack) -> None:
    schema_stack.upstreams["cheap"].reply = VALID
    with _client(schema_stack) as client:
        raw = client.chat.completions.with_raw_response.create(
            model="auto", messages=ASK, response_format=RECORD_SCHEMA
        )
    assert raw.headers["x-tierwise-model"] == "draft-1"
    assert raw.parse().choices[0].message.content == VALID
    row = schema_stack.rows()[-1]
    assert [(a.model, a.status) for a in row.attempts] == [("draft-1", "ok")]
    assert schema_stack.upstreams["strong"].requests == []
    assert row.cost_usd == pytest.approx(row.attempts[0].cost_usd)


def test_truncated_cheap_answer_escalates(schema_stack: Stack) -> None:
    schema_stack.upstreams["cheap"].reply = "one two three four five six"
    with _client(schema_stack) as client:
        raw = client.chat.completions.with_raw_response.create(model="auto", messages=ASK, max_tokens=3)
    assert raw.headers["x-tierwise-model"] == "exec-1"
    assert "finish_reason: length" in (schema_stack.rows()[-1].attempts[0].error or "")


def test_refusal_escalates(schema_stack: Stack) -> None:
    schema_stack.upstreams["cheap"].reply = "I'm sorry, but I can't help with that request."
    with _client(schema_stack) as client:
        raw = client.chat.completions.with_raw_response.create(model="auto", messages=ASK)
    assert raw.headers["x-tierwise-model"] == "exec-1"
    assert raw.parse().choices[0].message.content == "strong answer here"


def test_rejected_with_nowhere_to_escalate_is_a_502_naming_the_verifier(schema_stack: Stack) -> None:
    schema_stack.upstreams["cheap"].reply = "not json"
    schema_stack.upstreams["strong"].fault("500")
    with _client(schema_stack) as client, pytest.raises(openai.APIStatusError) as caught:
        client.chat.completions.create(model="auto", messages=ASK, response_format=RECORD_SCHEMA)
    assert caught.value.status_code == 502
    assert "draft-1: Rejected: json_schema: not valid JSON" in caught.value.message
    row = schema_stack.rows()[-1]
    assert row.attempts[0].status == "rejected" and row.cost_usd > 0


def test_cheap_outage_falls_back_without_counting_as_an_escalation(tmp_path: Path) -> None:
    stack = start_stack(
        tmp_path,
        policy={
            **cascade_policy({"kind": "non_empty"}),
            "default": {"tier": "draft", "fallbacks": ["review", "execution"]},
        },
    )
    try:
        stack.upstreams["cheap"].fault("500")
        stack.upstreams["backup"].reply = "   "  # empty: rejected, and one escalation is still allowed
        with _client(stack) as client:
            raw = client.chat.completions.with_raw_response.create(model="auto", messages=ASK)
        assert raw.headers["x-tierwise-model"] == "exec-1"
        statuses = [(a.model, a.status) for a in stack.rows()[-1].attempts]
        assert statuses == [
            ("draft-1", "UpstreamUnavailable"),
            ("draft-1", "UpstreamUnavailable"),
            ("review-1", "rejected"),
            ("exec-1", "ok"),
        ]
    finally:
        stack.close()


# -- calls made to verify: judge and agreement ------------------------------------------------------


def test_low_judge_score_escalates_and_the_judge_is_charged(judge_stack: Stack) -> None:
    judge_stack.upstreams["backup"].reply = "Score: 3"
    with _client(judge_stack) as client:
        raw = client.chat.completions.with_raw_response.create(model="auto", messages=ASK)
    assert raw.headers["x-tierwise-model"] == "exec-1"
    row = judge_stack.rows()[-1]
    assert [(a.model, a.status, a.purpose) for a in row.attempts] == [
        ("draft-1", "rejected", "answer"),
        ("review-1", "ok", "judge"),
        ("exec-1", "ok", "answer"),
    ]
    assert row.attempts[0].error == "cascade: judge: judge score 3 < 7"
    assert row.attempts[1].cost_usd > 0
    assert row.cost_usd == pytest.approx(sum(a.cost_usd for a in row.attempts))
    # The judge saw the rubric, the request and the cheap answer, and was asked for a short reply.
    sent = judge_stack.upstreams["backup"].requests[-1]
    assert sent["model"] == "backup-model" and sent["max_tokens"] <= 32
    assert "Score: N" in sent["messages"][0]["content"]
    assert "Ada" in sent["messages"][1]["content"] and "cheap answer here" in sent["messages"][1]["content"]


def test_high_judge_score_accepts_the_cheap_answer(judge_stack: Stack) -> None:
    judge_stack.upstreams["backup"].reply = "Score: 9"
    with _client(judge_stack) as client:
        raw = client.chat.completions.with_raw_response.create(model="auto", messages=ASK)
    assert raw.headers["x-tierwise-model"] == "draft-1"
    assert raw.parse().choices[0].message.content == "cheap answer here"
    row = judge_stack.rows()[-1]
    assert [(a.model, a.purpose) for a in row.attempts] == [("draft-1", "answer"), ("review-1", "judge")]
    assert judge_stack.upstreams["strong"].requests == []
    assert float(raw.headers["x-tierwise-cost-usd"]) == pytest.approx(row.cost_usd, abs=1e-9)


@pytest.mark.parametrize("reply", ["I would say it is quite good.", "Score: 11", "7 or 8"])
def test_a_judge_reply_that_does_not_parse_escalates(judge_stack: Stack, reply: str) -> None:
    judge_stack.upstreams["backup"].reply = reply
    with _client(judge_stack) as client:
        raw = client.chat.completions.with_raw_response.create(model="auto", messages=ASK)
    assert raw.headers["x-tierwise-model"] == "exec-1"
    assert "does not parse as a score" in (judge_stack.rows()[-1].attempts[0].error or "")


def test_a_slow_or_failing_judge_escalates(judge_stack: Stack) -> None:
    judge_stack.upstreams["backup"].delay_s = 2.0
    with _client(judge_stack) as client:
        raw = client.chat.completions.with_raw_response.create(model="auto", messages=ASK)
    assert raw.headers["x-tierwise-model"] == "exec-1"
    judge = judge_stack.rows()[-1].attempts[1]
    assert (judge.purpose, judge.status) == ("judge", "UpstreamTimeout")
    assert judge.latency_ms < 1500
    judge_stack.upstreams["backup"].delay_s = 0.0
    judge_stack.upstreams["backup"].fault("500")
    with _client(judge_stack) as client:
        raw = client.chat.completions.with_raw_response.create(model="auto", messages=ASK)
    assert raw.headers["x-tierwise-model"] == "exec-1"
    assert judge_stack.rows()[-1].attempts[0].error == "cascade: judge: the judge call failed"


def test_agreement_draws_a_charged_sample(tmp_path: Path) -> None:
    stack = _stack(tmp_path, {"kind": "agreement", "samples": 2})
    try:
        stack.upstreams["cheap"].reply = "The answer is 42."
        with _client(stack) as client:
            raw = client.chat.completions.with_raw_response.create(model="auto", messages=ASK, temperature=0)
        assert raw.headers["x-tierwise-model"] == "draft-1"  # two identical answers agree
        row = stack.rows()[-1]
        assert [(a.model, a.purpose) for a in row.attempts] == [("draft-1", "answer"), ("draft-1", "sample")]
        assert row.attempts[1].cost_usd > 0
        assert stack.upstreams["cheap"].requests[-1]["temperature"] == 0.7  # the sample may differ
    finally:
        stack.close()


def test_agreement_samples_are_drawn_at_once(tmp_path: Path) -> None:
    stack = _stack(tmp_path, {"kind": "agreement", "samples": 4})
    try:
        stack.upstreams["cheap"].reply = "The answer is 42."
        stack.upstreams["cheap"].delay_s = 0.5
        with _client(stack) as client:
            raw = client.chat.completions.with_raw_response.create(model="auto", messages=ASK)
        assert raw.headers["x-tierwise-model"] == "draft-1"
        row = stack.rows()[-1]
        samples = [a for a in row.attempts if a.purpose == "sample"]
        assert len(samples) == 3 and all(a.status == "ok" and a.cost_usd > 0 for a in samples)
        # The answer, then three samples: 2.0 s one after another, 1.0 s with the samples together.
        assert row.latency_ms < 1600
    finally:
        stack.close()


def test_a_failed_sample_escalates(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A sample that cannot be drawn leaves agreement unchecked: escalate, conservatively."""
    original = FakeUpstream._openai
    served: dict[int, int] = {}

    async def sample_fails(self: FakeUpstream, request: Any) -> Any:
        served[id(self)] = served.get(id(self), 0) + 1
        if self.reply == "The answer is 42." and served[id(self)] == 2:  # the cheap model's second call
            self.fail_next(1, status=503)
        return await original(self, request)

    monkeypatch.setattr(FakeUpstream, "_openai", sample_fails)
    stack = _stack(tmp_path, {"kind": "agreement"})
    try:
        stack.upstreams["cheap"].reply = "The answer is 42."
        with _client(stack) as client:
            raw = client.chat.completions.with_raw_response.create(model="auto", messages=ASK)
        assert raw.headers["x-tierwise-model"] == "exec-1"
        row = stack.rows()[-1]
        assert [(a.model, a.status, a.purpose) for a in row.attempts] == [
            ("draft-1", "rejected", "answer"),
            ("draft-1", "UpstreamUnavailable", "sample"),
            ("exec-1", "ok", "answer"),
        ]
        assert row.attempts[0].error == "cascade: agreement: a sample call failed: cannot check agreement"
    finally:
        stack.close()


# -- streaming ------------------------------------------------------------------------------------------


def _stream_text(client: openai.OpenAI, **kwargs: Any) -> tuple[str, list[Any], Any]:
    raw = client.chat.completions.with_raw_response.create(model="auto", messages=ASK, stream=True, **kwargs)
    chunks = list(raw.parse())
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    return text, chunks, raw.headers


def test_a_rejected_streamed_answer_never_reaches_the_client(schema_stack: Stack) -> None:
    schema_stack.upstreams["cheap"].reply = "SECRET-DRAFT not json at all"
    schema_stack.upstreams["strong"].reply = VALID
    with _client(schema_stack) as client:
        text, chunks, headers = _stream_text(client, response_format=RECORD_SCHEMA)
    assert json.loads(text) == {"name": "Ada", "age": 36}
    assert all("SECRET" not in (c.choices[0].delta.content or "") for c in chunks if c.choices)
    assert headers["x-tierwise-model"] == "exec-1"
    assert chunks[-1].choices[0].finish_reason == "stop"
    row = schema_stack.rows()[-1]
    assert row.stream and [(a.model, a.status) for a in row.attempts] == [
        ("draft-1", "rejected"),
        ("exec-1", "ok"),
    ]
    assert row.attempts[0].cost_usd > 0
    assert row.ttft_ms is not None and row.ttft_ms >= row.attempts[0].latency_ms


def test_an_accepted_streamed_answer_is_replayed_whole(schema_stack: Stack) -> None:
    schema_stack.upstreams["cheap"].reply = VALID
    with _client(schema_stack) as client:
        text, chunks, headers = _stream_text(
            client, response_format=RECORD_SCHEMA, stream_options={"include_usage": True}
        )
    assert text == VALID and headers["x-tierwise-model"] == "draft-1"
    assert len(chunks) > 3  # the upstream's chunks, not one merged chunk
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0
    row = schema_stack.rows()[-1]
    assert [(a.model, a.status) for a in row.attempts] == [("draft-1", "ok")]
    assert row.output_tokens == chunks[-1].usage.completion_tokens


def test_a_cheap_stream_that_breaks_while_buffered_falls_back_invisibly(schema_stack: Stack) -> None:
    schema_stack.upstreams["cheap"].fault("cut_after_first_chunk")
    with _client(schema_stack) as client:
        text, _, headers = _stream_text(client)
    assert text == "strong answer here" and headers["x-tierwise-model"] == "exec-1"
    statuses = [a.status for a in schema_stack.rows()[-1].attempts]
    assert statuses[-1] == "ok" and "rejected" not in statuses


def test_streamed_judge_escalation(judge_stack: Stack) -> None:
    judge_stack.upstreams["backup"].reply = "[[2]]"
    with _client(judge_stack) as client:
        text, _, headers = _stream_text(client)
    assert text == "strong answer here" and headers["x-tierwise-model"] == "exec-1"
    assert [a.purpose for a in judge_stack.rows()[-1].attempts] == ["answer", "judge", "answer"]


def test_requests_without_a_cascade_are_not_verified(schema_stack: Stack) -> None:
    schema_stack.upstreams["cheap"].reply = "not json"
    with _client(schema_stack) as client:
        raw = client.chat.completions.with_raw_response.create(
            model="draft-1", messages=ASK, response_format=RECORD_SCHEMA
        )
    assert raw.headers["x-tierwise-model"] == "draft-1"  # a model named by the client is its choice
    assert schema_stack.rows()[-1].decision["cascade"] is False
