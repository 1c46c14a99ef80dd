"""What the gateway's handlers see of HTTP: the ``Request`` they get, the ``Response`` or
``StreamResponse`` they answer with, and the ``App`` that holds the routes, the shared state, the
start and stop hooks and how an error becomes a response. ``server.py`` reads requests off the
connections and writes these responses; ``response_head`` encodes a response's status line and
headers for it.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Awaitable, Callable
from email.utils import formatdate
from http import HTTPStatus
from typing import Any, Protocol
from urllib.parse import parse_qsl, unquote

import orjson
from multidict import CIMultiDictProxy, MultiDict, MultiDictProxy

from ..errors import RequestError, TierwiseError

log = logging.getLogger("tierwise.gateway")

Handler = Callable[["Request"], Awaitable["Response | StreamResponse"]]
Hook = Callable[["App"], Awaitable[None]]
ErrorShape = Callable[[BaseException], "Response"]  # an exception → the response that reports it


class Connection(Protocol):
    """What a StreamResponse needs of the connection that read its request (server.py's)."""

    keep_alive: bool
    closing: bool
    response_started: bool

    def write(self, data: bytes) -> None: ...

    async def drain(self) -> None: ...


_STATUS_LINES: dict[int, bytes] = {
    int(s): f"HTTP/1.1 {int(s)} {s.phrase}\r\n".encode() for s in HTTPStatus if s >= 200 or s == 100
}
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


def response_head(
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
        self._conn: Connection | None = None  # set by the connection that read it

    @property
    def query(self) -> MultiDictProxy[str]:
        """The query string's parameters (later values of a name are kept beside the first)."""
        if self._query is None:
            self._query = MultiDictProxy(MultiDict(parse_qsl(self.query_string, keep_blank_values=True)))
        return self._query

    async def json(self) -> Any:
        """The body parsed as JSON (ValueError if it is not)."""
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
        self._conn: Connection | None = None
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
        self._head = response_head(
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
