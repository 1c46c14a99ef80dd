"""Shadow calls: training labels from live traffic, made after the response has been sent.

With ``policy.shadow``, a sampled ``share`` of the non-streamed requests that another model answered is
asked again of the shadow ``model`` (usually the strongest), in the background. Its answer is compared
with the one the client got, as the agreement verifier compares answers (``answer``: final numbers or
text), and the result is stored as feedback of source ``shadow`` on the request: 1 they agree, 0 they
do not. That is the label the ledger cannot otherwise have — how a request the cheap model answered
would have fared — and ``tierwise train --ledger`` learns from it (``evals/ledger_data.py``).

The shadow call costs what a call costs: it is a ledger row of its own (id ``<request id>.shadow``,
decision layer ``shadow``, ``of`` the request), which ``tierwise report`` counts apart from requests.
It never delays or changes a response. ``aclose`` waits for calls in flight (up to ``timeout_s``), so a
graceful stop loses no label; a failed shadow call leaves the request unlabelled.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from typing import Any

from .config import Config, VerifierConfig
from .dispatch import Dispatcher, Outcome
from .ledger import Feedback, Ledger, LedgerRow
from .policy.cascade import AgreementVerifier, answer_text

log = logging.getLogger("tierwise.shadow")


class ShadowSampler:
    """Starts and tracks the shadow calls of one Router (see the module docstring)."""

    def __init__(
        self, config: Config, dispatcher: Dispatcher, ledger: Ledger, *, seed: int | None = None
    ) -> None:
        shadow = config.policy.shadow
        if shadow is None:
            raise ValueError("ShadowSampler: the config has no policy.shadow")

        self.model = config.model(shadow.model)
        self.share = shadow.share
        self.timeout_s = shadow.timeout_s
        self._compare = AgreementVerifier(
            VerifierConfig(kind="agreement", answer=shadow.answer, min_overlap=shadow.min_overlap)
        )
        self._dispatcher = dispatcher
        self._ledger = ledger
        self._policy_version = config.policy_version()
        self.random = random.Random(seed)  # seed it for a reproducible sample (simulations, tests)
        self._tasks: set[asyncio.Task[None]] = set()

    def maybe_start(
        self, request_id: str, body: dict[str, Any], served_model: str, completion: dict[str, Any]
    ) -> bool:
        """Start a shadow call for this answered request, if it is sampled; True if one started."""
        if served_model == self.model.name or self.random.random() >= self.share:
            return False
        served = answer_text(completion)
        shadow_body = {k: v for k, v in body.items() if k not in ("stream", "stream_options", "n")}
        task = asyncio.create_task(self._run(request_id, shadow_body, served_model, served))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return True

    async def _run(self, request_id: str, body: dict[str, Any], served_model: str, served: str) -> None:
        arrived, started = time.time(), time.perf_counter()
        outcome = Outcome()
        try:
            reply = await self._dispatcher.side_call(
                self.model, body, "shadow", self.timeout_s, outcome, request_id
            )
            if reply is not None:
                outcome.model, outcome.usage, outcome.status = self.model, reply.usage, "ok"
            await self._ledger.record(self._row(request_id, arrived, started, outcome))
            if reply is None:
                return
            agree = self._compare.agree(served, answer_text(reply.body))
            verdict = "agrees" if agree else "disagrees"
            await self._ledger.record_feedback(
                Feedback(
                    request_id=request_id,
                    score=1.0 if agree else 0.0,
                    ts=time.time(),
                    comment=f"shadow {self.model.name} {verdict} with {served_model}",
                    source="shadow",
                )
            )
        except Exception:  # a label is not worth a crash; the request was answered long ago
            log.exception("shadow call for %s failed", request_id)

    def _row(self, request_id: str, arrived: float, started: float, outcome: Outcome) -> LedgerRow:
        usage = outcome.usage
        return LedgerRow(
            id=f"{request_id}.shadow",
            ts=arrived,
            requested_model=self.model.name,
            stream=False,
            features={},
            decision={"layer": "shadow", "of": request_id, "chain": [self.model.name]},
            policy_version=self._policy_version,
            status=outcome.status,
            http_status=200 if outcome.status == "ok" else 502,
            final_model=self.model.name if outcome.model else None,
            tier=self.model.tier if outcome.model else None,
            input_tokens=usage.input_tokens if usage else 0,
            output_tokens=usage.output_tokens if usage else 0,
            cost_usd=round(outcome.cost_usd, 10),
            latency_ms=round((time.perf_counter() - started) * 1000, 3),
            error=None
            if outcome.status == "ok"
            else (outcome.attempts[-1].error if outcome.attempts else None),
            attempts=outcome.attempts,
        )

    async def aclose(self) -> None:
        """Wait for the shadow calls in flight (each is bounded by ``timeout_s``)."""
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=self.timeout_s + 5)
        for task in self._tasks:
            task.cancel()
