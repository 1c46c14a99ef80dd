"""``GET /dashboard``: one page, served by the gateway, drawn from the ledger through JSON endpoints.

Nothing is built at install time and nothing is fetched from the internet when it is viewed: the page
is one static HTML file with its own script, which draws its charts as SVG. It reads:

``/dashboard/api/summary``    the ``tierwise report`` summary (spend, savings, escalation per task type,
                              judged shadows, per model and tier) of the window
``/dashboard/api/series``     spend, the always-strongest counterfactual, requests, fallbacks and errors
                              per time bucket and tier
``/dashboard/api/decisions``  the most recent decisions with their reason trace and policy version,
                              filtered by ``q`` (a substring of id, model, tier, task, rule or reason)
``/dashboard/api/canary``     the canary's rollout now (``tierwise canary status --json``: state, each
                              arm's counters from the state store, the guard's checks), or
                              ``{"configured": false}``

Every endpoint takes ``since`` and ``until`` (unix seconds; by default the last 24 hours). Rows are read
from the ledger, at most ``MAX_ROWS`` per call, newest kept.
"""

from __future__ import annotations

import math
import time
from importlib.resources import files
from typing import Any

from ..answer_path import answer_path
from ..errors import RequestError
from ..ledger.base import LedgerRow
from ..report import summarize
from ..router import Router
from .responses import json_response
from .web import App, Request, Response

ROUTER = "dashboard_router"  # the App state key of the Router
MAX_ROWS = 100_000
DAY_S = 86_400.0
_SEARCHED = ("id", "model", "tier", "task", "rule", "reason")
_PAGE = files("tierwise.gateway").joinpath("static/dashboard.html")


def _window(request: Request) -> tuple[float, float]:
    now = time.time()
    out = []
    for name, default in (("since", now - DAY_S), ("until", now + 1)):
        raw = request.query.get(name)
        try:
            value = float(raw) if raw is not None else default
        except ValueError:
            raise RequestError(f"{name}: must be unix seconds, got {raw[:40]!r}", param=name) from None
        if not math.isfinite(value):
            raise RequestError(f"{name}: must be unix seconds, got {raw!r}", param=name)
        out.append(value)
    if out[1] <= out[0]:
        raise RequestError("until: must be after since", param="until")
    return out[0], out[1]


async def _rows(router: Router, since: float, until: float) -> list[LedgerRow]:
    rows = await router.ledger.fetch(since=since)
    rows = [row for row in rows if row.ts < until]
    return rows[-MAX_ROWS:]


async def page(request: Request) -> Response:
    return Response(_PAGE.read_bytes(), content_type="text/html; charset=utf-8")


async def summary(request: Request) -> Response:
    router = request.app[ROUTER]
    since, until = _window(request)
    rows = await _rows(router, since, until)
    feedback = [f for f in await router.ledger.fetch_feedback(since=since) if f.ts < until]
    body = summarize(rows, feedback)
    body["window"] = {"since": since, "until": until, "rows": len(rows)}
    body["policy_version"] = router.policy_version
    return json_response(body)


async def series(request: Request) -> Response:
    router = request.app[ROUTER]
    since, until = _window(request)
    rows = [r for r in await _rows(router, since, until) if r.decision.get("layer") != "shadow"]
    start = min((r.ts for r in rows), default=since)
    span = max(1.0, min(until, time.time()) - start)
    bucket = _bucket_s(span)
    buckets: dict[int, dict[str, Any]] = {}
    for row in rows:
        i = int((row.ts - start) // bucket)
        b = buckets.setdefault(
            i,
            {"t": start + i * bucket, "requests": 0, "cost_usd": 0.0, "counterfactual_usd": 0.0,
             "fell_back": 0, "escalated": 0, "errors": 0, "cost_by_tier": {}},
        )  # fmt: skip
        b["requests"] += 1
        b["cost_usd"] += row.cost_usd
        b["counterfactual_usd"] += row.counterfactual_cost_usd
        tier = row.tier or "none"
        b["cost_by_tier"][tier] = b["cost_by_tier"].get(tier, 0.0) + row.cost_usd
        kind = answer_path(row).kind
        if kind == "error":
            b["errors"] += 1
        elif kind in ("fell_back", "escalated"):
            b[kind] += 1
    return json_response({"bucket_s": bucket, "points": [buckets[i] for i in sorted(buckets)]})


def _bucket_s(span: float) -> float:
    """About 60 buckets over the span, rounded to a readable length."""
    for step in (1, 5, 10, 30, 60, 300, 600, 1800, 3600, 3 * 3600, 6 * 3600, DAY_S):
        if span / step <= 60:
            return float(step)
    return DAY_S


async def decisions(request: Request) -> Response:
    router = request.app[ROUTER]
    since, until = _window(request)
    query = request.query.get("q", "").strip().lower()[:200]
    try:
        limit = max(1, min(1000, int(request.query.get("limit", "100"))))
    except ValueError:
        raise RequestError("limit: must be an integer from 1 to 1000", param="limit") from None
    out: list[dict[str, Any]] = []
    for row in reversed(await _rows(router, since, until)):
        item = {
            "id": row.id,
            "ts": row.ts,
            "model": row.final_model,
            "tier": row.tier,
            "task": row.features.get("task"),
            "rule": row.decision.get("rule"),
            "layer": row.decision.get("layer"),
            "reason": row.decision.get("reason"),
            "chain": row.decision.get("chain"),
            "arm": row.decision.get("arm"),
            "policy_version": row.policy_version,
            "status": row.status,
            "http_status": row.http_status,
            "path": answer_path(row).kind if row.decision.get("layer") != "shadow" else "shadow",
            "cost_usd": row.cost_usd,
            "latency_ms": row.latency_ms,
        }
        if query and not any(query in str(item[k]).lower() for k in _SEARCHED):
            continue
        out.append(item)
        if len(out) >= limit:
            break
    return json_response({"decisions": out})


async def canary(request: Request) -> Response:
    router = request.app[ROUTER]
    if router.canary is None:
        return json_response({"configured": False})
    return json_response({"configured": True, **await router.canary.status()})


def add_dashboard(app: App, router: Router) -> None:
    """Serve the dashboard of ``router`` from ``app``."""
    app[ROUTER] = router
    app.add_get("/dashboard", page)
    app.add_get("/dashboard/api/summary", summary)
    app.add_get("/dashboard/api/series", series)
    app.add_get("/dashboard/api/decisions", decisions)
    app.add_get("/dashboard/api/canary", canary)
