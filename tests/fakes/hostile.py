"""Seeded hostile and careless requests for the gateway: malformed bodies, headers and hints.

``hostile_requests(seed, n)`` yields ``n`` ``Probe``s, the same ones for the same seed. About one in
eight is a well-formed chat request (so the fuzz run also checks that good traffic still flows and is
logged); the rest break something a client can break: the JSON itself, its encoding, a field's type or
range, nesting, sizes, the routing hints (headers and ``metadata``), the Content-Encoding, the
feedback endpoint, unknown paths and methods. Used by ``tests/gateway/test_fuzz.py`` and
``bench/fuzz.py``.
"""

from __future__ import annotations

import gzip
import json
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

CHAT = "/v1/chat/completions"
HINT_HEADERS = (
    "x-tierwise-task",
    "x-tierwise-quality",
    "x-tierwise-latency-ms",
    "x-tierwise-risk",
    "x-tierwise-tier",
    "x-tierwise-user-tier",
)
HINT_KEYS = ("task", "quality", "latency_ms", "risk", "tier", "user_tier")
FIELDS = (
    "model", "messages", "stream", "max_tokens", "max_completion_tokens", "n", "seed", "top_logprobs",
    "temperature", "top_p", "presence_penalty", "frequency_penalty", "tools", "functions", "tool_choice",
    "metadata", "response_format", "stream_options", "stop", "user", "logit_bias",
)  # fmt: skip


@dataclass(slots=True)
class Probe:
    """One request to send: ``valid`` ones must be answered 200 and logged."""

    kind: str
    method: str = "POST"
    path: str = CHAT
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    valid: bool = False


def _base(rng: random.Random) -> dict[str, Any]:
    text = rng.choice(
        [
            "hi",
            "Classify the sentiment: 'great battery'",
            "Write a Python function that reverses a list.",
            "Summarize: the meeting moved to Tuesday.",
            "What is 17 * 23?",
        ]
    )
    shape = rng.randrange(4)
    if shape == 0:
        messages: list[dict[str, Any]] = [{"role": "user", "content": text}]
    elif shape == 1:
        messages = [
            {"role": "user", "content": [{"type": "text", "text": text}, {"type": "text", "text": "ok"}]}
        ]
    elif shape == 2:
        messages = [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": text},
            {"role": "assistant", "content": "Sure."},
            {"role": "user", "content": "Go on."},
        ]
    else:
        messages = [{"role": "developer", "content": "json"}, {"role": "user", "content": text}]
    body: dict[str, Any] = {"model": rng.choice(["auto", "auto", "draft", "review-1"]), "messages": messages}
    if rng.random() < 0.2:
        body["stream"] = True
    if rng.random() < 0.2:
        body["tools"] = [
            {"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}
        ]
    if rng.random() < 0.1:
        body["response_format"] = {"type": "json_object"}
    if rng.random() < 0.2:
        body["max_tokens"] = rng.choice([1, 16, 256])
    return body


def _dumps(value: Any) -> bytes:
    # The standard encoder: it writes integers of any size and floats orjson refuses.
    return json.dumps(value).encode()


def _nested(depth: int, leaf: str = '"x"') -> str:
    opener, closer = ("[", "]") if depth % 2 else ('{"a":', "}")
    return opener * depth + leaf + closer * depth


def _odd_value(rng: random.Random) -> Any:
    return rng.choice(
        [
            None, True, False, 0, -1, 1, 2**31, 2**63, 2**64, 2**70, -(2**70), 10**30, 1e20, 1e308, -1e308,
            0.5, -0.0, "", "x", "auto", "\u0000", "\ud7ff\ue000", "é" * 10, "x" * 5000, [], [None], {},
            {"a": 1}, [[[]]], {"type": 1}, ["x"] * 200, "9" * 40,
        ]
    )  # fmt: skip


def _wrong_field(rng: random.Random) -> Probe:
    body = _base(rng)
    body[rng.choice(FIELDS)] = _odd_value(rng)
    return Probe("wrong_field", body=_dumps(body))


def _missing_field(rng: random.Random) -> Probe:
    body = _base(rng)
    body.pop(rng.choice(["model", "messages"]))
    return Probe("missing_field", body=_dumps(body))


def _bad_message(rng: random.Random) -> Probe:
    body = _base(rng)
    message = rng.choice(body["messages"])
    key = rng.choice(["role", "content", "tool_call_id", "tool_calls", "name", "refusal"])
    message[key] = _odd_value(rng)
    if rng.random() < 0.3:
        message["content"] = [_odd_value(rng) for _ in range(rng.randrange(1, 4))]
    return Probe("bad_message", body=_dumps(body))


def _deep(rng: random.Random) -> Probe:
    depth = rng.choice([63, 64, 65, 100, 253, 254, 255, 256, 500, 1000, 1023, 1024, 1025, 5000])
    where = rng.choice(["content", "tools", "metadata", "extra", "response_format"])
    nested = _nested(depth)
    msg = '{"role": "user", "content": "hi"}'
    if where == "content":
        msg = '{"role": "user", "content": [{"type": "text", "text": "hi", "x": ' + nested + "}]}"
    tail = ""
    if where == "tools":
        tail = ', "tools": [{"type": "function", "function": {"name": "f", "parameters": ' + nested + "}}]"
    elif where == "metadata":
        tail = ', "metadata": {"note": ' + nested + "}"
    elif where == "extra":
        tail = ', "extra": ' + nested
    elif where == "response_format":
        tail = ', "response_format": {"type": "json_schema", "json_schema": {"schema": ' + nested + "}}"
    raw = '{"model": "auto", "messages": [' + msg + "]" + tail + "}"
    return Probe("deep", body=raw.encode())


def _huge(rng: random.Random) -> Probe:
    body = _base(rng)
    choice = rng.randrange(4)
    if choice == 0:
        body["messages"] = [{"role": "user", "content": "a"}] * rng.choice([4096, 4097, 20000])
    elif choice == 1:
        body["messages"][-1]["content"] = "word " * rng.choice([40_000, 120_000])
    elif choice == 2:
        body["tools"] = [
            {"type": "function", "function": {"name": f"f{i}"}} for i in range(rng.choice([128, 129, 1000]))
        ]
    else:
        body["max_tokens"] = rng.choice([128_000, 199_990, 250_000, 2**31 - 1])
    return Probe("huge", body=_dumps(body))


def _broken_json(rng: random.Random) -> Probe:
    raw = bytearray(_dumps(_base(rng)))
    choice = rng.randrange(6)
    if choice == 0:
        raw = raw[: rng.randrange(len(raw))]
    elif choice == 1:
        for _ in range(rng.randrange(1, 6)):
            raw[rng.randrange(len(raw))] = rng.randrange(256)
    elif choice == 2:
        raw = bytearray(b"\xef\xbb\xbf") + raw  # a byte-order mark
    elif choice == 3:
        raw = bytearray(raw.replace(b'"hi"', b'"\xff\xfe"').replace(b'"auto"', b'"\xc3("'))
    elif choice == 4:
        raw = bytearray(
            rng.choice([b"", b"null", b"[]", b"1e999", b'"x"', b"{}", b'{"model": "auto"}', b"\x00" * 10])
        )
    else:
        raw = bytearray(raw.replace(b'"hi"', b'"\\ud800"'))  # a lone surrogate escape
    return Probe("broken_json", body=bytes(raw))


def _hint(rng: random.Random) -> Any:
    return rng.choice(
        [
            "code", "CODE", " qa ", "high", "critical", "draft", "execution", "nope", "", "0", "-1", "800",
            "99999999999999999999", "1e20", "NaN", "inf", "１２３", "gold", "g" * 65, "x" * 4000, "a\tb",
            "execution\r", "review", "latency", "🙂",
        ]
    )  # fmt: skip


def _hint_header(rng: random.Random) -> Probe:
    headers = {rng.choice(HINT_HEADERS): _hint(rng) for _ in range(rng.randrange(1, 4))}
    headers = {k: v for k, v in headers.items() if "\r" not in v and "\n" not in v}
    # Non-latin-1 text cannot go in an HTTP header as str: send its UTF-8 bytes, as a raw client would.
    headers = {k: v.encode().decode("latin-1") for k, v in headers.items()}
    return Probe("hint_header", headers=headers, body=_dumps(_base(rng)))


def _hint_metadata(rng: random.Random) -> Probe:
    body = _base(rng)
    key = rng.choice(HINT_KEYS)
    name = key if rng.random() < 0.5 else f"tierwise_{key}"
    body["metadata"] = {name: rng.choice([_hint(rng), _odd_value(rng)])}
    return Probe("hint_metadata", body=_dumps(body))


def _encoding(rng: random.Random) -> Probe:
    good = _dumps(_base(rng))
    encoding, data = rng.choice(
        [
            ("gzip", b"not gzip"),
            ("gzip", gzip.compress(good)[:-5]),
            ("deflate", b"xx"),
            ("br", good),
            ("zstd", good),
            ("gzip, gzip, gzip", good),
            ("identity, gzip", b"\x1f\x8b\x08\x00junk"),
            ("gzip", gzip.compress(b'{"model": "auto", "x": "' + b"a" * (9 * 1024 * 1024) + b'"}')),
        ]
    )
    return Probe("encoding", headers={"Content-Encoding": encoding}, body=data)


def _feedback(rng: random.Random) -> Probe:
    body = rng.choice(
        [
            {"request_id": "req_nope", "score": 1},
            {"request_id": _odd_value(rng), "score": _odd_value(rng)},
            {"request_id": "req_x", "score": 0.5, "comment": "x" * 3000},
            {"request_id": "req_x", "score": 0.5, "extra": 1},
            _odd_value(rng),
        ]
    )
    return Probe("feedback", path="/v1/feedback", body=_dumps(body))


def _path(rng: random.Random) -> Probe:
    method, path = rng.choice(
        [
            ("GET", CHAT),
            ("PUT", CHAT),
            ("POST", "/v1/nope"),
            ("POST", "/v1/models"),
            ("DELETE", "/v1/feedback"),
        ]
    )
    return Probe("path", method=method, path=path, body=b"{}")


def _valid(rng: random.Random) -> Probe:
    return Probe("valid", body=_dumps(_base(rng)), valid=True)


_MAKERS: tuple[tuple[Callable[[random.Random], Probe], int], ...] = (
    (_valid, 5),
    (_wrong_field, 6),
    (_missing_field, 1),
    (_bad_message, 4),
    (_deep, 3),
    (_huge, 2),
    (_broken_json, 4),
    (_hint_header, 4),
    (_hint_metadata, 4),
    (_encoding, 2),
    (_feedback, 2),
    (_path, 1),
)


def hostile_requests(seed: int, n: int) -> Iterator[Probe]:
    """``n`` probes, the same for the same ``seed``."""
    rng = random.Random(seed)
    makers = [m for m, _ in _MAKERS]
    weights = [w for _, w in _MAKERS]
    for _ in range(n):
        probe = rng.choices(makers, weights)[0](rng)
        probe.headers.setdefault("Content-Type", "application/json")
        yield probe


@dataclass(slots=True)
class FuzzResult:
    """What a server answered to a run of probes."""

    statuses: dict[int, int] = field(default_factory=dict)  # HTTP status -> count
    server_errors: list[str] = field(default_factory=list)  # "kind status: body" of every 5xx
    hangs: list[str] = field(default_factory=list)  # probes with no answer within the timeout
    invalid_answers: list[str] = field(default_factory=list)  # a 4xx that is not an OpenAI error body
    failed_valid: list[str] = field(default_factory=list)  # well-formed requests not answered 200
    answered_ids: set[str] = field(default_factory=set)  # x-tierwise-request-id of every 200

    @property
    def sent(self) -> int:
        return sum(self.statuses.values()) + len(self.hangs)


async def send_probes(
    base: str, probes: list[Probe], *, concurrency: int = 8, timeout_s: float = 20.0
) -> FuzzResult:
    """Send ``probes`` to the server at ``base`` (``http://host:port``), ``concurrency`` at a time."""
    import asyncio

    import aiohttp
    import orjson

    result = FuzzResult()
    queue = list(reversed(probes))

    async def one(http: aiohttp.ClientSession, probe: Probe) -> None:
        try:
            async with asyncio.timeout(timeout_s):
                async with http.request(
                    probe.method,
                    base + probe.path,
                    data=probe.body,
                    headers=probe.headers,
                    skip_auto_headers=["Content-Encoding"],
                ) as r:
                    payload = await r.read()
                    status = r.status
                    request_id = r.headers.get("x-tierwise-request-id")
        except TimeoutError:
            result.hangs.append(probe.kind)
            return
        result.statuses[status] = result.statuses.get(status, 0) + 1
        if status >= 500:
            result.server_errors.append(f"{probe.kind} {status}: {payload[:300]!r}")
        elif status >= 400:
            try:
                error = orjson.loads(payload)["error"]
                assert isinstance(error["message"], str) and error["type"]
            except (orjson.JSONDecodeError, KeyError, TypeError, AssertionError):
                result.invalid_answers.append(f"{probe.kind} {status}: {payload[:300]!r}")
        if status == 200 and probe.path == CHAT and request_id:
            result.answered_ids.add(request_id)
        if probe.valid and status != 200:
            result.failed_valid.append(f"{probe.kind} {status}: {payload[:300]!r}")

    async def worker(http: aiohttp.ClientSession) -> None:
        while queue:
            await one(http, queue.pop())

    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector, auto_decompress=False) as http:
        await asyncio.gather(*(worker(http) for _ in range(concurrency)))
    return result
