"""A lean pooled HTTP/1.1 client for the upstream calls, shared by every adapter of a Router.

One ``asyncio.Protocol`` per connection parses answers with ``httptools``; a request is written in one
``transport.write`` (head and Content-Length body). Connections are kept per origin (scheme, host,
port), reused last-in first-out while they stay alive, and bounded in total by ``limit``; an answer
not read to its end closes its connection. Timeouts are loop timers armed around each wait.

``HttpPool`` binds lazily to the running loop, so building a Router does no I/O and needs no loop.
Failures are this module's own classes (``ConnectError``, ``Disconnected``, ``PayloadError`` …, and
``TimeoutError`` subclasses), translated into the ProviderError tree by ``providers/_http.py``.
"""

from __future__ import annotations

import asyncio
import re
import ssl
import zlib
from base64 import b64encode
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from urllib.parse import unquote, urlsplit

import httptools

__all__ = [
    "ClientError",
    "ConnectError",
    "ConnectTimeout",
    "Disconnected",
    "Endpoint",
    "Headers",
    "HttpPool",
    "PayloadError",
    "ProtocolError",
    "ReadTimeout",
    "Response",
]

HIGH_WATER = 256 * 1024  # buffered answer bytes past which the socket is not read until consumed
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_FRAMED_BY_US = frozenset({"content-length", "transfer-encoding"})
_DECODED = frozenset({b"gzip", b"x-gzip", b"deflate"})


# -- errors ---------------------------------------------------------------------------------------


class ClientError(Exception):
    """Base of this client's errors other than timeouts (which are ``TimeoutError``s)."""


class ConnectError(ClientError, OSError):
    """No connection to ``host``:``port``; ``os_error`` is the socket's (or TLS handshake's) error."""

    def __init__(self, host: str, port: int, os_error: OSError) -> None:
        super().__init__(os_error.errno, os_error.strerror)
        self.host = host
        self.port = port
        self.os_error = os_error

    def __str__(self) -> str:
        return f"cannot connect to {self.host}:{self.port}: {self.os_error.strerror or self.os_error}"


class ConnectTimeout(ClientError, TimeoutError):
    """No connection (or no free slot in the pool) within the connect timeout."""


class ReadTimeout(ClientError, TimeoutError):
    """The server sent nothing for longer than the read timeout."""


class Disconnected(ClientError):
    """The server closed the connection before the answer's headers were complete."""


class PayloadError(ClientError):
    """The answer's body is broken: cut off before its end, badly framed, or badly compressed."""


class ProtocolError(ClientError):
    """The answer is not valid HTTP/1.x."""


# -- requests -------------------------------------------------------------------------------------


def _checked(text: str, what: str) -> str:
    # Header injection: a CR or LF would let a value start a header (or a request) of its own.
    # The value is not quoted back: it may be an API key.
    if "\r" in text or "\n" in text or "\0" in text:
        raise ValueError(f"{what}: CR, LF and NUL are not allowed in an HTTP request head")
    return text


class Endpoint:
    """A request target prepared once: its origin and the request head up to the Content-Length.

    ``headers`` are the fixed headers of every request (they replace ``User-Agent: tierwise`` and
    ``Accept-Encoding: gzip, deflate`` when they name them). Raises ValueError for a URL that is not
    http(s) or for a header that could inject another (CR, LF, NUL, or a name that is not a token).
    """

    __slots__ = ("head", "host", "key", "port", "tls", "url")

    def __init__(self, url: str, headers: Mapping[str, str], *, method: str = "POST") -> None:
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme not in ("http", "https") or not parts.hostname:
            # Scheme and host only: the URL's user information may hold a password.
            raise ValueError(f"{scheme}://{parts.hostname or ''}…: not an http(s):// URL with a host")
        if not _TOKEN.fullmatch(method):
            raise ValueError(f"{method!r}: not an HTTP method")
        self.url = url
        self.tls = scheme == "https"
        self.host = parts.hostname
        default_port = 443 if self.tls else 80
        self.port = parts.port or default_port
        self.key = (scheme, self.host, self.port)
        target = _checked((parts.path or "/") + (f"?{parts.query}" if parts.query else ""), "URL")
        if " " in target:
            raise ValueError(f"{target!r}: a space in the URL's path (percent-encode it)")
        host = f"[{self.host}]" if ":" in self.host else self.host
        fields = {
            "host": ("Host", host if self.port == default_port else f"{host}:{self.port}"),
            "user-agent": ("User-Agent", "tierwise"),
            "accept-encoding": ("Accept-Encoding", "gzip, deflate"),
        }
        if parts.username is not None and not any(name.lower() == "authorization" for name in headers):
            # Credentials in the URL mean Basic authentication, as other clients read them.
            userinfo = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
            fields["authorization"] = ("Authorization", f"Basic {b64encode(userinfo.encode()).decode()}")
        for name, value in headers.items():
            if not _TOKEN.fullmatch(name):
                raise ValueError(f"header {name!r}: not a valid header name")
            if name.lower() in _FRAMED_BY_US:
                raise ValueError(f"header {name!r}: set by the HTTP client itself")
            fields[name.lower()] = (name, _checked(value, f"header {name}"))
        lines = [f"{method} {target} HTTP/1.1", *(f"{name}: {value}" for name, value in fields.values())]
        self.head = ("\r\n".join(lines) + "\r\nContent-Length: ").encode()

    def __repr__(self) -> str:
        return f"Endpoint({self.url!r})"


# -- answers --------------------------------------------------------------------------------------


class Headers(Mapping[str, str]):
    """An answer's headers; lookups ignore case. A repeated header's values are joined by ", "."""

    __slots__ = ("_by_name",)

    def __init__(self, raw: list[tuple[bytes, bytes]]) -> None:
        by_name: dict[str, str] = {}
        for name, value in raw:
            key = name.decode("latin-1").lower()
            text = value.decode("latin-1")
            by_name[key] = f"{by_name[key]}, {text}" if key in by_name else text
        self._by_name = by_name

    def __getitem__(self, name: str) -> str:
        return self._by_name[name.lower()]

    def get(self, name: str, default: str | None = None) -> str | None:  # type: ignore[override]
        return self._by_name.get(name.lower(), default)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._by_name

    def __iter__(self) -> Iterator[str]:
        return iter(self._by_name)

    def __len__(self) -> int:
        return len(self._by_name)

    def __repr__(self) -> str:
        return f"Headers({self._by_name!r})"


class Response:
    """An answer whose status and headers have arrived; its body is read with ``read`` or ``readany``.

    Reads wait at most ``read_timeout`` seconds of silence, and not past ``deadline`` (loop time),
    both set by the request and changed by ``set_timeouts``. Reading the body to its end gives the
    connection back to the pool; a caller that stops early must call ``close`` (``release`` does
    the right thing either way).
    """

    __slots__ = (
        "_body",
        "_chunks",
        "_complete",
        "_conn",
        "_decoder",
        "_encoding",
        "_error",
        "_framed",
        "_headers",
        "_headers_done",
        "_raw",
        "_size",
        "_whole",
        "content_type",
        "deadline",
        "read_timeout",
        "status",
    )

    def __init__(self, conn: _Connection, read_timeout: float | None, deadline: float | None) -> None:
        self._conn: _Connection | None = conn
        self.read_timeout = read_timeout
        self.deadline = deadline
        self.status = 0
        self.content_type = ""  # the media type, lower case, without parameters
        self._raw: list[tuple[bytes, bytes]] = []
        self._headers: Headers | None = None
        self._headers_done = False
        self._framed = False  # Content-Length or chunked: else the body ends when the connection does
        self._encoding = b""
        self._decoder: zlib._Decompress | None = None
        self._chunks: list[bytes] = []
        self._size = 0
        self._complete = False
        self._whole = False  # read() wants the whole body: no flow control
        self._error: BaseException | None = None
        self._body: bytes | None = None

    @property
    def headers(self) -> Headers:
        if self._headers is None:
            self._headers = Headers(self._raw)
        return self._headers

    def set_timeouts(self, *, read: float | None, total: float | None) -> None:
        """The limits of the reads that follow: ``read`` the longest silence, ``total`` from now."""
        self.read_timeout = read
        self.deadline = None if total is None else asyncio.get_running_loop().time() + total

    async def read(self) -> bytes:
        """The whole (decoded) body; then the connection goes back to the pool."""
        if self._body is not None:
            return self._body
        self._whole = True
        conn = self._conn
        if conn is not None and conn.paused:
            conn.resume()
        while not self._complete:
            if self._error is not None:
                raise self._error
            if conn is None:
                raise ClientError("the answer was closed before its body was read")
            await conn.wait(self)
        chunks = self._chunks
        body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        self._chunks = []
        self._body = body
        self.release()
        return body

    async def readany(self) -> bytes:
        """The (decoded) body bytes that arrived since the last call, waiting for some; b"" at the end."""
        while True:
            chunks = self._chunks
            if chunks:
                self._chunks = []
                self._size = 0
                conn = self._conn
                if conn is not None and conn.paused:
                    conn.resume()
                return chunks[0] if len(chunks) == 1 else b"".join(chunks)
            if self._complete:
                self.release()
                return b""
            if self._error is not None:
                raise self._error
            if self._conn is None:
                raise ClientError("the answer was closed before its body was read")
            await self._conn.wait(self)

    def release(self) -> None:
        """Give the connection back to the pool if the body was read to its end, else close it."""
        conn = self._conn
        if conn is not None:
            self._conn = None
            conn.finish(self._complete)

    def close(self) -> None:
        """Close the connection (an abandoned body cannot be skipped over to reuse it)."""
        conn = self._conn
        if conn is not None:
            self._conn = None
            conn.finish(False)

    # -- fed by the connection's parser -----------------------------------------------------------

    def _feed_body(self, data: bytes) -> None:
        if self._encoding:
            data = self._decode(data)
            if not data:
                return
        self._chunks.append(data)
        self._size += len(data)

    def _decode(self, data: bytes) -> bytes:
        decoder = self._decoder
        if decoder is None:
            if self._encoding == b"deflate" and not _zlib_wrapped(data):
                wbits = -zlib.MAX_WBITS  # raw deflate, as some servers send it
            else:
                wbits = 16 + zlib.MAX_WBITS if self._encoding != b"deflate" else zlib.MAX_WBITS
            decoder = self._decoder = zlib.decompressobj(wbits)
        try:
            return decoder.decompress(data)
        except zlib.error as exc:
            raise PayloadError(f"cannot decode the {self._encoding.decode()} body: {exc}") from exc

    def _finish_body(self) -> None:
        if self._decoder is not None:
            try:
                tail = self._decoder.flush()
            except zlib.error as exc:
                raise PayloadError(f"cannot decode the {self._encoding.decode()} body: {exc}") from exc
            if tail:
                self._chunks.append(tail)
        self._complete = True


def _zlib_wrapped(data: bytes) -> bool:
    """Whether a deflate body starts with a zlib header (RFC 1950) rather than raw deflate data."""
    if not data or data[0] & 0x0F != 8 or data[0] >> 4 > 7:
        return False
    return len(data) < 2 or ((data[0] << 8) | data[1]) % 31 == 0


# -- connections ----------------------------------------------------------------------------------


def _expire(waiter: asyncio.Future[None], error: type[BaseException]) -> None:
    if not waiter.done():
        waiter.set_exception(error())


class _Connection(asyncio.Protocol):
    """One keep-alive connection: writes requests, parses answers into the current Response."""

    def __init__(self, pool: _Pool, key: tuple[str, str, int]) -> None:
        self.pool = pool
        self.key = key
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.response: Response | None = None
        self.waiter: asyncio.Future[None] | None = None
        self.reusable = False  # the last answer ended cleanly and allows another request
        self.closed = False
        self.paused = False
        self.idle_since = 0.0

    # -- driven by the pool and the Response ------------------------------------------------------

    def send(self, head: bytes, body: bytes, response: Response) -> None:
        self.response = response
        self.reusable = False
        assert self.transport is not None
        self.transport.write(b"".join((head, b"%d\r\n\r\n" % len(body), body)))

    async def wait(self, response: Response) -> None:
        """Wait for the parser to make progress on ``response``, within its timeouts."""
        loop = self.pool.loop
        waiter = self.waiter = loop.create_future()
        timer = None
        deadline = response.deadline
        if response.read_timeout is not None:
            at = loop.time() + response.read_timeout
            if deadline is not None and deadline <= at:
                timer = loop.call_at(deadline, _expire, waiter, TimeoutError)
            else:
                timer = loop.call_at(at, _expire, waiter, ReadTimeout)
        elif deadline is not None:
            timer = loop.call_at(deadline, _expire, waiter, TimeoutError)
        try:
            await waiter
        finally:
            self.waiter = None
            if timer is not None:
                timer.cancel()

    def _wake(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def resume(self) -> None:
        self.paused = False
        if self.transport is not None and not self.closed:
            self.transport.resume_reading()

    def finish(self, complete: bool) -> None:
        """The Response is done with this connection: back to the pool, or closed."""
        self.response = None
        if complete and self.reusable and not self.closed and not self.transport.is_closing():  # type: ignore[union-attr]
            if self.paused:
                self.resume()  # an idle connection must still notice the server closing it
            self.pool.put_idle(self)
        else:
            self.pool.discard(self)

    def abort(self) -> None:
        if not self.closed:
            self.closed = True
            if self.transport is not None:
                self.transport.abort()  # immediate: nothing left to send, and no TLS goodbye to wait for

    # -- asyncio.Protocol ---------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        response = self.response
        if response is None or response._complete:
            # Bytes nobody asked for: the connection is out of step, and cannot carry another request.
            self.reusable = False
            if response is None:
                self.pool.discard(self)
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserCallbackError as exc:
            cause = exc.__context__
            if isinstance(cause, _Surplus):
                self.reusable = False  # bytes after the end of the answer: out of step
                return
            self._fail(cause if isinstance(cause, ClientError) else ProtocolError(str(cause or exc)))
        except httptools.HttpParserError as exc:
            if response._headers_done:
                self._fail(PayloadError(f"the body is not valid HTTP framing: {exc}"))
            else:
                self._fail(ProtocolError(f"the answer is not valid HTTP/1.1: {exc}"))

    def eof_received(self) -> bool:
        self._ended(None)
        return False  # the transport closes itself

    def connection_lost(self, exc: Exception | None) -> None:
        self.pool.lost(self)
        self.closed = True
        self._ended(exc)

    def pause_writing(self) -> None:
        pass  # the request is one write; the answer cannot come before it is sent anyway

    def resume_writing(self) -> None:
        pass

    def _ended(self, exc: Exception | None) -> None:
        """The server's side of the connection ended: finish or fail the answer being read."""
        self.reusable = False
        response = self.response
        if response is None or response._complete or response._error is not None:
            return
        if response._headers_done and not response._framed and exc is None:
            self._settle(response._finish_body)  # the body ran until the connection's end: complete
        elif response._headers_done:
            self._fail(PayloadError("the connection closed before the body's end"))
        elif exc is not None and isinstance(exc, OSError):
            self._fail(exc)
        else:
            self._fail(Disconnected("the server closed the connection before answering"))

    def _settle(self, step: Callable[[], None]) -> None:
        try:
            step()
        except ClientError as exc:
            self._fail(exc)
            return
        self._wake()

    def _fail(self, error: BaseException) -> None:
        response = self.response
        if response is not None and response._error is None:
            response._error = error
        self.reusable = False
        self.abort()
        self._wake()

    # -- httptools callbacks ------------------------------------------------------------------------

    def on_message_begin(self) -> None:
        if self.response is None or self.response._complete:
            raise _Surplus

    # The parser calls back only while ``data_received`` has checked that a response is being read.

    def on_header(self, name: bytes, value: bytes) -> None:
        response: Response = self.response  # type: ignore[assignment]
        response._raw.append((name, value))
        size = len(name)
        # Only four names matter while parsing; their lengths spare lowering every other name.
        if size < 12 or size > 17:
            return
        if size == 12 and name.lower() == b"content-type":
            response.content_type = value.partition(b";")[0].strip().lower().decode("latin-1")
        elif size == 14 and name.lower() == b"content-length":
            response._framed = True
        elif size == 16 and name.lower() == b"content-encoding":
            encoding = value.strip().lower()
            response._encoding = encoding if encoding in _DECODED else b""
        elif size == 17 and name.lower() == b"transfer-encoding":
            response._framed = response._framed or b"chunked" in value.lower()

    def on_headers_complete(self) -> None:
        response: Response = self.response  # type: ignore[assignment]
        status = self.parser.get_status_code()
        response.status = status
        if status >= 200:
            response._headers_done = True
            if status in (204, 304):
                response._framed = True  # no body, whatever the headers say
            self._wake()

    def on_body(self, body: bytes) -> None:
        response: Response = self.response  # type: ignore[assignment]
        response._feed_body(body)  # a PayloadError raised here comes back through feed_data
        if response._size > HIGH_WATER and not response._whole and not self.paused:
            self.paused = True
            self.transport.pause_reading()  # type: ignore[union-attr]
        self._wake()

    def on_message_complete(self) -> None:
        response: Response = self.response  # type: ignore[assignment]
        if response.status < 200:
            # An informational answer (103 Early Hints …): the real one follows on the same connection.
            response._raw = []
            response.content_type = ""
            response._framed = False
            response._encoding = b""
            return
        response._finish_body()
        self.reusable = self.parser.should_keep_alive()
        self._wake()


class _Surplus(Exception):
    """Raised by the parser callback when a second answer starts where none was asked for."""


# -- the pool -------------------------------------------------------------------------------------


class _Pool:
    """The connections of one HttpPool in one event loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop, limit: int, keepalive_s: float) -> None:
        self.loop = loop
        self.limit = limit
        self.keepalive_s = keepalive_s
        self.idle: dict[tuple[str, str, int], list[_Connection]] = {}
        self.open: set[_Connection] = set()
        self.connecting = 0
        self.waiters: deque[asyncio.Future[None]] = deque()
        self.sweeper: asyncio.TimerHandle | None = None

    async def acquire(
        self, endpoint: Endpoint, ssl_context: ssl.SSLContext | None, at: float, late: type[BaseException]
    ) -> _Connection:
        """A live connection to the endpoint's origin: an idle one, else a new one within ``at``."""
        while True:
            idle = self.idle.get(endpoint.key)
            if idle:
                stale = self.loop.time() - self.keepalive_s
                while idle:
                    conn = idle.pop()
                    if conn.idle_since > stale and not conn.closed and not conn.transport.is_closing():  # type: ignore[union-attr]
                        return conn
                    self.discard(conn)
            if len(self.open) + self.connecting < self.limit or self._evict():
                return await self._connect(endpoint, ssl_context, at, late)
            await self._wait_for_room(at, late)

    async def _connect(
        self, endpoint: Endpoint, ssl_context: ssl.SSLContext | None, at: float, late: type[BaseException]
    ) -> _Connection:
        conn: _Connection | None = None
        self.connecting += 1
        try:
            async with asyncio.timeout_at(at):
                _, conn = await self.loop.create_connection(
                    lambda: _Connection(self, endpoint.key),
                    endpoint.host,
                    endpoint.port,
                    ssl=ssl_context,
                    server_hostname=endpoint.host if ssl_context is not None else None,
                )
        except TimeoutError:
            raise late() from None
        except OSError as exc:
            raise ConnectError(endpoint.host, endpoint.port, exc) from exc
        finally:
            self.connecting -= 1
            if conn is None or conn.closed:
                self._wake_one()  # the slot this attempt held is free again
        if conn.closed:  # lost between the handshake and now
            raise Disconnected("the server closed the connection before answering")
        self.open.add(conn)
        return conn

    def _evict(self) -> bool:
        """Close the longest-idle connection of any origin, to make room for a new one."""
        oldest: list[_Connection] | None = None
        for idle in self.idle.values():
            if idle and (oldest is None or idle[0].idle_since < oldest[0].idle_since):
                oldest = idle
        if oldest is None:
            return False
        self.discard(oldest.pop(0))
        return True

    async def _wait_for_room(self, at: float, late: type[BaseException]) -> None:
        waiter = self.loop.create_future()
        self.waiters.append(waiter)
        timer = self.loop.call_at(at, _expire, waiter, late)
        try:
            await waiter
        except BaseException:
            if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                self._wake_one()  # woken, then cancelled: the room goes to the next in line
            raise
        finally:
            timer.cancel()
            if not waiter.done():
                waiter.cancel()  # skipped by _wake_one

    def _wake_one(self) -> None:
        while self.waiters:
            waiter = self.waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    def put_idle(self, conn: _Connection) -> None:
        conn.idle_since = self.loop.time()
        self.idle.setdefault(conn.key, []).append(conn)
        if self.sweeper is None:
            self.sweeper = self.loop.call_at(conn.idle_since + self.keepalive_s, self._sweep)
        self._wake_one()

    def discard(self, conn: _Connection) -> None:
        conn.abort()
        self.lost(conn)

    def lost(self, conn: _Connection) -> None:
        """``conn`` is closed (by us or by the server): it leaves the pool and makes room."""
        if conn not in self.open:
            return
        self.open.discard(conn)
        idle = self.idle.get(conn.key)
        if idle and conn in idle:
            idle.remove(conn)
        self._wake_one()

    def _sweep(self) -> None:
        """Close the connections idle for ``keepalive_s``; run again when the next one will be."""
        self.sweeper = None
        stale = self.loop.time() - self.keepalive_s
        due: float | None = None
        for idle in self.idle.values():
            while idle and idle[0].idle_since <= stale:
                self.discard(idle[0])
            if idle and (due is None or idle[0].idle_since < due):
                due = idle[0].idle_since
        if due is not None:
            self.sweeper = self.loop.call_at(due + self.keepalive_s, self._sweep)

    def close(self) -> None:
        if self.sweeper is not None:
            self.sweeper.cancel()
            self.sweeper = None
        for conn in list(self.open):
            self.discard(conn)
        while self.waiters:
            waiter = self.waiters.popleft()
            if not waiter.done():
                waiter.set_exception(ClientError("the HTTP pool was closed"))


class HttpPool:
    """The pooled HTTP/1.1 client shared by the adapters: at most ``limit`` connections in all,
    kept alive ``keepalive_s`` seconds when idle. ``ssl_context`` defaults to the system's CAs."""

    def __init__(
        self, *, limit: int = 1000, keepalive_s: float = 30.0, ssl_context: ssl.SSLContext | None = None
    ) -> None:
        if limit < 1:
            raise ValueError(f"limit: at least 1 connection, got {limit}")
        self._limit = limit
        self._keepalive_s = keepalive_s
        self._ssl_context = ssl_context
        self._pool: _Pool | None = None

    def _bound(self) -> _Pool:
        loop = asyncio.get_running_loop()
        pool = self._pool
        if pool is None or pool.loop is not loop:
            # First use, or a new loop: the old loop's connections cannot be used (nor closed) here.
            pool = self._pool = _Pool(loop, self._limit, self._keepalive_s)
        return pool

    def _tls(self) -> ssl.SSLContext:
        if self._ssl_context is None:
            self._ssl_context = ssl.create_default_context()  # loads the CA store: once, when first needed
        return self._ssl_context

    async def request(
        self,
        endpoint: Endpoint,
        body: bytes,
        *,
        connect_timeout: float,
        read_timeout: float | None = None,
        total_timeout: float | None = None,
    ) -> Response:
        """Send ``body`` to ``endpoint`` and return the Response once its headers have arrived.

        ``connect_timeout`` bounds getting a connection (a free slot included), ``read_timeout`` every
        silence of the server, ``total_timeout`` everything from now (the body's reads too, unless the
        caller changes them with ``Response.set_timeouts``). Never retried: a POST may not be
        idempotent.
        """
        pool = self._bound()
        now = pool.loop.time()
        deadline = None if total_timeout is None else now + total_timeout
        at = now + connect_timeout
        late: type[BaseException] = ConnectTimeout
        if deadline is not None and deadline < at:
            at, late = deadline, TimeoutError
        conn = await pool.acquire(endpoint, self._tls() if endpoint.tls else None, at, late)
        response = Response(conn, read_timeout, deadline)
        conn.send(endpoint.head, body, response)
        try:
            while not response._headers_done:
                if response._error is not None:
                    raise response._error
                await conn.wait(response)
        except BaseException:
            response.close()
            raise
        return response

    async def aclose(self) -> None:
        """Close every connection, idle or in use; the pool can be used again afterwards."""
        pool = self._pool
        self._pool = None
        if pool is not None:
            pool.close()
            await asyncio.sleep(0)  # let the transports' connection_lost run before the loop may close
