"""The in-process API: Router.acomplete / complete / route_stream, and one ledger row per request."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.fakes.upstream import FakeUpstream
from tests.harness import fleet_config
from tierwise import RequestError, Router
from tierwise.config import parse_config
from tierwise.errors import ChainExhausted
from tierwise.ledger import NullLedger, SqliteLedger

CLASSIFY = [{"role": "user", "content": "Classify the sentiment of: 'meh'"}]


async def make_router(tmp_path: Path) -> tuple[Router, dict[str, FakeUpstream]]:
    ups = {
        "cheap": await FakeUpstream(reply="cheap").start(),
        "backup": await FakeUpstream(reply="backup").start(),
        "strong": await FakeUpstream(kind="anthropic", reply="strong").start(),
    }
    config = parse_config(
        fleet_config({k: u.url for k, u in ups.items()}, ledger=f"sqlite:///{tmp_path}/l.db")
    )
    return Router(config), ups


async def test_acomplete_with_hints_and_params(tmp_path: Path) -> None:
    router, ups = await make_router(tmp_path)
    async with router:
        routed = await router.acomplete(CLASSIFY, temperature=0.2)
        assert (routed.model, routed.tier, routed.content) == ("draft-1", "draft", "cheap")
        assert routed.cost_usd > 0 and routed.counterfactual_cost_usd > routed.cost_usd
        assert ups["cheap"].requests[-1]["temperature"] == 0.2
        hard = await router.acomplete(CLASSIFY, quality="high", task="code")
        assert hard.tier == "execution" and hard.decision.rule == "quality-high-hard"
        with pytest.raises(RequestError, match="latency_ms"):
            await router.acomplete(CLASSIFY, latency_ms=-5)
    for up in ups.values():
        await up.stop()


async def test_concurrent_requests_each_get_one_row(tmp_path: Path) -> None:
    router, ups = await make_router(tmp_path)
    async with router:
        results = await asyncio.gather(*(router.acomplete(CLASSIFY) for _ in range(120)))
        await router.ledger.flush()
        rows = await router.ledger.fetch()
    assert len(rows) == 120
    assert {r.id for r in rows} == {r.request_id for r in results}
    reopened = SqliteLedger(str(tmp_path / "l.db"))
    assert await reopened.count() == 120
    for up in ups.values():
        await up.stop()


async def test_route_stream_in_process(tmp_path: Path) -> None:
    router, ups = await make_router(tmp_path)
    async with router:
        stream = await router.route_stream({"model": "auto", "messages": CLASSIFY, "stream": True})
        assert stream.model == "draft-1"
        text = "".join(
            [c.data["choices"][0]["delta"].get("content") or "" async for c in stream if c.data["choices"]]
        )
        assert text == "cheap" and stream.cost_usd > 0
        # a stream abandoned half-way is closed, and logged, when the router closes
        await router.route_stream({"model": "auto", "messages": CLASSIFY, "stream": True})
    assert await SqliteLedger(str(tmp_path / "l.db")).count() == 2
    for up in ups.values():
        await up.stop()


def test_sync_complete_and_close_flushes(tmp_path: Path) -> None:
    from tests.harness import LoopThread

    loop = LoopThread()
    router, ups = loop.run(make_router(tmp_path))
    with router:
        assert router.complete(CLASSIFY).content == "cheap"
        assert router.complete(CLASSIFY, model="exec-1").content == "strong"
    assert asyncio.run(SqliteLedger(str(tmp_path / "l.db")).count()) == 2
    for up in ups.values():
        loop.run(up.stop())
    loop.stop()


def test_a_prompt_the_replay_fleet_does_not_know_says_so_once() -> None:
    with (
        Router.from_config("examples/demo.yaml", ledger=NullLedger()) as router,
        pytest.raises(ChainExhausted) as info,
    ):
        router.complete([{"role": "user", "content": "What is the capital of Atlantis?"}])
    message = str(info.value)
    assert message.count("a replay fleet answers only the 300 prompts recorded in arena-bench-v1") == 1
    assert "tierwise serve --config examples/tierwise.yaml" in message
    assert info.value.status == 400


async def test_observe_after_answer_takes_metrics_once_the_request_has_returned(tmp_path: Path) -> None:
    # The gateway's setting: the ledger row before the answer, the metrics and access log just after.
    router, ups = await make_router(tmp_path)
    router.observe_after_answer = True
    async with router:
        assert router.metrics is not None
        await router.acomplete(CLASSIFY)
        assert b"tierwise_requests_total{" not in router.metrics.exposition()  # not yet: queued
        await asyncio.sleep(0)  # one turn of the loop: what was queued with the answer runs
        assert b'tierwise_requests_total{model="draft-1"' in router.metrics.exposition()
        await router.ledger.flush()
        assert len(await router.ledger.fetch()) == 1
    for up in ups.values():
        await up.stop()
