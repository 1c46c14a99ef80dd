"""The gateway, driven by the official openai SDK over loopback, in front of fake upstream servers."""

from __future__ import annotations

from pathlib import Path

import aiohttp
import openai
import pytest

from tests.harness import API_KEY, Stack, start_stack

CLASSIFY = [{"role": "user", "content": "Classify the sentiment of this review: 'Great battery.'"}]
CODE = [{"role": "user", "content": "Write a Python function that reverses a linked list."}]
CHAT = [{"role": "user", "content": "hey, I had the strangest dream last night"}]


def test_sync_sdk_routes_cheap_task_to_draft(stack: Stack, client: openai.OpenAI) -> None:
    raw = client.chat.completions.with_raw_response.create(model="auto", messages=CLASSIFY)
    completion = raw.parse()
    assert completion.choices[0].message.content == "cheap answer here"
    assert raw.headers["x-tierwise-model"] == "draft-1"
    assert raw.headers["x-tierwise-tier"] == "draft"
    assert raw.headers["x-tierwise-reason"].startswith("rule cheap-task:")
    assert raw.headers["x-tierwise-request-id"].startswith("req_")
    assert raw.headers["x-tierwise-policy-version"] == stack.router.policy_version
    usage = completion.usage
    assert usage is not None
    expected = (usage.prompt_tokens * 0.5 + usage.completion_tokens * 1.0) / 1e6
    assert float(raw.headers["x-tierwise-cost-usd"]) == pytest.approx(expected, abs=1e-8)
    sent = stack.upstreams["cheap"].requests[-1]
    assert sent["model"] == "cheap-model"  # the upstream id, not "auto"
    seen_headers = stack.upstreams["cheap"].headers[-1]
    assert seen_headers["authorization"] == f"Bearer {API_KEY}"  # the provider's key, not the client's


def test_code_goes_to_execution_over_the_anthropic_wire(stack: Stack, client: openai.OpenAI) -> None:
    raw = client.chat.completions.with_raw_response.create(model="auto", messages=CODE)
    assert raw.parse().choices[0].message.content == "strong answer here"
    assert raw.headers["x-tierwise-model"] == "exec-1"
    request = stack.upstreams["strong"].requests[-1]
    assert request["model"] == "strong-model" and request["max_tokens"] > 0


def test_hints_by_header_and_metadata(stack: Stack, client: openai.OpenAI) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model="auto", messages=CHAT, extra_headers={"x-tierwise-tier": "execution"}
    )
    assert raw.headers["x-tierwise-tier"] == "execution"
    raw = client.chat.completions.with_raw_response.create(
        model="auto", messages=CHAT, metadata={"task": "classify"}
    )
    assert raw.headers["x-tierwise-tier"] == "draft"
    # hint keys are tierwise's: they are not forwarded upstream
    assert "metadata" not in stack.upstreams["cheap"].requests[-1]


def test_manual_override_is_logged_and_costed(stack: Stack, client: openai.OpenAI) -> None:
    raw = client.chat.completions.with_raw_response.create(model="review-1", messages=CLASSIFY)
    assert raw.headers["x-tierwise-model"] == "review-1"
    row = stack.rows()[-1]
    assert row.decision["layer"] == "manual" and row.cost_usd > 0 and row.requested_model == "review-1"


async def test_async_sdk_and_streaming_with_usage(stack: Stack) -> None:
    async with openai.AsyncOpenAI(base_url=stack.base_url, api_key="k", max_retries=0) as client:
        completion = await client.chat.completions.create(model="auto", messages=CLASSIFY)
        assert completion.choices[0].message.content == "cheap answer here"
        stream = await client.chat.completions.create(
            model="auto", messages=CLASSIFY, stream=True, stream_options={"include_usage": True}
        )
        text, usage = "", None
        async for chunk in stream:
            if chunk.choices:
                text += chunk.choices[0].delta.content or ""
            if chunk.usage:
                usage = chunk.usage
        assert text == "cheap answer here"
        assert usage is not None and usage.completion_tokens > 0
    rows = stack.rows()
    assert rows[-1].stream and rows[-1].cost_usd > 0 and rows[-1].output_tokens == usage.completion_tokens


def test_stream_without_usage_request_is_still_costed(stack: Stack, client: openai.OpenAI) -> None:
    chunks = list(client.chat.completions.create(model="auto", messages=CLASSIFY, stream=True))
    assert all(c.usage is None for c in chunks)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "cheap answer here"
    assert stack.upstreams["cheap"].requests[-1]["stream_options"] == {"include_usage": True}
    row = stack.rows()[-1]
    assert row.output_tokens > 0 and row.cost_usd > 0


def test_anthropic_stream_through_openai_sdk(stack: Stack, client: openai.OpenAI) -> None:
    chunks = list(client.chat.completions.create(model="auto", messages=CODE, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "strong answer here"
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_models_endpoint_and_health(stack: Stack, client: openai.OpenAI) -> None:
    ids = [m.id for m in client.models.list()]
    assert ids[:4] == ["auto", "draft", "review", "execution"]
    assert {"draft-1", "review-1", "exec-1"} <= set(ids)


# -- faults: fallback before the first byte --------------------------------------------------------


def test_500_falls_back_to_next_model(stack: Stack, client: openai.OpenAI) -> None:
    stack.upstreams["cheap"].fault("500")
    raw = client.chat.completions.with_raw_response.create(model="auto", messages=CLASSIFY)
    assert raw.headers["x-tierwise-model"] == "review-1"
    assert raw.parse().choices[0].message.content == "backup answer here"
    row = stack.rows()[-1]
    assert [a.status for a in row.attempts] == ["UpstreamUnavailable", "UpstreamUnavailable", "ok"]
    assert row.attempts[0].http_status == 500 and row.final_model == "review-1"


def test_429_retry_after_is_honoured_on_the_same_model(stack: Stack, client: openai.OpenAI) -> None:
    stack.upstreams["cheap"].fail_next(1, status=429, retry_after="0.2")
    raw = client.chat.completions.with_raw_response.create(model="auto", messages=CLASSIFY)
    assert raw.headers["x-tierwise-model"] == "draft-1"
    row = stack.rows()[-1]
    assert [a.status for a in row.attempts] == ["UpstreamRateLimited", "ok"]
    assert row.latency_ms >= 200


def test_long_retry_after_moves_on_at_once(stack: Stack, client: openai.OpenAI) -> None:
    stack.upstreams["cheap"].fail_next(1, status=429, retry_after="120")
    raw = client.chat.completions.with_raw_response.create(model="auto", messages=CLASSIFY)
    assert raw.headers["x-tierwise-model"] == "review-1"
    assert stack.rows()[-1].latency_ms < 2000


def test_slow_upstream_times_out_and_falls_back(stack: Stack, client: openai.OpenAI) -> None:
    stack.upstreams["cheap"].delay_s = 3.0
    stack.upstreams["cheap"].fault("slow")
    raw = client.chat.completions.with_raw_response.create(model="auto", messages=CLASSIFY)
    assert raw.headers["x-tierwise-model"] == "review-1"
    assert stack.rows()[-1].attempts[0].status == "UpstreamTimeout"


def test_connection_refused_falls_back(tmp_path: Path) -> None:
    stack = start_stack(tmp_path, refused=("cheap",))
    try:
        with openai.OpenAI(base_url=stack.base_url, api_key="k", max_retries=0) as client:
            raw = client.chat.completions.with_raw_response.create(model="auto", messages=CLASSIFY)
        assert raw.headers["x-tierwise-model"] == "review-1"
        assert stack.rows()[-1].attempts[0].status == "UpstreamUnavailable"
    finally:
        stack.close()


@pytest.mark.parametrize("stream", [False, True])
def test_an_error_answer_names_the_request_its_ledger_row_records(tmp_path: Path, stream: bool) -> None:
    stack = start_stack(tmp_path, refused=("cheap", "backup", "strong"))
    try:
        with (
            openai.OpenAI(base_url=stack.base_url, api_key="k", max_retries=0) as client,
            pytest.raises(openai.APIStatusError) as info,
        ):
            client.chat.completions.create(model="auto", messages=CLASSIFY, stream=stream)
        assert info.value.status_code in (502, 503)
        request_id = info.value.response.headers["x-tierwise-request-id"]
        (row,) = stack.rows()
        assert row.id == request_id and row.http_status == info.value.status_code and row.status == "error"
    finally:
        stack.close()


def test_400_from_upstream_is_not_retried(stack: Stack, client: openai.OpenAI) -> None:
    stack.upstreams["cheap"].fail_next(1, status=400)
    client.chat.completions.create(model="auto", messages=CLASSIFY)
    statuses = [a.status for a in stack.rows()[-1].attempts]
    assert statuses == ["UpstreamRejected", "ok"]


def test_breaker_opens_after_repeated_failures(stack: Stack, client: openai.OpenAI) -> None:
    stack.upstreams["cheap"].fault("500")
    # 2 attempts each: min_calls failed calls in the window open the (ratio) breaker.
    for _ in range(stack.router.config.policy.cooldown.min_calls // 2):
        client.chat.completions.create(model="auto", messages=CLASSIFY)
    before = len(stack.upstreams["cheap"].requests)
    raw = client.chat.completions.with_raw_response.create(model="auto", messages=CLASSIFY)
    assert raw.headers["x-tierwise-model"] == "review-1"
    assert len(stack.upstreams["cheap"].requests) == before  # cooling: not even tried


def test_stream_falls_back_before_first_byte(stack: Stack, client: openai.OpenAI) -> None:
    stack.upstreams["cheap"].fault("500")
    chunks = list(client.chat.completions.create(model="auto", messages=CLASSIFY, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "backup answer here"


def test_stream_cut_after_first_chunk_ends_with_error_event(stack: Stack, client: openai.OpenAI) -> None:
    stack.upstreams["cheap"].fault("cut_after_first_chunk")
    received = ""
    with pytest.raises(openai.APIError, match="stream interrupted"):
        for chunk in client.chat.completions.create(model="auto", messages=CLASSIFY, stream=True):
            if chunk.choices:
                received += chunk.choices[0].delta.content or ""
    assert received and "cheap answer here".startswith(received)
    assert "backup" not in received  # never a splice of two models' answers
    row = stack.rows()[-1]
    assert row.status == "interrupted" and row.final_model == "draft-1"
    assert len(stack.upstreams["backup"].requests) == 0


async def test_stream_cut_raw_wire_has_no_done(stack: Stack) -> None:
    stack.upstreams["cheap"].fault("cut_after_first_chunk")
    body = {"model": "auto", "messages": CLASSIFY, "stream": True}
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"{stack.base_url}/chat/completions", json=body) as r,
    ):
        assert r.status == 200
        wire = (await r.read()).decode()
    assert '"code":"stream_interrupted"' in wire
    assert "[DONE]" not in wire


# -- errors in OpenAI format --------------------------------------------------------------------------


async def post_raw(stack: Stack, data: bytes, headers: dict | None = None) -> tuple[int, dict]:
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            f"{stack.base_url}/chat/completions",
            data=data,
            headers={"Content-Type": "application/json", **(headers or {})},
        ) as r,
    ):
        return r.status, await r.json()


@pytest.mark.parametrize(
    ("data", "param", "fragment"),
    [
        (b"{not json", None, "request body: invalid JSON"),
        (b"[1,2]", None, "must be a JSON object"),
        (b'{"model":"auto"}', "messages", "messages: required"),
        (b'{"model":"auto","messages":[]}', "messages", "non-empty"),
        (
            b'{"model":"auto","messages":[{"role":"robot","content":"x"}]}',
            "messages[0].role",
            "must be one of",
        ),
        (b'{"model":"auto","messages":[{"role":"user"}]}', "messages[0].content", "required"),
        (
            b'{"model":"auto","messages":[{"role":"user","content":"x"}],"max_tokens":"9"}',
            "max_tokens",
            "integer",
        ),
        (b'{"messages":[{"role":"user","content":"x"}]}', "model", "required"),
    ],
)
async def test_malformed_bodies_are_400_naming_the_field(
    stack: Stack, data: bytes, param: str | None, fragment: str
) -> None:
    status, body = await post_raw(stack, data)
    assert status == 400
    assert body["error"]["type"] == "invalid_request_error"
    assert body["error"]["param"] == param
    assert fragment in body["error"]["message"]


async def test_bad_hint_header_is_400(stack: Stack) -> None:
    data = b'{"model":"auto","messages":[{"role":"user","content":"x"}]}'
    status, body = await post_raw(stack, data, {"x-tierwise-task": "poetry"})
    assert status == 400 and body["error"]["param"] == "x-tierwise-task"


def test_unknown_model_is_404(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as info:
        client.chat.completions.create(model="gpt-17", messages=CLASSIFY)
    assert info.value.body["param"] == "model"  # type: ignore[index]


async def test_oversized_body_is_413(stack: Stack) -> None:
    huge = b'{"model":"auto","messages":[{"role":"user","content":"' + b"x" * 300_000 + b'"}]}'
    status, body = await post_raw(stack, huge)
    assert status == 413 and "exceeds the limit" in body["error"]["message"]


def test_all_upstreams_down_is_502_listing_each(stack: Stack, client: openai.OpenAI) -> None:
    for upstream in stack.upstreams.values():
        upstream.fault("500")
    with pytest.raises(openai.InternalServerError) as info:
        client.chat.completions.create(model="auto", messages=CLASSIFY)
    assert info.value.status_code == 502
    error = info.value.body
    assert {a["model"] for a in error["attempts"]} == {"draft-1", "review-1"}  # type: ignore[index]
    assert "draft-1: UpstreamUnavailable" in error["message"]  # type: ignore[index]
    assert stack.rows()[-1].status == "error"


def test_all_upstreams_slow_is_504(stack: Stack, client: openai.OpenAI) -> None:
    for upstream in stack.upstreams.values():
        upstream.delay_s = 3.0
        upstream.fault("slow")
    with pytest.raises(openai.APIStatusError) as info:
        client.chat.completions.create(model="auto", messages=CLASSIFY)
    assert info.value.status_code == 504


def test_context_window_skips_small_models(stack: Stack, client: openai.OpenAI) -> None:
    long = [{"role": "user", "content": "Summarize this: " + "word " * 16_000}]  # ~20k tokens > draft's 16k
    raw = client.chat.completions.with_raw_response.create(model="auto", messages=long)
    assert raw.headers["x-tierwise-model"] == "review-1"
    assert stack.rows()[-1].attempts[0].status == "skipped"


def test_secrets_never_leak(stack: Stack, client: openai.OpenAI, caplog: pytest.LogCaptureFixture) -> None:
    stack.upstreams["cheap"].fault("500")
    stack.upstreams["backup"].fault("429")
    stack.upstreams["strong"].fault("500")
    with pytest.raises(openai.APIStatusError) as info:
        client.chat.completions.create(model="auto", messages=CLASSIFY)
    assert API_KEY not in str(info.value.body)
    rows = stack.rows()
    assert API_KEY not in repr(rows)
    assert API_KEY not in caplog.text
    db = Path(stack.ledger_url.removeprefix("sqlite:///"))
    # The database, its WAL, and the journal and spill files beside it.
    stored = [
        p
        for p in db.parent.rglob("*")
        if p.is_file() and p.relative_to(db.parent).parts[0].startswith("ledger.db")
    ]
    assert stored and API_KEY.encode() not in b"".join(p.read_bytes() for p in stored)
