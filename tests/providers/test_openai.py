"""The OpenAI-compatible adapter against real fake servers on 127.0.0.1."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import orjson
import pytest
from aiohttp import web

from tests.fakes.upstream import FakeUpstream, refused_url
from tierwise.config import ModelEntry, Price, ProviderConfig, Timeouts
from tierwise.errors import (
    ConfigError,
    ProviderError,
    StreamInterrupted,
    UpstreamRateLimited,
    UpstreamRejected,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from tierwise.http import HttpPool
from tierwise.providers.base import Chunk, UpstreamCall
from tierwise.providers.openai import OpenAIProvider

KEY = "sk-test-SECRET-4f8a9b"
FAST = Timeouts(connect=0.5, first_byte=0.3, read=0.3, total=2.0)
MODEL = ModelEntry(
    name="cheap", provider="oai", upstream="gpt-fake-mini", tier="draft", context_window=8000,
    price=Price(input_per_mtok=0.15, output_per_mtok=0.6),
)  # fmt: skip
HELLO = [{"role": "user", "content": "Say hello to me"}]


@pytest.fixture
async def pool() -> AsyncIterator[HttpPool]:
    pool = HttpPool()
    yield pool
    await pool.aclose()


def provider(url: str, pool: HttpPool, monkeypatch: pytest.MonkeyPatch, **config: Any) -> OpenAIProvider:
    monkeypatch.setenv("TW_OPENAI_TEST_KEY", KEY)
    settings: dict[str, Any] = {"kind": "openai", "base_url": url, "api_key_env": "TW_OPENAI_TEST_KEY"}
    settings["timeouts"] = FAST
    return OpenAIProvider("oai", ProviderConfig(**(settings | config)), http=pool)


def call(**body: Any) -> UpstreamCall:
    return UpstreamCall(model=MODEL, body={"model": "auto", "messages": HELLO} | body)


async def collect(p: OpenAIProvider, c: UpstreamCall) -> list[Chunk]:
    return [chunk async for chunk in p.stream(c)]


async def collect_until_error(p: OpenAIProvider, c: UpstreamCall) -> tuple[list[Chunk], ProviderError]:
    chunks: list[Chunk] = []
    with pytest.raises(ProviderError) as info:
        async for chunk in p.stream(c):
            chunks.append(chunk)
    return chunks, info.value


def text_of(chunks: list[Chunk]) -> str:
    return "".join(ch["delta"].get("content") or "" for c in chunks for ch in c.data["choices"])


# -- the happy paths ---------------------------------------------------------------------------------


async def test_complete_sends_the_body_with_the_upstream_model_and_returns_it_unchanged(
    openai_upstream: FakeUpstream, pool: HttpPool, monkeypatch: pytest.MonkeyPatch
) -> None:
    p = provider(openai_upstream.url + "/", pool, monkeypatch, headers={"X-Org": "acme"})
    body = {"model": "auto", "messages": HELLO, "temperature": 0.2, "stream": False,
            "stream_options": {"include_usage": True}, "seed": 7}  # fmt: skip
    frozen = orjson.dumps(body)
    completion = await p.complete(UpstreamCall(model=MODEL, body=body))

    assert orjson.dumps(body) == frozen  # the caller's body is never mutated
    sent = openai_upstream.requests[-1]
    assert sent == {"model": "gpt-fake-mini", "messages": HELLO, "temperature": 0.2, "seed": 7}
    headers = openai_upstream.headers[-1]
    assert headers["authorization"] == f"Bearer {KEY}"
    assert headers["content-type"] == "application/json"
    assert headers["x-org"] == "acme"
    assert completion.body["object"] == "chat.completion"
    assert completion.body["model"] == "gpt-fake-mini"
    assert completion.body["choices"][0]["message"]["content"] == "Hello from fake"
    assert completion.body["usage"] == {"prompt_tokens": 4, "completion_tokens": 3, "total_tokens": 7}
    assert (completion.usage.input_tokens, completion.usage.output_tokens) == (4, 3)


async def test_no_api_key_env_sends_no_authorization(openai_upstream: FakeUpstream, pool: HttpPool) -> None:
    p = OpenAIProvider("local", ProviderConfig(kind="openai", base_url=openai_upstream.url), http=pool)
    await p.complete(call())
    assert "authorization" not in openai_upstream.headers[-1]
    await p.aclose()


def test_unset_key_is_a_config_error_naming_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TW_MISSING_KEY", raising=False)
    config = ProviderConfig(kind="openai", base_url="http://127.0.0.1:1/v1", api_key_env="TW_MISSING_KEY")
    with pytest.raises(ConfigError, match=r"providers\.oai\.api_key_env: TW_MISSING_KEY is not set"):
        OpenAIProvider("oai", config, http=HttpPool())


async def test_stream_yields_raw_chunks_and_usage(
    openai_upstream: FakeUpstream, pool: HttpPool, monkeypatch: pytest.MonkeyPatch
) -> None:
    openai_upstream.reply = "one two three four five"
    p = provider(openai_upstream.url, pool, monkeypatch)
    chunks = await collect(p, call(stream=True, stream_options={"include_obfuscation": False}))

    sent = openai_upstream.requests[-1]
    assert sent["stream"] is True
    assert sent["stream_options"] == {"include_obfuscation": False, "include_usage": True}
    assert chunks[0].data["choices"][0]["delta"]["role"] == "assistant"
    assert text_of(chunks) == "one two three four five"
    for chunk in chunks:
        assert chunk.raw is not None and orjson.loads(chunk.raw) == chunk.data
        assert chunk.data["object"] == "chat.completion.chunk"
    assert len({c.data["id"] for c in chunks}) == 1
    assert chunks[-2].data["choices"][0]["finish_reason"] == "stop"
    last = chunks[-1]
    assert last.data["choices"] == []
    assert last.usage is not None and (last.usage.input_tokens, last.usage.output_tokens) == (4, 5)
    assert all(c.usage is None for c in chunks[:-1])


async def test_stream_usage_is_requested_even_when_the_client_did_not(
    openai_upstream: FakeUpstream, pool: HttpPool, monkeypatch: pytest.MonkeyPatch
) -> None:
    chunks = await collect(provider(openai_upstream.url, pool, monkeypatch), call())
    assert openai_upstream.requests[-1]["stream_options"] == {"include_usage": True}
    assert chunks[-1].usage is not None


async def test_streams_reuse_one_connection(pool: HttpPool, monkeypatch: pytest.MonkeyPatch) -> None:
    async with FakeUpstream(words_per_chunk=2, chunk_delay_s=0.001) as up:
        p = provider(up.url, pool, monkeypatch)
        for _ in range(5):
            assert text_of(await collect(p, call())) == "Hello from fake"
            await p.complete(call())
        assert up.connections == 1


async def test_tool_call_round_trip(
    openai_upstream: FakeUpstream, pool: HttpPool, monkeypatch: pytest.MonkeyPatch
) -> None:
    p = provider(openai_upstream.url, pool, monkeypatch)
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]
    choice = {"type": "function", "function": {"name": "get_weather"}}
    first = await p.complete(call(tools=tools, tool_choice=choice))
    assert openai_upstream.requests[-1]["tools"] == tools
    message = first.body["choices"][0]["message"]
    assert first.body["choices"][0]["finish_reason"] == "tool_calls"
    assert message["tool_calls"][0]["function"] == {"name": "get_weather", "arguments": "{}"}

    history = [
        *HELLO,
        message,
        {"role": "tool", "tool_call_id": message["tool_calls"][0]["id"], "content": "sunny"},
    ]
    second = await p.complete(call(messages=history, tools=tools))
    assert openai_upstream.requests[-1]["messages"] == history
    assert second.body["choices"][0]["message"]["content"] == "Hello from fake"

    chunks = await collect(p, call(tools=tools, tool_choice="required"))
    calls = [tc for c in chunks for ch in c.data["choices"] for tc in ch["delta"].get("tool_calls") or ()]
    assert calls[0]["function"]["name"] == "get_weather"
    assert "".join(tc["function"]["arguments"] for tc in calls) == "{}"
    assert chunks[-2].data["choices"][0]["finish_reason"] == "tool_calls"


# -- every fault, as its ProviderError ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "cls"),
    [
        (400, UpstreamRejected),
        (401, UpstreamRejected),
        (404, UpstreamRejected),
        (408, UpstreamTimeout),
        (409, UpstreamUnavailable),
        (429, UpstreamRateLimited),
        (500, UpstreamUnavailable),
        (502, UpstreamUnavailable),
        (503, UpstreamUnavailable),
    ],
)
async def test_http_errors_map_to_classes(
    status: int, cls: type[ProviderError], openai_upstream: FakeUpstream, pool: HttpPool,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    p = provider(openai_upstream.url, pool, monkeypatch)
    openai_upstream.fail_next(2, status=status)
    with pytest.raises(cls) as info:
        await p.complete(call())
    assert info.value.status == status
    assert info.value.model == "cheap"
    assert str(info.value).startswith(f"cheap: HTTP {status} from oai: ")
    with pytest.raises(cls):  # streams fail the same way, before any chunk
        await collect(p, call())


async def test_error_message_is_the_upstreams_and_is_truncated(
    openai_upstream: FakeUpstream, pool: HttpPool, monkeypatch: pytest.MonkeyPatch
) -> None:
    p = provider(openai_upstream.url, pool, monkeypatch)
    openai_upstream.fail_next(
        1, status=400, body={"error": {"message": "Unsupported parameter: 'foo'.", "type": "x"}}
    )
    with pytest.raises(UpstreamRejected, match=r"^cheap: HTTP 400 from oai: Unsupported parameter: 'foo'\.$"):
        await p.complete(call())
    openai_upstream.fail_next(1, status=500, body={"error": {"message": "x" * 5000}})
    with pytest.raises(UpstreamUnavailable) as info:
        await p.complete(call())
    assert len(str(info.value)) < 350


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"Retry-After": "7"}, 7.0),
        ({"Retry-After": "0.25"}, 0.25),
        ({"retry-after-ms": "1500", "Retry-After": "2"}, 1.5),
        ({}, None),
    ],
)
async def test_429_retry_after(
    headers: dict[str, str], expected: float | None, openai_upstream: FakeUpstream, pool: HttpPool,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    openai_upstream.fail_next(1, status=429, headers=headers)
    with pytest.raises(UpstreamRateLimited) as info:
        await provider(openai_upstream.url, pool, monkeypatch).complete(call())
    assert info.value.retry_after == expected
    assert "Rate limit reached" in str(info.value)


async def test_429_retry_after_http_date(
    openai_upstream: FakeUpstream, pool: HttpPool, monkeypatch: pytest.MonkeyPatch
) -> None:
    when = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    openai_upstream.fail_next(1, status=429, retry_after=when)
    with pytest.raises(UpstreamRateLimited) as info:
        await provider(openai_upstream.url, pool, monkeypatch).complete(call())
    assert info.value.retry_after is not None and 27 <= info.value.retry_after <= 30


async def test_slow_upstream_times_out(
    openai_upstream: FakeUpstream, pool: HttpPool, monkeypatch: pytest.MonkeyPatch
) -> None:
    openai_upstream.delay_s = 2.0
    openai_upstream.fault("slow")
    p = provider(openai_upstream.url, pool, monkeypatch)
    loop = asyncio.get_running_loop()
    start = loop.time()
    with pytest.raises(UpstreamTimeout, match="first_byte"):
        await p.complete(call())
    with pytest.raises(UpstreamTimeout, match="first_byte"):
        await collect(p, call())
    assert loop.time() - start < 1.5


async def test_hanging_upstream_times_out(
    openai_upstream: FakeUpstream, pool: HttpPool, monkeypatch: pytest.MonkeyPatch
) -> None:
    openai_upstream.fault("hang")
    p = provider(openai_upstream.url, pool, monkeypatch)
    with pytest.raises(UpstreamTimeout):
        await p.complete(call())
    with pytest.raises(UpstreamTimeout):
        await collect(p, call())


async def test_silence_mid_stream_is_a_read_timeout(pool: HttpPool, monkeypatch: pytest.MonkeyPatch) -> None:
    async with FakeUpstream(chunk_delay_s=1.0) as up:
        p = provider(up.url, pool, monkeypatch, timeouts=Timeouts(first_byte=0.5, read=0.2, total=5))
        chunks, error = await collect_until_error(p, call())
    assert len(chunks) == 1  # the role chunk came at once; the next one was too late
    assert isinstance(error, UpstreamTimeout) and "timeouts.read" in str(error)


async def test_first_byte_and_read_timeouts_are_separate(
    pool: HttpPool, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a first event slower than `read` is fine while within `first_byte`
    async with FakeUpstream(delay_s=0.3, chunk_delay_s=0.05) as up:
        p = provider(up.url, pool, monkeypatch, timeouts=Timeouts(first_byte=1.0, read=0.2, total=5))
        assert text_of(await collect(p, call())) == "Hello from fake"


async def test_connection_refused(pool: HttpPool, monkeypatch: pytest.MonkeyPatch) -> None:
    p = provider(await refused_url(), pool, monkeypatch)
    with pytest.raises(UpstreamUnavailable, match="cannot connect to oai"):
        await p.complete(call())
    with pytest.raises(UpstreamUnavailable, match="cannot connect to oai"):
        await collect(p, call())


async def test_stream_cut_after_first_chunk(
    openai_upstream: FakeUpstream, pool: HttpPool, monkeypatch: pytest.MonkeyPatch
) -> None:
    openai_upstream.fault("cut_after_first_chunk")
    p = provider(openai_upstream.url, pool, monkeypatch)
    chunks, error = await collect_until_error(p, call())
    assert text_of(chunks) == "Hello "
    assert isinstance(error, StreamInterrupted)
    with pytest.raises(UpstreamUnavailable):  # a JSON answer cut off: the connection closed unanswered
        await p.complete(call())


async def test_error_event_inside_a_stream(
    openai_upstream: FakeUpstream, pool: HttpPool, monkeypatch: pytest.MonkeyPatch
) -> None:
    openai_upstream.fault("error_in_stream")
    chunks, error = await collect_until_error(provider(openai_upstream.url, pool, monkeypatch), call())
    assert text_of(chunks) == "Hello "
    assert type(error) is UpstreamUnavailable
    assert (
        str(error) == "cheap: server_error from oai: The server had an error while processing your request."
    )


async def test_garbage_is_a_provider_error_not_a_decode_error(
    openai_upstream: FakeUpstream, pool: HttpPool, monkeypatch: pytest.MonkeyPatch
) -> None:
    openai_upstream.fault("garbage")
    p = provider(openai_upstream.url, pool, monkeypatch)
    with pytest.raises(UpstreamUnavailable, match="invalid JSON from oai"):
        await p.complete(call())
    with pytest.raises(UpstreamUnavailable, match="invalid JSON from oai"):
        await collect(p, call())


async def test_200_without_choices_is_unavailable(
    openai_upstream: FakeUpstream, pool: HttpPool, monkeypatch: pytest.MonkeyPatch
) -> None:
    openai_upstream.fail_next(
        1, status=200, body={"error": {"message": "model overloaded", "type": "server_error"}}
    )
    with pytest.raises(UpstreamUnavailable, match="model overloaded"):
        await provider(openai_upstream.url, pool, monkeypatch).complete(call())


# -- the wire, byte by byte --------------------------------------------------------------------------


async def scripted(pieces: list[bytes], pause_s: float = 0.0) -> tuple[web.AppRunner, str]:
    """A server that answers every POST with these body pieces, each written (and flushed) apart."""

    async def handler(request: web.Request) -> web.StreamResponse:
        await request.read()
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        for piece in pieces:
            await response.write(piece)
            await asyncio.sleep(pause_s)
        await response.write_eof()
        return response

    app = web.Application()
    app.router.add_post("/v1/chat/completions", handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, f"http://127.0.0.1:{runner.addresses[0][1]}/v1"


def chunk_json(text: str) -> bytes:
    return orjson.dumps({"id": "c1", "object": "chat.completion.chunk", "choices": [
        {"index": 0, "delta": {"content": text}, "finish_reason": None}]})  # fmt: skip


async def test_events_split_across_reads_with_comments_and_crlf(
    pool: HttpPool, monkeypatch: pytest.MonkeyPatch
) -> None:
    wire = (
        b": keep-alive comment\r\n\r\n"
        b"id: 1\r\nevent: message\r\ndata: " + chunk_json("Hel") + b"\r\n\r\n"
        b"retry: 100\ndata: " + chunk_json("lo") + b"\n\n"
        b"data: [DONE]\n\n"
    )
    pieces = [wire[i : i + 7] for i in range(0, len(wire), 7)]  # every event split across writes
    runner, url = await scripted(pieces, pause_s=0.001)
    try:
        chunks = await collect(provider(url, pool, monkeypatch), call())
    finally:
        await runner.cleanup()
    assert text_of(chunks) == "Hello"
    assert [c.raw for c in chunks] == [chunk_json("Hel"), chunk_json("lo")]


async def test_body_ending_without_done_is_interrupted(
    pool: HttpPool, monkeypatch: pytest.MonkeyPatch
) -> None:
    runner, url = await scripted([b"data: " + chunk_json("partial") + b"\n\n"])
    try:
        chunks, error = await collect_until_error(provider(url, pool, monkeypatch), call())
    finally:
        await runner.cleanup()
    assert text_of(chunks) == "partial"
    assert isinstance(error, StreamInterrupted) and "stopped before its end marker" in str(error)


async def test_done_without_trailing_blank_line_still_ends(
    pool: HttpPool, monkeypatch: pytest.MonkeyPatch
) -> None:
    runner, url = await scripted([b"data: " + chunk_json("ok") + b"\n\ndata: [DONE]"])
    try:
        chunks = await collect(provider(url, pool, monkeypatch), call())
    finally:
        await runner.cleanup()
    assert text_of(chunks) == "ok"


# -- the key never leaks -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fault", "cls"),
    [
        ("401", UpstreamRejected),
        ("500", UpstreamUnavailable),
        ("429", UpstreamRateLimited),
        ("slow", UpstreamTimeout),
        ("refused", UpstreamUnavailable),
        ("cut_after_first_chunk", (UpstreamUnavailable, StreamInterrupted)),
        ("garbage", UpstreamUnavailable),
        ("error_in_stream", UpstreamUnavailable),
    ],
)
async def test_api_key_is_never_in_an_error(
    fault: str, cls: Any, pool: HttpPool, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with FakeUpstream(api_key="the-right-key" if fault == "401" else None, delay_s=0.0) as up:
        url = await refused_url() if fault == "refused" else up.url
        p = provider(url, pool, monkeypatch)
        echo = {"error": {"message": f"bad key {KEY} (Bearer {KEY})", "type": "server_error"}}
        if fault in ("500", "429"):
            up.fail_next(2, status=int(fault), body=echo)
        elif fault == "slow":
            up.delay_s = 1.0
            up.fault("slow")
        elif fault == "error_in_stream":
            up.fail_next(1, status=200, body=echo)  # the JSON answer: an error object with status 200
            up.fault("error_in_stream")
        elif fault not in ("401", "refused"):
            up.fault(fault)
        errors: list[BaseException] = []
        for attempt in (p.complete(call()), collect(p, call())):
            with pytest.raises(cls) as info:
                await attempt
            errors.append(info.value)
    for exc in errors:
        assert KEY not in str(exc) and KEY not in repr(exc.args)
        assert KEY not in str(exc.__cause__ or "")


# -- the fake itself speaks the real wire format -------------------------------------------------------


async def test_the_official_sdk_understands_the_fake(openai_upstream: FakeUpstream) -> None:
    import openai

    async with openai.AsyncOpenAI(base_url=openai_upstream.url, api_key=KEY, max_retries=0) as client:
        completion = await client.chat.completions.create(model="gpt-x", messages=HELLO)  # type: ignore[arg-type]
        assert completion.choices[0].message.content == "Hello from fake"
        stream = await client.chat.completions.create(
            model="gpt-x",
            messages=HELLO,  # type: ignore[arg-type]
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = [chunk async for chunk in stream]
        assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 3
        openai_upstream.fail_next(1, status=429, retry_after="3")
        with pytest.raises(openai.RateLimitError) as info:
            await client.chat.completions.create(model="gpt-x", messages=HELLO)  # type: ignore[arg-type]
        assert info.value.response.headers["retry-after"] == "3"
