"""Serving ``POST /v1/embeddings``: forward to a configured embedding model, charge it, log its row.

Embeddings are not routed: vectors from two models live in different spaces, so a cheaper model is
no substitute for the one an index was built with. The request's ``model`` names one of
``config.embeddings`` (any other name takes the first); the call goes through ``calls.call_once`` like
every other upstream call, and its ledger row, built by ``calls.request_row``, has the decision layer
``embeddings``. (``embeddings.py`` is unrelated: the learned router's static token embeddings.)
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from .calls import Outcome, call_once, request_row
from .config import EMBEDDING_TIER, Config, EmbeddingModel
from .errors import AttemptFailure, ChainExhausted, RequestError
from .ledger.base import LedgerRow
from .policy.engine import Decision
from .providers.base import Chunk, Completion, Embedder, Provider, UpstreamCall
from .validation import check_json_shape

MAX_INPUTS = 2048  # OpenAI's own limit on inputs in one request
_ENCODINGS = ("float", "base64")


@dataclass(slots=True)
class Embedded:
    """A forwarded embeddings request: the upstream's answer (OpenAI ``list`` of ``embedding``) and
    how it was served."""

    response: dict[str, Any]
    decision: Decision
    model: str
    cost_usd: float
    request_id: str


def _fail(param: str, message: str) -> RequestError:
    return RequestError(f"{param}: {message}", param=param)


def _token_ids(value: Any) -> bool:
    return (
        isinstance(value, list)
        and bool(value)
        and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
    )


def input_chars(value: Any) -> int:
    """Characters of text in ``input`` (token-id arrays count one per id); RequestError if malformed."""
    if isinstance(value, str):
        return len(value)
    if not isinstance(value, list) or not value:
        raise _fail("input", "required: a string, an array of strings, or token arrays")
    if len(value) > MAX_INPUTS:
        raise _fail("input", f"at most {MAX_INPUTS} inputs, got {len(value)}")
    if _token_ids(value):
        return len(value)
    chars = 0
    for i, item in enumerate(value):
        if not (isinstance(item, str) and item) and not _token_ids(item):
            raise _fail(f"input[{i}]", "must be a non-empty string or an array of token ids")
        chars += len(item)
    return chars


def validate_embeddings_body(body: Any, config: Config) -> dict[str, Any]:
    """Return ``body`` if it is a well-formed embeddings request within the server's limits; raise
    RequestError naming the bad field (400, or 413 when too large)."""
    if not isinstance(body, dict):
        raise RequestError("request body: must be a JSON object", param=None)
    limits = config.server
    check_json_shape(body, max_depth=limits.max_json_depth, max_items=limits.max_json_items)
    if not isinstance(body.get("model"), str) or not body["model"]:
        raise _fail("model", "required: an embedding model's name")
    chars = input_chars(body.get("input"))
    if chars > limits.max_input_chars:
        raise RequestError(
            f"input: {chars} characters exceed the limit of {limits.max_input_chars} "
            "(server.max_input_chars)",
            param="input",
            status=413,
            code="request_too_large",
        )
    dimensions = body.get("dimensions")
    if dimensions is not None and (
        isinstance(dimensions, bool) or not isinstance(dimensions, int) or dimensions < 1
    ):
        raise _fail("dimensions", f"must be a positive integer, got {dimensions!r}")
    encoding = body.get("encoding_format")
    if encoding is not None and encoding not in _ENCODINGS:
        raise _fail("encoding_format", f"must be one of {', '.join(_ENCODINGS)}, got {encoding!r}")
    return body


def pick(config: Config, requested: str) -> EmbeddingModel:
    """The embedding model named ``requested``, else the first configured one."""
    if not config.embeddings:
        raise RequestError(
            "/v1/embeddings: no embedding model is configured (add an embeddings: section to the config)",
            status=404,
            code="not_found",
        )
    return next((m for m in config.embeddings if m.name == requested), config.embeddings[0])


async def forward(
    config: Config,
    providers: Mapping[str, Provider],
    body: dict[str, Any],
    *,
    request_id: str,
    policy_version: str,
    record: Callable[[LedgerRow], Awaitable[None]],
    key_id: str | None = None,
    tenant: str | None = None,
) -> Embedded:
    """Validate, call the embedding model once, log the row through ``record``; return the answer.
    Raises RequestError for a bad body and ChainExhausted (with the upstream's status) when the call
    fails — the row is logged either way."""
    arrived, started = time.time(), time.perf_counter()
    validate_embeddings_body(body, config)
    chosen = pick(config, body["model"])
    model = chosen.entry()
    reason = (
        f"embeddings: {chosen.name} as requested"
        if chosen.name == body["model"]
        else f"embeddings: {body['model']!r} is no embedding model; the first, {chosen.name}"
    )
    decision = Decision(
        chain=(chosen.name,),
        tier=EMBEDDING_TIER,
        reason=reason,
        rule="embeddings",
        layer="embeddings",
        policy_version=policy_version,
    )
    provider = providers[chosen.provider]
    assert isinstance(provider, Embedder)  # config validation allows only OpenAI-compatible providers
    outcome = Outcome()
    logged = decision.to_log()
    if tenant is not None:
        logged["tenant"] = tenant
    call = await call_once(_EmbedCall(provider), model, body, request_id=request_id, outcome=outcome)
    if call.error is None:
        assert call.completion is not None
        outcome.model, outcome.usage, outcome.status = model, call.completion.usage, "ok"
    failure = None
    if call.error is not None:
        failure = ChainExhausted(
            [AttemptFailure(model.name, type(call.error).__name__, call.error.message, call.error.status)]
        )
    inputs = body["input"]
    row = request_row(
        outcome,
        id=request_id,
        arrived=arrived,
        started=started,
        requested_model=body["model"],
        stream=False,
        features={"task": "embeddings", "inputs": 1 if isinstance(inputs, str) else len(inputs)},
        decision=logged,
        policy_version=policy_version,
        http_status=200 if failure is None else failure.status,
        error=None if failure is None else str(failure),
        key_id=key_id,
    )
    await record(row)
    if failure is not None:
        raise failure
    assert call.completion is not None
    return Embedded(call.completion.body, decision, chosen.name, row.cost_usd, request_id)


class _EmbedCall:
    """An Embedder seen as a Provider whose ``complete`` embeds, so ``call_once`` (the one place a call
    is timed, recorded and charged) serves embeddings too."""

    def __init__(self, provider: Embedder) -> None:
        self.name = getattr(provider, "name", "")
        self._provider = provider

    async def complete(self, call: UpstreamCall) -> Completion:
        return await self._provider.embed(call)

    def stream(self, call: UpstreamCall) -> AsyncIterator[Chunk]:
        raise NotImplementedError("embeddings are not streamed")

    async def aclose(self) -> None:
        """The wrapped provider is closed by its owner."""
