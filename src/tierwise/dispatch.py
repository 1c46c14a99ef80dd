"""Runs a Decision: walks its chain with retries, backoff, cooldowns and fallbacks.

Per model: skip it if the request cannot fit its context window; try it ``retry.attempts`` times on
retryable failures (timeouts, 5xx, refused connections, 429s), sleeping a jittered exponential
backoff or the upstream's ``Retry-After``; then move to the next model. A model whose breaker is
open (``cooldown.failures`` consecutive failures) is tried only after every healthy model.

Streaming contract: chunks are held back until the first one with content (text, a tool call, a
finish reason). Until then a failure falls back to the next model invisibly. After it, the client
has part of one model's answer, so a failure is re-raised for the gateway to end the stream with an
explicit error event — never a splice of two models' answers, never a clean truncated stream.

Cascade (``decision.cascade``; see ``policy/cascade.py`` for the verifiers): the first model's answer
is verified before anything of it reaches the client. Accepted, it is returned. Rejected, its attempt
stays in the outcome with status ``"rejected"``, its cost charged and ``error`` naming the verifier and
why, and the next model of the chain answers — at most ``cascade.max_escalations`` times. The answer of
the model reached after the last permitted escalation (or of the chain's last model) is returned
unverified: nothing is left to escalate to, and a judge's verdict nobody can act on is money spent for
a log line. Provider failures of a verified model fall back as usual and are not escalations. Agreement
draws ``samples - 1`` more answers of the same model at once (``purpose="sample"``, charged); the judge asks
the review model (``purpose="judge"``, charged, bounded by the verifier's ``timeout_s``); a failed or
unparseable sample or judge call rejects the answer — when unsure, escalate. Checks that need no call
run first, so a schema failure never pays for a judge.

A streamed request with a cascade is buffered: the verified model's whole stream is read (nothing is
sent), assembled and verified; accepted, the buffered chunks are replayed to the client as they came;
rejected, they are dropped and the next model streams — so no byte of a rejected answer ever reaches the
client, at the price of a time to first token equal to the cheap model's whole answer plus its
verification. A failure while buffering falls back invisibly, since nothing was sent. The unverified
model streams under the contract above.
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
from .policy.cascade import (
    JudgeVerifier,
    Verdict,
    Verifier,
    answer_text,
    build_verifiers,
    completion_from_chunks,
)
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
    ttft_ms: float | None = None
    status: str = "error"  # "ok", "error", "interrupted", "cancelled"

    @property
    def cost_usd(self) -> float:
        """Every attempt's cost, failed, rejected, judge and classifier calls included."""
        return sum(a.cost_usd for a in self.attempts)


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
        cascade = config.policy.cascade
        self._verifiers: tuple[Verifier, ...] = build_verifiers(cascade) if cascade is not None else ()
        self._max_escalations = cascade.max_escalations if cascade is not None else 0

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
        plan = await self.plan(decision, features, outcome)
        if decision.cascade and self._verifiers:
            completion, plan = await self._cascade_complete(plan, body, outcome, request_id)
            if completion is not None:
                return completion
        for model in plan:
            result = await self._call(model, UpstreamCall(model, body, request_id), outcome)
            if result is None:
                continue
            completion = result[0]
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
        if decision.cascade and self._verifiers:
            cascade_started = time.perf_counter()
            buffered, plan = await self._cascade_buffer(plan, body, features, outcome, request_id)
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
                except ProviderError as exc:
                    attempt.latency_ms = _ms(started)
                    if sent:
                        # The client has part of this answer: charge it (estimated if the usage never
                        # came) and let the gateway end the stream with an error event.
                        self._charge(attempt, model, usage, features, streamed_chars)
                        outcome.status = "interrupted"
                        await self._failed(model, exc, outcome, attempt)
                        raise
                    await self._failed(model, exc, outcome, attempt)
                    if await self._should_retry(exc, retry):
                        continue
                    break
                except (asyncio.CancelledError, GeneratorExit):
                    self._cancelled(attempt, started, model, usage, features, streamed_chars, outcome)
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
                await self._succeeded(model)
                return
        raise ChainExhausted(outcome.failures)

    # -- cascade --
    #
    # The retry loops below mirror complete() and stream() rather than sharing them, so that requests
    # without a cascade keep their path as it was: no extra coroutine or generator layer per request.

    async def _cascade_complete(
        self, plan: list[ModelEntry], body: dict[str, Any], outcome: Outcome, request_id: str
    ) -> tuple[Completion | None, list[ModelEntry]]:
        """Verify the answers of the chain's first models; return an accepted one, or (None, the models
        that answer unverified)."""
        rejections = 0
        for i, model in enumerate(plan):
            if rejections >= self._max_escalations or i == len(plan) - 1:
                return None, plan[i:]
            answered = await self._call(model, UpstreamCall(model, body, request_id), outcome)
            if answered is None:
                continue  # the model failed: fall back, as without a cascade
            completion, attempt = answered
            verdict = await self._verify(model, body, completion.body, outcome, request_id)
            if verdict.accept:
                attempt.verified = True  # a label for training: this model's answer passed the checks
                outcome.model, outcome.usage, outcome.status = model, completion.usage, "ok"
                return completion, []
            self._reject(model, attempt, verdict, outcome)
            rejections += 1
        return None, []

    async def _cascade_buffer(
        self,
        plan: list[ModelEntry],
        body: dict[str, Any],
        features: Features,
        outcome: Outcome,
        request_id: str,
    ) -> tuple[list[Chunk] | None, list[ModelEntry]]:
        """The streamed form of ``_cascade_complete``: each verified model's stream is read whole and
        held; an accepted one is returned for replay, a rejected one is dropped unseen."""
        rejections = 0
        for i, model in enumerate(plan):
            if rejections >= self._max_escalations or i == len(plan) - 1:
                return None, plan[i:]
            held = await self._buffer(model, UpstreamCall(model, body, request_id), features, outcome)
            if held is None:
                continue
            chunks, attempt, usage = held
            completion = completion_from_chunks([chunk.data for chunk in chunks])
            verdict = await self._verify(model, body, completion, outcome, request_id)
            if verdict.accept:
                attempt.verified = True
                outcome.model, outcome.usage, outcome.status = model, usage, "ok"
                return chunks, []
            self._reject(model, attempt, verdict, outcome)
            rejections += 1
        return None, []

    async def _call(
        self, model: ModelEntry, call: UpstreamCall, outcome: Outcome
    ) -> tuple[Completion, Attempt] | None:
        """One model, non-streamed, with retries; None if it failed (the failures are in ``outcome``)."""
        provider = self._providers[model.provider]
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
                return None
            attempt.latency_ms = _ms(started)
            usage = completion.usage
            attempt.input_tokens, attempt.output_tokens = usage.input_tokens, usage.output_tokens
            attempt.cost_usd = model.cost(usage.input_tokens, usage.output_tokens)
            attempt.http_status = 200
            outcome.attempts.append(attempt)
            await self._succeeded(model)
            return completion, attempt
        return None

    async def _buffer(
        self, model: ModelEntry, call: UpstreamCall, features: Features, outcome: Outcome
    ) -> tuple[list[Chunk], Attempt, Usage] | None:
        """One model's whole stream, held back, with retries; None if it failed. Nothing was sent, so a
        stream that breaks halfway is retried or falls back like any failure (its tokens are charged)."""
        provider = self._providers[model.provider]
        for retry in range(self._retry.attempts):
            started = time.perf_counter()
            attempt = Attempt(model.name, model.provider, "ok", retry=retry)
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
            except ProviderError as exc:
                attempt.latency_ms = _ms(started)
                if attempt.ttft_ms is not None:  # it produced tokens before breaking: they are billed
                    self._charge(attempt, model, usage, features, chars)
                await self._failed(model, exc, outcome, attempt)
                if await self._should_retry(exc, retry):
                    continue
                return None
            except asyncio.CancelledError:
                self._cancelled(attempt, started, model, usage, features, chars, outcome)
                raise
            attempt.latency_ms = _ms(started)
            self._charge(attempt, model, usage, features, chars)
            attempt.http_status = 200
            outcome.attempts.append(attempt)
            await self._succeeded(model)
            return chunks, attempt, usage or Usage(attempt.input_tokens, attempt.output_tokens)
        return None

    async def _verify(
        self,
        model: ModelEntry,
        body: dict[str, Any],
        completion: dict[str, Any],
        outcome: Outcome,
        request_id: str,
    ) -> Verdict:
        """Run the verifiers in order; the first rejection decides."""
        for verifier in self._verifiers:
            extra: Any = None
            if verifier.needs == "sample":  # drawn concurrently: the wait is one sample's, not the sum
                draws = (
                    self._sample(model, body, verifier, outcome, request_id)
                    for _ in range(verifier.config.samples - 1)
                )
                extra = list(await asyncio.gather(*draws))
            elif verifier.needs == "judge":
                assert isinstance(verifier, JudgeVerifier)
                extra = await self._judge(verifier, body, completion, outcome, request_id)
            verdict = verifier.check(body, completion, extra)
            if not verdict.accept:
                return verdict
        return Verdict(True, "cascade", "every verifier accepted")

    def _reject(self, model: ModelEntry, attempt: Attempt, verdict: Verdict, outcome: Outcome) -> None:
        reason = f"{verdict.verifier}: {verdict.reason}"
        attempt.status = "rejected"
        attempt.error = f"cascade: {reason}"[:500]
        outcome.failures.append(AttemptFailure(model.name, "Rejected", reason[:300]))

    async def _sample(
        self, model: ModelEntry, body: dict[str, Any], verifier: Verifier, outcome: Outcome, request_id: str
    ) -> dict[str, Any] | None:
        """One more answer of the same model, for agreement: one try, charged; None if it failed."""
        sample_body = {k: v for k, v in body.items() if k not in ("stream", "stream_options", "n")}
        sample_body["temperature"] = verifier.config.temperature  # samples must be free to differ
        completion = await self.side_call(model, sample_body, "sample", None, outcome, request_id)
        return completion.body if completion is not None else None

    async def _judge(
        self,
        verifier: JudgeVerifier,
        body: dict[str, Any],
        completion: dict[str, Any],
        outcome: Outcome,
        request_id: str,
    ) -> str | None:
        """The review model's reply to the rubric prompt, or None if the call failed or timed out."""
        assert verifier.model is not None  # the config requires it
        judge = self._models[verifier.model]
        judge_body: dict[str, Any] = {
            "model": judge.name,
            "messages": verifier.messages(body, completion),
            "temperature": 0,
            "max_tokens": 20,
        }
        reply = await self.side_call(
            judge, judge_body, "judge", verifier.config.timeout_s, outcome, request_id
        )
        return answer_text(reply.body) if reply is not None else None

    async def side_call(
        self,
        model: ModelEntry,
        body: dict[str, Any],
        purpose: str,
        timeout_s: float | None,
        outcome: Outcome,
        request_id: str,
    ) -> Completion | None:
        """A call made about an answer (a sample, a judge, a shadow): one try, recorded in ``outcome``
        and charged, never retried and never counted against the model's health — a failure only
        means "escalate" (or, for a shadow, "no label"). None if it failed."""
        started = time.perf_counter()
        attempt = Attempt(model.name, model.provider, "ok", purpose=purpose)
        outcome.attempts.append(attempt)
        call = UpstreamCall(model, body, request_id)
        try:
            completion = await asyncio.wait_for(self._providers[model.provider].complete(call), timeout_s)
        except ProviderError as exc:
            attempt.status, attempt.http_status, attempt.error = type(exc).__name__, exc.status, exc.message
            return None
        except TimeoutError:
            attempt.status, attempt.error = (
                "UpstreamTimeout",
                f"{purpose} call took longer than {timeout_s:g} s",
            )
            return None
        finally:
            attempt.latency_ms = _ms(started)
        usage = completion.usage
        attempt.input_tokens, attempt.output_tokens = usage.input_tokens, usage.output_tokens
        attempt.cost_usd = model.cost(usage.input_tokens, usage.output_tokens)
        attempt.http_status = 200
        return completion

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
        self._charge(attempt, model, usage, features, chars)
        outcome.attempts.append(attempt)
        outcome.status = "cancelled"

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
