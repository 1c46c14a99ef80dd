"""Do N ``tierwise serve`` replicas on Redis and PostgreSQL behave as one gateway, and what does a SIGKILL
lose? One command, loopback only, under a minute (36–50 s on a 2-core machine):

    python bench/replicas.py [--replicas 3] [--requests 4000] [--concurrency 50] [--json out.json]

It starts two fake upstreams (``tests/fakes/upstream.py``, their own processes: ``cheap`` answers the
draft tier, ``backup`` the others) and ``--replicas`` gateways sharing one PostgreSQL ledger table (in a
schema of this run's own, dropped at the end), one Redis database (``--redis``, db 15 by default; its
``tierwise:*`` keys are deleted before and after) and one spill directory. A round-robin client sends
``--requests`` chat requests, ``--concurrency`` at a time, every other one streamed. Part-way:

* **a kill**: once ``--kill-at`` of the requests are sent, the last replica is SIGKILLed and started
  again at once on the same port and directory. Requests sent to it meanwhile fail (a round-robin
  client with no health checks: the errors are counted by kind).
* **a failing provider**: once ``--fault-at`` of the requests are sent and the killed replica serves
  again (the load waits for it), every call to ``cheap`` fails with a 500 (the fake's
  ``POST /_fake/faults``). Until a breaker ejects it (seen in Redis), requests go
  to replica 0 alone, so the other replicas' own breakers never see a failure: if they avoid ``cheap``
  afterwards, it is because replica 0's ejection is shared.

Then every replica is stopped with SIGTERM and the ledger is read. The JSON summary gives requests
sent and answered (a 200 JSON body, or a stream that ended with ``[DONE]``: what the client saw),
errors by kind, latency p50/p99 of the answered, each answered request id (from the
``x-tierwise-request-id`` header) looked up in the ledger (missing, duplicated: the goal is 0 and 0),
rows of requests the client never saw answered, and per replica the calls that reached the failing
provider before and during its ejection. Exit status 1 when an answered request's row is missing or
duplicated, or the ejection was not shared; 2 when PostgreSQL or Redis is not there. The work
directory (the config, each process's log) is deleted unless something went wrong or ``--keep``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import yaml

ROOT = Path(__file__).resolve().parent.parent
KEY = "sk-bench-replicas-0123456789"
FAILING = "cheap"  # the provider made to fail part-way
FAILING_MODEL = "draft-1"
# Short questions the built-in rules route to the draft tier (model draft-1 on provider cheap).
PROMPTS = (
    "Classify: spam or not? 'WIN $$$ now'",
    "Classify the sentiment: 'the delivery was late again'",
    "Classify: is this a question? 'send me the invoice'",
)
REPLY = "one two three four five six seven eight"  # 8 words: a stream of 8 content chunks
ONSET_LIMIT_S = 10.0  # the longest requests go to replica 0 alone, waiting for the ejection
EJECTION_S = 60.0  # cooldown.seconds: the ejection lasts past the end of the run


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Process:
    """A server process, its output in a log file (never a pipe nobody reads)."""

    def __init__(self, name: str, argv: list[str], logdir: Path) -> None:
        self.name = name
        self.argv = argv
        self.log = logdir / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    def start(self) -> None:
        path = os.pathsep.join(p for p in (str(ROOT / "src"), str(ROOT), os.environ.get("PYTHONPATH")) if p)
        env = {**os.environ, "PYTHONPATH": path, "TIERWISE_BENCH_KEY": KEY}
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                self.argv, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def stop(self, timeout: float = 20.0) -> int | None:
        """SIGTERM, then SIGKILL if it has not exited within ``timeout``; the exit status."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


async def wait_http(url: str, process: Process, timeout: float = 30.0) -> None:
    """Until ``url`` answers 200; raise with the log's tail if the process exits or it never does."""
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as http:
        while time.monotonic() < deadline:
            if process.proc is not None and process.proc.poll() is not None:
                raise RuntimeError(f"{process.name} exited:\n{process.text()[-3000:]}")
            with contextlib.suppress(aiohttp.ClientError, OSError):
                async with http.get(url, timeout=aiohttp.ClientTimeout(total=1)) as r:
                    if r.status == 200:
                        return
            await asyncio.sleep(0.05)
    raise RuntimeError(f"{process.name} not ready at {url} within {timeout} s:\n{process.text()[-3000:]}")


def gateway_config(
    cheap: str, backup: str, *, ledger: str, state: str, spill: Path, journal: bool
) -> dict[str, Any]:
    providers = {
        name: {
            "kind": "openai",
            "base_url": url,
            "api_key_env": "TIERWISE_BENCH_KEY",
            "timeouts": {"connect": 2, "first_byte": 5, "read": 5, "total": 10},
        }
        for name, url in (("cheap", cheap), ("backup", backup), ("strong", backup))
    }
    models = [
        ("draft-1", "cheap", "draft", 16_000, 0.15, 0.6),
        ("review-1", "backup", "review", 128_000, 1.0, 4.0),
        ("exec-1", "strong", "execution", 200_000, 3.0, 15.0),
    ]
    return {
        "providers": providers,
        "models": [
            {
                "name": name,
                "provider": provider,
                "upstream": f"{name}-upstream",
                "tier": tier,
                "context_window": window,
                "price": {"input_per_mtok": price_in, "output_per_mtok": price_out},
            }
            for name, provider, tier, window, price_in, price_out in models
        ],
        "policy": {
            "retry": {"attempts": 2, "backoff_s": 0.01, "max_retry_after_s": 1},
            # The default ratio breaker; an ejection long enough to outlast the run.
            "cooldown": {"seconds": EJECTION_S},
        },
        "storage": {"ledger": ledger, "state": state, "spill_dir": str(spill), "journal": journal},
        "server": {"access_log": "off"},
    }


@dataclass
class Sent:
    index: int
    replica: int
    stream: bool
    sent_at: float  # unix time
    outcome: str = ""  # "answered", or an error kind
    request_id: str | None = None
    latency_s: float = 0.0


@dataclass
class Run:
    """What the load generator and its controller share."""

    replicas: int
    requests: int
    kill_at: int
    fault_at: int
    next_index: int = 0
    onset: bool = False  # the provider fails and no breaker has ejected it yet: replica 0 only
    sent: list[Sent] = field(default_factory=list)
    events: dict[str, Any] = field(default_factory=dict)
    kill_now: asyncio.Event = field(default_factory=asyncio.Event)
    fault_now: asyncio.Event = field(default_factory=asyncio.Event)


async def one_request(http: aiohttp.ClientSession, base: str, item: Sent) -> None:
    body: dict[str, Any] = {
        "model": "auto",
        "messages": [{"role": "user", "content": PROMPTS[item.index % len(PROMPTS)]}],
        "max_tokens": 50,
    }
    if item.stream:
        body["stream"] = True
    started = time.perf_counter()
    try:
        async with http.post(f"{base}/v1/chat/completions", json=body) as r:
            item.request_id = r.headers.get("x-tierwise-request-id")
            if r.status != 200:
                await r.read()
                item.outcome = f"http_{r.status}"
                return
            if not item.stream:
                doc = orjson.loads(await r.read())
                ok = bool(doc.get("choices"))
                item.outcome = "answered" if ok else "json_without_choices"
            else:
                done = False
                async for line in r.content:
                    if line.strip() == b"data: [DONE]":
                        done = True
                item.outcome = "answered" if done else "stream_without_done"
    except TimeoutError:  # before OSError, which it is
        item.outcome = "timeout"
    except aiohttp.ClientConnectorError:
        item.outcome = "connection_refused"
    except (aiohttp.ServerDisconnectedError, aiohttp.ClientPayloadError, aiohttp.ClientOSError, OSError):
        item.outcome = "connection_lost"  # the replica went away mid-request (reset, or closed)
    except aiohttp.ClientError as exc:
        item.outcome = type(exc).__name__
    finally:
        item.latency_s = time.perf_counter() - started


async def load(run: Run, bases: list[str], concurrency: int) -> None:
    timeout = aiohttp.ClientTimeout(total=15)
    connector = aiohttp.TCPConnector(limit=0, force_close=False)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as http:

        async def worker() -> None:
            while run.next_index < run.requests:
                index = run.next_index
                run.next_index += 1
                if index == run.kill_at:
                    run.kill_now.set()
                if index == run.fault_at:
                    run.fault_now.set()
                if index >= run.fault_at:
                    await run.events["fault_applied"].wait()
                replica = 0 if run.onset else index % run.replicas
                item = Sent(index, replica, stream=index % 2 == 1, sent_at=time.time())
                run.sent.append(item)
                await one_request(http, bases[replica], item)

        await asyncio.gather(*(worker() for _ in range(concurrency)))


async def kill_and_restart(run: Run, gateways: list[Process], bases: list[str]) -> None:
    """SIGKILL the last replica when the load says so, and start it again at once."""
    await run.kill_now.wait()
    victim = len(gateways) - 1
    killed_at = time.monotonic()
    gateways[victim].kill()
    run.events["killed"] = {"replica": victim, "at_request": run.kill_at}
    gateways[victim].start()
    await wait_http(f"{bases[victim]}/healthz", gateways[victim])
    run.events["killed"]["down_s"] = round(time.monotonic() - killed_at, 2)
    run.events["restarted"].set()


async def fail_provider(run: Run, cheap_control: str, redis_client: Any) -> None:
    """Make every call to the provider fail when the load says so; send the load to replica 0 alone
    until a breaker ejects it (its key appears in Redis)."""
    await run.fault_now.wait()
    await run.events["restarted"].wait()  # every replica serves: each can show it avoids the provider
    async with aiohttp.ClientSession() as http:
        async with http.post(cheap_control, json={"mix": ["500"], "rate": 1.0}) as r:
            r.raise_for_status()
        run.onset = True
        run.events["fault_started"] = time.time()
        run.events["fault_applied"].set()
        deadline = time.monotonic() + ONSET_LIMIT_S
        key = f"tierwise:cool:{FAILING_MODEL}"
        while time.monotonic() < deadline and not await redis_client.exists(key):
            await asyncio.sleep(0.02)
        ejected = await redis_client.exists(key)
        run.events["ejected_at"] = time.time() if ejected else None
        run.onset = False
        async with http.get(cheap_control) as r:
            run.events["calls_at_ejection"] = (await r.json()).get("calls")


def percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def reachable(postgres: str, redis_url: str) -> str | None:
    """Why the run cannot happen (no server, no client library), or None."""
    try:
        import asyncpg
        import redis.asyncio as aioredis
    except ImportError as exc:
        return f"needs tierwise[postgres,redis]: {exc}"
    try:
        conn = await asyncpg.connect(postgres, timeout=3)
    except (OSError, TimeoutError, asyncpg.PostgresError) as exc:
        return f"no PostgreSQL at {postgres.rpartition('@')[2]}: {type(exc).__name__}: {exc}"
    await conn.close()
    client = aioredis.from_url(redis_url, socket_connect_timeout=1, socket_timeout=2)
    try:
        await client.ping()
    except (OSError, aioredis.RedisError) as exc:
        return f"no Redis at {redis_url}: {type(exc).__name__}: {exc}"
    finally:
        await client.aclose()
    return None


async def clean_redis(client: Any) -> None:
    async for key in client.scan_iter(match="tierwise:*", count=500):
        await client.delete(key)


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    import asyncpg
    import redis.asyncio as aioredis

    schema = f"tw_replicas_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(args.postgres, timeout=5)
    await admin.execute(f'CREATE SCHEMA "{schema}"')
    redis_client = aioredis.from_url(args.redis, socket_connect_timeout=1, socket_timeout=2)
    await clean_redis(redis_client)
    separator = "&" if "?" in args.postgres else "?"
    ledger_url = f"{args.postgres}{separator}search_path={schema}"
    workdir = Path(tempfile.mkdtemp(prefix="tierwise-replicas-"))
    processes: list[Process] = []
    try:
        ports = {"cheap": free_port(), "backup": free_port()}
        upstreams = {}
        for name, port in ports.items():
            argv = [sys.executable, "-m", "tests.fakes.upstream", "--port", str(port), "--reply", REPLY]
            upstreams[name] = Process(
                f"upstream-{name}", [*argv, "--delay", str(args.upstream_delay)], workdir
            )
            processes.append(upstreams[name])
        for name, port in ports.items():
            await wait_http(f"http://127.0.0.1:{port}/v1/models", upstreams[name])
        config = gateway_config(
            f"http://127.0.0.1:{ports['cheap']}/v1",
            f"http://127.0.0.1:{ports['backup']}/v1",
            ledger=ledger_url,
            state=args.redis,
            spill=workdir / "spill",
            journal=not args.no_journal,
        )
        config_path = workdir / "tierwise.yaml"
        config_path.write_text(yaml.safe_dump(config))
        gateways, bases = [], []
        for i in range(args.replicas):
            port = free_port()
            argv = [sys.executable, "-m", "tierwise.cli", "serve", "--config", str(config_path)]
            gateway = Process(f"replica-{i}", [*argv, "--port", str(port)], workdir)
            processes.append(gateway)
            gateways.append(gateway)
            bases.append(f"http://127.0.0.1:{port}")
        for gateway, base in zip(gateways, bases, strict=True):
            await wait_http(f"{base}/healthz", gateway)

        run = Run(
            replicas=args.replicas,
            requests=args.requests,
            kill_at=int(args.requests * args.kill_at),
            fault_at=int(args.requests * args.fault_at),
        )
        run.events["fault_applied"] = asyncio.Event()
        run.events["restarted"] = asyncio.Event()
        cheap_control = f"http://127.0.0.1:{ports['cheap']}/_fake/faults"
        started = time.perf_counter()
        controllers = [
            asyncio.create_task(kill_and_restart(run, gateways, bases)),
            asyncio.create_task(fail_provider(run, cheap_control, redis_client)),
        ]
        await load(run, bases, args.concurrency)
        duration = time.perf_counter() - started
        await asyncio.wait_for(asyncio.gather(*controllers), 60)
        async with aiohttp.ClientSession() as http, http.get(cheap_control) as r:
            calls_at_end = (await r.json()).get("calls")
        exits = {g.name: g.stop() for g in gateways}  # SIGTERM: each flushes its ledger
        rows = await admin.fetch(
            f"SELECT id, count(*) AS n, min(status) AS status, min(http_status) AS http_status, "
            f'min(ts) AS ts, min(attempts::text) AS attempts FROM "{schema}".tierwise_requests GROUP BY id'
        )
        logs = {g.name: g.text() for g in gateways}
    finally:
        for process in processes:
            process.stop(5)
        with contextlib.suppress(Exception):
            await admin.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        await admin.close()
        with contextlib.suppress(Exception):
            await clean_redis(redis_client)
        await redis_client.aclose()
    return summarize(args, run, rows, logs, exits, duration, calls_at_end, workdir)


def summarize(
    args: argparse.Namespace,
    run: Run,
    rows: list[Any],
    logs: dict[str, str],
    exits: dict[str, int | None],
    duration: float,
    calls_at_end: int | None,
    workdir: Path,
) -> dict[str, Any]:
    answered = [s for s in run.sent if s.outcome == "answered"]
    errors = Counter(s.outcome for s in run.sent if s.outcome != "answered")
    by_id = {r["id"]: r for r in rows}
    answered_ids = [s.request_id for s in answered]
    without_header = sum(1 for i in answered_ids if not i)
    missing = [i for i in answered_ids if i and i not in by_id]
    duplicated = [i for i in answered_ids if i and i in by_id and by_id[i]["n"] != 1]
    seen = set(answered_ids)
    unseen = [r for r in rows if r["id"] not in seen]
    latencies = [s.latency_s * 1000 for s in answered]

    # Calls to the failing provider, per replica: the attempts of the rows of the requests each got.
    replica_of = {s.request_id: s.replica for s in run.sent if s.request_id}
    fault_at, ejected_at = run.events.get("fault_started"), run.events.get("ejected_at")
    names = [f"replica-{i}" for i in range(run.replicas)]
    before = dict.fromkeys(names, 0)
    during = dict.fromkeys(names, 0)
    requests_during = dict.fromkeys(names, 0)
    for row in rows:
        replica = replica_of.get(row["id"])
        if replica is None or fault_at is None or row["ts"] < fault_at:
            continue
        calls = sum(
            1 for a in orjson.loads(row["attempts"]) if a["provider"] == FAILING and a["status"] != "skipped"
        )
        name = names[replica]
        if ejected_at is None or row["ts"] < ejected_at:
            before[name] += calls
        else:
            during[name] += calls
            requests_during[name] += 1
    opened_by = [name for name, text in logs.items() if f"breaker: {FAILING_MODEL} ejected" in text]
    shared = (
        ejected_at is not None
        and all(during[n] == 0 for n in names[1:] if before[n] == 0 and requests_during[n] > 0)
        and all(requests_during[n] > 0 for n in names[1:])
    )
    calls_at_ejection = run.events.get("calls_at_ejection")
    summary = {
        "command": "python bench/replicas.py " + " ".join(sys.argv[1:]),
        "replicas": run.replicas,
        "concurrency": args.concurrency,
        "journal": not args.no_journal,
        "duration_s": round(duration, 1),
        "requests_sent": len(run.sent),
        "streamed_share": round(sum(s.stream for s in run.sent) / max(1, len(run.sent)), 2),
        "answered": len(answered),
        "answered_streams": sum(s.stream for s in answered),
        "errors": dict(sorted(errors.items())),
        "latency_ms": {
            "p50": round(percentile(latencies, 0.5), 1),
            "p99": round(percentile(latencies, 0.99), 1),
        },
        "kill": run.events.get("killed"),
        "ledger": {
            "rows": len(rows),
            "answered_missing": len(missing),
            "answered_duplicated": len(duplicated),
            "answered_without_request_id_header": without_header,
            "rows_of_requests_not_seen_answered": len(unseen),
            "their_status": dict(Counter(f"{r['status']} {r['http_status']}" for r in unseen)),
        },
        "cooldown_shared": {
            "failing_provider": FAILING,
            "ejection_opened_by": opened_by,
            "ejected_after_s": round(ejected_at - fault_at, 2) if ejected_at and fault_at else None,
            "calls_to_it_before_ejection": before,
            "requests_during_ejection": requests_during,
            "calls_to_it_during_ejection": during,
            "upstream_calls_after_ejection": (
                calls_at_end - calls_at_ejection
                if calls_at_end is not None and calls_at_ejection is not None
                else None
            ),
            "shared": shared,
        },
        "gateway_exit_status": exits,
        "workdir": str(workdir),  # configs and each process's log; deleted when all is well unless --keep
    }
    summary["ok"] = bool(not missing and not duplicated and not without_header and shared)
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--replicas", type=int, default=3)
    parser.add_argument("--requests", type=int, default=4000)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument(
        "--kill-at", type=float, default=0.3, help="share of the requests sent before the kill"
    )
    parser.add_argument("--fault-at", type=float, default=0.6, help="share sent before the provider fails")
    parser.add_argument(
        "--upstream-delay", type=float, default=0.01, help="seconds each upstream answer takes"
    )
    parser.add_argument(
        "--postgres",
        default=os.environ.get("TIERWISE_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test"),
    )
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/15", help="a database of this run's own")
    parser.add_argument(
        "--no-journal",
        action="store_true",
        help="storage.journal: false, to see what a kill loses without it",
    )
    parser.add_argument("--json", type=Path, help="also write the summary to this file")
    parser.add_argument(
        "--keep", action="store_true", help="keep the work directory (configs, logs) even when all is well"
    )
    args = parser.parse_args(argv)
    if args.replicas < 2:
        parser.error("--replicas: at least 2")
    if not 0 < args.kill_at < args.fault_at < 1:
        parser.error("--kill-at and --fault-at: 0 < kill-at < fault-at < 1")
    reason = asyncio.run(reachable(args.postgres, args.redis))
    if reason:
        print(json.dumps({"skipped": reason}))
        return 2
    summary = asyncio.run(main_async(args))
    if summary["ok"] and not args.keep:
        shutil.rmtree(summary.pop("workdir"), ignore_errors=True)
    text = json.dumps(summary, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    return 0 if summary["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
