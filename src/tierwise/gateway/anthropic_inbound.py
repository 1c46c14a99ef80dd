"""``POST /v1/messages``: Anthropic's Messages API in front of the canonical chat router.

The request is translated once into the canonical OpenAI chat body, routed like any chat request
(same policy, ledger row and headers), and the canonical answer is translated back: a ``message``
object, or Anthropic's event sequence when streamed. The vocabulary shared with the outbound adapter
(stop reasons) comes from ``providers/anthropic.py``, read in the other direction.
"""

from __future__ import annotations

import time
from typing import Any

import orjson

from ..config import ServerConfig
from ..errors import RequestError
from ..providers.anthropic import FINISH_REASONS
from ..providers.base import Chunk
from ..router import RoutedStream
from ..validation import check_count, check_json_shape, field_error
from .responses import error_response
from .web import Response

# OpenAI finish_reason → Anthropic stop_reason: the outbound table read backwards (reversed, so that
# of several Anthropic names for one OpenAI reason the first listed wins: "stop" → "end_turn").
STOP_REASONS: dict[str, str] = {openai: anthropic for anthropic, openai in reversed(FINISH_REASONS.items())}
_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    529: "overloaded_error",
}
_MAX_TOKENS = 2**31 - 1
_TOOL_CHOICES = ("auto", "any", "tool", "none")


# -- errors ----------------------------------------------------------------------------------------


def error_type(status: int) -> str:
    """Anthropic's error ``type`` for an HTTP status."""
    return _ERROR_TYPES.get(status, "api_error")


def anthropic_error_response(exc: BaseException) -> Response:
    """``{"type": "error", "error": {"type", "message"}}`` with the status and headers the OpenAI-shaped
    error would have (one place decides statuses: responses.error_response)."""
    openai_shaped = error_response(exc)
    assert isinstance(openai_shaped.body, bytes)
    message = orjson.loads(openai_shaped.body)["error"]["message"]
    body = {"type": "error", "error": {"type": error_type(openai_shaped.status), "message": message}}
    return Response(orjson.dumps(body), status=openai_shaped.status, headers=openai_shaped.headers)


def event(name: str, data: dict[str, Any]) -> bytes:
    """One Anthropic SSE event: the ``event:`` line names it and ``data`` repeats it as ``type``."""
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


def error_event(message: str, *, status: int = 502) -> bytes:
    """The ``error`` event that ends a stream which cannot end with ``message_stop``."""
    return event("error", {"type": "error", "error": {"type": error_type(status), "message": message}})


# -- request: Anthropic → canonical ----------------------------------------------------------------


def _data_url(source: Any, where: str) -> str:
    if not isinstance(source, dict):
        raise field_error(where, "must be an object")
    if source.get("type") == "url" and isinstance(source.get("url"), str):
        return source["url"]
    if source.get("type") == "base64":
        media, data = source.get("media_type"), source.get("data")
        if not isinstance(media, str) or not isinstance(data, str):
            raise field_error(where, "a base64 source needs media_type and data strings")
        return f"data:{media};base64,{data}"
    raise field_error(f"{where}.type", "must be 'base64' or 'url'")


def _part(block: dict[str, Any], where: str) -> dict[str, Any] | None:
    """A user content block as an OpenAI content part; None for blocks with nothing to forward."""
    kind = block.get("type")
    if kind == "text":
        if not isinstance(block.get("text"), str):
            raise field_error(f"{where}.text", "must be a string")
        part: dict[str, Any] = {"type": "text", "text": block["text"]}
    elif kind == "image":
        part = {"type": "image_url", "image_url": {"url": _data_url(block.get("source"), f"{where}.source")}}
    elif kind == "document":
        part = {"type": "file", "file": {"file_data": _data_url(block.get("source"), f"{where}.source")}}
    else:
        return None  # thinking, redacted_thinking, server-tool results: no chat-completions equivalent
    if block.get("cache_control"):  # kept so an Anthropic upstream still sees the breakpoint
        part["cache_control"] = block["cache_control"]
    return part


def _tool_content(content: Any, where: str) -> str | list[dict[str, Any]]:
    if content is None or isinstance(content, str):
        return content or ""
    if not isinstance(content, list):
        raise field_error(where, "must be a string or an array of content blocks")
    parts = [_part(b, f"{where}[{i}]") for i, b in enumerate(content) if isinstance(b, dict)]
    return [p for p in parts if p is not None]


def _blocks(content: Any, where: str) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    if not isinstance(content, list) or not content:
        raise field_error(where, "must be a string or a non-empty array of content blocks")
    for i, block in enumerate(content):
        if not isinstance(block, dict) or not isinstance(block.get("type"), str):
            raise field_error(f"{where}[{i}]", "must be an object with a 'type'")
    return content


def _user(content: Any, where: str) -> list[dict[str, Any]]:
    """A user turn as canonical messages: its tool results first (each a ``tool`` message, right after
    the assistant turn that called them), then the rest as one user message."""
    out: list[dict[str, Any]] = []
    parts: list[dict[str, Any]] = []
    for i, block in enumerate(_blocks(content, where)):
        if block["type"] == "tool_result":
            if not isinstance(block.get("tool_use_id"), str):
                raise field_error(f"{where}[{i}].tool_use_id", "required")
            result = _tool_content(block.get("content"), f"{where}[{i}].content")
            if block.get("is_error") and isinstance(result, str):
                result = f"Error: {result}"  # chat has no error flag on tool results; say it in words
            out.append({"role": "tool", "tool_call_id": block["tool_use_id"], "content": result})
        else:
            part = _part(block, f"{where}[{i}]")
            if part is not None:
                parts.append(part)
    if parts:
        out.append({"role": "user", "content": parts})
    return out


def _assistant(content: Any, where: str) -> dict[str, Any]:
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    for i, block in enumerate(_blocks(content, where)):
        if block["type"] == "text" and isinstance(block.get("text"), str):
            texts.append(block["text"])
        elif block["type"] == "tool_use":
            if not isinstance(block.get("id"), str) or not isinstance(block.get("name"), str):
                raise field_error(f"{where}[{i}]", "a tool_use block needs id and name strings")
            arguments = orjson.dumps(block.get("input") or {}).decode()
            calls.append(
                {
                    "id": block["id"],
                    "type": "function",
                    "function": {"name": block["name"], "arguments": arguments},
                }
            )
    message: dict[str, Any] = {"role": "assistant", "content": "".join(texts) if texts else None}
    if calls:
        message["tool_calls"] = calls
    elif message["content"] is None:
        message["content"] = ""
    return message


def _system(system: Any) -> dict[str, Any] | None:
    if system is None:
        return None
    if isinstance(system, str):
        return {"role": "system", "content": system} if system else None
    if not isinstance(system, list):
        raise field_error("system", "must be a string or an array of text blocks")
    parts = []
    for i, block in enumerate(system):
        if (
            not isinstance(block, dict)
            or block.get("type") != "text"
            or not isinstance(block.get("text"), str)
        ):
            raise field_error(f"system[{i}]", "must be a text block")
        parts.append(_part(block, f"system[{i}]"))
    return {"role": "system", "content": parts} if parts else None


def _tools(tools: Any, limit: int) -> list[dict[str, Any]]:
    if not isinstance(tools, list):
        raise field_error("tools", "must be an array")
    check_count("tools", len(tools), limit, "tools", "server.max_tools")
    out = []
    for i, tool in enumerate(tools):
        if not isinstance(tool, dict) or not isinstance(tool.get("name"), str):
            raise field_error(f"tools[{i}].name", "required")
        if tool.get("type") not in (None, "custom"):
            raise field_error(
                f"tools[{i}].type", f"server tools ({tool['type']!r}) cannot be routed; define a custom tool"
            )
        function: dict[str, Any] = {"name": tool["name"]}
        if isinstance(tool.get("description"), str):
            function["description"] = tool["description"]
        function["parameters"] = tool.get("input_schema") or {"type": "object", "properties": {}}
        out.append({"type": "function", "function": function})
    return out


def _tool_choice(choice: Any, out: dict[str, Any]) -> None:
    if not isinstance(choice, dict) or choice.get("type") not in _TOOL_CHOICES:
        raise field_error("tool_choice.type", f"must be one of {', '.join(_TOOL_CHOICES)}")
    kind = choice["type"]
    if kind == "tool":
        if not isinstance(choice.get("name"), str):
            raise field_error("tool_choice.name", "required when type is 'tool'")
        out["tool_choice"] = {"type": "function", "function": {"name": choice["name"]}}
    else:
        out["tool_choice"] = {"auto": "auto", "any": "required", "none": "none"}[kind]
    if choice.get("disable_parallel_tool_use") is True:
        out["parallel_tool_calls"] = False


def to_chat_body(body: Any, limits: ServerConfig) -> dict[str, Any]:
    """The canonical chat-completions body for a Messages API body; RequestError naming the bad field."""
    if not isinstance(body, dict):
        raise RequestError("request body: must be a JSON object", param=None)
    check_json_shape(body, max_depth=limits.max_json_depth, max_items=limits.max_json_items)
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise field_error("model", "required: a model name, a tier, or 'auto' to let tierwise choose")
    max_tokens = body.get("max_tokens")
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or not 1 <= max_tokens <= _MAX_TOKENS:
        raise field_error("max_tokens", f"required: an integer from 1 to {_MAX_TOKENS}")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise field_error("messages", "required: a non-empty array")
    check_count("messages", len(messages), limits.max_messages, "messages", "server.max_messages")
    canonical: list[dict[str, Any]] = []
    system = _system(body.get("system"))
    if system is not None:
        canonical.append(system)
    for i, message in enumerate(messages):
        role = message.get("role") if isinstance(message, dict) else None
        if role == "user":
            canonical.extend(_user(message.get("content"), f"messages[{i}].content"))
        elif role == "assistant":
            canonical.append(_assistant(message.get("content"), f"messages[{i}].content"))
        else:
            raise field_error(f"messages[{i}].role", f"must be 'user' or 'assistant', got {role!r}")
    out: dict[str, Any] = {"model": model, "messages": canonical, "max_tokens": max_tokens}
    for name in ("temperature", "top_p"):
        if body.get(name) is not None:
            out[name] = body[name]
    stops = body.get("stop_sequences")
    if stops is not None:
        if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops):
            raise field_error("stop_sequences", "must be an array of strings")
        if stops:
            out["stop"] = stops
    if body.get("tools") is not None:
        tools = _tools(body["tools"], limits.max_tools)
        if tools:
            out["tools"] = tools
    if body.get("tool_choice") is not None:
        _tool_choice(body["tool_choice"], out)
    metadata = body.get("metadata")
    if isinstance(metadata, dict) and isinstance(metadata.get("user_id"), str):
        out["user"] = metadata["user_id"]
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise field_error("stream", "must be a boolean")
    if stream:
        out["stream"] = True
        out["stream_options"] = {"include_usage": True}  # message_delta reports output tokens
    return out


# -- response: canonical → Anthropic ---------------------------------------------------------------


def message_id(request_id: str) -> str:
    """An Anthropic-looking message id derived from the tierwise request id (one id to quote)."""
    return "msg_" + request_id.removeprefix("req_")


def _tool_input(arguments: Any) -> dict[str, Any]:
    try:
        value = orjson.loads(arguments) if isinstance(arguments, str) else arguments
    except orjson.JSONDecodeError:
        value = None
    # A model that wrote invalid arguments still gets its text through, not a gateway error.
    return value if isinstance(value, dict) else {"_raw": arguments}


def to_message(completion: dict[str, Any], *, request_id: str) -> dict[str, Any]:
    """The Anthropic ``message`` object for a canonical ``chat.completion``."""
    choice = (completion.get("choices") or [{}])[0]
    reply = choice.get("message") or {}
    content: list[dict[str, Any]] = []
    if reply.get("content"):
        content.append({"type": "text", "text": reply["content"]})
    for call in reply.get("tool_calls") or ():
        function = call.get("function") or {}
        content.append(
            {
                "type": "tool_use",
                "id": call.get("id"),
                "name": function.get("name"),
                "input": _tool_input(function.get("arguments")),
            }
        )
    usage = completion.get("usage") or {}
    reason = STOP_REASONS.get(choice.get("finish_reason") or "stop", "end_turn")
    return {
        "id": message_id(request_id),
        "type": "message",
        "role": "assistant",
        "model": completion.get("model") or "",
        "content": content,
        "stop_reason": reason,
        "stop_sequence": None,
        "usage": {
            "input_tokens": usage.get("prompt_tokens") or 0,
            "output_tokens": usage.get("completion_tokens") or 0,
        },
    }


class MessageStream:
    """Canonical chunks → Anthropic's events: ``message_start``, then per content block
    ``content_block_start`` / ``content_block_delta``… / ``content_block_stop``, then ``message_delta``
    (stop reason, output tokens) and ``message_stop``."""

    def __init__(self, stream: RoutedStream) -> None:
        self._id = message_id(stream.request_id)
        self._index = -1  # the content block open now, -1 for none
        self._kind = ""  # its type: "text" or "tool_use"
        self._tools: dict[int, int] = {}  # canonical tool_calls index → Anthropic block index
        self._stop = "end_turn"
        self._input = 0
        self._output = 0
        self._started = False

    def _open(self, kind: str, block: dict[str, Any]) -> bytes:
        out = self._close()
        self._index += 1
        self._kind = kind
        return out + event(
            "content_block_start",
            {"type": "content_block_start", "index": self._index, "content_block": block},
        )

    def _close(self) -> bytes:
        if not self._kind:
            return b""
        self._kind = ""
        return event("content_block_stop", {"type": "content_block_stop", "index": self._index})

    def _delta(self, delta: dict[str, Any]) -> bytes:
        return event(
            "content_block_delta", {"type": "content_block_delta", "index": self._index, "delta": delta}
        )

    def start(self, model: str) -> bytes:
        self._started = True
        message = {
            "id": self._id,
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": 0, "output_tokens": 0},
        }
        start = event("message_start", {"type": "message_start", "message": message})
        return start + event("ping", {"type": "ping"})

    def chunk(self, chunk: Chunk) -> bytes:
        data = chunk.data
        out = b"" if self._started else self.start(data.get("model") or "")
        if chunk.usage is not None:
            self._input, self._output = chunk.usage.input_tokens, chunk.usage.output_tokens
        for choice in data.get("choices") or ():
            delta = choice.get("delta") or {}
            text = delta.get("content")
            if text:
                if self._kind != "text":
                    out += self._open("text", {"type": "text", "text": ""})
                out += self._delta({"type": "text_delta", "text": text})
            for call in delta.get("tool_calls") or ():
                position = call.get("index", 0)
                function = call.get("function") or {}
                if position not in self._tools:
                    out += self._open(
                        "tool_use",
                        {"type": "tool_use", "id": call.get("id"), "name": function.get("name"), "input": {}},
                    )
                    self._tools[position] = self._index
                if function.get("arguments") and self._tools[position] == self._index:
                    out += self._delta({"type": "input_json_delta", "partial_json": function["arguments"]})
            if choice.get("finish_reason"):
                self._stop = STOP_REASONS.get(choice["finish_reason"], "end_turn")
        return out

    def end(self) -> bytes:
        delta = {
            "type": "message_delta",
            "delta": {"stop_reason": self._stop, "stop_sequence": None},
            "usage": {"input_tokens": self._input, "output_tokens": self._output},
        }
        return self._close() + event("message_delta", delta) + event("message_stop", {"type": "message_stop"})


def created_at(ts: int) -> str:
    """RFC 3339 for a Unix time, as Anthropic's model list writes ``created_at``."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))
