"""``POST /v1/responses`` (stateless) driven by the official openai SDK, in front of fake upstreams."""

from __future__ import annotations

import aiohttp
import openai
import pytest

from tests.harness import Stack

CLASSIFY = "Classify the sentiment of this review: 'Great battery.'"
CODE = "Write a Python function that reverses a linked list."
WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "The weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
}


def test_string_input_with_instructions(stack: Stack, client: openai.OpenAI) -> None:
    raw = client.responses.with_raw_response.create(
        model="auto",
        input=CLASSIFY,
        instructions="Be brief.",
        reasoning={"effort": "low"},
        max_output_tokens=50,
    )
    response = raw.parse()
    assert response.output_text == "cheap answer here"
    assert response.status == "completed" and response.object == "response"
    assert response.usage is not None and response.usage.output_tokens == 3
    assert raw.headers["x-tierwise-model"] == "draft-1"
    assert response.id == "resp_" + raw.headers["x-tierwise-request-id"].removeprefix("req_")
    sent = stack.upstreams["cheap"].requests[-1]
    assert sent["reasoning_effort"] == "low" and sent["max_tokens"] == 50
    assert sent["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": CLASSIFY},
    ]
    row = stack.rows()[-1]
    assert row.final_model == "draft-1" and row.cost_usd > 0 and not row.stream


def test_items_and_function_calls_over_the_anthropic_wire(stack: Stack, client: openai.OpenAI) -> None:
    asked = [
        {"role": "user", "content": [{"type": "input_text", "text": "Weather in Paris? Use get_weather."}]}
    ]
    first = client.responses.create(model="exec-1", input=asked, tools=[WEATHER])  # type: ignore[arg-type, list-item]
    call = first.output[-1]
    assert call.type == "function_call" and call.name == "get_weather" and call.arguments == "{}"
    second = client.responses.create(
        model="exec-1",
        tools=[WEATHER],  # type: ignore[list-item]
        tool_choice="none",
        input=[
            *asked,  # type: ignore[list-item]
            {
                "type": "function_call",
                "call_id": call.call_id,
                "name": call.name,
                "arguments": call.arguments,
            },
            {"type": "function_call_output", "call_id": call.call_id, "output": "18C and sunny"},
        ],
    )
    assert second.output_text == "strong answer here"
    sent = stack.upstreams["strong"].requests[-1]
    assert [m["role"] for m in sent["messages"]] == ["user", "assistant", "user"]
    assert sent["messages"][1]["content"][0]["type"] == "tool_use"
    assert sent["messages"][2]["content"][0] == {
        "type": "tool_result",
        "tool_use_id": call.call_id,
        "content": "18C and sunny",
    }


def test_streaming_events(stack: Stack, client: openai.OpenAI) -> None:
    for model, prompt, upstream in (("auto", CLASSIFY, "cheap"), ("exec-1", CODE, "strong")):
        events = list(client.responses.create(model=model, input=prompt, stream=True))
        kinds = [event.type for event in events]
        assert kinds[:3] == ["response.created", "response.in_progress", "response.output_item.added"]
        assert kinds[-1] == "response.completed"
        text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
        assert text == f"{upstream} answer here"
        final = events[-1].response  # type: ignore[union-attr]
        assert final.output_text == text and final.usage is not None and final.usage.output_tokens == 3
        assert [e.sequence_number for e in events] == list(range(len(events)))
        row = stack.rows()[-1]
        assert row.stream and row.output_tokens == 3 and row.cost_usd > 0


def test_sdk_stream_helper_with_a_function_call(client: openai.OpenAI) -> None:
    with client.responses.stream(
        model="draft-1", input=CLASSIFY, tools=[WEATHER], tool_choice="required"
    ) as s:  # type: ignore[list-item]
        final = s.get_final_response()
    assert final.output[0].type == "function_call" and final.output[0].name == "get_weather"


def test_failure_after_content_raises_in_the_sdk(stack: Stack, client: openai.OpenAI) -> None:
    stack.upstreams["cheap"].fault("error_in_stream")
    seen = []
    with pytest.raises(openai.APIError, match="interrupted"):
        for event in client.responses.create(model="auto", input=CLASSIFY, stream=True):
            seen.append(event.type)
    assert "response.output_text.delta" in seen and "response.completed" not in seen
    assert stack.rows()[-1].status == "interrupted"


def test_stateful_and_bad_requests_are_400(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError, match="stateless") as caught:
        client.responses.create(model="auto", input="hi", previous_response_id="resp_123")
    assert caught.value.param == "previous_response_id"
    with pytest.raises(openai.BadRequestError, match=r"input\[0\]\.role"):
        client.responses.create(model="auto", input=[{"role": "robot", "content": "hi"}])  # type: ignore[list-item, typeddict-item]
    with pytest.raises(openai.BadRequestError, match="only function tools"):
        client.responses.create(model="auto", input="hi", tools=[{"type": "web_search"}])


# (the field the 400 names, what replaces the field of a good body)
HOSTILE: list[tuple[str, dict[str, object]]] = [
    ("model", {"model": None}),
    ("input", {"input": []}),
    ("input[0]", {"input": ["hi"]}),
    ("input[0].content", {"input": [{"role": "user", "content": 5}]}),
    ("input[0].content[0]", {"input": [{"role": "user", "content": [5]}]}),
    ("input[0].content[0].type", {"input": [{"role": "user", "content": [{"type": "input_audio"}]}]}),
    ("input[0].content[0].image_url", {"input": [{"role": "user", "content": [{"type": "input_image"}]}]}),
    ("input[0].call_id", {"input": [{"type": "function_call", "name": "f", "arguments": "{}"}]}),
    ("input[0].type", {"input": [{"type": "item_reference", "id": "msg_1"}]}),
    ("instructions", {"instructions": ["x"]}),
    ("max_output_tokens", {"max_output_tokens": 0}),
    ("tools[0].name", {"tools": [{"type": "function"}]}),
    ("tool_choice", {"tool_choice": "sometimes"}),
    ("text.format", {"text": {"format": {"type": "json_schema"}}}),
    ("conversation", {"conversation": "conv_1"}),
    ("temperature", {"temperature": 3}),
]


@pytest.mark.parametrize(("param", "change"), HOSTILE)
async def test_malformed_bodies_get_openai_400s(stack: Stack, param: str, change: dict[str, object]) -> None:
    body = {"model": "auto", "input": CLASSIFY, **change}
    async with aiohttp.ClientSession() as http, http.post(stack.base_url + "/responses", json=body) as r:
        doc = await r.json()
    assert r.status == 400, doc
    assert doc["error"]["param"] == param and doc["error"]["message"].startswith(f"{param}: ")


def test_a_cut_answer_is_incomplete(client: openai.OpenAI) -> None:
    response = client.responses.create(model="auto", input=CLASSIFY, max_output_tokens=2)
    assert response.status == "incomplete" and response.incomplete_details is not None
    assert (
        response.incomplete_details.reason == "max_output_tokens" and response.output_text == "cheap answer"
    )
    events = list(client.responses.create(model="auto", input=CLASSIFY, max_output_tokens=2, stream=True))
    assert events[-1].type == "response.incomplete"
