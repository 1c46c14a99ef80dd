"""The pooled HTTP/1.1 client against raw servers on 127.0.0.1 that write scripted bytes."""

from __future__ import annotations

import asyncio
import gzip
import re
import ssl
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Self

import pytest
import trustme

from tierwise.http import (
    ConnectError,
    ConnectTimeout,
    Disconnected,
    Endpoint,
    HttpPool,
    PayloadError,
    ReadTimeout,
)

Script = Callable[[asyncio.StreamWriter, int], Awaitable[None]]
OK = b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 12\r\n\r\n{"ok": true}'


class RawServer:
    """Answers every request with ``script(writer, index)``; counts connections and records requests."""

    def __init__(self, script: Script, *, tls: ssl.SSLContext | None = None) -> None:
        self.script = script
        self.tls = tls
        self.accepts = 0
        self.open = 0
        self.max_open = 0
        self.requests: list[tuple[bytes, bytes]] = []
        self.closed_by_client = 0  # connections the client ended while idle
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[object]] = set()

    async def __aenter__(self) -> Self:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self.tls)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=1.0)

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}/v1/things?x=1"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self.accepts += 1
        self.open += 1
        self.max_open = max(self.max_open, self.open)
        self._writers.add(writer)
        try:
            while not writer.is_closing():
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    self.closed_by_client += 1
                    return
                length = re.search(rb"(?i)content-length: (\d+)", head)
                body = await reader.readexactly(int(length.group(1))) if length else b""
                self.requests.append((head, body))
                await self.script(writer, len(self.requests) - 1)
        finally:
            self.open -= 1
            self._writers.discard(writer)
            writer.transport.abort()


def answer(raw: bytes, *, close: bool = False, delay_s: float = 0.0) -> Script:
    async def script(writer: asyncio.StreamWriter, index: int) -> None:
        if delay_s:
            await asyncio.sleep(delay_s)
        writer.write(raw)
        await writer.drain()
        if close:
            writer.transport.close()

    return script


def content_length(body: bytes, *headers: str) -> bytes:
    lines = "".join(f"{h}\r\n" for h in headers)
    return f"HTTP/1.1 200 OK\r\n{lines}Content-Length: {len(body)}\r\n\r\n".encode() + body


@pytest.fixture
async def pool() -> AsyncIterator[HttpPool]:
    pool = HttpPool()
    yield pool
    await pool.aclose()


async def fetch(pool: HttpPool, url: str, body: bytes = b'{"q": 1}', **timeouts: float) -> tuple[int, bytes]:
    limits = {"connect_timeout": 1.0, "total_timeout": 2.0} | timeouts
    resp = await pool.request(Endpoint(url, {"Content-Type": "application/json"}), body, **limits)
    try:
        return resp.status, await resp.read()
    finally:
        resp.close()


# -- the request on the wire -----------------------------------------------------------------------


async def test_one_write_with_host_fixed_headers_and_content_length(pool: HttpPool) -> None:
    async with RawServer(answer(OK)) as server:
        endpoint = Endpoint(server.url, {"Authorization": "Bearer k", "User-Agent": "custom"})
        resp = await pool.request(endpoint, b"hello", connect_timeout=1.0)
        assert (resp.status, await resp.read()) == (200, b'{"ok": true}')
    head, body = server.requests[0]
    assert head.startswith(b"POST /v1/things?x=1 HTTP/1.1\r\n")
    lines = head.decode().split("\r\n")
    assert f"Host: 127.0.0.1:{server.port}" in lines
    assert "Authorization: Bearer k" in lines
    assert "User-Agent: custom" in lines and "User-Agent: tierwise" not in lines
    assert "Accept-Encoding: gzip, deflate" in lines
    assert "Content-Length: 5" in lines
    assert body == b"hello"
    assert resp.headers["content-type"] == resp.headers.get("Content-Type") == "application/json"
    assert resp.content_type == "application/json"


def test_the_head_of_an_ipv6_origin_with_credentials() -> None:
    head = Endpoint("https://u%40x:p@[::1]:8443", {}).head.decode()
    assert head.startswith("POST / HTTP/1.1\r\nHost: [::1]:8443\r\n")
    assert "\r\nAuthorization: Basic dUB4OnA=\r\n" in head  # u@x:p
    assert head.endswith("\r\nContent-Length: ")


@pytest.mark.parametrize(
    ("url", "headers"),
    [
        ("http://h/", {"X-Evil": "a\r\nX-Injected: 1"}),
        ("http://h/", {"X-Evil": "a\nb"}),
        ("http://h/", {"X-Evil\r\nX-Injected": "1"}),
        ("http://h/", {"Bad Name": "1"}),
        ("http://h/", {"Content-Length": "3"}),
        ("http://h/a\r\nX: 1", {}),
        ("ftp://h/", {}),
        ("http:///nohost", {}),
    ],
)
def test_header_injection_and_bad_targets_are_refused_early(url: str, headers: dict[str, str]) -> None:
    with pytest.raises(ValueError) as info:
        Endpoint(url, headers)
    assert "X-Injected: 1" not in str(info.value)  # a value is never quoted back: it may be a key


# -- keep-alive ----------------------------------------------------------------------------------


async def test_sequential_calls_reuse_one_connection(pool: HttpPool) -> None:
    async with RawServer(answer(OK)) as server:
        for _ in range(20):
            assert await fetch(pool, server.url) == (200, b'{"ok": true}')
    assert server.accepts == 1


async def test_an_idle_connection_the_server_closed_is_not_used(pool: HttpPool) -> None:
    async with RawServer(answer(OK, close=True)) as server:  # says keep-alive, then hangs up
        assert await fetch(pool, server.url) == (200, b'{"ok": true}')
        await asyncio.sleep(0.05)  # the FIN arrives while the connection is idle
        assert await fetch(pool, server.url) == (200, b'{"ok": true}')
    assert server.accepts == 2


@pytest.mark.parametrize(
    "raw",
    [
        content_length(b"{}", "Connection: close"),
        b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\n{}",
    ],
)
async def test_an_answer_that_closes_is_not_reused(pool: HttpPool, raw: bytes) -> None:
    async with RawServer(answer(raw)) as server:
        for _ in range(3):
            assert await fetch(pool, server.url) == (200, b"{}")
    assert server.accepts == 3


async def test_an_answer_not_read_to_its_end_closes_its_connection(pool: HttpPool) -> None:
    async def late_body(writer: asyncio.StreamWriter, index: int) -> None:
        raw = content_length(b"x" * 1000)
        writer.write(raw[:-1000])
        await writer.drain()
        await asyncio.sleep(0.02)
        writer.write(raw[-1000:])

    async with RawServer(late_body) as server:
        resp = await pool.request(Endpoint(server.url, {}), b"", connect_timeout=1.0)
        resp.release()  # the body has not arrived: the connection cannot be reused
        assert await fetch(pool, server.url) == (200, b"x" * 1000)
    assert server.accepts == 2


async def test_idle_connections_are_closed_after_keepalive(pool: HttpPool) -> None:
    short = HttpPool(keepalive_s=0.05)
    async with RawServer(answer(OK)) as server:
        assert (await fetch(short, server.url))[0] == 200
        await asyncio.sleep(0.2)
        assert server.closed_by_client == 1
        assert (await fetch(short, server.url))[0] == 200
        await short.aclose()
    assert server.accepts == 2


async def test_limit_bounds_connections_and_waiters_queue() -> None:
    limited = HttpPool(limit=2)
    async with RawServer(answer(OK, delay_s=0.05)) as server:
        results = await asyncio.gather(*(fetch(limited, server.url) for _ in range(5)))
        await limited.aclose()
    assert results == [(200, b'{"ok": true}')] * 5
    assert server.accepts == 2 and server.max_open == 2


async def test_a_full_pool_past_the_connect_timeout_is_a_connect_timeout() -> None:
    limited = HttpPool(limit=1)
    async with RawServer(answer(OK, delay_s=0.3)) as server:
        first = asyncio.create_task(fetch(limited, server.url))
        await asyncio.sleep(0.01)
        with pytest.raises(ConnectTimeout):
            await fetch(limited, server.url, connect_timeout=0.05)
        assert (await first)[0] == 200
        await limited.aclose()


async def test_a_cancelled_request_closes_its_connection_and_frees_its_slot() -> None:
    single = HttpPool(limit=1)
    async with RawServer(answer(OK, delay_s=0.1)) as server:
        task = asyncio.create_task(fetch(single, server.url))
        await asyncio.sleep(0.02)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert (await fetch(single, server.url, connect_timeout=0.05))[0] == 200
        await single.aclose()
    assert server.accepts == 2


async def test_aclose_closes_every_connection(pool: HttpPool) -> None:
    async with RawServer(answer(OK)) as server:
        assert (await fetch(pool, server.url))[0] == 200
        await pool.aclose()
        await asyncio.sleep(0.02)
        assert server.closed_by_client == 1 and server.open == 0
        assert (await fetch(pool, server.url))[0] == 200  # usable again, with a new connection
    assert server.accepts == 2


# -- bodies ----------------------------------------------------------------------------------------


def chunked(*pieces: bytes) -> bytes:
    body = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces)
    return b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + body + b"0\r\n\r\n"


@pytest.mark.parametrize(
    ("raw", "reused"),
    [
        (content_length(b"hello world"), True),
        (chunked(b"hello", b" ", b"world"), True),
        (b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nhello world", False),  # ends at close
    ],
)
async def test_body_framings(pool: HttpPool, raw: bytes, reused: bool) -> None:
    close = b"Content-Length" not in raw and b"chunked" not in raw
    async with RawServer(answer(raw, close=close)) as server:
        assert await fetch(pool, server.url) == (200, b"hello world")
        assert await fetch(pool, server.url) == (200, b"hello world")
    assert server.accepts == (1 if reused else 2)


@pytest.mark.parametrize(
    ("encoding", "compress"),
    [
        ("gzip", gzip.compress),
        ("deflate", zlib.compress),
        ("deflate", lambda data: zlib.compress(data)[2:-4]),  # raw deflate, as some servers send
    ],
)
async def test_compressed_answers_are_decoded(pool: HttpPool, encoding: str, compress: Callable) -> None:
    text = b'{"text": "' + b"tierwise " * 2000 + b'"}'
    async with RawServer(answer(content_length(compress(text), f"Content-Encoding: {encoding}"))) as server:
        assert await fetch(pool, server.url) == (200, text)
        assert await fetch(pool, server.url) == (200, text)
    assert server.accepts == 1


async def test_readany_streams_pieces_and_ends_with_empty(pool: HttpPool) -> None:
    async def trickle(writer: asyncio.StreamWriter, index: int) -> None:
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        for piece in (b"data: 1\n\n", b"data: 2\n\n"):
            writer.write(b"%x\r\n%s\r\n" % (len(piece), piece))
            await writer.drain()
            await asyncio.sleep(0.01)
        writer.write(b"0\r\n\r\n")

    async with RawServer(trickle) as server:
        resp = await pool.request(Endpoint(server.url, {}), b"", connect_timeout=1.0, read_timeout=1.0)
        assert resp.content_type == "text/event-stream"
        pieces = []
        while piece := await resp.readany():
            pieces.append(piece)
        assert b"".join(pieces) == b"data: 1\n\ndata: 2\n\n" and len(pieces) == 2
        assert (await fetch(pool, server.url))[0] == 200
    assert server.accepts == 1  # read to its end: back in the pool


async def test_a_slow_consumer_pauses_the_socket_and_gets_every_byte(pool: HttpPool) -> None:
    body = bytes(range(256)) * 8192  # 2 MiB, eight times the high-water mark
    async with RawServer(answer(content_length(body))) as server:
        resp = await pool.request(Endpoint(server.url, {}), b"", connect_timeout=1.0, read_timeout=1.0)
        await asyncio.sleep(0.05)
        conn = resp._conn
        assert conn is not None and conn.paused  # stopped reading: the kernel's buffers hold the rest
        received = bytearray()
        while piece := await resp.readany():
            received += piece
        assert received == body


async def test_informational_answers_are_skipped(pool: HttpPool) -> None:
    raw = b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n" + content_length(b"final", "X-Final: yes")
    async with RawServer(answer(raw)) as server:
        resp = await pool.request(Endpoint(server.url, {}), b"", connect_timeout=1.0)
        assert (resp.status, resp.headers.get("x-final"), "link" in resp.headers) == (200, "yes", False)
        assert await resp.read() == b"final"


# -- failures --------------------------------------------------------------------------------------


async def test_a_body_cut_mid_way_is_a_payload_error(pool: HttpPool) -> None:
    async with RawServer(answer(content_length(b"x" * 100)[:-60], close=True)) as server:
        with pytest.raises(PayloadError):
            await fetch(pool, server.url)


async def test_a_chunked_body_cut_mid_way_is_a_payload_error(pool: HttpPool) -> None:
    async with RawServer(answer(chunked(b"hello", b"world")[:-5], close=True)) as server:
        with pytest.raises(PayloadError):
            await fetch(pool, server.url)


async def test_a_close_before_the_headers_end_is_disconnected(pool: HttpPool) -> None:
    async with RawServer(answer(b"HTTP/1.1 200 OK\r\nContent-Le", close=True)) as server:
        with pytest.raises(Disconnected):
            await fetch(pool, server.url)


async def test_broken_gzip_is_a_payload_error(pool: HttpPool) -> None:
    async with RawServer(answer(content_length(b"not gzip at all", "Content-Encoding: gzip"))) as server:
        with pytest.raises(PayloadError, match="gzip"):
            await fetch(pool, server.url)


async def test_silence_is_a_read_timeout_and_the_deadline_a_plain_timeout(pool: HttpPool) -> None:
    async with RawServer(answer(OK, delay_s=0.5)) as server:
        with pytest.raises(ReadTimeout):
            await fetch(pool, server.url, read_timeout=0.05)
        with pytest.raises(TimeoutError) as info:
            await fetch(pool, server.url, read_timeout=1.0, total_timeout=0.05)
        assert type(info.value) is TimeoutError


async def test_refused_connection_is_a_connect_error(pool: HttpPool) -> None:
    async with RawServer(answer(OK)) as server:
        url = server.url
    await asyncio.sleep(0.01)
    with pytest.raises(ConnectError) as info:
        await fetch(pool, url)
    assert (info.value.host, info.value.port) == ("127.0.0.1", int(url.split(":")[2].split("/")[0]))
    assert isinstance(info.value.os_error, ConnectionRefusedError)


async def test_bytes_after_the_answer_make_the_connection_unusable(pool: HttpPool) -> None:
    async with RawServer(answer(OK + b"HTTP/1.1 200 OK\r\n")) as server:
        assert (await fetch(pool, server.url))[0] == 200
        assert (await fetch(pool, server.url))[0] == 200
    assert server.accepts == 2


# -- https -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tls() -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """(server context, client context) for 127.0.0.1, signed by a throwaway CA."""
    ca = trustme.CA()
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server)
    client = ssl.create_default_context()
    ca.configure_trust(client)
    return server, client


async def test_https_on_loopback(tls: tuple[ssl.SSLContext, ssl.SSLContext]) -> None:
    server_context, client_context = tls
    pool = HttpPool(ssl_context=client_context)
    async with RawServer(answer(OK), tls=server_context) as server:
        assert server.url.startswith("https://")
        for _ in range(3):
            assert await fetch(pool, server.url) == (200, b'{"ok": true}')
        await pool.aclose()
    assert server.accepts == 1


async def test_https_refuses_an_unknown_certificate(tls: tuple[ssl.SSLContext, ssl.SSLContext]) -> None:
    pool = HttpPool()  # the system's CAs: the throwaway CA is not one of them
    async with RawServer(answer(OK), tls=tls[0]) as server:
        with pytest.raises(ConnectError) as info:
            await fetch(pool, server.url)
        await pool.aclose()
    assert isinstance(info.value.os_error, ssl.SSLCertVerificationError)
