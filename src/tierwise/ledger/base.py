"""What the ledger stores and the interface every ledger backend implements.

One row per request: what was asked (features, never any key; the prompt itself only when
``storage.capture_prompts`` is on), what was decided and why, every attempt, and what it cost against
the always-strongest counterfactual; and callers' feedback on answers, by request id. Rows are written
off the hot path: ``record`` enqueues onto a bounded queue and only waits when the queue is full
(back-pressure, never loss); ``close`` flushes everything accepted.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(slots=True)
class Attempt:
    """One call (or skip) of one model within a request."""

    model: str
    provider: str
    status: str  # "ok", an error class name ("UpstreamTimeout" …), or "skipped"
    latency_ms: float = 0.0
    ttft_ms: float | None = None  # time to first content byte, streamed attempts only
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    http_status: int | None = None
    error: str | None = None  # a message safe to show: never a key
    retry: int = 0  # 0 for the first try of this model
    # "answer", "judge" (a cascade's review model), "sample" (agreement), "classifier"
    purpose: str = "answer"
    verified: bool = False  # an answer the cascade's verifiers checked and accepted


@dataclass(slots=True)
class LedgerRow:
    id: str
    ts: float  # unix seconds when the request arrived
    requested_model: str  # "auto", a policy name or a concrete model
    stream: bool
    features: dict[str, Any]
    decision: dict[str, Any]  # chain, tier, reason, rule, layer
    policy_version: str
    status: str  # "ok", "error", "interrupted" (stream broke after content), "cancelled"
    http_status: int
    final_model: str | None = None
    tier: str | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    counterfactual_cost_usd: float = 0.0
    latency_ms: float = 0.0
    ttft_ms: float | None = None
    error: str | None = None
    key_id: str | None = None  # the virtual key's name, never the key
    attempts: list[Attempt] = field(default_factory=list)
    # The request's messages, kept only with ``storage.capture_prompts`` (to train the learned router
    # on the gateway's own traffic); None otherwise.
    prompt: list[dict[str, Any]] | None = None


@dataclass(slots=True)
class Feedback:
    """A grade of the answer one request got: a caller's (``POST /v1/feedback``, ``Router.afeedback``)
    or the shadow model's agreement (``policy.shadow``)."""

    request_id: str
    score: float  # 0..1: 1 = the answer was good enough
    ts: float  # unix seconds when the feedback arrived
    comment: str | None = None
    # "caller" (POST /v1/feedback, Router.afeedback) or "shadow" (policy.shadow: did the shadow
    # model's answer agree with the one served)
    source: str = "caller"


class Ledger(Protocol):
    """A ledger backend: SQLite (embedded) or PostgreSQL (scale-out)."""

    async def start(self) -> None:
        """Create tables if needed and start the background writer."""

    async def record(self, row: LedgerRow) -> None:
        """Accept a row for writing. Returns at once unless the queue is full."""

    async def flush(self) -> None:
        """Wait until every row accepted so far is durably written."""

    async def close(self) -> None:
        """Flush and stop the writer. Rows accepted before close are written; only if the store keeps
        failing during close does it give up after a few tries, logging at ERROR how many rows were lost."""

    async def fetch(self, *, since: float | None = None, limit: int | None = None) -> list[LedgerRow]:
        """Rows in arrival order (oldest first), optionally only those at or after ``since``."""
        ...

    async def count(self) -> int: ...

    async def get(self, request_id: str) -> LedgerRow | None:
        """The row of one request, if it has been written (``flush`` first to see queued rows)."""
        ...

    async def record_feedback(self, feedback: Feedback) -> None:
        """Store one feedback, durably when this returns (not through the write-behind queue)."""

    async def fetch_feedback(self, *, since: float | None = None) -> list[Feedback]:
        """Every feedback in arrival order, optionally only those at or after ``since``."""
        ...
