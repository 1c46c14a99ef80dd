"""The seam between dispatch and the adapters: one canonical call shape, one small interface.

The canonical request is the OpenAI chat-completions body, because most clients and most upstreams
already speak it; adapters for other wire formats (Anthropic) translate to and from it. Responses are
OpenAI ``chat.completion`` objects and streamed ``chat.completion.chunk`` objects.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from ..config import ModelEntry, ProviderConfig
from ..templates import apply_template


@dataclass(slots=True)
class Usage:
    input_tokens: int = 0
    output_tokens: int = 0


@dataclass(frozen=True, slots=True)
class UpstreamCall:
    """One attempt at one model. ``body`` is the client's OpenAI request body (already cleaned of
    tierwise-only keys), rewritten here by the model's prompt template (``models[].template``) so that
    every adapter sends the same rewrite; the adapter sets the upstream model id and never mutates
    ``body``."""

    model: ModelEntry
    body: dict[str, Any]
    request_id: str = ""

    def __post_init__(self) -> None:
        if self.model.template is not None:
            object.__setattr__(self, "body", apply_template(self.model.template, self.body))


@dataclass(slots=True)
class Completion:
    body: dict[str, Any]  # OpenAI chat.completion object
    usage: Usage


@dataclass(slots=True)
class Chunk:
    """One streamed event, as an OpenAI chat.completion.chunk.

    ``raw`` is the same chunk already serialized, when the adapter received it in OpenAI format and
    can pass it through without re-encoding. ``usage`` is set on the chunk that reports token usage.
    """

    data: dict[str, Any]
    raw: bytes | None = None
    usage: Usage | None = None


class Provider(Protocol):
    """What dispatch needs of an upstream. Adapters raise only ProviderError subclasses."""

    name: str

    async def complete(self, call: UpstreamCall) -> Completion: ...

    def stream(self, call: UpstreamCall) -> AsyncIterator[Chunk]: ...

    async def aclose(self) -> None: ...


@runtime_checkable
class Embedder(Protocol):
    """A provider that can also embed (``POST /v1/embeddings``): the OpenAI-compatible one."""

    async def embed(self, call: UpstreamCall) -> Completion: ...


class ProviderFactory(Protocol):
    def __call__(self, name: str, config: ProviderConfig, *, http: Any) -> Provider: ...


def chunk_has_content(data: dict[str, Any]) -> bool:
    """True once a chunk carries something the client would show: text, a tool call, a refusal.

    Role-only and usage-only chunks are not content, so fallback stays possible until the first of
    these reaches the client.
    """
    for choice in data.get("choices") or ():
        delta = choice.get("delta") or {}
        if delta.get("content") or delta.get("tool_calls") or delta.get("refusal"):
            return True
        if delta.get("function_call"):
            return True
        if choice.get("finish_reason"):
            return True
    return False
