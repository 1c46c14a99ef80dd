"""The response cache at the gateway: fake upstreams, the official openai SDK, and (when present) Redis."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from tests.fakes.upstream import FakeUpstream
from tests.harness import Stack, fleet_config, start_stack
from tierwise.access import hash_secret
from tierwise.config import parse_config
from tierwise.ledger import open_ledger
from tierwise.report import render, summarize
from tierwise.router import Router

CLASSIFY = [{"role": "user", "content": "Classify the sentiment of this review: 'Great battery.'"}]
ALPHA = "tw-alpha-secret-0123456789abcdefghijklmnopqrstuv"
BETA = "tw-beta-secret-0123456789abcdefghijklmnopqrstuvw"
MASTER = "tw-master-secret-0123456789abcdefghijklmnopqrstu"
REDIS = os.environ.get("TIERWISE_TEST_REDIS", "redis://127.0.0.1:6379/0")


def upstream_calls(stack: Stack) -> int:
    return sum(len(u.requests) for u in stack.upstreams.values())


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    s = start_stack(tmp_path, cache={"exact": {"ttl_s": 60, "max_entries": 100}})
    yield s
    s.close()


def client(stack: Stack, key: str = "k") -> openai.OpenAI:
    return openai.OpenAI(base_url=stack.base_url, api_key=key, max_retries=0, timeout=20)


def test_a_repeat_is_a_hit_at_no_cost_and_no_upstream_call(stack: Stack) -> None:
    with client(stack) as c:
        first = c.chat.completions.with_raw_response.create(model="auto", messages=CLASSIFY)
        calls = upstream_calls(stack)
        second = c.chat.completions.with_raw_response.create(model="auto", messages=CLASSIFY)
    assert first.headers.get("x-tierwise-cache") is None
    assert second.headers["x-tierwise-cache"] == "hit"
    assert second.headers["x-tierwise-cache-kind"] == "exact"
    assert float(second.headers["x-tierwise-cost-usd"]) == 0
    assert upstream_calls(stack) == calls
    assert second.parse().choices[0].message.content == first.parse().choices[0].message.content
    miss, hit = stack.rows()
    assert hit.cost_usd == 0 and hit.attempts == [] and hit.final_model == miss.final_model
    assert hit.decision["cache"]["hit"] == "exact"
    assert hit.decision["cache"]["saved_usd"] == pytest.approx(miss.cost_usd)


def test_a_streamed_request_is_served_from_the_cache_as_a_stream(stack: Stack) -> None:
    with client(stack) as c:
        answer = c.chat.completions.create(model="auto", messages=CLASSIFY).choices[0].message.content
        calls = upstream_calls(stack)
        with c.chat.completions.with_streaming_response.create(
            model="auto", messages=CLASSIFY, stream=True, stream_options={"include_usage": True}
        ) as response:
            assert response.headers["x-tierwise-cache"] == "hit"
            chunks = list(response.parse())
    assert upstream_calls(stack) == calls
    assert "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices) == answer
    assert chunks[-2].choices[0].finish_reason == "stop"
    assert chunks[-1].usage is not None
    assert stack.rows()[-1].stream and stack.rows()[-1].decision["cache"]["hit"] == "exact"


def test_a_streamed_answer_fills_the_cache(stack: Stack) -> None:
    with client(stack) as c:
        streamed = "".join(
            ch.choices[0].delta.content or ""
            for ch in c.chat.completions.create(model="auto", messages=CLASSIFY, stream=True)
            if ch.choices
        )
        calls = upstream_calls(stack)
        again = c.chat.completions.with_raw_response.create(model="auto", messages=CLASSIFY)
    assert again.headers["x-tierwise-cache"] == "hit" and upstream_calls(stack) == calls
    assert again.parse().choices[0].message.content == streamed


@pytest.mark.parametrize(
    "extra",
    [
        {"temperature": 0.7},
        {"n": 2},
        {"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]},
    ],
    ids=["sampled", "n", "tools"],
)
def test_sampled_tool_and_many_choice_requests_are_never_cached_by_default(stack: Stack, extra: dict) -> None:
    with client(stack) as c:
        for _ in range(2):
            response = c.chat.completions.with_raw_response.create(model="auto", messages=CLASSIFY, **extra)
            assert response.headers.get("x-tierwise-cache") is None
    assert all("cache" not in row.decision for row in stack.rows())


def test_temperature_zero_is_cached(stack: Stack) -> None:
    with client(stack) as c:
        c.chat.completions.create(model="auto", messages=CLASSIFY, temperature=0)
        again = c.chat.completions.with_raw_response.create(model="auto", messages=CLASSIFY, temperature=0)
    assert again.headers["x-tierwise-cache"] == "hit"


def test_a_client_can_opt_out_by_header_or_metadata(stack: Stack) -> None:
    with client(stack) as c:
        c.chat.completions.create(model="auto", messages=CLASSIFY)
        calls = upstream_calls(stack)
        by_header = c.chat.completions.with_raw_response.create(
            model="auto", messages=CLASSIFY, extra_headers={"x-tierwise-cache": "off"}
        )
        by_metadata = c.chat.completions.with_raw_response.create(
            model="auto", messages=CLASSIFY, metadata={"tierwise_cache": "off"}
        )
    assert by_header.headers.get("x-tierwise-cache") is None
    assert by_metadata.headers.get("x-tierwise-cache") is None
    assert upstream_calls(stack) == calls + 2
    assert all("tierwise_cache" not in str(r.get("metadata")) for r in stack.upstreams["cheap"].requests)


def test_metrics_and_report_count_cache_savings_apart(stack: Stack) -> None:
    with client(stack) as c:
        for _ in range(3):
            c.chat.completions.create(model="auto", messages=CLASSIFY)
    rows = stack.rows()
    summary = summarize(rows)
    assert summary["cache"]["hits"] == {"exact": 2}
    assert summary["cache"]["saved_usd"] == pytest.approx(2 * rows[0].cost_usd)
    assert summary["cost_usd"] == pytest.approx(rows[0].cost_usd)
    assert "2 answers from the cache (exact 2)" in render(summary)
    assert stack.router.metrics is not None
    text = stack.router.metrics.exposition().decode()
    assert 'tierwise_cache_hits_total{kind="exact"} 2.0' in text
    saved = next(line for line in text.splitlines() if line.startswith("tierwise_cache_saved_usd_total"))
    assert float(saved.split()[-1]) == pytest.approx(2 * rows[0].cost_usd)


def keyed_config() -> dict[str, Any]:
    return {
        "auth": {"mode": "keys", "master_key_env": "TW_TEST_MASTER"},
        "tenants": {"acme": {}, "globex": {}},
        "keys": [
            {"id": "alpha", "tenant": "acme", "hash": hash_secret(ALPHA)},
            {"id": "beta", "tenant": "globex", "hash": hash_secret(BETA)},
        ],
    }


def test_tenants_never_share_an_answer(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TW_TEST_MASTER", MASTER)
    s = start_stack(tmp_path, cache={"scope": "tenant", "semantic": {"threshold": 0.9}}, **keyed_config())
    close = [{"role": "user", "content": "classify the sentiment of this review: 'Great battery!'"}]
    try:
        with client(s, ALPHA) as alpha, client(s, BETA) as beta:
            alpha.chat.completions.create(model="auto", messages=CLASSIFY)
            exact_other = beta.chat.completions.with_raw_response.create(model="auto", messages=close)
            semantic_own = alpha.chat.completions.with_raw_response.create(model="auto", messages=close)
            exact_own = alpha.chat.completions.with_raw_response.create(model="auto", messages=CLASSIFY)
        assert exact_other.headers.get("x-tierwise-cache") is None  # acme's answer, asked by globex
        assert semantic_own.headers["x-tierwise-cache-kind"] == "semantic"
        assert exact_own.headers["x-tierwise-cache-kind"] == "exact"
        hits = [r for r in s.rows() if "cache" in r.decision]
        assert {(r.key_id, r.decision["tenant"]) for r in hits} == {("alpha", "acme")}
        assert hits[0].decision["cache"]["similarity"] >= 0.9
    finally:
        s.close()


def test_keys_scope_separates_keys_of_one_tenant(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TW_TEST_MASTER", MASTER)
    config = keyed_config()
    config["keys"][1]["tenant"] = "acme"
    s = start_stack(tmp_path, cache={"scope": "key", "semantic": {"threshold": 0.5}}, **config)
    try:
        with client(s, ALPHA) as alpha, client(s, BETA) as beta:
            alpha.chat.completions.create(model="auto", messages=CLASSIFY)
            assert (
                beta.chat.completions.with_raw_response.create(model="auto", messages=CLASSIFY).headers.get(
                    "x-tierwise-cache"
                )
                is None
            )
            assert (
                alpha.chat.completions.with_raw_response.create(model="auto", messages=CLASSIFY).headers[
                    "x-tierwise-cache"
                ]
                == "hit"
            )
    finally:
        s.close()


async def _redis_or_skip() -> None:
    import redis.asyncio as aioredis

    client = aioredis.from_url(REDIS, socket_connect_timeout=1, socket_timeout=1)
    try:
        await client.ping()
    except (OSError, aioredis.RedisError) as exc:
        pytest.skip(f"no Redis at {REDIS}: {type(exc).__name__}: {exc}")
    finally:
        await client.aclose()


async def test_the_redis_cache_is_shared_by_two_routers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    await _redis_or_skip()
    monkeypatch.setenv("TW_TEST_KEY", "test-key")
    async with (
        FakeUpstream(kind="openai", reply="cheap answer") as cheap,
        FakeUpstream(kind="openai", reply="backup answer") as backup,
        FakeUpstream(kind="anthropic", reply="strong answer") as strong,
    ):
        urls = {"cheap": cheap.url, "backup": backup.url, "strong": strong.url}
        config = parse_config(
            fleet_config(
                urls,
                ledger="none",
                storage={"ledger": "none", "state": REDIS},
                cache={"exact": {"backend": "redis", "ttl_s": 30}},
            )
        )
        # A question no earlier run asked: entries outlive a test by their TTL.
        messages = [{"role": "user", "content": f"Classify the sentiment: 'fine' ({uuid.uuid4().hex})"}]
        async with (
            Router(config, ledger=open_ledger("none")) as one,
            Router(config, ledger=open_ledger("none")) as two,
        ):
            first = await one.route({"model": "auto", "messages": messages})
            second = await two.route({"model": "auto", "messages": messages})
        assert first.cache is None and second.cache == "exact"
        assert second.content == first.content and second.cost_usd == 0
        assert sum(len(u.requests) for u in (cheap, backup, strong)) == 1
    await asyncio.sleep(0)


def test_a_key_is_never_served_an_answer_from_a_model_it_may_not_use(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TW_TEST_MASTER", MASTER)
    config = keyed_config()
    config["keys"][1] = {
        "id": "beta",
        "tenant": "acme",
        "hash": hash_secret(BETA),
        "allowed_tiers": ["draft"],
    }
    s = start_stack(tmp_path, cache={"scope": "tenant"}, **config)
    code = [{"role": "user", "content": "Write a Python function that reverses a linked list."}]
    try:
        with client(s, ALPHA) as alpha, client(s, BETA) as beta:
            first = alpha.chat.completions.with_raw_response.create(model="auto", messages=code)
            limited = beta.chat.completions.with_raw_response.create(model="auto", messages=code)
            again = alpha.chat.completions.with_raw_response.create(model="auto", messages=code)
        assert first.headers["x-tierwise-tier"] != "draft"
        assert (
            limited.headers.get("x-tierwise-cache") is None and limited.headers["x-tierwise-tier"] == "draft"
        )
        assert again.headers["x-tierwise-cache"] == "hit"
    finally:
        s.close()
