"""The response cache's keys, rules and stores, without a server (the gateway tests are in tests/gateway)."""

from __future__ import annotations

import pytest

from tests.harness import fleet_config
from tierwise.cache import (
    ResponseCache,
    StreamCollector,
    cache_key,
    hit_chunks,
    not_cacheable,
    opted_out,
    same_question,
    terms,
)
from tierwise.config import CacheConfig, parse_config
from tierwise.errors import ConfigError

ASK = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "What is the capital of France?"},
]
ANSWER = {
    "id": "x",
    "object": "chat.completion",
    "created": 1,
    "model": "m",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "Paris"}, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 9, "completion_tokens": 1, "total_tokens": 10},
}


def test_hints_stream_flags_and_the_opt_out_never_split_the_key() -> None:
    plain = cache_key({"model": "auto", "messages": ASK}, scope="global", policy_version="p1")
    dressed = cache_key(
        {
            "model": "auto",
            "messages": ASK,
            "stream": True,
            "stream_options": {"include_usage": True},
            "metadata": {"task": "qa", "tierwise_cache": "on"},
        },
        scope="global",
        policy_version="p1",
    )
    assert plain == dressed
    assert (
        plain.exact
        != cache_key({"model": "auto", "messages": ASK}, scope="global", policy_version="p2").exact
    )
    assert (
        plain.exact
        != cache_key({"model": "auto", "messages": ASK}, scope="tenant:a", policy_version="p1").exact
    )
    other_params = cache_key(
        {"model": "auto", "messages": ASK, "max_tokens": 5}, scope="global", policy_version="p1"
    )
    assert other_params.bucket != plain.bucket


def test_only_single_turn_text_requests_are_matched_semantically() -> None:
    turns = [*ASK, {"role": "assistant", "content": "Paris."}, {"role": "user", "content": "And Spain?"}]
    assert cache_key({"model": "auto", "messages": turns}, scope="g", policy_version="p").bucket is None
    parts = [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]
    assert cache_key({"model": "auto", "messages": parts}, scope="g", policy_version="p").bucket is None


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ({"temperature": 0.2}, "temperature > 0"),
        ({"temperature": 0}, None),
        ({}, None),
        ({"tools": [{"type": "function"}]}, "tools"),
        ({"n": 3}, "n > 1"),
        ({"n": 1}, None),
    ],
)
def test_not_cacheable(body: dict, reason: str | None) -> None:
    assert not_cacheable(CacheConfig(), body) == reason


def test_allowed_by_config() -> None:
    config = CacheConfig(allow_sampled=True, allow_tools=True, allow_n=True)
    assert not_cacheable(config, {"temperature": 1, "tools": [{}], "n": 2}) is None


@pytest.mark.parametrize(
    ("headers", "metadata", "off"),
    [
        ({"x-tierwise-cache": "off"}, None, True),
        (None, {"tierwise_cache": "off"}, True),
        (None, {"tierwise_cache": False}, True),
        ({"x-tierwise-cache": "on"}, {"tierwise_cache": "off"}, False),  # the header wins
        (None, None, False),
    ],
)
def test_opt_out(headers: dict | None, metadata: dict | None, off: bool) -> None:
    assert opted_out(headers, metadata) is off


@pytest.mark.parametrize(
    ("cached", "asked", "same"),
    [
        ("What is the capital of France?", "hey, what is the capital of france? thanks", True),
        ("What was the GDP of Japan in 2023?", "What was the GDP of Japan in 2024?", False),
        ("What is the capital of France?", "What is the capital of Germany?", False),
        ("Is coffee healthy?", "Is coffee not healthy?", False),
        ("Compare resistance and resistance per length", "Compare resistance and voltage per length", False),
    ],
)
def test_the_lexical_guard(cached: str, asked: str, same: bool) -> None:
    assert same_question(terms(cached), terms(asked)) is same


async def test_the_memory_store_is_bounded_and_expires(monkeypatch: pytest.MonkeyPatch) -> None:
    cache = ResponseCache(CacheConfig(exact={"ttl_s": 10, "max_entries": 2}), state_url="memory://")
    keys = [
        cache_key(
            {"model": "auto", "messages": [{"role": "user", "content": str(i)}]},
            scope="g",
            policy_version="p",
        )
        for i in range(3)
    ]
    for key in keys:
        await cache.put(key, ANSWER, model="m", cost_usd=0.1)
    assert await cache.get(keys[0]) is None  # evicted: least recently used
    hit = await cache.get(keys[2])
    assert hit is not None and hit.kind == "exact" and hit.saved_usd == 0.1
    import tierwise.cache as module

    now = module.time.monotonic()
    monkeypatch.setattr(module.time, "monotonic", lambda: now + 11)
    assert await cache.get(keys[2]) is None


async def test_a_semantic_hit_needs_the_same_scope() -> None:
    cache = ResponseCache(CacheConfig(exact=None, semantic={"threshold": 0.8}), state_url="memory://")
    asked = {"model": "auto", "messages": ASK}
    close = {
        "model": "auto",
        "messages": [ASK[0], {"role": "user", "content": "what is the capital of France"}],
    }
    await cache.put(cache_key(asked, scope="tenant:a", policy_version="p"), ANSWER, model="m", cost_usd=0.1)
    hit = await cache.get(cache_key(close, scope="tenant:a", policy_version="p"))
    assert hit is not None and hit.kind == "semantic" and hit.similarity is not None and hit.similarity >= 0.8
    assert await cache.get(cache_key(close, scope="tenant:b", policy_version="p")) is None


def test_hit_chunks_rebuild_the_answer() -> None:
    collector = StreamCollector()
    for chunk in hit_chunks(ANSWER):
        collector.add(chunk)
    rebuilt = collector.completion()
    assert rebuilt is not None
    assert rebuilt["choices"] == ANSWER["choices"] and rebuilt["usage"] == ANSWER["usage"]


def test_a_redis_cache_needs_a_redis_state_store() -> None:
    config = fleet_config({"cheap": "http://x", "backup": "http://x", "strong": "http://x"}, ledger="none")
    config["cache"] = {"exact": {"backend": "redis"}}
    with pytest.raises(ConfigError, match=r"cache\.exact\.backend: redis shares the state store's Redis"):
        parse_config(config)
    config["cache"] = {"semantic": {"threshold": 1.5}}
    with pytest.raises(ConfigError, match="threshold"):
        parse_config(config)
