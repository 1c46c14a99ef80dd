"""A whole tierwise stack on 127.0.0.1 for end-to-end tests.

Fake upstream servers and the gateway run on an event loop in a background thread, so tests can
drive them with the official SDKs, sync or async, exactly as an application would.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import tempfile
import threading
from collections.abc import Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from tests.fakes.upstream import FakeUpstream, refused_url
from tierwise.config import parse_config
from tierwise.gateway.app import create_app
from tierwise.gateway.server import Server
from tierwise.ledger import open_ledger
from tierwise.router import Router

T = TypeVar("T")
API_KEY = "sk-upstream-SECRET-0123456789"
# The fleets below read their key from this variable, as a real deployment reads its own.
os.environ.setdefault("TW_TEST_KEY", API_KEY)


def run_cli(*args: str, cwd: Path | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run the ``tierwise`` command as a user would, in a subprocess."""
    return subprocess.run(
        [sys.executable, "-m", "tierwise.cli", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=timeout,
    )


_SERVE_LOGS: dict[int, Path] = {}


def serve_log(proc: asyncio.subprocess.Process) -> bytes:
    """What a gateway started by ``start_serve`` has written to stderr so far."""
    return _SERVE_LOGS[proc.pid].read_bytes()


async def wait_healthy(url: str, proc: asyncio.subprocess.Process) -> None:
    """Wait until the gateway at ``url`` (its /healthz) answers 200; fail if ``proc`` exits first."""
    import aiohttp

    async with aiohttp.ClientSession() as http:
        for _ in range(200):
            if proc.returncode is not None:
                log = serve_log(proc) if proc.pid in _SERVE_LOGS else await proc.stderr.read()  # type: ignore[union-attr]
                raise AssertionError(f"gateway exited early: {log.decode(errors='replace')[-3000:]}")
            try:
                async with http.get(url) as r:
                    if r.status == 200:
                        return
            except aiohttp.ClientConnectionError:
                pass
            await asyncio.sleep(0.05)
    raise AssertionError("gateway did not become healthy")


async def start_serve(
    config: Path, *args: str, port: int | None = None, stdout: int | None = asyncio.subprocess.PIPE
) -> tuple[asyncio.subprocess.Process, str]:
    """``tierwise serve --config CONFIG ARGS…`` as its own process, once it is healthy: (process, base
    URL without /v1). The caller stops it (SIGTERM, or kill in a ``finally``)."""
    from tests.fakes.upstream import free_port

    port = port or free_port()
    # Its log goes to a file, not a pipe: a pipe nobody reads fills up (the access log writes a line
    # per request) and then blocks the server. serve_log(proc) reads it.
    fd, log = tempfile.mkstemp(prefix=f"tierwise-serve-{port}-", suffix=".log")
    try:
        command = ["-m", "tierwise.cli", "serve", "--config", str(config), "--port", str(port), *args]
        proc = await asyncio.create_subprocess_exec(sys.executable, *command, stdout=stdout, stderr=fd)
    finally:
        os.close(fd)
    _SERVE_LOGS[proc.pid] = Path(log)
    base = f"http://127.0.0.1:{port}"
    try:
        await wait_healthy(f"{base}/healthz", proc)
    except BaseException:
        proc.kill()
        await proc.wait()
        raise
    return proc, base


class LoopThread:
    """An asyncio loop running in a daemon thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 30) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


def fleet_config(urls: dict[str, str], *, ledger: str, **overrides: Any) -> dict[str, Any]:
    """Three providers: ``cheap`` (OpenAI wire), ``backup`` (OpenAI wire), ``strong`` (Anthropic wire)."""
    fast = {"connect": 1, "first_byte": 1.0, "read": 1.0, "total": 5}
    config: dict[str, Any] = {
        "providers": {
            "cheap": {
                "kind": "openai",
                "base_url": urls["cheap"],
                "api_key_env": "TW_TEST_KEY",
                "timeouts": fast,
            },
            "backup": {
                "kind": "openai",
                "base_url": urls["backup"],
                "api_key_env": "TW_TEST_KEY",
                "timeouts": fast,
            },
            "strong": {
                "kind": "anthropic",
                "base_url": urls["strong"],
                "api_key_env": "TW_TEST_KEY",
                "timeouts": fast,
            },
        },
        "models": [
            {
                "name": "draft-1",
                "provider": "cheap",
                "upstream": "cheap-model",
                "tier": "draft",
                "context_window": 16_000,
                "price": {"input_per_mtok": 0.5, "output_per_mtok": 1.0},
            },
            {
                "name": "review-1",
                "provider": "backup",
                "upstream": "backup-model",
                "tier": "review",
                "context_window": 64_000,
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
        ],
        "policy": {
            "retry": {"attempts": 2, "backoff_s": 0.01, "max_retry_after_s": 2},
            "cooldown": {"failures": 3, "seconds": 30},
        },
        "storage": {"ledger": ledger},
        "server": {"max_body_bytes": 256 * 1024},
    }
    for key, value in overrides.items():
        config[key] = value
    return config


@dataclass
class Stack:
    loop: LoopThread
    upstreams: dict[str, FakeUpstream]
    router: Router
    server: Server
    base_url: str  # the gateway's OpenAI base URL, ending in /v1
    ledger_url: str
    extras: dict[str, Any] = field(default_factory=dict)

    def rows(self) -> list:
        async def fetch() -> list:
            await self.router.ledger.flush()
            return await self.router.ledger.fetch()

        return self.loop.run(fetch())

    def close(self) -> None:
        async def stop() -> None:
            await self.server.stop(5.0)  # runs on_cleanup: flushes the ledger, closes the router
            for upstream in self.upstreams.values():
                await upstream.stop()

        self.loop.run(stop())
        self.loop.stop()


def start_stack(tmp_path: Path, *, refused: tuple[str, ...] = (), **overrides: Any) -> Stack:
    """Start fake upstreams (``refused`` names get a dead URL instead) and the gateway."""
    loop = LoopThread()

    async def start() -> Stack:
        upstreams = {
            "cheap": await FakeUpstream(kind="openai", reply="cheap answer here").start(),
            "backup": await FakeUpstream(kind="openai", reply="backup answer here").start(),
            "strong": await FakeUpstream(kind="anthropic", reply="strong answer here").start(),
        }
        urls = {name: u.url for name, u in upstreams.items()}
        for name in refused:
            urls[name] = await refused_url("anthropic" if name == "strong" else "openai")
        ledger_url = f"sqlite:///{tmp_path / 'ledger.db'}"
        config = parse_config(fleet_config(urls, ledger=ledger_url, **overrides))
        router = Router(config, ledger=open_ledger(ledger_url))
        server = Server(create_app(router))
        await server.start("127.0.0.1", 0)
        return Stack(loop, upstreams, router, server, f"http://127.0.0.1:{server.port}/v1", ledger_url)

    return loop.run(start())
