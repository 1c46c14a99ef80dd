"""tierwise and the LiteLLM proxy side by side, on one fast fake upstream. One command:

    python bench/vs_litellm.py [--requests N] [--duration S] [--concurrency 1,10,50] [--json out.json]

It installs the LiteLLM proxy (``litellm[proxy]``, version ``LITELLM_VERSION``) into a venv of its own
(``out/bench-litellm-venv/``, reused when it already holds that version; never a tierwise dependency),
then, in one run, against one fake upstream (``tests/fakes/upstream.py``, its own process), measures
  * ``upstream``: the upstream directly, the ceiling of this load generator and upstream;
  * ``tierwise``: ``tierwise serve`` configured as ``bench/overhead.py`` runs it (``model="auto"``, the
    built-in rules, the SQLite ledger, metrics and the access log on);
  * ``litellm``: the LiteLLM proxy, one worker, configured as its production guide advises (see
    ``litellm_config`` and ``LITELLM_ENV``), its one model on the same upstream.
Both proxies get the same requests (``overhead.BODIES``, ``model="auto"``) from the same load generator
(``overhead.measure``), pinned to the same CPU, one process each. For each concurrency: requests/s,
p50/p99 latency and what each proxy adds to the direct upstream's, CPU ms per request, peak RSS; then
the ratio tierwise ÷ LiteLLM of requests/s per process against the target. See bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from overhead import (
    BODIES,
    HEADERS,
    KEY,
    OTHER_BUSY_LIMIT,
    RETRY_BUDGET_S,
    ROOT,
    Cell,
    Server,
    best,
    cells_json,
    cpu_plan,
    driver_note,
    free_port,
    ledger_rows,
    machine,
    measure_rounds,
    quiet,
    run_measured,
    table,
    tierwise_config,
)

# 1.107.0 was a compromised release (withdrawn from PyPI); the [proxy] extra of later ones needs
# `litellm-proxy` or `litellm-proxy-extras` versions that PyPI does not serve. 1.106.12 is the newest
# that installs.
LITELLM_VERSION = "1.106.12"
DEFAULT_VENV = ROOT / "out" / "bench-litellm-venv"
INSTALL_TIMEOUT_S = 480
START_TIMEOUT_S = 180  # LiteLLM took 16–34 s to start on a busy 2-core VM
# tierwise ÷ LiteLLM requests/s, one process each, judged where both are saturated: the highest
# concurrency. At c=1 each proxy serves one request at a time, so the ratio is one of latencies (it
# could reach 40× only if tierwise added nothing to the upstream's own round trip); at c=10 the load
# generator, not tierwise, sets tierwise's pace on a 2-CPU machine (see the driver note).
RPS_RATIO_TARGET = 40.0
LABELS = {
    "upstream": "upstream (direct)",
    "tierwise": "tierwise",
    "litellm": f"LiteLLM proxy {LITELLM_VERSION}",
}
MASKED = "(the load generator's key)"  # what the JSON says instead of the master key
REPLY = "Negative"  # the fake upstream's answer: both proxies must hand it back unchanged
# The upstream model both proxies ask for: tierwise's draft tier (overhead.tierwise_config), where the
# benchmark's requests route.
UPSTREAM_MODEL = "cheap-model"
# LiteLLM's environment, from its production guide (docs.litellm.ai/docs/proxy/prod):
LITELLM_ENV = {
    # It refuses to start without a master key; the load generator sends this one, so LiteLLM checks
    # the key of every request (tierwise, as overhead.py runs it, checks none).
    "LITELLM_MASTER_KEY": KEY,
    "LITELLM_LOG": "ERROR",  # no info or access log lines: only errors
    "LITELLM_MODE": "PRODUCTION",  # no .env file loading
    "LITELLM_LOCAL_MODEL_COST_MAP": "True",  # the price map shipped in the package: no fetch at start
}


# -- LiteLLM's install and configuration ------------------------------------------------------------


class InstallError(RuntimeError):
    """The LiteLLM proxy could not be installed (no network, or PyPI refused the pinned version)."""


def litellm_config(upstream: str) -> dict[str, Any]:
    """The LiteLLM proxy's config: one model, ``auto`` (the name the benchmark's requests carry), on the
    fake upstream's OpenAI base URL; logging and the optional database writes off."""
    return {
        "model_list": [
            {
                "model_name": "auto",
                "litellm_params": {
                    "model": f"openai/{UPSTREAM_MODEL}",
                    "api_base": upstream,
                    "api_key": "os.environ/TIERWISE_BENCH_KEY",  # the key tierwise sends upstream too
                },
            }
        ],
        "litellm_settings": {
            "set_verbose": False,  # no debug logging
            "json_logs": True,  # what logging is left (errors) as JSON lines
            "request_timeout": 600,
        },
        "general_settings": {
            "master_key": "os.environ/LITELLM_MASTER_KEY",
            # No database is configured, so there are no spend or error rows to write; said anyway,
            # as the production guide does.
            "disable_spend_logs": True,
            "disable_error_logs": True,
        },
    }


def litellm_argv(venv: Path, config: Path, port: int) -> list[str]:
    """One uvicorn worker (the production guide's advice), on the loopback only."""
    entry = str(venv / "bin" / "litellm")
    return [entry, "--config", str(config), "--host", "127.0.0.1", "--port", str(port), "--num_workers", "1"]


def installed_version(venv: Path) -> str | None:
    """The version of ``litellm`` in ``venv``, or None if it has no working LiteLLM proxy."""
    python, entry = venv / "bin" / "python", venv / "bin" / "litellm"
    if not python.exists() or not entry.exists():
        return None
    probe = "import importlib.metadata as m; print(m.version('litellm'))"
    done = subprocess.run([str(python), "-c", probe], capture_output=True, text=True, timeout=60)
    return (done.stdout.strip() or None) if done.returncode == 0 else None


def install_litellm(venv: Path, timeout: float = INSTALL_TIMEOUT_S) -> float:
    """Make ``venv`` hold ``litellm[proxy]==LITELLM_VERSION``; the seconds it took (0 when reused).
    Raises InstallError, with the end of pip's log, when it cannot."""
    if installed_version(venv) == LITELLM_VERSION:
        return 0.0
    started = time.monotonic()
    venv.parent.mkdir(parents=True, exist_ok=True)
    log = venv.parent / "bench-litellm-install.log"
    print(
        f"installing litellm[proxy]=={LITELLM_VERSION} into {venv} (a few minutes; log: {log})",
        file=sys.stderr,
        flush=True,
    )
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet"]
    steps = [[sys.executable, "-m", "venv", str(venv)], [*pip, f"litellm[proxy]=={LITELLM_VERSION}"]]
    with open(log, "wb") as out:
        for step in steps:
            try:
                done = subprocess.run(step, stdout=out, stderr=subprocess.STDOUT, timeout=timeout)
            except subprocess.TimeoutExpired:
                raise InstallError(f"`{' '.join(step)}` did not finish within {timeout:.0f} s") from None
            if done.returncode != 0:
                tail = "\n".join(log.read_text(errors="replace").splitlines()[-8:])
                raise InstallError(f"`{' '.join(step)}` exited with {done.returncode}:\n{tail}")
    if installed_version(venv) != LITELLM_VERSION:
        raise InstallError(f"{venv} still has no litellm {LITELLM_VERSION} after the install")
    return time.monotonic() - started


async def wait_litellm(server: Server, timeout: float = START_TIMEOUT_S) -> float:
    """Until LiteLLM's readiness route answers 200; the seconds since its process started. Raises with
    its log's tail if the process exits or is not ready in time."""
    started = time.monotonic()
    url = f"http://127.0.0.1:{server.port}/health/readiness"
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
        while time.monotonic() - started < timeout:
            if server.proc.poll() is not None:
                raise RuntimeError(f"{server.name} exited with {server.proc.returncode}:\n{server.tail()}")
            try:
                async with session.get(url) as resp:
                    if resp.status == 200:
                        return time.time() - server.ps.create_time()
            except (aiohttp.ClientError, OSError, TimeoutError):
                pass  # not listening yet
            await asyncio.sleep(0.25)
    raise RuntimeError(f"{server.name} was not ready within {timeout:.0f} s ({url}):\n{server.tail()}")


async def check_answer(name: str, url: str) -> None:
    """Raise unless one benchmark request to ``url`` is answered 200 with the upstream's reply: the
    figures compare only systems that do the same work."""
    async with aiohttp.ClientSession() as session, session.post(url, data=BODIES[0], headers=HEADERS) as resp:
        raw = await resp.read()
    try:
        content = orjson.loads(raw)["choices"][0]["message"]["content"]
    except (orjson.JSONDecodeError, KeyError, IndexError, TypeError):
        content = None
    if resp.status != 200 or content != REPLY:
        raise RuntimeError(f"{name}: a benchmark request got HTTP {resp.status}: {raw[:300]!r}")


# -- the run ---------------------------------------------------------------------------------------


async def run(args: argparse.Namespace, servers: list[Server], workdir: Path) -> dict[str, Any]:
    """Start the upstream, tierwise and LiteLLM; measure each at every concurrency, ``args.rounds``
    times; return ``{"results", "rounds", "extra", "cpus", "configs"}``."""
    py = sys.executable
    load_cpus, upstream_cpus, sut_cpus = cpu_plan(not args.no_pin)
    if load_cpus:
        os.sched_setaffinity(0, load_cpus)
    port = free_port()
    upstream = Server(
        "upstream",
        [py, "-m", "tests.fakes.upstream", "--kind", "openai", "--port", str(port), "--reply", REPLY],
        port=port,
        cpus=upstream_cpus,
        logdir=workdir,
    )
    servers.append(upstream)
    upstream.wait_ready()
    upstream_url = f"http://127.0.0.1:{port}/v1"

    # LiteLLM first: it takes the longest to start. Both proxies share the system-under-test CPU and
    # are measured one after the other; the idle one costs nothing.
    configs = {
        "litellm": litellm_config(upstream_url),
        "tierwise": tierwise_config(upstream_url, f"sqlite:///{workdir / 'tierwise.db'}"),
    }
    for name, settings in configs.items():  # JSON is YAML
        (workdir / f"{name}.yaml").write_bytes(orjson.dumps(settings, option=orjson.OPT_INDENT_2))
    port = free_port()
    litellm = Server(
        "litellm",
        litellm_argv(args.litellm_venv, workdir / "litellm.yaml", port),
        port=port,
        cpus=sut_cpus,
        logdir=workdir,
        env=LITELLM_ENV,
    )
    servers.append(litellm)
    port = free_port()
    argv = [py, "-m", "tierwise.cli", "serve", "--config", str(workdir / "tierwise.yaml")]
    argv += ["--port", str(port), "--shutdown-timeout", "5"]
    tierwise = Server("tierwise", argv, port=port, cpus=sut_cpus, logdir=workdir)
    servers.append(tierwise)
    tierwise.wait_ready()
    litellm_start_s = await wait_litellm(litellm)
    under_test = {"upstream": upstream, "tierwise": tierwise, "litellm": litellm}
    for name, server in under_test.items():
        await check_answer(LABELS[name], f"http://127.0.0.1:{server.port}/v1/chat/completions")
        print(f"  {LABELS[name]}: pid {server.proc.pid}, port {server.port}", file=sys.stderr, flush=True)
    print(f"  LiteLLM was ready {litellm_start_s:.1f} s after its start", file=sys.stderr, flush=True)

    # overhead.py's rules: every cell once per round, again (while time allows) when another process
    # disturbed it; ``best`` picks the one reported; every measurement goes to the JSON.
    rounds = await measure_rounds(
        args, under_test, upstream, load_cpus=load_cpus, upstream_cpus=upstream_cpus, labels=LABELS
    )
    results = {s: {c: best(cells) for c, cells in by_c.items()} for s, by_c in rounds.items()}
    extra: dict[str, Any] = {
        s: {"peak_rss_mb_vmhwm": round(sv.hwm() / 2**20, 1)} for s, sv in under_test.items()
    }
    extra["litellm"]["start_s"] = round(litellm_start_s, 1)
    tierwise.stop()  # drains and flushes the ledger
    cells = [cell for by_c in rounds["tierwise"].values() for cell in by_c]
    extra["tierwise"]["ledger_rows"] = ledger_rows(workdir / "tierwise.db")
    # check_answer's request, then each cell's warm-up and measured requests
    extra["tierwise"]["requests_sent"] = 1 + len(cells) * args.warmup + sum(cell.requests for cell in cells)
    pinned = [sorted(c) if c else None for c in (load_cpus, upstream_cpus, sut_cpus)]
    return {"results": results, "rounds": rounds, "extra": extra, "cpus": pinned, "configs": configs}


# -- report ----------------------------------------------------------------------------------------


def compare(results: dict[str, dict[int, Cell]]) -> dict[str, Any]:
    """tierwise against LiteLLM, level by level, and against the direct upstream: the figures the
    summary and the README quote."""
    tw, ll, up = results["tierwise"], results["litellm"], results["upstream"]
    levels = sorted(tw)
    rps_ratio = {c: round(tw[c].rps / ll[c].rps, 1) for c in levels}
    return {
        "rps_ratio_tierwise_over_litellm": rps_ratio,
        "cpu_ratio_litellm_over_tierwise": {
            c: round(ll[c].cpu_ms_per_request / tw[c].cpu_ms_per_request, 1) for c in levels
        },
        "added_p50_ms": {
            s: {c: round(results[s][c].p50_ms - up[c].p50_ms, 3) for c in levels}
            for s in ("tierwise", "litellm")
        },
        "added_p99_ms": {
            s: {c: round(results[s][c].p99_ms - up[c].p99_ms, 3) for c in levels}
            for s in ("tierwise", "litellm")
        },
        "target": {"rps_ratio_min": RPS_RATIO_TARGET, "judged_at_concurrency": levels[-1]},
        "met": rps_ratio[levels[-1]] >= RPS_RATIO_TARGET,
    }


def render(results: dict[str, dict[int, Cell]], extra: dict[str, Any], summary: dict[str, Any]) -> str:
    """The tables: each system per concurrency, then the ratios and the notes."""
    levels = sorted(results["tierwise"])
    up = results["upstream"]
    lines: list[str] = []
    for c in levels:
        rows = [["system", "req/s", "p50 ms", "p99 ms", "added p50", "added p99", "CPU ms/req",
                 "peak RSS MB", "driver busy"]]  # fmt: skip
        for system, cells in results.items():
            cell = cells[c]
            added = [f"{cell.p50_ms - up[c].p50_ms:+.2f}", f"{cell.p99_ms - up[c].p99_ms:+.2f}"]
            if system == "upstream":
                added = ["", ""]
            rows.append(
                [
                    LABELS[system],
                    f"{cell.rps:.0f}",
                    f"{cell.p50_ms:.2f}",
                    f"{cell.p99_ms:.2f}",
                    *added,
                    f"{cell.cpu_ms_per_request:.3f}",
                    f"{cell.peak_rss_mb:.1f}",
                    f"{cell.driver_busy_pct:.0f}%",
                ]
            )
        lines += [f"\nconcurrency {c}", *table(rows)]
    rps, cpu = summary["rps_ratio_tierwise_over_litellm"], summary["cpu_ratio_litellm_over_tierwise"]
    rows = [
        ["tierwise vs the LiteLLM proxy", *(f"c={c}" for c in levels), "target", ""],
        [
            "requests/s, tierwise ÷ LiteLLM",
            *(f"{rps[c]:.1f}×" for c in levels),
            f"≥ {RPS_RATIO_TARGET:.0f}× at c={levels[-1]}",
            "met" if summary["met"] else "NOT MET",
        ],
        ["CPU per request, LiteLLM ÷ tierwise", *(f"{cpu[c]:.1f}×" for c in levels), "", ""],
    ]
    lines += ["", *table(rows, indent="")]
    hwm = ", ".join(f"{LABELS[s]} {extra[s]['peak_rss_mb_vmhwm']:.1f} MB" for s in ("tierwise", "litellm"))
    lines.append(f"\npeak RSS over the process's life (VmHWM): {hwm}")
    lines += driver_note(results)
    busy = [f"{LABELS[s]} at c={c} ({cell.other_busy_pct:.0f}%)" for s, cells in results.items()
            for c, cell in cells.items() if not quiet(cell)]  # fmt: skip
    if busy:
        lines.append(
            f"note: no quiet round for {', '.join(busy)}: other processes (or the hypervisor) used "
            f"≥ {OTHER_BUSY_LIMIT}% of a core during every round of these cells."
        )
    lines.append(f"LiteLLM was ready {extra['litellm']['start_s']:.1f} s after its start.")
    rows_written, sent = extra["tierwise"]["ledger_rows"], extra["tierwise"]["requests_sent"]
    lines.append(f"ledger rows written by tierwise: {rows_written} (successful requests sent: {sent})")
    return "\n".join(lines)


def headline(
    results: dict[str, dict[int, Cell]], extra: dict[str, Any], summary: dict[str, Any]
) -> dict[str, Any]:
    """The one-line JSON summary: each system's figures per level, the ratios and the verdict."""
    fields = ("rps", "p50_ms", "p99_ms", "cpu_ms_per_request", "peak_rss_mb")
    return {
        "litellm_version": LITELLM_VERSION,
        "systems": {
            s: {str(c): {f: getattr(cell, f) for f in fields} for c, cell in cells.items()}
            for s, cells in results.items()
        },
        "peak_rss_mb_vmhwm": {s: extra[s]["peak_rss_mb_vmhwm"] for s in results},
        **summary,
    }


def document(
    args: argparse.Namespace, measured: dict[str, Any] | None, summary: dict[str, Any] | None, **more: Any
) -> dict[str, Any]:
    """Everything a run measured and how, for ``--json``; ``measured`` None when the run did not happen."""
    doc: dict[str, Any] = {
        "litellm": {
            "version": LITELLM_VERSION,
            "venv": str(args.litellm_venv),
            # The master key is the load generator's fake key; the JSON names it rather than copy it.
            "env": {k: MASKED if k == "LITELLM_MASTER_KEY" else v for k, v in LITELLM_ENV.items()},
            "argv": litellm_argv(args.litellm_venv, Path("litellm.yaml"), 0)[1:],
        },
        "settings": {
            k: getattr(args, k)
            for k in ("requests", "duration", "warmup", "rounds", "retries", "concurrency")
        },
        **more,
    }
    if measured is not None:
        load_cpus, upstream_cpus, sut_cpus = measured["cpus"]
        doc |= {
            "machine": machine(),
            "pinning": {
                "load_generator": load_cpus,
                "upstream": upstream_cpus,
                "system_under_test": sut_cpus,
            },
            "configs": measured["configs"],
            **cells_json(measured["rounds"], measured["results"]),
            "extra": measured["extra"],
            "summary": summary,
        }
    return doc


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--requests", type=int, default=5000, help="measured requests per system and level")
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
    parser.add_argument("--concurrency", default="1,10,50", help="comma-separated levels")
    parser.add_argument(
        "--litellm-venv",
        type=Path,
        default=DEFAULT_VENV,
        help="venv for the LiteLLM proxy (reused if present)",
    )
    parser.add_argument("--no-pin", action="store_true", help="do not pin processes to CPUs")
    parser.add_argument("--json", metavar="PATH", help="also write every figure to this JSON file")
    args = parser.parse_args(argv)
    args.litellm_venv = args.litellm_venv.absolute()  # the servers run in the repository's root
    try:
        args.concurrency = [int(c) for c in args.concurrency.split(",")]
    except ValueError:
        parser.error(f"--concurrency: not a comma-separated list of integers: {args.concurrency!r}")
    if any(c < 1 for c in args.concurrency) or min(args.requests, args.rounds) < 1 or args.retries < 0:
        parser.error("--concurrency, --requests and --rounds must be ≥ 1, --retries ≥ 0")
    if args.duration <= 0 or args.warmup < 0:
        parser.error("--duration must be > 0 and --warmup ≥ 0")
    return args


def _write(path: str | None, doc: dict[str, Any]) -> None:
    if path:
        Path(path).write_bytes(orjson.dumps(doc, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS))


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        install_s = install_litellm(args.litellm_venv)
    except (InstallError, OSError, subprocess.SubprocessError) as exc:
        message = f"cannot install the LiteLLM proxy (litellm[proxy]=={LITELLM_VERSION}): {exc}"
        print(f"error: {message}", file=sys.stderr)
        print("This benchmark needs PyPI once; the venv is reused after that.", file=sys.stderr)
        _write(args.json, document(args, None, None, installed=False, error=message))
        return 2
    measured = run_measured(run, args, prefix="tierwise-vs-litellm-")
    if measured is None:
        return 130
    summary = compare(measured["results"])
    load_cpus, upstream_cpus, sut_cpus = measured["cpus"]
    info = machine()
    print(f"machine: {info['cpus']} CPUs ({info['cpu_model']}), Python {info['python']}, {info['loop']}")
    print(f"pinned to CPUs: load generator {load_cpus}, upstream {upstream_cpus}, each proxy {sut_cpus}")
    print(
        f"each cell: {args.warmup} warm-up requests, then {args.requests} requests or {args.duration} s, "
        f"best of {args.rounds} rounds by req/s; one disturbed by other processes is repeated "
        f"(up to {args.retries} times, in the first {RETRY_BUDGET_S} s)"
    )
    print(render(measured["results"], measured["extra"], summary))
    doc = document(args, measured, summary, installed=True, install_s=round(install_s, 1))
    line = headline(measured["results"], measured["extra"], summary)
    print(orjson.dumps(line, option=orjson.OPT_NON_STR_KEYS).decode())
    _write(args.json, doc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
