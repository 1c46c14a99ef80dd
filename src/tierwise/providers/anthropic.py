"""Adapter for the Anthropic Messages API (``POST {base_url}/v1/messages``).

Translates the canonical OpenAI chat-completions request into a Messages request, and the answer
back into an OpenAI ``chat.completion`` (or, streamed, ``chat.completion.chunk`` objects). What
OpenAI can say and Anthropic cannot is dropped here, each case with its reason.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Any

import orjson

from ..config import ModelEntry, ProviderConfig
from ..errors import UpstreamRejected
from ..http import HttpPool
from ._http import Upstream
from .base import Chunk, Completion, UpstreamCall, Usage

DEFAULT_VERSION = "2023-06-01"
DEFAULT_MAX_TOKENS = 4096  # Anthropic requires max_tokens; used when neither request nor model sets one

# Anthropic's stop_reason → OpenAI's finish_reason (the inbound /v1/messages reads it in reverse).
FINISH_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}
_IMAGE_TYPES = frozenset({"image/jpeg", "image/png", "image/gif", "image/webp"})


# -- request: OpenAI → Anthropic -------------------------------------------------------------------


def _source(url: str) -> dict[str, Any]:
    """An Anthropic ``source`` for a URL: ``data:`` URLs become base64 sources, others URL sources."""
    if not url.startswith("data:"):
        return {"type": "url", "url": url}
    header, _, data = url[5:].partition(",")
    media_type, _, encoding = header.partition(";")
    if encoding != "base64":
        raise ValueError(f"only base64 data: URLs can be sent to Anthropic, got {header!r}")
    return {"type": "base64", "media_type": media_type, "data": data}


def _block(part: Any) -> dict[str, Any] | None:
    """One OpenAI content part as an Anthropic content block; None for an empty or unknown part."""
    if isinstance(part, str):
        part = {"type": "text", "text": part}
    kind = part.get("type")
    if kind == "text":
        if not part.get("text"):
            return None  # Anthropic rejects empty text blocks
        block: dict[str, Any] = {"type": "text", "text": part["text"]}
    elif kind == "image_url":
        image = part.get("image_url")
        source = _source(image.get("url", "") if isinstance(image, dict) else str(image))
        if source["type"] == "base64" and source["media_type"] == "application/pdf":
            block = {"type": "document", "source": source}
        else:
            block = {"type": "image", "source": source}
    elif kind == "file" and isinstance(part.get("file"), dict) and part["file"].get("file_data"):
        block = {"type": "document", "source": _source(part["file"]["file_data"])}
    else:
        return None  # audio, file ids …: nothing equivalent to send
    if part.get("cache_control"):  # clients that know Anthropic mark cache breakpoints on parts
        block["cache_control"] = part["cache_control"]
    return block


def _blocks(content: Any) -> list[dict[str, Any]]:
    if content is None:
        return []
    parts = [content] if isinstance(content, str) else content
    return [block for block in map(_block, parts) if block is not None]


def _text(content: Any) -> str:
    return "\n".join(block["text"] for block in _blocks(content) if block["type"] == "text")


def _tool_use(call: dict[str, Any]) -> dict[str, Any]:
    function = call.get("function") or {}
    arguments = function.get("arguments") or "{}"
    try:
        value = orjson.loads(arguments) if isinstance(arguments, str) else arguments
    except orjson.JSONDecodeError:
        value = None
    if not isinstance(value, dict):
        raise ValueError(
            f"tool call {call.get('id')!r}: arguments must be a JSON object, got {arguments[:80]!r}"
        )
    return {"type": "tool_use", "id": call.get("id"), "name": function.get("name"), "input": value}


def _tool_result(message: dict[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = {"type": "tool_result", "tool_use_id": message.get("tool_call_id")}
    content = message.get("content")
    if isinstance(content, str):
        if content:
            result["content"] = content
    elif content:
        result["content"] = _blocks(content)
    return result


def _append(messages: list[dict[str, Any]], role: str, blocks: list[dict[str, Any]]) -> None:
    """Add a turn, merging it into the previous one of the same role: Anthropic requires user and
    assistant turns to alternate (OpenAI's consecutive tool messages become one user turn)."""
    if not blocks:
        return  # Anthropic rejects empty turns
    if messages and messages[-1]["role"] == role:
        messages[-1]["content"].extend(blocks)
    else:
        messages.append({"role": role, "content": blocks})


def _tool(function: dict[str, Any]) -> dict[str, Any]:
    tool = {"name": function.get("name")}
    if function.get("description"):
        tool["description"] = function["description"]
    tool["input_schema"] = function.get("parameters") or {"type": "object", "properties": {}}
    return tool


def _tool_choice(choice: Any, parallel: Any) -> dict[str, Any] | None:
    if choice == "none":
        return {"type": "none"}
    if choice == "required":
        out: dict[str, Any] = {"type": "any"}
    elif isinstance(choice, dict) and isinstance(choice.get("function"), dict):
        out = {"type": "tool", "name": choice["function"].get("name")}
    elif choice == "auto" or parallel is False:
        out = {"type": "auto"}
    else:
        return None
    if parallel is False:
        out["disable_parallel_tool_use"] = True
    return out


def to_messages_request(body: dict[str, Any], model: ModelEntry) -> dict[str, Any]:
    """The Messages API body for an OpenAI chat-completions body. Raises ValueError for what cannot be
    translated (tool arguments that are not a JSON object, non-base64 data URLs)."""
    system: list[str] = []
    messages: list[dict[str, Any]] = []
    for message in body.get("messages") or ():
        role = message.get("role")
        if role in ("system", "developer"):
            text = _text(message.get("content"))
            if text:
                system.append(text)
        elif role == "user":
            _append(messages, "user", _blocks(message.get("content")))
        elif role == "assistant":
            blocks = _blocks(message.get("content"))
            blocks.extend(_tool_use(call) for call in message.get("tool_calls") or ())
            _append(messages, "assistant", blocks)
        elif role == "tool":
            _append(messages, "user", [_tool_result(message)])
    limit = body.get("max_completion_tokens") or body.get("max_tokens") or model.max_output_tokens
    out: dict[str, Any] = {
        "model": model.upstream,
        "max_tokens": limit or DEFAULT_MAX_TOKENS,
        "messages": messages,
    }
    if system:
        out["system"] = "\n\n".join(system)
    if body.get("temperature") is not None:
        # OpenAI's range is 0–2, Anthropic's 0–1: clamp rather than have the request rejected.
        out["temperature"] = min(float(body["temperature"]), 1.0)
    if body.get("top_p") is not None:
        out["top_p"] = body["top_p"]
    stop = body.get("stop")
    if stop:
        out["stop_sequences"] = [stop] if isinstance(stop, str) else list(stop)
    tools = [
        _tool(tool["function"])
        for tool in body.get("tools") or ()
        if tool.get("type") == "function" and isinstance(tool.get("function"), dict)
    ]
    if tools:
        out["tools"] = tools
        choice = _tool_choice(body.get("tool_choice"), body.get("parallel_tool_calls"))
        if choice:
            out["tool_choice"] = choice
    if isinstance(body.get("user"), str):
        out["metadata"] = {"user_id": body["user"]}
    # response_format (json_object / json_schema) has no Messages API equivalent: the prompt must
    # ask for JSON, and a schema verifier in the cascade can check it. Sending it would be rejected.
    return out


# -- response: Anthropic → OpenAI ------------------------------------------------------------------


def _prompt_tokens(usage: dict[str, Any]) -> int:
    # Anthropic counts cached input apart; all of it is input the client sent.
    return (
        (usage.get("input_tokens") or 0)
        + (usage.get("cache_read_input_tokens") or 0)
        + (usage.get("cache_creation_input_tokens") or 0)
    )


def _openai_usage(prompt: int, completion: int, cached: int) -> dict[str, Any]:
    usage: dict[str, Any] = {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }
    if cached:
        usage["prompt_tokens_details"] = {"cached_tokens": cached}
    return usage


def to_chat_completion(message: dict[str, Any]) -> dict[str, Any]:
    """The OpenAI ``chat.completion`` for a Messages API answer."""
    texts: list[str] = []
    tool_calls: list[dict[str, Any]] = []
    for block in message.get("content") or ():
        if block.get("type") == "text":
            texts.append(block.get("text") or "")
        elif block.get("type") == "tool_use":
            arguments = orjson.dumps(block.get("input") or {}).decode()
            tool_calls.append(
                {
                    "id": block.get("id"),
                    "type": "function",
                    "function": {"name": block.get("name"), "arguments": arguments},
                }
            )
        # thinking and server-tool blocks have no chat-completions equivalent
    reply: dict[str, Any] = {
        "role": "assistant",
        "content": "".join(texts) if texts else None,
        "refusal": None,
    }
    if tool_calls:
        reply["tool_calls"] = tool_calls
    usage = message.get("usage") or {}
    return {
        "id": message.get("id"),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": message.get("model"),
        "choices": [
            {
                "index": 0,
                "message": reply,
                "logprobs": None,
                "finish_reason": FINISH_REASONS.get(message.get("stop_reason") or "", "stop"),
            }
        ],
        "usage": _openai_usage(
            _prompt_tokens(usage), usage.get("output_tokens") or 0, usage.get("cache_read_input_tokens") or 0
        ),
    }


class _StreamState:
    """What a translated stream carries from event to event."""

    __slots__ = ("cached", "created", "id", "input", "model", "output", "tools")

    def __init__(self) -> None:
        self.id = ""
        self.model = ""
        self.created = int(time.time())
        self.input: dict[str, Any] = {}  # Anthropic's input usage fields, latest cumulative values
        self.output = 0
        self.cached = 0
        self.tools: dict[int, int] = {}  # Anthropic content block index → OpenAI tool_calls index

    def chunk(self, delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}],
        }

    def usage(self, usage: dict[str, Any]) -> None:
        for key in ("input_tokens", "cache_read_input_tokens", "cache_creation_input_tokens"):
            if usage.get(key) is not None:
                self.input[key] = usage[key]
        if usage.get("output_tokens") is not None:
            self.output = usage["output_tokens"]

    def translate(self, doc: dict[str, Any]) -> Chunk | None:
        """The OpenAI chunk for one Anthropic event, or None when it has nothing to say."""
        kind = doc.get("type")
        if kind == "content_block_delta":
            delta = doc.get("delta") or {}
            if delta.get("type") == "text_delta" and delta.get("text"):
                return Chunk(self.chunk({"content": delta["text"]}))
            if delta.get("type") == "input_json_delta" and delta.get("partial_json"):
                index = self.tools.get(doc.get("index", -1))
                if index is not None:
                    call = {"index": index, "function": {"arguments": delta["partial_json"]}}
                    return Chunk(self.chunk({"tool_calls": [call]}))
            return None  # thinking, signature and citation deltas
        if kind == "content_block_start":
            block = doc.get("content_block") or {}
            if block.get("type") == "text" and block.get("text"):
                return Chunk(self.chunk({"content": block["text"]}))
            if block.get("type") == "tool_use":
                index = self.tools[doc.get("index", -1)] = len(self.tools)
                call = {"index": index, "id": block.get("id"), "type": "function",
                        "function": {"name": block.get("name"), "arguments": ""}}  # fmt: skip
                return Chunk(self.chunk({"tool_calls": [call]}))
            return None
        if kind == "message_start":
            message = doc.get("message") or {}
            self.id = message.get("id") or ""
            self.model = message.get("model") or ""
            self.usage(message.get("usage") or {})
            return Chunk(self.chunk({"role": "assistant", "content": ""}))
        if kind == "message_delta":
            self.usage(doc.get("usage") or {})
            stop_reason = (doc.get("delta") or {}).get("stop_reason")
            return Chunk(self.chunk({}, FINISH_REASONS.get(stop_reason, "stop"))) if stop_reason else None
        if kind == "message_stop":
            prompt = _prompt_tokens(self.input)
            data = self.chunk({})
            data["choices"] = []
            data["usage"] = _openai_usage(prompt, self.output, self.input.get("cache_read_input_tokens") or 0)
            return Chunk(data, usage=Usage(input_tokens=prompt, output_tokens=self.output))
        return None  # ping, content_block_stop, and event types added later


def _is_end(event: str, data: bytes) -> bool:
    return event == "message_stop" or (event == "message" and b'"message_stop"' in data)


class AnthropicProvider:
    """``POST {base_url}/v1/messages`` with ``x-api-key`` and ``anthropic-version``, JSON or SSE."""

    def __init__(self, name: str, config: ProviderConfig, *, http: HttpPool) -> None:
        self.name = name
        key = config.api_key(name)
        headers = {
            "Content-Type": "application/json",
            "anthropic-version": config.api_version or DEFAULT_VERSION,
        }
        if key:
            headers["x-api-key"] = key
        headers.update(config.headers)
        base = (config.base_url or "").rstrip("/")
        self._upstream = Upstream(
            provider=name,
            url=base + ("/messages" if base.endswith("/v1") else "/v1/messages"),
            headers=headers,
            timeouts=config.timeouts,
            http=http,
            secret=key,
        )

    def _request(self, call: UpstreamCall) -> dict[str, Any]:
        try:
            return to_messages_request(call.body, call.model)
        except (ValueError, TypeError, AttributeError, KeyError) as exc:
            raise UpstreamRejected(
                f"{call.model.name}: cannot translate the request for {self.name}: {exc}",
                model=call.model.name,
            ) from exc

    async def complete(self, call: UpstreamCall) -> Completion:
        doc = await self._upstream.post_json(call.model.name, self._request(call))
        if not isinstance(doc, dict) or doc.get("type") != "message":
            raise self._upstream.body_error(call.model.name, doc)
        body = to_chat_completion(doc)
        usage = body["usage"]
        return Completion(body=body, usage=Usage(usage["prompt_tokens"], usage["completion_tokens"]))

    async def stream(self, call: UpstreamCall) -> AsyncIterator[Chunk]:
        model = call.model.name
        body = self._request(call)
        body["stream"] = True
        state = _StreamState()
        async with aclosing(self._upstream.post_sse(model, body, end=_is_end)) as events:
            async for _event, data in events:
                try:
                    doc = orjson.loads(data)
                except orjson.JSONDecodeError as exc:
                    raise self._upstream.invalid_json(model, data) from exc
                if not isinstance(doc, dict) or doc.get("type") == "error":
                    raise self._upstream.body_error(model, doc, what="an unexpected stream event")
                chunk = state.translate(doc)
                if chunk is not None:
                    yield chunk

    async def aclose(self) -> None:
        """Nothing to release: the HttpPool is shared and closed by its owner."""
