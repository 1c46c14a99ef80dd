"""What do /metrics and the access log cost per request? One command:

    python bench/observability.py [--rows N]

Times, in this process's CPU, ``Metrics.observe`` of a typical ledger row (one answer attempt) and
the access log's line, against the 0.05 ms of CPU per request the project allows them together. The
access log is timed as ``tierwise serve`` writes it (``StreamAccessLog``: lines batched, one write per
50 ms) and through a ``logging`` handler (``LoggerAccessLog``, an in-process Router's default).
``make bench`` measures whole requests through ``tierwise serve``.
With the otel extra it also times the optional OpenTelemetry spans (``server.tracing``, off by
default): a request span and its upstream call's span, through the SDK's batch processor to an
exporter that drops them (what a real exporter's encoding and network cost is not counted).
"""

from __future__ import annotations

import argparse
import asyncio
import io
import logging
import time

from tierwise.access_log import LoggerAccessLog, StreamAccessLog
from tierwise.ledger.base import Attempt, LedgerRow
from tierwise.metrics import Metrics

BUDGET_US = 50.0


def typical_row(i: int) -> LedgerRow:
    return LedgerRow(
        id=f"req_{i:024x}",
        ts=time.time(),
        requested_model="auto",
        stream=False,
        features={"task": ("classify", "code", "qa")[i % 3]},
        decision={"chain": ["draft-1", "review-1"], "tier": "draft", "rule": "cheap-task", "layer": "rules"},
        policy_version="3f2a9c1b7d4e",
        status="ok",
        http_status=200,
        final_model="draft-1",
        tier="draft",
        input_tokens=70,
        output_tokens=12,
        cost_usd=0.000047,
        counterfactual_cost_usd=0.00106,
        latency_ms=1.3,
        attempts=[
            Attempt("draft-1", "cheap", "ok", latency_ms=0.9, input_tokens=70, output_tokens=12,
                    cost_usd=0.000047, http_status=200)
        ],
    )  # fmt: skip


def per_call_us(fn, rows: list[LedgerRow]) -> float:  # type: ignore[no-untyped-def]
    for row in rows[:1000]:
        fn(row)
    started = time.process_time()
    for row in rows:
        fn(row)
    return (time.process_time() - started) / len(rows) * 1e6


async def stream_access_us(rows: list[LedgerRow]) -> float:
    """``StreamAccessLog`` as the gateway runs it, inside a loop: the lines of one pass are held and
    written together, as they are within one flush interval."""
    log = StreamAccessLog(io.StringIO(), "info")

    def write(row: LedgerRow) -> None:
        log.write(row)

    cost = per_call_us(write, rows)
    log.flush()
    return cost


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=50_000)
    args = parser.parse_args()
    rows = [typical_row(i) for i in range(args.rows)]
    metrics = Metrics()
    access = logging.getLogger("tierwise.access")
    access.setLevel(logging.INFO)
    access.propagate = False
    handler = logging.StreamHandler(io.StringIO())
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    access.addHandler(handler)
    observe = per_call_us(metrics.observe, rows)
    served = asyncio.run(stream_access_us(rows))
    logged = per_call_us(LoggerAccessLog("info").write, rows)
    total = observe + served
    print(f"metrics observe  {observe:6.1f} µs per request")
    print(
        f"access log line  {served:6.1f} µs per request (as tierwise serve writes it, to an in-memory stream)"
    )
    print(f"                 {logged:6.1f} µs through a logging handler (an in-process Router's default)")
    print(f"together         {total:6.1f} µs = {total / BUDGET_US:.2f} × the {BUDGET_US:.0f} µs budget")
    spans = tracing_us(rows)
    if spans is not None:
        print(f"tracing spans    {spans:6.1f} µs per request (server.tracing, off by default; not budgeted)")


def tracing_us(rows: list[LedgerRow]) -> float | None:
    try:
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
    except ImportError:
        return None
    from tierwise.tracing import Tracing

    class Drop(SpanExporter):
        def export(self, spans):  # type: ignore[no-untyped-def]
            return SpanExportResult.SUCCESS

    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(Drop(), max_queue_size=4 * len(rows)))  # none dropped
    tracing = Tracing(provider)
    for row in rows[:1000]:
        tracing.record(row)
    provider.force_flush()
    # Process time, through the final flush: the batch processor's thread counts too.
    started = time.process_time()
    for row in rows:
        tracing.record(row)
    provider.shutdown()
    return (time.process_time() - started) / len(rows) * 1e6


if __name__ == "__main__":
    main()
