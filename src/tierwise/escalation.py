"""The cascade: verify the cheap answer, escalate to the next model of the chain when it fails.

``decision.cascade`` asks for it; ``policy/cascade.py`` holds the verifiers (pure checks), this module
runs them against live answers. The first model's answer is verified before anything of it reaches the
client. Accepted, it is returned. Rejected, its attempt stays in the outcome with status ``"rejected"``,
its cost charged and ``error`` naming the verifier and why, and the next model of the chain answers — at
most ``cascade.max_escalations`` times. The answer of the model reached after the last permitted
escalation (or of the chain's last model) is returned unverified: nothing is left to escalate to, and a
judge's verdict nobody can act on is money spent for a log line. Provider failures of a verified model
fall back as usual and are not escalations.

Agreement draws ``samples - 1`` more answers of the same model at once (``purpose="sample"``, charged);
the judge asks the review model (``purpose="judge"``, charged, bounded by the verifier's ``timeout_s``);
a failed or unparseable sample or judge call rejects the answer — when unsure, escalate. Checks that need
no call run first, so a schema failure never pays for a judge.

A streamed request is buffered: the verified model's whole stream is read (nothing is sent), assembled
and verified; accepted, the held chunks are replayed to the client as they came; rejected, they are
dropped and the next model streams — so no byte of a rejected answer ever reaches the client, at the
price of a time to first token equal to the cheap model's whole answer plus its verification.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from .calls import Call, Outcome, call_once
from .config import CascadeConfig, ModelEntry
from .errors import AttemptFailure
from .features import Features
from .ledger.base import Attempt
from .messages import reply_text, side_call_body
from .policy.cascade import (
    JudgeVerifier,
    Verdict,
    Verifier,
    answers_unverified,
    build_verifiers,
    completion_from_chunks,
)
from .providers.base import Chunk, Completion, Provider, Usage

T = TypeVar("T")


@dataclass(slots=True)
class Buffered:
    """A model's whole stream, read and held back: its chunks, attempt and usage."""

    chunks: list[Chunk]
    attempt: Attempt
    usage: Usage


@dataclass(slots=True)
class _Answer(Generic[T]):
    """One model's answer as the cascade verifies it: the completion, its attempt and usage, and what
    is handed on if it is accepted (the Completion, or the held chunks of a stream)."""

    completion: dict[str, Any]
    attempt: Attempt
    usage: Usage
    payload: T


class Caller(Protocol):
    """What the cascade needs of the dispatcher: one model's answer, with its retries and breaker."""

    async def call(
        self, model: ModelEntry, body: dict[str, Any], outcome: Outcome, request_id: str
    ) -> Call | None: ...

    async def buffer(
        self, model: ModelEntry, body: dict[str, Any], features: Features, outcome: Outcome, request_id: str
    ) -> Buffered | None: ...


class Escalation:
    """Runs a cascade over the first models of a chain; see the module docstring."""

    def __init__(
        self,
        cascade: CascadeConfig,
        models: Mapping[str, ModelEntry],
        providers: Mapping[str, Provider],
        caller: Caller,
    ) -> None:
        self._verifiers: tuple[Verifier, ...] = build_verifiers(cascade)
        self._max_escalations = cascade.max_escalations
        self._models = models
        self._providers = providers
        self._caller = caller

    async def complete(
        self, plan: list[ModelEntry], body: dict[str, Any], outcome: Outcome, request_id: str
    ) -> tuple[Completion | None, list[ModelEntry]]:
        """Verify the answers of the chain's first models; return an accepted one, or (None, the models
        that answer unverified)."""

        async def answer(model: ModelEntry) -> _Answer[Completion] | None:
            call = await self._caller.call(model, body, outcome, request_id)
            if call is None or call.completion is None:
                return None
            return _Answer(call.completion.body, call.attempt, call.completion.usage, call.completion)

        return await self._walk(plan, body, outcome, request_id, answer)

    async def buffer(
        self,
        plan: list[ModelEntry],
        body: dict[str, Any],
        features: Features,
        outcome: Outcome,
        request_id: str,
    ) -> tuple[list[Chunk] | None, list[ModelEntry]]:
        """The streamed form of ``complete``: each verified model's stream is read whole and held; an
        accepted one is returned for replay, a rejected one is dropped unseen."""

        async def answer(model: ModelEntry) -> _Answer[list[Chunk]] | None:
            held = await self._caller.buffer(model, body, features, outcome, request_id)
            if held is None:
                return None
            completion = completion_from_chunks([chunk.data for chunk in held.chunks])
            return _Answer(completion, held.attempt, held.usage, held.chunks)

        return await self._walk(plan, body, outcome, request_id, answer)

    async def _walk(
        self,
        plan: list[ModelEntry],
        body: dict[str, Any],
        outcome: Outcome,
        request_id: str,
        answer: Callable[[ModelEntry], Awaitable[_Answer[T] | None]],
    ) -> tuple[T | None, list[ModelEntry]]:
        """The cascade over ``plan``: each model's answer (None: it failed, so fall back as without a
        cascade) is verified; the first accepted one is returned, else the models left to answer
        unverified."""
        rejections = 0
        for i, model in enumerate(plan):
            if answers_unverified(i, len(plan), rejections, self._max_escalations):
                return None, plan[i:]
            answered = await answer(model)
            if answered is None:
                continue
            verdict = await self._verify(model, body, answered.completion, outcome, request_id)
            if verdict.accept:
                answered.attempt.verified = True  # a label for training: this answer passed the checks
                outcome.model, outcome.usage, outcome.status = model, answered.usage, "ok"
                return answered.payload, []
            self._reject(model, answered.attempt, verdict, outcome)
            rejections += 1
        return None, []

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

    @staticmethod
    def _reject(model: ModelEntry, attempt: Attempt, verdict: Verdict, outcome: Outcome) -> None:
        reason = f"{verdict.verifier}: {verdict.reason}"
        attempt.status = "rejected"
        attempt.error = f"cascade: {reason}"[:500]
        outcome.failures.append(AttemptFailure(model.name, "Rejected", reason[:300]))

    async def _sample(
        self, model: ModelEntry, body: dict[str, Any], verifier: Verifier, outcome: Outcome, request_id: str
    ) -> dict[str, Any] | None:
        """One more answer of the same model, for agreement: one try, charged; None if it failed."""
        sample_body = side_call_body(body)
        sample_body["temperature"] = verifier.config.temperature  # samples must be free to differ
        call = await call_once(
            self._providers[model.provider],
            model,
            sample_body,
            request_id=request_id,
            purpose="sample",
            outcome=outcome,
        )
        return call.completion.body if call.completion is not None else None

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
        call = await call_once(
            self._providers[judge.provider],
            judge,
            judge_body,
            request_id=request_id,
            purpose="judge",
            timeout_s=verifier.config.timeout_s,
            timeout_setting="judge timeout_s",
            outcome=outcome,
        )
        return reply_text(call.completion.body) if call.completion is not None else None
