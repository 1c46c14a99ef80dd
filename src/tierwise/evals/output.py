"""What ``tierwise eval`` writes: a terminal table, ``report.json`` and ``curve.png``.

rich and matplotlib are optional: without rich the table is plain text; without matplotlib the plot
step says how to install it and everything else is still written.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from .run import EvalReport

COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("quality", "quality", "{:.4f}"),
    ("cost_per_1k_usd", "$ / 1k req", "{:.4f}"),
    ("strong_share", "strong %", "{:.1%}"),
    ("apgr", "APGR", "{:.3f}"),
    ("cpt_50", "CPT(50%)", "{:.1f}%"),
    ("cpt_80", "CPT(80%)", "{:.1f}%"),
    ("aiq", "AIQ", "{:.4f}"),
    ("savings_at_parity", "saved @ parity", "{:.1%}"),
    ("savings_at_95", "saved @ 95%", "{:.1%}"),
)


def _cell(value: Any, fmt: str) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "—"
    return fmt.format(value)


def table_rows(report: EvalReport) -> list[list[str]]:
    rows = []
    for name, metrics in report.policies.items():
        row = [name] + [_cell(metrics.get(key), fmt) for key, _, fmt in COLUMNS]
        ci = metrics.get("ci95") or {}
        if ci.get("apgr") is not None:  # three decimals, as the README quotes them
            row[4] += f" [{ci['apgr'][0]:.3f}, {ci['apgr'][1]:.3f}]"
        if ci.get("cpt_50") is not None:
            row[5] += f" [{ci['cpt_50'][0]:.1f}, {ci['cpt_50'][1]:.1f}]"
        if ci.get("aiq") is not None:
            row[7] += f" [{ci['aiq'][0]:.3f}, {ci['aiq'][1]:.3f}]"
        rows.append(row)
    return rows


def render_table(report: EvalReport) -> str:
    """The report as a table: rich when installed and writing to a terminal, else aligned text."""
    d = report.dataset
    title = (
        f"{d.name}: {len(d)} prompts ({d.removed} contaminated removed), "
        f"split {report.meta.get('split', 'none')}, seed {report.meta.get('seed')}"
        + (
            "; every figure pooled over the out-of-fold prompts"
            if report.meta.get("split", "none") != "none"
            else ""
        )
    )
    headers = ["policy"] + [label for _, label, _ in COLUMNS]
    rows = table_rows(report)
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:
        widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
        lines = [title, "  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))]
        lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
        return "\n".join(lines)
    table = Table(title=title)
    for i, header in enumerate(headers):
        table.add_column(header, justify="left" if i == 0 else "right")
    for row in rows:
        table.add_row(*row)
    console = Console(width=190, record=True)
    with console.capture() as capture:
        console.print(table)
    return capture.get()


def write_json(report: EvalReport, path: Path) -> None:
    path.write_text(json.dumps(report.to_json(), indent=2, allow_nan=False, default=_jsonable) + "\n")


def _jsonable(value: Any) -> Any:
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON-serializable")


def write_plot(report: EvalReport, path: Path) -> str | None:
    """Draw the cost–quality curves; return None, or the reason no plot was written."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "the plot needs matplotlib: pip install 'tierwise[plot]'"
    fig, (by_cost, by_share) = plt.subplots(1, 2, figsize=(13, 5.2))
    styles = {
        "always-cheapest": ("grey", "s"),
        "always-strongest": ("red", "s"),
        "random": ("tab:orange", "."),
        "oracle": ("tab:green", "x"),
        "zero-router": ("tab:purple", "d"),
    }
    for name, metrics in report.policies.items():
        color, marker = styles.get(name, (None, "o"))
        curve = metrics["curve"]
        share_curve = metrics.get("curve_strong_share") or []
        xs = [c * 1000 for c, _ in curve]
        ys = [q for _, q in curve]
        marker = marker if len(xs) <= 30 else None  # a long frontier is a line, not a row of markers
        line = by_cost.plot(
            xs, ys, marker=marker, linestyle="-" if len(xs) > 1 else "", color=color, label=name
        )[0]
        color = line.get_color()
        by_cost.scatter(
            [metrics["cost_per_1k_usd"]],
            [metrics["quality"]],
            s=90,
            color=color,
            zorder=5,
            edgecolors="black",
        )
        # The zero router mixes single models by cost: on the strong-share axis it has no curve.
        if share_curve and name != "zero-router":
            by_share.plot(
                [s * 100 for s, _ in share_curve],
                [q for _, q in share_curve],
                marker=marker,
                linestyle="-" if len(share_curve) > 1 else "",
                color=color,
                label=name,
            )
            if name == "oracle" and len(report.fleet.models) > 2:
                continue  # its share curve is the cheap/strong pair's optimum, its point the N-model oracle
            by_share.scatter(
                [metrics["strong_share"] * 100],
                [metrics["quality"]],
                s=90,
                color=color,
                zorder=5,
                edgecolors="black",
            )
    strong = report.policies.get("always-strongest", {}).get("quality")
    for axis in (by_cost, by_share):
        if strong is not None:
            axis.axhline(strong, color="red", linestyle=":", linewidth=1)
        axis.set_ylabel("quality (mean score, 0–1)")
        axis.grid(alpha=0.3)
    by_cost.set_xlabel("USD per 1,000 requests")
    by_share.set_xlabel("calls to the strongest model (%)")
    by_cost.set_title("cost vs quality (big dots: operating points)")
    by_share.set_title("strong-call share vs quality")
    for axis in (by_cost, by_share):
        if axis.get_legend_handles_labels()[0]:
            axis.legend(loc="lower right", fontsize=8)
    d = report.dataset
    fig.suptitle(f"tierwise eval — {d.name}, {len(d)} prompts")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return None
