"""What ``tierwise estimate`` writes: the headline, tables per task type and cluster, ``report.json``
and ``estimate.png`` (spend today against routed, per type). rich and matplotlib are optional, as for
``tierwise eval``: plain text without rich, no plot (and a note) without matplotlib."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from ..config import Config
from .formats import LogStats
from .project import NO_PROMPT, OUTPUT_METHOD, TODAY_METHODS, Projection

CAVEAT = (
    "This is a cost projection: quality at the cheaper tiers is unmeasured until a sample is tried "
    "(--sample N --judge MODEL)."
)
ROUTED_METHOD = (
    "the same input and output tokens at the price of the first model the policy chooses (its tier's "
    "cheapest); retries, fallbacks, cascade escalations and classifier calls are not counted"
)
TOP_CLUSTERS = 20


def build_report(projection: Projection, config: Config, *, policy_version: str) -> dict[str, Any]:
    """The JSON-ready report of a projection."""
    estimate = projection.output_estimate()
    total = projection.total.summary(estimate, projection.total.today_usd)
    total_today = total["today_usd"]
    by_task = sorted(
        (
            {"type": task, **tally.summary(estimate, total_today)}
            for task, tally in projection.by_task.items()
        ),
        key=lambda row: -row["today_usd"],
    )
    clusters = []
    for index, tally in projection.by_cluster.items():
        row = {"cluster": index, **tally.summary(estimate, total_today)}
        if index >= 0:
            row["example"] = _shorten(projection.cluster_examples[index])
        else:
            row["example"] = NO_PROMPT
        clusters.append(row)
    clusters.sort(key=lambda row: (-row["requests"], row["cluster"]))
    stats = projection.stats
    return {
        "kind": "cost projection",
        "caveat": CAVEAT,
        "headline": headline(total),
        "policy_version": policy_version,
        "fleet": [
            {
                "name": m.name,
                "tier": m.tier,
                "input_per_mtok": m.price.input_per_mtok,
                "output_per_mtok": m.price.output_per_mtok,
            }
            for m in config.models
        ],
        "logs": _logs(stats),
        "methods": {
            "today": {key: TODAY_METHODS[key] for key in TODAY_METHODS},
            "today_strongest_model": config.counterfactual().name,
            "routed": ROUTED_METHOD,
            "output_tokens": OUTPUT_METHOD,
            "output_tokens_assumed": {k: round(v, 1) for k, v in estimate.items()},
            "input_tokens": "logged usage, else the features' estimate (characters / 4 + 4 per message)",
        },
        "total": total,
        "by_type": by_task,
        "by_cluster": clusters[:TOP_CLUSTERS],
        "clusters_fitted": len(projection.cluster_examples),
        "clusters_note": projection.clusters_note,
        "elapsed_s": round(projection.elapsed_s, 3),
    }


def _logs(stats: LogStats) -> dict[str, Any]:
    return {
        "formats": stats.formats,
        "requests": stats.records,
        "skipped": stats.skipped,
        "errors": stats.errors,
        "not_chat": stats.not_chat,
        "unmatched_batch_outputs": stats.unmatched_outputs,
    }


def headline(total: dict[str, Any]) -> str:
    if total["today_usd"] <= 0:
        return f"{total['requests']} requests, no spend to compare"
    return (
        f"you would have saved {total['saved_share']:.1%} on these requests: "
        f"${total['today_usd']:,.2f} today → ${total['routed_usd']:,.2f} routed, "
        f"{total['requests']:,} requests"
    )


def _shorten(text: str, limit: int = 100) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


_COLUMNS = ("requests", "spend", "example", "→ model (tier)", "why", "today $", "routed $", "saved")


def _row(row: dict[str, Any], label: str) -> list[str]:
    why = f"{row['layer']} {row['rule']}" if row["layer"] != row["rule"] else row["rule"]
    model = f"{row['model']} ({row['tier']})"
    if row["model_share"] < 0.995:
        model += f" {row['model_share']:.0%}"
    return [
        label,
        f"{row['requests']:,}",
        f"{row['share_of_spend']:.1%}",
        _shorten(row["example"], 48),
        model,
        why,
        f"{row['today_usd']:,.4f}",
        f"{row['routed_usd']:,.4f}",
        f"{row['saved_share']:.0%}",
    ]


def render(report: dict[str, Any]) -> str:
    """The report as text: the tables (rich when installed), the methods, the caveat, the headline."""
    sections = [
        ("by task type (features.py)", [_row(r, r["type"]) for r in report["by_type"]], "type"),
    ]
    if report["by_cluster"]:
        rows = [
            _row(r, f"#{r['cluster']} {r['task']}" if r["cluster"] >= 0 else "no text")
            for r in report["by_cluster"]
        ]
        sections.append(
            (f"top {len(rows)} clusters of similar requests (wordllama embeddings)", rows, "cluster")
        )
    parts = [_table(title, first, rows) for title, rows, first in sections]
    logs = report["logs"]
    methods = report["methods"]
    counts = report["total"]["today_methods"]
    parts.append(
        "today's cost: "
        + "; ".join(
            f"{counts[k]:,} by {TODAY_METHODS[k]}"
            + (f" ({methods['today_strongest_model']})" if k == "strongest-price" else "")
            for k in TODAY_METHODS
            if k in counts
        )
    )
    parts.append(f"routed cost: {methods['routed']}")
    estimated = report["total"]["output_tokens_estimated_for"]
    if estimated:
        parts.append(f"output tokens estimated for {estimated:,} requests: {methods['output_tokens']}")
    if report.get("clusters_note"):
        parts.append(report["clusters_note"])
    if logs["not_chat"]:
        parts.append(f"{logs['not_chat']:,} logged calls that are not chat completions were left out")
    if logs["unmatched_batch_outputs"]:
        parts.append(
            f"{logs['unmatched_batch_outputs']:,} batch output lines had no input line (not counted)"
        )
    parts.append(CAVEAT)
    parts.append(report["headline"])
    return "\n".join(parts)


def _table(title: str, first: str, rows: list[list[str]]) -> str:
    headers = [first, *_COLUMNS]
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:
        widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
        lines = [title, "  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))]
        lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
        return "\n".join(lines)
    table = Table(title=title)
    for i, header in enumerate(headers):
        table.add_column(header, justify="right" if i in (1, 2, 7, 8, 9) else "left", overflow="fold")
    for row in rows:
        table.add_row(*row)
    console = Console(width=200, record=True)
    with console.capture() as capture:
        console.print(table)
    return capture.get().rstrip()


def write_json(report: dict[str, Any], path: Path) -> None:
    path.write_text(json.dumps(report, indent=2, allow_nan=False) + "\n")


def write_plot(report: dict[str, Any], path: Path) -> str | None:
    """Spend today against routed, per task type and per cluster; None, or why no plot was written."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "the plot needs matplotlib: pip install 'tierwise[plot]'"
    panels = [("by task type", [(r["type"], r) for r in report["by_type"]])]
    if report["by_cluster"]:
        panels.append(
            (
                "top clusters",
                [(f"#{r['cluster']} {_shorten(r['example'], 28)}", r) for r in report["by_cluster"]],
            )
        )
    height = max(4.0, 0.32 * max(len(rows) for _, rows in panels) + 1.5)
    fig, axes = plt.subplots(1, len(panels), figsize=(7 * len(panels), height), squeeze=False)
    for axis, (title, rows) in zip(axes[0], panels, strict=True):
        rows = list(reversed(rows))
        ys = range(len(rows))
        today = [r["today_usd"] for _, r in rows]
        routed = [r["routed_usd"] for _, r in rows]
        axis.barh([y + 0.2 for y in ys], today, height=0.4, color="tab:red", label="today")
        axis.barh([y - 0.2 for y in ys], routed, height=0.4, color="tab:green", label="routed")
        axis.set_yticks(list(ys), [label for label, _ in rows], fontsize=8)
        axis.set_xlabel("USD")
        axis.set_title(title)
        axis.grid(axis="x", alpha=0.3)
        axis.legend(loc="lower right", fontsize=8)
    total = report["total"]
    saved = total["saved_share"] if math.isfinite(total["saved_share"]) else 0.0
    fig.suptitle(
        f"tierwise estimate — {total['requests']:,} requests, {saved:.1%} saved "
        "(cost only; quality unmeasured)"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return None
