"""Adapter for any OpenAI-compatible chat-completions API: OpenAI, DeepSeek, OpenRouter, Together,
Groq, vLLM, Ollama, GLM …

The canonical request and response are already in this format, so the adapter only sets the upstream
model id, forces usage reporting on streams (so every stream can be costed), and passes the answer
through unchanged; streamed chunks keep their original bytes in ``Chunk.raw``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Any

import orjson

from ..config import ProviderConfig
from ..http import HttpPool
from ._http import Upstream
from .base import Chunk, Completion, UpstreamCall, Usage


def _usage(usage: Any) -> Usage | None:
    if not isinstance(usage, dict):
        return None
    return Usage(
        input_tokens=int(usage.get("prompt_tokens") or 0),
        output_tokens=int(usage.get("completion_tokens") or 0),
    )


def _has_message(choices: Any) -> bool:
    """Whether a chat completion's ``choices`` hold an answer: a list with at least one message."""
    return isinstance(choices, list) and any(
        isinstance(choice, dict) and isinstance(choice.get("message"), dict) for choice in choices
    )


def _is_done(_event: str, data: bytes) -> bool:
    return data[:6] == b"[DONE]"


class OpenAIProvider:
    """``POST {base_url}/chat/completions`` with a Bearer key, JSON or SSE."""

    def __init__(self, name: str, config: ProviderConfig, *, http: HttpPool) -> None:
        self.name = name
        key = config.api_key(name)
        headers = {"Content-Type": "application/json"}
        if key:
            headers["Authorization"] = f"Bearer {key}"
        headers.update(config.headers)
        base = (config.base_url or "").rstrip("/")
        self._upstream = Upstream(
            provider=name,
            url=base + "/chat/completions",
            headers=headers,
            timeouts=config.timeouts,
            http=http,
            secret=key,
        )
        self._embeddings = Upstream(
            provider=name,
            url=base + "/embeddings",
            headers=headers,
            timeouts=config.timeouts,
            http=http,
            secret=key,
        )

    async def complete(self, call: UpstreamCall) -> Completion:
        body = dict(call.body)
        body["model"] = call.model.upstream
        body.pop("stream", None)
        body.pop("stream_options", None)  # only valid with stream: true; some servers reject it otherwise
        doc = await self._upstream.post_json(call.model.name, body)
        if not isinstance(doc, dict) or not _has_message(doc.get("choices")):
            # No choice with a message is no answer (a 200 all the same): worth a retry or a fallback.
            raise self._upstream.body_error(call.model.name, doc)
        return Completion(body=doc, usage=_usage(doc.get("usage")) or Usage())

    async def embed(self, call: UpstreamCall) -> Completion:
        """``POST {base_url}/embeddings`` with the client's body (its ``input``, ``dimensions``,
        ``encoding_format``) and the upstream model id; the answer passes through unchanged."""
        body = dict(call.body)
        body["model"] = call.model.upstream
        doc = await self._embeddings.post_json(call.model.name, body)
        if not isinstance(doc, dict) or not isinstance(doc.get("data"), list):
            raise self._embeddings.body_error(call.model.name, doc)
        return Completion(body=doc, usage=_usage(doc.get("usage")) or Usage())

    async def stream(self, call: UpstreamCall) -> AsyncIterator[Chunk]:
        model = call.model.name
        body = dict(call.body)
        body["model"] = call.model.upstream
        body["stream"] = True
        options = body.get("stream_options")
        # Always ask for usage, so every stream can be costed; the gateway drops the usage chunk
        # when its client did not ask for it.
        body["stream_options"] = (
            {**options, "include_usage": True} if isinstance(options, dict) else {"include_usage": True}
        )
        async with aclosing(self._upstream.post_sse(model, body, end=_is_done)) as events:
            async for _event, data in events:
                if data[:6] == b"[DONE]":
                    continue  # the end marker: post_sse stops after it
                try:
                    parsed = orjson.loads(data)
                except orjson.JSONDecodeError as exc:
                    raise self._upstream.invalid_json(model, data) from exc
                if not isinstance(parsed, dict) or parsed.get("error"):
                    raise self._upstream.body_error(model, parsed, what="an unexpected stream event")
                usage = parsed.get("usage")
                yield Chunk(data=parsed, raw=data, usage=_usage(usage) if usage else None)

    async def aclose(self) -> None:
        """Nothing to release: the HttpPool is shared and closed by its owner."""
