"""The gateway's HTTP/1.1 server: an asyncio protocol per connection over the ``httptools`` parser.

Why not aiohttp's server: on the hot path it cost more CPU per request than the whole of tierwise's
routing (``bench/overhead.py``). This server does what the gateway needs and no more: whole request
bodies (bounded by ``max_body_bytes`` before they are read), keep-alive and pipelining, ``Expect:
100-continue``, streamed (chunked) answers with backpressure, idle and slow-header timeouts, and a
graceful stop that finishes the requests in flight and tells keep-alive clients to reconnect
(``Connection: close``) rather than dropping them.

Handlers take a ``Request`` and return a ``Response``, or write a ``StreamResponse`` and return it
(``web.py``: those types and the ``App`` holding the routes). Errors a client causes at the HTTP
level (a malformed request, a body over the limit, no such path) are rendered by the route's
``error_response`` (the App's unless the route has its own), so they have the same shape as every
other error of that endpoint.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections import deque
from urllib.parse import unquote

import httptools
from multidict import CIMultiDict, CIMultiDictProxy

from ..errors import RequestError
from .web import App, Request, Response, StreamResponse, response_head

log = logging.getLogger("tierwise.gateway")

KEEPALIVE_S = 75.0  # an idle keep-alive connection is closed after this long
HEAD_TIMEOUT_S = 60.0  # a request's line and headers must arrive within this long of its first byte
MAX_HEAD_BYTES = 64 * 1024  # request line and headers together; more is a 431
_PIPELINE_DEPTH = 16  # requests read ahead on one connection before reading pauses
_LINGER_S = 2.0  # after a refused request, how long what the client still sends is read and dropped
_HIGH_WATER = 256 * 1024  # an unread body past this pauses reading (only until the handler runs)

_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


class _Connection(asyncio.Protocol):
    """One client connection: parses requests, runs their handlers one after another (pipelined
    requests wait their turn), writes the answers."""

    def __init__(self, server: Server) -> None:
        self._server = server
        self._app = server.app
        self._loop = server.loop
        self._parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self._url = b""
        self._headers: list[tuple[str, str]] = []
        self._head_bytes = 0
        self._body: list[bytes] = []
        self._body_size = 0
        # Parsed requests waiting for their turn; a refusal waits as (error, the path it was for).
        self._pending: deque[Request | tuple[RequestError, str | None]] = deque()
        self._task: asyncio.Task[None] | None = None
        self._timer: asyncio.TimerHandle | None = None  # the end of a lingering close
        # When the connection last fell idle, or its request began while idle: the server's sweep
        # closes it past KEEPALIVE_S idle, or past HEAD_TIMEOUT_S with a request head unfinished
        # (a timestamp per request is cheaper than a timer re-armed per request).
        self.since = self._loop.time()
        self._in_message = False
        self._head_done = False
        self._broken = False  # a request could not be parsed: nothing after it is read
        self._client_done = False  # the client half-closed its side
        self._paused_reading = False
        self._write_paused = False
        self._drain_waiter: asyncio.Future[None] | None = None
        self.closed = False
        self.closing = False  # the server is stopping: close after the answer being written
        self.keep_alive = True  # of the request being answered
        self.response_started = False

    # -- asyncio.Protocol --

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is not an asyncio.Transport
        self._server.connections.add(self)

    def connection_lost(self, exc: BaseException | None) -> None:
        self.closed = True
        self._server.connections.discard(self)
        self._cancel_timer()
        self._pending.clear()
        waiter, self._drain_waiter = self._drain_waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(ConnectionResetError("the client closed the connection"))

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        waiter, self._drain_waiter = self._drain_waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def data_received(self, data: bytes) -> None:
        if self._broken:
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._refuse(RequestError("Upgrade: not supported by this server", status=400))
        except httptools.HttpParserError as exc:
            cause = exc.__context__  # a callback's own error (a head or body over its limit)
            if isinstance(cause, RequestError):
                self._refuse(cause)
            else:
                reason = " ".join(str(exc).split())[:200] or "malformed request"
                self._refuse(RequestError(f"HTTP request: {reason}", status=400, code="bad_request"))

    def eof_received(self) -> bool | None:
        # The client half-closed: answer what it sent, then close (False: close our side at once).
        self._client_done = True
        if self._in_message:
            self._broken = True
        return None if self._task is None and not self._pending else True

    # -- httptools callbacks --

    def on_message_begin(self) -> None:
        self._in_message = True
        self._url = b""
        self._headers = []
        self._head_bytes = 0
        self._body = []
        self._body_size = 0
        self._head_done = False
        if self._task is None and not self._pending:
            self.since = self._loop.time()

    def on_url(self, url: bytes) -> None:
        self._url += url
        self._head_bytes += len(url)
        if self._head_bytes > MAX_HEAD_BYTES:
            raise RequestError("HTTP request: the request line is too long", status=414, code="uri_too_long")

    def on_header(self, name: bytes, value: bytes) -> None:
        self._head_bytes += len(name) + len(value) + 4
        if self._head_bytes > MAX_HEAD_BYTES:
            raise RequestError(
                f"HTTP request: headers exceed {MAX_HEAD_BYTES} bytes", status=431, code="headers_too_large"
            )
        # As aiohttp does: bytes that are not UTF-8 survive as surrogates, for the handler to refuse.
        self._headers.append((name.decode("latin-1"), value.decode("utf-8", "surrogateescape")))

    def on_headers_complete(self) -> None:
        self._head_done = True
        limit = self._app.max_body_bytes
        for name, value in self._headers:
            lowered = name.lower()
            if lowered == "content-length":
                if value.strip().isdigit() and int(value) > limit:
                    raise self._body_limit_error()
            # Only between answers: written during one, it would land inside that answer's body. A
            # client not told to go on sends its body anyway after a second or so.
            elif (
                lowered == "expect"
                and value.strip().lower() == "100-continue"
                and self.transport is not None
                and not self._pending
                and self._task is None
            ):
                self.transport.write(_CONTINUE)

    def on_body(self, body: bytes) -> None:
        self._body_size += len(body)
        if self._body_size > self._app.max_body_bytes:
            raise self._body_limit_error()
        self._body.append(body)
        if self._body_size > _HIGH_WATER and not self._paused_reading and self._task is not None:
            self._pause_reading()

    def on_message_complete(self) -> None:
        self._in_message = False
        parser = self._parser
        raw = self._url
        path_bytes, _, query = raw.partition(b"?")
        path = path_bytes.decode("utf-8", "surrogateescape")
        if "%" in path:
            path = unquote(path, errors="surrogateescape")
        body = self._body[0] if len(self._body) == 1 else b"".join(self._body)
        request = Request(
            self._app,
            parser.get_method().decode("ascii", "replace"),
            path,
            query.partition(b"#")[0].decode("utf-8", "surrogateescape"),
            CIMultiDictProxy(CIMultiDict(self._headers)),
            body,
            parser.get_http_version(),
            parser.should_keep_alive(),
        )
        request._conn = self
        self._body = []
        if self._task is None:
            self._task = self._loop.create_task(self._serve(request))
        else:
            self._pending.append(request)
            if len(self._pending) >= _PIPELINE_DEPTH:
                self._pause_reading()

    # -- serving --

    async def _serve(self, request: Request | tuple[RequestError, str | None]) -> None:
        """Answer ``request``, then each one pipelined behind it, in order."""
        try:
            while True:
                if isinstance(request, tuple):
                    error, path = request
                    self.keep_alive = False
                    self._write_response(self._app.error_shape(path)(error), head_only=False)
                    self._linger()
                    return
                await self._answer(request)
                if self.closed:
                    return
                if not self.keep_alive or self.closing:
                    self._close()
                    return
                if not self._pending:
                    break
                request = self._pending.popleft()
                if self._paused_reading and len(self._pending) < _PIPELINE_DEPTH // 2:
                    self._resume_reading()
        finally:
            self._task = None
        if self._client_done:
            self._close()
            return
        if self._paused_reading:
            self._resume_reading()
        self.since = self._loop.time()

    async def _answer(self, request: Request) -> None:
        self.keep_alive = request.keep_alive and not self.closing and not self._client_done
        self.response_started = False
        app = self._app
        try:
            response = await app.handle(request)
        except asyncio.CancelledError:
            # The server stopped without waiting any longer: close rather than leave the client waiting.
            self.keep_alive = False
            if not self.response_started:
                self._write_response(
                    app.error_response(
                        RequestError(
                            "the gateway is stopping; retry the request", status=503, type="server_error"
                        )
                    ),
                    head_only=False,
                )
            raise
        if isinstance(response, StreamResponse):
            if not self.response_started:  # never prepared: an empty answer
                self._write_response(Response(b"", status=response.status, headers=response.headers), False)
            elif not response._ended and response._head and not self.closed:  # prepared, never written
                self.write(response._head + (b"0\r\n\r\n" if response._chunked else b""))
            elif response._chunked and not response._ended:  # the handler returned mid-body
                self.keep_alive = False
            return
        if not self.closed:
            self._write_response(response, head_only=request.method == "HEAD")

    def _write_response(self, response: Response, head_only: bool) -> None:
        if self.closed or self.transport is None:
            return
        body = response.body
        if self.closing:  # the server began to stop while this answer was made
            self.keep_alive = False
        try:
            head = response_head(
                response.status,
                response.content_type,
                len(body),
                response.headers,
                keep_alive=self.keep_alive,
            )
        except ValueError:
            log.exception("a response header could not be written")
            head = response_head(500, "application/json", 0, None, keep_alive=False)
            self.keep_alive, body = False, b""
        self.transport.write(head if head_only or not body else head + body)

    # -- helpers for the responses --

    def write(self, data: bytes) -> None:
        if self.closed or self.transport is None:
            raise ConnectionResetError("the client closed the connection")
        self.transport.write(data)

    async def drain(self) -> None:
        if self.closed:
            raise ConnectionResetError("the client closed the connection")
        if not self._write_paused:
            return
        waiter = self._drain_waiter
        if waiter is None:
            waiter = self._drain_waiter = self._loop.create_future()
        await asyncio.shield(waiter)

    # -- state --

    def _refuse(self, error: RequestError) -> None:
        """A request that cannot be read: answered with ``error`` after the ones before it, then closed."""
        self._in_message = False
        self._broken = True
        self._pause_reading()
        path = self._url.partition(b"?")[0].decode("utf-8", "replace") if self._url else None
        if self._task is None:
            self._task = self._loop.create_task(self._serve((error, path)))
        else:
            self._pending.append((error, path))

    def _linger(self) -> None:
        """Close after a refusal, but read (and drop) what the client is still sending for a moment
        first: closing with unread bytes would reset the connection, and the client might never see
        the answer that says why."""
        transport = self.transport
        if transport is None or self.closed:
            return
        if not transport.can_write_eof():
            self._close()
            return
        transport.write_eof()
        self._cancel_timer()
        self._timer = self._loop.call_later(_LINGER_S, self._close)
        self._resume_reading()

    def _body_limit_error(self) -> RequestError:
        limit = self._app.max_body_bytes
        return RequestError(
            f"request body: exceeds the limit of {limit} bytes (server.max_body_bytes)",
            status=413,
            code="request_too_large",
        )

    def _pause_reading(self) -> None:
        if not self._paused_reading and self.transport is not None and not self.closed:
            self._paused_reading = True
            self.transport.pause_reading()

    def _resume_reading(self) -> None:
        if self._paused_reading and self.transport is not None and not self.closed:
            self._paused_reading = False
            self.transport.resume_reading()

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def timed_out(self, now: float) -> bool:
        """Idle past KEEPALIVE_S, or a request head unfinished past HEAD_TIMEOUT_S: nothing in
        flight to lose by closing it."""
        if self._task is not None or self._pending or self.closed:
            return False
        if not self._in_message:
            return now - self.since > KEEPALIVE_S
        return not self._head_done and now - self.since > HEAD_TIMEOUT_S

    def _close(self) -> None:
        self._cancel_timer()
        if self.transport is not None and not self.closed:
            self.closed = True
            self.transport.close()

    def stop(self) -> None:
        """The server is stopping: close now if idle, else after the answer being written."""
        self.closing = True
        if self._task is None and not self._in_message:
            self._close()


class Server:
    """Serves an App on a host and port: ``await start()``, then ``await stop(timeout)``."""

    def __init__(self, app: App) -> None:
        self.app = app
        self.loop = asyncio.get_running_loop()
        self.connections: set[_Connection] = set()
        self._server: asyncio.base_events.Server | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self._started = False
        self.port = 0  # the port listened on, once started (the one chosen, for port 0)

    async def start(self, host: str, port: int, *, backlog: int = 1024) -> None:
        """Run the start hooks, then listen."""
        for hook in self.app.on_startup:
            await hook(self.app)
        self._started = True
        self._server = await self.loop.create_server(
            lambda: _Connection(self), host, port, backlog=backlog, reuse_address=True
        )
        self.port = int(self._server.sockets[0].getsockname()[1])
        self._sweeper = self.loop.create_task(self._sweep())

    async def _sweep(self) -> None:
        """Close the connections idle or stalled past their time, checking a few times a second."""
        while True:
            await asyncio.sleep(min(1.0, KEEPALIVE_S / 4, HEAD_TIMEOUT_S / 4))
            now = self.loop.time()
            for conn in [c for c in self.connections if c.timed_out(now)]:
                conn._close()

    async def stop(self, timeout: float) -> None:
        """Stop listening, run the stop hooks, let the requests in flight (and those still arriving)
        finish for up to ``timeout`` seconds (cancelled after that), close every connection, then run
        the cleanup hooks. Each answer written meanwhile says ``Connection: close``."""
        if self._server is not None:
            self._server.close()
        if self._sweeper is not None:
            self._sweeper.cancel()
        for hook in self.app.on_shutdown:
            await hook(self.app)
        for conn in list(self.connections):
            conn.stop()
        # Until no handler runs and no request is half received (its last bytes start one more handler,
        # and it is answered too), for ``timeout`` at most. No await between the last look and the
        # closing below, so no handler starts unseen.
        deadline = self.loop.time() + timeout
        while True:
            tasks = [conn._task for conn in self.connections if conn._task is not None]
            arriving = any(conn._in_message and not conn.closed for conn in self.connections)
            if not tasks and not arriving:
                break
            left = deadline - self.loop.time()
            if left <= 0:
                for task in tasks:
                    task.cancel()
                if tasks:
                    await asyncio.wait(tasks, timeout=1.0)
                break
            if tasks:
                await asyncio.wait(tasks, timeout=min(left, 0.05) if arriving else left)
            else:
                await asyncio.sleep(min(left, 0.05))
        for conn in list(self.connections):
            conn._close()
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 1.0)
        if self._started:
            for hook in self.app.on_cleanup:
                await hook(self.app)


def run(app: App, *, host: str, port: int, shutdown_timeout: float, loop: asyncio.AbstractEventLoop) -> None:
    """Serve ``app`` until SIGINT or SIGTERM, then stop gracefully (``Server.stop``)."""

    async def main() -> None:
        server = Server(app)
        stop = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        try:
            await server.start(host, port)
            await stop.wait()
        finally:
            await server.stop(shutdown_timeout)

    try:
        loop.run_until_complete(main())
    finally:
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()
