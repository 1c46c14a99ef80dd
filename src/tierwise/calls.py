"""Calling a model once, and what a request's calls add up to.

``call_once`` is the one way tierwise makes a non-streamed upstream call: it calls, times, records the
``Attempt`` (status, latency, tokens, HTTP status, a safe error message) and charges it at the model's
prices. Dispatch's chain walk, the cascade's samples and judge, the tier classifier and the shadow all
call through it; what each does with a failure (retry, fall back, escalate, skip) is theirs to decide.
Streamed attempts are timed chunk by chunk in dispatch and charged with ``charge``.

An ``Outcome`` collects one request's attempts; ``request_row`` turns it into the request's ledger row —
the one place a row is built, for requests and shadow calls alike.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

from .config import ModelEntry
from .errors import AttemptFailure, ProviderError, UpstreamTimeout
from .ledger.base import Attempt, LedgerRow
from .providers.base import Completion, Provider, UpstreamCall, Usage


@dataclass(slots=True)
class Outcome:
    """What happened while a request's calls ran; ``request_row`` turns it into its ledger row."""

    attempts: list[Attempt] = field(default_factory=list)
    failures: list[AttemptFailure] = field(default_factory=list)
    model: ModelEntry | None = None  # the model that answered (or began answering)
    usage: Usage | None = None
    ttft_ms: float | None = None
    status: str = "error"  # "ok", "error", "interrupted", "cancelled"

    @property
    def cost_usd(self) -> float:
        """Every attempt's cost, failed, rejected, judge and classifier calls included."""
        return sum(a.cost_usd for a in self.attempts)


@dataclass(slots=True)
class Call:
    """One call's result: the completion, or the error that ended it; the attempt either way."""

    completion: Completion | None
    attempt: Attempt
    error: ProviderError | None


def elapsed_ms(since: float) -> float:
    """Milliseconds since a ``time.perf_counter()`` reading, as the ledger keeps them."""
    return round((time.perf_counter() - since) * 1000, 3)


async def call_once(
    provider: Provider,
    model: ModelEntry,
    body: dict[str, Any],
    *,
    request_id: str = "",
    purpose: str = "answer",
    retry: int = 0,
    timeout_s: float | None = None,
    timeout_setting: str = "timeout_s",
    outcome: Outcome | None = None,
) -> Call:
    """Call ``model`` once with ``body``, record the attempt (appended to ``outcome`` if given) and
    charge it. Never raises ProviderError: a failure is returned in ``Call.error``. ``timeout_s`` bounds
    the whole call on top of the provider's own timeouts; ``timeout_setting`` names the setting that
    set it, for the message."""
    attempt = Attempt(
        model.name,
        model.provider,
        "ok",
        retry=retry,
        purpose=purpose,
        template=model.template_id,
        started_at=time.time(),
    )
    if outcome is not None:
        outcome.attempts.append(attempt)
    started = time.perf_counter()
    try:
        if timeout_s is None:  # the common case: the provider's own timeouts bound the call
            completion = await provider.complete(UpstreamCall(model, body, request_id))
        else:
            async with asyncio.timeout(timeout_s):
                completion = await provider.complete(UpstreamCall(model, body, request_id))
    except ProviderError as exc:
        attempt.latency_ms = elapsed_ms(started)
        attempt.status, attempt.http_status, attempt.error = type(exc).__name__, exc.status, exc.message
        return Call(None, attempt, exc)
    except TimeoutError:
        attempt.latency_ms = elapsed_ms(started)
        assert timeout_s is not None
        exc = UpstreamTimeout(
            f"{model.name}: no answer within {timeout_s * 1000:g} ms ({timeout_setting})", model=model.name
        )
        attempt.status, attempt.error = "UpstreamTimeout", exc.message
        return Call(None, attempt, exc)
    attempt.latency_ms = elapsed_ms(started)
    attempt.http_status = 200
    charge(attempt, model, completion.usage)
    return Call(completion, attempt, None)


def charge(
    attempt: Attempt,
    model: ModelEntry,
    usage: Usage | None,
    *,
    input_estimate: int = 0,
    streamed_chars: int = 0,
) -> None:
    """Put an attempt's tokens and cost on it: the upstream's usage, or when it never reported one
    (a stream cut short), the request's input estimate and the characters streamed / 4."""
    if usage is not None:
        attempt.input_tokens, attempt.output_tokens = usage.input_tokens, usage.output_tokens
    else:
        attempt.input_tokens, attempt.output_tokens = input_estimate, streamed_chars // 4
    attempt.cost_usd = model.cost(attempt.input_tokens, attempt.output_tokens)


def request_row(
    outcome: Outcome,
    *,
    id: str,
    arrived: float,
    started: float,
    requested_model: str,
    stream: bool,
    features: dict[str, Any],
    decision: dict[str, Any],
    policy_version: str,
    http_status: int,
    error: str | None,
    counterfactual: ModelEntry | None = None,
    key_id: str | None = None,
    prompt: list[dict[str, Any]] | None = None,
) -> LedgerRow:
    """The ledger row of one request (or shadow call) whose calls are in ``outcome``. ``started`` is
    its ``time.perf_counter()`` at arrival; ``counterfactual`` the model whose price the savings are
    measured against (its cost of the same tokens)."""
    usage = outcome.usage
    model = outcome.model
    counterfactual_usd = (
        counterfactual.cost(usage.input_tokens, usage.output_tokens)
        if usage is not None and counterfactual is not None
        else 0.0
    )
    return LedgerRow(
        id=id,
        ts=arrived,
        requested_model=requested_model,
        stream=stream,
        features=features,
        decision=decision,
        policy_version=policy_version,
        status=outcome.status,
        http_status=http_status,
        final_model=model.name if model else None,
        tier=model.tier if model else None,
        input_tokens=usage.input_tokens if usage else 0,
        output_tokens=usage.output_tokens if usage else 0,
        cost_usd=round(outcome.cost_usd, 10),
        counterfactual_cost_usd=round(counterfactual_usd, 10),
        latency_ms=elapsed_ms(started),
        ttft_ms=outcome.ttft_ms,
        error=error,
        key_id=key_id,
        attempts=outcome.attempts,
        prompt=prompt,
    )
