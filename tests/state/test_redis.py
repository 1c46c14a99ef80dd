"""The Redis state against the real server (skipped, saying why, when none is reachable)."""

from __future__ import annotations

import asyncio
import logging
import os
import uuid
from collections.abc import AsyncIterator

import pytest

aioredis = pytest.importorskip("redis.asyncio", reason="the Redis state needs the redis package")

from redis.exceptions import ConnectionError as RedisConnectionError  # noqa: E402

from tierwise.state import redis as redis_state  # noqa: E402
from tierwise.state.redis import RedisState  # noqa: E402

URL = os.environ.get("TIERWISE_TEST_REDIS", "redis://127.0.0.1:6379/0")
NOWHERE = "redis://127.0.0.1:1/0"  # nothing listens on port 1


@pytest.fixture
async def prefix() -> AsyncIterator[str]:
    """A key prefix unique to the test; its keys are deleted afterwards."""
    client = aioredis.from_url(URL, socket_connect_timeout=1, socket_timeout=1)
    try:
        await client.ping()
    except (OSError, aioredis.RedisError) as exc:
        await client.aclose()
        pytest.skip(f"no Redis at {RedisState(URL).where}: {type(exc).__name__}: {exc}")
    name = f"tierwise-test:{uuid.uuid4().hex[:12]}:"
    yield name
    try:
        keys = [key async for key in client.scan_iter(match=f"{name}*")]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()


@pytest.fixture
async def replicas(prefix: str) -> AsyncIterator[tuple[RedisState, RedisState]]:
    """Two RedisState objects on one prefix, as two gateway replicas would hold."""
    one, two = RedisState(URL, prefix=prefix), RedisState(URL, prefix=prefix)
    yield one, two
    await one.close()
    await two.close()


async def test_replicas_see_each_others_cooldowns(replicas: tuple[RedisState, RedisState]) -> None:
    one, two = replicas
    assert await one.record_failure("cheap-a", threshold=1, cooldown_s=60) is True
    assert await two.cooling(["cheap-a", "strong-b"]) == frozenset({"cheap-a"})
    assert await one.cooling(["strong-b"]) == frozenset()


async def test_breaker_opens_exactly_at_the_threshold_across_replicas(
    replicas: tuple[RedisState, RedisState],
) -> None:
    one, two = replicas
    assert await one.record_failure("m", threshold=3, cooldown_s=60) is False
    assert await two.record_failure("m", threshold=3, cooldown_s=60) is False
    assert await one.cooling(["m"]) == frozenset()
    assert await two.record_failure("m", threshold=3, cooldown_s=60) is True
    assert await one.cooling(["m"]) == frozenset({"m"})
    # Failures of calls already in flight when it opened do not open it again.
    assert await one.record_failure("m", threshold=3, cooldown_s=60) is False


async def test_simultaneous_failures_open_the_breaker_once(replicas: tuple[RedisState, RedisState]) -> None:
    one, two = replicas
    results = await asyncio.gather(
        *(state.record_failure("m", threshold=5, cooldown_s=60) for state in [one, two] * 10)
    )
    assert results.count(True) == 1
    assert await two.cooling(["m"]) == frozenset({"m"})


async def test_cooldown_expires(replicas: tuple[RedisState, RedisState]) -> None:
    one, two = replicas
    assert await one.record_failure("m", threshold=1, cooldown_s=0.2) is True
    assert await two.cooling(["m"]) == frozenset({"m"})
    await asyncio.sleep(0.4)
    assert await two.cooling(["m"]) == frozenset()


async def test_success_resets_the_count_for_every_replica(replicas: tuple[RedisState, RedisState]) -> None:
    one, two = replicas
    await one.record_failure("m", threshold=3, cooldown_s=60)
    await one.record_failure("m", threshold=3, cooldown_s=60)
    await two.record_success("m")
    assert await one.record_failure("m", threshold=3, cooldown_s=60) is False
    assert await one.cooling(["m"]) == frozenset()


async def test_an_ejection_is_seen_by_every_replica_and_never_extended(
    replicas: tuple[RedisState, RedisState],
) -> None:
    one, two = replicas
    assert await one.eject("m", 0.3) is True
    assert await two.cooling(["m", "other"]) == frozenset({"m"})
    # Replicas judging the same model eject it together: the first wins, the rest do not extend it.
    assert await two.eject("m", 60) is False
    await asyncio.sleep(0.45)
    assert await one.cooling(["m"]) == frozenset()
    assert await two.eject("m", 60) is True
    assert await one.cooling(["m"]) == frozenset({"m"})


async def test_simultaneous_ejections_open_the_breaker_once(replicas: tuple[RedisState, RedisState]) -> None:
    one, two = replicas
    results = await asyncio.gather(*(state.eject("m", 60) for state in [one, two] * 5))
    assert results.count(True) == 1


async def test_cooling_asks_about_a_whole_chain_in_one_round_trip(
    prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    state = RedisState(URL, prefix=prefix)
    await state.record_failure("c", threshold=1, cooldown_s=60)
    await state.record_failure("e", threshold=1, cooldown_s=60)
    calls: list[tuple[str, ...]] = []
    real = state._client.execute_command

    async def counting(*args: object, **kwargs: object) -> object:
        calls.append(tuple(str(a) for a in args[:1]))
        return await real(*args, **kwargs)

    monkeypatch.setattr(state._client, "execute_command", counting)
    assert await state.cooling(["a", "b", "c", "d", "e"]) == frozenset({"c", "e"})
    assert calls == [("MGET",)]
    await state.close()


async def test_spend_is_shared(replicas: tuple[RedisState, RedisState]) -> None:
    one, two = replicas
    assert await one.spend("team-a") == 0.0
    assert await one.add_spend("team-a", 0.25) == pytest.approx(0.25)
    assert await two.add_spend("team-a", 0.5) == pytest.approx(0.75)
    assert await one.spend("team-a") == pytest.approx(0.75)


async def test_unreachable_redis_fails_open(caplog: pytest.LogCaptureFixture) -> None:
    state = RedisState(NOWHERE)
    assert await state.cooling(["a", "b"]) == frozenset()
    assert await state.record_failure("a", threshold=1, cooldown_s=60) is False
    assert await state.eject("a", 60) is False
    await state.record_success("a")
    assert await state.cooling(["a"]) == frozenset()
    # Spend seen meanwhile is kept in memory.
    assert await state.add_spend("team-a", 0.5) == 0.5
    assert await state.add_spend("team-a", 0.25) == 0.75
    assert await state.spend("team-a") == 0.75
    await state.close()
    warnings = [r for r in caplog.records if r.name == "tierwise.state" and r.levelno == logging.WARNING]
    assert len(warnings) == 1  # rate-limited: one line, not one per call
    assert "127.0.0.1:1/0 is unreachable" in warnings[0].getMessage()
    assert any("could not be saved" in r.getMessage() for r in caplog.records if r.levelno == logging.ERROR)


async def test_unreachable_redis_keeps_retrying(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(redis_state, "RETRY_AFTER_S", 0.0)
    state = RedisState(NOWHERE)
    calls = 0
    real = state._client.mget

    async def counting(*args: object, **kwargs: object) -> object:
        nonlocal calls
        calls += 1
        return await real(*args, **kwargs)

    monkeypatch.setattr(state._client, "mget", counting)
    for _ in range(3):
        assert await state.cooling(["a"]) == frozenset()
    assert calls == 3
    await state.close()


async def test_spend_added_during_an_outage_reaches_redis_later(
    prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(redis_state, "RETRY_AFTER_S", 0.0)
    state = RedisState(URL, prefix=prefix)
    assert await state.add_spend("team-a", 1.0) == pytest.approx(1.0)
    real = state._client.incrbyfloat

    async def down(*args: object, **kwargs: object) -> object:
        raise RedisConnectionError("Connection reset by peer")

    monkeypatch.setattr(state._client, "incrbyfloat", down)
    assert await state.add_spend("team-a", 0.5) == pytest.approx(1.5)
    monkeypatch.setattr(state._client, "incrbyfloat", real)
    assert await state.add_spend("team-a", 0.25) == pytest.approx(1.75)
    other = RedisState(URL, prefix=prefix)
    assert await other.spend("team-a") == pytest.approx(1.75)
    await other.close()
    await state.close()


async def test_close_pushes_spend_kept_during_an_outage(prefix: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(redis_state, "RETRY_AFTER_S", 0.0)
    state = RedisState(URL, prefix=prefix)
    real = state._client.incrbyfloat

    async def down(*args: object, **kwargs: object) -> object:
        raise RedisConnectionError("Connection reset by peer")

    monkeypatch.setattr(state._client, "incrbyfloat", down)
    assert await state.add_spend("team-b", 2.0) == 2.0
    monkeypatch.setattr(state._client, "incrbyfloat", real)
    await state.close()
    other = RedisState(URL, prefix=prefix)
    assert await other.spend("team-b") == pytest.approx(2.0)
    await other.close()


async def test_admission_is_atomic_across_replicas(replicas: tuple[RedisState, RedisState]) -> None:
    from tierwise.state import Counter

    one, two = replicas
    rpm = Counter("rate:key:a", 1, 25, 60)
    results = await asyncio.gather(*((one if i % 2 else two).admit([rpm]) for i in range(60)))
    assert sum(r.refused is None for r in results) == 25  # never one more, whichever replica asked


async def test_budget_admission_reserves_and_settles(replicas: tuple[RedisState, RedisState]) -> None:
    from tierwise.state import Counter

    one, two = replicas
    reserve = Counter("budget:t:daily:1", 0.4, 1.0, 60, strict=False)
    assert (await one.admit([reserve])).refused is None
    assert (await two.admit([reserve])).refused is None
    assert (await one.admit([reserve])).refused is None  # 0.8 < 1.0: still open
    refused = await two.admit([reserve, Counter("rate:x", 1, 10, 60)])
    assert refused.refused == 0 and refused.values == (pytest.approx(1.2), 0.0)
    await one.adjust([Counter("budget:t:daily:1", -0.35, 1.0, 60)] * 3)  # settled below the estimate
    admitted = await two.admit([reserve])
    assert admitted.refused is None and admitted.values[0] == pytest.approx(0.15)


async def test_keys_and_revocation_are_shared(replicas: tuple[RedisState, RedisState]) -> None:
    one, two = replicas
    await one.put_key("k1", "sha256:ab", '{"id": "k1"}')
    assert await two.key_by_hash("sha256:ab") == '{"id": "k1"}'
    assert await two.list_keys() == ['{"id": "k1"}']
    assert await two.key_by_hash("sha256:cd") is None
    await one.revoke("k1")
    assert await two.is_revoked("k1") is True


async def test_admission_fails_open_with_local_counters_and_keys_fail_closed() -> None:
    from tierwise.errors import StateUnavailable
    from tierwise.state import Counter

    state = RedisState(NOWHERE, timeout_s=0.2)
    rpm = Counter("rate", 1, 2, 60)
    assert [(await state.admit([rpm])).refused for _ in range(3)] == [None, None, 0]  # counted locally
    with pytest.raises(StateUnavailable):
        await state.key_by_hash("sha256:ab")
    assert await state.is_revoked("k1") is False
    await state.close()
