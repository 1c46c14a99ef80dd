"""Checks an OpenAI chat-completions request body before anything routes it.

Hand-written rather than a pydantic model of the whole OpenAI schema: the body is forwarded as the
client sent it, so only what tierwise itself reads is checked, and each error names its field
(``messages[2].role``) the way OpenAI's own 400s do.
"""

from __future__ import annotations

from typing import Any

from .errors import RequestError

ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})
_INT_FIELDS = ("max_tokens", "max_completion_tokens", "n", "seed", "top_logprobs")
_NUMBER_FIELDS = ("temperature", "top_p", "presence_penalty", "frequency_penalty")


def _fail(param: str, message: str) -> RequestError:
    return RequestError(f"{param}: {message}", param=param)


def validate_chat_body(body: Any) -> dict[str, Any]:
    """Return ``body`` if it is a well-formed chat request; raise RequestError naming the bad field."""
    if not isinstance(body, dict):
        raise RequestError("request body: must be a JSON object", param=None)
    model = body.get("model")
    if model is None:
        raise _fail("model", "required; use 'auto' to let tierwise choose")
    if not isinstance(model, str) or not model:
        raise _fail("model", "must be a non-empty string")
    messages = body.get("messages")
    if messages is None:
        raise _fail("messages", "required")
    if not isinstance(messages, list) or not messages:
        raise _fail("messages", "must be a non-empty array")
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise _fail(f"messages[{i}]", "must be an object")
        role = message.get("role")
        if role not in ROLES:
            raise _fail(f"messages[{i}].role", f"must be one of {', '.join(sorted(ROLES))}, got {role!r}")
        content = message.get("content")
        if content is None:
            if role == "assistant" and (message.get("tool_calls") or message.get("function_call")):
                continue
            if role == "assistant" and "content" in message and message.get("refusal"):
                continue
            raise _fail(f"messages[{i}].content", "required")
        if isinstance(content, list):
            for j, part in enumerate(content):
                if not isinstance(part, dict) or not isinstance(part.get("type"), str):
                    raise _fail(f"messages[{i}].content[{j}]", "must be an object with a 'type'")
        elif not isinstance(content, str):
            raise _fail(f"messages[{i}].content", "must be a string or an array of content parts")
        if role == "tool" and not isinstance(message.get("tool_call_id"), str):
            raise _fail(f"messages[{i}].tool_call_id", "required for role 'tool'")
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise _fail("stream", "must be a boolean")
    for name in _INT_FIELDS:
        value = body.get(name)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 0):
            raise _fail(name, "must be a non-negative integer")
    for name in _NUMBER_FIELDS:
        value = body.get(name)
        if value is not None and (not isinstance(value, int | float) or isinstance(value, bool)):
            raise _fail(name, "must be a number")
    tools = body.get("tools")
    if tools is not None:
        if not isinstance(tools, list):
            raise _fail("tools", "must be an array")
        for i, tool in enumerate(tools):
            function = tool.get("function") if isinstance(tool, dict) else None
            if not isinstance(function, dict) or not isinstance(function.get("name"), str):
                raise _fail(f"tools[{i}].function.name", "required")
    metadata = body.get("metadata")
    if metadata is not None and not isinstance(metadata, dict):
        raise _fail("metadata", "must be an object")
    stream_options = body.get("stream_options")
    if stream_options is not None and not isinstance(stream_options, dict):
        raise _fail("stream_options", "must be an object")
    return body


FEEDBACK_COMMENT_CHARS = 2000
_REQUEST_ID_CHARS = 200


def validate_feedback_body(body: Any) -> tuple[str, float, str | None]:
    """``(request_id, score, comment)`` of a feedback body, or RequestError naming the bad field."""
    if not isinstance(body, dict):
        raise RequestError("request body: must be a JSON object", param=None)
    unknown = sorted(set(body) - {"request_id", "score", "comment"})
    if unknown:
        raise _fail(unknown[0], "unknown field; expected request_id, score and optionally comment")
    request_id = body.get("request_id")
    if request_id is None:
        raise _fail("request_id", "required: the x-tierwise-request-id of the answer you grade")
    if not isinstance(request_id, str) or not request_id or len(request_id) > _REQUEST_ID_CHARS:
        raise _fail("request_id", f"must be a non-empty string of at most {_REQUEST_ID_CHARS} characters")
    score = body.get("score")
    if score is None:
        raise _fail("score", "required: 0 (the answer was not good enough) to 1 (it was)")
    if isinstance(score, bool) or not isinstance(score, int | float) or not 0 <= score <= 1:
        raise _fail("score", f"must be a number from 0 to 1, got {score!r}")
    comment = body.get("comment")
    if comment is not None and (not isinstance(comment, str) or len(comment) > FEEDBACK_COMMENT_CHARS):
        raise _fail("comment", f"must be a string of at most {FEEDBACK_COMMENT_CHARS} characters")
    return request_id, float(score), comment
