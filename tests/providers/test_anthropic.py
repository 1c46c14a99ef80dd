"""The Anthropic Messages adapter: translation both ways, and the wire against real fake servers."""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest

from tests.fakes.upstream import FakeUpstream, refused_url
from tierwise.config import ModelEntry, Price, ProviderConfig, Timeouts
from tierwise.errors import (
    ProviderError,
    StreamInterrupted,
    UpstreamRateLimited,
    UpstreamRejected,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from tierwise.http import Endpoint, HttpPool
from tierwise.providers.anthropic import AnthropicProvider, to_chat_completion, to_messages_request
from tierwise.providers.base import Chunk, UpstreamCall

KEY = "sk-ant-test-SECRET-77c1"
FAST = Timeouts(connect=0.5, first_byte=0.3, read=0.3, total=2.0)
MODEL = ModelEntry(
    name="strong",
    provider="ant",
    upstream="claude-fake",
    tier="execution",
    context_window=200_000,
    price=Price(input_per_mtok=3, output_per_mtok=15),
)
HELLO = [{"role": "user", "content": "Say hello to me"}]
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="


@pytest.fixture
async def pool() -> AsyncIterator[HttpPool]:
    pool = HttpPool()
    yield pool
    await pool.aclose()


def provider(url: str, pool: HttpPool, monkeypatch: pytest.MonkeyPatch, **config: Any) -> AnthropicProvider:
    monkeypatch.setenv("TW_ANTHROPIC_TEST_KEY", KEY)
    settings: dict[str, Any] = {"kind": "anthropic", "base_url": url, "api_key_env": "TW_ANTHROPIC_TEST_KEY"}
    settings["timeouts"] = FAST
    return AnthropicProvider("ant", ProviderConfig(**(settings | config)), http=pool)


def call(model: ModelEntry = MODEL, **body: Any) -> UpstreamCall:
    return UpstreamCall(model=model, body={"model": "auto", "messages": HELLO} | body)


async def collect(p: AnthropicProvider, c: UpstreamCall) -> list[Chunk]:
    return [chunk async for chunk in p.stream(c)]


def deltas(chunks: list[Chunk]) -> list[dict[str, Any]]:
    return [choice["delta"] for c in chunks for choice in c.data["choices"]]


def text_of(chunks: list[Chunk]) -> str:
    return "".join(d.get("content") or "" for d in deltas(chunks))


# -- request translation: OpenAI → Anthropic ----------------------------------------------------------

CONVERSATION: list[dict[str, Any]] = [
    {"role": "system", "content": "You are terse."},
    {"role": "developer", "content": [{"type": "text", "text": "Answer in English."}]},
    {"role": "user", "content": "Weather in Paris and Rome?"},
    {
        "role": "user",
        "content": [
            {"type": "text", "text": "And look at these:"},
            {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
            {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg", "detail": "low"}},
        ],
    },
    {
        "role": "assistant",
        "content": "Checking.",
        "tool_calls": [
            {
                "id": "call_1",
                "type": "function",
                "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
            },
            {
                "id": "call_2",
                "type": "function",
                "function": {"name": "get_weather", "arguments": '{"city": "Rome"}'},
            },
        ],
    },
    {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
    {"role": "tool", "tool_call_id": "call_2", "content": [{"type": "text", "text": "rainy"}]},
    {"role": "user", "content": "Thanks!"},
    {"role": "assistant", "content": ""},
]

TRANSLATED: list[dict[str, Any]] = [
    {
        "role": "user",
        "content": [
            {"type": "text", "text": "Weather in Paris and Rome?"},
            {"type": "text", "text": "And look at these:"},
            {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}},
            {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}},
        ],
    },
    {
        "role": "assistant",
        "content": [
            {"type": "text", "text": "Checking."},
            {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"city": "Paris"}},
            {"type": "tool_use", "id": "call_2", "name": "get_weather", "input": {"city": "Rome"}},
        ],
    },
    {
        "role": "user",
        "content": [
            {"type": "tool_result", "tool_use_id": "call_1", "content": "sunny"},
            {"type": "tool_result", "tool_use_id": "call_2", "content": [{"type": "text", "text": "rainy"}]},
            {"type": "text", "text": "Thanks!"},
        ],
    },
]


def test_conversation_translation() -> None:
    body = {
        "model": "auto",
        "messages": CONVERSATION,
        "tools": [WEATHER],
        "tool_choice": "auto",
        "temperature": 1.5,
        "top_p": 0.9,
        "stop": "END",
        "max_tokens": 300,
        "user": "u-42",
        "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {}}},
        "seed": 1,
        "frequency_penalty": 0.5,
        "logprobs": True,
    }
    before = copy.deepcopy(body)
    out = to_messages_request(body, MODEL)
    assert body == before  # never mutated
    assert out == {
        "model": "claude-fake",
        "max_tokens": 300,
        "system": "You are terse.\n\nAnswer in English.",
        "messages": TRANSLATED,
        "temperature": 1.0,  # clamped to Anthropic's range
        "top_p": 0.9,
        "stop_sequences": ["END"],
        "tools": [
            {
                "name": "get_weather",
                "description": "Current weather for a city",
                "input_schema": WEATHER["function"]["parameters"],
            }
        ],
        "tool_choice": {"type": "auto"},
        "metadata": {"user_id": "u-42"},
    }


@pytest.mark.parametrize(
    ("choice", "parallel", "expected"),
    [
        ("auto", None, {"type": "auto"}),
        ("none", None, {"type": "none"}),
        ("required", None, {"type": "any"}),
        (
            {"type": "function", "function": {"name": "get_weather"}},
            None,
            {"type": "tool", "name": "get_weather"},
        ),
        ("required", False, {"type": "any", "disable_parallel_tool_use": True}),
        (None, False, {"type": "auto", "disable_parallel_tool_use": True}),
        (None, None, None),
    ],
)
def test_tool_choice(choice: Any, parallel: Any, expected: dict[str, Any] | None) -> None:
    body: dict[str, Any] = {"messages": HELLO, "tools": [WEATHER]}
    if choice is not None:
        body["tool_choice"] = choice
    if parallel is not None:
        body["parallel_tool_calls"] = parallel
    assert to_messages_request(body, MODEL).get("tool_choice") == expected


def test_tool_without_parameters_gets_an_empty_schema_and_no_tools_means_no_choice() -> None:
    bare = {"type": "function", "function": {"name": "now"}}
    out = to_messages_request({"messages": HELLO, "tools": [bare], "tool_choice": "required"}, MODEL)
    assert out["tools"] == [{"name": "now", "input_schema": {"type": "object", "properties": {}}}]
    assert "tool_choice" not in to_messages_request({"messages": HELLO, "tool_choice": "required"}, MODEL)


@pytest.mark.parametrize(
    ("body", "model_max", "expected"),
    [
        ({"max_completion_tokens": 50, "max_tokens": 60}, 70, 50),
        ({"max_tokens": 60}, 70, 60),
        ({}, 70, 70),
        ({}, None, 4096),
    ],
)
def test_max_tokens(body: dict[str, Any], model_max: int | None, expected: int) -> None:
    model = MODEL.model_copy(update={"max_output_tokens": model_max})
    assert to_messages_request({"messages": HELLO, **body}, model)["max_tokens"] == expected


def test_stop_list_and_pdf_file_parts() -> None:
    pdf = {"type": "file", "file": {"filename": "a.pdf", "file_data": "data:application/pdf;base64,JVBERi0x"}}
    body = {"messages": [{"role": "user", "content": [pdf]}], "stop": ["A", "B"]}
    out = to_messages_request(body, MODEL)
    assert out["stop_sequences"] == ["A", "B"]
    assert out["messages"][0]["content"] == [
        {
            "type": "document",
            "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0x"},
        }
    ]


# -- response translation: Anthropic → OpenAI ---------------------------------------------------------


@pytest.mark.parametrize(
    ("stop_reason", "finish"),
    [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("max_tokens", "length"),
        ("tool_use", "tool_calls"),
        ("refusal", "content_filter"),
    ],
)
def test_response_translation(stop_reason: str, finish: str) -> None:
    message = {
        "id": "msg_01",
        "type": "message",
        "role": "assistant",
        "model": "claude-fake-2",
        "content": [
            {"type": "thinking", "thinking": "hmm", "signature": "s"},
            {"type": "text", "text": "Let me check. "},
            {"type": "text", "text": "One moment."},
            {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}},
        ],
        "stop_reason": stop_reason,
        "stop_sequence": None,
        "usage": {
            "input_tokens": 10,
            "cache_read_input_tokens": 100,
            "cache_creation_input_tokens": 5,
            "output_tokens": 7,
        },
    }
    out = to_chat_completion(message)
    assert out["id"] == "msg_01" and out["object"] == "chat.completion" and out["model"] == "claude-fake-2"
    assert isinstance(out["created"], int)
    choice = out["choices"][0]
    assert choice["finish_reason"] == finish
    assert choice["message"]["content"] == "Let me check. One moment."
    assert choice["message"]["tool_calls"] == [
        {
            "id": "toolu_1",
            "type": "function",
            "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
        }
    ]
    assert out["usage"] == {
        "prompt_tokens": 115,
        "completion_tokens": 7,
        "total_tokens": 122,
        "prompt_tokens_details": {"cached_tokens": 100},
    }


def test_tool_only_response_has_null_content() -> None:
    message = {
        "id": "m",
        "model": "c",
        "stop_reason": "tool_use",
        "usage": {"input_tokens": 1, "output_tokens": 1},
        "content": [{"type": "tool_use", "id": "t", "name": "f", "input": {}}],
    }
    reply = to_chat_completion(message)["choices"][0]["message"]
    assert reply["content"] is None and reply["tool_calls"][0]["function"]["arguments"] == "{}"


# -- against the fake server --------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", ["", "/", "/v1", "/v1/"])
async def test_complete_round_trip(
    suffix: str, anthropic_upstream: FakeUpstream, pool: HttpPool, monkeypatch: pytest.MonkeyPatch
) -> None:
    p = provider(anthropic_upstream.url + suffix, pool, monkeypatch, headers={"anthropic-beta": "x-2025"})
    completion = await p.complete(call(messages=[{"role": "system", "content": "Be brief."}, *HELLO]))

    sent = anthropic_upstream.requests[-1]
    assert sent == {
        "model": "claude-fake",
        "max_tokens": 4096,
        "system": "Be brief.",
        "messages": [{"role": "user", "content": [{"type": "text", "text": "Say hello to me"}]}],
    }
    headers = anthropic_upstream.headers[-1]
    assert headers["x-api-key"] == KEY
    assert headers["anthropic-version"] == "2023-06-01"
    assert headers["anthropic-beta"] == "x-2025"
    assert "authorization" not in headers
    body = completion.body
    assert body["object"] == "chat.completion" and body["model"] == "claude-fake"
    assert body["id"].startswith("msg_")
    assert body["choices"][0]["message"] == {
        "role": "assistant",
        "content": "Hello from fake",
        "refusal": None,
    }
    assert body["choices"][0]["finish_reason"] == "stop"
    assert body["usage"] == {"prompt_tokens": 6, "completion_tokens": 3, "total_tokens": 9}
    assert (completion.usage.input_tokens, completion.usage.output_tokens) == (6, 3)
    await p.aclose()


async def test_api_version_from_config(
    anthropic_upstream: FakeUpstream, pool: HttpPool, monkeypatch: pytest.MonkeyPatch
) -> None:
    await provider(anthropic_upstream.url, pool, monkeypatch, api_version="2099-01-01").complete(call())
    assert anthropic_upstream.headers[-1]["anthropic-version"] == "2099-01-01"


async def test_the_translated_conversation_is_accepted(
    anthropic_upstream: FakeUpstream, pool: HttpPool, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the fake checks what the real API checks: alternating roles, tool_result ids, non-empty text
    completion = await provider(anthropic_upstream.url, pool, monkeypatch).complete(
        call(messages=CONVERSATION, tools=[WEATHER])
    )
    assert completion.body["choices"][0]["message"]["content"] == "Hello from fake"
    assert anthropic_upstream.requests[-1]["messages"] == TRANSLATED


@pytest.mark.parametrize(
    ("body", "headers", "message"),
    [
        ({"model": "c", "messages": HELLO}, {}, "max_tokens: Field required"),
        ({"model": "c", "max_tokens": 5, "messages": HELLO * 2}, {}, "roles must alternate"),
        (
            {"model": "c", "max_tokens": 5, "messages": [{"role": "system", "content": "x"}]},
            {},
            "Unexpected role",
        ),
        (
            {
                "model": "c",
                "max_tokens": 5,
                "messages": [
                    {
                        "role": "user",
                        "content": [{"type": "tool_result", "tool_use_id": "nope", "content": "x"}],
                    }
                ],
            },
            {},
            "unexpected `tool_use_id`",
        ),
        (
            {"model": "c", "max_tokens": 5, "messages": [{"role": "user", "content": ""}]},
            {},
            "must be non-empty",
        ),
        ({"model": "c", "max_tokens": 5, "messages": HELLO}, {"anthropic-version": ""}, "anthropic-version"),
    ],
)
async def test_the_fake_rejects_what_the_real_api_rejects(
    body: dict[str, Any],
    headers: dict[str, str],
    message: str,
    anthropic_upstream: FakeUpstream,
    pool: HttpPool,
) -> None:
    sent = {"anthropic-version": "2023-06-01", "Content-Type": "application/json", **headers}
    endpoint = Endpoint(anthropic_upstream.url + "/v1/messages", sent)
    resp = await pool.request(endpoint, orjson.dumps(body), connect_timeout=1.0, total_timeout=2.0)
    assert resp.status == 400
    error = orjson.loads(await resp.read())
    assert error["type"] == "error" and error["error"]["type"] == "invalid_request_error"
    assert message in error["error"]["message"]


async def test_stream_translation(
    anthropic_upstream: FakeUpstream, pool: HttpPool, monkeypatch: pytest.MonkeyPatch
) -> None:
    anthropic_upstream.reply = "one two three four"
    chunks = await collect(provider(anthropic_upstream.url, pool, monkeypatch), call(stream=True))
    assert anthropic_upstream.requests[-1]["stream"] is True
    assert chunks[0].data["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert text_of(chunks) == "one two three four"
    assert {c.data["id"] for c in chunks} == {chunks[0].data["id"]}
    assert all(c.data["object"] == "chat.completion.chunk" and c.raw is None for c in chunks)
    assert chunks[-2].data["choices"][0]["finish_reason"] == "stop"
    last = chunks[-1]
    assert last.data["choices"] == []
    assert last.data["usage"] == {"prompt_tokens": 4, "completion_tokens": 4, "total_tokens": 8}
    assert last.usage is not None and (last.usage.input_tokens, last.usage.output_tokens) == (4, 4)


async def test_tool_round_trip(
    anthropic_upstream: FakeUpstream, pool: HttpPool, monkeypatch: pytest.MonkeyPatch
) -> None:
    p = provider(anthropic_upstream.url, pool, monkeypatch)
    forced = {"type": "function", "function": {"name": "get_weather"}}
    first = await p.complete(call(tools=[WEATHER], tool_choice=forced))
    assert anthropic_upstream.requests[-1]["tool_choice"] == {"type": "tool", "name": "get_weather"}
    assert first.body["choices"][0]["finish_reason"] == "tool_calls"
    message = first.body["choices"][0]["message"]
    assert message["content"] is None
    tool_call = message["tool_calls"][0]
    assert tool_call["function"] == {"name": "get_weather", "arguments": "{}"}

    history = [*HELLO, message, {"role": "tool", "tool_call_id": tool_call["id"], "content": "sunny"}]
    second = await p.complete(call(messages=history, tools=[WEATHER]))
    assert second.body["choices"][0]["message"]["content"] == "Hello from fake"
    assert anthropic_upstream.requests[-1]["messages"][-1] == {
        "role": "user",
        "content": [{"type": "tool_result", "tool_use_id": tool_call["id"], "content": "sunny"}],
    }

    chunks = await collect(p, call(tools=[WEATHER], tool_choice="required"))
    calls = [tc for d in deltas(chunks) for tc in d.get("tool_calls") or ()]
    assert calls[0] == {
        "index": 0,
        "id": "toolu_fake_1",
        "type": "function",
        "function": {"name": "get_weather", "arguments": ""},
    }
    assert "".join(tc["function"]["arguments"] for tc in calls) == "{}"
    assert chunks[-2].data["choices"][0]["finish_reason"] == "tool_calls"


@pytest.mark.parametrize(
    ("extra", "content", "finish"),
    [
        ({"stop": "from"}, "Hello ", "stop"),
        ({"max_tokens": 1}, "Hello", "length"),
        ({}, "Hello from fake", "stop"),
    ],
)
async def test_finish_reasons(
    extra: dict[str, Any],
    content: str,
    finish: str,
    anthropic_upstream: FakeUpstream,
    pool: HttpPool,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    p = provider(anthropic_upstream.url, pool, monkeypatch)
    completion = await p.complete(call(**extra))
    assert completion.body["choices"][0]["message"]["content"] == content
    assert completion.body["choices"][0]["finish_reason"] == finish
    chunks = await collect(p, call(**extra))
    assert text_of(chunks) == content
    assert chunks[-2].data["choices"][0]["finish_reason"] == finish


async def test_untranslatable_request_is_rejected_without_a_call(
    anthropic_upstream: FakeUpstream, pool: HttpPool, monkeypatch: pytest.MonkeyPatch
) -> None:
    bad = {"role": "assistant", "tool_calls": [{"id": "c", "function": {"name": "f", "arguments": "[1, 2"}}]}
    p = provider(anthropic_upstream.url, pool, monkeypatch)
    with pytest.raises(UpstreamRejected, match="arguments must be a JSON object"):
        await p.complete(call(messages=[*HELLO, bad]))
    with pytest.raises(UpstreamRejected, match="base64"):
        await collect(
            p,
            call(
                messages=[
                    {
                        "role": "user",
                        "content": [{"type": "image_url", "image_url": {"url": "data:image/svg+xml,<svg/>"}}],
                    }
                ]
            ),
        )
    assert anthropic_upstream.requests == []


# -- every fault, as its ProviderError ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "cls"),
    [
        (400, UpstreamRejected),
        (401, UpstreamRejected),
        (403, UpstreamRejected),
        (404, UpstreamRejected),
        (413, UpstreamRejected),
        (429, UpstreamRateLimited),
        (500, UpstreamUnavailable),
        (504, UpstreamUnavailable),
        (529, UpstreamUnavailable),
    ],
)
async def test_http_errors_map_to_classes(
    status: int,
    cls: type[ProviderError],
    anthropic_upstream: FakeUpstream,
    pool: HttpPool,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    p = provider(anthropic_upstream.url, pool, monkeypatch)
    anthropic_upstream.fail_next(2, status=status)
    with pytest.raises(cls) as info:
        await p.complete(call())
    assert info.value.status == status
    assert str(info.value).startswith(f"strong: HTTP {status} from ant: ")
    with pytest.raises(cls):
        await collect(p, call())


async def test_overloaded_message_and_retry_after(
    anthropic_upstream: FakeUpstream, pool: HttpPool, monkeypatch: pytest.MonkeyPatch
) -> None:
    p = provider(anthropic_upstream.url, pool, monkeypatch)
    anthropic_upstream.fail_next(1, status=529)
    with pytest.raises(UpstreamUnavailable, match=r"^strong: HTTP 529 from ant: Overloaded$"):
        await p.complete(call())
    anthropic_upstream.fail_next(1, status=429, retry_after="12")
    with pytest.raises(UpstreamRateLimited) as info:
        await p.complete(call())
    assert info.value.retry_after == 12.0


async def test_timeouts_refusal_cut_and_garbage(
    anthropic_upstream: FakeUpstream, pool: HttpPool, monkeypatch: pytest.MonkeyPatch
) -> None:
    p = provider(anthropic_upstream.url, pool, monkeypatch)
    anthropic_upstream.delay_s = 2.0
    anthropic_upstream.fault("slow")
    with pytest.raises(UpstreamTimeout):
        await p.complete(call())
    with pytest.raises(UpstreamTimeout):
        await collect(p, call())
    anthropic_upstream.delay_s = 0.0
    anthropic_upstream.fault("garbage")
    with pytest.raises(UpstreamUnavailable, match="invalid JSON"):
        await p.complete(call())
    with pytest.raises(UpstreamUnavailable, match="invalid JSON"):
        await collect(p, call())
    refused = provider(await refused_url("anthropic"), pool, monkeypatch)
    with pytest.raises(UpstreamUnavailable, match="cannot connect"):
        await refused.complete(call())
    with pytest.raises(UpstreamUnavailable, match="cannot connect"):
        await collect(refused, call())


@pytest.mark.parametrize(
    ("fault", "cls"), [("cut_after_first_chunk", StreamInterrupted), ("error_in_stream", UpstreamUnavailable)]
)
async def test_stream_breaks_after_the_first_chunk(
    fault: str,
    cls: type[ProviderError],
    anthropic_upstream: FakeUpstream,
    pool: HttpPool,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    anthropic_upstream.fault(fault)
    chunks: list[Chunk] = []
    with pytest.raises(cls) as info:
        async for chunk in provider(anthropic_upstream.url, pool, monkeypatch).stream(call()):
            chunks.append(chunk)
    assert text_of(chunks) == "Hello "
    if fault == "error_in_stream":
        assert info.value.status == 529
        assert str(info.value) == "strong: overloaded_error from ant: Overloaded"


async def test_api_key_is_never_in_an_error(pool: HttpPool, monkeypatch: pytest.MonkeyPatch) -> None:
    async with FakeUpstream(kind="anthropic", api_key="the-right-key") as up:  # its 401 echoes our key
        p = provider(up.url, pool, monkeypatch)
        for attempt in (p.complete(call()), collect(p, call())):
            with pytest.raises(UpstreamRejected) as info:
                await attempt
            assert info.value.status == 401
            assert KEY not in str(info.value) and "[redacted]" in str(info.value)
        up.api_key = None
        up.fail_next(
            1, status=500, body={"type": "error", "error": {"type": "api_error", "message": f"k={KEY}"}}
        )
        with pytest.raises(UpstreamUnavailable) as info:
            await p.complete(call())
        assert KEY not in str(info.value)


# -- the fake itself speaks the real wire format -------------------------------------------------------


async def test_the_official_sdk_understands_the_fake(anthropic_upstream: FakeUpstream) -> None:
    import anthropic

    async with anthropic.AsyncAnthropic(
        base_url=anthropic_upstream.url, api_key=KEY, max_retries=0
    ) as client:
        message = await client.messages.create(model="claude-x", max_tokens=10, messages=HELLO)  # type: ignore[arg-type]
        assert message.content[0].type == "text" and message.content[0].text == "Hello from fake"
        tools = [{"name": "get_weather", "input_schema": {"type": "object"}}]
        async with client.messages.stream(
            model="claude-x",
            max_tokens=10,
            messages=HELLO,
            tools=tools,
            tool_choice={"type": "any"},  # type: ignore[arg-type]
        ) as stream:
            final = await stream.get_final_message()
        assert final.stop_reason == "tool_use" and final.content[0].type == "tool_use"
        anthropic_upstream.fail_next(1, status=529)
        with pytest.raises(anthropic.APIStatusError) as info:
            await client.messages.create(model="claude-x", max_tokens=10, messages=HELLO)  # type: ignore[arg-type]
        assert info.value.status_code == 529
