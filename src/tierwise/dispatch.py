"""Runs a Decision: walks its chain with retries, backoff, cooldowns and fallbacks.

Per model: skip it if the request cannot fit its context window; try it ``retry.attempts`` times on
retryable failures (timeouts, 5xx, refused connections, 429s), sleeping a jittered exponential
backoff or the upstream's ``Retry-After``; then move to the next model. A model whose breaker is
open (``cooldown.failures`` consecutive failures) is tried only after every healthy model.

Streaming contract: chunks are held back until the first one with content (text, a tool call, a
finish reason). Until then a failure falls back to the next model invisibly. After it, the client
has part of one model's answer, so a failure is re-raised for the gateway to end the stream with an
explicit error event — never a splice of two models' answers, never a clean truncated stream.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Any

from .config import Config, ModelEntry
from .errors import AttemptFailure, ChainExhausted, ProviderError, UpstreamRateLimited
from .features import Features
from .ledger.base import Attempt
from .policy.engine import Decision
from .providers.base import Chunk, Completion, Provider, UpstreamCall, Usage, chunk_has_content
from .state.base import State


@dataclass(slots=True)
class Outcome:
    """What happened while a decision ran; the router turns it into a ledger row."""

    attempts: list[Attempt] = field(default_factory=list)
    failures: list[AttemptFailure] = field(default_factory=list)
    model: ModelEntry | None = None  # the model that answered (or began answering)
    usage: Usage | None = None
    cost_usd: float = 0.0  # every attempt's cost, failed ones included
    ttft_ms: float | None = None
    status: str = "error"  # "ok", "error", "interrupted", "cancelled"


def _ms(since: float) -> float:
    return round((time.perf_counter() - since) * 1000, 3)


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
    ) -> None:
        self._models = {m.name: m for m in config.models}
        self._providers = providers
        self._state = state
        self._retry = config.policy.retry
        self._cooldown = config.policy.cooldown
        self._sleep = sleep
        self._random = (rng or random.Random()).random
        # Models this process saw fail recently: only these need a success reported to the state
        # store, which keeps the common path free of state writes.
        self._suspect: set[str] = set()

    # -- planning --

    async def plan(self, decision: Decision, features: Features, outcome: Outcome) -> list[ModelEntry]:
        """The chain in the order it will be tried: too-small context windows dropped, cooling models last."""
        needed = features.context_needed()
        fitting: list[ModelEntry] = []
        for name in decision.chain:
            model = self._models[name]
            if needed > model.context_window:
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
        base = min(self._retry.max_backoff_s, self._retry.backoff_s * (2**retry))
        return base * (0.5 + self._random())  # jitter: replicas that failed together retry apart

    async def _failed(
        self, model: ModelEntry, exc: ProviderError, outcome: Outcome, attempt: Attempt
    ) -> None:
        attempt.status = type(exc).__name__
        attempt.http_status = exc.status
        attempt.error = exc.message
        outcome.attempts.append(attempt)
        outcome.failures.append(AttemptFailure(model.name, type(exc).__name__, exc.message, exc.status))
        if exc.retryable:
            self._suspect.add(model.name)
            await self._state.record_failure(
                model.name, threshold=self._cooldown.failures, cooldown_s=self._cooldown.seconds
            )

    async def _succeeded(self, model: ModelEntry) -> None:
        if model.name in self._suspect:
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
        for model in await self.plan(decision, features, outcome):
            provider = self._providers[model.provider]
            call = UpstreamCall(model, body, request_id)
            for retry in range(self._retry.attempts):
                started = time.perf_counter()
                attempt = Attempt(model.name, model.provider, "ok", retry=retry)
                try:
                    completion = await provider.complete(call)
                except ProviderError as exc:
                    attempt.latency_ms = _ms(started)
                    await self._failed(model, exc, outcome, attempt)
                    if await self._should_retry(exc, retry):
                        continue
                    break
                attempt.latency_ms = _ms(started)
                usage = completion.usage
                attempt.input_tokens, attempt.output_tokens = usage.input_tokens, usage.output_tokens
                attempt.cost_usd = model.cost(usage.input_tokens, usage.output_tokens)
                attempt.http_status = 200
                outcome.attempts.append(attempt)
                outcome.model, outcome.usage, outcome.status = model, usage, "ok"
                outcome.cost_usd = sum(a.cost_usd for a in outcome.attempts)
                await self._succeeded(model)
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
        for model in await self.plan(decision, features, outcome):
            provider = self._providers[model.provider]
            call = UpstreamCall(model, body, request_id)
            for retry in range(self._retry.attempts):
                started = time.perf_counter()
                attempt = Attempt(model.name, model.provider, "ok", retry=retry)
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
                                attempt.ttft_ms = outcome.ttft_ms = _ms(started)
                                outcome.model = model
                                streamed_chars += _chars(chunk)
                                for early in held:
                                    yield early
                                held.clear()
                                yield chunk
                            else:
                                held.append(chunk)
                except ProviderError as exc:
                    attempt.latency_ms = _ms(started)
                    if sent:
                        # The client has part of this answer: charge it (estimated if the usage never
                        # came) and let the gateway end the stream with an error event.
                        self._charge(attempt, model, usage, features, streamed_chars)
                        outcome.status = "interrupted"
                        await self._failed(model, exc, outcome, attempt)
                        outcome.cost_usd = sum(a.cost_usd for a in outcome.attempts)
                        raise
                    await self._failed(model, exc, outcome, attempt)
                    if await self._should_retry(exc, retry):
                        continue
                    break
                except (asyncio.CancelledError, GeneratorExit):
                    attempt.latency_ms = _ms(started)
                    attempt.status = "cancelled"
                    self._charge(attempt, model, usage, features, streamed_chars)
                    outcome.attempts.append(attempt)
                    outcome.status = "cancelled"
                    outcome.cost_usd = sum(a.cost_usd for a in outcome.attempts)
                    raise
                attempt.latency_ms = _ms(started)
                outcome.model = model
                for early in held:  # an answer with no content at all (empty completion)
                    yield early
                self._charge(attempt, model, usage, features, streamed_chars)
                attempt.http_status = 200
                outcome.attempts.append(attempt)
                outcome.usage, outcome.status = (
                    usage or Usage(attempt.input_tokens, attempt.output_tokens),
                    "ok",
                )
                outcome.cost_usd = sum(a.cost_usd for a in outcome.attempts)
                await self._succeeded(model)
                return
        raise ChainExhausted(outcome.failures)

    @staticmethod
    def _charge(
        attempt: Attempt, model: ModelEntry, usage: Usage | None, features: Features, chars: int
    ) -> None:
        if usage is not None:
            attempt.input_tokens, attempt.output_tokens = usage.input_tokens, usage.output_tokens
        else:  # the upstream never reported usage: estimate as features.py does (chars / 4)
            attempt.input_tokens, attempt.output_tokens = features.input_tokens, chars // 4
        attempt.cost_usd = model.cost(attempt.input_tokens, attempt.output_tokens)


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
