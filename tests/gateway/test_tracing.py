"""OpenTelemetry spans (server.tracing): `tierwise serve` exports them over OTLP/HTTP to a collector on
127.0.0.1, as the SDK's exporter does in production; the spans nest under the caller's traceparent,
carry one child per upstream call, and agree with the ledger's rows."""

from __future__ import annotations

import asyncio
import signal
import sqlite3
from pathlib import Path
from typing import Any

import openai
import pytest
import yaml
from aiohttp import web

from tests.fakes.upstream import FakeUpstream, refused_url
from tests.harness import fleet_config, start_serve

pytest.importorskip("opentelemetry.sdk", reason="needs the otel extra (in dev)")
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

KEY = "sk-tracing-secret-0123456789abcdef"
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"


class Collector:
    """An OTLP/HTTP trace receiver: POST /v1/traces with a protobuf ExportTraceServiceRequest."""

    def __init__(self) -> None:
        self.spans: list[Any] = []
        self.resources: list[dict[str, Any]] = []

    async def receive(self, request: web.Request) -> web.Response:
        assert request.content_type == "application/x-protobuf"
        export = ExportTraceServiceRequest.FromString(await request.read())
        for resource_spans in export.resource_spans:
            self.resources.append(_attributes(resource_spans.resource.attributes))
            for scope in resource_spans.scope_spans:
                self.spans.extend(scope.spans)
        return web.Response(body=b"", content_type="application/x-protobuf")


def _attributes(items: Any) -> dict[str, Any]:
    out = {}
    for kv in items:
        value = kv.value
        out[kv.key] = getattr(value, value.WhichOneof("value"))
    return out


async def test_spans_nest_under_the_callers_trace_and_agree_with_the_ledger(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    collector = Collector()
    app = web.Application()
    app.router.add_post("/v1/traces", collector.receive)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    backup = await FakeUpstream(kind="openai", reply="backup answer").start()
    db = tmp_path / "ledger.db"
    # The draft tier's provider refuses connections: every answer is a fallback, two upstream calls.
    urls = {"cheap": await refused_url(), "backup": backup.url, "strong": "http://127.0.0.1:9"}
    config = fleet_config(urls, ledger=f"sqlite:///{db}", policy={"retry": {"attempts": 1}})
    config["server"] = {"tracing": True}
    path = tmp_path / "tierwise.yaml"
    path.write_text(yaml.safe_dump(config))
    monkeypatch.setenv("TW_TEST_KEY", KEY)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", f"http://127.0.0.1:{port}/v1/traces")
    monkeypatch.setenv("OTEL_SERVICE_NAME", "gateway-under-test")
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "100")
    proc, base = await start_serve(path)
    try:
        async with openai.AsyncOpenAI(
            base_url=f"{base}/v1", api_key="k", max_retries=0, timeout=20
        ) as client:
            traced = await client.chat.completions.with_raw_response.create(
                model="auto",
                messages=[{"role": "user", "content": "Classify the sentiment: 'Great battery.'"}],
                extra_headers={"traceparent": f"00-{TRACE_ID}-{PARENT_ID}-01"},
            )
            untraced = await client.chat.completions.with_raw_response.create(
                model="auto", messages=[{"role": "user", "content": "Classify: spam or not? 'WIN $$$'"}]
            )
        proc.send_signal(signal.SIGTERM)  # on its way out the gateway exports what is batched
        assert await asyncio.wait_for(proc.wait(), 30) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        await backup.stop()
        await runner.cleanup()

    ids = {traced.headers["x-tierwise-request-id"], untraced.headers["x-tierwise-request-id"]}
    assert len([s for s in collector.spans if s.name == "tierwise.request"]) == 2
    by_id = {
        _attributes(s.attributes)["tierwise.request_id"]: s
        for s in collector.spans
        if s.name == "tierwise.request"
    }
    assert set(by_id) == ids
    assert all(r["service.name"] == "gateway-under-test" for r in collector.resources)

    with sqlite3.connect(db) as conn:
        conn.row_factory = sqlite3.Row
        rows = {r["id"]: dict(r) for r in conn.execute("SELECT * FROM requests")}
    for request_id, span in by_id.items():
        attrs = _attributes(span.attributes)
        row = rows[request_id]
        assert attrs["gen_ai.response.model"] == row["final_model"] == "review-1"
        assert attrs["tierwise.tier"] == row["tier"]
        assert attrs["tierwise.cost_usd"] == pytest.approx(row["cost_usd"])
        assert attrs["tierwise.path"] == "fell_back" and attrs["http.response.status_code"] == 200
        duration_ms = (span.end_time_unix_nano - span.start_time_unix_nano) / 1e6
        assert duration_ms == pytest.approx(row["latency_ms"], abs=0.01)
        calls = [s for s in collector.spans if s.parent_span_id == span.span_id]
        assert [_attributes(c.attributes)["gen_ai.request.model"] for c in calls] == ["draft-1", "review-1"]
        failed, answered = calls
        assert failed.status.code == 2 and answered.status.code != 2  # ERROR, then not
        assert span.start_time_unix_nano <= failed.start_time_unix_nano <= answered.start_time_unix_nano
        assert answered.end_time_unix_nano <= span.end_time_unix_nano
        assert all(c.trace_id == span.trace_id for c in calls)

    traced_span = by_id[traced.headers["x-tierwise-request-id"]]
    assert traced_span.trace_id.hex() == TRACE_ID and traced_span.parent_span_id.hex() == PARENT_ID
    untraced_span = by_id[untraced.headers["x-tierwise-request-id"]]
    assert untraced_span.trace_id.hex() != TRACE_ID and not untraced_span.parent_span_id  # a trace of its own
    everything = repr([_attributes(s.attributes) for s in collector.spans]) + repr(
        [ev.attributes for s in collector.spans for ev in s.events]
    )
    assert KEY[:8] not in everything and "Classify" not in everything  # never a key, never the prompt
