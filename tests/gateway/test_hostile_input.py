"""What a careless or hostile client can send: every case is a 4xx in the OpenAI format naming the
field, and afterwards the gateway and its ledger still serve the next request."""

from __future__ import annotations

import gzip
import json
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import openai
import orjson
import pytest

from tests.harness import Stack, start_stack

HI = [{"role": "user", "content": "hi"}]


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    s = start_stack(
        tmp_path, storage={"ledger": f"sqlite:///{tmp_path / 'ledger.db'}", "capture_prompts": True}
    )
    yield s
    s.close()


def post(stack: Stack, body: bytes, headers: dict[str, str] | None = None) -> tuple[int, dict[str, Any]]:
    """One raw POST to /v1/chat/completions: (status, parsed JSON body)."""

    async def send() -> tuple[int, dict[str, Any]]:
        async with (
            aiohttp.ClientSession() as http,
            http.post(
                f"{stack.base_url}/chat/completions",
                data=body,
                headers={"Content-Type": "application/json", **(headers or {})},
            ) as r,
        ):
            return r.status, orjson.loads(await r.read())

    return stack.loop.run(send())


def still_serving(stack: Stack, client: openai.OpenAI) -> None:
    """The next ordinary request is answered and its row reaches the ledger."""
    raw = client.chat.completions.with_raw_response.create(model="auto", messages=HI)
    request_id = raw.headers["x-tierwise-request-id"]
    assert request_id in {row.id for row in stack.rows()}


def nested(depth: int) -> str:
    """JSON text of a value nested ``depth`` arrays deep (deeper than any encoder will write)."""
    return "[" * depth + '"x"' + "]" * depth


@pytest.mark.parametrize(
    ("headers", "metadata", "param"),
    [
        ({"x-tierwise-latency-ms": "99999999999999999999"}, None, "x-tierwise-latency-ms"),
        ({"x-tierwise-latency-ms": "0"}, None, "x-tierwise-latency-ms"),
        ({"x-tierwise-latency-ms": "3600001"}, None, "x-tierwise-latency-ms"),
        ({"x-tierwise-latency-ms": "１２３"}, None, "x-tierwise-latency-ms"),
        (None, {"latency_ms": 1e20}, "metadata.latency_ms"),
        (None, {"latency_ms": 99999999999999999999}, "metadata.latency_ms"),
        (None, {"tierwise_latency_ms": -5}, "metadata.tierwise_latency_ms"),
        (None, {"task": ["code"]}, "metadata.task"),
        (None, {"user_tier": "gold\nsilver"}, "metadata.user_tier"),
        ({"x-tierwise-user-tier": "g" * 65}, None, "x-tierwise-user-tier"),
        ({"x-tierwise-risk": "extreme"}, None, "x-tierwise-risk"),
    ],
)
def test_hints_out_of_range_are_400s_and_never_stop_the_ledger(
    stack: Stack, client: openai.OpenAI, headers: dict[str, str] | None, metadata: Any, param: str
) -> None:
    body: dict[str, Any] = {"model": "auto", "messages": HI}
    if metadata is not None:
        body["metadata"] = metadata
    status, error = post(stack, json.dumps(body).encode(), headers)
    assert status == 400
    assert error["error"]["param"] == param
    assert error["error"]["message"].startswith(param)
    still_serving(stack, client)


def test_a_header_of_raw_bytes_is_a_400(stack: Stack, client: openai.OpenAI) -> None:
    async def send() -> int:
        async with aiohttp.ClientSession() as http:
            request = f"{stack.base_url}/chat/completions"
            headers = {"Content-Type": "application/json", "x-tierwise-user-tier": "gold\udcff".encode(
                "utf-8", "surrogateescape").decode("latin-1")}  # fmt: skip
            async with http.post(
                request, data=orjson.dumps({"model": "auto", "messages": HI}), headers=headers
            ) as r:
                return r.status

    assert stack.loop.run(send()) == 400
    still_serving(stack, client)


@pytest.mark.parametrize("depth", [64, 254, 255, 600, 1000])
def test_deep_nesting_is_a_400_not_a_500(stack: Stack, client: openai.OpenAI, depth: int) -> None:
    content = '[{"type": "text", "text": "hi", "extra": ' + nested(depth) + "}]"
    raw = '{"model": "auto", "messages": [{"role": "user", "content": ' + content + "}]}"
    status, error = post(stack, raw.encode())
    assert status == 400
    assert error["error"]["code"] == "nesting_too_deep"
    assert error["error"]["param"].startswith("messages[0].content[0].extra")
    still_serving(stack, client)


def test_deeply_nested_tools_are_a_400(stack: Stack, client: openai.OpenAI) -> None:
    tools = '[{"type": "function", "function": {"name": "f", "parameters": ' + nested(300) + "}}]"
    raw = '{"model": "auto", "messages": [{"role": "user", "content": "hi"}], "tools": ' + tools + "}"
    status, error = post(stack, raw.encode())
    assert status == 400
    assert error["error"]["param"].startswith("tools[0].function.parameters")
    still_serving(stack, client)


def test_json_nested_to_the_parsers_limit_is_a_400(stack: Stack, client: openai.OpenAI) -> None:
    # orjson parses 1,024 levels: the body is valid JSON, just too deep for a chat request.
    raw = b'{"model": "auto", "messages": [{"role": "user", "content": "hi"}], "x": ' + b"[" * 1000
    raw += b"]" * 1000 + b"}"
    status, error = post(stack, raw)
    assert status == 400 and error["error"]["param"].startswith("x")
    still_serving(stack, client)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("max_tokens", 2**64),
        ("max_tokens", -1),
        ("max_tokens", 1e20),
        ("n", 0),
        ("n", 10**6),
        ("seed", 2**70),
        ("temperature", 1e300),
        ("top_p", -0.5),
        ("tool_choice", {"type": "function", "function": "f"}),
        ("tools", [{"type": "function", "function": {"name": "f"}}] * 129),
        ("metadata", {f"k{i}": "v" for i in range(65)}),
        ("metadata", {"note": {"nested": True}}),
        ("stream_options", {"include_usage": "yes"}),
        ("response_format", "json"),
        ("model", "m" * 300),
    ],
)
def test_fields_out_of_range_are_400s_naming_the_field(
    stack: Stack, client: openai.OpenAI, field: str, value: Any
) -> None:
    body = {"model": "auto", "messages": HI, field: value}
    status, error = post(stack, json.dumps(body).encode())  # the standard encoder writes any integer
    assert status == 400, error
    assert error["error"]["param"].startswith(field)
    still_serving(stack, client)


def test_too_many_messages_and_too_much_text_are_4xx(stack: Stack, client: openai.OpenAI) -> None:
    many = [{"role": "user", "content": "a"}] * 4097
    status, error = post(stack, orjson.dumps({"model": "auto", "messages": many}))
    assert status == 400 and error["error"]["param"] == "messages"
    still_serving(stack, client)


def test_a_body_that_is_not_what_its_content_encoding_says_is_a_400(
    stack: Stack, client: openai.OpenAI
) -> None:
    async def session_of_three() -> list[tuple[int, dict[str, Any]]]:
        # One connection for all three: a bad body must not break the pooled connection after it.
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1)) as http:
            out = []
            ok = orjson.dumps({"model": "auto", "messages": HI})
            for data, encoding in [
                (b"not gzip at all", "gzip"),
                (gzip.compress(ok), "gzip"),
                (b"xx", "deflate"),
            ]:
                headers = {"Content-Type": "application/json", "Content-Encoding": encoding}
                async with http.post(f"{stack.base_url}/chat/completions", data=data, headers=headers) as r:
                    out.append((r.status, orjson.loads(await r.read())))
            return out

    (bad, good, bad_deflate) = stack.loop.run(session_of_three())
    assert bad[0] == 400 and bad[1]["error"]["code"] == "invalid_content_encoding"
    assert good[0] == 200 and good[1]["choices"][0]["message"]["content"]
    assert bad_deflate[0] == 400
    still_serving(stack, client)


def test_compressed_bodies_decode_and_bombs_are_413(stack: Stack, client: openai.OpenAI) -> None:
    body = orjson.dumps({"model": "auto", "messages": HI})
    status, answer = post(stack, zlib.compress(body), {"Content-Encoding": "deflate"})
    assert status == 200 and answer["choices"]
    bomb = gzip.compress(b'{"model": "auto", "x": "' + b"a" * (10 * 1024 * 1024) + b'"}')
    assert len(bomb) < 64 * 1024  # well under the 256 kB body limit of the test fleet
    status, error = post(stack, bomb, {"Content-Encoding": "gzip"})
    assert status == 413 and error["error"]["code"] == "request_too_large"
    status, error = post(stack, body, {"Content-Encoding": "br"})
    assert status == 415 and error["error"]["param"] == "Content-Encoding"
    still_serving(stack, client)


def test_a_request_no_model_can_fit_is_a_400_context_length_exceeded(
    stack: Stack, client: openai.OpenAI
) -> None:
    # Larger than the fleet's largest window (exec-1, 200k): refused before anything is called.
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="auto", messages=HI, max_tokens=250_000)
    error = info.value.body
    assert isinstance(error, dict) and error["code"] == "context_length_exceeded"
    assert "250000 for the completion" in error["message"] and "200000" in error["message"]
    # Fits the fleet, but not the model asked for by name: still the client's to fix, and logged.
    long = [{"role": "user", "content": "word " * 20_000}]  # ~25k tokens > draft-1's 16k
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="draft-1", messages=long)
    error = info.value.body
    assert isinstance(error, dict) and error["code"] == "context_length_exceeded"
    assert "context window is 16000" in error["message"]
    assert all(not u.requests for u in stack.upstreams.values())  # no upstream was called
    row = stack.rows()[-1]
    assert row.http_status == 400 and row.attempts[0].status == "skipped"
    still_serving(stack, client)


def test_a_server_failure_is_not_recorded_as_the_client_going_away(
    stack: Stack, client: openai.OpenAI
) -> None:
    async def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("a bug")

    stack.router.dispatcher.complete = broken  # type: ignore[method-assign]
    status, error = post(stack, orjson.dumps({"model": "auto", "messages": HI}))
    assert status == 500 and "a bug" not in error["error"]["message"]
    row = stack.rows()[-1]
    assert row.http_status == 500 and row.status == "error" and row.error == "internal error: RuntimeError"
