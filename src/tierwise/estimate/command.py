"""The ``tierwise estimate`` command: its arguments and what it runs (imports stay inside ``run``, so
building the parser costs nothing)."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from ..progress import stderr_progress


def add_estimate_parser(commands: Any) -> None:
    """Add ``estimate`` to the ``tierwise`` subcommands."""
    estimate = commands.add_parser(
        "estimate",
        help="what routing would have saved on your own request logs (a cost projection)",
        description="Stream request logs through the configured policy: per task type and cluster of "
        "similar requests, where each would go and why, and today's cost against the routed cost. "
        "Formats, detected from content: OpenAI chat JSONL (with or without responses), OpenAI batch "
        "input/output files, LiteLLM spend-log exports (CSV/JSON), a tierwise ledger (sqlite:///…, "
        "postgresql://…, a .db file), a CSV of prompt[,model,input_tokens,output_tokens].",
    )
    estimate.add_argument("--config", required=True, help="the fleet and policy to project (YAML)")
    estimate.add_argument("--logs", required=True, nargs="+", metavar="FILE_OR_URL", help="request logs")
    estimate.add_argument("--out", help="directory for report.json and estimate.png")
    estimate.add_argument("--json", action="store_true", help="print report.json instead of the tables")
    estimate.add_argument(
        "--clusters", type=int, default=20, metavar="K", help="clusters of similar requests (0: none)"
    )
    estimate.add_argument("--seed", type=int, default=0)
    estimate.add_argument("--no-plot", action="store_true")
    estimate.add_argument(
        "--sample",
        type=int,
        default=0,
        metavar="N",
        help="try N logged requests per task type on the model the policy chose (needs --judge)",
    )
    estimate.add_argument("--judge", metavar="MODEL", help="the fleet model that compares the answers")
    estimate.add_argument(
        "--baseline",
        metavar="MODEL",
        help="fleet model for fresh answers where none was logged (default: the always-strongest model)",
    )
    estimate.add_argument(
        "--max-spend", type=float, metavar="USD", help="with --sample: never spend more than this"
    )
    estimate.set_defaults(run=run)


@contextlib.contextmanager
def _progress(total: int) -> Iterator[Callable[[Any], None] | None]:
    """A byte-counting progress bar on stderr when it is a terminal and rich is installed."""
    with stderr_progress(elapsed=True) as bar:
        if bar is None:
            yield None
            return
        task = bar.add_task("reading", total=total or None)
        passes = {"n": 0, "last": -1}

        def update(stats: Any) -> None:
            if stats.bytes_read < passes["last"]:  # the second pass started over
                passes["n"] += 1
            passes["last"] = stats.bytes_read
            label = "clustering" if passes["n"] else "reading"
            bar.update(
                task,
                completed=min(stats.bytes_read, total) if total else None,
                description=f"{label} {stats.records:,} requests",
            )

        yield update


def run(args: argparse.Namespace) -> int:
    from ..config import load_config
    from ..engines import load_engine
    from ..errors import ConfigError
    from .formats import is_ledger_url
    from .output import build_report, render, write_json, write_plot
    from .project import project

    # The texts are tokenized one by one: the tokenizer's thread pool only added overhead (and ~70 MB)
    # on 2 cores (bench/estimate.py). A value the user set is kept.
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    config = load_config(args.config)
    engine = load_engine(config)
    if args.sample and not args.judge:
        raise ConfigError("estimate: --sample needs --judge MODEL (a fleet model that compares answers)")
    if args.sample and args.max_spend is None:
        raise ConfigError("estimate: --sample needs --max-spend USD: it calls real models")
    sampler = None
    if args.sample:
        from .sample import SampleDraw

        sampler = SampleDraw(args.sample, seed=args.seed)
    total = sum(Path(s).stat().st_size for s in args.logs if not is_ledger_url(s) and Path(s).is_file())
    with _progress(total) as progress:
        projection = project(
            config,
            engine,
            args.logs,
            clusters=args.clusters,
            seed=args.seed,
            progress=progress,
            on_request=sampler.offer if sampler else None,
        )
    report = build_report(projection, config, policy_version=engine.version)
    if sampler is not None:
        import asyncio

        from .sample import judge_sample

        report["sample"] = asyncio.run(
            judge_sample(
                config,
                sampler,
                judge=args.judge,
                baseline=args.baseline,
                max_spend_usd=args.max_spend,
                projected=report["by_type"],
                seed=args.seed,
            )
        )
    print(_dumps(report) if args.json else render(report))
    if sampler is not None and not args.json:
        from .sample import render_sample

        print(render_sample(report["sample"]))
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        write_json(report, out / "report.json")
        problem = None if args.no_plot else write_plot(report, out / "estimate.png")
        written = "report.json" + ("" if args.no_plot or problem else ", estimate.png")
        print(f"wrote {written} to {out}", file=sys.stderr)
        if problem:
            print(f"no plot: {problem}", file=sys.stderr)
    logs = report["logs"]
    if logs["skipped"]:
        shown = "\n  ".join(logs["errors"])
        more = logs["skipped"] - len(logs["errors"])
        print(
            f"tierwise: skipped {logs['skipped']:,} malformed record(s); the other {logs['requests']:,} "
            f"were counted:\n  {shown}" + (f"\n  … and {more:,} more" if more > 0 else ""),
            file=sys.stderr,
        )
        return 1
    if not logs["requests"]:
        print("tierwise: the logs hold no chat request", file=sys.stderr)
        return 1
    return 0


def _dumps(report: dict[str, Any]) -> str:
    import json

    return json.dumps(report, indent=2, allow_nan=False)
