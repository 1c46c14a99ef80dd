"""The HTTP side shared by the adapters that speak JSON over HTTP with SSE streams (``openai.py``,
``anthropic.py``): one POST helper with the timeouts, one SSE decoder, and the translation of every
HTTP client failure and HTTP error status into the ProviderError tree — in this one place (STYLE habit 4),
so the adapters only translate wire formats.

Every message built here goes through ``Upstream._error``, which removes the API key: an upstream
may echo it back in an error body, and a message must never carry it (STYLE habit 5).
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Callable, Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import orjson

from ..config import Timeouts
from ..errors import (
    ProviderError,
    StreamInterrupted,
    UpstreamRateLimited,
    UpstreamRejected,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from ..http import (
    ClientError,
    ConnectError,
    ConnectTimeout,
    Disconnected,
    Endpoint,
    HttpPool,
    PayloadError,
    ReadTimeout,
    Response,
)
from ..redact import Redactor

MESSAGE_CHARS = 300  # upstream error messages are cut to this length
_DRAIN_S = 0.5  # after the end marker, wait this long at most for the body's end, to reuse the connection

# Error ``type``s sent inside a body or a stream (Anthropic's and OpenAI's), with the HTTP status
# they stand for; anything unknown is treated as a server-side failure.
_STATUS_BY_TYPE: dict[str, int] = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "billing_error": 402,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "rate_limit_exceeded": 429,
    "api_error": 500,
    "server_error": 500,
    "timeout_error": 504,
    "overloaded_error": 529,
}


def error_class(status: int) -> type[ProviderError]:
    """Which ProviderError an HTTP status means: 429 rate limited, 408 timeout, 409 (lock timeout)
    and 5xx unavailable (both worth retrying), any other status rejected (retrying cannot help)."""
    if status == 429:
        return UpstreamRateLimited
    if status == 408:
        return UpstreamTimeout
    if status >= 500 or status == 409:
        return UpstreamUnavailable
    return UpstreamRejected


def parse_retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds to wait, from ``retry-after-ms`` (OpenAI) or ``Retry-After`` (seconds or an HTTP-date)."""
    value = headers.get("retry-after-ms")
    if value:
        try:
            ms = float(value)
        except ValueError:
            pass
        else:
            if math.isfinite(ms):
                return max(0.0, ms / 1000)
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        return max(0.0, (when - datetime.now(UTC)).total_seconds())
    return max(0.0, seconds) if math.isfinite(seconds) else None


def _message_of(doc: Any) -> str | None:
    """The human message of an error document in any of the usual shapes: OpenAI and Anthropic
    ``{"error": {"message": …}}``, ``{"error": "…"}``, ``{"message": …}``, FastAPI ``{"detail": …}``."""
    if not isinstance(doc, dict):
        return None
    error = doc.get("error")
    if isinstance(error, dict):
        error = error.get("message") or error.get("type") or error.get("code")
    for text in (error, doc.get("message"), doc.get("detail")):
        if isinstance(text, str) and text.strip():
            return text
    return None


def describe_body(payload: bytes) -> str:
    """The upstream's error message from a response body, or the body itself when it is not JSON."""
    try:
        text = _message_of(orjson.loads(payload))
    except orjson.JSONDecodeError:
        text = None
    if text is None:
        text = payload.decode("utf-8", "replace")
    return text.strip() or "(empty body)"


class SSEDecoder:
    """Incremental decoder of a ``text/event-stream`` body (the WHATWG rules these APIs follow).

    ``feed`` takes bytes as they arrive, however the network split them, and returns the complete
    events as ``(event name, data)`` pairs; ``data`` is the event's ``data:`` lines joined by ``\\n``.
    Comments (``:`` lines, used as keep-alives) and the ``id``/``retry`` fields are ignored.
    """

    __slots__ = ("_cr", "_data", "_event", "_tail")

    def __init__(self) -> None:
        self._tail = b""  # an unfinished line
        self._data: list[bytes] = []
        self._event = "message"
        self._cr = False  # the previous piece ended in CR: a LF starting the next one belongs to it

    def feed(self, piece: bytes) -> list[tuple[str, bytes]]:
        if self._cr and piece[:1] == b"\n":
            piece = piece[1:]
        if b"\r" in piece:
            self._cr = piece.endswith(b"\r")
            piece = piece.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        else:
            self._cr = False
        lines = (self._tail + piece).split(b"\n") if self._tail else piece.split(b"\n")
        self._tail = lines.pop()
        return self._lines(lines)

    def flush(self) -> list[tuple[str, bytes]]:
        """At the end of the body: the unterminated last event, if any (a lenient reading: some
        servers close right after their last ``data:`` line without the blank line)."""
        lines = [self._tail, b""] if self._tail else [b""]
        self._tail = b""
        return self._lines(lines)

    def _lines(self, lines: list[bytes]) -> list[tuple[str, bytes]]:
        events: list[tuple[str, bytes]] = []
        for line in lines:
            if not line:
                if self._data:
                    events.append((self._event, b"\n".join(self._data)))
                    self._data = []
                self._event = "message"
            elif line[0] == 0x3A:  # ":" starts a comment
                continue
            else:
                field, _, value = line.partition(b":")
                if value[:1] == b" ":
                    value = value[1:]
                if field == b"data":
                    self._data.append(value)
                elif field == b"event":
                    self._event = value.decode("utf-8", "replace")
        return events


class Upstream:
    """One upstream endpoint: its URL, fixed headers and timeouts, and the translation of failures.

    ``provider`` (the provider's configured name) and the model name passed to each call are what
    error messages show; ``secret`` is the API key, which is removed from any message. Raises
    ValueError for a URL that is not http(s) or a header that could inject another.
    """

    def __init__(
        self,
        *,
        provider: str,
        url: str,
        headers: dict[str, str],
        timeouts: Timeouts,
        http: HttpPool,
        secret: str | None,
    ) -> None:
        self.provider = provider
        self.url = url
        self.timeouts = timeouts
        self._endpoint = Endpoint(url, headers)
        self._http = http
        self._redact = Redactor([secret])

    # -- requests ---------------------------------------------------------------------------------

    async def post_json(self, model: str, body: dict[str, Any]) -> Any:
        """POST ``body`` and return the parsed JSON answer; every failure is a ProviderError."""
        t = self.timeouts
        try:
            resp = await self._http.request(
                self._endpoint,
                orjson.dumps(body),
                connect_timeout=t.connect,
                read_timeout=t.first_byte,
                total_timeout=t.total,
            )
            try:
                payload = await resp.read()
            finally:
                resp.close()  # a no-op once the body was read: the connection is back in the pool
        except TimeoutError as exc:
            raise self._timeout(model, exc) from exc
        except (ClientError, OSError) as exc:
            raise self._connection_error(UpstreamUnavailable, model, exc) from exc
        if not 200 <= resp.status < 300:
            raise self.status_error(model, resp.status, payload, resp.headers)
        try:
            return orjson.loads(payload)
        except orjson.JSONDecodeError as exc:
            raise self.invalid_json(model, payload) from exc

    async def post_sse(
        self, model: str, body: dict[str, Any], *, end: Callable[[str, bytes], bool]
    ) -> AsyncIterator[tuple[str, bytes]]:
        """POST ``body`` and yield the answer's SSE events as ``(event name, data)`` until ``end``
        accepts one (that one is yielded too). A body that ends before it raises StreamInterrupted.

        Timeouts: the connection within ``connect``, the first event within ``first_byte`` of the
        start, each later event within ``read`` of the previous one. No timeout spans a ``yield``:
        a slow consumer is not the upstream's fault. No total: a stream that keeps producing may
        run as long as it needs.
        """
        t = self.timeouts
        try:
            resp = await self._http.request(
                self._endpoint, orjson.dumps(body), connect_timeout=t.connect, total_timeout=t.first_byte
            )
        except TimeoutError as exc:
            raise self._timeout(model, exc, streaming=True) from exc
        except (ClientError, OSError) as exc:
            raise self._connection_error(UpstreamUnavailable, model, exc) from exc
        finished = False
        started = False
        try:
            if not 200 <= resp.status < 300 or resp.content_type == "application/json":
                raise await self._not_a_stream(model, resp)
            decoder = SSEDecoder()
            while True:
                try:
                    piece = await resp.readany()
                except TimeoutError as exc:
                    raise self._timeout(model, exc, streaming=True, started=started) from exc
                except (ClientError, OSError) as exc:
                    raise self._connection_error(StreamInterrupted, model, exc) from exc
                events = decoder.feed(piece) if piece else decoder.flush()
                if events and not started:
                    started = True
                    resp.set_timeouts(read=t.read, total=None)  # from now on, silences are bounded
                for event, data in events:
                    yield event, data
                    if end(event, data):
                        finished = await self._drain(resp)
                        return
                if not piece:
                    raise self._error(
                        StreamInterrupted,
                        model,
                        f"{model}: the stream from {self.provider} stopped before its end marker",
                    )
        finally:
            if finished:
                resp.release()
            else:
                resp.close()  # abandoned mid-body: the connection cannot be reused

    async def _drain(self, resp: Response) -> bool:
        """Read the rest of a finished stream (normally just the chunked-encoding trailer) so the
        connection goes back to the pool; False if it does not end promptly."""
        resp.set_timeouts(read=None, total=_DRAIN_S)
        try:
            while await resp.readany():
                pass
        except (TimeoutError, ClientError, OSError):
            return False
        return True

    async def _not_a_stream(self, model: str, resp: Response) -> ProviderError:
        """The error for an answer to a streaming request that is not a stream: an HTTP error, or a
        JSON body (some servers report errors with 200 and JSON). Read within the request's
        ``first_byte`` deadline."""
        try:
            payload = await resp.read()
        except TimeoutError as exc:
            return self._timeout(model, exc, streaming=True)
        except (ClientError, OSError) as exc:
            return self._connection_error(UpstreamUnavailable, model, exc)
        if not 200 <= resp.status < 300:
            return self.status_error(model, resp.status, payload, resp.headers)
        try:
            doc = orjson.loads(payload)
        except orjson.JSONDecodeError:
            return self.invalid_json(model, payload)
        return self.body_error(model, doc, what="a JSON body instead of a stream")

    # -- errors -----------------------------------------------------------------------------------

    def _error(self, cls: type[ProviderError], model: str, message: str, **fields: Any) -> ProviderError:
        return cls(self._redact(message), model=model, **fields)

    def _clip(self, text: str) -> str:
        # Redacted before it is cut, so a key the cut would split cannot survive as a prefix.
        text = self._redact(" ".join(text[: MESSAGE_CHARS * 4].split()))
        return text if len(text) <= MESSAGE_CHARS else text[: MESSAGE_CHARS - 1] + "…"

    def status_error(
        self, model: str, status: int, payload: bytes, headers: Mapping[str, str]
    ) -> ProviderError:
        """The ProviderError for an HTTP error answer, with the upstream's own message."""
        cls = error_class(status)
        message = f"{model}: HTTP {status} from {self.provider}: {self._clip(describe_body(payload))}"
        if cls is UpstreamRateLimited:
            return self._error(cls, model, message, status=status, retry_after=parse_retry_after(headers))
        return self._error(cls, model, message, status=status)

    def body_error(self, model: str, doc: Any, *, what: str = "an unexpected body") -> ProviderError:
        """The ProviderError for an error object found in a body or a stream event (``{"error": …}``),
        or for a document that is not the expected shape."""
        error = doc.get("error") if isinstance(doc, dict) else None
        if not error:
            text = orjson.dumps(doc).decode() if doc is not None else "null"
            return self._error(
                UpstreamUnavailable, model, f"{model}: {what} from {self.provider}: {self._clip(text)}"
            )
        status = None
        kind = ""
        if isinstance(error, dict):
            code = error.get("code")
            kind = str(error.get("type") or code or "")
            if isinstance(code, int) and 400 <= code < 600:
                status = code
            elif isinstance(code, str) and code.isdigit() and 400 <= int(code) < 600:
                status = int(code)
            else:
                status = _STATUS_BY_TYPE.get(kind) or _STATUS_BY_TYPE.get(str(code or ""))
        cls = error_class(status) if status else UpstreamUnavailable
        text = self._clip(_message_of(doc) or str(error))
        message = f"{model}: {kind or 'error'} from {self.provider}: {text}"
        return self._error(cls, model, message, status=status)

    def invalid_json(self, model: str, payload: bytes) -> ProviderError:
        snippet = self._clip(payload[: MESSAGE_CHARS * 4].decode("utf-8", "replace")) or "(empty body)"
        return self._error(
            UpstreamUnavailable, model, f"{model}: invalid JSON from {self.provider}: {snippet}"
        )

    def _timeout(
        self, model: str, exc: BaseException, *, streaming: bool = False, started: bool = False
    ) -> ProviderError:
        t = self.timeouts
        if isinstance(exc, ConnectTimeout):
            what = f"could not connect within {t.connect:g}s"
        elif started:
            what = f"sent nothing for {t.read:g}s mid-stream (timeouts.read)"
        elif streaming:
            what = f"sent no event within {t.first_byte:g}s (timeouts.first_byte)"
        elif isinstance(exc, ReadTimeout):
            what = f"sent nothing for {t.first_byte:g}s (timeouts.first_byte)"
        else:
            what = f"did not answer within {t.total:g}s (timeouts.total)"
        return self._error(UpstreamTimeout, model, f"{model}: {self.provider} {what}")

    def _connection_error(self, cls: type[ProviderError], model: str, exc: BaseException) -> ProviderError:
        if isinstance(exc, ConnectError):
            what = (
                f"cannot connect to {self.provider} at {exc.host}:{exc.port}: "
                f"{exc.os_error.strerror or exc.os_error}"
            )
        elif isinstance(exc, Disconnected):
            what = f"{self.provider} closed the connection"
        elif isinstance(exc, PayloadError):
            what = f"the answer from {self.provider} was cut off"
        else:
            what = f"connection to {self.provider} failed: {type(exc).__name__}: {exc}"
        return self._error(cls, model, f"{model}: {self._clip(what)}")
