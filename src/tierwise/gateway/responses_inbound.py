"""``POST /v1/responses``: OpenAI's Responses API, stateless, in front of the canonical chat router.

The request (``input`` as a string or items, ``instructions``, function tools, ``text.format``) is
translated once into the canonical chat body and routed like any chat request; the canonical answer
comes back as a ``response`` object, or as the Responses streaming events. Nothing is stored, so
``previous_response_id`` and ``conversation`` are refused with a 400 that says so.
"""

from __future__ import annotations

import time
from typing import Any

import orjson

from ..config import ServerConfig
from ..errors import RequestError
from ..providers.base import Chunk
from ..router import RoutedStream
from ..validation import check_count, check_json_shape, field_error

_MAX_TOKENS = 2**31 - 1
_STATEFUL = ("previous_response_id", "conversation")
_ROLES = ("user", "assistant", "system", "developer")


# -- request: Responses → canonical ----------------------------------------------------------------


def _part(part: Any, where: str) -> dict[str, Any] | None:
    if not isinstance(part, dict) or not isinstance(part.get("type"), str):
        raise field_error(where, "must be an object with a 'type'")
    kind = part["type"]
    if kind in ("input_text", "output_text", "text"):
        if not isinstance(part.get("text"), str):
            raise field_error(f"{where}.text", "must be a string")
        return {"type": "text", "text": part["text"]}
    if kind == "input_image":
        if not isinstance(part.get("image_url"), str):
            raise field_error(
                f"{where}.image_url", "required: a URL or a data: URL (file ids need stored files)"
            )
        image: dict[str, Any] = {"url": part["image_url"]}
        if part.get("detail") in ("low", "high", "auto"):
            image["detail"] = part["detail"]
        return {"type": "image_url", "image_url": image}
    if kind == "input_file":
        if not isinstance(part.get("file_data"), str):
            raise field_error(f"{where}.file_data", "required: a data: URL (file ids need stored files)")
        file = {"file_data": part["file_data"]}
        if isinstance(part.get("filename"), str):
            file["filename"] = part["filename"]
        return {"type": "file", "file": file}
    if kind == "refusal":
        return None
    raise field_error(f"{where}.type", f"unsupported content type {kind!r}")


def _content(content: Any, where: str) -> str | list[dict[str, Any]]:
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise field_error(where, "must be a string or an array of content parts")
    parts = [_part(p, f"{where}[{i}]") for i, p in enumerate(content)]
    return [p for p in parts if p is not None]


def _messages(items: Any, limits: ServerConfig) -> list[dict[str, Any]]:
    if isinstance(items, str):
        return [{"role": "user", "content": items}]
    if not isinstance(items, list) or not items:
        raise field_error("input", "required: a string or a non-empty array of input items")
    check_count("input", len(items), limits.max_messages, "items", "server.max_messages")
    out: list[dict[str, Any]] = []
    for i, item in enumerate(items):
        where = f"input[{i}]"
        if not isinstance(item, dict):
            raise field_error(where, "must be an object")
        kind = item.get("type", "message")
        if kind == "message":
            role = item.get("role")
            if role not in _ROLES:
                raise field_error(f"{where}.role", f"must be one of {', '.join(_ROLES)}, got {role!r}")
            content = _content(item.get("content"), f"{where}.content")
            if role == "assistant" and isinstance(content, list):
                # Chat assistant turns carry text only; earlier output arrives as output_text parts.
                content = "".join(p["text"] for p in content if p["type"] == "text")
            out.append({"role": role, "content": content})
        elif kind == "function_call":
            for name in ("call_id", "name", "arguments"):
                if not isinstance(item.get(name), str):
                    raise field_error(f"{where}.{name}", "must be a string")
            call = {
                "id": item["call_id"],
                "type": "function",
                "function": {"name": item["name"], "arguments": item["arguments"]},
            }
            previous = out[-1] if out else None
            if previous is not None and previous["role"] == "assistant" and "tool_calls" in previous:
                previous["tool_calls"].append(call)  # parallel calls of one turn
            elif previous is not None and previous["role"] == "assistant" and not previous.get("content"):
                previous["tool_calls"] = [call]
            else:
                out.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif kind == "function_call_output":
            if not isinstance(item.get("call_id"), str):
                raise field_error(f"{where}.call_id", "must be a string")
            output = item.get("output")
            content = output if isinstance(output, str) else _content(output, f"{where}.output")
            out.append({"role": "tool", "tool_call_id": item["call_id"], "content": content})
        elif kind == "reasoning":
            continue  # another model's reasoning: nothing a chat request can carry
        elif kind == "item_reference":
            raise field_error(
                f"{where}.type", "item references need stored responses; this gateway is stateless"
            )
        else:
            raise field_error(f"{where}.type", f"unsupported input item type {kind!r}")
    return out


def _tools(tools: Any, limit: int) -> list[dict[str, Any]]:
    if not isinstance(tools, list):
        raise field_error("tools", "must be an array")
    check_count("tools", len(tools), limit, "tools", "server.max_tools")
    out = []
    for i, tool in enumerate(tools):
        if not isinstance(tool, dict) or tool.get("type") != "function":
            kind = tool.get("type") if isinstance(tool, dict) else None
            raise field_error(f"tools[{i}].type", f"only function tools can be routed, got {kind!r}")
        if not isinstance(tool.get("name"), str):
            raise field_error(f"tools[{i}].name", "required")
        function = {
            k: tool[k] for k in ("name", "description", "parameters", "strict") if tool.get(k) is not None
        }
        out.append({"type": "function", "function": function})
    return out


def _tool_choice(choice: Any) -> Any:
    if choice in ("auto", "none", "required"):
        return choice
    if isinstance(choice, dict) and choice.get("type") == "function" and isinstance(choice.get("name"), str):
        return {"type": "function", "function": {"name": choice["name"]}}
    raise field_error("tool_choice", "must be 'auto', 'none', 'required' or {'type': 'function', 'name': …}")


def _response_format(text: Any) -> dict[str, Any] | None:
    if not isinstance(text, dict) or text.get("format") is None:
        return None
    fmt = text["format"]
    kind = fmt.get("type") if isinstance(fmt, dict) else None
    if kind == "text":
        return None
    if kind == "json_object":
        return {"type": "json_object"}
    if kind == "json_schema" and isinstance(fmt.get("schema"), dict):
        schema = {k: fmt[k] for k in ("name", "description", "schema", "strict") if fmt.get(k) is not None}
        return {"type": "json_schema", "json_schema": schema}
    raise field_error(
        "text.format", "must be {'type': 'text'}, {'type': 'json_object'} or a json_schema with a schema"
    )


def to_chat_body(body: Any, limits: ServerConfig) -> dict[str, Any]:
    """The canonical chat-completions body for a Responses API body; RequestError naming the bad field."""
    if not isinstance(body, dict):
        raise RequestError("request body: must be a JSON object", param=None)
    for name in _STATEFUL:
        if body.get(name) is not None:
            raise field_error(
                name,
                "not supported: this gateway is stateless and stores no responses; send the whole "
                "conversation in input",
            )
    check_json_shape(body, max_depth=limits.max_json_depth, max_items=limits.max_json_items)
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise field_error("model", "required: a model name, a tier, or 'auto' to let tierwise choose")
    messages = _messages(body.get("input"), limits)
    instructions = body.get("instructions")
    if instructions is not None:
        if not isinstance(instructions, str):
            raise field_error("instructions", "must be a string")
        if instructions:
            messages.insert(0, {"role": "system", "content": instructions})
    out: dict[str, Any] = {"model": model, "messages": messages}
    limit = body.get("max_output_tokens")
    if limit is not None:
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= _MAX_TOKENS:
            raise field_error("max_output_tokens", f"must be an integer from 1 to {_MAX_TOKENS}")
        out["max_tokens"] = limit
    for name in ("temperature", "top_p", "parallel_tool_calls", "metadata"):
        if body.get(name) is not None:
            out[name] = body[name]
    reasoning = body.get("reasoning")
    if isinstance(reasoning, dict) and isinstance(reasoning.get("effort"), str):
        out["reasoning_effort"] = reasoning["effort"]
    user = body.get("safety_identifier") or body.get("user")
    if isinstance(user, str):
        out["user"] = user
    if body.get("tools") is not None:
        tools = _tools(body["tools"], limits.max_tools)
        if tools:
            out["tools"] = tools
    if body.get("tool_choice") is not None:
        out["tool_choice"] = _tool_choice(body["tool_choice"])
    response_format = _response_format(body.get("text"))
    if response_format is not None:
        out["response_format"] = response_format
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise field_error("stream", "must be a boolean")
    if stream:
        out["stream"] = True
        out["stream_options"] = {"include_usage": True}  # response.completed reports usage
    return out


# -- response: canonical → Responses ---------------------------------------------------------------


def response_id(request_id: str) -> str:
    """A Responses-style id derived from the tierwise request id (one id to quote)."""
    return "resp_" + request_id.removeprefix("req_")


def _usage(prompt: int, completion: int) -> dict[str, Any]:
    return {
        "input_tokens": prompt,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": completion,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": prompt + completion,
    }


def _text_item(item_id: str, text: str, status: str = "completed") -> dict[str, Any]:
    content = (
        [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}]
        if status == "completed"
        else []
    )
    return {"id": item_id, "type": "message", "role": "assistant", "status": status, "content": content}


def _call_item(call: dict[str, Any], status: str = "completed") -> dict[str, Any]:
    function = call.get("function") or {}
    return {
        "id": f"fc_{call.get('id')}",
        "type": "function_call",
        "call_id": call.get("id"),
        "name": function.get("name"),
        "arguments": function.get("arguments") or "",
        "status": status,
    }


class ResponseShell:
    """The fields of a ``response`` object that echo the request, shared by JSON and stream answers."""

    def __init__(self, body: dict[str, Any], request_id: str) -> None:
        self.id = response_id(request_id)
        self.item_id = "msg_" + request_id.removeprefix("req_")
        self.created = int(time.time())
        self._echo = {
            "instructions": body.get("instructions"),
            "max_output_tokens": body.get("max_output_tokens"),
            "metadata": body.get("metadata") or {},
            "parallel_tool_calls": body.get("parallel_tool_calls", True),
            "temperature": body.get("temperature"),
            "tool_choice": body.get("tool_choice", "auto"),
            "tools": body.get("tools") or [],
            "top_p": body.get("top_p"),
            "text": body.get("text") or {"format": {"type": "text"}},
        }

    def response(
        self,
        *,
        model: str,
        status: str,
        output: list[dict[str, Any]],
        usage: dict[str, Any] | None = None,
        finish_reason: str | None = None,
    ) -> dict[str, Any]:
        incomplete = {"reason": "max_output_tokens"} if finish_reason == "length" else None
        if incomplete is not None and status == "completed":
            status = "incomplete"
        return {
            "id": self.id,
            "object": "response",
            "created_at": self.created,
            "status": status,
            "model": model,
            "output": output,
            "error": None,
            "incomplete_details": incomplete,
            "previous_response_id": None,
            "store": False,
            "truncation": "disabled",
            "usage": usage,
            **self._echo,
        }

    def from_completion(self, completion: dict[str, Any]) -> dict[str, Any]:
        """The ``response`` object for a canonical ``chat.completion``."""
        choice = (completion.get("choices") or [{}])[0]
        reply = choice.get("message") or {}
        output: list[dict[str, Any]] = []
        if reply.get("content"):
            output.append(_text_item(self.item_id, reply["content"]))
        output.extend(_call_item(call) for call in reply.get("tool_calls") or ())
        usage = completion.get("usage") or {}
        return self.response(
            model=completion.get("model") or "",
            status="completed",
            output=output,
            usage=_usage(usage.get("prompt_tokens") or 0, usage.get("completion_tokens") or 0),
            finish_reason=choice.get("finish_reason"),
        )


class ResponseEvents:
    """Canonical chunks → Responses streaming events: ``response.created``, ``response.in_progress``,
    per output item ``response.output_item.added`` … its deltas … ``response.output_item.done``, then
    ``response.completed`` (or ``response.incomplete``) with the whole response and its usage."""

    def __init__(self, body: dict[str, Any], stream: RoutedStream) -> None:
        self._shell = ResponseShell(body, stream.request_id)
        self._seq = 0
        self._model = ""
        self._text: list[str] | None = None  # the text item's pieces, once it is open
        self._calls: dict[int, dict[str, Any]] = {}  # canonical tool_calls index → the call so far
        self._open: int | None = None  # output index of the item open now
        self._output: list[dict[str, Any]] = []
        self._finish: str | None = None
        self._usage = _usage(0, 0)
        self._started = False

    def event(self, kind: str, **fields: Any) -> bytes:
        data = {"type": kind, "sequence_number": self._seq, **fields}
        self._seq += 1
        return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"

    def _start(self) -> bytes:
        self._started = True
        shell = self._shell.response(model=self._model, status="in_progress", output=[])
        return self.event("response.created", response=shell) + self.event(
            "response.in_progress", response=shell
        )

    def _close(self) -> bytes:
        if self._open is None:
            return b""
        index, self._open = self._open, None
        if self._text is not None:
            text = "".join(self._text)
            self._text = None
            item = _text_item(self._shell.item_id, text)
            part = item["content"][0]
            ids = {"item_id": item["id"], "output_index": index, "content_index": 0}
            out = self.event("response.output_text.done", **ids, text=text, logprobs=[])
            out += self.event("response.content_part.done", **ids, part=part)
        else:
            call = next(c for c in self._calls.values() if c["output_index"] == index)
            item = _call_item(call)
            out = self.event(
                "response.function_call_arguments.done",
                item_id=item["id"],
                output_index=index,
                name=item["name"],
                arguments=item["arguments"],
            )
        self._output.append(item)
        return out + self.event("response.output_item.done", output_index=index, item=item)

    def _open_item(self, item: dict[str, Any]) -> bytes:
        out = self._close()
        self._open = len(self._output)
        return out + self.event("response.output_item.added", output_index=self._open, item=item)

    def chunk(self, chunk: Chunk) -> bytes:
        data = chunk.data
        self._model = self._model or data.get("model") or ""
        out = b"" if self._started else self._start()
        if chunk.usage is not None:
            self._usage = _usage(chunk.usage.input_tokens, chunk.usage.output_tokens)
        for choice in data.get("choices") or ():
            delta = choice.get("delta") or {}
            if delta.get("content"):
                if self._text is None:
                    out += self._open_item(_text_item(self._shell.item_id, "", "in_progress"))
                    self._text = []
                    part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
                    out += self.event(
                        "response.content_part.added",
                        item_id=self._shell.item_id,
                        output_index=self._open,
                        content_index=0,
                        part=part,
                    )
                self._text.append(delta["content"])
                out += self.event(
                    "response.output_text.delta",
                    item_id=self._shell.item_id,
                    output_index=self._open,
                    content_index=0,
                    delta=delta["content"],
                    logprobs=[],
                )
            for piece in delta.get("tool_calls") or ():
                position = piece.get("index", 0)
                function = piece.get("function") or {}
                call = self._calls.get(position)
                if call is None:
                    call = {
                        "id": piece.get("id"),
                        "function": {"name": function.get("name"), "arguments": ""},
                    }
                    out += self._open_item(_call_item(call, "in_progress"))
                    call["output_index"] = self._open
                    self._calls[position] = call
                arguments = function.get("arguments")
                if arguments and call["output_index"] == self._open:
                    call["function"]["arguments"] += arguments
                    out += self.event(
                        "response.function_call_arguments.delta",
                        item_id=f"fc_{call['id']}",
                        output_index=self._open,
                        delta=arguments,
                    )
            if choice.get("finish_reason"):
                self._finish = choice["finish_reason"]
        return out

    def end(self) -> bytes:
        out = (b"" if self._started else self._start()) + self._close()
        final = self._shell.response(
            model=self._model,
            status="completed",
            output=self._output,
            usage=self._usage,
            finish_reason=self._finish,
        )
        kind = "response.completed" if final["status"] == "completed" else "response.incomplete"
        return out + self.event(kind, response=final)

    def error(self, message: str, *, status: int) -> bytes:
        """The ``error`` event that ends a broken stream. ``code``/``message`` are the documented
        fields; the nested ``error`` object is what makes the openai SDKs raise instead of ending quietly."""
        code = "server_error" if status == 503 else "stream_interrupted"
        nested = {"message": message, "type": "server_error", "param": None, "code": code}
        return self.event("error", code=code, message=message, param=None, error=nested)
