"""OpenTelemetry spans of routed requests (``server.tracing: true``, the ``otel`` extra; off by default).

Each request becomes one span, ``tierwise.request`` (kind SERVER), with a child span (kind CLIENT) per
upstream call it made — the answer, retries, fallbacks, the cascade's samples and judge, the
classifier. They are made from the request's ledger row when the row is written, with the times the
row recorded, so tracing adds nothing to the request's own path and every span agrees with the ledger.
A ``traceparent`` header on the request (W3C Trace Context) makes the request span its child, so the
routing shows up inside the caller's trace.

Attributes follow OpenTelemetry's GenAI conventions where one fits (``gen_ai.request.model``,
``gen_ai.response.model``, ``gen_ai.usage.input_tokens`` …) and are ``tierwise.*`` otherwise (tier,
task, rule, reason, policy version, canary arm, cost, counterfactual cost, the answer's path). Never
the prompt, the answer or a key: the key's *name* (``tierwise.key_id``) at most.

Where spans go is the OpenTelemetry SDK's business: an application that routes in-process with its own
tracer provider gets them there; ``tierwise serve`` installs the SDK's provider with the exporter the
standard environment variables name (``OTEL_TRACES_EXPORTER``: ``otlp`` by default over HTTP to
``OTEL_EXPORTER_OTLP_ENDPOINT``, or ``console``; ``OTEL_SERVICE_NAME`` …).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from .answer_path import answer_path
from .errors import ConfigError
from .ledger.base import LedgerRow

try:
    from opentelemetry import context, propagate, trace
    from opentelemetry.trace import SpanKind, Status, StatusCode
except ImportError:  # the otel extra is not installed; Tracing() says so
    trace = None  # type: ignore[assignment]

_INSTALL = "server.tracing needs OpenTelemetry: pip install 'tierwise[otel]'"


class Tracing:
    """Turns ledger rows into spans on a tracer (the global provider's by default)."""

    def __init__(self, tracer_provider: Any = None) -> None:
        if trace is None:
            raise ConfigError(_INSTALL)
        self._tracer = trace.get_tracer("tierwise", tracer_provider=tracer_provider)

    def record(self, row: LedgerRow, traceparent: str | None = None) -> None:
        """The spans of one request's row; ``traceparent``: the request's W3C trace context header."""
        parent = propagate.extract({"traceparent": traceparent}) if traceparent else context.Context()
        start = int(row.ts * 1e9)
        end = start + int(row.latency_ms * 1e6)
        span = self._tracer.start_span(
            "tierwise.request", context=parent, kind=SpanKind.SERVER, start_time=start,
            attributes=_request_attributes(row),
        )  # fmt: skip
        if row.status != "ok":
            span.set_status(Status(StatusCode.ERROR, row.error or row.status))
        child_context = trace.set_span_in_context(span, parent)
        offset = start
        for attempt in row.attempts:
            if attempt.status == "skipped":
                span.add_event(
                    "skipped", {"gen_ai.request.model": attempt.model, "tierwise.why": attempt.error or ""}
                )
                continue
            # An attempt's start as recorded; calls made before that field existed follow one another.
            begin = int(attempt.started_at * 1e9) if attempt.started_at is not None else offset
            finish = begin + int(attempt.latency_ms * 1e6)
            offset = finish
            call = self._tracer.start_span(
                f"tierwise.upstream {attempt.purpose}", context=child_context, kind=SpanKind.CLIENT,
                start_time=begin, attributes=_attempt_attributes(attempt),
            )  # fmt: skip
            if attempt.status not in ("ok", "rejected"):
                call.set_status(Status(StatusCode.ERROR, attempt.error or attempt.status))
            call.end(end_time=max(begin, finish))
        span.end(end_time=end)


def _request_attributes(row: LedgerRow) -> dict[str, Any]:
    decision = row.decision
    out: dict[str, Any] = {
        "tierwise.request_id": row.id,
        "gen_ai.operation.name": "embeddings" if decision.get("layer") == "embeddings" else "chat",
        "gen_ai.request.model": row.requested_model,
        "gen_ai.usage.input_tokens": row.input_tokens,
        "gen_ai.usage.output_tokens": row.output_tokens,
        "http.response.status_code": row.http_status,
        "tierwise.status": row.status,
        "tierwise.stream": row.stream,
        "tierwise.policy_version": row.policy_version,
        "tierwise.path": answer_path(row).kind,
        "tierwise.cost_usd": row.cost_usd,
        "tierwise.counterfactual_cost_usd": row.counterfactual_cost_usd,
        "tierwise.latency_ms": row.latency_ms,
    }
    optional = {
        "gen_ai.response.model": row.final_model,
        "tierwise.tier": row.tier,
        "tierwise.task": row.features.get("task"),
        "tierwise.rule": decision.get("rule"),
        "tierwise.reason": decision.get("reason"),
        "tierwise.layer": decision.get("layer"),
        "tierwise.arm": decision.get("arm"),
        "tierwise.key_id": row.key_id,
        "tierwise.ttft_ms": row.ttft_ms,
    }
    out.update(
        (k, v if isinstance(v, str | int | float | bool) else str(v))
        for k, v in optional.items()
        if v is not None
    )
    return out


def _attempt_attributes(attempt: Any) -> dict[str, Any]:
    out: dict[str, Any] = {
        "gen_ai.request.model": attempt.model,
        "gen_ai.system": attempt.provider,
        "gen_ai.usage.input_tokens": attempt.input_tokens,
        "gen_ai.usage.output_tokens": attempt.output_tokens,
        "tierwise.purpose": attempt.purpose,
        "tierwise.status": attempt.status,
        "tierwise.retry": attempt.retry,
        "tierwise.cost_usd": attempt.cost_usd,
        "tierwise.verified": attempt.verified,
    }
    if attempt.http_status is not None:
        out["http.response.status_code"] = attempt.http_status
    if attempt.ttft_ms is not None:
        out["tierwise.ttft_ms"] = attempt.ttft_ms
    if attempt.error:
        out["error.type"] = attempt.status
    return out


def install_sdk(environ: Mapping[str, str] = os.environ) -> None:
    """Install the OpenTelemetry SDK's tracer provider, exporting in batches to the exporter
    ``OTEL_TRACES_EXPORTER`` names (``otlp``, the default, over HTTP; ``console``; ``none``), unless a
    provider is installed already. For ``tierwise serve``; an embedding application installs its own."""
    if trace is None:
        raise ConfigError(_INSTALL)
    if not isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):
        return
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter

    provider = TracerProvider(
        resource=Resource.create({"service.name": environ.get("OTEL_SERVICE_NAME", "tierwise")})
    )
    kind = environ.get("OTEL_TRACES_EXPORTER", "otlp").strip().lower()
    if kind == "otlp":
        try:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        except ImportError:
            raise ConfigError(_INSTALL + " (the OTLP exporter is missing)") from None
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    elif kind == "console":
        provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter()))
    elif kind != "none":
        raise ConfigError(f"OTEL_TRACES_EXPORTER: tierwise serve knows otlp, console and none, not {kind!r}")
    trace.set_tracer_provider(provider)


def shutdown() -> None:
    """Export what is batched (``tierwise serve``, on its way out)."""
    if trace is not None:
        provider = trace.get_tracer_provider()
        if hasattr(provider, "shutdown"):
            provider.shutdown()
