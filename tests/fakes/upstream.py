"""Fake upstream servers that speak the real wire formats — and documentation of those formats.

A ``FakeUpstream`` is a real aiohttp server on 127.0.0.1, in the current event loop, speaking either
the OpenAI chat-completions API or the Anthropic Messages API, JSON and SSE, with the providers' own
error bodies. Tests and the benchmark point tierwise (or an official SDK) at ``up.url``::

    async with FakeUpstream(kind="openai", reply="Hello there") as up:
        provider = OpenAIProvider("fake", ProviderConfig(kind="openai", base_url=up.url), http=pool)
        up.fail_next(1, status=429, retry_after="2")   # the next request gets a real 429
        up.fault("cut_after_first_chunk")              # every stream breaks after its first chunk
        assert up.requests[-1]["model"] == "gpt-4o-mini"

Standalone, for a benchmark (serves until killed, prints ``listening on URL`` once ready)::

    python -m tests.fakes.upstream --port 8001 --kind openai [--reply TEXT] [--delay S] [--chunk-delay S]
        [--fault-mix 429,500,timeout,reset,cut,malformed,empty --fault-rate 0.3 --seed N --retry-after 1]

API (keyword-only options; every attribute below may be changed while the server runs):
    FakeUpstream(*, kind="openai"|"anthropic", reply="Hello from fake", model=None, delay_s=0.0,
                 chunk_delay_s=0.0, words_per_chunk=1, api_key=None, record=True, port=0)
    await up.start() -> up; await up.stop(); async with FakeUpstream(...) as up: …
    up.url        "http://127.0.0.1:PORT/v1" (openai) or "http://127.0.0.1:PORT" (anthropic)
    up.port, up.requests (parsed JSON bodies, in order), up.headers (lower-cased keys), up.connections
    up.fail_next(n, *, status=500, retry_after=None, body=None, headers=None)
    up.fault(None | "500" | "429" | "slow" | "cut_after_first_chunk" | "error_in_stream" | "hang" | "garbage"
             | "random_500", *, rate=1.0, seed=None)
    up.fault_mix(None | ["429", "500", "timeout", "reset", "cut", "malformed", "empty"], *, rate=0.3,
                 seed=None, retry_after="1"); up.mix_calls, up.injected (Counter of the kinds sent)
    free_port() -> int; await refused_url(kind="openai") -> str
    openai_error_body(status, message=None), anthropic_error_body(status, message=None): real error bodies

Routes: openai ``POST /v1/chat/completions`` and ``POST /v1/embeddings`` (``embedding_of(text)`` vectors,
float or base64, ``dimensions`` honoured; prompt tokens are words); anthropic ``POST /v1/messages``; both
``GET /v1/models``; a control route, ``GET /_fake/faults`` (the mix, its rate, calls and faults injected
so far) and ``POST /_fake/faults`` with ``{"mix": [...] | null, "rate", "seed", "retry_after"}`` to change
it while the server runs (a standalone server is in another process).

A fault mix (``fault_mix``) fails a seeded share of requests, each with a kind drawn from the mix, as real
providers fail: "429" with ``Retry-After``; "500"; "timeout", no answer at all until the client gives up;
"reset", the connection reset (RST) with no answer; "cut", a stream cut after its first content chunk (a
JSON answer cut inside its body); "malformed", a 200 whose body (or first stream event) is not JSON;
"empty", a 200 with an empty body (a stream: its end marker alone, no chunk, no finish reason). The mix
applies after ``fail_next`` and before a ``fault`` mode.

Behaviour, both kinds:
  * Token counts are words: prompt = words of every message's text (and Anthropic's ``system``),
    completion = words of the reply.
  * ``stop`` / ``stop_sequences`` found in the reply cut it there (finish ``stop`` / ``stop_sequence``);
    a ``max_tokens`` (or ``max_completion_tokens``) below the reply's word count cuts it to that many
    words (finish ``length`` / ``max_tokens``).
  * A tool call is answered when tools are given and the ``tool_choice`` names one (OpenAI
    ``{"type": "function", "function": {"name": X}}``, Anthropic ``{"type": "tool", "name": X}``) or
    demands one (``"required"`` / ``{"type": "any"}``: the first tool), or when ``tool_choice`` is absent
    or auto and the last user message's text contains a tool's name. The call's arguments are ``{}``.
  * ``delay_s`` is waited before the response headers of every request; ``chunk_delay_s`` between
    streamed chunks.
  * ``api_key``: when set, requests without it (``Authorization: Bearer …`` / ``x-api-key``) get the
    provider's real 401 — whose message echoes the key received, the worst case for redaction tests.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hashlib
import itertools
import math
import random
import re
import socket
import struct
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable
from typing import Any, Literal

import orjson
from aiohttp import web

Kind = Literal["openai", "anthropic"]
FAULTS = (
    None,
    "500",
    "429",
    "slow",
    "cut_after_first_chunk",
    "error_in_stream",
    "hang",
    "garbage",
    "random_500",
)
SLOW_DEFAULT_S = 10.0  # what "slow" waits when delay_s is 0
MIX_KINDS = ("429", "500", "timeout", "reset", "cut", "malformed", "empty")
# Where a request carries the mix's fault to its stream (aiohttp ≥ 3.13 wants typed keys; older, strings).
_FAULT_KEY: Any = web.RequestKey("fault", str) if hasattr(web, "RequestKey") else "fault"

# Error bodies as the real APIs send them. OpenAI: {"error": {"message", "type", "param", "code"}}.
_OPENAI_ERRORS: dict[int, tuple[str, str | None, str]] = {  # status → (type, code, message)
    400: ("invalid_request_error", None, "Invalid request."),
    401: ("invalid_request_error", "invalid_api_key", "Incorrect API key provided."),
    403: ("invalid_request_error", "unsupported_country_region_territory", "Country not supported."),
    404: (
        "invalid_request_error",
        "model_not_found",
        "The model does not exist or you do not have access to it.",
    ),
    408: ("timeout", None, "Request timed out."),
    409: ("conflict", None, "Lock timeout."),
    429: ("requests", "rate_limit_exceeded", "Rate limit reached for requests. Please try again later."),
    500: ("server_error", None, "The server had an error while processing your request. Sorry about that!"),
    502: ("server_error", None, "Bad gateway."),
    503: ("server_error", None, "The engine is currently overloaded, please try again later."),
}
# Anthropic: {"type": "error", "error": {"type", "message"}, "request_id"}.
_ANTHROPIC_ERRORS: dict[int, tuple[str, str]] = {  # status → (type, message)
    400: ("invalid_request_error", "Invalid request."),
    401: ("authentication_error", "invalid x-api-key"),
    403: ("permission_error", "Your API key does not have permission to use the specified resource."),
    404: ("not_found_error", "The requested resource could not be found."),
    413: ("request_too_large", "Request exceeds the maximum allowed number of bytes."),
    429: ("rate_limit_error", "Number of request tokens has exceeded your per-minute rate limit."),
    500: ("api_error", "An unexpected error has occurred internal to Anthropic's systems."),
    504: ("timeout_error", "Request timed out."),
    529: ("overloaded_error", "Overloaded"),
}


def openai_error_body(status: int, message: str | None = None) -> dict[str, Any]:
    kind, code, default = _OPENAI_ERRORS.get(
        status, ("server_error" if status >= 500 else "invalid_request_error", None, f"HTTP {status}")
    )
    return {"error": {"message": message or default, "type": kind, "param": None, "code": code}}


def anthropic_error_body(status: int, message: str | None = None) -> dict[str, Any]:
    kind, default = _ANTHROPIC_ERRORS.get(
        status, ("api_error" if status >= 500 else "invalid_request_error", f"HTTP {status}")
    )
    return {"type": "error", "error": {"type": kind, "message": message or default}, "request_id": "req_fake"}


EMBEDDING_DIMENSIONS = 8


def embedding_of(text: str, dimensions: int = EMBEDDING_DIMENSIONS) -> list[float]:
    """The fake's vector for ``text``: unit length, the same for the same text, from its SHA-256."""
    digest = hashlib.sha256(text.encode()).digest() * (1 + dimensions // 32)
    raw = [b / 255.0 - 0.5 for b in digest[:dimensions]]
    norm = math.sqrt(sum(x * x for x in raw)) or 1.0
    return [x / norm for x in raw]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def refused_url(kind: Kind = "openai") -> str:
    """A base URL on 127.0.0.1 where nothing listens: connecting to it is refused."""
    port = free_port()
    return f"http://127.0.0.1:{port}/v1" if kind == "openai" else f"http://127.0.0.1:{port}"


def _words(text: str) -> int:
    return len(text.split())


def _text_of(content: Any) -> str:
    """The text of an OpenAI or Anthropic message content: a string or a list of parts/blocks."""
    if isinstance(content, str):
        return content
    texts: list[str] = []
    for part in content or ():
        if isinstance(part, dict):
            if isinstance(part.get("text"), str):
                texts.append(part["text"])
            elif part.get("type") == "tool_result":
                texts.append(_text_of(part.get("content")))
    return " ".join(texts)


def _pieces(text: str) -> list[str]:
    """The reply split after each run of whitespace: "Hi there you" → ["Hi ", "there ", "you"]."""
    return [piece for piece in re.split(r"(?<=\s)(?=\S)", text) if piece]


def _sse(data: Any, event: str | None = None) -> bytes:
    payload = data if isinstance(data, bytes) else orjson.dumps(data)
    return (b"event: " + event.encode() + b"\n" if event else b"") + b"data: " + payload + b"\n\n"


# Errors reported inside a stream that had already started (the HTTP status 200 was sent).
_OPENAI_STREAM_ERROR = _sse(openai_error_body(500, "The server had an error while processing your request."))
_ANTHROPIC_STREAM_ERROR = _sse(anthropic_error_body(529), "error")
# A 200 stream with no answer in it, only the end marker.
_EMPTY_STREAM = {"openai": b"data: [DONE]\n\n", "anthropic": _sse({"type": "message_stop"}, "message_stop")}


# Placeholders in precomputed answers, filled per request (a bytes.replace is far cheaper than
# building and serializing the whole answer each time).
_ID, _MODEL, _USAGE = b"@@ID@@", b'"@@MODEL@@"', b'"@@USAGE@@"'
_INPUT, _OUTPUT = b'"@@INPUT@@"', b'"@@OUTPUT@@"'  # Anthropic's token counts


class _Answer:
    """What to answer one request: text or a tool call, and why it stops."""

    __slots__ = ("finish", "stop_sequence", "text", "tool")

    def __init__(self, text: str, finish: str, *, tool: str | None = None, stop_sequence: str | None = None):
        self.text = text
        self.finish = finish  # OpenAI vocabulary: stop | length | tool_calls
        self.tool = tool
        self.stop_sequence = stop_sequence


class FakeUpstream:
    """One fake provider server in the current event loop. See the module docstring."""

    def __init__(
        self,
        *,
        kind: Kind = "openai",
        reply: str = "Hello from fake",
        model: str | None = None,
        delay_s: float = 0.0,
        chunk_delay_s: float = 0.0,
        words_per_chunk: int = 1,
        api_key: str | None = None,
        record: bool = True,
        port: int = 0,
    ) -> None:
        if kind not in ("openai", "anthropic"):
            raise ValueError(f"kind must be 'openai' or 'anthropic', got {kind!r}")
        self.kind: Kind = kind
        self.model = model  # the model named in answers; None: echo the request's
        self.delay_s = delay_s
        self.chunk_delay_s = chunk_delay_s
        self.words_per_chunk = max(1, words_per_chunk)
        self.api_key = api_key
        self.record = record  # keep requests/headers (turn off for long benchmarks)
        self.requests: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.port = port
        self.url = ""
        self._reply = reply
        # When set, the reply to each request is reply_for(its body): a judge that reads its prompt.
        self.reply_for: Callable[[dict[str, Any]], str] | None = None
        self._cache: dict[tuple[Any, ...], Any] = {}
        self._failures: deque[tuple[int, dict[str, str], dict[str, Any] | None]] = deque()
        self._fault: str | None = None
        self._fault_rate = 1.0
        self._fault_random = random.Random()
        self._mix: tuple[str, ...] = ()
        self._mix_rate = 0.0
        self._mix_random = random.Random()
        self.mix_retry_after = "1"
        self.mix_calls = 0  # requests the mix drew for
        self.injected: Counter[str] = Counter()  # faults the mix sent, by kind
        self._ids = itertools.count(1)
        self._peers: set[Any] = set()  # (host, port) of each client connection seen
        self._runner: web.AppRunner | None = None

    # -- control ------------------------------------------------------------------------------------

    @property
    def connections(self) -> int:
        """Distinct TCP connections that carried requests (to check that clients keep them alive)."""
        return len(self._peers)

    @property
    def reply(self) -> str:
        return self._reply

    @reply.setter
    def reply(self, value: str) -> None:
        self._reply = value
        self._cache.clear()

    def fail_next(
        self,
        n: int,
        *,
        status: int = 500,
        retry_after: str | None = None,
        body: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        """The next ``n`` requests get HTTP ``status`` with the provider's error body (or ``body``),
        a ``Retry-After: retry_after`` header if given, and any extra ``headers`` (``retry-after-ms``)."""
        extra = dict(headers or {})
        if retry_after is not None:
            extra["Retry-After"] = retry_after
        self._failures.extend([(status, extra, body)] * n)

    def fault(self, mode: str | None, *, rate: float = 1.0, seed: int | None = None) -> None:
        """A persistent failure mode until ``fault(None)``:
        "500" / "429": every request gets that error (no Retry-After; use ``fail_next`` for one);
        "random_500": each request gets a 500 with probability ``rate``, drawn from a generator seeded
        with ``seed`` (the same seed fails the same requests, counted in arrival order);
        "slow": wait ``delay_s`` (or 10 s if it is 0) before the response headers;
        "cut_after_first_chunk": streams send their role chunk and first content chunk (Anthropic:
        message_start … the first content_block_delta), then the connection is closed with no
        [DONE]/message_stop; JSON requests get the connection closed with no answer;
        "error_in_stream": streams send the same first events, then an error event as the provider
        sends it mid-stream (OpenAI ``data: {"error": {… "type": "server_error"}}``, Anthropic
        ``event: error`` with an ``overloaded_error``), then end; JSON requests are answered normally;
        "hang": never answer; "garbage": 200 with a body that is not JSON (streams: an event that is
        not JSON, then the end of the body)."""
        if mode not in FAULTS:
            raise ValueError(f"unknown fault {mode!r}; use one of {FAULTS}")
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"rate must be between 0 and 1, got {rate!r}")
        self._fault = mode
        self._fault_rate = rate
        self._fault_random = random.Random(seed)

    def fault_mix(
        self,
        kinds: Iterable[str] | None,
        *,
        rate: float = 0.3,
        seed: int | None = None,
        retry_after: str = "1",
    ) -> None:
        """Fail a share ``rate`` of the requests from now on, each with a kind drawn from ``kinds``
        (see ``MIX_KINDS`` and the module docstring), until ``fault_mix(None)``. Draws come from a
        generator seeded with ``seed``, in arrival order: the same seed fails the same requests the
        same way. A "429" carries ``Retry-After: retry_after``. Resets ``mix_calls`` and ``injected``."""
        chosen = tuple(kinds or ())
        unknown = [kind for kind in chosen if kind not in MIX_KINDS]
        if unknown:
            raise ValueError(f"unknown fault kind {unknown[0]!r}; use some of {', '.join(MIX_KINDS)}")
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"rate must be between 0 and 1, got {rate!r}")
        self._mix = chosen
        self._mix_rate = rate
        self._mix_random = random.Random(seed)
        self.mix_retry_after = retry_after
        self.mix_calls = 0
        self.injected = Counter()

    def _draw_mix(self) -> str | None:
        """The fault kind for this request, or None to answer it."""
        self.mix_calls += 1
        draw, pick = self._mix_random.random(), self._mix_random.randrange(len(self._mix))
        if draw >= self._mix_rate:
            return None
        kind = self._mix[pick]
        self.injected[kind] += 1
        return kind

    def _mix_state(self) -> dict[str, Any]:
        return {
            "mix": list(self._mix),
            "rate": self._mix_rate,
            "retry_after": self.mix_retry_after,
            "calls": self.mix_calls,
            "injected": dict(self.injected),
        }

    async def _get_faults(self, request: web.Request) -> web.Response:
        return web.json_response(self._mix_state())

    async def _set_faults(self, request: web.Request) -> web.Response:
        try:
            doc = orjson.loads(await request.read())
            if not isinstance(doc, dict):
                raise ValueError("the body must be a JSON object")
            self.fault_mix(
                doc.get("mix"),
                rate=float(doc.get("rate", 0.3)),
                seed=doc.get("seed"),
                retry_after=str(doc.get("retry_after", "1")),
            )
        except (orjson.JSONDecodeError, ValueError, TypeError) as exc:
            return web.json_response({"error": str(exc)}, status=400)
        return web.json_response(self._mix_state())

    async def _inject(
        self, request: web.Request, body: dict[str, Any], kind: str
    ) -> web.StreamResponse | None:
        """Send the fault ``kind`` instead of the answer; None when it happens later ("cut" on a stream)."""
        stream = bool(body.get("stream"))
        if kind == "429":
            return self._error(429, headers={"Retry-After": self.mix_retry_after})
        if kind == "500":
            return self._error(500)
        if kind == "timeout":
            await asyncio.Future()  # cancelled when the client gives up and leaves
        if kind == "reset":
            _reset(request)
            return web.Response()  # never sent: the connection is gone
        if kind == "cut":
            if stream:
                return None
            # A JSON answer cut inside its body: the headers promise more bytes than ever arrive.
            partial = b'{"id": "chatcmpl-cut", "object": "chat.completion", "choices": ['
            response = web.StreamResponse(headers={"Content-Type": "application/json"})
            response.content_length = 4 * len(partial)
            await response.prepare(request)
            await response.write(partial)
            request.transport.close()  # type: ignore[union-attr]
            return response
        if kind == "malformed":
            if stream:
                return web.Response(body=b"data: {this is not json\n\n", content_type="text/event-stream")
            return web.Response(
                body=b'{"id": "chatcmpl-broken", "choices": [', content_type="application/json"
            )
        # "empty": a JSON body of no bytes; a stream of nothing but its end marker
        if stream:
            return web.Response(body=_EMPTY_STREAM[self.kind], content_type="text/event-stream")
        return web.Response(body=b"", content_type="application/json")

    # -- lifecycle ----------------------------------------------------------------------------------

    async def start(self) -> FakeUpstream:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        if self.kind == "openai":
            app.router.add_post("/v1/chat/completions", self._openai)
            app.router.add_post("/v1/embeddings", self._embeddings)
        else:
            app.router.add_post("/v1/messages", self._anthropic)
        app.router.add_get("/v1/models", self._models)
        app.router.add_get("/_fake/faults", self._get_faults)
        app.router.add_post("/_fake/faults", self._set_faults)
        # handler_cancellation: a hanging handler ends when its client goes away;
        # a short shutdown_timeout: stop() does not wait for hanging handlers.
        self._runner = web.AppRunner(app, handler_cancellation=True, shutdown_timeout=0.1, access_log=None)
        await self._runner.setup()
        sock = socket.socket()
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(("127.0.0.1", self.port))
            self.port = sock.getsockname()[1]
            await web.SockSite(self._runner, sock, backlog=1024).start()
        except BaseException:
            sock.close()
            await self.stop()
            raise
        base = f"http://127.0.0.1:{self.port}"
        self.url = base + "/v1" if self.kind == "openai" else base
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    async def __aenter__(self) -> FakeUpstream:
        return await self.start()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    # -- the request path shared by both kinds ------------------------------------------------------

    async def _intake(self, request: web.Request) -> tuple[dict[str, Any] | None, web.StreamResponse | None]:
        """Read and record the request; return (body, None), or (None, the error response to send)."""
        self._peers.add(request.transport.get_extra_info("peername") if request.transport else None)
        raw = await request.read()
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return None, self._error(400, "The request body is not valid JSON.")
        if not isinstance(body, dict):
            return None, self._error(400, "The request body must be a JSON object.")
        if self.record:
            self.requests.append(body)
            self.headers.append({key.lower(): value for key, value in request.headers.items()})
        if self.api_key is not None:
            if self.kind == "openai":
                sent = request.headers.get("Authorization", "").removeprefix("Bearer ")
            else:
                sent = request.headers.get("x-api-key", "")
            if sent != self.api_key:
                return None, self._error(401, f"Incorrect API key provided: {sent}.")
        if self._failures:
            status, headers, custom = self._failures.popleft()
            return None, self._error(status, body=custom, headers=headers)
        if self._mix and (kind := self._draw_mix()) is not None:
            injected = await self._inject(request, body, kind)
            if injected is not None:
                return None, injected
            request[_FAULT_KEY] = kind  # a stream to cut after its first chunk: _send_stream does it
        fault = self._fault
        if fault == "500" or (fault == "random_500" and self._fault_random.random() < self._fault_rate):
            return None, self._error(500)
        if fault == "429":
            return None, self._error(429)
        if fault == "hang":
            await asyncio.Future()  # cancelled when the client leaves or the server stops
        if fault == "slow":
            await asyncio.sleep(self.delay_s or SLOW_DEFAULT_S)
        elif self.delay_s:
            await asyncio.sleep(self.delay_s)
        if fault == "garbage":
            if body.get("stream"):
                return None, web.Response(
                    body=b"data: {this is not json\n\n", content_type="text/event-stream"
                )
            return None, web.Response(
                body=b'{"id": "chatcmpl-broken", "choices": [', content_type="application/json"
            )
        if fault == "cut_after_first_chunk" and not body.get("stream"):
            request.transport.close()  # type: ignore[union-attr]
            return None, web.Response()  # never sent: the connection is gone
        return body, None

    def _error(
        self,
        status: int,
        message: str | None = None,
        *,
        body: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> web.Response:
        if body is None:
            body = (
                openai_error_body(status, message)
                if self.kind == "openai"
                else anthropic_error_body(status, message)
            )
        return web.Response(
            status=status, body=orjson.dumps(body), content_type="application/json", headers=headers
        )

    def _answer(self, body: dict[str, Any], *, tools: list[str], choice: Any, last_user: str) -> _Answer:
        tool = None
        if tools:
            if choice in ("required", "any"):
                tool = tools[0]
            elif isinstance(choice, str) and choice in tools:  # the tool that tool_choice names
                tool = choice
            elif choice in (None, "auto"):
                tool = next((name for name in tools if name in last_user), None)
        if tool:
            return _Answer("", "tool_calls", tool=tool)
        text = self.reply_for(body) if self.reply_for is not None else self._reply
        finish = "stop"
        stop_sequence = None
        stops = body.get("stop") if self.kind == "openai" else body.get("stop_sequences")
        for stop in [stops] if isinstance(stops, str) else stops or ():
            at = text.find(stop) if stop else -1
            if at >= 0:
                text, stop_sequence = text[:at], stop
        limit = body.get("max_completion_tokens") or body.get("max_tokens")
        if isinstance(limit, int) and _words(text) > limit:
            text = "".join(_pieces(text)[:limit]).rstrip()
            finish, stop_sequence = "length", None
        return _Answer(text, finish, stop_sequence=stop_sequence)

    async def _send_stream(
        self, request: web.Request, events: list[bytes], fill: dict[bytes, bytes]
    ) -> web.StreamResponse:
        """Send SSE events (templates with placeholders filled from ``fill``): in one write when there
        is no chunk delay; one by one otherwise; cut after the first content event if asked."""
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
        await response.prepare(request)
        fault = "cut_after_first_chunk" if request.get(_FAULT_KEY) == "cut" else self._fault
        if fault in ("cut_after_first_chunk", "error_in_stream"):
            # OpenAI: the role chunk and one content chunk; Anthropic: message_start,
            # content_block_start, ping and one content_block_delta.
            events = events[: 2 if self.kind == "openai" else 4]
            if fault == "error_in_stream":
                events.append(_OPENAI_STREAM_ERROR if self.kind == "openai" else _ANTHROPIC_STREAM_ERROR)
        if not self.chunk_delay_s and fault != "cut_after_first_chunk":
            await response.write(_fill(b"".join(events), fill))
        else:
            for i, event in enumerate(events):
                if i and self.chunk_delay_s:
                    await asyncio.sleep(self.chunk_delay_s)
                await response.write(_fill(event, fill))
        if fault == "cut_after_first_chunk":
            request.transport.close()  # type: ignore[union-attr]
            return response
        await response.write_eof()
        return response

    async def _models(self, request: web.Request) -> web.Response:
        name = self.model or "fake-model"
        if self.kind == "openai":
            doc: dict[str, Any] = {
                "object": "list",
                "data": [{"id": name, "object": "model", "created": 0, "owned_by": "tierwise-fake"}],
            }
        else:
            doc = {
                "data": [
                    {"type": "model", "id": name, "display_name": name, "created_at": "2025-01-01T00:00:00Z"}
                ],
                "has_more": False,
                "first_id": name,
                "last_id": name,
            }
        return web.Response(body=orjson.dumps(doc), content_type="application/json")

    # -- OpenAI: POST /v1/chat/completions ----------------------------------------------------------

    async def _openai(self, request: web.Request) -> web.StreamResponse:
        body, refusal = await self._intake(request)
        if body is None:
            return refusal  # type: ignore[return-value]
        messages = body.get("messages")
        if not body.get("model"):
            return self._error(400, "you must provide a model parameter")
        if not isinstance(messages, list) or not messages:
            return self._error(400, "[] is too short - 'messages'")
        stops = body.get("stop")
        if (
            stops is not None
            and not isinstance(stops, str)
            and not (isinstance(stops, list) and all(isinstance(stop, str) for stop in stops))
        ):
            return self._error(400, "Invalid type for 'stop': expected a string or an array of strings")
        choice = body.get("tool_choice")
        if isinstance(choice, dict):
            choice = (choice.get("function") or {}).get("name")
        tools = [
            t["function"]["name"] for t in body.get("tools") or () if isinstance(t.get("function"), dict)
        ]
        last = messages[-1]
        last_user = _text_of(last.get("content")) if last.get("role") == "user" else ""
        answer = self._answer(body, tools=tools, choice=choice, last_user=last_user)
        model = orjson.dumps(self.model or body["model"])
        prompt = sum(_words(_text_of(m.get("content"))) for m in messages if isinstance(m, dict))
        completion = 1 if answer.tool else _words(answer.text)
        usage = orjson.dumps(
            {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}
        )
        fill = {_ID: b"chatcmpl-fake-%d" % next(self._ids), _MODEL: model, _USAGE: usage}
        if body.get("stream"):
            include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
            return await self._send_stream(request, self._openai_events(answer, include_usage), fill)
        return web.Response(body=_fill(self._openai_json(answer), fill), content_type="application/json")

    async def _embeddings(self, request: web.Request) -> web.Response:
        body, refusal = await self._intake(request)
        if body is None:
            return refusal  # type: ignore[return-value]
        inputs = body.get("input")
        if not body.get("model"):
            return self._error(400, "you must provide a model parameter")
        if isinstance(inputs, str) or (isinstance(inputs, list) and inputs and isinstance(inputs[0], int)):
            inputs = [inputs]
        if not isinstance(inputs, list) or not inputs:
            return self._error(400, "'input' : input must be a string or an array of strings")
        dimensions = body.get("dimensions") or EMBEDDING_DIMENSIONS
        data = []
        for i, text in enumerate(inputs):
            vector = embedding_of(text if isinstance(text, str) else " ".join(map(str, text)), dimensions)
            encoded: Any = vector
            if body.get("encoding_format") == "base64":
                encoded = base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
            data.append({"object": "embedding", "index": i, "embedding": encoded})
        tokens = sum(_words(t) if isinstance(t, str) else len(t) for t in inputs)
        usage = {"prompt_tokens": tokens, "total_tokens": tokens}
        return web.json_response(
            {"object": "list", "data": data, "model": self.model or body["model"], "usage": usage}
        )

    def _openai_json(self, answer: _Answer) -> bytes:
        key = ("openai-json", answer.text, answer.finish, answer.tool)
        if key not in self._cache:
            message: dict[str, Any] = {
                "role": "assistant",
                "content": answer.text if not answer.tool else None,
                "refusal": None,
            }
            if answer.tool:
                message["tool_calls"] = [
                    {
                        "id": "call_fake_1",
                        "type": "function",
                        "function": {"name": answer.tool, "arguments": "{}"},
                    }
                ]
            self._cache[key] = orjson.dumps(
                {
                    "id": _ID.decode(),
                    "object": "chat.completion",
                    "created": int(time.time()),
                    "model": "@@MODEL@@",
                    "system_fingerprint": "fp_fake",
                    "choices": [
                        {"index": 0, "message": message, "logprobs": None, "finish_reason": answer.finish}
                    ],
                    "usage": "@@USAGE@@",
                }
            )
        return self._cache[key]

    def _openai_events(self, answer: _Answer, include_usage: bool) -> list[bytes]:
        key = ("openai-sse", answer.text, answer.finish, answer.tool, include_usage, self.words_per_chunk)
        if key in self._cache:
            return self._cache[key]
        created = int(time.time())

        def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
            doc: dict[str, Any] = {
                "id": _ID.decode(),
                "object": "chat.completion.chunk",
                "created": created,
                "model": "@@MODEL@@",
                "system_fingerprint": "fp_fake",
                "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
            }
            if include_usage:
                doc["usage"] = None
            return _sse(doc)

        events = [chunk({"role": "assistant", "content": "", "refusal": None})]
        if answer.tool:
            call = {
                "index": 0,
                "id": "call_fake_1",
                "type": "function",
                "function": {"name": answer.tool, "arguments": ""},
            }
            events.append(chunk({"tool_calls": [call]}))
            events.append(chunk({"tool_calls": [{"index": 0, "function": {"arguments": "{}"}}]}))
        else:
            pieces = _pieces(answer.text)
            n = self.words_per_chunk
            events.extend(chunk({"content": "".join(pieces[i : i + n])}) for i in range(0, len(pieces), n))
        events.append(chunk({}, answer.finish))
        if include_usage:
            events.append(
                _sse(
                    {
                        "id": _ID.decode(),
                        "object": "chat.completion.chunk",
                        "created": created,
                        "model": "@@MODEL@@",
                        "system_fingerprint": "fp_fake",
                        "choices": [],
                        "usage": "@@USAGE@@",
                    }
                )
            )
        events.append(b"data: [DONE]\n\n")
        self._cache[key] = events
        return events

    # -- Anthropic: POST /v1/messages ---------------------------------------------------------------

    def _anthropic_invalid(self, request: web.Request, body: dict[str, Any]) -> str | None:
        """What the real API would reject in this request (a subset of its checks), or None."""
        if not request.headers.get("anthropic-version"):
            return "anthropic-version: header is required"
        if not body.get("model"):
            return "model: Field required"
        if not isinstance(body.get("max_tokens"), int):
            return "max_tokens: Field required"
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            return (
                "messages: Field required"
                if messages is None
                else "messages: at least one message is required"
            )
        previous: dict[str, Any] | None = None
        for i, message in enumerate(messages):
            role = message.get("role")
            if role not in ("user", "assistant"):
                return (
                    f'messages.{i}.role: Unexpected role "{role}". The Messages API accepts a top-level '
                    '`system` parameter, not "system" as an input message role.'
                )
            if previous is not None and previous.get("role") == role:
                return (
                    f'messages: roles must alternate between "user" and "assistant", '
                    f'but found multiple "{role}" roles in a row'
                )
            content = message.get("content")
            blocks = content if isinstance(content, list) else [{"type": "text", "text": content}]
            if not blocks and not (i == len(messages) - 1 and role == "assistant"):
                return f"messages.{i}: all messages must have non-empty content"
            tool_uses = {
                b.get("id")
                for b in (previous or {}).get("content") or ()
                if isinstance(b, dict) and b.get("type") == "tool_use"
            }
            for j, block in enumerate(blocks):
                if block.get("type") == "text" and not block.get("text"):
                    return f"messages.{i}.content.{j}.text: text content blocks must be non-empty"
                if block.get("type") == "tool_result" and block.get("tool_use_id") not in tool_uses:
                    return (
                        f"messages.{i}.content.{j}: unexpected `tool_use_id` found in `tool_result` blocks: "
                        f"{block.get('tool_use_id')}. Each `tool_result` block must have a corresponding "
                        "`tool_use` block in the previous message."
                    )
            previous = message
        return None

    async def _anthropic(self, request: web.Request) -> web.StreamResponse:
        body, refusal = await self._intake(request)
        if body is None:
            return refusal  # type: ignore[return-value]
        invalid = self._anthropic_invalid(request, body)
        if invalid:
            return self._error(400, invalid)
        messages = body["messages"]
        choice = body.get("tool_choice")
        if isinstance(choice, dict):
            choice = choice.get("name") if choice.get("type") == "tool" else choice.get("type")
        tools = [t.get("name") for t in body.get("tools") or ()]
        last = messages[-1]
        last_user = _text_of(last.get("content")) if last.get("role") == "user" else ""
        answer = self._answer(body, tools=tools, choice=choice, last_user=last_user)
        system = body.get("system")
        prompt = _words(_text_of(system)) + sum(_words(_text_of(m.get("content"))) for m in messages)
        completion = 1 if answer.tool else _words(answer.text)
        fill = {
            _ID: b"msg_fake_%d" % next(self._ids),
            _MODEL: orjson.dumps(self.model or body["model"]),
            _INPUT: b"%d" % prompt,
            _OUTPUT: b"%d" % completion,
        }
        if body.get("stream"):
            return await self._send_stream(request, self._anthropic_events(answer), fill)
        return web.Response(body=_fill(self._anthropic_json(answer), fill), content_type="application/json")

    @staticmethod
    def _stop(answer: _Answer) -> tuple[str, str | None]:
        if answer.tool:
            return "tool_use", None
        if answer.finish == "length":
            return "max_tokens", None
        return ("stop_sequence", answer.stop_sequence) if answer.stop_sequence else ("end_turn", None)

    @staticmethod
    def _anthropic_usage(output: str | int) -> dict[str, Any]:
        return {
            "input_tokens": "@@INPUT@@",
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
            "output_tokens": output,
            "service_tier": "standard",
        }

    def _anthropic_json(self, answer: _Answer) -> bytes:
        key = ("anthropic-json", answer.text, answer.finish, answer.tool, answer.stop_sequence)
        if key not in self._cache:
            stop_reason, stop_sequence = self._stop(answer)
            if answer.tool:
                content = [{"type": "tool_use", "id": "toolu_fake_1", "name": answer.tool, "input": {}}]
            else:
                content = [{"type": "text", "text": answer.text}]
            self._cache[key] = orjson.dumps(
                {
                    "id": _ID.decode(),
                    "type": "message",
                    "role": "assistant",
                    "model": "@@MODEL@@",
                    "content": content,
                    "stop_reason": stop_reason,
                    "stop_sequence": stop_sequence,
                    "usage": self._anthropic_usage("@@OUTPUT@@"),
                }
            )
        return self._cache[key]

    def _anthropic_events(self, answer: _Answer) -> list[bytes]:
        key = (
            "anthropic-sse",
            answer.text,
            answer.finish,
            answer.tool,
            answer.stop_sequence,
            self.words_per_chunk,
        )
        if key in self._cache:
            return self._cache[key]
        stop_reason, stop_sequence = self._stop(answer)
        events = [
            _sse(
                {
                    "type": "message_start",
                    "message": {
                        "id": _ID.decode(),
                        "type": "message",
                        "role": "assistant",
                        "model": "@@MODEL@@",
                        "content": [],
                        "stop_reason": None,
                        "stop_sequence": None,
                        "usage": self._anthropic_usage(1),
                    },
                },
                "message_start",
            )
        ]
        if answer.tool:
            block = {"type": "tool_use", "id": "toolu_fake_1", "name": answer.tool, "input": {}}
            deltas = [
                {"type": "input_json_delta", "partial_json": ""},
                {"type": "input_json_delta", "partial_json": "{}"},
            ]
        else:
            block = {"type": "text", "text": ""}
            pieces = _pieces(answer.text)
            n = self.words_per_chunk
            deltas = [
                {"type": "text_delta", "text": "".join(pieces[i : i + n])} for i in range(0, len(pieces), n)
            ]
        events.append(
            _sse({"type": "content_block_start", "index": 0, "content_block": block}, "content_block_start")
        )
        events.append(_sse({"type": "ping"}, "ping"))
        events.extend(
            _sse({"type": "content_block_delta", "index": 0, "delta": d}, "content_block_delta")
            for d in deltas
        )
        events.append(_sse({"type": "content_block_stop", "index": 0}, "content_block_stop"))
        events.append(
            _sse(
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": stop_reason, "stop_sequence": stop_sequence},
                    "usage": {"output_tokens": "@@OUTPUT@@"},
                },
                "message_delta",
            )
        )
        events.append(_sse({"type": "message_stop"}, "message_stop"))
        self._cache[key] = events
        return events


def _reset(request: web.Request) -> None:
    """Reset the request's connection: an RST (SO_LINGER 0), as a crashed or overloaded server sends."""
    transport = request.transport
    if transport is None:
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


def _fill(template: bytes, fill: dict[bytes, bytes]) -> bytes:
    for placeholder, value in fill.items():
        template = template.replace(placeholder, value)
    return template


async def _serve(args: argparse.Namespace) -> None:
    upstream = FakeUpstream(
        kind=args.kind,
        reply=args.reply,
        model=args.model,
        delay_s=args.delay,
        chunk_delay_s=args.chunk_delay,
        words_per_chunk=args.words_per_chunk,
        record=False,
        port=args.port,
    )
    if args.fault_mix:
        upstream.fault_mix(
            args.fault_mix.split(","), rate=args.fault_rate, seed=args.seed, retry_after=args.retry_after
        )
    async with upstream:
        print(f"listening on {upstream.url}", flush=True)
        await asyncio.Future()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m tests.fakes.upstream", description="Serve a fake LLM upstream."
    )
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--kind", choices=("openai", "anthropic"), default="openai")
    parser.add_argument("--reply", default="Hello from fake")
    parser.add_argument("--model", default=None)
    parser.add_argument("--delay", type=float, default=0.0, help="seconds before the response headers")
    parser.add_argument("--chunk-delay", type=float, default=0.0, help="seconds between streamed chunks")
    parser.add_argument("--words-per-chunk", type=int, default=1)
    parser.add_argument(
        "--fault-mix", default="", help=f"comma-separated fault kinds to inject: {','.join(MIX_KINDS)}"
    )
    parser.add_argument("--fault-rate", type=float, default=0.3, help="share of requests failed by the mix")
    parser.add_argument("--seed", type=int, default=None, help="seed of the fault draws")
    parser.add_argument("--retry-after", default="1", help="Retry-After of the mix's 429s")
    args = parser.parse_args(argv)
    try:
        import uvloop  # optional: the benchmark measures tierwise, not this server
    except ImportError:
        runner = asyncio.run
    else:
        runner = uvloop.run
    with contextlib.suppress(KeyboardInterrupt):
        runner(_serve(args))


if __name__ == "__main__":
    main()
