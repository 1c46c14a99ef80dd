"""The gateway's HTTP/1.1 server (gateway/server.py, gateway/web.py) at the byte level, over raw
loopback sockets: keep-alive and pipelining, body limits, malformed requests, Expect: 100-continue,
HTTP/1.0, HEAD, streamed answers, timeouts and the graceful stop."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
from collections.abc import AsyncIterator

import orjson
import pytest

from tierwise.errors import RequestError
from tierwise.gateway import server as server_module
from tierwise.gateway.responses import error_response
from tierwise.gateway.server import Server
from tierwise.gateway.web import App, Request, Response, StreamResponse

LIMIT = 1000


def build_app(release: asyncio.Event | None = None) -> App:
    app = App(max_body_bytes=LIMIT, error_response=error_response)

    async def echo(request: Request) -> Response:
        doc = {"method": request.method, "path": request.path, "size": len(request.body)}
        doc["query"] = dict(request.query)
        doc["x"] = request.headers.get("X-Thing")
        return Response(orjson.dumps(doc), headers={"x-served": "yes"})

    async def slow(request: Request) -> Response:
        assert release is not None
        await release.wait()
        return Response(b'{"slow":true}')

    async def stream(request: Request) -> StreamResponse:
        response = StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        for i in range(3):
            await response.write(b"data: %d\n\n" % i)
        await response.write_eof(b"data: [DONE]\n\n")
        return response

    async def refused(request: Request) -> Response:
        raise RequestError("thing: refused", param="thing")

    async def broken(request: Request) -> Response:
        raise RuntimeError("a bug with a secret sk-123")

    async def bad_header(request: Request) -> Response:
        return Response(b"{}", headers={"x-split": "a\r\nSet-Cookie: evil=1"})

    async def item(request: Request) -> Response:
        return Response(orjson.dumps(request.match_info))

    def plain_error(exc: BaseException) -> Response:
        return Response(
            b"plain: " + str(exc).encode(), status=getattr(exc, "status", 500), content_type="text/plain"
        )

    app.add_post("/echo", echo)
    app.add_get("/echo", echo)
    app.add_post("/plain", echo, error_response=plain_error)
    app.add_get("/slow", slow)
    app.add_get("/stream", stream)
    app.add_get("/refused", refused)
    app.add_get("/broken", broken)
    app.add_get("/bad-header", bad_header)
    app.add_get("/items/{name}", item)
    return app


@pytest.fixture
async def served() -> AsyncIterator[tuple[Server, asyncio.Event]]:
    release = asyncio.Event()
    server = Server(build_app(release))
    await server.start("127.0.0.1", 0)
    yield server, release
    release.set()
    await server.stop(2.0)


_OPEN: list[asyncio.StreamWriter] = []


@pytest.fixture(autouse=True)
async def close_connections() -> AsyncIterator[None]:
    yield
    while _OPEN:
        writer = _OPEN.pop()
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


async def connect(server: Server) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    _OPEN.append(writer)
    return reader, writer


async def read_response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    """One response: status, headers (lower-case names), body (by Content-Length or chunked)."""
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    lines = head.decode().split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    if "content-length" in headers:
        body = await reader.readexactly(int(headers["content-length"]))
    elif headers.get("transfer-encoding") == "chunked":
        body = b""
        while True:
            size = int((await reader.readuntil(b"\r\n")).strip(), 16)
            body += await reader.readexactly(size + 2)
            body = body[:-2]
            if size == 0:
                break
    else:
        body = await asyncio.wait_for(reader.read(), 5)
    return status, headers, body


def post(path: str, body: bytes, extra: str = "") -> bytes:
    return f"POST {path} HTTP/1.1\r\nHost: t\r\nContent-Length: {len(body)}\r\n{extra}\r\n".encode() + body


async def closed(reader: asyncio.StreamReader) -> bool:
    with contextlib.suppress(ConnectionError):
        return await asyncio.wait_for(reader.read(), 5) == b""
    return True


async def test_keep_alive_and_pipelined_requests_are_answered_in_order(
    served: tuple[Server, asyncio.Event],
) -> None:
    server, _ = served
    reader, writer = await connect(server)
    writer.write(
        post("/echo", b"a" * 10)
        + post("/echo?k=v&k=w&e=", b"b" * 20)
        + b"GET /echo HTTP/1.1\r\nHost: t\r\n\r\n"
    )
    answers = [await read_response(reader) for _ in range(3)]
    assert [orjson.loads(body)["size"] for _, _, body in answers] == [10, 20, 0]
    assert orjson.loads(answers[1][2])["query"] == {"k": "v", "e": ""}
    assert answers[0][1]["x-served"] == "yes" and "date" in answers[0][1]
    assert all("connection" not in headers for _, headers, _ in answers)  # kept alive
    writer.write(post("/echo", b"again"))
    assert (await read_response(reader))[0] == 200  # still the same connection
    writer.close()


async def test_a_body_over_the_limit_is_413_and_the_client_reads_it(
    served: tuple[Server, asyncio.Event],
) -> None:
    server, _ = served
    for request in (
        post("/echo", b"x" * (LIMIT * 50)),  # declared too large: refused before the body is read
        b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
        + b"".join(b"%x\r\n%b\r\n" % (300, b"y" * 300) for _ in range(5))
        + b"0\r\n\r\n",  # chunked: refused once it passes the limit
    ):
        reader, writer = await connect(server)
        writer.write(request)
        status, headers, body = await read_response(reader)
        assert status == 413 and headers["connection"] == "close"
        error = orjson.loads(body)["error"]
        assert error["code"] == "request_too_large" and f"limit of {LIMIT} bytes" in error["message"]
        assert await closed(reader)
        writer.close()


async def test_a_chunked_body_within_the_limit_is_read_whole(served: tuple[Server, asyncio.Event]) -> None:
    server, _ = served
    reader, writer = await connect(server)
    writer.write(
        b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"3\r\nabc\r\n4\r\ndefg\r\n0\r\n\r\n"
    )
    status, _, body = await read_response(reader)
    assert status == 200 and orjson.loads(body)["size"] == 7
    writer.close()


async def test_a_route_with_its_own_error_shape_keeps_it_for_refusals(
    served: tuple[Server, asyncio.Event],
) -> None:
    server, _ = served
    reader, writer = await connect(server)
    writer.write(post("/plain", b"x" * (LIMIT + 1)))
    status, headers, body = await read_response(reader)
    assert (
        status == 413 and headers["content-type"] == "text/plain" and body.startswith(b"plain: request body")
    )
    writer.close()


@pytest.mark.parametrize(
    "raw",
    [
        b"NOT HTTP AT ALL\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello",
        b"GET / HTTP/1.1\r\nBad Header Name: x\r\n\r\n",
        b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    ],
)
async def test_a_malformed_request_is_a_400_in_the_error_format(
    served: tuple[Server, asyncio.Event], raw: bytes
) -> None:
    server, _ = served
    reader, writer = await connect(server)
    writer.write(raw)
    status, headers, body = await read_response(reader)
    assert status == 400 and headers["connection"] == "close"
    assert orjson.loads(body)["error"]["type"] == "invalid_request_error"
    assert await closed(reader)
    writer.close()
    # The server still serves others.
    reader, writer = await connect(server)
    writer.write(post("/echo", b"ok"))
    assert (await read_response(reader))[0] == 200
    writer.close()


async def test_headers_past_their_limit_are_431(served: tuple[Server, asyncio.Event]) -> None:
    server, _ = served
    reader, writer = await connect(server)
    many = "".join(f"X-H{i}: {'v' * 1000}\r\n" for i in range(80))
    writer.write(f"GET /echo HTTP/1.1\r\nHost: t\r\n{many}\r\n".encode())
    status, _, body = await read_response(reader)
    assert status == 431 and "headers exceed" in orjson.loads(body)["error"]["message"]
    writer.close()


async def test_expect_100_continue_is_answered_before_the_body(served: tuple[Server, asyncio.Event]) -> None:
    server, _ = served
    reader, writer = await connect(server)
    writer.write(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n")
    assert await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5) == b"HTTP/1.1 100 Continue\r\n\r\n"
    writer.write(b"body")
    status, _, body = await read_response(reader)
    assert status == 200 and orjson.loads(body)["size"] == 4
    writer.close()


async def test_http_1_0_gets_its_answer_then_the_connection_closes(
    served: tuple[Server, asyncio.Event],
) -> None:
    server, _ = served
    reader, writer = await connect(server)
    writer.write(b"GET /echo HTTP/1.0\r\n\r\n")
    status, headers, _ = await read_response(reader)
    assert status == 200 and headers["connection"] == "close"
    assert await closed(reader)
    reader, writer = await connect(server)
    writer.write(b"GET /stream HTTP/1.0\r\n\r\n")  # no chunked encoding for 1.0: the body ends at close
    status, headers, body = await read_response(reader)
    assert status == 200 and "transfer-encoding" not in headers
    assert body == b"data: 0\n\ndata: 1\n\ndata: 2\n\ndata: [DONE]\n\n"


async def test_a_stream_is_chunked_and_the_connection_reused(served: tuple[Server, asyncio.Event]) -> None:
    server, _ = served
    reader, writer = await connect(server)
    writer.write(b"GET /stream HTTP/1.1\r\nHost: t\r\n\r\n")
    status, headers, body = await read_response(reader)
    assert status == 200 and headers["transfer-encoding"] == "chunked"
    assert headers["content-type"] == "text/event-stream"
    assert body == b"data: 0\n\ndata: 1\n\ndata: 2\n\ndata: [DONE]\n\n"
    writer.write(b"GET /echo HTTP/1.1\r\nHost: t\r\n\r\n")
    assert (await read_response(reader))[0] == 200
    writer.close()


async def test_head_paths_errors_and_route_segments(served: tuple[Server, asyncio.Event]) -> None:
    server, _ = served
    reader, writer = await connect(server)
    writer.write(b"HEAD /echo HTTP/1.1\r\nHost: t\r\n\r\n")
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    assert head.startswith(b"HTTP/1.1 200 OK") and b"Content-Length: " in head
    cases = [
        (b"GET /nowhere HTTP/1.1\r\nHost: t\r\n\r\n", 404, "/nowhere: no such endpoint"),
        (b"DELETE /echo HTTP/1.1\r\nHost: t\r\n\r\n", 405, "DELETE /echo: method not allowed"),
        (b"GET /refused HTTP/1.1\r\nHost: t\r\n\r\n", 400, "thing: refused"),
        (b"GET /broken HTTP/1.1\r\nHost: t\r\n\r\n", 500, "internal error; see the gateway log"),
        (b"GET /bad-header HTTP/1.1\r\nHost: t\r\n\r\n", 500, None),
    ]
    for raw, status, message in cases:
        writer.write(raw)
        got, headers, body = await read_response(reader)
        assert got == status, raw
        assert "set-cookie" not in headers  # a header value holding CR LF never splits the response
        if message is not None:
            assert orjson.loads(body)["error"]["message"] == message
        if got == 500 and message is None:
            reader, writer = await connect(server)  # the connection of a broken response is closed
    writer.write(b"GET /items/a%20b HTTP/1.1\r\nHost: t\r\n\r\n")
    assert orjson.loads((await read_response(reader))[2]) == {"name": "a b"}
    writer.close()


async def test_idle_and_slow_connections_are_closed(
    served: tuple[Server, asyncio.Event], monkeypatch: pytest.MonkeyPatch
) -> None:
    server, _ = served
    monkeypatch.setattr(server_module, "KEEPALIVE_S", 0.2)
    monkeypatch.setattr(server_module, "HEAD_TIMEOUT_S", 0.2)
    reader, writer = await connect(server)
    writer.write(b"GET /echo HTTP/1.1\r\nHost: t\r\n\r\n")
    assert (await read_response(reader))[0] == 200
    assert await closed(reader)  # idle past the keep-alive time
    reader, writer = await connect(server)
    writer.write(b"GET /echo HTTP/1.1\r\nHost: t\r\n")  # the headers never end
    assert await closed(reader)


async def test_a_graceful_stop_finishes_the_request_in_flight_and_closes_idle_connections() -> None:
    release = asyncio.Event()
    server = Server(build_app(release))
    await server.start("127.0.0.1", 0)
    busy_reader, busy_writer = await connect(server)
    busy_writer.write(b"GET /slow HTTP/1.1\r\nHost: t\r\n\r\n")
    idle_reader, idle_writer = await connect(server)
    idle_writer.write(b"GET /echo HTTP/1.1\r\nHost: t\r\n\r\n")
    assert (await read_response(idle_reader))[0] == 200
    await asyncio.sleep(0.05)
    stopping = asyncio.create_task(server.stop(5.0))
    assert await closed(idle_reader)  # idle: closed at once
    release.set()
    status, headers, body = await read_response(busy_reader)
    assert status == 200 and body == b'{"slow":true}' and headers["connection"] == "close"
    await stopping
    with pytest.raises(OSError):
        await connect(server)


async def test_a_stop_that_cannot_wait_answers_503() -> None:
    server = Server(build_app(asyncio.Event()))  # /slow never finishes
    await server.start("127.0.0.1", 0)
    reader, writer = await connect(server)
    writer.write(b"GET /slow HTTP/1.1\r\nHost: t\r\n\r\n")
    await asyncio.sleep(0.05)
    await server.stop(0.2)
    status, headers, body = await read_response(reader)
    assert status == 503 and headers["connection"] == "close"
    assert orjson.loads(body)["error"]["type"] == "server_error"


async def test_a_request_still_arriving_when_the_stop_begins_is_answered() -> None:
    server = Server(build_app())
    await server.start("127.0.0.1", 0)
    reader, writer = await connect(server)
    writer.write(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\nhello")
    await asyncio.sleep(0.05)
    stopping = asyncio.create_task(server.stop(5.0))
    await asyncio.sleep(0.05)
    writer.write(b"world")  # the rest of its body, after the stop began
    status, headers, body = await read_response(reader)
    assert status == 200 and orjson.loads(body)["size"] == 10 and headers["connection"] == "close"
    await stopping


def test_the_gateway_needs_no_aiohttp() -> None:
    # aiohttp is a dependency of the tests and benchmarks only (their fake upstreams and load generator).
    code = (
        "import sys, tierwise.cli, tierwise.gateway.app, tierwise.gateway.server, tierwise.gateway.web, "
        "tierwise.router, "
        "tierwise.http, tierwise.providers.openai, tierwise.providers.anthropic, tierwise.estimate.sample; "
        "print('aiohttp' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"
