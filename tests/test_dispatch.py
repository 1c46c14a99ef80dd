"""The dispatcher's circuit breaker, through a Router over two fake upstreams on 127.0.0.1: a primary and
its fallback."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.fakes.upstream import FakeUpstream
from tierwise import Router
from tierwise.config import CooldownConfig, parse_config
from tierwise.state import MemoryState, State

BODY = {"model": "auto", "messages": [{"role": "user", "content": "Classify the sentiment of: 'meh'"}]}


@pytest.fixture
async def fleet() -> AsyncIterator[dict[str, FakeUpstream]]:
    async with FakeUpstream(reply="primary") as primary, FakeUpstream(reply="fallback") as fallback:
        yield {"primary": primary, "fallback": fallback}


def router(ups: dict[str, FakeUpstream], cooldown: dict[str, Any], state: State | None = None) -> Router:
    model = {"tier": "review", "context_window": 8000, "price": {"input_per_mtok": 1, "output_per_mtok": 2}}
    config = {
        "providers": {name: {"kind": "openai", "base_url": up.url} for name, up in ups.items()},
        "models": [{"name": name, "provider": name, "upstream": name, **model} for name in ups],
        "policy": {
            "rules": [],
            "default": {"model": "primary", "fallbacks": ["fallback"]},
            "retry": {"attempts": 2, "backoff_s": 0},
            "cooldown": cooldown,
        },
        "storage": {"ledger": "none"},
    }
    return Router(parse_config(config), state=state)


async def primary_share(ups: dict[str, FakeUpstream], cooldown: dict[str, Any], requests: int) -> float:
    async with router(ups, cooldown) as r:
        answers = [(await r.route(dict(BODY))).model for _ in range(requests)]
    return answers.count("primary") / requests


async def test_random_errors_keep_the_primary_in_use_unless_the_breaker_is_consecutive(
    fleet: dict[str, FakeUpstream],
) -> None:
    fleet["primary"].fault("random_500", rate=0.3, seed=11)
    ratio = await primary_share(fleet, {}, 300)  # the default breaker
    fleet["primary"].fault("random_500", rate=0.3, seed=11)
    consecutive = await primary_share(fleet, {"mode": "consecutive", "failures": 3, "seconds": 30}, 300)
    # Two attempts each: the primary answers 1 - 0.3² = 91% of requests when nothing ejects it.
    assert ratio > 0.85
    assert consecutive < 0.3  # three failures in a row come early, and keep it out for 30 s


async def test_a_dead_primary_is_ejected_after_min_calls(fleet: dict[str, FakeUpstream]) -> None:
    primary, fallback = fleet["primary"], fleet["fallback"]
    primary.fault("500")
    min_calls = CooldownConfig().min_calls
    async with router(fleet, {}) as r:
        for _ in range(min_calls // 2):  # two failed calls per request
            assert (await r.route(dict(BODY))).model == "fallback"
        assert len(primary.requests) == min_calls
        for _ in range(5):
            assert (await r.route(dict(BODY))).model == "fallback"
    assert len(primary.requests) == min_calls  # ejected: the fallback is asked first, and answers
    assert len(fallback.requests) == min_calls // 2 + 5


async def test_rejected_requests_do_not_count_against_the_model(fleet: dict[str, FakeUpstream]) -> None:
    primary = fleet["primary"]
    primary.fail_next(3 * CooldownConfig().min_calls, status=400)  # not retried, not the upstream's fault
    async with router(fleet, {}) as r:
        for _ in range(3 * CooldownConfig().min_calls):
            assert (await r.route(dict(BODY))).model == "fallback"
        assert (await r.route(dict(BODY))).model == "primary"


async def test_every_replica_honours_an_ejection(fleet: dict[str, FakeUpstream]) -> None:
    primary = fleet["primary"]
    primary.fault("500")
    shared = MemoryState()  # as replicas share a Redis state store
    min_calls = CooldownConfig().min_calls
    async with router(fleet, {}, shared) as one, router(fleet, {}, shared) as two:
        for _ in range(min_calls // 2):
            await one.route(dict(BODY))
        tried = len(primary.requests)
        assert (await two.route(dict(BODY))).model == "fallback"
        assert len(primary.requests) == tried  # the replica that saw no failure skips it too
