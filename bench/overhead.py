"""How much does tierwise cost per request, next to the least any proxy can cost? One command:

    python bench/overhead.py [--requests N] [--duration S] [--concurrency 1,10,50] [--json out.json]

In one run, against one fast fake upstream (``tests/fakes/upstream.py``, its own process), it measures
  * ``upstream``: the upstream directly — the ceiling of this load generator and upstream;
  * ``passthrough``: ``bench/passthrough.py``, a bare aiohttp proxy — the reference floor;
  * ``tierwise``: ``tierwise serve`` as a user runs it: ``model="auto"``, the built-in rules, the SQLite
    ledger on, every response header;
  * ``tierwise-noledger``: the same with ``storage.ledger: none``, to show the ledger's share;
  * ``tierwise-keys`` (only when named in ``--systems``): ``tierwise`` with ``auth.mode: keys``, a tenant
    budget (day and month) and rate limits on the key and tenant, in memory state: the access layer's cost.
For each and each concurrency: requests/s, p50/p99 latency, CPU ms per request of the served process
(user + system, with its children) and its peak RSS; then tierwise's ratios to the pass-through of the
same run against the project's targets. Each system under test gets a CPU of its own when the machine
has two or more; the load generator (this process) shares the other with the upstream. See README.md.

``--mode json,stream`` (the default) measures both request shapes, one after the other, each with its
own upstream and servers: ``json`` the non-streamed requests above, ``stream`` the same requests with
``"stream": true``, answered with exactly 8 content chunks. Streams report requests/s, time to the
first content chunk (TTFT) and time to ``[DONE]``, p50 and p99.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import hashlib
import os
import platform
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import psutil

ROOT = Path(__file__).resolve().parent.parent
SYSTEMS = ("upstream", "passthrough", "tierwise", "tierwise-noledger", "tierwise-keys")
MODES = ("json", "stream")
DEFAULT_SYSTEMS = SYSTEMS[:4]
LABELS = {
    "upstream": "upstream (direct)",
    "passthrough": "pass-through proxy",
    "tierwise": "tierwise",
    "tierwise-noledger": "tierwise, ledger none",
    "tierwise-keys": "tierwise, keys + budgets",
}
# requests/s targets are judged at these concurrency levels (those of them measured; when none is, at
# every level but the first, the latency level); latency targets at the first level.
TARGETS = {
    "rps_ratio_min": 0.9,
    "rps_levels": (10, 50),
    "p50_ratio_c1_max": 1.1,
    "cpu_ms_per_request_max": 0.6,
    "peak_rss_mb_max": 120,
}
STREAM_TARGETS = {
    "rps_ratio_min": 0.8,
    "rps_levels": (10,),
    "ttft_p50_ratio_c1_max": 1.2,
    "ttft_p99_ratio_c1_max": 1.5,
}
KEY = "sk-bench-0123456789"  # sent to the fake upstream, which accepts anything
# Small, realistic requests: ~60 tokens, non-streamed, answered with one word. 256 distinct bodies, so
# that a cache keyed on the prompt could not make a system look faster than it would be in use.
_PRODUCTS = ("blue jacket", "coffee grinder", "running shoes", "desk lamp", "phone case", "rice cooker",
             "hiking backpack", "pair of wireless earbuds")  # fmt: skip
_OPINIONS = (
    "It arrived on time and fits well, but the zipper broke after three days and support has not "
    "answered my emails yet.",
    "Setup took two minutes and it has worked perfectly every morning since; I would happily buy it "
    "again for my sister.",
    "It looks nothing like the photos, the colour is off, and the return label they sent me does not "
    "scan at the post office.",
    "Delivery was a day late and the box was dented, though the item itself seems fine so far after a "
    "week of daily use.",
)
BODIES = [
    orjson.dumps(
        {
            "model": "auto",
            "messages": [
                {"role": "system", "content": "You are a precise text classifier. Answer with one word."},
                {
                    "role": "user",
                    "content": "Classify the sentiment of this customer review as positive, negative or "
                    f"neutral.\n\nReview (order {10_000 + 37 * i}): I ordered the {_PRODUCTS[i % 8]} "
                    f"two weeks ago. {_OPINIONS[i // 8 % 4]}",
                },
            ],
            "temperature": 0,
            "max_tokens": 5,
        }
    )
    for i in range(256)
]
HEADERS = {"Content-Type": "application/json", "Authorization": f"Bearer {KEY}"}
# Streams: the same requests with "stream": true, answered by an upstream whose reply is 8 words, one
# word per chunk: 8 content chunks between the role chunk and the finish chunk. max_tokens leaves room.
STREAM_REPLY = "Negative: the zipper broke and support never answered."
STREAM_CONTENT_CHUNKS = 8
STREAM_BODIES = [orjson.dumps({**orjson.loads(body), "stream": True, "max_tokens": 16}) for body in BODIES]
# A chunk with text: "content" followed by a non-empty string (the role chunk's content is "").
# Every system forwards the upstream's chunk bytes as they are, so one pattern fits them all.
_CONTENT = re.compile(rb'"content":"[^"]')
_DONE = b"data: [DONE]\n\n"
DRIVER_BUSY_LIMIT = 90  # % of a core: above it the load generator, not the system, sets the pace
OTHER_BUSY_LIMIT = 10  # % of a core used by processes outside the benchmark worth a note
RETRY_BUDGET_S = 150  # disturbed measurements are repeated only this long into the run
MAX_ERRORS = 50  # a cell with more failed requests than this stops: the figures would mean nothing


# -- processes --------------------------------------------------------------------------------------


# prctl(PR_SET_PDEATHSIG): a server whose benchmark is killed outright (SIGKILL) gets a SIGTERM too.
_PRCTL = getattr(ctypes.CDLL(None), "prctl", None) if sys.platform == "linux" else None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """One server process in its own process group, pinned to ``cpus``, output to a log file;
    ``env``: variables added to its environment."""

    def __init__(
        self,
        name: str,
        argv: list[str],
        *,
        port: int,
        cpus: set[int] | None,
        logdir: Path,
        env: dict[str, str] | None = None,
    ) -> None:
        self.name = name
        self.port = port
        self.cpus = cpus
        self.log = logdir / f"{name}.log"
        path = os.pathsep.join(p for p in (str(ROOT / "src"), os.environ.get("PYTHONPATH")) if p)
        env = {**os.environ, "PYTHONPATH": path, "TIERWISE_BENCH_KEY": KEY, **(env or {})}

        def in_child() -> None:  # after fork, before exec: every thread the server starts inherits this
            if cpus:
                os.sched_setaffinity(0, cpus)
            if _PRCTL is not None:
                _PRCTL(1, signal.SIGTERM)

        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(
                argv,
                cwd=ROOT,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                preexec_fn=in_child,
            )
        self.ps = psutil.Process(self.proc.pid)

    def wait_ready(self, timeout: float = 20.0) -> None:
        """Until the port accepts connections; raise with the log's tail if the process died or hung."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n{self.tail()}")
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2),
            ):
                self._check_pinned()
                return
            time.sleep(0.05)
        raise RuntimeError(
            f"{self.name} did not listen on port {self.port} within {timeout} s:\n{self.tail()}"
        )

    def _check_pinned(self) -> None:
        # A server on the wrong CPUs makes every figure of the run wrong, silently: refuse to measure.
        if self.cpus and os.sched_getaffinity(self.proc.pid) != self.cpus:
            raise RuntimeError(
                f"{self.name} runs on CPUs {sorted(os.sched_getaffinity(self.proc.pid))}, "
                f"not {sorted(self.cpus)} as planned"
            )

    def tail(self, lines: int = 20) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def cpu_seconds(self) -> float:
        """User + system CPU of the process, its reaped children and its live ones."""
        times = self.ps.cpu_times()
        total = times.user + times.system + times.children_user + times.children_system
        for child in self.ps.children(recursive=True):
            with contextlib.suppress(psutil.Error):
                child_times = child.cpu_times()
                total += child_times.user + child_times.system
        return total

    def rss(self) -> int:
        return self.ps.memory_info().rss

    def hwm(self) -> int:
        """The kernel's high-water mark of the resident set (VmHWM), over the process's life."""
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
        return self.rss()

    def stop(self) -> None:
        """SIGTERM to the group (tierwise drains and flushes its ledger), SIGKILL after 10 s."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        with contextlib.suppress(ProcessLookupError):  # anything the group left behind
            os.killpg(self.proc.pid, signal.SIGKILL)


# The CPUs this process may use when it starts: the benchmark pins itself to the load generator's
# CPU, and a plan made after that from its own affinity would put every server on that one CPU too.
_CPUS = sorted(os.sched_getaffinity(0))


def cpu_plan(pin: bool) -> tuple[set[int] | None, set[int] | None, set[int] | None]:
    """CPUs for (load generator, upstream, system under test): the system under test alone when possible.
    The same plan however often it is asked for, before or after the load generator is pinned."""
    cpus = _CPUS
    if not pin or len(cpus) < 2:
        return None, None, None
    if len(cpus) == 2:
        return {cpus[0]}, {cpus[0]}, {cpus[1]}
    return {cpus[0]}, {cpus[1]}, {cpus[2]}


# -- load ------------------------------------------------------------------------------------------


@dataclass
class Cell:
    """One system at one concurrency."""

    concurrency: int
    requests: int
    errors: int
    seconds: float
    rps: float
    p50_ms: float
    p99_ms: float
    cpu_ms_per_request: float
    peak_rss_mb: float
    driver_busy_pct: float  # the busiest core of the load generator and the upstream, % of one core
    other_busy_pct: float  # CPU used by processes outside this benchmark, % of one core
    # Streams only (p50/p99 above are then the time to [DONE]): the time to the first content chunk.
    ttft_p50_ms: float | None = None
    ttft_p99_ms: float | None = None


async def _drive(
    session: aiohttp.ClientSession, url: str, concurrency: int, count: int, deadline: float
) -> tuple[list[float], int]:
    """``concurrency`` workers send ``count`` requests between them, stopping early at ``deadline``."""
    latencies: list[float] = []
    state = {"left": count, "errors": 0}
    clock = time.perf_counter

    async def worker() -> None:
        while state["left"] > 0 and clock() < deadline and state["errors"] <= MAX_ERRORS:
            state["left"] -= 1
            body = BODIES[state["left"] % len(BODIES)]
            started = clock()
            try:
                async with session.post(url, data=body, headers=HEADERS) as resp:
                    await resp.read()
                    ok = resp.status == 200
            except (aiohttp.ClientError, OSError):
                ok = False
            if ok:
                latencies.append(clock() - started)
            else:
                state["errors"] += 1

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return latencies, state["errors"]


async def _drive_stream(
    session: aiohttp.ClientSession, url: str, concurrency: int, count: int, deadline: float
) -> tuple[list[float], list[float], int]:
    """``_drive`` for streamed requests: ``(times to the first content chunk, times to the end of the
    body, errors)``. A stream counts only if it had content and ended with ``data: [DONE]``."""
    ttfts: list[float] = []
    totals: list[float] = []
    state = {"left": count, "errors": 0}
    clock = time.perf_counter
    search = _CONTENT.search

    async def worker() -> None:
        while state["left"] > 0 and clock() < deadline and state["errors"] <= MAX_ERRORS:
            state["left"] -= 1
            body = STREAM_BODIES[state["left"] % len(STREAM_BODIES)]
            started = clock()
            first = None
            tail = b""  # the end of the previous piece: a pattern may straddle two reads
            try:
                async with session.post(url, data=body, headers=HEADERS) as resp:
                    ok = resp.status == 200
                    async for piece in resp.content.iter_any():
                        seen = tail + piece
                        if first is None and search(seen):
                            first = clock()
                        tail = seen[-16:]
            except (aiohttp.ClientError, OSError):
                ok = False
            if ok and first is not None and tail.endswith(_DONE):
                ttfts.append(first - started)
                totals.append(clock() - started)
            else:
                state["errors"] += 1

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return ttfts, totals, state["errors"]


async def check_stream(url: str) -> None:
    """Raise unless one streamed request to ``url`` gets exactly ``STREAM_CONTENT_CHUNKS`` content
    chunks and ends with ``data: [DONE]``: the figures are comparable only if every system does."""
    async with (
        aiohttp.ClientSession() as client,
        client.post(url, data=STREAM_BODIES[0], headers=HEADERS) as resp,
    ):
        raw = await resp.read()
    chunks = len(_CONTENT.findall(raw))
    if resp.status != 200 or chunks != STREAM_CONTENT_CHUNKS or not raw.endswith(_DONE):
        raise RuntimeError(
            f"{url}: a streamed request got HTTP {resp.status}, {chunks} content chunks (expected "
            f"{STREAM_CONTENT_CHUNKS}); end of the body: {raw[-120:]!r}"
        )


def _percentile(sorted_values: list[float], share: float) -> float:
    """Nearest-rank percentile of sorted seconds, in ms."""
    n = len(sorted_values)
    index = (n - 1) // 2 if share == 0.5 else min(n - 1, int(n * share))
    return round(sorted_values[index] * 1000, 3)


def _cpu(proc: psutil.Process) -> float:
    times = proc.cpu_times()
    return times.user + times.system


def _machine_busy() -> float:
    """CPU seconds every CPU has spent busy (steal included: the hypervisor's other guests disturb
    a run just as much); guest time is already counted in user time."""
    times = psutil.cpu_times()
    busy = sum(times) - times.idle - getattr(times, "iowait", 0.0)
    return busy - getattr(times, "guest", 0.0) - getattr(times, "guest_nice", 0.0)


async def measure(
    server: Server,
    upstream: Server,
    url: str,
    *,
    concurrency: int,
    requests: int,
    duration: float,
    warmup: int,
    shared_core: bool,
    stream: bool = False,
) -> Cell:
    """One cell: warm up, then measure ``server`` at ``concurrency``; ``stream``: streamed requests."""
    connector = aiohttp.TCPConnector(limit=concurrency, limit_per_host=0)
    ttfts: list[float] = []
    async with aiohttp.ClientSession(connector=connector) as session:
        drive = _drive_stream if stream else _drive
        # The warm-up also opens the connections the measurement will use.
        await drive(session, url, concurrency, warmup, time.perf_counter() + 30)
        peak = server.rss()
        sampling = True

        async def sample() -> None:
            nonlocal peak
            while sampling:
                peak = max(peak, server.rss())
                await asyncio.sleep(0.05)

        sampler = asyncio.create_task(sample())
        me = psutil.Process()
        cpu_before = server.cpu_seconds()
        driver_before = (_cpu(me), _cpu(upstream.ps))
        machine_before = _machine_busy()
        started = time.perf_counter()
        if stream:
            ttfts, latencies, errors = await _drive_stream(
                session, url, concurrency, requests, started + duration
            )
        else:
            latencies, errors = await _drive(session, url, concurrency, requests, started + duration)
        seconds = time.perf_counter() - started
        cpu = server.cpu_seconds() - cpu_before
        load_cpu, upstream_cpu = _cpu(me) - driver_before[0], _cpu(upstream.ps) - driver_before[1]
        ours = load_cpu + upstream_cpu + (cpu if server is not upstream else 0.0)
        other = max(0.0, _machine_busy() - machine_before - ours)
        driver = load_cpu + upstream_cpu if shared_core else max(load_cpu, upstream_cpu)
        sampling = False
        await sampler
        peak = max(peak, server.rss())
    latencies.sort()
    ttfts.sort()
    n = len(latencies)
    if errors > MAX_ERRORS or not n:
        raise RuntimeError(
            f"{server.name}: {errors} failed requests at concurrency {concurrency}:\n{server.tail()}"
        )
    return Cell(
        concurrency=concurrency,
        requests=n,
        errors=errors,
        seconds=round(seconds, 3),
        rps=round(n / seconds, 1),
        p50_ms=_percentile(latencies, 0.5),
        p99_ms=_percentile(latencies, 0.99),
        cpu_ms_per_request=round(cpu * 1000 / n, 3),
        peak_rss_mb=round(peak / 2**20, 1),
        driver_busy_pct=round(driver * 100 / seconds, 1),
        other_busy_pct=round(other * 100 / seconds, 1),
        ttft_p50_ms=_percentile(ttfts, 0.5) if ttfts else None,
        ttft_p99_ms=_percentile(ttfts, 0.99) if ttfts else None,
    )


# -- the run ---------------------------------------------------------------------------------------


def _quiet(cell: Cell) -> bool:
    return cell.other_busy_pct < OTHER_BUSY_LIMIT


def _best(cells: list[Cell]) -> Cell:
    """The measurement to report: the most requests/s among those no other process disturbed (noise
    on a shared machine only ever slows a run down), or among all if every one was disturbed."""
    return max([cell for cell in cells if _quiet(cell)] or cells, key=lambda cell: cell.rps)


# The same rules for the other benchmarks in bench/ that import this one (vs_litellm.py).
quiet = _quiet
best = _best


def tierwise_config(upstream: str, ledger: str) -> dict[str, Any]:
    """Three providers on the one fake upstream, one model per tier; no policy section (built-in rules)."""
    providers = {
        name: {"kind": "openai", "base_url": upstream, "api_key_env": "TIERWISE_BENCH_KEY"}
        for name in ("cheap", "middle", "strong")
    }
    models = [
        {
            "name": "draft-1",
            "provider": "cheap",
            "upstream": "cheap-model",
            "tier": "draft",
            "context_window": 16_000,
            "price": {"input_per_mtok": 0.15, "output_per_mtok": 0.6},
        },
        {
            "name": "review-1",
            "provider": "middle",
            "upstream": "middle-model",
            "tier": "review",
            "context_window": 128_000,
            "price": {"input_per_mtok": 1.0, "output_per_mtok": 4.0},
        },
        {
            "name": "exec-1",
            "provider": "strong",
            "upstream": "strong-model",
            "tier": "execution",
            "context_window": 200_000,
            "price": {"input_per_mtok": 3.0, "output_per_mtok": 15.0},
        },
    ]
    return {"providers": providers, "models": models, "storage": {"ledger": ledger}}


def access_config() -> dict[str, Any]:
    """Keys on: the load generator's key is a config key of a tenant with budgets and rate limits no
    request reaches, so every request pays for the checks and none is refused."""
    digest = "sha256:" + hashlib.sha256(KEY.encode()).hexdigest()
    limits = {"requests_per_minute": 10_000_000, "tokens_per_minute": 10_000_000_000}
    return {
        "auth": {"mode": "keys"},
        "tenants": {"bench": {"budget": {"daily_usd": 1e6, "monthly_usd": 1e7}, "rate_limits": limits}},
        "keys": [{"id": "bench", "tenant": "bench", "hash": digest, "rate_limits": limits}],
    }


def ledger_rows(path: Path) -> int | None:
    if not path.exists():
        return None
    with contextlib.closing(sqlite3.connect(path)) as conn:
        return int(conn.execute("SELECT count(*) FROM requests").fetchone()[0])


async def run(args: argparse.Namespace, servers: list[Server], workdir: Path) -> dict[str, Any]:
    """Every mode of ``args.mode`` in turn: ``{"modes": {mode: run_mode's result}, "cpus": …}``."""
    load_cpus, upstream_cpus, sut_cpus = cpu_plan(not args.no_pin)
    if load_cpus:
        os.sched_setaffinity(0, load_cpus)
    modes = {}
    for mode in args.mode:
        modes[mode] = await run_mode(args, servers, workdir, mode)
        for server in servers:  # the next mode has servers of its own
            server.stop()
    pinned = [sorted(c) if c else None for c in (load_cpus, upstream_cpus, sut_cpus)]
    return {"modes": modes, "cpus": pinned}


async def run_mode(
    args: argparse.Namespace, servers: list[Server], workdir: Path, mode: str = "json"
) -> dict[str, Any]:
    """Start the upstream and the systems of ``args.systems``, measure them at every concurrency and
    round (``mode``: "json" or "stream" requests) and return ``{"results", "rounds", "extra"}``."""
    py = sys.executable
    load_cpus, upstream_cpus, sut_cpus = cpu_plan(not args.no_pin)
    stream = mode == "stream"
    port = free_port()
    reply = STREAM_REPLY if stream else "Negative"
    upstream = Server(
        f"{mode}-upstream",
        [py, "-m", "tests.fakes.upstream", "--kind", "openai", "--port", str(port), "--reply", reply],
        port=port,
        cpus=upstream_cpus,
        logdir=workdir,
    )
    servers.append(upstream)
    upstream.wait_ready()
    upstream_url = f"http://127.0.0.1:{port}/v1"

    # Every system is started first and measured level by level, so all systems see each level in
    # the same minute of the machine's life (a VM's neighbours are not constant). Idle ones cost nothing.
    under_test: dict[str, Server] = {}
    for system in args.systems:
        if system == "upstream":
            under_test[system] = upstream
            continue
        port = free_port()
        if system == "passthrough":
            argv = [
                py,
                str(ROOT / "bench" / "passthrough.py"),
                "--upstream",
                upstream_url,
                "--port",
                str(port),
            ]
        else:
            # A ledger file per system: the row count below is tierwise's own.
            db = workdir / f"{mode}-{system}.db"
            ledger = "none" if system == "tierwise-noledger" else f"sqlite:///{db}"
            config = workdir / f"{mode}-{system}.yaml"
            settings = tierwise_config(upstream_url, ledger)
            if system == "tierwise-keys":
                settings |= access_config()
            config.write_bytes(orjson.dumps(settings))  # JSON is YAML
            argv = [py, "-m", "tierwise.cli", "serve", "--config", str(config), "--port", str(port)]
            argv += ["--shutdown-timeout", "5"]
        server = Server(f"{mode}-{system}", argv, port=port, cpus=sut_cpus, logdir=workdir)
        servers.append(server)
        under_test[system] = server
    for name, server in under_test.items():
        server.wait_ready()
        if stream:
            await check_stream(f"http://127.0.0.1:{server.port}/v1/chat/completions")
        print(
            f"  {mode}: {LABELS[name]}: pid {server.proc.pid}, port {server.port}",
            file=sys.stderr,
            flush=True,
        )

    rounds = await measure_rounds(
        args,
        under_test,
        upstream,
        load_cpus=load_cpus,
        upstream_cpus=upstream_cpus,
        stream=stream,
        label=mode,
    )
    results = {s: {c: _best(cells) for c, cells in by_c.items()} for s, by_c in rounds.items()}
    extra: dict[str, Any] = {
        s: {"peak_rss_mb_vmhwm": round(sv.hwm() / 2**20, 1)} for s, sv in under_test.items()
    }
    if "tierwise" in under_test:
        under_test["tierwise"].stop()  # drains and flushes the ledger
        cells = [cell for by_c in rounds["tierwise"].values() for cell in by_c]
        served = (
            len(cells) * args.warmup + sum(cell.requests for cell in cells) + int(stream)
        )  # + check_stream
        extra["tierwise"]["ledger_rows"] = ledger_rows(workdir / f"{mode}-tierwise.db")
        extra["tierwise"]["requests_sent"] = served
    return {"results": results, "rounds": rounds, "extra": extra}


async def measure_rounds(
    args: argparse.Namespace,
    under_test: dict[str, Server],
    upstream: Server,
    *,
    load_cpus: set[int] | None,
    upstream_cpus: set[int] | None,
    stream: bool = False,
    label: str = "",
    labels: dict[str, str] = LABELS,
) -> dict[str, dict[int, list[Cell]]]:
    """Each system at each concurrency once per round, measured again (up to ``args.retries`` times,
    while RETRY_BUDGET_S allows) when another process disturbed it; every measurement, for ``_best``
    to pick from and for the JSON."""
    rounds: dict[str, dict[int, list[Cell]]] = {s: {c: [] for c in args.concurrency} for s in under_test}
    retry_until = time.monotonic() + RETRY_BUDGET_S
    prefix = f"{label} " if label else ""
    for n in range(args.rounds):
        for concurrency in args.concurrency:
            for system, server in under_test.items():
                url = f"http://127.0.0.1:{server.port}/v1/chat/completions"
                for attempt in range(1 + args.retries):
                    cell = await measure(
                        server,
                        upstream,
                        url,
                        concurrency=concurrency,
                        requests=args.requests,
                        duration=args.duration,
                        warmup=args.warmup,
                        shared_core=bool(load_cpus) and load_cpus == upstream_cpus,
                        stream=stream,
                    )
                    rounds[system][concurrency].append(cell)
                    progress = f"{prefix}round {n + 1} {labels[system]:<22} c={concurrency:<3}"
                    busy = (
                        f", other processes {cell.other_busy_pct:.0f}% of a core" if not _quiet(cell) else ""
                    )
                    print(
                        f"  {progress} {cell.rps:>8.0f} req/s  p50 {cell.p50_ms:.2f} ms{busy}",
                        file=sys.stderr,
                        flush=True,
                    )
                    if _quiet(cell) or attempt == args.retries or time.monotonic() > retry_until:
                        break
    return rounds


# -- report ----------------------------------------------------------------------------------------


def rps_levels(levels: list[int], targets: dict[str, Any]) -> list[int]:
    """The measured levels a requests/s target is judged at (see TARGETS)."""
    judged = [c for c in levels if c in targets["rps_levels"]]
    return judged or levels[1:] or levels


def ratios(results: dict[str, dict[int, Cell]], extra: dict[str, Any], system: str) -> dict[str, Any]:
    """``system`` against the pass-through of the same run, and which targets it meets."""
    base, mine = results["passthrough"], results[system]
    levels = sorted(mine)
    low = levels[0]  # the latency level: 1 by default
    rps = {c: round(mine[c].rps / base[c].rps, 3) for c in levels}
    p50 = {c: round(mine[c].p50_ms / base[c].p50_ms, 3) for c in levels}
    cpu = {c: mine[c].cpu_ms_per_request for c in levels}
    rss = extra[system]["peak_rss_mb_vmhwm"]
    out: dict[str, Any] = {
        "rps_ratio": rps,
        "p50_ratio": p50,
        "cpu_ms_per_request": cpu,
        "peak_rss_mb": rss,
        "met": {
            "rps_ratio": min(rps[c] for c in rps_levels(levels, TARGETS)) >= TARGETS["rps_ratio_min"],
            "p50_ratio_c1": p50[low] <= TARGETS["p50_ratio_c1_max"],
            "cpu_ms_per_request": max(cpu.values()) <= TARGETS["cpu_ms_per_request_max"],
            "peak_rss_mb": rss <= TARGETS["peak_rss_mb_max"],
        },
    }
    if "upstream" in results:
        out["added_p50_ms"] = {c: round(mine[c].p50_ms - results["upstream"][c].p50_ms, 3) for c in levels}
    return out


def stream_ratios(results: dict[str, dict[int, Cell]], system: str) -> dict[str, Any]:
    """Streams: ``system`` against the pass-through of the same run, and which targets it meets."""
    base, mine = results["passthrough"], results[system]
    levels = sorted(mine)
    low = levels[0]

    def ratio(field: str) -> dict[int, float]:
        return {c: round(getattr(mine[c], field) / getattr(base[c], field), 3) for c in levels}

    rps, ttft50, ttft99 = ratio("rps"), ratio("ttft_p50_ms"), ratio("ttft_p99_ms")
    return {
        "rps_ratio": rps,
        "ttft_p50_ratio": ttft50,
        "ttft_p99_ratio": ttft99,
        "done_p50_ratio": ratio("p50_ms"),
        "done_p99_ratio": ratio("p99_ms"),
        "cpu_ms_per_request": {c: mine[c].cpu_ms_per_request for c in levels},
        "met": {
            "rps_ratio": min(rps[c] for c in rps_levels(levels, STREAM_TARGETS))
            >= STREAM_TARGETS["rps_ratio_min"],
            "ttft_p50_ratio_c1": ttft50[low] <= STREAM_TARGETS["ttft_p50_ratio_c1_max"],
            "ttft_p99_ratio_c1": ttft99[low] <= STREAM_TARGETS["ttft_p99_ratio_c1_max"],
        },
    }


def _table(rows: list[list[str]], indent: str = "  ") -> list[str]:
    """Rows of cells as aligned text: the first column left-aligned, the others right-aligned."""
    widths = [max(len(row[i]) for row in rows if i < len(row)) for i in range(max(map(len, rows)))]
    return [
        indent
        + "  ".join(cell.ljust(widths[i]) if i == 0 else cell.rjust(widths[i]) for i, cell in enumerate(row))
        for row in rows
    ]


table = _table  # for the other benchmarks in bench/ that import this one


def driver_note(results: dict[str, dict[int, Cell]]) -> list[str]:
    """The cells whose load generator's core was busy enough to set their pace, as one note line, or none."""
    bound = [f"{LABELS[s]} at c={c}" for s, cells in results.items() if s != "upstream"
             for c, cell in cells.items() if cell.driver_busy_pct >= DRIVER_BUSY_LIMIT]  # fmt: skip
    if not bound:
        return []
    return [
        f"note: the core of the load generator and the upstream was ≥ {DRIVER_BUSY_LIMIT}% busy for "
        f"{', '.join(bound)}: there req/s is the load generator's limit, a lower bound of the system's."
    ]


def cells_json(
    rounds: dict[str, dict[int, list[Cell]]], results: dict[str, dict[int, Cell]]
) -> dict[str, Any]:
    """Every measurement and the reported one of each cell, for a ``--json`` file."""
    return {
        "rounds": {
            s: {str(c): [asdict(cell) for cell in cells] for c, cells in by_c.items()}
            for s, by_c in rounds.items()
        },
        "results": {s: {str(c): asdict(cell) for c, cell in cells.items()} for s, cells in results.items()},
    }


def _busy_note(results: dict[str, dict[int, Cell]]) -> list[str]:
    """The cells other processes disturbed (their reported round too), as one note line, or none."""
    busy = [f"{LABELS[s]} at c={c} ({cell.other_busy_pct:.0f}%)" for s, cells in results.items()
            for c, cell in cells.items() if cell.other_busy_pct >= OTHER_BUSY_LIMIT]  # fmt: skip
    if not busy:
        return []
    cells = ", ".join(busy)
    return [f"note: other processes (or the hypervisor) used ≥ {OTHER_BUSY_LIMIT}% of a core during {cells}."]


def render(report: dict[str, Any]) -> str:
    results: dict[str, dict[int, Cell]] = report["results"]
    extra = report["extra"]
    levels = sorted(next(iter(results.values())))
    lines: list[str] = []
    for c in levels:
        rows = [["system", "req/s", "p50 ms", "p99 ms", "CPU ms/req", "peak RSS MB", "driver busy"]]
        for system, cells in results.items():
            cell = cells[c]
            rows.append(
                [
                    LABELS[system],
                    f"{cell.rps:.0f}",
                    f"{cell.p50_ms:.2f}",
                    f"{cell.p99_ms:.2f}",
                    f"{cell.cpu_ms_per_request:.3f}",
                    f"{cell.peak_rss_mb:.1f}",
                    f"{cell.driver_busy_pct:.0f}%",
                ]
            )
        lines += [f"\nconcurrency {c}", *_table(rows)]
    driver = driver_note(results)
    lines += ["\n" + driver[0]] if driver else []
    lines += _busy_note(results)
    if "upstream" in results and "passthrough" in results:
        slow = [c for c in levels if results["upstream"][c].rps < 1.5 * results["passthrough"][c].rps]
        if slow:
            lines.append(
                f"note: at c={slow} the direct upstream does not reach 1.5× the pass-through's req/s."
            )
    low = levels[0]
    judged = ",".join(map(str, rps_levels(levels, TARGETS)))
    for system, r in report["ratios"].items():
        verdict = {k: "met" if v else "NOT MET" for k, v in r["met"].items()}
        rows = [[f"{LABELS[system]} vs the pass-through", *(f"c={c}" for c in levels), "target", ""]]
        rows.append(
            [
                "requests/s ratio",
                *(f"{r['rps_ratio'][c]:.2f}" for c in levels),
                f"≥ {TARGETS['rps_ratio_min']:.2f} at c={judged}",
                verdict["rps_ratio"],
            ]
        )
        rows.append(
            [
                "p50 latency ratio",
                *(f"{r['p50_ratio'][c]:.2f}×" for c in levels),
                f"≤ {TARGETS['p50_ratio_c1_max']}× at c={low}",
                verdict["p50_ratio_c1"],
            ]
        )
        rows.append(
            [
                "CPU ms/request",
                *(f"{r['cpu_ms_per_request'][c]:.3f}" for c in levels),
                f"≤ {TARGETS['cpu_ms_per_request_max']} at every c",
                verdict["cpu_ms_per_request"],
            ]
        )
        rows.append(
            [
                "peak RSS MB (VmHWM)",
                f"{r['peak_rss_mb']:.1f}",
                *([""] * (len(levels) - 1)),
                f"≤ {TARGETS['peak_rss_mb_max']}",
                verdict["peak_rss_mb"],
            ]
        )
        if "added_p50_ms" in r:
            rows.append(
                ["added p50 vs direct, ms", *(f"+{r['added_p50_ms'][c]:.2f}" for c in levels), "", ""]
            )
        lines += ["", *_table(rows, indent="")]
    if "upstream" in results:
        added = ", ".join(
            f"{LABELS[s]} +{results[s][low].p50_ms - results['upstream'][low].p50_ms:.2f} ms"
            for s in results
            if s != "upstream"
        )
        lines.append(f"\nadded latency at c={low} (p50 minus the direct upstream's p50): {added}")
    if "tierwise" in results and "tierwise-noledger" in results:
        with_ledger, without = results["tierwise"], results["tierwise-noledger"]
        share = ", ".join(
            f"c={c}: {1 - without[c].cpu_ms_per_request / with_ledger[c].cpu_ms_per_request:.0%}"
            for c in levels
        )
        lines.append(f"the SQLite ledger's share of tierwise CPU per request: {share}")
    if "tierwise" in results and "tierwise-keys" in results:
        plain, keyed = results["tierwise"], results["tierwise-keys"]
        added = ", ".join(
            f"c={c}: {keyed[c].cpu_ms_per_request - plain[c].cpu_ms_per_request:+.3f} ms" for c in levels
        )
        lines.append(f"CPU per request added by keys, budgets and rate limits: {added}")
    if "ledger_rows" in extra.get("tierwise", {}):
        rows_written, sent = extra["tierwise"]["ledger_rows"], extra["tierwise"]["requests_sent"]
        lines.append(f"ledger rows written by tierwise: {rows_written} (successful requests sent: {sent})")
    return "\n".join(lines)


def render_stream(report: dict[str, Any]) -> str:
    """The streamed requests' tables: TTFT and time to [DONE] per system, then the ratios."""
    results: dict[str, dict[int, Cell]] = report["results"]
    extra = report["extra"]
    levels = sorted(next(iter(results.values())))
    lines: list[str] = []
    for c in levels:
        rows = [
            ["system", "req/s", "TTFT p50", "TTFT p99", "[DONE] p50", "[DONE] p99", "CPU ms/req",
             "peak RSS MB", "driver busy"]
        ]  # fmt: skip
        for system, cells in results.items():
            cell = cells[c]
            rows.append(
                [
                    LABELS[system],
                    f"{cell.rps:.0f}",
                    f"{cell.ttft_p50_ms or 0:.2f}",
                    f"{cell.ttft_p99_ms or 0:.2f}",
                    f"{cell.p50_ms:.2f}",
                    f"{cell.p99_ms:.2f}",
                    f"{cell.cpu_ms_per_request:.3f}",
                    f"{cell.peak_rss_mb:.1f}",
                    f"{cell.driver_busy_pct:.0f}%",
                ]
            )
        lines += [f"\nstreams, concurrency {c} (times in ms)", *_table(rows)]
    lines += _busy_note(results)
    low = levels[0]
    judged = ",".join(map(str, rps_levels(levels, STREAM_TARGETS)))
    for system, r in report["ratios"].items():
        verdict = {k: "met" if v else "NOT MET" for k, v in r["met"].items()}
        rows = [[f"streams: {LABELS[system]} vs the pass-through", *(f"c={c}" for c in levels), "target", ""]]
        rows.append(
            [
                "requests/s ratio",
                *(f"{r['rps_ratio'][c]:.2f}" for c in levels),
                f"≥ {STREAM_TARGETS['rps_ratio_min']:.2f} at c={judged}",
                verdict["rps_ratio"],
            ]
        )
        for key, label, target in (
            ("ttft_p50_ratio", "TTFT p50 ratio", "ttft_p50_ratio_c1"),
            ("ttft_p99_ratio", "TTFT p99 ratio", "ttft_p99_ratio_c1"),
            ("done_p50_ratio", "[DONE] p50 ratio", None),
            ("done_p99_ratio", "[DONE] p99 ratio", None),
        ):
            rows.append(
                [
                    label,
                    *(f"{r[key][c]:.2f}×" for c in levels),
                    f"≤ {STREAM_TARGETS[target + '_max']}× at c={low}" if target else "",
                    verdict[target] if target else "",
                ]
            )
        rows.append(["CPU ms/request", *(f"{r['cpu_ms_per_request'][c]:.3f}" for c in levels), "", ""])
        lines += ["", *_table(rows, indent="")]
    if "ledger_rows" in extra.get("tierwise", {}):
        rows_written, sent = extra["tierwise"]["ledger_rows"], extra["tierwise"]["requests_sent"]
        lines.append(
            f"streams: ledger rows written by tierwise: {rows_written} (successful requests sent: {sent})"
        )
    return "\n".join(lines)


def machine() -> dict[str, Any]:
    try:
        import uvloop

        loop = f"uvloop {uvloop.__version__}"
    except ImportError:
        loop = "asyncio"
    return {
        "cpus": os.cpu_count(),
        "cpu_model": next(
            (
                line.split(":", 1)[1].strip()
                for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")
            ),
            platform.processor(),
        ),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "aiohttp": aiohttp.__version__,
        "loop": loop,
    }


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--requests", type=int, default=5000, help="measured requests per system and concurrency"
    )
    parser.add_argument(
        "--duration", type=float, default=5.0, help="at most this many seconds per measurement"
    )
    parser.add_argument("--warmup", type=int, default=200, help="requests sent before each measurement")
    parser.add_argument(
        "--rounds", type=int, default=3, help="measure every cell this many times; report the best"
    )
    parser.add_argument(
        "--retries", type=int, default=2, help="repeat a measurement another process disturbed (max times)"
    )
    parser.add_argument(
        "--concurrency", default="1,10,50", help="comma-separated levels; the first is the latency one"
    )
    parser.add_argument(
        "--systems",
        default=",".join(DEFAULT_SYSTEMS),
        help=f"comma-separated subset of {','.join(SYSTEMS)} (default: all but tierwise-keys)",
    )
    parser.add_argument(
        "--mode",
        default=",".join(MODES),
        help="comma-separated: json (non-streamed requests), stream (streamed requests, 8 content chunks)",
    )
    parser.add_argument("--no-pin", action="store_true", help="do not pin processes to CPUs")
    parser.add_argument("--json", metavar="PATH", help="also write every figure to this JSON file")
    args = parser.parse_args(argv)
    args.concurrency = [int(c) for c in args.concurrency.split(",")]
    args.systems = [s.strip() for s in args.systems.split(",")]
    args.mode = [m.strip() for m in args.mode.split(",")]
    unknown = set(args.systems) - set(SYSTEMS) | set(args.mode) - set(MODES)
    if (
        unknown
        or any(c < 1 for c in args.concurrency)
        or min(args.requests, args.rounds) < 1
        or args.retries < 0
        or args.duration <= 0
    ):
        parser.error(f"unknown --systems or --mode {sorted(unknown)}" if unknown else "numbers must be > 0")
    return args


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # SIGTERM and SIGHUP clean up like Ctrl-C


def run_measured(
    measure: Callable[[argparse.Namespace, list[Server], Path], Coroutine[Any, Any, dict[str, Any]]],
    args: argparse.Namespace,
    *,
    prefix: str,
) -> dict[str, Any] | None:
    """Run ``measure`` on uvloop (if installed) in a temporary folder; every server it started is
    stopped however it ends, Ctrl-C, SIGTERM and SIGHUP included. None when interrupted."""
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGHUP, _interrupt)
    servers: list[Server] = []
    try:
        import uvloop

        loop_run = uvloop.run
    except ImportError:
        loop_run = asyncio.run
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        try:
            return loop_run(measure(args, servers, Path(tmp)))
        except KeyboardInterrupt:
            print("\ninterrupted", file=sys.stderr)
            return None
        finally:
            for server in reversed(servers):
                server.stop()


def reports(measured: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Per mode: the results, extra figures and the ratios of every tierwise system that was measured."""
    out: dict[str, dict[str, Any]] = {}
    for mode, run_result in measured["modes"].items():
        results, extra = run_result["results"], run_result["extra"]
        report: dict[str, Any] = {"results": results, "extra": extra, "ratios": {}}
        if "passthrough" in results:
            for system in ("tierwise", "tierwise-noledger", "tierwise-keys"):
                if system in results:
                    report["ratios"][system] = (
                        stream_ratios(results, system) if mode == "stream" else ratios(results, extra, system)
                    )
        out[mode] = report
    return out


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    measured = run_measured(run, args, prefix="tierwise-bench-")
    if measured is None:
        return 130
    by_mode = reports(measured)
    info = machine()
    load_cpus, upstream_cpus, sut_cpus = measured["cpus"]
    print(
        f"machine: {info['cpus']} CPUs ({info['cpu_model']}), Python {info['python']}, "
        f"aiohttp {info['aiohttp']}, {info['loop']}"
    )
    print(
        f"pinned to CPUs: load generator {load_cpus}, upstream {upstream_cpus}, system under test {sut_cpus}"
    )
    print(
        f"each cell: {args.warmup} warm-up requests, then {args.requests} requests or {args.duration} s, "
        f"best of {args.rounds} rounds by req/s; one disturbed by other processes is repeated "
        f"(up to {args.retries} times, in the first {RETRY_BUDGET_S} s of each mode)"
    )
    if "json" in by_mode:
        print(render(by_mode["json"]))
    if "stream" in by_mode:
        print(render_stream(by_mode["stream"]))
    if args.json:
        modes = {
            mode: {
                **cells_json(measured["modes"][mode]["rounds"], report["results"]),
                "extra": report["extra"],
                "ratios": report["ratios"],
            }
            for mode, report in by_mode.items()
        }
        doc = {
            "machine": info,
            "pinning": {
                "load_generator": load_cpus,
                "upstream": upstream_cpus,
                "system_under_test": sut_cpus,
            },
            "settings": {
                k: getattr(args, k)
                for k in (
                    "mode",
                    "requests",
                    "duration",
                    "warmup",
                    "rounds",
                    "retries",
                    "concurrency",
                    "systems",
                )
            },
            "targets": TARGETS,
            "stream_targets": STREAM_TARGETS,
            # The non-streamed figures also at the top level, where they were before streams were measured.
            **modes.get("json", {}),
            "modes": modes,
        }
        Path(args.json).write_bytes(orjson.dumps(doc, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS))
    return 0


if __name__ == "__main__":
    sys.exit(main())
