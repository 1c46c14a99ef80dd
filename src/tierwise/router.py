"""The Router: one request in, routed, called, costed and logged.

The gateway and the in-process API both go through here::

    router = Router.from_config("tierwise.yaml")
    async with router:
        routed = await router.acomplete([{"role": "user", "content": "Summarize: …"}])
        print(routed.model, routed.tier, routed.cost_usd, routed.content)

A Router owns its providers, HTTP pool, ledger and state store (or uses the ones passed in); nothing
is global, so two routers in one process never share counters.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections.abc import AsyncIterator, Coroutine, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from .access import Access, Principal, Reservation
from .access_log import AccessLog, LoggerAccessLog
from .cache import CacheHit, CacheKey, ResponseCache, StreamCollector, hit_chunks, hit_response
from .calls import Outcome, elapsed_ms, request_row
from .canary import Canary
from .classifier import TierClassifier
from .config import Config, load_config
from .dispatch import Dispatcher
from .embed import Embedded, validate_embeddings_body
from .embed import forward as forward_embeddings
from .embed import input_chars as embeddings_chars
from .engines import load_engine
from .errors import (
    AccessDenied,
    ChainExhausted,
    LedgerUnavailable,
    ProviderError,
    RequestError,
    TierwiseError,
)
from .features import Features, extract_features, parse_hints, validate_hints
from .http import HttpPool
from .ledger import Feedback, Ledger, LedgerRow, NullLedger, open_ledger
from .messages import reply_message, without_hints
from .policy.engine import Constraint, Decision, PolicyEngine
from .providers import Chunk, Provider, build_provider
from .providers.base import Usage
from .shadow import ShadowSampler
from .state import State, open_state
from .validation import validate_chat_body, validate_feedback_body

if TYPE_CHECKING:
    from .metrics import Metrics
    from .tracing import Tracing

T = TypeVar("T")

_CUT_BY_STOP = "cut short: the gateway stopped before the answer was complete"
log = logging.getLogger("tierwise.router")


def _routed(req: _Request, row: LedgerRow, response: dict[str, Any], *, cache: str | None = None) -> Routed:
    """What ``route`` returns for an answered request, once its row is logged."""
    model = req.outcome.model
    assert model is not None
    return Routed(
        response=response,
        decision=req.decision,
        features=req.features,
        model=model.name,
        tier=model.tier,
        cost_usd=row.cost_usd,
        counterfactual_cost_usd=row.counterfactual_cost_usd,
        request_id=req.id,
        latency_ms=row.latency_ms,
        cache=cache,
    )


class _RequestIds:
    """Request ids from the OS's random bytes, fetched 256 ids at a time: one system call per id was
    ~2% of a request's CPU. A forked child starts with none held, so it never repeats its parent's."""

    _BATCH = 256

    def __init__(self) -> None:
        self._held: list[str] = []
        os.register_at_fork(after_in_child=self._held.clear)

    def __call__(self) -> str:
        held = self._held
        if not held:
            raw = os.urandom(12 * self._BATCH).hex()
            held.extend("req_" + raw[i : i + 24] for i in range(0, len(raw), 24))
        return held.pop()


_request_id = _RequestIds()


@dataclass(slots=True)
class _Request:
    """One request in flight: what the ledger row is built from."""

    id: str
    arrived: float  # unix time
    started: float  # perf_counter
    body: dict[str, Any]
    features: Features
    decision: Decision
    outcome: Outcome
    key_id: str | None
    principal: Principal | None = None
    constraint: Constraint | None = None
    reservation: Reservation | None = None
    engine: PolicyEngine | None = None  # the arm's, while a canary runs; else the Router's
    dispatcher: Dispatcher | None = None
    cache_key: CacheKey | None = None  # None: not cached (no cache, opted out, sampled, tools …)
    hit: CacheHit | None = None
    traceparent: str | None = None  # the caller's W3C trace context, when tracing is on


@dataclass(slots=True)
class Routed:
    """A routed, completed request: the OpenAI-shaped response and how it was decided."""

    response: dict[str, Any]
    decision: Decision
    features: Features
    model: str
    tier: str
    cost_usd: float
    counterfactual_cost_usd: float
    request_id: str
    latency_ms: float
    cache: str | None = None  # "exact" or "semantic" when answered from the cache

    @property
    def content(self) -> str | None:
        """The first choice's message text."""
        return reply_message(self.response).get("content")


class RoutedStream:
    """A streamed answer whose first content chunk has already arrived.

    Iterate it for the chunks (the first included). ``model`` and ``tier`` are final from the start;
    ``cost_usd`` once the iteration has ended. Iteration raises ProviderError if the upstream breaks
    after content was sent: the caller must tell its client, not end the stream cleanly.
    """

    def __init__(
        self,
        first: Chunk,
        rest: AsyncIterator[Chunk],
        outcome: Outcome,
        decision: Decision,
        features: Features,
        request_id: str,
    ) -> None:
        self._first: Chunk | None = first
        self._rest = rest
        self.outcome = outcome
        self.decision = decision
        self.features = features
        self.request_id = request_id
        assert outcome.model is not None
        self.model = outcome.model.name
        self.tier = outcome.model.tier
        self.cache: str | None = None  # "exact" or "semantic" when answered from the cache

    @property
    def cost_usd(self) -> float:
        return self.outcome.cost_usd

    def __aiter__(self) -> RoutedStream:
        return self

    async def __anext__(self) -> Chunk:
        # A plain method rather than an async generator: one generator less for every chunk to pass.
        first = self._first
        if first is not None:
            self._first = None
            return first
        return await anext(self._rest)

    async def aclose(self) -> None:
        """Stop early (client went away): closes the upstream stream and writes the ledger row."""
        await self._rest.aclose()  # type: ignore[attr-defined]


class Router:
    """Routes OpenAI-style chat requests across a fleet. See the module docstring for use."""

    def __init__(
        self,
        config: Config,
        *,
        ledger: Ledger | None = None,
        state: State | None = None,
        providers: Mapping[str, Provider] | None = None,
    ) -> None:
        self.config = config
        self.engine = load_engine(config)
        self.http = HttpPool()
        self.providers: dict[str, Provider] = (
            dict(providers)
            if providers is not None
            else {name: build_provider(name, p, http=self.http) for name, p in config.providers.items()}
        )
        self.ledger: Ledger = (
            ledger
            if ledger is not None
            else open_ledger(
                config.storage.ledger,
                queue_size=config.storage.ledger_queue,
                spill_dir=config.storage.spill_dir,
                spill_max_bytes=config.storage.spill_max_bytes,
                journal=config.storage.journal,
            )
        )
        self.state: State = state if state is not None else open_state(config.storage.state)
        self.access = Access(config, self.state)
        self.cache = (
            ResponseCache(config.cache, state_url=config.storage.state) if config.cache is not None else None
        )
        self.metrics: Metrics | None = None
        if config.server.metrics:
            from .metrics import Metrics  # prometheus_client loads only when metrics are on

            self.metrics = Metrics()
        self.tracing: Tracing | None = None
        if config.server.tracing:
            from .tracing import Tracing  # opentelemetry loads only when tracing is on

            self.tracing = Tracing()
        self.dispatcher = Dispatcher(config, self.providers, self.state)
        # policy.canary: a second engine (and dispatcher, for its cascade) on a sticky share of traffic.
        self.canary: Canary | None = None
        self._arms: dict[str, tuple[PolicyEngine, Dispatcher]] = {}
        if config.policy.canary is not None:
            canary_config = config.model_copy(update={"policy": config.policy.canary.policy})
            canary_engine = load_engine(canary_config)
            self._arms = {
                "stable": (self.engine, self.dispatcher),
                "canary": (canary_engine, Dispatcher(canary_config, self.providers, self.state)),
            }
            self.canary = Canary(
                config.policy.canary,
                self.state,
                stable_version=self.engine.version,
                canary_version=canary_engine.version,
            )
        self.classifier = (
            TierClassifier(config, self.providers, self.state)
            if config.policy.classifier is not None
            else None
        )
        self.shadow = (
            ShadowSampler(
                config,
                self.providers,
                self.ledger,
                policy_version=self.engine.version,
                metrics=self.metrics,
                canary=self.canary,
            )
            if config.policy.shadow is not None
            else None
        )
        # Through ``logging`` unless the host swaps in another (tierwise serve: StreamAccessLog).
        level = config.server.access_log
        self.access_log: AccessLog | None = LoggerAccessLog(level) if level != "off" else None
        # The HTTP gateway sets it: its answer is written in the same step of the event loop that
        # records the row, so a callback queued then runs once the answer has gone (see _record).
        self.observe_after_answer = False
        self._counterfactual = config.counterfactual()
        self._largest = max(config.models, key=lambda m: m.context_window)
        self._fleet = {m.name: m for m in config.models}
        self._capture_prompts = config.storage.capture_prompts
        self._started = False
        self._closed = False
        self._draining = False
        self._sync: _SyncRunner | None = None
        # Streams handed out and not yet finished: closed (and logged) before the ledger closes.
        self._open_streams: dict[str, AsyncIterator[Chunk]] = {}

    @classmethod
    def from_config(cls, path: str | os.PathLike[str], **kwargs: Any) -> Router:
        """Build a Router from a YAML file (validated now; raises ConfigError naming the bad field)."""
        return cls(load_config(Path(path)), **kwargs)

    @property
    def policy_version(self) -> str:
        return self.engine.version

    # -- lifecycle --

    async def start(self) -> None:
        """Open the ledger (create tables, start its writer). Called on first use if you don't."""
        if not self._started:
            self._started = True
            await self.ledger.start()

    def drain(self) -> None:
        """Say that a stop has begun: a request cut short from now on is logged as the server's
        failure (503), not as a client that went away (499). ``aclose`` implies it."""
        self._draining = True

    async def aclose(self) -> None:
        """Flush the ledger and release connections. Every request already accepted is logged."""
        if self._closed:
            return
        self._closed = True
        self._draining = True
        for chunks in list(self._open_streams.values()):
            await chunks.aclose()  # type: ignore[attr-defined]
        if self.shadow is not None:
            await self.shadow.aclose()  # their rows and labels go to the ledger, closed next
        if self._started:
            await self.ledger.close()
        if self.access_log is not None:
            self.access_log.flush()
        await self.state.close()
        if self.cache is not None:
            await self.cache.aclose()
        for provider in self.providers.values():
            await provider.aclose()
        await self.http.aclose()

    async def __aenter__(self) -> Router:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # -- deciding --

    def explain(
        self, body: Mapping[str, Any], *, headers: Mapping[str, str] | None = None
    ) -> tuple[Features, Decision]:
        """Validate, extract features and decide, calling nothing."""
        features = self._features(body, headers)
        return features, self.engine.decide(features, model=body["model"])

    def _features(self, body: Mapping[str, Any], headers: Mapping[str, str] | None) -> Features:
        validate_chat_body(body, self.config.server)
        return extract_features(body, parse_hints(headers, body.get("metadata")))

    # -- serving --

    async def _begin(
        self,
        body: dict[str, Any],
        headers: Mapping[str, str] | None,
        key_id: str | None,
        principal: Principal | None = None,
    ) -> _Request:
        arrived, started = time.time(), time.perf_counter()
        if not self._started:
            await self.start()
        features = self._features(body, headers)
        # A request no model can take is the client's to fix: refused before it spends a rate-limit slot.
        if features.context_needed() > self._largest.context_window:
            raise RequestError(
                f"messages: the request needs about {features.context_needed()} tokens "
                f"({features.input_tokens} in the messages, {features.max_output_tokens or 0} for the "
                f"completion), more than any model of the fleet can take (the largest context window is "
                f"{self._largest.context_window}, {self._largest.name}); shorten the messages or lower "
                "max_tokens",
                param="messages",
                code="context_length_exceeded",
            )
        constraint = None
        if principal is not None:  # grants, rate limits and budgets; a downgrade comes back as a constraint
            features, constraint = await self.access.admit(principal, features, body["model"])
            key_id = principal.key_id
        request_id = _request_id()
        engine, dispatcher, arm = self.engine, self.dispatcher, None
        if self.canary is not None:
            arm = await self.canary.arm(self.canary.sticky_value(body, headers, key_id, request_id))
            engine, dispatcher = self._arms[arm]
        decision = engine.decide(features, model=body["model"], constraint=constraint)
        if arm is not None:
            decision = replace(decision, arm=arm)
        req = _Request(
            request_id,
            arrived,
            started,
            body,
            features,
            decision,
            Outcome(),
            key_id,
            principal,
            constraint,
            engine=engine,
            dispatcher=dispatcher,
        )
        if self.tracing is not None and headers is not None:
            req.traceparent = headers.get("traceparent")
        if self.cache is not None and await self._look_up(req, headers):
            return req  # nothing more to pay for: no classifier call, no budget reservation
        # The engine uses a classified tier only where it would otherwise take its default, so that is
        # the only place a classifier call can change anything (hints, rules and a learned router win).
        if self.classifier is not None and decision.layer == "default":
            await self._classify(req)
        if principal is not None:  # last: nothing may fail between the reservation and the ledger row
            req.reservation = await self.access.reserve(principal, req.decision, req.features)
        return req

    async def _look_up(self, req: _Request, headers: Mapping[str, str] | None) -> bool:
        """Find the request's cache key and a cached answer; True on a hit."""
        assert self.cache is not None
        req.cache_key = self.cache.key(
            req.body,
            headers,
            policy_version=req.decision.policy_version,
            first=req.decision.chain[0],
            key_id=req.key_id,
            tenant=req.principal.tenant if req.principal is not None else None,
        )
        if req.cache_key is None:
            return False
        hit = await self.cache.get(req.cache_key)
        # Only an answer this request could have been routed to: grants, budget downgrades and (for a
        # semantic match) a question that routes elsewhere all keep the cache from answering.
        if hit is None or hit.model not in self._fleet or hit.model not in req.decision.chain:
            return False
        req.hit = hit
        req.outcome.model, req.outcome.status = self._fleet[hit.model], "ok"
        return True

    async def _fill(self, req: _Request, response: dict[str, Any], cost_usd: float) -> None:
        """Keep a fresh answer for the next identical (or, semantic, similar) request."""
        if self.cache is None or req.cache_key is None or req.outcome.model is None:
            return
        try:
            await self.cache.put(req.cache_key, response, model=req.outcome.model.name, cost_usd=cost_usd)
        except Exception:  # a cache that cannot keep an answer costs a future hit, never this request
            log.exception("cache: keeping the answer of %s failed", req.id)

    async def _classify(self, req: _Request) -> None:
        """Ask the small-LLM classifier, charge its call to the request and decide again with its tier."""
        assert self.classifier is not None
        result = await self.classifier.classify(req.body, req.features, request_id=req.id)
        if result.attempt is not None:
            req.outcome.attempts.append(result.attempt)  # its cost counts in outcome.cost_usd
        if result.tier is not None:
            arm = req.decision.arm
            req.decision = (req.engine or self.engine).decide(
                req.features, model=req.body["model"], classified_tier=result.tier, constraint=req.constraint
            )
            if arm is not None:
                req.decision = replace(req.decision, arm=arm)
        req.decision = result.annotate(req.decision)

    async def route(
        self,
        body: dict[str, Any],
        *,
        headers: Mapping[str, str] | None = None,
        key_id: str | None = None,
        principal: Principal | None = None,
    ) -> Routed:
        """Route and complete one non-streamed chat request (an OpenAI body). Raises TierwiseError.

        With a ``principal`` (``access.authenticate``), the key's grants, rate limits and budgets apply
        (AccessDenied, RateLimited, BudgetExceeded); without one the call is trusted and unmetered."""
        req = await self._begin(body, headers, key_id, principal)
        if req.hit is not None:
            return await self._served_from_cache(req, req.hit)
        upstream = without_hints(body)
        try:
            completion = await (req.dispatcher or self.dispatcher).complete(
                req.decision, upstream, req.features, req.outcome, req.id
            )
        except ChainExhausted as exc:
            await self._log(req, exc.status, str(exc))
            exc.request_id = req.id
            raise
        except asyncio.CancelledError:
            if self._draining:  # the server is stopping and could not wait: not the client's doing
                await self._log(req, 503, _CUT_BY_STOP)
            else:  # the client went away
                req.outcome.status = "cancelled"
                await self._log(req, 499, "cancelled")
            raise
        except BaseException as exc:  # our own failure: never recorded as the client's
            await self._log(req, 500, f"internal error: {type(exc).__name__}")
            raise
        row = await self._log(req, 200, None)
        model = req.outcome.model
        assert model is not None
        await self._fill(req, completion.body, row.cost_usd)
        if self.shadow is not None:  # after the row: the request's own figures never include it
            self.shadow.maybe_start(req.id, upstream, model.name, completion.body, arm=req.decision.arm)
        return _routed(req, row, completion.body)

    async def _served_from_cache(self, req: _Request, hit: CacheHit) -> Routed:
        row = await self._log(req, 200, None)
        return _routed(req, row, hit_response(hit, req.id), cache=hit.kind)

    async def route_stream(
        self,
        body: dict[str, Any],
        *,
        headers: Mapping[str, str] | None = None,
        key_id: str | None = None,
        principal: Principal | None = None,
    ) -> RoutedStream:
        """Route a streamed request and wait for its first content chunk (fallbacks happen before it).

        Raises TierwiseError if no model could start answering; later failures surface while
        iterating the returned RoutedStream.
        """
        req = await self._begin(body, headers, key_id, principal)
        options = body.get("stream_options")
        wants_usage = isinstance(options, dict) and bool(options.get("include_usage"))
        if req.hit is not None:
            req.outcome.ttft_ms = elapsed_ms(req.started)
            upstream = _replayed(hit_chunks(hit_response(req.hit, req.id)))
        else:
            upstream = (req.dispatcher or self.dispatcher).stream(
                req.decision, without_hints(body), req.features, req.outcome, req.id
            )
        chunks = self._logged_stream(upstream, wants_usage, req)
        self._open_streams[req.id] = chunks
        try:
            first = await anext(chunks)
        except StopAsyncIteration:  # unreachable: dispatch yields at least one chunk or raises
            raise ChainExhausted(req.outcome.failures) from None
        except TierwiseError as exc:  # logged by _logged_stream: the client may quote its row
            exc.request_id = req.id
            raise
        routed = RoutedStream(first, chunks, req.outcome, req.decision, req.features, req.id)
        routed.cache = req.hit.kind if req.hit is not None else None
        return routed

    async def aembed(self, body: dict[str, Any], *, principal: Principal | None = None) -> Embedded:
        """Forward one embeddings request (an OpenAI body) to a configured embedding model, not routed;
        charge it and log its ledger row (decision layer ``embeddings``). Raises TierwiseError."""
        if not self._started:
            await self.start()
        if principal is not None:
            # Rate limits and spent budgets apply as to chat requests; the input is estimated at four
            # characters a token, with no output reserved.
            validate_embeddings_body(body, self.config)
            tokens = embeddings_chars(body["input"]) // 4 + 1
            await self.access.admit(
                principal,
                Features(task="embeddings", input_tokens=tokens, max_output_tokens=1),
                body["model"],
            )

        async def record(row: LedgerRow) -> None:
            await self._record(row)
            if principal is not None:
                await self.access.charge(principal, row.cost_usd)

        return await forward_embeddings(
            self.config,
            self.providers,
            body,
            request_id=_request_id(),
            policy_version=self.policy_version,
            record=record,
            key_id=principal.key_id if principal is not None else None,
            tenant=principal.tenant if principal is not None else None,
        )

    async def _logged_stream(
        self, chunks: AsyncIterator[Chunk], wants_usage: bool, req: _Request
    ) -> AsyncIterator[Chunk]:
        outcome = req.outcome
        status, error = 200, None
        collector = StreamCollector() if req.cache_key is not None and req.hit is None else None
        try:
            async for chunk in chunks:
                if collector is not None:
                    collector.add(chunk.data)
                if not wants_usage and chunk.usage is not None and not chunk.data.get("choices"):
                    continue  # the client did not ask for the usage chunk we requested upstream
                yield chunk
            if collector is not None and (completion := collector.completion()) is not None:
                await self._fill(req, completion, outcome.cost_usd)
        except ChainExhausted as exc:
            status, error = exc.status, str(exc)
            raise
        except ProviderError as exc:
            status, error = 502, f"stream interrupted after content was sent: {exc.message}"
            raise
        except (asyncio.CancelledError, GeneratorExit):
            if self._draining:
                status, error = 503, _CUT_BY_STOP
                outcome.status = "interrupted" if outcome.model is not None else "error"
            else:
                status, error = 499, "cancelled"
                if outcome.status != "interrupted":
                    outcome.status = "cancelled"
            raise
        except BaseException as exc:
            status, error = 500, f"internal error: {type(exc).__name__}"
            raise
        finally:
            self._open_streams.pop(req.id, None)
            await chunks.aclose()  # type: ignore[attr-defined]
            await self._log(req, status, error)

    async def _log(self, req: _Request, http_status: int, error: str | None) -> LedgerRow:
        if req.reservation is not None:
            reservation, req.reservation = req.reservation, None
            await self.access.settle(reservation, req.outcome.cost_usd)
        row = request_row(
            req.outcome,
            id=req.id,
            arrived=req.arrived,
            started=req.started,
            requested_model=req.body.get("model", ""),
            stream=req.features.stream,
            features=req.features.to_log(),
            decision=_decision_log(req),
            policy_version=req.decision.policy_version,
            http_status=http_status,
            error=error,
            counterfactual=self._counterfactual,
            key_id=req.key_id,
            prompt=req.body.get("messages") if self._capture_prompts else None,
        )
        await self._record(row, req.traceparent)
        # A cache hit says nothing of the arm's routing: its guard counts routed requests only.
        if self.canary is not None and req.decision.arm is not None and req.hit is None:
            try:
                await self.canary.observe(row)
            except Exception:  # the guard is not worth a request; the state store logs its own outages
                log.exception("canary: counting request %s failed", row.id)
        return row

    async def _record(self, row: LedgerRow, traceparent: str | None = None) -> None:
        """A request's row into the ledger, the metrics, the access log and its trace. The ledger
        first, before the answer goes out (its journal is what a kill cannot take); with
        ``observe_after_answer`` the rest runs just after the answer is written, off its latency."""
        await self.ledger.record(row)
        if self.observe_after_answer:
            asyncio.get_running_loop().call_soon(self._observe, row, traceparent)
        else:
            self._observe(row, traceparent)

    def _observe(self, row: LedgerRow, traceparent: str | None) -> None:
        try:
            if self.metrics is not None:
                self.metrics.observe(row)
            if self.tracing is not None:
                self.tracing.record(row, traceparent)
            if self.access_log is not None:
                self.access_log.write(row)
        except Exception:  # what is observed of a request never fails it (its row is in the ledger)
            log.exception("observing request %s failed", row.id)

    # -- feedback --

    async def afeedback(
        self,
        request_id: str,
        score: float,
        *,
        comment: str | None = None,
        principal: Principal | None = None,
    ) -> Feedback:
        """Record how good the answer of request ``request_id`` (its ``x-tierwise-request-id``) was:
        ``score`` 0 (not good enough) to 1. Stored in the ledger beside the request, it is a label
        ``tierwise train --ledger`` learns from. Raises RequestError: a bad field (400), no ledger
        (400), no such request (404), or the ledger's store unavailable (503, with ``retry_after``: at
        once, without waiting on the store). With a ``principal`` only the key that made the request may
        grade it (AccessDenied 403 otherwise)."""
        request_id, score, comment = validate_feedback_body(
            {"request_id": request_id, "score": score, "comment": comment}
        )
        if isinstance(self.ledger, NullLedger):
            raise RequestError("feedback needs a ledger to keep it: storage.ledger is none", status=400)
        if not self._started:
            await self.start()
        try:
            row = await self.ledger.get(request_id)
            if row is None:
                if self.ledger.health().state == "ok":  # else flush could wait on a spill's replay
                    await self.ledger.flush()  # the row may still be in the write-behind queue
                    row = await self.ledger.get(request_id)
                if row is None:
                    if self.ledger.health().state == "degraded":
                        # The row may be in the spill, waiting for the store: not known to be missing.
                        raise LedgerUnavailable("the row may be in the spill", retry_after=1.0)
                    raise RequestError(
                        f"request_id: no request {request_id!r} in the ledger",
                        param="request_id",
                        status=404,
                        code="request_not_found",
                    )
            if principal is not None and row.key_id != principal.key_id:
                raise AccessDenied(
                    f"request_id: {request_id!r} was not made with key {principal.key_id}; only the key "
                    "that made a request (or the master key) may grade it",
                    status=403,
                    code="not_request_owner",
                )
            feedback = Feedback(request_id=request_id, score=score, ts=time.time(), comment=comment)
            await self.ledger.record_feedback(feedback)
            if self.canary is not None:
                await self._count_feedback(row, score)
        except LedgerUnavailable as exc:
            # The details (which store, its error) are for the operator's log and /healthz, not the client.
            raise RequestError(
                "feedback cannot be stored now: the ledger is unavailable; retry after Retry-After",
                status=503,
                code="ledger_unavailable",
                type="server_error",
                retry_after=exc.retry_after or 1.0,
            ) from None
        return feedback

    async def _count_feedback(self, row: LedgerRow, score: float) -> None:
        try:
            assert self.canary is not None
            await self.canary.observe_feedback(row.decision.get("arm"), score)
        except Exception:  # the guard is not worth a stored grade; the state store logs its own outages
            log.exception("canary: counting feedback on %s failed", row.id)

    # -- in-process API --

    async def acomplete(
        self,
        messages: list[dict[str, Any]],
        *,
        model: str = "auto",
        task: str | None = None,
        quality: str | None = None,
        latency_ms: int | None = None,
        risk: str | None = None,
        tier: str | None = None,
        user_tier: str | None = None,
        **params: Any,
    ) -> Routed:
        """Route, call and log one chat request; return the response with its Decision.

        ``params`` are passed upstream as OpenAI request fields (``temperature``, ``tools`` …).
        """
        if params.get("stream"):
            raise RequestError("stream: use route_stream() for streamed requests", param="stream")
        hints = {
            k: v
            for k, v in (
                ("task", task),
                ("quality", quality),
                ("latency_ms", latency_ms),
                ("risk", risk),
                ("tier", tier),
                ("user_tier", user_tier),
            )
            if v is not None
        }
        validate_hints(hints)  # raise now, naming the argument
        body: dict[str, Any] = {**params, "model": model, "messages": messages}
        if hints:
            body["metadata"] = {**(params.get("metadata") or {}), **hints}
        return await self.route(body)

    def complete(self, messages: list[dict[str, Any]], **kwargs: Any) -> Routed:
        """Synchronous :meth:`acomplete`. The router then runs on a private event-loop thread; close it
        with :meth:`close` (or use it as a context manager) so the ledger is flushed."""
        return self._runner().run(self.acomplete(messages, **kwargs))

    def feedback(self, request_id: str, score: float, *, comment: str | None = None) -> Feedback:
        """Synchronous :meth:`afeedback`, for routers used through :meth:`complete`."""
        return self._runner().run(self.afeedback(request_id, score, comment=comment))

    def close(self) -> None:
        """Synchronous :meth:`aclose`, for routers used through :meth:`complete`."""
        if self._sync is not None:
            self._sync.run(self.aclose())
            self._sync.stop()
            self._sync = None

    def __enter__(self) -> Router:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _runner(self) -> _SyncRunner:
        if self._sync is None:
            self._sync = _SyncRunner()
        return self._sync


def _decision_log(req: _Request) -> dict[str, Any]:
    """The decision as logged; keyed requests name their tenant, for per-tenant figures."""
    logged = req.decision.to_log()
    if req.principal is not None:
        logged["tenant"] = req.principal.tenant
    if req.hit is not None:  # answered at $0; saved_usd is what the answer cost when it was paid for
        logged["cache"] = req.hit.to_log()
    return logged


async def _replayed(chunks: list[dict[str, Any]]) -> AsyncIterator[Chunk]:
    """A cached answer as a stream."""
    for data in chunks:
        usage = data.get("usage")
        yield Chunk(
            data=data,
            usage=Usage(int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0))
            if isinstance(usage, dict)
            else None,
        )


class _SyncRunner:
    """An event loop on a daemon thread, so synchronous callers share one loop (and one HTTP pool)."""

    def __init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="tierwise-router", daemon=True)
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
        self._loop.close()


__all__ = ["Routed", "RoutedStream", "Router", "TierwiseError"]
