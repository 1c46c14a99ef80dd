"""What the gateway writes: OpenAI-format error bodies, tierwise headers, SSE frames."""

from __future__ import annotations

import math
from typing import Any

import orjson

from ..errors import (
    AccessDenied,
    BudgetExceeded,
    ChainExhausted,
    RateLimited,
    RequestError,
    StateUnavailable,
    TierwiseError,
)
from ..policy.engine import Decision
from .web import Response

SSE_DONE = b"data: [DONE]\n\n"
SSE_HEADERS = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def _header_safe(text: str, limit: int = 300) -> str:
    """Reasons go into a header: ASCII only, one line, bounded."""
    clean = text.replace("→", "->").replace("≥", ">=").replace("≤", "<=").replace("\n", " ")
    return clean.encode("ascii", "replace").decode("ascii")[:limit]


def tierwise_headers(
    *,
    model: str,
    tier: str,
    decision: Decision,
    request_id: str,
    cost_usd: float | None,
    cache: str | None = None,
) -> dict[str, str]:
    headers = {
        "x-tierwise-model": model,
        "x-tierwise-tier": tier,
        "x-tierwise-reason": _header_safe(decision.reason),
        "x-tierwise-request-id": request_id,
        "x-tierwise-policy-version": decision.policy_version,
    }
    if cost_usd is not None:
        headers["x-tierwise-cost-usd"] = f"{cost_usd:.8f}"
    if decision.arm is not None:  # policy.canary: which arm's policy served it
        headers["x-tierwise-canary-arm"] = decision.arm
    if cache is not None:  # answered from the response cache, at $0
        headers["x-tierwise-cache"] = "hit"
        headers["x-tierwise-cache-kind"] = cache
    return headers


def error_body(message: str, *, type: str, param: str | None = None, code: str | None = None) -> bytes:
    return orjson.dumps({"error": {"message": message, "type": type, "param": param, "code": code}})


def error_response(exc: BaseException, *, request_id: str | None = None) -> Response:
    """The OpenAI error JSON for any exception, with the status a client can act on, and the request id
    of its ledger row when it has one."""
    request_id = request_id or getattr(exc, "request_id", None)
    headers = {"x-tierwise-request-id": request_id} if request_id else None
    if isinstance(exc, RequestError):
        status, body = exc.status, error_body(exc.message, type=exc.type, param=exc.param, code=exc.code)
        if exc.retry_after is not None:
            # Whole seconds, at least 1: the only form every HTTP client parses.
            headers = {**(headers or {}), "Retry-After": str(max(1, math.ceil(exc.retry_after)))}
    elif isinstance(exc, ChainExhausted):
        status = exc.status
        body = orjson.dumps(
            {
                "error": {
                    "message": str(exc),
                    "type": "invalid_request_error" if status == 400 else "upstream_error",
                    "param": "messages" if exc.too_long else None,
                    "code": exc.code,
                    "attempts": [
                        {"model": f.model, "error": f.error, "status": f.status, "message": f.message}
                        for f in exc.failures
                    ],
                }
            }
        )
    elif isinstance(exc, AccessDenied):
        kind = "authentication_error" if exc.status == 401 else "permission_error"
        status, body = exc.status, error_body(exc.message, type=kind, code=exc.code)
    elif isinstance(exc, BudgetExceeded):
        status, body = 429, error_body(exc.message, type="insufficient_quota", code="budget_exceeded")
        headers = {**(headers or {}), **_retry_after(exc.retry_after)}
        if exc.reset_at is not None:
            headers["x-tierwise-budget-reset"] = str(int(exc.reset_at))
    elif isinstance(exc, RateLimited):
        status, body = 429, error_body(exc.message, type="rate_limit_error", code="rate_limit_exceeded")
        headers = {**(headers or {}), **exc.headers, **_retry_after(exc.retry_after)}
    elif isinstance(exc, StateUnavailable):
        # What the store holds (which host, its error) is for the operator's log, not the client.
        status = 503
        body = error_body("the gateway cannot check API keys now; retry shortly", type="server_error")
        headers = {**(headers or {}), **_retry_after(exc.retry_after or 1.0)}
    elif isinstance(exc, TierwiseError):
        status, body = 500, error_body(str(exc), type="server_error")
    else:
        status, body = 500, error_body("internal error; see the gateway log", type="server_error")
    return Response(body, status=status, headers=headers)


def _retry_after(seconds: float | None) -> dict[str, str]:
    # Whole seconds, at least 1: the only form every HTTP client parses.
    return {} if seconds is None else {"Retry-After": str(max(1, math.ceil(seconds)))}


def sse_error_event(message: str, *, type: str = "upstream_error") -> bytes:
    """A ``stream_interrupted`` error event: what ends a stream that cannot end with [DONE].

    The ``openai`` SDKs raise an APIError when a data event carries an ``error`` object.
    """
    payload = {"error": {"message": message, "type": type, "param": None, "code": "stream_interrupted"}}
    return b"data: " + orjson.dumps(payload) + b"\n\n"


def sse_frame(raw: bytes) -> bytes:
    return b"data: " + raw + b"\n\n"


def json_response(payload: Any, *, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(payload), status=status, headers=headers)
