"""How fast, and in how much memory, does ``tierwise estimate`` read a big log? One command:

    python bench/estimate.py [--requests 1000000] [--clusters 20] [--keep FILE] [--json out.json]

Writes a synthetic OpenAI-format JSONL log (the 300 arena-bench-v1 prompts, each line one of them with
a numbered suffix so no two lines are equal, a system message on every other line, usage from the
recorded GPT-4-1106 token counts), then runs ``tierwise estimate --config examples/tierwise.yaml`` on
it as a user would, in a subprocess, and reports wall time, requests per second and the subprocess's
peak RSS (``getrusage(RUSAGE_CHILDREN).ru_maxrss``). With clusters on (the default) every request is
read twice: once for the task types and the reservoir sample, once to assign it to a cluster.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def write_log(path: Path, requests: int) -> None:
    import orjson

    from tierwise.arena_data import load_arena

    data = load_arena()
    questions = data.questions
    tokens = [data.tokens(q.id, "gpt-4-1106-preview") for q in questions]
    system = {"role": "system", "content": "You are a helpful assistant for our support team."}
    with path.open("wb") as file:
        for n in range(requests):
            i = n % len(questions)
            user = {"role": "user", "content": f"{questions[i].prompt}\n(ticket {n})"}
            messages = [system, user] if n % 2 else [user]
            prompt_tokens, completion_tokens = tokens[i]
            record = {
                "model": "gpt-4-1106-preview",
                "messages": messages,
                "response": {
                    "model": "gpt-4-1106-preview",
                    "usage": {"prompt_tokens": prompt_tokens + 10, "completion_tokens": completion_tokens},
                },
            }
            file.write(orjson.dumps(record) + b"\n")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=1_000_000)
    parser.add_argument("--clusters", type=int, default=20)
    parser.add_argument("--config", default=str(ROOT / "examples" / "tierwise.yaml"))
    parser.add_argument("--keep", help="write the log here and keep it (default: a temporary file)")
    parser.add_argument("--json", help="also write the figures here")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        log = Path(args.keep) if args.keep else Path(tmp) / "requests.jsonl"
        started = time.perf_counter()
        if not (args.keep and log.exists()):
            write_log(log, args.requests)
        written_s = time.perf_counter() - started
        out = Path(tmp) / "out"
        command = [
            sys.executable, "-m", "tierwise.cli", "estimate", "--config", args.config, "--logs", str(log),
            "--clusters", str(args.clusters), "--out", str(out), "--no-plot",
        ]  # fmt: skip
        started = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "COLUMNS": "200"})
        elapsed = time.perf_counter() - started
        if done.returncode != 0:
            print(done.stdout[-2000:], done.stderr[-2000:], file=sys.stderr)
            return done.returncode
        report = json.loads((out / "report.json").read_text())
        peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # KiB on Linux
        figures = {
            "requests": report["logs"]["requests"],
            "log_mb": round(log.stat().st_size / 1e6, 1),
            "clusters": args.clusters,
            "write_log_s": round(written_s, 1),
            "estimate_s": round(elapsed, 1),
            "requests_per_s": round(report["logs"]["requests"] / elapsed),
            "peak_rss_mb": round(peak_mb, 1),
            "headline": report["headline"],
        }
    for key, value in figures.items():
        print(f"{key:>16}  {value}")
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
