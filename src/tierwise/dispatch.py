"""Runs a Decision: walks its chain with retries, backoff, the breaker and fallbacks.

Per model: skip it if the request cannot fit its context window; try it ``retry.attempts`` times on
retryable failures (timeouts, 5xx, refused connections, 429s), sleeping a jittered exponential
backoff or the upstream's ``Retry-After``; then move to the next model. A model whose breaker is
open (see ``CooldownConfig``: a failure ratio judged here by ``breaker.py``, or consecutive failures
counted in the state store) is tried only after every healthy model.

Streaming contract: chunks are held back until the first one with content (text, a tool call, a
finish reason). Until then a failure falls back to the next model invisibly — and so does a stream
that ends without one, which is no answer at all. After it, the client has part of one model's
answer, so a failure is re-raised for the gateway to end the stream with an explicit error event —
never a splice of two models' answers, never a clean truncated stream.

A decision with ``cascade`` first goes through ``escalation.py``, which verifies the cheap answers
(buffering streams, so nothing of a rejected answer is sent) and hands back the models left to answer
unverified under the contract above. Every non-streamed call is made by ``calls.call_once``.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import aclosing
from typing import Any, TypeVar

from .backoff import backoff_s
from .breaker import RatioBreaker
from .calls import Call, Outcome, call_once, charge, elapsed_ms
from .config import Config, ModelEntry
from .errors import AttemptFailure, ChainExhausted, ProviderError, UpstreamRateLimited, UpstreamUnavailable
from .escalation import Buffered, Escalation
from .features import Features
from .ledger.base import Attempt
from .policy.engine import Decision
from .providers.base import Chunk, Completion, Provider, UpstreamCall, Usage, chunk_has_content
from .state.base import State

log = logging.getLogger("tierwise.dispatch")
T = TypeVar("T")
_ms = elapsed_ms


class Dispatcher:
    """Calls upstream models for decisions. One per Router; holds no per-request state."""

    def __init__(
        self,
        config: Config,
        providers: Mapping[str, Provider],
        state: State,
        *,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._models = {m.name: m for m in config.models}
        self._providers = providers
        self._state = state
        self._retry = config.policy.retry
        self._cooldown = config.policy.cooldown
        self._sleep = sleep
        self._random = (rng or random.Random()).random
        # Ratio mode counts calls in this process and writes to the state store only to eject.
        self._breaker = RatioBreaker(self._cooldown, clock=clock) if self._cooldown.mode == "ratio" else None
        # Consecutive mode: models this process saw fail recently; only these need a success reported
        # to the state store, which keeps the common path free of state writes.
        self._suspect: set[str] = set()
        cascade = config.policy.cascade
        self._escalation = Escalation(cascade, self._models, providers, self) if cascade is not None else None

    # -- planning --

    async def plan(self, decision: Decision, features: Features, outcome: Outcome) -> list[ModelEntry]:
        """The chain in the order it will be tried: too-small context windows dropped, cooling models last."""
        needed = features.context_needed()
        fitting: list[ModelEntry] = []
        for name in decision.chain:
            model = self._models[name]
            if not model.fits(needed):
                message = f"needs ~{needed} tokens, context window is {model.context_window}"
                outcome.attempts.append(Attempt(model.name, model.provider, "skipped", error=message))
                outcome.failures.append(AttemptFailure(model.name, "ContextTooLong", message))
                continue
            fitting.append(model)
        if len(fitting) > 1 or self._suspect:
            cooling = await self._state.cooling([m.name for m in fitting])
            if cooling:
                fitting.sort(key=lambda m: m.name in cooling)  # stable: healthy models keep their order
        return fitting

    def _backoff(self, exc: ProviderError, retry: int) -> float | None:
        """Seconds to wait before retrying the same model, or None to move on to the next one."""
        if isinstance(exc, UpstreamRateLimited) and exc.retry_after is not None:
            if exc.retry_after > self._retry.max_retry_after_s:
                return None
            return exc.retry_after
        # Jittered: replicas that failed together retry apart.
        return backoff_s(
            retry + 1, base=self._retry.backoff_s, cap=self._retry.max_backoff_s, jitter=self._random
        )

    async def _failed(self, model: ModelEntry, exc: ProviderError, outcome: Outcome) -> None:
        """Count a failed attempt (already recorded in ``outcome.attempts``) as a failure of the chain
        and, if the upstream is to blame, against the model's breaker."""
        outcome.failures.append(AttemptFailure(model.name, type(exc).__name__, exc.message, exc.status))
        if not exc.retryable:
            return
        if self._breaker is not None:
            ejection = self._breaker.failure(model.name)
            if ejection is not None and await self._state.eject(model.name, ejection.seconds):
                log.warning(
                    "breaker: %s ejected for %g s: %d of its last %d calls failed",
                    model.name,
                    ejection.seconds,
                    ejection.failed,
                    ejection.calls,
                )
            return
        self._suspect.add(model.name)
        await self._state.record_failure(
            model.name, threshold=self._cooldown.failures, cooldown_s=self._cooldown.seconds
        )

    async def _succeeded(self, model: ModelEntry) -> None:
        if self._breaker is not None:
            self._breaker.success(model.name)
        elif model.name in self._suspect:
            self._suspect.discard(model.name)
            await self._state.record_success(model.name)

    async def _should_retry(self, exc: ProviderError, retry: int) -> bool:
        if not exc.retryable or retry + 1 >= self._retry.attempts:
            return False
        delay = self._backoff(exc, retry)
        if delay is None:
            return False
        await self._sleep(delay)
        return True

    # -- running --

    async def complete(
        self,
        decision: Decision,
        body: dict[str, Any],
        features: Features,
        outcome: Outcome,
        request_id: str = "",
    ) -> Completion:
        """Return the first successful completion along the chain, or raise ChainExhausted."""
        plan = await self.plan(decision, features, outcome)
        if decision.cascade and self._escalation is not None:
            accepted, plan = await self._escalation.complete(plan, body, outcome, request_id)
            if accepted is not None:
                return accepted
        for model in plan:
            answered = await self.call(model, body, outcome, request_id)
            if answered is None or answered.completion is None:
                continue
            completion = answered.completion
            outcome.model, outcome.usage, outcome.status = model, completion.usage, "ok"
            return completion
        raise ChainExhausted(outcome.failures)

    async def stream(
        self,
        decision: Decision,
        body: dict[str, Any],
        features: Features,
        outcome: Outcome,
        request_id: str = "",
    ) -> AsyncIterator[Chunk]:
        """Yield the chunks of the first model that starts answering; see the module's streaming contract.

        ``outcome.model`` is set before the first chunk is yielded, so the caller can name the model in
        its response headers. A failure after that is re-raised as the ProviderError it was.
        """
        plan = await self.plan(decision, features, outcome)
        waited = 0.0  # ms the cascade spent before the streaming models below: part of the client's TTFT
        if decision.cascade and self._escalation is not None:
            cascade_started = time.perf_counter()
            buffered, plan = await self._escalation.buffer(plan, body, features, outcome, request_id)
            if buffered is not None:
                outcome.ttft_ms = _ms(cascade_started)
                for chunk in buffered:
                    yield chunk
                return
            waited = _ms(cascade_started)
        for model in plan:
            provider = self._providers[model.provider]
            call = UpstreamCall(model, body, request_id)
            for retry in range(self._retry.attempts):
                started = time.perf_counter()
                attempt = _attempt(model, retry)
                held: list[Chunk] = []
                sent = False
                usage: Usage | None = None
                streamed_chars = 0
                try:
                    async with aclosing(provider.stream(call)) as chunks:
                        async for chunk in chunks:
                            if chunk.usage is not None:
                                usage = chunk.usage
                            if sent:
                                streamed_chars += _chars(chunk)
                                yield chunk
                            elif chunk_has_content(chunk.data):
                                sent = True
                                attempt.ttft_ms = _ms(started)
                                outcome.ttft_ms = attempt.ttft_ms + waited
                                outcome.model = model
                                streamed_chars += _chars(chunk)
                                for early in held:
                                    yield early
                                held.clear()
                                yield chunk
                            else:
                                held.append(chunk)
                    if not sent:
                        raise _no_answer(model)
                except ProviderError as exc:
                    _record_failure(attempt, exc, started, outcome)
                    if sent:
                        # The client has part of this answer: charge it (estimated if the usage never
                        # came) and let the gateway end the stream with an error event.
                        charge(
                            attempt,
                            model,
                            usage,
                            input_estimate=features.input_tokens,
                            streamed_chars=streamed_chars,
                        )
                        outcome.status = "interrupted"
                        await self._failed(model, exc, outcome)
                        raise
                    await self._failed(model, exc, outcome)
                    if await self._should_retry(exc, retry):
                        continue
                    break
                except (asyncio.CancelledError, GeneratorExit):
                    self._cancelled(attempt, started, model, usage, features, streamed_chars, outcome)
                    raise
                attempt.latency_ms = _ms(started)
                outcome.model = model
                charge(
                    attempt, model, usage, input_estimate=features.input_tokens, streamed_chars=streamed_chars
                )
                attempt.http_status = 200
                outcome.attempts.append(attempt)
                outcome.usage, outcome.status = (
                    usage or Usage(attempt.input_tokens, attempt.output_tokens),
                    "ok",
                )
                await self._succeeded(model)
                return
        raise ChainExhausted(outcome.failures)

    # -- one model, with retries --

    async def _with_retries(
        self, model: ModelEntry, outcome: Outcome, one_try: Callable[[int], Awaitable[T | ProviderError]]
    ) -> T | None:
        """Try ``model`` up to ``retry.attempts`` times; None once it has failed for good (the failures
        are in ``outcome``). ``one_try(retry)`` returns its result, or the ProviderError that ended it."""
        for retry in range(self._retry.attempts):
            result = await one_try(retry)
            if not isinstance(result, ProviderError):
                await self._succeeded(model)
                return result
            await self._failed(model, result, outcome)
            if not await self._should_retry(result, retry):
                return None
        return None

    async def call(
        self, model: ModelEntry, body: dict[str, Any], outcome: Outcome, request_id: str
    ) -> Call | None:
        """One model's non-streamed answer, with retries; None if it failed."""
        provider = self._providers[model.provider]

        async def one_try(retry: int) -> Call | ProviderError:
            call = await call_once(provider, model, body, request_id=request_id, retry=retry, outcome=outcome)
            return call.error if call.error is not None else call

        return await self._with_retries(model, outcome, one_try)

    async def buffer(
        self, model: ModelEntry, body: dict[str, Any], features: Features, outcome: Outcome, request_id: str
    ) -> Buffered | None:
        """One model's whole stream, held back, with retries; None if it failed. Nothing was sent, so a
        stream that breaks halfway is retried or falls back like any failure (its tokens are charged)."""
        provider = self._providers[model.provider]
        call = UpstreamCall(model, body, request_id)

        async def one_try(retry: int) -> Buffered | ProviderError:
            started = time.perf_counter()
            attempt = _attempt(model, retry)
            chunks: list[Chunk] = []
            usage: Usage | None = None
            chars = 0
            try:
                async with aclosing(provider.stream(call)) as stream:
                    async for chunk in stream:
                        if chunk.usage is not None:
                            usage = chunk.usage
                        if attempt.ttft_ms is None and chunk_has_content(chunk.data):
                            attempt.ttft_ms = _ms(started)
                        chars += _chars(chunk)
                        chunks.append(chunk)
                if attempt.ttft_ms is None:
                    raise _no_answer(model)
            except ProviderError as exc:
                _record_failure(attempt, exc, started, outcome)
                if attempt.ttft_ms is not None:  # it produced tokens before breaking: they are billed
                    charge(attempt, model, usage, input_estimate=features.input_tokens, streamed_chars=chars)
                return exc
            except asyncio.CancelledError:
                self._cancelled(attempt, started, model, usage, features, chars, outcome)
                raise
            attempt.latency_ms = _ms(started)
            charge(attempt, model, usage, input_estimate=features.input_tokens, streamed_chars=chars)
            attempt.http_status = 200
            outcome.attempts.append(attempt)
            return Buffered(chunks, attempt, usage or Usage(attempt.input_tokens, attempt.output_tokens))

        return await self._with_retries(model, outcome, one_try)

    def _cancelled(
        self,
        attempt: Attempt,
        started: float,
        model: ModelEntry,
        usage: Usage | None,
        features: Features,
        chars: int,
        outcome: Outcome,
    ) -> None:
        """The client went away mid-stream: what was streamed so far is billed and logged as cancelled."""
        attempt.latency_ms = _ms(started)
        attempt.status = "cancelled"
        charge(attempt, model, usage, input_estimate=features.input_tokens, streamed_chars=chars)
        outcome.attempts.append(attempt)
        outcome.status = "cancelled"


def _attempt(model: ModelEntry, retry: int) -> Attempt:
    """A streamed or buffered try of ``model``, starting now (``call_once`` makes its own)."""
    return Attempt(
        model.name, model.provider, "ok", retry=retry, template=model.template_id, started_at=time.time()
    )


def _no_answer(model: ModelEntry) -> UpstreamUnavailable:
    """A stream that ended cleanly without any content, tool call or finish reason: no answer at all (a
    real one, even an empty one, ends with a finish reason), so a failure worth another try."""
    return UpstreamUnavailable(
        f"{model.name}: {model.provider} ended its stream without an answer", model=model.name
    )


def _record_failure(attempt: Attempt, exc: ProviderError, started: float, outcome: Outcome) -> None:
    """A streamed attempt that failed, recorded as ``call_once`` records a failed call."""
    attempt.latency_ms = _ms(started)
    attempt.status, attempt.http_status, attempt.error = type(exc).__name__, exc.status, exc.message
    outcome.attempts.append(attempt)


def _chars(chunk: Chunk) -> int:
    total = 0
    for choice in chunk.data.get("choices") or ():
        delta = choice.get("delta") or {}
        content = delta.get("content")
        if content:
            total += len(content)
        for call in delta.get("tool_calls") or ():
            total += len((call.get("function") or {}).get("arguments") or "")
    return total
