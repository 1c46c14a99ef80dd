"""Faults under load: upstreams fail 30% of their calls, and no answer, fallback or ledger row is lost.

    python bench/faults.py [--duration 60] [--concurrency 50] [--fault-rate 0.3] [--seed 1]
                           [--no-restart] [--cascade] [--json FILE]

Starts four fake upstreams, each its own process (``python -m tests.fakes.upstream``, two speaking the
OpenAI wire and two Anthropic's), each failing a seeded share ``--fault-rate`` of its calls with a mix of
429 (``Retry-After: 1``), 500, a timeout (no answer until the client gives up), a connection reset, a
stream cut after its first content chunk (a JSON body cut halfway), malformed JSON in a 200 and an empty
200 (a stream: its end marker alone). ``tierwise serve`` routes to them with a SQLite ledger (prompts
captured, so every row can be matched to the request that made it): short prompts to the draft tier
(``draft-a``, ``draft-b``) then the review tier, long ones the other way round, so every request has
three fallbacks behind its first model. ``--cascade`` verifies the draft tier's answers first (a second
sample must agree), so the faults also hit buffered streams and side calls.

``--concurrency`` clients send requests for ``--duration`` seconds, in turn to the chat completions, the
Messages and the Responses APIs, each streamed and not. At 30% of the run the gateway gets SIGTERM and
is started again on the same port and ledger while the load goes on; a request whose connection is
refused meanwhile, or closed with no answer (a stopping server closes kept-alive connections whose next
request it has not read), is sent again, as the openai SDKs do — the ledger shows whether the gateway
had processed it. Each answer is checked against the reply its model's upstream always gives, and the
ledger is read at the end. Prints a table and one JSON summary; exits 1 if an invariant fails:

* no client-visible error while a model of the chain was left untried (an error after every model of
  the chain failed is counted apart: with 4 models × 2 tries at 30% it is about 1 in 15,000 requests);
* no stream that failed before its first content byte (one that breaks after it cannot fall back: it
  ends with an honest error event, counted apart), none silently cut, none ending cleanly (``[DONE]``,
  ``message_stop``, ``response.completed``) without the model's whole reply, no JSON answer without it;
* one ledger row per answered request, matched by the ``x-tierwise-request-id`` header (present on
  every 200), with the status the client saw, none missing, none twice, none for a request the client
  never saw answered — across the graceful restart;
* the server's RSS grows by at most ``RSS_GROWTH_BOUND_MB`` between a warmed-up start and the end of
  each server's run; both servers exit 0 with no traceback in their logs.

``make test`` runs 5 seconds of it (tests/gateway/test_faults.py).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import re
import signal
import sqlite3
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.fakes.upstream import MIX_KINDS, free_port
from tests.harness import API_KEY  # noqa: F401  (sets TW_TEST_KEY, which the fleet's providers read)

ROOT = Path(__file__).resolve().parent.parent

# (model, wire format of its upstream, tier): each model on its own upstream process.
FLEET = (
    ("draft-a", "openai", "draft"),
    ("draft-b", "anthropic", "draft"),
    ("review-a", "openai", "review"),
    ("review-b", "anthropic", "review"),
)
RETRY_ATTEMPTS = 2
# After warm-up. 60 s runs measure 0.3-1.8 MB; a leak of 2 KB a request (~10,000 requests) would exceed it.
RSS_GROWTH_BOUND_MB = 16.0
CLIENT_TIMEOUT_S = 30.0
MAX_RESENDS = 2  # the openai SDKs' default max_retries
_NONCE = re.compile(r"fault probe (\d+)\b")
# The client shapes the gateway serves, each sent streamed and not, in turn.
_APIS = ("chat", "messages", "responses")
_PATHS = {"chat": "/v1/chat/completions", "messages": "/v1/messages", "responses": "/v1/responses"}
# Pushes a prompt past the rule's 30 input tokens, to the review tier first.
_LONG = " ".join(["context"] * 40)


def reply_of(model: str) -> str:
    """What ``model``'s upstream answers every request: the yardstick of a complete answer."""
    return f"{model} answers: the quick brown fox jumps over the lazy dog"


def fleet_config(urls: dict[str, str], ledger: str, *, cascade: bool = False) -> dict[str, Any]:
    """The fleet of FLEET on ``urls``; with ``cascade``, the draft tier's answers are verified (a second
    sample must agree) before they are sent, so failures also hit buffered streams and side calls."""
    timeouts = {"connect": 1.0, "first_byte": 1.0, "read": 1.0, "total": 3.0}
    config: dict[str, Any] = {
        "providers": {
            f"up-{model}": {
                "kind": kind,
                "base_url": urls[model],
                "api_key_env": "TW_TEST_KEY",
                "timeouts": timeouts,
            }
            for model, kind, _ in FLEET
        },
        "models": [
            {
                "name": model,
                "provider": f"up-{model}",
                "upstream": f"{model}-upstream",
                "tier": tier,
                "context_window": 32_000,
                "price": {"input_per_mtok": 0.5 if tier == "draft" else 2.0, "output_per_mtok": 2.0},
            }
            for model, _, tier in FLEET
        ],
        "policy": {
            "rules": [
                {
                    "name": "long",
                    "when": {"input_tokens": {">": 30}},
                    "tier": "review",
                    "fallbacks": ["draft"],
                }
            ],
            "default": {"tier": "draft", "fallbacks": ["review"]},
            "retry": {
                "attempts": RETRY_ATTEMPTS,
                "backoff_s": 0.05,
                "max_backoff_s": 0.5,
                "max_retry_after_s": 1,
            },
        },
        "storage": {"ledger": ledger, "capture_prompts": True},
    }
    if cascade:
        config["policy"]["cascade"] = {
            "verifiers": [{"kind": "non_empty"}, {"kind": "agreement", "samples": 2}],
            "tiers": ["draft"],
        }
    return config


# -- processes ---------------------------------------------------------------------------------------


@dataclass
class Upstream:
    model: str
    proc: asyncio.subprocess.Process
    url: str
    port: int


async def start_upstream(model: str, kind: str, *, rate: float, seed: int, log: Path) -> Upstream:
    port = free_port()
    with log.open("wb") as err:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tests.fakes.upstream",
            *("--port", str(port), "--kind", kind, "--reply", reply_of(model)),
            *("--fault-mix", ",".join(MIX_KINDS), "--fault-rate", str(rate), "--seed", str(seed)),
            cwd=ROOT,
            stdout=asyncio.subprocess.PIPE,  # one line, "listening on URL", then nothing
            stderr=err,
        )
    assert proc.stdout is not None
    line = await asyncio.wait_for(proc.stdout.readline(), 30)
    if not line.startswith(b"listening on "):
        proc.kill()
        raise RuntimeError(f"fake upstream {model} did not start: {log.read_text()[-2000:]}")
    return Upstream(model, proc, line.split()[-1].decode(), port)


async def injected(upstream: Upstream) -> dict[str, Any]:
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"http://127.0.0.1:{upstream.port}/_fake/faults") as resp,
    ):
        return await resp.json()


async def start_gateway(config: Path, port: int, log: Path) -> asyncio.subprocess.Process:
    """``tierwise serve`` on ``port``, its log (an access-log line per request) in ``log``, once healthy.
    Waits up to a minute: on a busy 2-core machine, starting under load takes seconds."""
    with log.open("ab") as err:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            *("-m", "tierwise.cli", "serve", "--config", str(config), "--port", str(port)),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=err,
        )
    deadline = time.monotonic() + 60
    async with aiohttp.ClientSession() as http:
        while time.monotonic() < deadline and proc.returncode is None:
            try:
                async with http.get(f"http://127.0.0.1:{port}/healthz") as resp:
                    if resp.status == 200:
                        return proc
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.05)
    if proc.returncode is None:
        proc.kill()
        await proc.wait()
    raise RuntimeError(f"tierwise serve did not become healthy: {log.read_text(errors='replace')[-3000:]}")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


# -- the load ----------------------------------------------------------------------------------------


@dataclass
class Result:
    """What one client request saw."""

    index: int
    api: str  # chat, messages or responses
    stream: bool
    verdict: str  # see _VERDICTS
    status: int | None = None  # None: no HTTP answer
    request_id: str | None = None
    model: str | None = None
    latency_s: float = 0.0
    ttft_s: float | None = None
    detail: str = ""


_VERDICTS = {
    "ok": "a 200 with the model's whole reply ([DONE] after it, for a stream)",
    "interrupted": "a stream broken after content: an honest error event and no [DONE]",
    "error": "an error answer (JSON), the chain exhausted or not",
    "cut_before_content": "a stream that failed before its first content byte",
    "truncated_done": "a stream that ended with [DONE] but without the model's whole reply",
    "silent_cut": "a stream that ended with neither [DONE] nor an error event",
    "wrong_content": "a JSON 200 whose content is not the model's whole reply",
    "disconnected": "the connection closed with no answer",
    "client_timeout": f"no answer within {CLIENT_TIMEOUT_S:g} s",
}


@dataclass
class Load:
    base: str
    deadline: float
    results: list[Result] = field(default_factory=list)
    refused: int = 0  # connections refused while the gateway restarted (the request was sent again)
    resent: int = 0  # requests sent again after their connection closed with no answer
    counter: itertools.count = field(default_factory=itertools.count)

    def body(self, index: int) -> tuple[str, dict[str, Any], bool]:
        """Request ``index``: its API (chat, Messages, Responses in turn), body and whether it streams."""
        api = _APIS[index // 2 % len(_APIS)]
        stream = index % 2 == 1
        prompt = f"fault probe {index}: say something" + (" " + _LONG if index // 6 % 2 else "")
        body: dict[str, Any] = {"model": "auto"}
        if api == "responses":
            body["input"] = prompt
        else:
            body["messages"] = [{"role": "user", "content": prompt}]
        if api == "messages":
            body["max_tokens"] = 256  # required by the Messages API
        if stream:
            body["stream"] = True
        return api, body, stream

    async def worker(self, http: aiohttp.ClientSession) -> None:
        while time.monotonic() < self.deadline:
            index = next(self.counter)
            api, body, stream = self.body(index)
            payload = orjson.dumps(body)
            resends = 0
            while True:
                try:
                    result = await self.send(http, index, api, payload, stream)
                except aiohttp.ClientConnectorError:
                    # Refused: nothing listens (the gateway is restarting), so it never saw the request.
                    self.refused += 1
                    await asyncio.sleep(0.02)
                    continue
                if result.verdict == "disconnected" and resends < MAX_RESENDS:
                    # Closed before any answer, as a stopping server closes a kept-alive connection whose
                    # request it has not read: sent again, as the openai SDKs do. Had the gateway
                    # processed it, the ledger would hold two rows of it (checked).
                    resends += 1
                    self.resent += 1
                    continue
                break
            self.results.append(result)

    async def send(
        self, http: aiohttp.ClientSession, index: int, api: str, payload: bytes, stream: bool
    ) -> Result:
        started = time.perf_counter()
        result = Result(index, api, stream, "disconnected")
        try:
            async with http.post(
                self.base + _PATHS[api],
                data=payload,
                headers={"Content-Type": "application/json"},
                timeout=aiohttp.ClientTimeout(total=CLIENT_TIMEOUT_S),
            ) as resp:
                result.status = resp.status
                result.request_id = resp.headers.get("x-tierwise-request-id")
                result.model = resp.headers.get("x-tierwise-model")
                if resp.status != 200:
                    result.verdict = "error"
                    result.detail = (await resp.read()).decode(errors="replace")[:300]
                elif stream:
                    await self._read_stream(resp, result, started)
                else:
                    content = _answer_text(api, orjson.loads(await resp.read()))
                    complete = content == reply_of(result.model or "")
                    result.verdict = "ok" if complete else "wrong_content"
                    result.detail = "" if complete else repr(content)[:200]
        except aiohttp.ClientConnectorError:
            raise
        except TimeoutError:
            result.verdict = "client_timeout"
        except (aiohttp.ClientError, OSError) as exc:
            # Keeps the status if the headers came: a 200 whose body broke is a cut, not a refusal.
            result.verdict = "silent_cut" if result.status == 200 else "disconnected"
            result.detail = f"{type(exc).__name__}: {exc}"[:200]
        result.latency_s = time.perf_counter() - started
        return result

    @staticmethod
    async def _read_stream(resp: aiohttp.ClientResponse, result: Result, started: float) -> None:
        content: list[str] = []
        done = error = False
        async for raw in resp.content:
            line = raw.rstrip(b"\r\n")
            if not line.startswith(b"data:"):
                continue
            kind, text = _stream_event(result.api, line[5:].strip())
            if kind == "text":
                if result.ttft_s is None:
                    result.ttft_s = time.perf_counter() - started
                content.append(text)
            elif kind == "end":
                done = True
            elif kind == "error":
                error = True
                result.detail = text[:200]
        text = "".join(content)
        if error and not done:
            result.verdict = "interrupted" if text else "cut_before_content"
        elif done and not error:
            complete = text == reply_of(result.model or "")
            result.verdict = "ok" if complete else "truncated_done"
            if not complete:
                result.detail = repr(text)[:200]
        elif done:
            result.verdict = "truncated_done"  # an error event and a clean end both: never allowed
        else:
            result.verdict = "silent_cut"


def _answer_text(api: str, doc: dict[str, Any]) -> str:
    """The text of a JSON answer in the shape of ``api``."""
    if api == "chat":
        return doc["choices"][0]["message"]["content"]
    if api == "messages":
        return "".join(block["text"] for block in doc["content"] if block["type"] == "text")
    return "".join(
        part["text"]
        for item in doc["output"]
        if item["type"] == "message"
        for part in item["content"]
        if part["type"] == "output_text"
    )


def _stream_event(api: str, data: bytes) -> tuple[str, str]:
    """One SSE ``data`` of ``api``'s stream: ("text", piece), ("end", "") for its clean end ([DONE],
    ``message_stop``, ``response.completed``), ("error", message), or ("", "") for anything else."""
    if api == "chat":
        if data == b"[DONE]":
            return "end", ""
        doc = orjson.loads(data)
        if "error" in doc:
            return "error", str(doc["error"].get("message", ""))
        text = "".join(
            (choice.get("delta") or {}).get("content") or "" for choice in doc.get("choices") or ()
        )
        return ("text", text) if text else ("", "")
    doc = orjson.loads(data)
    kind = doc.get("type")
    if kind == "error" or kind == "response.failed":
        error = doc.get("error") or {}
        return "error", str(error.get("message", "") if isinstance(error, dict) else error)
    if kind in ("message_stop", "response.completed"):
        return "end", ""
    if kind == "content_block_delta" and doc["delta"].get("type") == "text_delta":
        return "text", doc["delta"]["text"]
    if kind == "response.output_text.delta":
        return "text", doc["delta"]
    return "", ""


# -- the run -----------------------------------------------------------------------------------------


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _ms(value: float | None) -> float | None:
    return None if value is None else round(value * 1000, 1)


async def run(
    *, duration: float, concurrency: int, rate: float, seed: int, restart: bool, cascade: bool = False
) -> dict[str, Any]:
    """Run the load and the checks; the summary (``summary["passed"]`` says whether every invariant held)."""
    with tempfile.TemporaryDirectory(prefix="tierwise-faults-") as tmp:
        work = Path(tmp)
        upstreams: list[Upstream] = []
        servers: list[asyncio.subprocess.Process] = []
        try:
            upstreams = list(
                await asyncio.gather(
                    *(
                        start_upstream(model, kind, rate=rate, seed=seed * 100 + i, log=work / f"{model}.log")
                        for i, (model, kind, _) in enumerate(FLEET)
                    )
                )
            )
            db = work / "ledger.db"
            config = work / "tierwise.yaml"
            config.write_text(
                yaml.safe_dump(
                    fleet_config({u.model: u.url for u in upstreams}, f"sqlite:///{db}", cascade=cascade)
                )
            )
            port = free_port()
            gateway_log = work / "gateway.log"
            servers.append(await start_gateway(config, port, gateway_log))
            summary = await _drive(
                port,
                config,
                gateway_log,
                servers,
                duration=duration,
                concurrency=concurrency,
                restart=restart,
            )
            faults: Counter[str] = Counter()
            calls = 0
            for upstream in upstreams:
                state = await injected(upstream)
                faults.update(state["injected"])
                calls += state["calls"]
            for server in servers:
                if server.returncode is None:
                    server.send_signal(signal.SIGTERM)
                    await asyncio.wait_for(server.wait(), 60)
            log = gateway_log.read_text(errors="replace")
        finally:
            for proc in [*servers, *(u.proc for u in upstreams)]:
                if proc.returncode is None:
                    proc.kill()
                    await proc.wait()
        with sqlite3.connect(db) as conn:
            rows = conn.execute("SELECT id, http_status, prompt, attempts, decision FROM requests").fetchall()
    summary["upstream_calls"] = calls
    summary["faults_injected"] = dict(sorted(faults.items()))
    summary["server_exit_codes"] = [server.returncode for server in servers]
    summary["tracebacks_in_server_logs"] = log.count("Traceback")
    _check_ledger(summary, rows)
    _judge(summary)
    return summary


async def _drive(
    port: int,
    config: Path,
    log: Path,
    servers: list[asyncio.subprocess.Process],
    *,
    duration: float,
    concurrency: int,
    restart: bool,
) -> dict[str, Any]:
    started = time.monotonic()
    load = Load(f"http://127.0.0.1:{port}", started + duration)
    warm_s = min(5.0, duration * 0.1)
    rss: dict[str, float] = {}
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as http:
        workers = [asyncio.create_task(load.worker(http)) for _ in range(concurrency)]
        await asyncio.sleep(warm_s)
        rss["first_warm_mb"] = rss_mb(servers[0].pid)
        restart_s: float | None = None
        stop_s: float | None = None
        if restart:
            await asyncio.sleep(max(0.0, duration * 0.3 - warm_s))
            rss["first_end_mb"] = rss_mb(servers[0].pid)
            # A graceful stop under load, then a new process on the same port and ledger.
            stopping = time.monotonic()
            servers[0].send_signal(signal.SIGTERM)
            await asyncio.wait_for(servers[0].wait(), 60)
            stop_s = time.monotonic() - stopping
            second = await start_gateway(config, port, log)
            servers.append(second)
            restart_s = time.monotonic() - stopping
            await asyncio.sleep(min(warm_s, max(0.0, load.deadline - time.monotonic())))
            rss["second_warm_mb"] = rss_mb(second.pid)
        await asyncio.sleep(max(0.0, load.deadline - time.monotonic()))
        rss["last_end_mb"] = rss_mb(servers[-1].pid)
        await asyncio.gather(*workers)
    elapsed = time.monotonic() - started
    results = sorted(load.results, key=lambda r: r.index)
    verdicts = Counter(r.verdict for r in results)
    answered = [r for r in results if r.status is not None]
    ok = [r for r in results if r.verdict == "ok"]
    growth = [
        rss["first_end_mb" if restart else "last_end_mb"] - rss["first_warm_mb"],
        *([rss["last_end_mb"] - rss["second_warm_mb"]] if restart else []),
    ]
    return {
        "duration_s": round(elapsed, 1),
        "concurrency": concurrency,
        "requests": len(results),
        "streamed": sum(r.stream for r in results),
        "requests_per_s": round(len(results) / elapsed, 1),
        "verdicts": dict(sorted(verdicts.items())),
        "verdicts_by_api": {
            f"{api} {'stream' if stream else 'json'}": dict(
                sorted(Counter(r.verdict for r in results if r.api == api and r.stream == stream).items())
            )
            for api in _APIS
            for stream in (False, True)
        },
        "answered": len(answered),
        "error_statuses": dict(
            sorted(Counter(str(r.status) for r in results if r.verdict == "error").items())
        ),
        "latency_ms": {
            "p50": _ms(_percentile([r.latency_s for r in ok], 0.5)),
            "p99": _ms(_percentile([r.latency_s for r in ok], 0.99)),
        },
        "stream_ttft_ms": {
            "p50": _ms(_percentile([r.ttft_s for r in ok if r.ttft_s is not None], 0.5)),
            "p99": _ms(_percentile([r.ttft_s for r in ok if r.ttft_s is not None], 0.99)),
        },
        "restart": {
            "done": restart,
            "seconds": None if restart_s is None else round(restart_s, 2),
            "stop_seconds": None if stop_s is None else round(stop_s, 2),
        },
        "refused_while_restarting": load.refused,
        "resent_after_closed_connection": load.resent,
        "rss_mb": {key: round(value, 1) for key, value in rss.items()},
        "rss_growth_mb": round(max(growth), 1),
        "rss_growth_bound_mb": RSS_GROWTH_BOUND_MB,
        "answered_200_without_request_id": sum(1 for r in results if r.status == 200 and not r.request_id),
        "_results": results,
    }


def _check_ledger(summary: dict[str, Any], rows: list[tuple[Any, ...]]) -> None:
    """Match every row to the request that made it (the nonce in its captured prompt)."""
    results: list[Result] = summary.pop("_results")
    by_index = {r.index: r for r in results}
    rows_by_index: dict[int, list[tuple[Any, ...]]] = {}
    unmatched = 0
    for row in rows:
        match = _NONCE.search(row[2] or "")
        if match is None:
            unmatched += 1
            continue
        rows_by_index.setdefault(int(match.group(1)), []).append(row)
    answered = [r for r in results if r.status is not None]
    missing = [r.index for r in answered if r.index not in rows_by_index]
    duplicated = [i for i, found in rows_by_index.items() if len(found) > 1]
    id_mismatch = [
        r.index
        for r in answered
        if r.request_id and r.index in rows_by_index and rows_by_index[r.index][0][0] != r.request_id
    ]
    # The row's status is the one the client saw (a stream broken after its 200 is logged 502).
    status_mismatch = [
        r.index
        for r in answered
        if r.index in rows_by_index
        and rows_by_index[r.index][0][1] != (502 if r.verdict == "interrupted" else r.status)
    ]
    # A row for a request the client never saw answered: the gateway answered into a closed connection.
    unseen = [i for i in rows_by_index if i not in by_index or by_index[i].status is None]
    # An error while a model of the chain was left untried: a fallback the gateway should have taken.
    errors_with_fallback_left: list[int] = []
    exhausted: list[str] = []
    for r in results:
        if r.verdict not in ("error", "cut_before_content") or r.index not in rows_by_index:
            continue
        _, _, _, attempts, decision = rows_by_index[r.index][0]
        tried = orjson.loads(attempts)
        if set(orjson.loads(decision)["chain"]) <= {a["model"] for a in tried}:
            exhausted.append(" ".join(f"{a['model']}:{a['status']}" for a in tried))
        else:
            errors_with_fallback_left.append(r.index)
    summary["ledger"] = {
        "rows": len(rows),
        "answered_requests": len(answered),
        "missing_rows": len(missing),
        "duplicated_rows": len(duplicated),
        "rows_not_matching_request_id": len(id_mismatch),
        "rows_with_another_status": len(status_mismatch),
        "rows_of_requests_never_answered": len(unseen),
        "rows_without_a_known_prompt": unmatched,
    }
    summary["errors_with_fallback_left"] = len(errors_with_fallback_left)
    summary["errors_chain_exhausted"] = len(exhausted)
    summary["examples"] = {
        verdict: [r.detail for r in results if r.verdict == verdict][:3]
        for verdict in ("truncated_done", "silent_cut", "wrong_content", "cut_before_content", "disconnected")
        if any(r.verdict == verdict for r in results)
    }
    if exhausted:
        summary["examples"]["errors_chain_exhausted"] = exhausted[:3]
    if errors_with_fallback_left:
        summary["examples"]["errors_with_fallback_left"] = [
            by_index[i].detail for i in errors_with_fallback_left[:3]
        ]


def _judge(summary: dict[str, Any]) -> None:
    verdicts = summary["verdicts"]
    ledger = summary["ledger"]
    checks = {
        "client-visible errors while a fallback was left": summary["errors_with_fallback_left"],
        "streams failed before their first content byte": verdicts.get("cut_before_content", 0),
        "streams ended with [DONE] but truncated": verdicts.get("truncated_done", 0),
        "streams cut with no error event": verdicts.get("silent_cut", 0),
        "JSON answers not the model's whole reply": verdicts.get("wrong_content", 0),
        "requests with no answer (closed or timed out)": verdicts.get("disconnected", 0)
        + verdicts.get("client_timeout", 0),
        "answered requests without a ledger row": ledger["missing_rows"],
        "requests with two rows": ledger["duplicated_rows"],
        "rows whose id is not the x-tierwise-request-id": ledger["rows_not_matching_request_id"],
        "rows whose status is not the one the client saw": ledger["rows_with_another_status"],
        "rows of requests never answered": ledger["rows_of_requests_never_answered"],
        "rows matching no request": ledger["rows_without_a_known_prompt"],
        "200s without x-tierwise-request-id": summary["answered_200_without_request_id"],
        "RSS growth over the bound": int(summary["rss_growth_mb"] > summary["rss_growth_bound_mb"]),
        "servers not exiting 0": sum(1 for code in summary["server_exit_codes"] if code != 0),
        "tracebacks in the server logs": summary["tracebacks_in_server_logs"],
    }
    summary["failed_checks"] = {name: count for name, count in checks.items() if count}
    summary["passed"] = not summary["failed_checks"]


def render(summary: dict[str, Any]) -> str:
    v = summary["verdicts"]
    ledger = summary["ledger"]
    restart = summary["restart"]
    rows = [
        (
            "requests (streamed)",
            f"{summary['requests']} ({summary['streamed']}) in {summary['duration_s']} s",
        ),
        (
            "upstream calls / faults injected",
            f"{summary['upstream_calls']} / {sum(summary['faults_injected'].values())}",
        ),
        ("answered 200, whole reply", str(v.get("ok", 0))),
        ("errors, a fallback left untried (goal 0)", str(summary["errors_with_fallback_left"])),
        ("errors, every model of the chain failed", str(summary["errors_chain_exhausted"])),
        ("streams broken after content: error event", str(v.get("interrupted", 0))),
        ("streams failed before content (goal 0)", str(v.get("cut_before_content", 0))),
        ("truncated streams ending in [DONE] (goal 0)", str(v.get("truncated_done", 0))),
        ("ledger rows / answered requests", f"{ledger['rows']} / {ledger['answered_requests']}"),
        (
            "rows missing / twice / unanswered",
            f"{ledger['missing_rows']} / {ledger['duplicated_rows']} / "
            f"{ledger['rows_of_requests_never_answered']}",
        ),
        ("latency p50 / p99 (200s)", f"{summary['latency_ms']['p50']} / {summary['latency_ms']['p99']} ms"),
        (
            "RSS warm → end (growth, bound)",
            f"{summary['rss_mb']} ({summary['rss_growth_mb']} ≤ {summary['rss_growth_bound_mb']} MB)",
        ),
        (
            "graceful restart (stop + start)",
            f"{restart['seconds']} s ({restart['stop_seconds']} s to stop); sent again: "
            f"{summary['refused_while_restarting']} refused, "
            f"{summary['resent_after_closed_connection']} closed unanswered",
        ),
    ]
    width = max(len(name) for name, _ in rows)
    lines = [f"{name.ljust(width)}  {value}" for name, value in rows]
    lines.append("PASSED" if summary["passed"] else f"FAILED: {summary['failed_checks']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of load (default 60)")
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--fault-rate", type=float, default=0.3, help="share of each upstream's calls failed")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--no-restart", action="store_true", help="skip the graceful restart under load")
    parser.add_argument("--cascade", action="store_true", help="verify the draft tier's answers first")
    parser.add_argument("--json", type=Path, default=None, help="also write the JSON summary to this file")
    args = parser.parse_args(argv)
    summary = asyncio.run(
        run(
            duration=args.duration,
            concurrency=args.concurrency,
            rate=args.fault_rate,
            seed=args.seed,
            restart=not args.no_restart,
            cascade=args.cascade,
        )
    )
    print(render(summary))
    text = json.dumps(summary, indent=None, sort_keys=True)
    print(text)
    if args.json is not None:
        args.json.write_text(text + "\n")
    return 0 if summary["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
