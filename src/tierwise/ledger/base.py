"""What the ledger stores and the interface every ledger backend implements.

One row per request: what was asked (features, never any key; the prompt itself only when
``storage.capture_prompts`` is on), what was decided and why, every attempt, and what it cost against
the always-strongest counterfactual; and callers' feedback on answers, by request id. Rows are written
off the hot path: ``record`` enqueues onto a bounded queue and never waits; while the store cannot take
rows they wait in a local spill file and are written when it answers again; ``close`` writes (or spills)
everything accepted.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Protocol


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
    template: str | None = None  # the model's prompt template id (models[].template), if it has one
    started_at: float | None = None  # unix seconds when the call began (None: skipped, or an older row)


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


@dataclass(frozen=True, slots=True)
class LedgerHealth:
    """How the ledger is doing, for ``/healthz`` and operators.

    ``degraded``: the store's last write failed for want of the store (down, unreachable, locked), or
    rows wait in the spill to be written. The counters count since the ledger was made.
    """

    state: Literal["ok", "degraded"]
    queue_depth: int = 0  # rows accepted and not yet written or spilled
    queue_size: int = 0
    spill_bytes: int = 0  # bytes of rows waiting in the spill
    spilled_rows: int = 0  # rows set aside into the spill
    replayed_rows: int = 0  # rows written from the spill into the store
    dead_letters: int = 0  # rows no store will take as they are, kept in the dead-letter file
    lost_rows: int = 0  # rows that could be neither written nor spilled (the spill was full)
    last_error: str | None = None  # while degraded: the store's last error, class and message, no secrets

    def to_json(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__dataclass_fields__}


class Ledger(Protocol):
    """A ledger backend: SQLite (embedded) or PostgreSQL (scale-out)."""

    async def start(self) -> None:
        """Create tables if needed and start the background writer."""

    async def record(self, row: LedgerRow) -> None:
        """Accept a row for writing. Never waits on the store: a full queue sends the row to the spill."""

    async def flush(self) -> None:
        """Wait until every row accepted so far is durably written: in the store, or in the spill while
        the store is unavailable."""

    async def close(self) -> None:
        """Flush and stop the writer. Rows the store cannot take in time go to the spill, which the next
        ``start`` with the same configuration writes; only a full spill loses rows (logged at ERROR)."""

    def health(self) -> LedgerHealth:
        """The ledger's state and counters, at once (no I/O)."""
        ...

    async def fetch(self, *, since: float | None = None, limit: int | None = None) -> list[LedgerRow]:
        """Rows in arrival order (oldest first), optionally only those at or after ``since``."""
        ...

    async def count(self) -> int: ...

    async def get(self, request_id: str) -> LedgerRow | None:
        """The row of one request, if it has been written (``flush`` first to see queued rows). Raises
        LedgerUnavailable at once while the store is unavailable."""
        ...

    async def record_feedback(self, feedback: Feedback) -> None:
        """Store one feedback, durably when this returns (not through the write-behind queue). Raises
        LedgerUnavailable at once while the store is unavailable."""

    async def fetch_feedback(self, *, since: float | None = None) -> list[Feedback]:
        """Every feedback in arrival order, optionally only those at or after ``since``."""
        ...
