"""``POST /v1/messages`` driven by the official anthropic SDK, in front of OpenAI and Anthropic fakes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import aiohttp
import anthropic
import pytest

from tests.harness import Stack, start_stack
from tierwise.access import hash_secret

CLASSIFY = [{"role": "user", "content": "Classify the sentiment of this review: 'Great battery.'"}]
CODE = [{"role": "user", "content": "Write a Python function that reverses a linked list."}]
WEATHER = {
    "name": "get_weather",
    "description": "The weather in a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
}


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    s = start_stack(tmp_path)
    yield s
    s.close()


def gateway(stack: Stack) -> str:
    return stack.base_url.removesuffix("/v1")


@pytest.fixture
def client(stack: Stack) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(base_url=gateway(stack), api_key="client-key", max_retries=0, timeout=20) as c:
        yield c


def test_openai_upstream_answers_an_anthropic_client(stack: Stack, client: anthropic.Anthropic) -> None:
    raw = client.messages.with_raw_response.create(
        model="auto", max_tokens=200, system="Be brief.", messages=CLASSIFY
    )
    message = raw.parse()
    assert message.type == "message" and message.role == "assistant"
    assert [block.type for block in message.content] == ["text"]
    assert message.content[0].text == "cheap answer here"  # type: ignore[union-attr]
    assert message.stop_reason == "end_turn"
    assert message.usage.output_tokens == 3 and message.usage.input_tokens > 0
    assert raw.headers["x-tierwise-model"] == "draft-1"
    assert message.id == "msg_" + raw.headers["x-tierwise-request-id"].removeprefix("req_")
    sent = stack.upstreams["cheap"].requests[-1]
    assert sent["messages"][0] == {"role": "system", "content": "Be brief."}
    assert sent["max_tokens"] == 200
    row = stack.rows()[-1]
    assert row.final_model == "draft-1" and row.http_status == 200 and row.cost_usd > 0
    assert float(raw.headers["x-tierwise-cost-usd"]) == pytest.approx(row.cost_usd, abs=1e-8)


def test_anthropic_upstream_with_system_blocks_images_and_stops(
    stack: Stack, client: anthropic.Anthropic
) -> None:
    image = {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}
    message = client.messages.create(
        model="exec-1",
        max_tokens=50,
        system=[{"type": "text", "text": "You review code."}],
        stop_sequences=["here"],
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "image", "source": image},  # type: ignore[list-item, typeddict-item]
                    {"type": "text", "text": "Write a Python function for this diagram."},
                ],
            }
        ],
    )
    assert message.content[0].text == "strong answer "  # type: ignore[union-attr]
    sent = stack.upstreams["strong"].requests[-1]
    assert sent["system"] == "You review code." and sent["stop_sequences"] == ["here"]
    assert sent["messages"][0]["content"][0] == {"type": "image", "source": image}
    assert stack.rows()[-1].final_model == "exec-1"


@pytest.mark.parametrize("model", ["draft-1", "exec-1"])
def test_tool_use_round_trip(stack: Stack, client: anthropic.Anthropic, model: str) -> None:
    asked = [{"role": "user", "content": "What is the weather in Paris? Use get_weather."}]
    first = client.messages.create(model=model, max_tokens=100, tools=[WEATHER], messages=asked)  # type: ignore[list-item]
    assert first.stop_reason == "tool_use"
    call = first.content[-1]
    assert call.type == "tool_use" and call.name == "get_weather" and call.input == {}
    second = client.messages.create(
        model=model,
        max_tokens=100,
        tools=[WEATHER],  # type: ignore[list-item]
        tool_choice={"type": "none"},
        messages=[
            *asked,  # type: ignore[list-item]
            {"role": "assistant", "content": first.content},  # type: ignore[typeddict-item]
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": call.id, "content": "18C and sunny"},
                    {"type": "text", "text": "So?"},
                ],
            },
        ],
    )
    assert second.stop_reason == "end_turn" and second.content[0].type == "text"
    upstream = stack.upstreams["cheap" if model == "draft-1" else "strong"]
    sent = upstream.requests[-1]
    if model == "draft-1":  # canonical chat: the result is a tool message right after the call
        roles = [m["role"] for m in sent["messages"]]
        assert roles == ["user", "assistant", "tool", "user"]
        assert sent["messages"][2] == {"role": "tool", "tool_call_id": call.id, "content": "18C and sunny"}
        assert sent["tool_choice"] == "none"
    else:  # and back to the Messages API for an Anthropic upstream
        assert sent["messages"][2]["content"][0]["type"] == "tool_result"


def test_streaming_text_events_and_final_message(stack: Stack, client: anthropic.Anthropic) -> None:
    for model, upstream in (("auto", "cheap"), ("exec-1", "strong")):
        prompt = CLASSIFY if model == "auto" else CODE
        with client.messages.stream(model=model, max_tokens=100, messages=prompt) as stream:  # type: ignore[arg-type]
            kinds = [event.type for event in stream]
            final = stream.get_final_message()
        reply = f"{upstream} answer here"
        assert final.content[0].text == reply  # type: ignore[union-attr]
        assert kinds[0] == "message_start" and kinds[-1] == "message_stop"
        assert "content_block_start" in kinds and "content_block_stop" in kinds and "message_delta" in kinds
        assert final.stop_reason == "end_turn" and final.usage.output_tokens == 3
        row = stack.rows()[-1]
        assert row.stream and row.output_tokens == 3 and row.cost_usd > 0
        assert final.usage.input_tokens == row.input_tokens > 0  # reported on message_delta


def test_streamed_tool_use(stack: Stack, client: anthropic.Anthropic) -> None:
    with client.messages.stream(
        model="draft-1",
        max_tokens=100,
        tools=[WEATHER],  # type: ignore[list-item]
        tool_choice={"type": "any"},
        messages=CLASSIFY,  # type: ignore[arg-type]
    ) as stream:
        final = stream.get_final_message()
    assert final.stop_reason == "tool_use"
    assert final.content[-1].type == "tool_use" and final.content[-1].name == "get_weather"


def test_failure_after_content_ends_with_an_error_event(stack: Stack, client: anthropic.Anthropic) -> None:
    stack.upstreams["cheap"].fault("error_in_stream")
    texts = []
    with (
        pytest.raises(anthropic.APIStatusError, match="interrupted"),
        client.messages.stream(model="auto", max_tokens=100, messages=CLASSIFY) as stream,  # type: ignore[arg-type]
    ):
        for text in stream.text_stream:
            texts.append(text)
    assert texts  # content had been sent: no fallback, an error instead
    row = stack.rows()[-1]
    assert row.status == "interrupted" and row.http_status == 502


def test_errors_are_anthropic_shaped(stack: Stack, client: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.BadRequestError) as caught:
        client.messages.create(model="auto", max_tokens=10, messages=[{"role": "system", "content": "x"}])  # type: ignore[list-item, typeddict-item]
    assert caught.value.body == {
        "type": "error",
        "error": {
            "type": "invalid_request_error",
            "message": "messages[0].role: must be 'user' or 'assistant', got 'system'",
        },
    }
    with pytest.raises(anthropic.BadRequestError, match="max_tokens"):
        client.messages.create(model="auto", max_tokens=0, messages=CLASSIFY)  # type: ignore[arg-type]
    stack.upstreams["cheap"].fault("500")
    stack.upstreams["backup"].fault("500")
    stack.upstreams["strong"].fault("500")
    with pytest.raises(anthropic.APIStatusError) as failed:
        client.messages.create(model="auto", max_tokens=10, messages=CLASSIFY)  # type: ignore[arg-type]
    assert failed.value.status_code >= 500
    assert failed.value.body["type"] == "error" and failed.value.body["error"]["type"] == "api_error"  # type: ignore[index]


async def test_oversized_and_malformed_bodies(stack: Stack) -> None:
    url = gateway(stack) + "/v1/messages"
    deep: object = "x"
    for _ in range(stack.router.config.server.max_json_depth + 2):
        deep = [deep]
    async with aiohttp.ClientSession() as http:
        async with http.post(url, data=b"{nope") as r:
            assert r.status == 400 and (await r.json())["error"]["type"] == "invalid_request_error"
        body = {"model": "auto", "max_tokens": 5, "messages": [{"role": "user", "content": deep}]}
        async with http.post(url, json=body) as r:
            assert r.status == 400 and "max_json_depth" in (await r.json())["error"]["message"]
        async with http.post(url, data=b"x" * (300 * 1024)) as r:
            doc = await r.json()
            assert r.status == 413 and doc["error"]["type"] == "request_too_large"


def test_models_list_in_the_anthropic_shape(stack: Stack, client: anthropic.Anthropic) -> None:
    page = client.models.list()
    ids = [model.id for model in page.data]
    assert ids[0] == "auto" and {"draft-1", "review-1", "exec-1"} <= set(ids)
    assert page.data[0].type == "model" and page.data[0].created_at.year >= 2024


def test_x_api_key_is_checked(tmp_path: Path) -> None:
    secret = "tw-anthro-secret-0123456789abcdefghijklmnopqrst"
    stack = start_stack(
        tmp_path,
        auth={"mode": "keys"},
        tenants={"acme": {}},
        keys=[{"id": "anthro", "tenant": "acme", "hash": hash_secret(secret)}],
    )
    try:
        with anthropic.Anthropic(base_url=gateway(stack), api_key="wrong", max_retries=0) as bad:
            with pytest.raises(anthropic.AuthenticationError) as caught:
                bad.messages.create(model="auto", max_tokens=10, messages=CLASSIFY)  # type: ignore[arg-type]
            assert caught.value.body["error"]["type"] == "authentication_error"  # type: ignore[index]
        with anthropic.Anthropic(base_url=gateway(stack), api_key=secret, max_retries=0) as good:
            good.messages.create(model="auto", max_tokens=10, messages=CLASSIFY)  # type: ignore[arg-type]
        assert stack.rows()[-1].key_id == "anthro"
    finally:
        stack.close()


def _user(*blocks: object) -> list[object]:
    return [{"role": "user", "content": list(blocks)}]


# (the field the 400 names, what replaces the field of a good body)
HOSTILE: list[tuple[str, dict[str, object]]] = [
    ("model", {"model": 5}),
    ("max_tokens", {"max_tokens": True}),
    ("messages", {"messages": "hi"}),
    ("messages[0].role", {"messages": [None]}),
    ("messages[0].content", {"messages": _user()}),
    ("messages[0].content[0].source", {"messages": _user({"type": "image", "source": "x"})}),
    ("messages[0].content[0].text", {"messages": _user({"type": "text", "text": 5})}),
    ("messages[0].content[0].tool_use_id", {"messages": _user({"type": "tool_result"})}),
    ("messages[0].content[0]", {"messages": [{"role": "assistant", "content": [{"type": "tool_use"}]}]}),
    ("system", {"system": 5}),
    ("system[0]", {"system": [{"type": "image"}]}),
    ("tools", {"tools": {"name": "x"}}),
    ("tools[0].type", {"tools": [{"type": "web_search_20250305", "name": "w"}]}),
    ("tool_choice.type", {"tool_choice": "auto"}),
    ("tool_choice.name", {"tool_choice": {"type": "tool"}}),
    ("stop_sequences", {"stop_sequences": "END"}),
    ("temperature", {"temperature": "hot"}),
    ("stream", {"stream": "yes"}),
]


@pytest.mark.parametrize(("param", "change"), HOSTILE)
async def test_malformed_bodies_get_anthropic_400s(
    stack: Stack, param: str, change: dict[str, object]
) -> None:
    body = {"model": "auto", "max_tokens": 5, "messages": CLASSIFY, **change}
    async with aiohttp.ClientSession() as http, http.post(gateway(stack) + "/v1/messages", json=body) as r:
        doc = await r.json()
    assert r.status == 400, doc
    assert doc["type"] == "error" and doc["error"]["type"] == "invalid_request_error"
    assert doc["error"]["message"].startswith(f"{param}: ")


def test_a_cut_answer_stops_for_max_tokens(client: anthropic.Anthropic) -> None:
    message = client.messages.create(model="exec-1", max_tokens=2, messages=CODE)  # type: ignore[arg-type]
    assert message.stop_reason == "max_tokens" and message.content[0].text == "strong answer"  # type: ignore[union-attr]
    with client.messages.stream(model="draft-1", max_tokens=2, messages=CLASSIFY) as stream:  # type: ignore[arg-type]
        assert stream.get_final_message().stop_reason == "max_tokens"
