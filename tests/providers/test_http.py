"""The shared HTTP plumbing of the adapters: SSE decoding, Retry-After, error classification."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from itertools import pairwise

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tierwise.config import Timeouts
from tierwise.errors import (
    ProviderError,
    UpstreamRateLimited,
    UpstreamRejected,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from tierwise.http import HttpPool
from tierwise.providers._http import SSEDecoder, Upstream, error_class, parse_retry_after

WIRE = (
    b": ping\n\n"
    b'event: message_start\ndata: {"a": 1}\n\n'
    b"data: line one\ndata: line two\n\n"
    b"id: 7\nretry: 10\nunknown: x\ndata:no-space\n\n"
    b"event: empty\n\n"
    b"data: [DONE]\n\n"
)
EVENTS = [("message_start", b'{"a": 1}'), ("message", b"line one\nline two"), ("message", b"no-space"),
          ("message", b"[DONE]")]  # fmt: skip


def decode(pieces: list[bytes]) -> list[tuple[str, bytes]]:
    decoder = SSEDecoder()
    events = [event for piece in pieces for event in decoder.feed(piece)]
    return events + decoder.flush()


def split(wire: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({0, len(wire), *(c % (len(wire) + 1) for c in cuts)})
    return [wire[a:b] for a, b in pairwise(points)]


def test_sse_whole_body() -> None:
    assert decode([WIRE]) == EVENTS


@given(
    st.lists(st.integers(min_value=0, max_value=10_000), max_size=30),
    st.sampled_from([b"\n", b"\r\n", b"\r"]),
)
def test_sse_any_split_and_any_line_ending(cuts: list[int], eol: bytes) -> None:
    wire = WIRE.replace(b"\n", eol)
    assert decode(split(wire, cuts)) == EVENTS


def test_sse_unterminated_last_event_is_kept_at_the_end() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"data: 1\n\ndata: [DO") == [("message", b"1")]
    assert decoder.feed(b"NE]") == []
    assert decoder.flush() == [("message", b"[DONE]")]


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"retry-after": "3"}, 3.0),
        ({"retry-after": "-3"}, 0.0),
        ({"retry-after": "nan"}, None),
        ({"retry-after": "soon"}, None),
        ({"retry-after-ms": "250"}, 0.25),
        ({"retry-after-ms": "junk", "retry-after": "2"}, 2.0),
        ({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}, 0.0),  # in the past
        ({}, None),
    ],
)
def test_parse_retry_after(headers: dict[str, str], expected: float | None) -> None:
    assert parse_retry_after(headers) == expected


def test_parse_retry_after_future_date() -> None:
    when = format_datetime(datetime.now(UTC) + timedelta(seconds=60), usegmt=True)
    seconds = parse_retry_after({"retry-after": when})
    assert seconds is not None and 57 <= seconds <= 60


@pytest.mark.parametrize(
    ("status", "cls"),
    [(400, UpstreamRejected), (401, UpstreamRejected), (403, UpstreamRejected), (404, UpstreamRejected),
     (408, UpstreamTimeout), (409, UpstreamUnavailable), (413, UpstreamRejected), (422, UpstreamRejected),
     (429, UpstreamRateLimited), (500, UpstreamUnavailable), (503, UpstreamUnavailable),
     (529, UpstreamUnavailable)],
)  # fmt: skip
def test_error_class(status: int, cls: type[ProviderError]) -> None:
    assert error_class(status) is cls


@pytest.mark.parametrize(
    ("error", "cls", "status"),
    [
        ({"type": "overloaded_error", "message": "Overloaded"}, UpstreamUnavailable, 529),
        ({"type": "api_error", "message": "boom"}, UpstreamUnavailable, 500),
        ({"type": "rate_limit_error", "message": "slow down"}, UpstreamRateLimited, 429),
        ({"type": "invalid_request_error", "message": "bad"}, UpstreamRejected, 400),
        ({"type": "authentication_error", "message": "who"}, UpstreamRejected, 401),
        ({"type": "timeout_error", "message": "late"}, UpstreamUnavailable, 504),
        ({"type": "server_error", "message": "oops", "code": None}, UpstreamUnavailable, 500),
        ({"type": "BadRequestError", "message": "vllm", "code": 400}, UpstreamRejected, 400),
        ({"message": "rate", "code": "rate_limit_exceeded"}, UpstreamRateLimited, 429),
        ({"type": "something_new", "message": "?"}, UpstreamUnavailable, None),
        ("plain string error", UpstreamUnavailable, None),
    ],
)
def test_error_objects_in_bodies_and_streams(
    error: object, cls: type[ProviderError], status: int | None
) -> None:
    upstream = Upstream(provider="p", url="http://127.0.0.1:1/", headers={}, timeouts=Timeouts(),
                        http=HttpPool(), secret="sk-secret")  # fmt: skip
    exc = upstream.body_error("m", {"type": "error", "error": error})
    assert type(exc) is cls
    assert exc.status == status
    assert exc.model == "m"
    assert str(exc).startswith("m: ")


def test_secret_is_redacted_before_clipping() -> None:
    secret = "sk-" + "k" * 40
    upstream = Upstream(provider="p", url="http://127.0.0.1:1/", headers={}, timeouts=Timeouts(),
                        http=HttpPool(), secret=secret)  # fmt: skip
    payload = ('{"error": {"message": "' + "x" * 280 + secret + '"}}').encode()
    exc = upstream.status_error("m", 401, payload, {})
    assert secret[:20] not in str(exc)


@pytest.mark.parametrize("offset", [170, 185, 195, 200, 290])
def test_a_key_straddling_the_cut_of_a_non_json_body_never_survives(offset: int) -> None:
    # A non-JSON error body used to be cut to 200 bytes before redaction, so a key across byte 200
    # reached the client's 502 and the ledger's error column (33 of its 37 characters).
    secret = "sk-upstream-SECRET-0123456789abcdefgh"
    upstream = Upstream(provider="p", url="http://127.0.0.1:1/", headers={}, timeouts=Timeouts(),
                        http=HttpPool(), secret=secret)  # fmt: skip
    payload = ("<html>" + "y" * (offset - 6) + secret + " oops</html>").encode()
    for exc in (upstream.invalid_json("m", payload), upstream.status_error("m", 502, payload, {})):
        text = str(exc)
        assert all(secret[i : i + 8] not in text for i in range(len(secret) - 7)), text
