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
import os
import threading
import time
from collections.abc import AsyncIterator, Coroutine, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from .config import Config, load_config
from .dispatch import Dispatcher, Outcome
from .errors import ChainExhausted, ProviderError, RequestError, TierwiseError
from .features import Features, extract_features, parse_hints, validate_hints
from .http import HttpPool
from .ledger import Ledger, LedgerRow, open_ledger
from .policy.engine import Decision, PolicyEngine
from .providers import Chunk, Provider, build_provider
from .state import State, open_state
from .validation import validate_chat_body

T = TypeVar("T")

_HINT_METADATA_KEYS = frozenset(
    {
        k
        for key in ("task", "quality", "latency_ms", "risk", "tier", "user_tier")
        for k in (key, f"tierwise_{key}")
    }
)


def _request_id() -> str:
    return "req_" + os.urandom(12).hex()


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

    @property
    def content(self) -> str | None:
        """The first choice's message text."""
        choices = self.response.get("choices") or [{}]
        return (choices[0].get("message") or {}).get("content")


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

    @property
    def cost_usd(self) -> float:
        return self.outcome.cost_usd

    def __aiter__(self) -> AsyncIterator[Chunk]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[Chunk]:
        if self._first is not None:
            first, self._first = self._first, None
            yield first
        async for chunk in self._rest:
            yield chunk

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
        self.engine = PolicyEngine(config)
        self.http = HttpPool()
        self.providers: dict[str, Provider] = (
            dict(providers)
            if providers is not None
            else {name: build_provider(name, p, http=self.http) for name, p in config.providers.items()}
        )
        self.ledger: Ledger = (
            ledger
            if ledger is not None
            else open_ledger(config.storage.ledger, queue_size=config.storage.ledger_queue)
        )
        self.state: State = state if state is not None else open_state(config.storage.state)
        self.dispatcher = Dispatcher(config, self.providers, self.state)
        self._counterfactual = config.counterfactual()
        self._started = False
        self._closed = False
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

    async def aclose(self) -> None:
        """Flush the ledger and release connections. Every request already accepted is logged."""
        if self._closed:
            return
        self._closed = True
        for chunks in list(self._open_streams.values()):
            await chunks.aclose()  # type: ignore[attr-defined]
        if self._started:
            await self.ledger.close()
        await self.state.close()
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
        validate_chat_body(body)
        hints = parse_hints(headers, body.get("metadata"))
        features = extract_features(body, hints)
        return features, self.engine.decide(features, model=body["model"])

    @staticmethod
    def _upstream_body(body: dict[str, Any]) -> dict[str, Any]:
        """The body to forward: without the routing hints tierwise read from ``metadata``."""
        metadata = body.get("metadata")
        if not metadata or not (metadata.keys() & _HINT_METADATA_KEYS):
            return body
        rest = {k: v for k, v in metadata.items() if k not in _HINT_METADATA_KEYS}
        out = dict(body)
        if rest:
            out["metadata"] = rest
        else:
            del out["metadata"]
        return out

    # -- serving --

    async def route(
        self, body: dict[str, Any], *, headers: Mapping[str, str] | None = None, key_id: str | None = None
    ) -> Routed:
        """Route and complete one non-streamed chat request (an OpenAI body). Raises TierwiseError."""
        arrived = time.time()
        started = time.perf_counter()
        if not self._started:
            await self.start()
        features, decision = self.explain(body, headers=headers)
        request_id = _request_id()
        outcome = Outcome()
        try:
            completion = await self.dispatcher.complete(
                decision, self._upstream_body(body), features, outcome, request_id
            )
        except ChainExhausted as exc:
            await self._log(
                request_id, arrived, started, body, features, decision, outcome, exc.status, str(exc), key_id
            )
            raise
        except BaseException:
            outcome.status = "cancelled"
            await self._log(
                request_id, arrived, started, body, features, decision, outcome, 499, "cancelled", key_id
            )
            raise
        row = await self._log(
            request_id, arrived, started, body, features, decision, outcome, 200, None, key_id
        )
        assert outcome.model is not None
        return Routed(
            response=completion.body,
            decision=decision,
            features=features,
            model=outcome.model.name,
            tier=outcome.model.tier,
            cost_usd=row.cost_usd,
            counterfactual_cost_usd=row.counterfactual_cost_usd,
            request_id=request_id,
            latency_ms=row.latency_ms,
        )

    async def route_stream(
        self, body: dict[str, Any], *, headers: Mapping[str, str] | None = None, key_id: str | None = None
    ) -> RoutedStream:
        """Route a streamed request and wait for its first content chunk (fallbacks happen before it).

        Raises TierwiseError if no model could start answering; later failures surface while
        iterating the returned RoutedStream.
        """
        arrived = time.time()
        started = time.perf_counter()
        if not self._started:
            await self.start()
        features, decision = self.explain(body, headers=headers)
        request_id = _request_id()
        outcome = Outcome()
        options = body.get("stream_options")
        wants_usage = isinstance(options, dict) and bool(options.get("include_usage"))
        chunks = self._logged_stream(
            self.dispatcher.stream(decision, self._upstream_body(body), features, outcome, request_id),
            wants_usage,
            (request_id, arrived, started, body, features, decision, outcome, key_id),
        )
        self._open_streams[request_id] = chunks
        try:
            first = await anext(chunks)
        except StopAsyncIteration:  # unreachable: dispatch yields at least one chunk or raises
            raise ChainExhausted(outcome.failures) from None
        return RoutedStream(first, chunks, outcome, decision, features, request_id)

    async def _logged_stream(
        self, chunks: AsyncIterator[Chunk], wants_usage: bool, log: tuple[Any, ...]
    ) -> AsyncIterator[Chunk]:
        request_id, arrived, started, body, features, decision, outcome, key_id = log
        status, error = 200, None
        try:
            async for chunk in chunks:
                if not wants_usage and chunk.usage is not None and not chunk.data.get("choices"):
                    continue  # the client did not ask for the usage chunk we requested upstream
                yield chunk
        except ChainExhausted as exc:
            status, error = exc.status, str(exc)
            raise
        except ProviderError as exc:
            status, error = 502, f"stream interrupted after content was sent: {exc.message}"
            raise
        except BaseException:
            status, error = 499, "cancelled"
            if outcome.status not in ("interrupted",):
                outcome.status = "cancelled"
            raise
        finally:
            self._open_streams.pop(request_id, None)
            await chunks.aclose()  # type: ignore[attr-defined]
            await self._log(
                request_id, arrived, started, body, features, decision, outcome, status, error, key_id
            )

    async def _log(
        self,
        request_id: str,
        arrived: float,
        started: float,
        body: Mapping[str, Any],
        features: Features,
        decision: Decision,
        outcome: Outcome,
        http_status: int,
        error: str | None,
        key_id: str | None,
    ) -> LedgerRow:
        usage = outcome.usage
        counterfactual = (
            self._counterfactual.cost(usage.input_tokens, usage.output_tokens) if usage is not None else 0.0
        )
        model = outcome.model
        row = LedgerRow(
            id=request_id,
            ts=arrived,
            requested_model=body.get("model", ""),
            stream=features.stream,
            features=features.to_log(),
            decision=decision.to_log(),
            policy_version=decision.policy_version,
            status=outcome.status,
            http_status=http_status,
            final_model=model.name if model else None,
            tier=model.tier if model else None,
            input_tokens=usage.input_tokens if usage else 0,
            output_tokens=usage.output_tokens if usage else 0,
            cost_usd=round(outcome.cost_usd, 10),
            counterfactual_cost_usd=round(counterfactual, 10),
            latency_ms=round((time.perf_counter() - started) * 1000, 3),
            ttft_ms=outcome.ttft_ms,
            error=error,
            key_id=key_id,
            attempts=outcome.attempts,
        )
        await self.ledger.record(row)
        return row

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
