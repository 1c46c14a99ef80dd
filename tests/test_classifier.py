"""The small-LLM classifier against a real fake grader upstream on 127.0.0.1, alone and in the Router."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.fakes.upstream import FakeUpstream
from tests.harness import fleet_config
from tierwise import Router
from tierwise.classifier import Classification, TierClassifier, default_rubric, parse_tier, request_excerpt
from tierwise.config import Config, parse_config
from tierwise.features import extract_features
from tierwise.http import HttpPool
from tierwise.ledger import SqliteLedger
from tierwise.ledger.base import Attempt
from tierwise.policy.engine import Decision
from tierwise.providers import build_provider

CHAT = [{"role": "user", "content": "hey, I had the strangest dream last night"}]
GRADER_PRICE = {"input_per_mtok": 0.6, "output_per_mtok": 1.2}


def config_for(
    grader: FakeUpstream,
    answers: str = "http://127.0.0.1:9/v1",
    ledger: str = "none",
    cooldown: dict[str, Any] | None = None,
    **classifier: Any,
) -> Config:
    """The harness fleet (answers at ``answers``) plus ``grader-1``, a draft model on the fake grader."""
    doc = fleet_config({"cheap": answers, "backup": answers, "strong": answers}, ledger=ledger)
    doc["providers"]["strong"]["kind"] = "openai"
    doc["providers"]["grader"] = {"kind": "openai", "base_url": grader.url, "api_key_env": "TW_TEST_KEY"}
    doc["models"].append(
        {
            "name": "grader-1",
            "provider": "grader",
            "upstream": "grader-model",
            "tier": "draft",
            "context_window": 16_000,
            "price": GRADER_PRICE,
        }
    )
    doc["policy"]["classifier"] = {"model": "grader-1", "timeout_ms": 500, **classifier}
    doc["policy"]["cooldown"] = cooldown or {"failures": 3, "seconds": 30}
    return parse_config(doc)


@pytest.fixture
async def grader() -> AsyncIterator[FakeUpstream]:
    async with FakeUpstream(kind="openai", reply="draft") as up:
        yield up


@pytest.fixture
async def pool() -> AsyncIterator[HttpPool]:
    pool = HttpPool()
    yield pool
    await pool.aclose()


def make(grader: FakeUpstream, pool: HttpPool, **classifier: Any) -> TierClassifier:
    config = config_for(grader, **classifier)
    providers = {name: build_provider(name, p, http=pool) for name, p in config.providers.items()}
    return TierClassifier(config, providers)


def body(text: str = "hey, I had the strangest dream last night", **extra: Any) -> dict[str, Any]:
    return {"model": "auto", "messages": [{"role": "user", "content": text}], **extra}


async def ask(classifier: TierClassifier, b: dict[str, Any]) -> Classification:
    return await classifier.classify(b, extract_features(b))


# -- parsing --------------------------------------------------------------------------------------

TIERS = {"draft": "draft", "review": "review", "execution": "execution"}
PARSING = [
    ("draft", "draft"),
    ("review", "review"),
    ("execution", "execution"),
    ("  Review\n", "review"),
    ("EXECUTION", "execution"),
    ("\tdraft  ", "draft"),
    ('{"tier": "execution"}', "execution"),
    ('  {"tier": " Draft "}\n', "draft"),
    ('{"TIER": "review"}', "review"),  # the whole reply is lower-cased first
    ("Draft.", None),
    ('"draft"', None),
    ("draft or review", None),
    ("I would say draft", None),
    ("draft\nbecause it is short", None),
    ("not execution", None),
    ("", None),
    ("garbage", None),
    ("gold", None),
    ('{"tier": "draft", "why": "short"}', None),
    ('{"tier": "gold"}', None),
    ('{"tier": 1}', None),
    ('["draft"]', None),
    ('{"tier": "draft"', None),
]


@pytest.mark.parametrize(("reply", "tier"), [*PARSING, (None, None), (["draft"], None)])
def test_parse_tier_table(reply: Any, tier: str | None) -> None:
    assert parse_tier(reply, TIERS) == tier


@pytest.mark.parametrize(("reply", "tier"), PARSING)
async def test_parsing_through_the_grader(
    grader: FakeUpstream, pool: HttpPool, reply: str, tier: str | None
) -> None:
    grader.reply = reply
    result = await ask(make(grader, pool), body())
    assert result.tier == tier and not result.cached
    assert result.attempt is not None and result.attempt.purpose == "classifier"
    assert result.attempt.status == ("ok" if tier else "unparsed")
    assert result.attempt.http_status == 200
    if tier is None:
        assert (
            result.attempt.error == f"grader-1: reply is not one tier name ({len(reply.strip())} characters)"
        )


# -- the call -------------------------------------------------------------------------------------


async def test_the_call_sent_and_its_cost(grader: FakeUpstream, pool: HttpPool) -> None:
    grader.reply = "execution"
    b = body(
        temperature=0.9,
        tools=[{"type": "function", "function": {"name": "lookup_order", "parameters": {}}}],
        response_format={"type": "json_object"},
    )
    b["messages"].insert(0, {"role": "system", "content": "You are the support bot of Acme."})
    result = await ask(make(grader, pool), b)
    assert result.tier == "execution"
    sent = grader.requests[-1]
    assert sent["model"] == "grader-model"
    assert sent["temperature"] == 0 and sent["max_tokens"] == 16 and "stream" not in sent
    assert "tools" not in sent and "response_format" not in sent  # described, not forwarded
    system, user = sent["messages"]
    assert system["role"] == "system" and system["content"] == default_rubric(
        ("draft", "review", "execution")
    )
    lines = system["content"].splitlines()
    assert [line.split(":")[0] for line in lines if line.startswith("- ")] == [
        "- draft",
        "- review",
        "- execution",
    ]  # cheapest first
    assert "strangest dream" in user["content"] and "Acme" in user["content"]
    assert "tools: lookup_order" in user["content"] and "response format: json_object" in user["content"]
    assert user["content"].endswith("Answer with exactly one word: draft, review or execution.")
    attempt = result.attempt
    assert attempt is not None
    assert (attempt.model, attempt.provider, attempt.retry) == ("grader-1", "grader", 0)
    assert attempt.input_tokens > 0 and attempt.output_tokens == 1
    expected = (attempt.input_tokens * 0.6 + attempt.output_tokens * 1.2) / 1e6
    assert attempt.cost_usd == pytest.approx(expected)
    assert attempt.latency_ms > 0


async def test_long_requests_are_cut_to_a_bounded_excerpt(grader: FakeUpstream, pool: HttpPool) -> None:
    text = "START " + "word " * 20_000 + " please summarize the above END"
    b = body(text)
    b["messages"].insert(0, {"role": "system", "content": "s" * 5000})
    await ask(make(grader, pool), b)
    user = grader.requests[-1]["messages"][1]["content"]
    assert len(user) < 3000
    assert "START" in user and "END" in user and "characters omitted" in user
    small = request_excerpt(body("short"), extract_features(body("short")))
    assert "characters omitted" not in small and "1 message;" in small


async def test_custom_rubric_and_tier_names(grader: FakeUpstream, pool: HttpPool) -> None:
    doc = fleet_config({n: "http://127.0.0.1:9/v1" for n in ("cheap", "backup", "strong")}, ledger="none")
    doc["tiers"] = ["Small", "middle", "large"]
    for model, tier in zip(doc["models"], ["Small", "large", "large"], strict=True):
        model["tier"] = tier
        model["provider"] = "cheap"
    doc["providers"]["cheap"]["base_url"] = grader.url
    doc["policy"]["classifier"] = {"model": "draft-1", "rubric": "Pick Small unless it is hard."}
    doc["policy"]["default"] = {"tier": "large"}
    config = parse_config(doc)
    classifier = TierClassifier(
        config, {"cheap": build_provider("cheap", config.providers["cheap"], http=pool)}
    )
    assert classifier.tiers == ("Small", "large")  # "middle" has no models: not offered
    grader.reply = "small"
    result = await ask(classifier, body())
    assert result.tier == "Small"  # the fleet's spelling
    system, user = grader.requests[-1]["messages"]
    assert system["content"] == "Pick Small unless it is hard."
    assert user["content"].endswith("Answer with exactly one word: Small or large.")
    grader.reply = "middle"
    assert (await ask(classifier, body("another request"))).tier is None
    assert "- middle" not in default_rubric(classifier.tiers)


# -- cache ----------------------------------------------------------------------------------------


async def test_cache_hit_and_miss(grader: FakeUpstream, pool: HttpPool) -> None:
    classifier = make(grader, pool)
    first = await ask(classifier, body(temperature=0.1))
    assert (first.tier, first.cached) == ("draft", False) and first.attempt is not None
    grader.reply = "execution"  # a hit does not ask again
    again = await ask(classifier, body(temperature=0.7, max_tokens=50, user="u1"))  # sampling: same key
    assert again == Classification("draft", None, cached=True)
    assert len(grader.requests) == 1
    other = await ask(classifier, body("a different request"))
    assert (other.tier, other.cached) == ("execution", False)
    tools = await ask(classifier, body(tools=[{"type": "function", "function": {"name": "f"}}]))
    assert not tools.cached  # what the grader reads differs: a miss
    assert len(grader.requests) == 3


async def test_lru_eviction(grader: FakeUpstream, pool: HttpPool) -> None:
    classifier = make(grader, pool, cache_size=2)
    a, b, c = body("request a"), body("request b"), body("request c")
    for x in (a, b):
        await ask(classifier, x)
    assert (await ask(classifier, a)).cached  # a is now the most recently used
    await ask(classifier, c)  # evicts b
    assert len(grader.requests) == 3
    assert not (await ask(classifier, b)).cached  # evicted: asked again; a is evicted now
    assert len(grader.requests) == 4
    assert (await ask(classifier, b)).cached
    assert not (await ask(classifier, a)).cached
    assert len(grader.requests) == 5


async def test_cache_off_and_failures_are_not_cached(grader: FakeUpstream, pool: HttpPool) -> None:
    off = make(grader, pool, cache_size=0)
    for _ in range(3):
        assert not (await ask(off, body())).cached
    assert len(grader.requests) == 3
    on = make(grader, pool)
    grader.reply = "no idea"
    assert (await ask(on, body())).tier is None
    grader.fail_next(1, status=503)
    assert (await ask(on, body())).tier is None
    grader.reply = "review"
    result = await ask(on, body())
    assert (result.tier, result.cached) == ("review", False)
    assert len(grader.requests) == 6


# -- single-flight --------------------------------------------------------------------------------


async def test_identical_requests_in_flight_share_one_call(grader: FakeUpstream, pool: HttpPool) -> None:
    grader.delay_s = 0.2
    classifier = make(grader, pool, cache_size=0)  # sharing is not the cache's doing
    results = await asyncio.gather(*(ask(classifier, body()) for _ in range(8)))
    assert len(grader.requests) == 1
    assert {r.tier for r in results} == {"draft"}
    assert [r.cached for r in results].count(False) == 1
    assert sum(r.attempt is not None for r in results) == 1  # charged once, to the first
    different = await asyncio.gather(ask(classifier, body("one")), ask(classifier, body("two")))
    assert [r.cached for r in different] == [False, False] and len(grader.requests) == 3


async def test_a_leader_that_goes_away_does_not_cancel_the_shared_call(
    grader: FakeUpstream, pool: HttpPool
) -> None:
    grader.delay_s = 0.2
    classifier = make(grader, pool)
    leader = asyncio.create_task(ask(classifier, body()))
    await asyncio.sleep(0.05)
    follower = asyncio.create_task(ask(classifier, body()))
    await asyncio.sleep(0.05)
    leader.cancel()
    result = await follower
    assert (result.tier, result.cached) == ("draft", True)
    assert (await ask(classifier, body())).cached and len(grader.requests) == 1


async def test_followers_of_a_failed_call_get_no_answer(grader: FakeUpstream, pool: HttpPool) -> None:
    grader.delay_s = 0.1
    grader.reply = "probably draft"
    classifier = make(grader, pool)
    results = await asyncio.gather(*(ask(classifier, body()) for _ in range(3)))
    assert [r.tier for r in results] == [None, None, None] and len(grader.requests) == 1
    statuses = [r.attempt.status if r.attempt else None for r in results]
    assert sorted(statuses, key=str) == [None, None, "unparsed"]


# -- timeouts and errors --------------------------------------------------------------------------


async def test_timeout_is_no_answer_with_its_latency(grader: FakeUpstream, pool: HttpPool) -> None:
    grader.delay_s = 1.0
    classifier = make(grader, pool, timeout_ms=100)
    started = time.perf_counter()
    result = await ask(classifier, body())
    waited = time.perf_counter() - started
    assert result.tier is None and not result.cached
    attempt = result.attempt
    assert attempt is not None and attempt.status == "UpstreamTimeout" and attempt.cost_usd == 0
    assert 100 <= attempt.latency_ms < 400 and waited < 0.4
    assert attempt.error is not None and "100 ms" in attempt.error


@pytest.mark.parametrize(
    ("status", "error"),
    [(500, "UpstreamUnavailable"), (429, "UpstreamRateLimited"), (400, "UpstreamRejected")],
)
async def test_provider_errors_are_no_answer(
    grader: FakeUpstream, pool: HttpPool, status: int, error: str
) -> None:
    grader.fail_next(1, status=status)
    result = await ask(make(grader, pool), body())
    assert result.tier is None and result.attempt is not None
    assert (result.attempt.status, result.attempt.http_status) == (error, status)
    assert len(grader.requests) == 1  # no retries: the rules are the fallback


async def test_repeated_failures_pause_the_classifier(grader: FakeUpstream, pool: HttpPool) -> None:
    config = config_for(grader, cooldown={"failures": 2, "seconds": 0.3})
    classifier = TierClassifier(
        config, {"grader": build_provider("grader", config.providers["grader"], http=pool)}
    )
    grader.fault("500")
    for i in range(2):
        failed = (await ask(classifier, body(f"r{i}"))).attempt
        assert failed is not None and failed.status == "UpstreamUnavailable"
    skipped = await ask(classifier, body("r2"))
    assert skipped.tier is None and skipped.attempt is not None and skipped.attempt.status == "skipped"
    assert len(grader.requests) == 2
    grader.fault(None)
    await asyncio.sleep(0.35)
    assert (await ask(classifier, body("r3"))).tier == "draft"  # tried again, and closed
    assert (await ask(classifier, body("r4"))).tier == "draft"
    assert len(grader.requests) == 4


# -- the reason trace -----------------------------------------------------------------------------


def test_annotate_says_what_the_classifier_did() -> None:
    decided = Decision(
        ("e",), "execution", "classifier: execution → execution", "classifier", "classifier", "v"
    )
    default = Decision(
        ("r",), "review", "default: no rule matched (task=chat) → review", "default", "default", "v"
    )
    fresh = Classification("execution", Attempt("g", "p", "ok"), cached=False)
    assert fresh.annotate(decided) is decided
    cached = Classification("execution", None, cached=True).annotate(decided)
    assert cached.reason == "classifier (cached): execution → execution" and cached.layer == "classifier"
    timeout = Classification(None, Attempt("g", "p", "UpstreamTimeout"), cached=False).annotate(default)
    assert (
        timeout.reason
        == "default: no rule matched (task=chat) → review; classifier: no answer (UpstreamTimeout)"
    )
    shared = Classification(None, None, cached=True).annotate(default)
    assert shared.reason.endswith("classifier: no answer (an identical request's call had none)")


# -- in the Router --------------------------------------------------------------------------------


@pytest.fixture
async def answers() -> AsyncIterator[FakeUpstream]:
    async with FakeUpstream(kind="openai", reply="the answer") as up:
        yield up


async def rows(router: Router) -> list[Any]:
    await router.ledger.flush()
    return await router.ledger.fetch()


async def test_router_charges_and_logs_the_classifier(
    grader: FakeUpstream, answers: FakeUpstream, tmp_path: Path
) -> None:
    grader.reply = "execution"
    async with Router(config_for(grader, answers.url, ledger=f"sqlite:///{tmp_path}/l.db")) as router:
        routed = await router.acomplete(CHAT)
        assert routed.model == "exec-1" and routed.decision.layer == "classifier"
        assert routed.decision.reason == "classifier: execution → execution"
        (row,) = await rows(router)
        classifier, answer = row.attempts
        assert (classifier.purpose, classifier.model, classifier.status) == ("classifier", "grader-1", "ok")
        assert answer.purpose == "answer" and answer.model == "exec-1"
        assert classifier.cost_usd > 0
        assert row.cost_usd == pytest.approx(classifier.cost_usd + answer.cost_usd)
        assert routed.cost_usd == pytest.approx(row.cost_usd)
        # the same request again: a cache hit costs nothing and says so
        again = await router.acomplete(CHAT, temperature=0.3)
        assert again.decision.reason == "classifier (cached): execution → execution"
        assert len(grader.requests) == 1
        row = (await rows(router))[-1]
        assert [a.purpose for a in row.attempts] == ["answer"]
        assert again.cost_usd == pytest.approx(row.attempts[0].cost_usd)


async def test_router_timeout_falls_back_to_the_rules_with_the_attempt_recorded(
    grader: FakeUpstream, answers: FakeUpstream, tmp_path: Path
) -> None:
    grader.delay_s = 1.0
    config = config_for(grader, answers.url, ledger=f"sqlite:///{tmp_path}/l.db", timeout_ms=150)
    async with Router(config) as router:
        started = time.perf_counter()
        routed = await router.acomplete(CHAT)
        assert time.perf_counter() - started < 0.8
        assert routed.model == "review-1" and routed.decision.layer == "default"
        assert routed.decision.reason.endswith("; classifier: no answer (UpstreamTimeout)")
        (row,) = await rows(router)
        assert [(a.purpose, a.status) for a in row.attempts] == [
            ("classifier", "UpstreamTimeout"),
            ("answer", "ok"),
        ]
        assert row.attempts[0].latency_ms >= 150 and row.latency_ms >= 150
        assert row.decision["layer"] == "default"
        streamed = await router.route_stream({"model": "auto", "messages": CHAT, "stream": True})
        assert streamed.model == "review-1"
        async for _ in streamed:
            pass
        row = (await rows(router))[-1]
        assert [a.purpose for a in row.attempts] == ["classifier", "answer"] and row.stream


@pytest.mark.parametrize(
    ("messages", "kwargs", "layer"),
    [
        ([{"role": "user", "content": "Classify the sentiment of: 'meh'"}], {}, "rules"),
        (CHAT, {"tier": "draft"}, "hint"),
        (CHAT, {"model": "review-1"}, "manual"),
        (CHAT, {"model": "execution"}, "hint"),
        (CHAT, {"risk": "critical"}, "rules"),
    ],
)
async def test_router_skips_the_classifier_when_something_else_decides(
    grader: FakeUpstream,
    answers: FakeUpstream,
    messages: list[dict[str, Any]],
    kwargs: dict[str, Any],
    layer: str,
) -> None:
    async with Router(config_for(grader, answers.url)) as router:
        routed = await router.acomplete(messages, **kwargs)
        assert routed.decision.layer == layer
    assert grader.requests == []


async def test_no_classifier_configured_adds_nothing(answers: FakeUpstream, tmp_path: Path) -> None:
    doc = fleet_config(
        {n: answers.url for n in ("cheap", "backup", "strong")}, ledger=f"sqlite:///{tmp_path}/l.db"
    )
    doc["providers"]["strong"]["kind"] = "openai"
    async with Router(parse_config(doc)) as router:
        assert router.classifier is None
        routed = await router.acomplete(CHAT)
        assert routed.decision.layer == "default"
        assert routed.decision.reason == "default: no rule matched (task=chat) → review"
        (row,) = await rows(router)
        assert [a.purpose for a in row.attempts] == ["answer"]


async def test_chain_failure_still_charges_the_classifier(
    grader: FakeUpstream, answers: FakeUpstream, tmp_path: Path
) -> None:
    grader.reply = "execution"  # exec-1 alone: nothing to fall back to
    answers.fault("500")
    async with Router(config_for(grader, answers.url, ledger=f"sqlite:///{tmp_path}/l.db")) as router:
        with pytest.raises(Exception, match="all upstream models failed"):
            await router.acomplete(CHAT)
        (row,) = await rows(router)
    assert row.attempts[0].purpose == "classifier" and row.attempts[0].cost_usd > 0
    assert row.cost_usd == pytest.approx(row.attempts[0].cost_usd) and row.status == "error"
    assert await SqliteLedger(str(tmp_path / "l.db")).count() == 1
