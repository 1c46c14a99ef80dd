"""Checks an OpenAI chat-completions request body before anything routes it.

Hand-written rather than a pydantic model of the whole OpenAI schema: the body is forwarded as the
client sent it, so only what tierwise itself reads is checked, and each error names its field
(``messages[2].role``) the way OpenAI's own 400s do.
"""

from __future__ import annotations

from typing import Any

from .config import ServerConfig
from .errors import RequestError

ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})
# (lowest, highest) of the integer fields tierwise reads or forwards: OpenAI's own bounds, where it
# has them, and the int32/int64 ranges upstreams parse into otherwise.
_INT_BOUNDS: dict[str, tuple[int, int]] = {
    "max_tokens": (0, 2**31 - 1),
    "max_completion_tokens": (0, 2**31 - 1),
    "n": (1, 128),
    "seed": (-(2**63), 2**63 - 1),
    "top_logprobs": (0, 20),
}
_NUMBER_BOUNDS: dict[str, tuple[float, float]] = {
    "temperature": (0.0, 2.0),
    "top_p": (0.0, 1.0),
    "presence_penalty": (-2.0, 2.0),
    "frequency_penalty": (-2.0, 2.0),
}
_TOOL_CHOICES = ("none", "auto", "required")
_MODEL_CHARS = 256
_METADATA_PAIRS = 64
_METADATA_KEY_CHARS = 64
_METADATA_VALUE_CHARS = 512
# Fields past which a path in an error message is elided: the message names where, not every step.
_PATH_STEPS = 8

DEFAULT_LIMITS = ServerConfig()


def field_error(param: str, message: str, *, status: int = 400, code: str | None = None) -> RequestError:
    """The client's error about one field: the message starts with the field, as OpenAI's 400s do."""
    return RequestError(f"{param}: {message}", param=param, status=status, code=code)


def check_count(param: str, count: int, limit: int, what: str, setting: str) -> None:
    """400 naming ``param`` when it holds more than ``limit`` ``what`` (``setting`` is the bound's name)."""
    if count > limit:
        raise field_error(param, f"at most {limit} {what} ({setting}), got {count}")


def _path(steps: tuple[str | int, ...]) -> str:
    parts = [f"[{s}]" if isinstance(s, int) else f".{s}" for s in steps[:_PATH_STEPS]]
    text = "".join(parts).lstrip(".") or "request body"
    return text + ("…" if len(steps) > _PATH_STEPS else "")


def check_json_shape(value: Any, *, max_depth: int, max_items: int) -> None:
    """Raise RequestError if ``value`` nests deeper than ``max_depth`` or holds more than ``max_items``
    JSON values. Iterative, so no input can exhaust the interpreter's stack; scalars cost nothing."""
    items = 0
    stack: list[tuple[Any, int, tuple[str | int, ...]]] = [(value, 1, ())]
    while stack:
        node, depth, steps = stack.pop()
        children = node.items() if isinstance(node, dict) else enumerate(node)
        items += len(node)
        if items > max_items:
            raise field_error(
                _path(steps),
                f"the body holds more than {max_items} JSON values (server.max_json_items)",
                status=413,
                code="request_too_large",
            )
        for key, child in children:
            if isinstance(child, dict | list) and child:
                if depth >= max_depth:
                    raise field_error(
                        _path((*steps, key)),
                        f"nested deeper than {max_depth} levels (server.max_json_depth)",
                        code="nesting_too_deep",
                    )
                stack.append((child, depth + 1, (*steps, key)))


def _check_metadata(metadata: Any) -> None:
    if not isinstance(metadata, dict):
        raise field_error("metadata", "must be an object")
    if len(metadata) > _METADATA_PAIRS:
        raise field_error("metadata", f"at most {_METADATA_PAIRS} key-value pairs, got {len(metadata)}")
    for key, value in metadata.items():
        if len(key) > _METADATA_KEY_CHARS:
            raise field_error("metadata", f"keys are at most {_METADATA_KEY_CHARS} characters")
        if isinstance(value, str):
            if len(value) > _METADATA_VALUE_CHARS:
                raise field_error(f"metadata.{key}", f"at most {_METADATA_VALUE_CHARS} characters")
        elif value is not None and not isinstance(value, int | float):  # bool is an int
            raise field_error(f"metadata.{key}", "must be a string, a number or a boolean")


def _check_tool_choice(choice: Any) -> None:
    if isinstance(choice, str):
        if choice not in _TOOL_CHOICES:
            raise field_error("tool_choice", f"must be one of {', '.join(_TOOL_CHOICES)} or an object")
        return
    if not isinstance(choice, dict):
        raise field_error("tool_choice", "must be a string or an object")
    function = choice.get("function")
    if function is not None and not (isinstance(function, dict) and isinstance(function.get("name"), str)):
        raise field_error("tool_choice.function.name", "must be a string")


def _check_tools(name: str, tools: Any, limit: int) -> None:
    if not isinstance(tools, list):
        raise field_error(name, "must be an array")
    check_count(name, len(tools), limit, "tools", "server.max_tools")
    for i, tool in enumerate(tools):
        function = (tool.get("function") if name == "tools" else tool) if isinstance(tool, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            where = f"{name}[{i}].function.name" if name == "tools" else f"{name}[{i}].name"
            raise field_error(where, "required")


def _check_numbers(body: dict[str, Any]) -> None:
    for name, (low, high) in _INT_BOUNDS.items():
        value = body.get(name)
        if value is None:
            continue
        if not isinstance(value, int) or isinstance(value, bool):
            raise field_error(name, f"must be an integer from {low} to {high}, got {value!r}")
        if not low <= value <= high:
            raise field_error(name, f"must be from {low} to {high}, got {value}")
    for name, (lo, hi) in _NUMBER_BOUNDS.items():
        value = body.get(name)
        if value is None:
            continue
        if not isinstance(value, int | float) or isinstance(value, bool):
            raise field_error(name, f"must be a number from {lo:g} to {hi:g}, got {value!r}")
        if not lo <= value <= hi:  # also false for NaN
            raise field_error(name, f"must be from {lo:g} to {hi:g}, got {value!r}")


def _check_messages(messages: Any, limits: ServerConfig) -> None:
    if messages is None:
        raise field_error("messages", "required")
    if not isinstance(messages, list) or not messages:
        raise field_error("messages", "must be a non-empty array")
    check_count("messages", len(messages), limits.max_messages, "messages", "server.max_messages")
    chars = 0
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise field_error(f"messages[{i}]", "must be an object")
        role = message.get("role")
        if not isinstance(role, str) or role not in ROLES:
            shown = role if isinstance(role, str | None) else type(role).__name__
            raise field_error(
                f"messages[{i}].role", f"must be one of {', '.join(sorted(ROLES))}, got {shown!r}"
            )
        content = message.get("content")
        if content is None:
            if role == "assistant" and (message.get("tool_calls") or message.get("function_call")):
                continue
            if role == "assistant" and "content" in message and message.get("refusal"):
                continue
            raise field_error(f"messages[{i}].content", "required")
        if isinstance(content, str):
            chars += len(content)
        elif isinstance(content, list):
            for j, part in enumerate(content):
                if not isinstance(part, dict) or not isinstance(part.get("type"), str):
                    raise field_error(f"messages[{i}].content[{j}]", "must be an object with a 'type'")
                text = part.get("text")
                if isinstance(text, str):
                    chars += len(text)
        else:
            raise field_error(f"messages[{i}].content", "must be a string or an array of content parts")
        if role == "tool" and not isinstance(message.get("tool_call_id"), str):
            raise field_error(f"messages[{i}].tool_call_id", "required for role 'tool'")
        tool_calls = message.get("tool_calls")
        if tool_calls is not None and not isinstance(tool_calls, list):
            raise field_error(f"messages[{i}].tool_calls", "must be an array")
    if chars > limits.max_input_chars:
        raise field_error(
            "messages",
            f"{chars} characters of text exceed the limit of {limits.max_input_chars} "
            "(server.max_input_chars)",
            status=413,
            code="request_too_large",
        )


def validate_chat_body(body: Any, limits: ServerConfig = DEFAULT_LIMITS) -> dict[str, Any]:
    """Return ``body`` if it is a well-formed chat request within ``limits``; raise RequestError
    naming the bad field (400, or 413 for a request too large to serve)."""
    if not isinstance(body, dict):
        raise RequestError("request body: must be a JSON object", param=None)
    check_json_shape(body, max_depth=limits.max_json_depth, max_items=limits.max_json_items)
    model = body.get("model")
    if model is None:
        raise field_error("model", "required; use 'auto' to let tierwise choose")
    if not isinstance(model, str) or not model or len(model) > _MODEL_CHARS:
        raise field_error("model", f"must be a non-empty string of at most {_MODEL_CHARS} characters")
    _check_messages(body.get("messages"), limits)
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise field_error("stream", "must be a boolean")
    _check_numbers(body)
    for name in ("tools", "functions"):
        if body.get(name) is not None:
            _check_tools(name, body[name], limits.max_tools)
    if body.get("tool_choice") is not None:
        _check_tool_choice(body["tool_choice"])
    if body.get("metadata") is not None:
        _check_metadata(body["metadata"])
    stop = body.get("stop")
    if (
        stop is not None
        and not isinstance(stop, str)
        and not (isinstance(stop, list) and all(isinstance(s, str) for s in stop))
    ):
        raise field_error("stop", "must be a string or an array of strings")
    response_format = body.get("response_format")
    if response_format is not None and not (
        isinstance(response_format, dict) and isinstance(response_format.get("type"), str)
    ):
        raise field_error("response_format", "must be an object with a 'type'")
    stream_options = body.get("stream_options")
    if stream_options is not None:
        if not isinstance(stream_options, dict):
            raise field_error("stream_options", "must be an object")
        usage = stream_options.get("include_usage")
        if usage is not None and not isinstance(usage, bool):
            raise field_error("stream_options.include_usage", "must be a boolean")
    return body


FEEDBACK_COMMENT_CHARS = 2000
_REQUEST_ID_CHARS = 200


def validate_feedback_body(body: Any) -> tuple[str, float, str | None]:
    """``(request_id, score, comment)`` of a feedback body, or RequestError naming the bad field."""
    if not isinstance(body, dict):
        raise RequestError("request body: must be a JSON object", param=None)
    unknown = sorted(set(body) - {"request_id", "score", "comment"})
    if unknown:
        raise field_error(unknown[0], "unknown field; expected request_id, score and optionally comment")
    request_id = body.get("request_id")
    if request_id is None:
        raise field_error("request_id", "required: the x-tierwise-request-id of the answer you grade")
    if not isinstance(request_id, str) or not request_id or len(request_id) > _REQUEST_ID_CHARS:
        raise field_error(
            "request_id", f"must be a non-empty string of at most {_REQUEST_ID_CHARS} characters"
        )
    score = body.get("score")
    if score is None:
        raise field_error("score", "required: 0 (the answer was not good enough) to 1 (it was)")
    if isinstance(score, bool) or not isinstance(score, int | float) or not 0 <= score <= 1:
        raise field_error("score", f"must be a number from 0 to 1, got {score!r}")
    comment = body.get("comment")
    if comment is not None and (not isinstance(comment, str) or len(comment) > FEEDBACK_COMMENT_CHARS):
        raise field_error("comment", f"must be a string of at most {FEEDBACK_COMMENT_CHARS} characters")
    return request_id, float(score), comment
