"""examples/demo.py: its tallies, and its client against a stand-in gateway on 127.0.0.1."""

from __future__ import annotations

import asyncio
import importlib.util
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
from aiohttp import web

from tierwise.arena_data import ArenaData, load_arena
from tierwise.config import Config, load_config
from tierwise.errors import ProviderError
from tierwise.providers.base import UpstreamCall
from tierwise.providers.replay import ReplayProvider

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
STRONG = "gpt-4-1106-preview"
CHEAP = "Mixtral-8x7B-Instruct-v0.1"


def _load_demo() -> ModuleType:
    spec = importlib.util.spec_from_file_location("tierwise_demo", EXAMPLES / "demo.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


demo = _load_demo()


@pytest.fixture(scope="module")
def arena() -> ArenaData:
    return load_arena()


@pytest.fixture(scope="module")
def config() -> Config:
    return load_config(EXAMPLES / "demo.yaml")


def _outcome(arena: ArenaData, config: Config, qid: str, model: str) -> object:
    entry = config.model(model)
    return demo.Outcome(
        qid,
        model=model,
        tier=entry.tier,
        cost_usd=entry.cost(*arena.tokens(qid, entry.upstream)),
        reason="test",
        content=arena.answer(qid, entry.upstream),
    )


def test_always_strong_saves_nothing_and_keeps_all_quality(arena: ArenaData, config: Config) -> None:
    outcomes = [_outcome(arena, config, q.id, STRONG) for q in arena.questions]
    summary = demo.summarize(outcomes, arena, config)
    assert summary.strong_model == STRONG
    assert summary.total == summary.routed.requests == 300
    assert summary.savings == pytest.approx(0.0)
    assert summary.quality_retained == pytest.approx(1.0)
    assert summary.routed.mean_score == pytest.approx(8.87, abs=0.006)
    assert summary.routed.missing_scores == summary.strong.missing_scores == 3
    assert list(summary.by_tier) == ["execution"]
    assert summary.answer_mismatches == 0 and not summary.failures


def test_mixed_routing_tallies(arena: ArenaData, config: Config) -> None:
    qids = [q.id for q in arena.questions[:40]]
    outcomes = [_outcome(arena, config, qid, CHEAP if i % 4 else STRONG) for i, qid in enumerate(qids)]
    outcomes.append(demo.Outcome("failed-one", error="HTTP 502: all upstream models failed"))
    outcomes.append(demo.Outcome(qids[0], model=CHEAP, tier="draft", content="spliced"))  # no cost header
    summary = demo.summarize(outcomes, arena, config)

    cheap, strong = config.model(CHEAP), config.model(STRONG)
    routed_cost = sum(
        (cheap if i % 4 else strong).cost(*arena.tokens(qid, CHEAP if i % 4 else STRONG))
        for i, qid in enumerate(qids)
    ) + cheap.cost(*arena.tokens(qids[0], CHEAP))
    always_cost = sum(strong.cost(*arena.tokens(qid, STRONG)) for qid in [*qids, qids[0]])
    assert summary.routed.cost_usd == pytest.approx(routed_cost)
    assert summary.strong.cost_usd == pytest.approx(always_cost)
    assert summary.savings == pytest.approx(1 - routed_cost / always_cost)
    assert [(t, g.requests) for t, g in summary.by_tier.items()] == [("draft", 31), ("execution", 10)]
    assert [(m, g.requests) for m, g in summary.by_model.items()] == [(CHEAP, 31), (STRONG, 10)]
    assert summary.cost_from_dataset == 1
    assert summary.answer_mismatches == 1
    assert [f.qid for f in summary.failures] == ["failed-one"]

    scores = [arena.score(qid, CHEAP if i % 4 else STRONG) for i, qid in enumerate(qids)]
    scores.append(arena.score(qids[0], CHEAP))
    known = [s for s in scores if s is not None]
    assert summary.routed.mean_score == pytest.approx(sum(known) / len(known))
    assert summary.routed.missing_scores == len(scores) - len(known)

    report = demo.format_report(summary)
    assert "requests: 42, answered: 41, failed: 1" in report
    assert f"always {STRONG}" in report
    assert f"{summary.savings * 100:.1f}% priced with its own recorded answers" in report
    assert "failed: failed-one: HTTP 502" in report
    assert "1 answers had no x-tierwise-cost-usd" in report


def test_unknown_model_in_header_is_a_failure(arena: ArenaData, config: Config) -> None:
    qid = arena.questions[0].id
    summary = demo.summarize([demo.Outcome(qid, model="gpt-5", tier="x")], arena, config)
    assert summary.routed.requests == 0
    assert "gpt-5 answered, but has no recorded result" in (summary.failures[0].error or "")
    assert summary.savings is None and summary.quality_retained is None
    assert "   n/a priced with its own recorded answers" in demo.format_report(summary)


# -- the client, against a stand-in for `tierwise serve` on 127.0.0.1 -----------------------------------


def _gateway(config: Config, *, fail_prompt: str | None = None) -> web.Application:
    """Answers like the gateway will: short prompts to the draft model, the rest to the strong one."""
    replay = ReplayProvider("replay", config.providers["replay"], http=None)

    async def chat(request: web.Request) -> web.Response:
        body = await request.json()
        prompt = body["messages"][-1]["content"]
        if prompt == fail_prompt:
            error = {"error": {"message": "all upstream models failed", "type": "upstream_error"}}
            return web.json_response(error, status=502)
        model = config.model(CHEAP if len(prompt) < 200 else STRONG)
        try:
            completion = await replay.complete(UpstreamCall(model=model, body=body))
        except ProviderError as exc:
            return web.json_response({"error": {"message": str(exc), "type": "upstream_error"}}, status=502)
        cost = model.cost(completion.usage.input_tokens, completion.usage.output_tokens)
        headers = {
            "x-tierwise-model": model.name,
            "x-tierwise-tier": model.tier,
            "x-tierwise-reason": "stand-in: prompt length",
            "x-tierwise-cost-usd": f"{cost:.8f}",
        }
        return web.json_response(completion.body, headers=headers)

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    return app


def _serve(app: web.Application) -> Iterator[str]:
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    runner = web.AppRunner(app)
    asyncio.run_coroutine_threadsafe(runner.setup(), loop).result(10)
    site = web.TCPSite(runner, "127.0.0.1", 0)
    asyncio.run_coroutine_threadsafe(site.start(), loop).result(10)
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


@pytest.fixture
def gateway(config: Config) -> Iterator[str]:
    yield from _serve(_gateway(config))


@pytest.fixture
def failing_gateway(config: Config, arena: ArenaData) -> Iterator[str]:
    yield from _serve(_gateway(config, fail_prompt=arena.questions[2].prompt))


def test_demo_runs_against_a_gateway(gateway: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert demo.main(["--base-url", gateway, "--limit", "30", "--concurrency", "4"]) == 0
    out = capsys.readouterr().out
    assert "requests: 30, answered: 30, failed: 0" in out
    assert CHEAP in out and STRONG in out
    assert "differ from the recorded answer" not in out  # the SDK delivered the recorded answers intact


async def test_send_all_reads_the_headers(gateway: str, arena: ArenaData, config: Config) -> None:
    questions = list(arena.questions[:12])
    outcomes = await demo.send_all(gateway, questions, concurrency=3)
    assert [o.qid for o in outcomes] == [q.id for q in questions]
    for outcome, question in zip(outcomes, questions, strict=True):
        assert outcome.error is None
        assert outcome.model == (CHEAP if len(question.prompt) < 200 else STRONG)
        assert outcome.tier == config.model(outcome.model).tier
        assert outcome.reason == "stand-in: prompt length"
        assert outcome.cost_usd == pytest.approx(
            config.model(outcome.model).cost(*arena.tokens(question.id, outcome.model))
        )
        assert outcome.content == arena.answer(question.id, outcome.model)


def test_demo_exits_nonzero_when_a_request_fails(
    failing_gateway: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert demo.main(["--base-url", failing_gateway, "--limit", "5"]) == 1
    out = capsys.readouterr().out
    assert "requests: 5, answered: 4, failed: 1" in out
    assert "HTTP 502" in out
