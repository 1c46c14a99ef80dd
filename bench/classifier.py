"""What does the small-LLM classifier add to a request's latency? One command:

    python bench/classifier.py [--requests N] [--concurrency 1,10] [--delays 0,50] [--json out.json]

In one run, with fake upstreams (``tests/fakes/upstream.py``, processes of their own): one answers every
request at once, and one grader per ``--delays`` value (ms before it answers ``draft``) stands in for the
classifier's model. It measures ``tierwise serve`` as a user runs it (``model="auto"``, the built-in
rules, the SQLite ledger) without a classifier, and with one per grader delay, cache off
(``cache_size: 0``: every request asks the grader) and cache on (every body is sent once before the
measurements start: every measured request is a hit). The graders are also measured directly, as
references. The requests are small chat messages that no rule places, so each one reaches the
classifier. Reported per system and concurrency: req/s, p50/p99 latency, and the p50/p99 added to the
same tierwise without a classifier, measured in the same run. See README.md.

It reuses the process handling of ``bench/overhead.py`` (CPU pinning, process groups, clean-up).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from overhead import KEY, Server, cells_json, cpu_plan, free_port, machine, run_measured, tierwise_config

_PLACES = ("a lighthouse", "my old school", "a night market", "an airport lounge", "a ferry",
           "a forest cabin", "a rooftop garden", "a train station")  # fmt: skip
_PEOPLE = ("my grandmother", "a talking cat", "my old boss", "two old friends")
_THINGS = ("paper lanterns", "warm soup", "tiny umbrellas", "old letters", "blue feathers", "glass marbles",
           "sheet music", "lemon slices")  # fmt: skip
# 256 distinct small chat requests (~50 tokens) that no built-in rule places: the engine would take its
# default, so the classifier is asked about every one.
BODIES = [
    orjson.dumps(
        {
            "model": "auto",
            "messages": [
                {
                    "role": "user",
                    "content": f"hey, I had the strangest dream last night. I was in {_PLACES[i % 8]} with "
                    f"{_PEOPLE[i // 8 % 4]}, and then it started raining {_THINGS[i // 32 % 8]}. Still "
                    "thinking about it this morning, honestly.",
                }
            ],
            "max_tokens": 20,
        }
    )
    for i in range(256)
]
HEADERS = {"Content-Type": "application/json", "Authorization": f"Bearer {KEY}"}
BASELINE = "no classifier"
WARMUP_MAX_S = 2.0  # a cell's warm-up stops after this long (a 50 ms grader at c=1 answers 20 a second)


@dataclass
class Cell:
    concurrency: int
    requests: int
    seconds: float
    rps: float
    p50_ms: float
    p99_ms: float


def system_names(delays: list[int]) -> list[str]:
    names = [BASELINE]
    for delay in delays:
        names += [f"grader {delay} ms, cache off", f"grader {delay} ms, cache on"]
    return names


def config(answers: str, grader: str | None, ledger: str, *, cache: bool) -> dict[str, Any]:
    """overhead.py's fleet (one model per tier on ``answers``), plus a grader model and the classifier."""
    doc = tierwise_config(answers, ledger)
    if grader is None:
        return doc
    doc["providers"]["grader"] = {"kind": "openai", "base_url": grader, "api_key_env": "TIERWISE_BENCH_KEY"}
    # In the draft tier but dearer than draft-1, so it only grades: draft answers still go to draft-1.
    doc["models"].append(
        {
            "name": "grader-1",
            "provider": "grader",
            "upstream": "grader-model",
            "tier": "draft",
            "context_window": 16_000,
            "price": {"input_per_mtok": 0.2, "output_per_mtok": 0.8},
        }
    )
    doc["policy"] = {"classifier": {"model": "grader-1", "cache_size": 10_000 if cache else 0}}
    return doc


async def drive(
    session: aiohttp.ClientSession, url: str, concurrency: int, count: int, deadline: float
) -> list[float]:
    latencies: list[float] = []
    left = [count]
    clock = time.perf_counter

    async def worker() -> None:
        while left[0] > 0 and clock() < deadline:
            left[0] -= 1
            body = BODIES[left[0] % len(BODIES)]
            started = clock()
            async with session.post(url, data=body, headers=HEADERS) as resp:
                await resp.read()
                if resp.status != 200:
                    raise RuntimeError(f"{url}: HTTP {resp.status}")
            latencies.append(clock() - started)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return latencies


async def measure(url: str, *, concurrency: int, requests: int, duration: float, warmup: int) -> Cell:
    connector = aiohttp.TCPConnector(limit=concurrency, limit_per_host=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        await drive(session, url, concurrency, warmup, time.perf_counter() + WARMUP_MAX_S)
        started = time.perf_counter()
        latencies = await drive(session, url, concurrency, requests, started + duration)
        seconds = time.perf_counter() - started
    latencies.sort()
    n = len(latencies)
    return Cell(
        concurrency=concurrency,
        requests=n,
        seconds=round(seconds, 3),
        rps=round(n / seconds, 1),
        p50_ms=round(latencies[(n - 1) // 2] * 1000, 3),
        p99_ms=round(latencies[min(n - 1, int(n * 0.99))] * 1000, 3),
    )


async def reason(url: str) -> str:
    """The x-tierwise-reason of one request: proof that the classifier decided (and from its cache)."""
    async with aiohttp.ClientSession() as session, session.post(url, data=BODIES[0], headers=HEADERS) as resp:
        await resp.read()
        return resp.headers.get("x-tierwise-reason", "")


async def run(args: argparse.Namespace, servers: list[Server], workdir: Path) -> dict[str, Any]:
    py = sys.executable
    load_cpus, upstream_cpus, sut_cpus = cpu_plan(not args.no_pin)
    if load_cpus:
        os.sched_setaffinity(0, load_cpus)

    def upstream(name: str, *extra: str) -> str:
        port = free_port()
        argv = [py, "-m", "tests.fakes.upstream", "--kind", "openai", "--port", str(port), *extra]
        server = Server(name, argv, port=port, cpus=upstream_cpus, logdir=workdir)
        servers.append(server)
        server.wait_ready()
        return f"http://127.0.0.1:{port}/v1"

    answers = upstream("answers", "--reply", "That sounds like a vivid dream.")
    graders = {
        d: upstream(f"grader-{d}ms", "--reply", "draft", "--delay", str(d / 1000)) for d in args.delays
    }
    plan: dict[str, tuple[str | None, bool]] = {BASELINE: (None, False)}
    for delay in args.delays:
        plan[f"grader {delay} ms, cache off"] = (graders[delay], False)
        plan[f"grader {delay} ms, cache on"] = (graders[delay], True)
    under_test: dict[str, Server] = {}
    targets: dict[str, str] = {}  # system → URL; the graders are measured directly too, as references
    for delay, url in graders.items():
        targets[direct(delay)] = url + "/chat/completions"
    for i, (name, (grader, cache)) in enumerate(plan.items()):
        port = free_port()
        path = workdir / f"tierwise-{i}.yaml"
        ledger = f"sqlite:///{workdir / f'tierwise-{i}.db'}"
        path.write_bytes(orjson.dumps(config(answers, grader, ledger, cache=cache)))  # JSON is YAML
        argv = [py, "-m", "tierwise.cli", "serve", "--config", str(path), "--port", str(port)]
        server = Server(
            f"tierwise-{i}", [*argv, "--shutdown-timeout", "5"], port=port, cpus=sut_cpus, logdir=workdir
        )
        servers.append(server)
        under_test[name] = server
        targets[name] = f"http://127.0.0.1:{port}/v1/chat/completions"
    for name, server in under_test.items():
        server.wait_ready()
        print(f"  {name}: pid {server.proc.pid}, port {server.port}", file=sys.stderr, flush=True)

    # Every body once to every system, before any measurement: the caches hold all 256 answers.
    for url in targets.values():
        async with aiohttp.ClientSession() as session:
            await drive(session, url, 32, len(BODIES), time.perf_counter() + 60)
    rounds: dict[str, dict[int, list[Cell]]] = {s: {c: [] for c in args.concurrency} for s in targets}
    for n in range(args.rounds):
        for concurrency in args.concurrency:
            for name, url in targets.items():
                cell = await measure(
                    url,
                    concurrency=concurrency,
                    requests=args.requests,
                    duration=args.duration,
                    warmup=args.warmup,
                )
                rounds[name][concurrency].append(cell)
                print(
                    f"  round {n + 1} {name:<26} c={concurrency:<3} {cell.rps:>7.0f} req/s  "
                    f"p50 {cell.p50_ms:.2f} ms  p99 {cell.p99_ms:.2f} ms",
                    file=sys.stderr,
                    flush=True,
                )
    reasons = {}
    for name in under_test:
        reasons[name] = await reason(targets[name])
        expected = "default:" if name == BASELINE else "classifier:"
        if name.endswith("cache on"):
            expected = "classifier (cached):"
        if not reasons[name].startswith(expected):
            raise RuntimeError(f"{name}: decided by {reasons[name]!r}, expected {expected}…")
    # Noise on a shared machine only ever slows a run down: report each cell's fastest round by p50.
    results = {
        s: {c: min(cells, key=lambda cell: cell.p50_ms) for c, cells in by_c.items()}
        for s, by_c in rounds.items()
    }
    pinned = [sorted(c) if c else None for c in (load_cpus, upstream_cpus, sut_cpus)]
    return {"results": results, "rounds": rounds, "reasons": reasons, "cpus": pinned}


def direct(delay: int) -> str:
    return f"grader {delay} ms, direct"


def render(results: dict[str, dict[int, Cell]], delays: list[int]) -> str:
    base = results[BASELINE]
    lines: list[str] = []
    for c in sorted(base):
        rows = [["system", "req/s", "p50 ms", "p99 ms", "added p50 ms", "added p99 ms", "added p50 - grader"]]
        for name, cells in results.items():
            cell = cells[c]
            delay = next((d for d in delays if name == f"grader {d} ms, cache off"), None)
            if name == BASELINE or name.endswith("direct"):
                added = ["", "", ""]
            else:
                grader = results[direct(delay)][c].p50_ms if delay is not None else 0.0
                added = [
                    f"{cell.p50_ms - base[c].p50_ms:+.2f}",
                    f"{cell.p99_ms - base[c].p99_ms:+.2f}",
                    f"{cell.p50_ms - base[c].p50_ms - grader:+.2f}" if delay is not None else "",
                ]
            rows.append([name, f"{cell.rps:.0f}", f"{cell.p50_ms:.2f}", f"{cell.p99_ms:.2f}", *added])
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        lines.append(f"\nconcurrency {c}")
        for row in rows:
            lines.append(
                "  "
                + "  ".join(v.ljust(widths[i]) if i == 0 else v.rjust(widths[i]) for i, v in enumerate(row))
            )
    lines.append(
        "\nadded = this system minus tierwise without a classifier, same run and concurrency. 'added p50 - "
        "grader' also subtracts the p50 of the grader measured directly ('direct' rows: the load generator "
        "to the fake grader): what tierwise itself adds around the one grader call of each request."
    )
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000, help="measured requests per cell (at most)")
    parser.add_argument("--duration", type=float, default=5.0, help="at most this many seconds per cell")
    parser.add_argument(
        "--warmup", type=int, default=200, help=f"requests before each cell (or {WARMUP_MAX_S:g} s)"
    )
    parser.add_argument(
        "--rounds", type=int, default=3, help="measure every cell this many times; report the best"
    )
    parser.add_argument("--concurrency", default="1,10", help="comma-separated levels")
    parser.add_argument("--delays", default="0,50", help="comma-separated grader delays in ms")
    parser.add_argument("--no-pin", action="store_true", help="do not pin processes to CPUs")
    parser.add_argument("--json", metavar="PATH", help="also write every figure to this JSON file")
    args = parser.parse_args(argv)
    args.concurrency = [int(c) for c in args.concurrency.split(",")]
    args.delays = [int(d) for d in args.delays.split(",")]
    if (
        any(c < 1 for c in args.concurrency)
        or any(d < 0 for d in args.delays)
        or min(args.requests, args.rounds) < 1
    ):
        parser.error("concurrency, requests and rounds must be > 0; delays ≥ 0")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    measured = run_measured(run, args, prefix="tierwise-bench-classifier-")
    if measured is None:
        return 130
    info = machine()
    load_cpus, upstream_cpus, sut_cpus = measured["cpus"]
    print(f"machine: {info['cpus']} CPUs ({info['cpu_model']}), Python {info['python']}, {info['loop']}")
    print(f"pinned to CPUs: load generator {load_cpus}, upstreams {upstream_cpus}, tierwise {sut_cpus}")
    print(
        f"each cell: {args.warmup} warm-up requests (or {WARMUP_MAX_S:g} s), then {args.requests} requests "
        f"or {args.duration} s; "
        f"best of {args.rounds} rounds by p50"
    )
    print(render(measured["results"], args.delays))
    if args.json:
        doc = {
            "machine": info,
            "settings": {
                k: getattr(args, k)
                for k in ("requests", "duration", "warmup", "rounds", "concurrency", "delays")
            },
            "reasons": measured["reasons"],
            **cells_json(measured["rounds"], measured["results"]),
        }
        Path(args.json).write_bytes(orjson.dumps(doc, option=orjson.OPT_INDENT_2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
