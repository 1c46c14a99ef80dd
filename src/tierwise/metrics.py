"""Prometheus metrics of one Router, fed from the same row the ledger gets (``GET /metrics``).

Every figure is derived from the ledger row in ``observe``, so the metrics and ``tierwise report`` can
never disagree about what happened. Labels are bounded: fleet models, tiers, providers, task types,
statuses, error classes, verifier names and policy versions — never a request id, a key, a user or a
prompt. Each Router has its own registry: two routers in one process never share counters.

Latencies are histograms in seconds: ``tierwise_upstream_latency_seconds`` per answer attempt,
``tierwise_ttft_seconds`` for streams, and ``tierwise_overhead_seconds``: the request's latency less
the time its upstream calls took — tierwise's own work, plus any backoff it waited between retries.
Savings are graphable as ``tierwise_counterfactual_cost_usd_total - tierwise_cost_usd_total``; answers
served from the response cache are counted apart, in ``tierwise_cache_hits_total`` and
``tierwise_cache_saved_usd_total`` (what those answers cost when they were paid for).
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from .answer_path import answer_path
from .ledger.base import LedgerRow

# Upstream calls take 0.1 s to a minute; tierwise's own share is in the sub-millisecond range.
_CALL_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 15, 30, 60, 120)
_OVERHEAD_BUCKETS = (0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1, 5)
_NOT_ERRORS = frozenset({"ok", "rejected", "skipped", "cancelled"})


class Metrics:
    """The counters and histograms; ``observe`` each ledger row, ``exposition`` for ``/metrics``."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=False)
        r = self.registry
        self.requests = Counter(
            "tierwise_requests",
            "Requests, by the model and tier that answered, task type, status and policy version.",
            ["model", "tier", "task", "status", "policy_version"],
            registry=r,
        )
        self.escalations = Counter(
            "tierwise_escalations",
            "Answers a cascade rejected for quality, answered by a later model (reason: the verifier).",
            ["task", "from_tier", "to_tier", "reason"],
            registry=r,
        )
        self.fallbacks = Counter(
            "tierwise_fallbacks",
            "Requests the first choice could not answer (reason: why), answered by a later model.",
            ["task", "from_tier", "to_tier", "reason"],
            registry=r,
        )
        self.upstream_errors = Counter(
            "tierwise_upstream_errors",
            "Failed upstream attempts, by provider and error class.",
            ["provider", "error"],
            registry=r,
        )
        self.verdicts = Counter(
            "tierwise_cascade_verdicts",
            "Cheap answers the cascade checked: accepted, or rejected by a verifier.",
            ["model", "verdict", "verifier"],
            registry=r,
        )
        self.tokens = Counter(
            "tierwise_tokens", "Tokens of every attempt, by model and kind.", ["model", "kind"], registry=r
        )
        self.cost = Counter(
            "tierwise_cost_usd",
            "Cost of every attempt (answers, retries, rejected answers, judges, samples, classifier).",
            ["model", "purpose"],
            registry=r,
        )
        self.counterfactual = Counter(
            "tierwise_counterfactual_cost_usd",
            "What the answered requests would have cost on the always-strongest model.",
            ["task"],
            registry=r,
        )
        self.cache_hits = Counter(
            "tierwise_cache_hits", "Requests answered from the response cache, by kind.", ["kind"], registry=r
        )
        self.cache_saved = Counter(
            "tierwise_cache_saved_usd",
            "What the answers served from the cache cost when they were paid for, by kind.",
            ["kind"],
            registry=r,
        )
        self.shadow_calls = Counter(
            "tierwise_shadow_calls", "Shadow calls, by model and status.", ["model", "status"], registry=r
        )
        self.shadow_verdicts = Counter(
            "tierwise_shadow_verdicts",
            "Shadow answers compared with the served one.",
            ["served_model", "verdict"],
            registry=r,
        )
        self.judge_verdicts = Counter(
            "tierwise_shadow_judge_verdicts",
            "The served answer against the shadow baseline's, judged blind in both orders.",
            ["served_model", "verdict"],
            registry=r,
        )
        self.upstream_latency = Histogram(
            "tierwise_upstream_latency_seconds",
            "Latency of answer attempts, by model.",
            ["model"],
            buckets=_CALL_BUCKETS,
            registry=r,
        )
        self.ttft = Histogram(
            "tierwise_ttft_seconds",
            "Time to the first content of streamed requests, by model.",
            ["model"],
            buckets=_CALL_BUCKETS,
            registry=r,
        )
        self.overhead = Histogram(
            "tierwise_overhead_seconds",
            "Request latency less the time in upstream calls: tierwise's own time (and retry backoff).",
            buckets=_OVERHEAD_BUCKETS,
            registry=r,
        )
        # Each metric's child per label values, found once: ``labels()`` checks and converts its values
        # and takes a lock on every call, a few µs each, several times a request. Label values are
        # bounded (see the module docstring), so this holds as many entries as the registry does.
        self._children: dict[tuple[Any, tuple[Any, ...]], Any] = {}

    def _child(self, metric: Any, *values: Any) -> Any:
        key = (metric, values)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*values)
        return child

    def observe(self, row: LedgerRow) -> None:
        """Count one ledger row (a request, or a shadow call)."""
        if row.decision.get("layer") == "shadow":
            self._child(self.shadow_calls, row.requested_model, row.status).inc()
            self._attempts(row)
            return
        task = str(row.features.get("task", "?"))
        child = self._child
        child(
            self.requests, row.final_model or "none", row.tier or "none", task, row.status, row.policy_version
        ).inc()
        path = answer_path(row)
        if path.kind == "escalated":
            child(self.escalations, task, path.first_tier, path.final_tier or "none", path.reason).inc()
        elif path.kind == "fell_back":
            child(self.fallbacks, task, path.first_tier, path.final_tier or "none", path.reason).inc()
        if row.counterfactual_cost_usd:
            child(self.counterfactual, task).inc(row.counterfactual_cost_usd)
        cache = row.decision.get("cache")
        if cache:
            child(self.cache_hits, cache["hit"]).inc()
            child(self.cache_saved, cache["hit"]).inc(cache.get("saved_usd") or 0.0)
        upstream_s = self._attempts(row)
        if row.ttft_ms is not None and row.final_model:
            child(self.ttft, row.final_model).observe(row.ttft_ms / 1000)
        self.overhead.observe(max(0.0, row.latency_ms / 1000 - upstream_s))

    def _attempts(self, row: LedgerRow) -> float:
        """Count a row's attempts; return the seconds they took."""
        upstream_s = 0.0
        child = self._child
        for attempt in row.attempts:
            if attempt.status == "skipped":
                continue
            seconds = attempt.latency_ms / 1000
            upstream_s += seconds
            if attempt.status not in _NOT_ERRORS:
                child(self.upstream_errors, attempt.provider, attempt.status).inc()
            if attempt.purpose == "answer":
                child(self.upstream_latency, attempt.model).observe(seconds)
                if attempt.verified:
                    child(self.verdicts, attempt.model, "accepted", "").inc()
                elif attempt.status == "rejected":
                    verifier = (attempt.error or "").removeprefix("cascade: ").partition(":")[0]
                    child(self.verdicts, attempt.model, "rejected", verifier).inc()
            if attempt.input_tokens:
                child(self.tokens, attempt.model, "input").inc(attempt.input_tokens)
            if attempt.output_tokens:
                child(self.tokens, attempt.model, "output").inc(attempt.output_tokens)
            if attempt.cost_usd:
                child(self.cost, attempt.model, attempt.purpose).inc(attempt.cost_usd)
        return upstream_s

    def observe_shadow_verdict(self, served_model: str, agree: bool) -> None:
        self._child(self.shadow_verdicts, served_model, "agree" if agree else "disagree").inc()

    def observe_judge_verdict(self, served_model: str, verdict: str) -> None:
        """A judged shadow: the served answer's ``win``, ``tie`` or ``loss`` against the baseline's."""
        self._child(self.judge_verdicts, served_model, verdict).inc()

    def exposition(self) -> bytes:
        """The Prometheus text format of every metric."""
        return generate_latest(self.registry)
