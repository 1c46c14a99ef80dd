"""The HTTP gateway: ``POST /v1/chat/completions``, ``/v1/messages`` (Anthropic), ``/v1/responses``,
``/v1/embeddings``, ``POST /v1/feedback``, ``GET /v1/models``, ``GET /healthz``.

Thin by design: parse the body, hand it to the Router, serialize what comes back. Routing, retries
and logging all live below; this module only knows HTTP.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import time
import zlib
from collections.abc import Callable
from typing import Protocol

import orjson

from ..access import Principal
from ..errors import ProviderError, RequestError, TierwiseError
from ..providers.base import Chunk, chunk_has_content
from ..router import Routed, RoutedStream, Router
from ..validation import validate_feedback_body
from . import admin, anthropic_inbound, auth, responses_inbound
from .dashboard import add_dashboard
from .responses import (
    SSE_DONE,
    SSE_HEADERS,
    error_response,
    json_response,
    sse_error_event,
    sse_frame,
    tierwise_headers,
)
from .web import App, Request, Response, StreamResponse

log = logging.getLogger("tierwise.gateway")

# The App's state: the Router, when the app started (``created`` of /v1/models), the handler tasks
# of streams being written and the stop that may cut them (see create_app).
ROUTER_KEY = "router"
CREATED_KEY = "created"
STREAMS_KEY = "streams"
STOPPING_KEY = "stopping"
CUTTER_KEY = "cutter"


# Content codings a client may compress its body with. The gateway decodes them itself, so that a body
# that is not what its header says is a 400 in the OpenAI format, never a dropped connection, and a
# small body cannot inflate past the size limit.
_CODINGS = {"gzip": zlib.MAX_WBITS | 16, "x-gzip": zlib.MAX_WBITS | 16, "deflate": zlib.MAX_WBITS}


def _too_large(limit: int) -> RequestError:
    return RequestError(
        f"request body: exceeds the limit of {limit} bytes (server.max_body_bytes)",
        status=413,
        code="request_too_large",
    )


def _decode(raw: bytes, encoding: str, limit: int) -> bytes:
    codings = [c.strip().lower() for c in encoding.split(",") if c.strip()]
    for coding in reversed(codings):  # listed in the order they were applied
        if coding == "identity":
            continue
        wbits = _CODINGS.get(coding)
        if wbits is None or len(codings) > 2:
            raise RequestError(
                f"Content-Encoding: {encoding[:40]!r} is not supported; send gzip, deflate or identity",
                param="Content-Encoding",
                status=415,
                code="unsupported_content_encoding",
            )
        raw = _inflate(raw, wbits, coding, limit)
    return raw


def _inflate(raw: bytes, wbits: int, coding: str, limit: int) -> bytes:
    # "deflate" is a zlib stream by the RFC, but some clients send bare deflate: accept both.
    for bits in (wbits, -zlib.MAX_WBITS) if coding == "deflate" else (wbits,):
        inflater = zlib.decompressobj(bits)
        try:
            out = inflater.decompress(raw, limit + 1)
        except zlib.error:
            continue
        if len(out) > limit:
            raise _too_large(limit)
        if inflater.eof and not inflater.unused_data:
            return out
    raise RequestError(
        f"request body: not valid {coding} data, as its Content-Encoding header says",
        param="Content-Encoding",
        code="invalid_content_encoding",
    )


async def _read_json(request: Request, limit: int) -> object:
    # The server has read the body whole, refusing one past the limit (413) before reading it.
    raw = request.body
    encoding = request.headers.get("Content-Encoding")
    if encoding:
        raw = _decode(raw, encoding, limit)
    if not raw:
        raise RequestError("request body: empty; expected a JSON object")
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise RequestError(f"request body: invalid JSON: {exc}") from None


def _routed_headers(routed: Routed) -> dict[str, str]:
    """The ``x-tierwise-*`` headers of a completed request, whatever shape its answer takes."""
    return tierwise_headers(
        model=routed.model,
        tier=routed.tier,
        decision=routed.decision,
        request_id=routed.request_id,
        cost_usd=routed.cost_usd,
        cache=routed.cache,
    )


async def chat_completions(request: Request) -> Response | StreamResponse:
    router = request.app[ROUTER_KEY]
    try:
        caller = await auth.principal(router, request.headers)  # before the body: no work for strangers
        body = await _read_json(request, router.config.server.max_body_bytes)
        if isinstance(body, dict) and body.get("stream") is True:
            return await _stream(request, router, body, caller)
        if not isinstance(body, dict):
            raise RequestError("request body: must be a JSON object")
        routed = await router.route(body, headers=request.headers, principal=caller)
    except TierwiseError as exc:
        return error_response(exc)
    headers = _routed_headers(routed)
    return json_response(routed.response, headers=headers)


class Frames(Protocol):
    """How one client shape writes a routed stream: its chunks, its end, and the error event that
    ends it instead when it broke (``message``) after content was sent."""

    def chunk(self, chunk: Chunk) -> bytes: ...

    def error(self, message: str, *, status: int) -> bytes: ...

    def end(self) -> bytes: ...


class _FrameWriter:
    """Writes a stream's frames, coalescing those of chunks that arrive together: one read from the
    upstream often holds several events, and one write per event costs a system call each.

    The frames before the stream's first content are held and go out with it, at once. After that,
    the first frame after the handler waited is written at once, and the frames that follow it
    without a wait are held and sent in one write as soon as the handler waits again: a callback
    queued with ``call_soon`` runs only then. So nothing is held while the handler waits, and a
    stream whose chunks arrive one by one is written as before. At most ``_LIMIT`` bytes are held;
    past that the handler waits for the client, the backpressure of a plain write."""

    _LIMIT = 64 * 1024

    __slots__ = ("_content_sent", "_held", "_loop", "_response", "_scheduled", "_sending", "_size")

    def __init__(self, response: StreamResponse) -> None:
        self._response = response
        self._loop = asyncio.get_running_loop()
        self._held: list[bytes] = []
        self._size = 0
        self._scheduled: asyncio.Handle | None = None  # the callback that sends what is held
        self._sending: asyncio.Task[None] | None = None
        self._content_sent = False

    async def write(self, frame: bytes, *, content: bool = False) -> None:
        """Write ``frame``; ``content``: it is the frame of a chunk with content (see
        ``chunk_has_content``)."""
        sending = self._sending
        if sending is not None and sending.done():
            self._sending = None
            sending.result()  # a client that went away: raised here, as by a plain write
            sending = None
        first_content = content and not self._content_sent
        if first_content or (self._content_sent and self._scheduled is None and sending is None):
            self._content_sent = True
            await self._settle()
            self._held.append(frame)
            await self._send()
            self._scheduled = self._loop.call_soon(self._send_held)
            return
        self._held.append(frame)
        self._size += len(frame)
        if self._size > self._LIMIT:
            await self._settle()
            await self._send()
        elif self._scheduled is None:
            self._scheduled = self._loop.call_soon(self._send_held)

    @property
    def content_sent(self) -> bool:
        return self._content_sent

    def _send_held(self) -> None:
        self._scheduled = None
        if self._held and self._sending is None:
            self._sending = self._loop.create_task(self._send())

    async def _send(self) -> None:
        while self._held:
            data = b"".join(self._held)
            self._held.clear()
            self._size = 0
            await self._response.write(data)

    async def _settle(self) -> None:
        """Cancel the queued callback and wait for a write in flight: the caller writes next."""
        if self._scheduled is not None:
            self._scheduled.cancel()
            self._scheduled = None
        sending, self._sending = self._sending, None
        if sending is not None:
            await sending

    async def end(self, frame: bytes) -> None:
        """Write what is held and ``frame``, the last of the stream, with the end of the body."""
        await self._settle()
        self._held.append(frame)
        data = b"".join(self._held)
        self._held.clear()
        await self._response.write_eof(data)

    def discard(self) -> None:
        """The stream stops without its end (the client left, or the request was cancelled): drop
        what is held, and cancel a write in flight rather than let it outlive the request."""
        if self._scheduled is not None:
            self._scheduled.cancel()
            self._scheduled = None
        self._held.clear()
        sending, self._sending = self._sending, None
        if sending is not None:
            if not sending.done():
                sending.cancel()
            elif not sending.cancelled():
                sending.exception()  # retrieved: the caller already knows the client is gone


class _ChatFrames:
    """``chat.completion.chunk`` data events, ``[DONE]`` at the end."""

    def __init__(self, stream: RoutedStream) -> None:
        self._stream = stream

    def chunk(self, chunk: Chunk) -> bytes:
        return sse_frame(chunk.raw if chunk.raw is not None else orjson.dumps(chunk.data))

    def error(self, message: str, *, status: int) -> bytes:
        return sse_error_event(message, type="server_error" if status == 503 else "upstream_error")

    def end(self) -> bytes:
        # The cost is known only now; SSE comments are ignored by clients but visible to curl users.
        return f": x-tierwise-cost-usd {self._stream.cost_usd:.8f}\n\n".encode() + SSE_DONE


async def _stream(
    request: Request,
    router: Router,
    body: dict,
    caller: Principal | None,
    frames_for: Callable[[RoutedStream], Frames] = _ChatFrames,
) -> StreamResponse:
    # Errors before the first content chunk are ordinary JSON errors: nothing has been sent yet.
    stream = await router.route_stream(body, headers=request.headers, principal=caller)
    frames = frames_for(stream)
    response = StreamResponse(
        headers={
            **SSE_HEADERS,
            **tierwise_headers(
                model=stream.model,
                tier=stream.tier,
                decision=stream.decision,
                request_id=stream.request_id,
                cost_usd=None,
                cache=stream.cache,
            ),
        }
    )
    iterator = aiter(stream)
    streams = request.app[STREAMS_KEY]
    task = asyncio.current_task()
    assert task is not None
    streams.add(task)
    writer = _FrameWriter(response)
    try:
        await response.prepare(request)
        async for chunk in iterator:
            frame = frames.chunk(chunk)
            if frame:
                await writer.write(frame, content=not writer.content_sent and chunk_has_content(chunk.data))
    except ProviderError as exc:
        # An explicit error event, and no clean end.
        message = f"upstream stream interrupted after content was sent: {exc.message}"
        await writer.end(frames.error(message, status=502))
        return response
    except asyncio.CancelledError:
        if not request.app[STOPPING_KEY].is_set() or task.uncancel() > 0:
            writer.discard()
            await iterator.aclose()  # type: ignore[attr-defined]
            raise
        # Cut by a stop that did not wait for it: the client hears so, rather than a silent truncation.
        await iterator.aclose()  # type: ignore[attr-defined]
        with contextlib.suppress(ConnectionError, RuntimeError):
            await writer.end(frames.error(_CUT_BY_STOP, status=503))
        writer.discard()
        return response
    except ConnectionResetError:
        writer.discard()
        await iterator.aclose()  # type: ignore[attr-defined]
        raise
    except BaseException:
        writer.discard()
        raise
    finally:
        streams.discard(task)
    await writer.end(frames.end())
    return response


class _MessageFrames:
    """Anthropic's Messages events; an ``error`` event instead of ``message_stop`` when broken."""

    def __init__(self, stream: RoutedStream) -> None:
        self._events = anthropic_inbound.MessageStream(stream)
        self._stream = stream

    def chunk(self, chunk: Chunk) -> bytes:
        return self._events.chunk(chunk)

    def error(self, message: str, *, status: int) -> bytes:
        return anthropic_inbound.error_event(message, status=status)

    def end(self) -> bytes:
        return self._events.end() + f": x-tierwise-cost-usd {self._stream.cost_usd:.8f}\n\n".encode()


async def messages(request: Request) -> Response | StreamResponse:
    """Anthropic's ``POST /v1/messages``, translated to the canonical chat request and back."""
    router = request.app[ROUTER_KEY]
    try:
        caller = await auth.principal(router, request.headers)
        raw = await _read_json(request, router.config.server.max_body_bytes)
        body = anthropic_inbound.to_chat_body(raw, router.config.server)
        if body.get("stream"):
            return await _stream(request, router, body, caller, _MessageFrames)
        routed = await router.route(body, headers=request.headers, principal=caller)
    except TierwiseError as exc:
        return anthropic_inbound.anthropic_error_response(exc)
    headers = _routed_headers(routed)
    return json_response(
        anthropic_inbound.to_message(routed.response, request_id=routed.request_id), headers=headers
    )


async def responses(request: Request) -> Response | StreamResponse:
    """OpenAI's ``POST /v1/responses`` (stateless), translated to the canonical chat request and back."""
    router = request.app[ROUTER_KEY]
    try:
        caller = await auth.principal(router, request.headers)
        raw = await _read_json(request, router.config.server.max_body_bytes)
        body = responses_inbound.to_chat_body(raw, router.config.server)
        assert isinstance(raw, dict)  # to_chat_body refuses anything else
        if body.get("stream"):
            return await _stream(
                request, router, body, caller, lambda stream: responses_inbound.ResponseEvents(raw, stream)
            )
        routed = await router.route(body, headers=request.headers, principal=caller)
    except TierwiseError as exc:
        return error_response(exc)
    headers = _routed_headers(routed)
    shell = responses_inbound.ResponseShell(raw, routed.request_id)
    return json_response(shell.from_completion(routed.response), headers=headers)


async def embeddings(request: Request) -> Response:
    """``POST /v1/embeddings``: forwarded to a configured embedding model (not routed), costed, logged."""
    router = request.app[ROUTER_KEY]
    caller = await auth.principal(router, request.headers)
    body = await _read_json(request, router.config.server.max_body_bytes)
    if not isinstance(body, dict):
        raise RequestError("request body: must be a JSON object")
    embedded = await router.aembed(body, principal=caller)
    headers = tierwise_headers(
        model=embedded.model,
        tier=embedded.decision.tier,
        decision=embedded.decision,
        request_id=embedded.request_id,
        cost_usd=embedded.cost_usd,
    )
    return json_response(embedded.response, headers=headers)


_CUT_BY_STOP = "the gateway stopped before this stream was complete; retry the request"
# How long before the server's own shutdown timeout the streams still open are ended with an error
# event: the transport must still be open when they write it.
_STREAM_CUT_MARGIN_S = 0.5


async def feedback(request: Request) -> Response:
    """``{"request_id": …, "score": 0..1, "comment"?: …}`` → the stored feedback (see Router.afeedback)."""
    router = request.app[ROUTER_KEY]
    # The master key may grade any request; a virtual key only the requests it made.
    master = router.access.is_master(auth.presented_key(request.headers))
    caller = None if master else await auth.principal(router, request.headers)
    body = await _read_json(request, router.config.server.max_body_bytes)
    request_id, score, comment = validate_feedback_body(body)
    stored = await router.afeedback(request_id, score, comment=comment, principal=caller)
    return json_response(
        {
            "object": "feedback",
            "request_id": stored.request_id,
            "score": stored.score,
            "comment": stored.comment,
            "created": int(stored.ts),
        }
    )


async def list_models(request: Request) -> Response:
    router = request.app[ROUTER_KEY]
    created = request.app[CREATED_KEY]
    if "anthropic-version" in request.headers:  # the anthropic SDK: its list shape
        return _anthropic_models(router, created)
    data = [
        {
            "id": "auto",
            "object": "model",
            "created": created,
            "owned_by": "tierwise",
            "description": "routed by the active policy",
        }
    ]
    data += [
        {"id": tier, "object": "model", "created": created, "owned_by": "tierwise", "tier": tier}
        for tier in router.config.tiers
    ]
    for model in router.config.models:
        data.append(
            {
                "id": model.name,
                "object": "model",
                "created": created,
                "owned_by": model.provider,
                "tier": model.tier,
                "context_window": model.context_window,
                "pricing": {
                    "input_per_mtok": model.price.input_per_mtok,
                    "output_per_mtok": model.price.output_per_mtok,
                },
            }
        )
    return json_response({"object": "list", "data": data})


def _anthropic_models(router: Router, created: int) -> Response:
    names = ["auto", *router.config.tiers, *(model.name for model in router.config.models)]
    stamp = anthropic_inbound.created_at(created)
    data = [{"type": "model", "id": name, "display_name": name, "created_at": stamp} for name in names]
    return json_response({"data": data, "has_more": False, "first_id": names[0], "last_id": names[-1]})


async def metrics(request: Request) -> Response:
    """Prometheus text format of the router's metrics (404 with ``server.metrics: false``)."""
    router = request.app[ROUTER_KEY]
    if router.metrics is None:
        raise RequestError("/metrics: off (server.metrics: false)", status=404, code="not_found")
    return Response(router.metrics.exposition(), content_type=router.metrics.content_type)


async def healthz(request: Request) -> Response:
    """Liveness and the ledger's state. A degraded ledger (its store down, rows in the spill) still
    answers 200: requests are served and their rows kept; the body says so, with the figures."""
    router = request.app[ROUTER_KEY]
    ledger = router.ledger.health()
    return json_response(
        {
            "status": ledger.state,
            "policy_version": router.policy_version,
            "models": len(router.config.models),
            "ledger": ledger.to_json(),
        }
    )


def create_app(router: Router, *, close_router: bool = True, shutdown_timeout: float = 60.0) -> App:
    """The application serving ``router`` (run it with ``server.Server`` or ``server.run``). With
    ``close_router`` the app's shutdown flushes the ledger and closes the router.
    ``shutdown_timeout`` is the one given to the server: streams still open just before it runs out
    are ended with a ``stream_interrupted`` error event, so no client mistakes a cut stream for a
    complete one."""
    app = App(max_body_bytes=router.config.server.max_body_bytes, error_response=error_response)
    # Metrics, traces and the access log after each answer is written, not before (see Router._record).
    router.observe_after_answer = True
    app[ROUTER_KEY] = router
    app[CREATED_KEY] = int(time.time())
    app[STREAMS_KEY] = set()
    app[STOPPING_KEY] = asyncio.Event()

    async def on_startup(app: App) -> None:
        await router.start()
        # Everything built so far (config, compiled rules, pools) lives as long as the process: move
        # it out of the collector's reach so gen-2 collections stay short under load.
        gc.collect()
        gc.freeze()

    async def on_shutdown(app: App) -> None:
        # Runs when the listener has closed and before the server waits for requests in flight.
        router.drain()
        if app[STREAMS_KEY]:
            app[CUTTER_KEY] = asyncio.create_task(_cut_streams(app, shutdown_timeout - _STREAM_CUT_MARGIN_S))

    async def on_cleanup(app: App) -> None:
        cutter = app.get(CUTTER_KEY)
        if cutter is not None:
            cutter.cancel()
        if close_router:
            await router.aclose()

    app.on_startup.append(on_startup)
    app.on_shutdown.append(on_shutdown)
    app.on_cleanup.append(on_cleanup)
    app.add_post("/v1/chat/completions", chat_completions)
    app.add_post("/chat/completions", chat_completions)
    app.add_post("/v1/messages", messages, error_response=anthropic_inbound.anthropic_error_response)
    app.add_post("/v1/responses", responses)
    app.add_post("/v1/embeddings", embeddings)
    app.add_post("/v1/feedback", feedback)
    app.add_get("/v1/models", list_models)
    app.add_get("/healthz", healthz)
    admin.add_routes(app, router)
    app.add_get("/metrics", metrics)
    add_dashboard(app, router)
    return app


async def _cut_streams(app: App, after_s: float) -> None:
    await asyncio.sleep(max(0.0, after_s))
    app[STOPPING_KEY].set()
    for task in list(app[STREAMS_KEY]):
        task.cancel()
