"""Shadow calls: training labels from live traffic, made after the response has been sent.

With ``policy.shadow``, a sampled ``share`` of the non-streamed requests that another model answered is
asked again of the shadow ``model`` (usually the strongest), in the background. Its answer is compared
with the one the client got, as the agreement verifier compares answers (``answer``: final numbers or
text), and the result is stored as feedback of source ``shadow`` on the request: 1 they agree, 0 they
do not. That is the label the ledger cannot otherwise have — how a request the cheap model answered
would have fared — and ``tierwise train --ledger`` learns from it (``evals/ledger_data.py``).

The shadow call costs what a call costs: it is a ledger row of its own (id ``<request id>.shadow``,
decision layer ``shadow``, ``of`` the request), which ``tierwise report`` counts apart from requests.
With ``policy.shadow.judge``, a judge model also compares the two answers, blind and in both orders
(``policy/pairwise.py``), and the served answer's verdict — win, tie or loss — is stored as feedback
of source ``judge`` (1, 0.5, 0); its calls are charged to the shadow's row.

It never delays or changes a response. ``aclose`` waits for calls in flight (up to ``timeout_s``), so a
graceful stop loses no label; a failed shadow call leaves the request unlabelled.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from .calls import Outcome, call_once, request_row
from .config import Config, VerifierConfig
from .errors import LedgerUnavailable
from .ledger import Feedback, Ledger
from .messages import reply_text, side_call_body
from .policy.cascade import AgreementVerifier
from .policy.pairwise import SCORES, Verdict, pairwise_messages, parse_preference, verdict
from .providers.base import Provider

if TYPE_CHECKING:  # names for annotations only: prometheus_client loads only when metrics are on
    from .canary import Canary
    from .metrics import Metrics

log = logging.getLogger("tierwise.shadow")


class ShadowSampler:
    """Starts and tracks the shadow calls of one Router (see the module docstring)."""

    def __init__(
        self,
        config: Config,
        providers: Mapping[str, Provider],
        ledger: Ledger,
        *,
        policy_version: str,
        seed: int | None = None,
        metrics: Metrics | None = None,
        canary: Canary | None = None,
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
        self._providers = providers
        self._provider = providers[self.model.provider]
        self._judge_config = shadow.judge
        self._judge = config.model(shadow.judge.model) if shadow.judge is not None else None
        self._ledger = ledger
        self._policy_version = policy_version  # the Router's, artefact and all
        self.random = random.Random(seed)  # seed it for a reproducible sample (simulations, tests)
        self._tasks: set[asyncio.Task[None]] = set()
        self._metrics = metrics
        self._canary = canary  # judged verdicts count toward the arm's guard

    def maybe_start(
        self,
        request_id: str,
        body: dict[str, Any],
        served_model: str,
        completion: dict[str, Any],
        *,
        arm: str | None = None,
    ) -> bool:
        """Start a shadow call for this answered request, if it is sampled; True if one started. ``arm``:
        the canary arm that served it, whose guard counts the judge's verdict."""
        if served_model == self.model.name or self.random.random() >= self.share:
            return False
        served = reply_text(completion)
        shadow_body = side_call_body(body)
        task = asyncio.create_task(self._run(request_id, shadow_body, served_model, served, arm))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return True

    async def _run(
        self, request_id: str, body: dict[str, Any], served_model: str, served: str, arm: str | None
    ) -> None:
        arrived, started = time.time(), time.perf_counter()
        outcome = Outcome()
        try:
            # One try, never counted against the model's health: a failure only means "no label".
            call = await call_once(
                self._provider,
                self.model,
                body,
                request_id=request_id,
                purpose="shadow",
                timeout_s=self.timeout_s,
                timeout_setting="policy.shadow.timeout_s",
                outcome=outcome,
            )
            judged = None
            if call.completion is not None:
                outcome.model, outcome.usage, outcome.status = self.model, call.completion.usage, "ok"
                if self._judge is not None:
                    baseline = reply_text(call.completion.body)
                    judged = await self._judged(request_id, body, served, baseline, outcome)
            row = request_row(
                outcome,
                id=f"{request_id}.shadow",
                arrived=arrived,
                started=started,
                requested_model=self.model.name,
                stream=False,
                features={},
                decision={"layer": "shadow", "of": request_id, "chain": [self.model.name]},
                policy_version=self._policy_version,
                http_status=200 if call.completion is not None else 502,
                error=call.attempt.error,
            )
            await self._ledger.record(row)
            if self._metrics is not None:
                self._metrics.observe(row)
            if call.completion is None:
                return
            agree = self._compare.agree(served, reply_text(call.completion.body))
            if self._metrics is not None:
                self._metrics.observe_shadow_verdict(served_model, agree)
            agreement = "agrees" if agree else "disagrees"
            await self._ledger.record_feedback(
                Feedback(
                    request_id=request_id,
                    score=1.0 if agree else 0.0,
                    ts=time.time(),
                    comment=f"shadow {self.model.name} {agreement} with {served_model}",
                    source="shadow",
                )
            )
            if judged is not None:
                if self._metrics is not None:
                    self._metrics.observe_judge_verdict(served_model, judged)
                assert self._judge is not None
                await self._ledger.record_feedback(
                    Feedback(
                        request_id=request_id,
                        score=SCORES[judged],
                        ts=time.time(),
                        comment=f"judge {self._judge.name}: {served_model} {judged} "
                        f"against {self.model.name}",
                        source="judge",
                    )
                )
                if self._canary is not None:
                    await self._canary.observe_verdict(arm, judged)
        except LedgerUnavailable as exc:  # the ledger says so in /healthz and its own log already
            log.warning("shadow label for %s not stored: %s", request_id, exc.message)
        except Exception:  # a label is not worth a crash; the request was answered long ago
            log.exception("shadow call for %s failed", request_id)

    async def _judged(
        self, request_id: str, body: dict[str, Any], served: str, baseline: str, outcome: Outcome
    ) -> Verdict | None:
        """The served answer's verdict against the baseline's, asked in both orders at once (the calls
        are charged to the shadow's row); None if a reply could not be read."""
        assert self._judge is not None and self._judge_config is not None
        judge, config = self._judge, self._judge_config
        provider = self._providers[judge.provider]
        orders = ((served, baseline), (baseline, served))
        calls = await asyncio.gather(
            *(
                call_once(
                    provider,
                    judge,
                    {
                        "model": judge.name,
                        "messages": pairwise_messages(body, a, b, config.rubric),
                        "temperature": 0,
                        "max_tokens": 8,
                    },
                    request_id=request_id,
                    purpose="judge",
                    timeout_s=config.timeout_s,
                    timeout_setting="policy.shadow.judge.timeout_s",
                    outcome=outcome,
                )
                for a, b in orders
            )
        )
        first, second = (
            parse_preference(reply_text(c.completion.body)) if c.completion is not None else None
            for c in calls
        )
        return verdict(first, second)

    async def aclose(self) -> None:
        """Wait for the shadow calls in flight (each is bounded by ``timeout_s``)."""
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=self.timeout_s + 5)
        for task in self._tasks:
            task.cancel()
