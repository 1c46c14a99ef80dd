"""The gateway's HTTP/1.1 server: an asyncio protocol per connection over the ``httptools`` parser.

Why not aiohttp's server: on the hot path it cost more CPU per request than the whole of tierwise's
routing (``bench/overhead.py``). This server does what the gateway needs and no more: whole request
bodies (bounded by ``max_body_bytes`` before they are read), keep-alive and pipelining, ``Expect:
100-continue``, streamed (chunked) answers with backpressure, idle and slow-header timeouts, and a
graceful stop that finishes the requests in flight and tells keep-alive clients to reconnect
(``Connection: close``) rather than dropping them.

Handlers take a ``Request`` and return a ``Response``, or write a ``StreamResponse`` and return it.
Errors a client causes at the HTTP level (a malformed request, a body over the limit, no such path)
are rendered by the route's ``error_response`` (the App's unless the route has its own), so they have
the same shape as every other error of that endpoint.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import signal
import time
from collections import deque
from collections.abc import Awaitable, Callable
from email.utils import formatdate
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qsl, unquote

import httptools
from multidict import CIMultiDict, CIMultiDictProxy, MultiDict, MultiDictProxy

from ..errors import RequestError, TierwiseError

log = logging.getLogger("tierwise.gateway")

Handler = Callable[["Request"], Awaitable["Response | StreamResponse"]]
Hook = Callable[["App"], Awaitable[None]]
ErrorShape = Callable[[BaseException], "Response"]  # an exception → the response that reports it

KEEPALIVE_S = 75.0  # an idle keep-alive connection is closed after this long
HEAD_TIMEOUT_S = 60.0  # a request's line and headers must arrive within this long of its first byte
MAX_HEAD_BYTES = 64 * 1024  # request line and headers together; more is a 431
_PIPELINE_DEPTH = 16  # requests read ahead on one connection before reading pauses
_LINGER_S = 2.0  # after a refused request, how long what the client still sends is read and dropped
_HIGH_WATER = 256 * 1024  # an unread body past this pauses reading (only until the handler runs)

_STATUS_LINES: dict[int, bytes] = {
    int(s): f"HTTP/1.1 {int(s)} {s.phrase}\r\n".encode() for s in HTTPStatus if s >= 200 or s == 100
}
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_BAD_HEADER_VALUE = re.compile(r"[\r\n\x00]")


def _status_line(status: int) -> bytes:
    line = _STATUS_LINES.get(status)
    return line if line is not None else f"HTTP/1.1 {status} Status {status}\r\n".encode()


class _Date:
    """The ``Date`` header's value, formatted once a second."""

    __slots__ = ("_second", "_value")

    def __init__(self) -> None:
        self._second = -1
        self._value = ""

    def __call__(self) -> str:
        now = int(time.time())
        if now != self._second:
            self._second = now
            self._value = formatdate(now, usegmt=True)
        return self._value


_date = _Date()


def _head(
    status: int,
    content_type: str | None,
    length: int | None,
    headers: dict[str, str] | None,
    *,
    keep_alive: bool,
    chunked: bool = False,
) -> bytes:
    """A response's status line and headers, encoded once."""
    lines = [f"Date: {_date()}\r\nServer: tierwise\r\n"]
    if content_type is not None:
        lines.append(f"Content-Type: {content_type}\r\n")
    if length is not None:
        lines.append(f"Content-Length: {length}\r\n")
    elif chunked:
        lines.append("Transfer-Encoding: chunked\r\n")
    if headers:
        for name, value in headers.items():
            if _BAD_HEADER_VALUE.search(value) or _BAD_HEADER_VALUE.search(name):
                raise ValueError(f"header {name[:40]!r}: a value may not hold CR, LF or NUL")
            lines.append(f"{name}: {value}\r\n")
    if not keep_alive:
        lines.append("Connection: close\r\n")
    lines.append("\r\n")
    return _status_line(status) + "".join(lines).encode()


class Request:
    """One request, its body read whole. ``app`` is the App (its state by ``request.app[key]``);
    ``match_info`` the ``{name}`` segments of the route's path."""

    __slots__ = (
        "_conn", "_query", "app", "body", "headers", "keep_alive", "match_info", "method", "path",
        "query_string", "version",
    )  # fmt: skip

    def __init__(
        self,
        app: App,
        method: str,
        path: str,
        query_string: str,
        headers: CIMultiDictProxy[str],
        body: bytes,
        version: str,
        keep_alive: bool,
    ) -> None:
        self.app = app
        self.method = method
        self.path = path
        self.query_string = query_string
        self.headers = headers
        self.body = body
        self.version = version
        self.keep_alive = keep_alive
        self.match_info: dict[str, str] = {}
        self._query: MultiDictProxy[str] | None = None
        self._conn: _Connection | None = None  # set by the connection that read it

    @property
    def query(self) -> MultiDictProxy[str]:
        """The query string's parameters (later values of a name are kept beside the first)."""
        if self._query is None:
            self._query = MultiDictProxy(MultiDict(parse_qsl(self.query_string, keep_blank_values=True)))
        return self._query

    @property
    def content_length(self) -> int | None:
        value = self.headers.get("Content-Length")
        return int(value) if value is not None and value.isdigit() else None

    async def read(self) -> bytes:
        return self.body

    async def json(self) -> Any:
        """The body parsed as JSON (ValueError if it is not)."""
        import orjson

        return orjson.loads(self.body)


class Response:
    """A whole response: status, body bytes, content type and extra headers."""

    __slots__ = ("body", "content_type", "headers", "status")

    def __init__(
        self,
        body: bytes = b"",
        *,
        status: int = 200,
        content_type: str | None = "application/json",
        headers: dict[str, str] | None = None,
    ) -> None:
        self.body = body
        self.status = status
        self.content_type = content_type
        self.headers = headers


class StreamResponse:
    """A response whose body is written as it is produced: ``prepare`` makes the head, ``write``
    sends a piece (waiting while the client reads slowly), ``write_eof`` the last piece and the end.
    The head goes out with the first piece, in the same write: the gateway prepares a stream when its
    first piece is ready, and a system call less per stream is worth it.

    Chunked to an HTTP/1.1 client; to an HTTP/1.0 client the body ends when the connection closes.
    A write after the client went away raises ConnectionResetError."""

    __slots__ = ("_chunked", "_conn", "_ended", "_head", "headers", "status")

    def __init__(self, *, status: int = 200, headers: dict[str, str] | None = None) -> None:
        self.status = status
        self.headers = dict(headers or {})
        self._conn: _Connection | None = None
        self._chunked = True
        self._ended = False
        self._head = b""  # made by prepare, not sent yet

    async def prepare(self, request: Request) -> None:
        conn = request._conn
        assert conn is not None, "a request read by the server"
        self._conn = conn
        self._chunked = request.version != "1.0"
        if not self._chunked or conn.closing:
            conn.keep_alive = False
        content_type = self.headers.pop("Content-Type", None)
        self._head = _head(
            self.status, content_type, None, self.headers, keep_alive=conn.keep_alive, chunked=self._chunked
        )
        conn.response_started = True

    async def write(self, data: bytes) -> None:
        conn = self._conn
        assert conn is not None, "prepare() first"
        if not data:
            return
        piece = b"%x\r\n%b\r\n" % (len(data), data) if self._chunked else data
        if self._head:
            piece, self._head = self._head + piece, b""
        conn.write(piece)
        await conn.drain()

    async def write_eof(self, data: bytes = b"") -> None:
        conn = self._conn
        assert conn is not None, "prepare() first"
        if self._ended:
            return
        self._ended = True
        if self._chunked:
            piece = b"%x\r\n%b\r\n0\r\n\r\n" % (len(data), data) if data else b"0\r\n\r\n"
        else:
            piece = data
        if self._head:
            piece, self._head = self._head + piece, b""
        if piece:
            conn.write(piece)
        await conn.drain()


class App:
    """The routes, the shared state (``app[key]``), the start and stop hooks, the body limit and how
    an error becomes a response."""

    def __init__(
        self,
        *,
        max_body_bytes: int,
        error_response: ErrorShape,
    ) -> None:
        self.max_body_bytes = max_body_bytes
        self.error_response = error_response
        self.on_startup: list[Hook] = []
        self.on_shutdown: list[Hook] = []
        self.on_cleanup: list[Hook] = []
        self._state: dict[Any, Any] = {}
        self._exact: dict[str, dict[str, Handler]] = {}
        self._patterns: list[tuple[re.Pattern[str], dict[str, Handler]]] = []
        self._error_shapes: dict[str, ErrorShape] = {}  # by exact path

    def __getitem__(self, key: Any) -> Any:
        return self._state[key]

    def __setitem__(self, key: Any, value: Any) -> None:
        self._state[key] = value

    def get(self, key: Any, default: Any = None) -> Any:
        return self._state.get(key, default)

    def add_route(
        self,
        method: str,
        path: str,
        handler: Handler,
        *,
        error_response: ErrorShape | None = None,
    ) -> None:
        """``path`` may hold ``{name}`` segments, matched to one path segment each. ``error_response``:
        how this path's errors read when the server refuses a request before its handler runs (a
        body over the limit, a malformed request); exact paths only."""
        if error_response is not None:
            assert "{" not in path, "an error shape belongs to an exact path"
            self._error_shapes[path] = error_response
        if "{" not in path:
            self._exact.setdefault(path, {})[method] = handler
            return
        pattern = re.compile("^" + re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[^/]+)", re.escape(path)) + "$")
        for existing, methods in self._patterns:
            if existing.pattern == pattern.pattern:
                methods[method] = handler
                return
        self._patterns.append((pattern, {method: handler}))

    def add_get(self, path: str, handler: Handler) -> None:
        self.add_route("GET", path, handler)

    def add_post(self, path: str, handler: Handler, *, error_response: ErrorShape | None = None) -> None:
        self.add_route("POST", path, handler, error_response=error_response)

    def add_delete(self, path: str, handler: Handler) -> None:
        self.add_route("DELETE", path, handler)

    def error_shape(self, path: str | None) -> ErrorShape:
        """How a refusal of a request for ``path`` reads (None: the path is not known yet)."""
        return self._error_shapes.get(path, self.error_response) if path else self.error_response

    def resolve(self, request: Request) -> Handler:
        """The handler of the request's method and path (RequestError 404 / 405 when there is none)."""
        methods = self._exact.get(request.path)
        if methods is None:
            for pattern, candidate in self._patterns:
                match = pattern.match(request.path)
                if match is not None:
                    request.match_info = {k: unquote(v) for k, v in match.groupdict().items()}
                    methods = candidate
                    break
            else:
                raise RequestError(f"{request.path[:200]}: no such endpoint", status=404, code="not_found")
        method = "GET" if request.method == "HEAD" else request.method
        handler = methods.get(method)
        if handler is None:
            raise RequestError(f"{request.method} {request.path[:200]}: method not allowed", status=405)
        return handler

    async def handle(self, request: Request) -> Response | StreamResponse:
        try:
            return await self.resolve(request)(request)
        except TierwiseError as exc:
            return self.error_response(exc)
        except Exception:
            log.exception("unhandled error serving %s %s", request.method, request.path[:200])
            return self.error_response(RuntimeError())


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
        self._server.in_flight += 1
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
        finally:
            self._server.in_flight -= 1
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
            head = _head(
                response.status,
                response.content_type,
                len(body),
                response.headers,
                keep_alive=self.keep_alive,
            )
        except ValueError:
            log.exception("a response header could not be written")
            head = _head(500, "application/json", 0, None, keep_alive=False)
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
        self.in_flight = 0
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
