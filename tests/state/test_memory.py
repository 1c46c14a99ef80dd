"""The in-process state: breaker thresholds and cooldowns, spend counters."""

from __future__ import annotations

import asyncio

from tierwise.state import MemoryState


async def test_breaker_opens_exactly_at_the_threshold() -> None:
    state = MemoryState()
    opened = [await state.record_failure("m", threshold=3, cooldown_s=60) for _ in range(3)]
    assert opened == [False, False, True]
    assert await state.cooling(["m", "other"]) == frozenset({"m"})
    # Failures of calls already in flight when it opened neither re-open nor extend it.
    assert await state.record_failure("m", threshold=3, cooldown_s=60) is False


async def test_cooldown_expires() -> None:
    state = MemoryState()
    assert await state.record_failure("m", threshold=1, cooldown_s=0.2) is True
    assert await state.cooling(["m"]) == frozenset({"m"})
    await asyncio.sleep(0.3)
    assert await state.cooling(["m"]) == frozenset()
    # After the cooldown a fresh run of failures is needed.
    assert await state.record_failure("m", threshold=2, cooldown_s=60) is False
    assert await state.record_failure("m", threshold=2, cooldown_s=60) is True


async def test_success_resets_the_consecutive_count() -> None:
    state = MemoryState()
    await state.record_failure("m", threshold=3, cooldown_s=60)
    await state.record_failure("m", threshold=3, cooldown_s=60)
    await state.record_success("m")
    assert await state.record_failure("m", threshold=3, cooldown_s=60) is False
    assert await state.cooling(["m"]) == frozenset()


async def test_old_failures_fall_out_of_the_window() -> None:
    state = MemoryState(failure_window_s=0.1)
    await state.record_failure("m", threshold=2, cooldown_s=60)
    await asyncio.sleep(0.2)
    assert await state.record_failure("m", threshold=2, cooldown_s=60) is False


async def test_models_are_independent_and_states_do_not_share() -> None:
    one, two = MemoryState(), MemoryState()
    await one.record_failure("a", threshold=1, cooldown_s=60)
    assert await one.cooling(["a", "b"]) == frozenset({"a"})
    assert await two.cooling(["a", "b"]) == frozenset()
    assert await one.cooling([]) == frozenset()


async def test_spend_adds_up_per_key() -> None:
    state = MemoryState()
    assert await state.spend("team-a") == 0.0
    assert await state.add_spend("team-a", 0.25) == 0.25
    assert await state.add_spend("team-a", 0.5) == 0.75
    assert await state.add_spend("team-b", 1.0) == 1.0
    assert await state.spend("team-a") == 0.75
    await state.close()


async def test_eject_opens_once_without_extending_and_ends_on_the_clock() -> None:
    now = [100.0]
    state = MemoryState(clock=lambda: now[0])
    assert await state.eject("m", 10) is True
    assert await state.cooling(["m", "other"]) == frozenset({"m"})
    now[0] = 105.0
    # Another replica's (or a late) ejection neither stacks on nor extends an open one.
    assert await state.eject("m", 60) is False
    now[0] = 110.0
    assert await state.cooling(["m"]) == frozenset()
    assert await state.eject("m", 5) is True
    now[0] = 114.9
    assert await state.cooling(["m"]) == frozenset({"m"})


async def test_eject_and_consecutive_failures_share_one_breaker() -> None:
    now = [0.0]
    state = MemoryState(clock=lambda: now[0])
    await state.record_failure("m", threshold=2, cooldown_s=60)
    assert await state.eject("m", 10) is True
    assert await state.record_failure("m", threshold=2, cooldown_s=60) is False  # open: not counted
    now[0] = 10.0
    # The ejection dropped the count it interrupted: a fresh run of failures is needed.
    assert await state.record_failure("m", threshold=2, cooldown_s=60) is False


async def test_admit_is_all_or_nothing() -> None:
    from tierwise.state import Counter

    state = MemoryState()
    rpm = Counter("rate", 1, 2, 60)
    budget = Counter("budget", 0.0, 1.0, 60, strict=False)
    assert (await state.admit([rpm, budget])).refused is None
    assert (await state.admit([rpm, budget])).refused is None
    refused = await state.admit([rpm, budget])
    assert refused.refused == 0 and refused.values == (2.0, 0.0)
    await state.adjust([Counter("budget", 1.0, 1.0, 60)])
    # A spent budget refuses; the rate counter it was checked with takes nothing.
    assert (await state.admit([Counter("rate2", 1, 5, 60), budget])).refused == 1
    assert (await state.admit([Counter("rate2", 5, 5, 60)])).refused is None


async def test_counters_expire() -> None:
    from tierwise.state import Counter

    now = [0.0]
    state = MemoryState(clock=lambda: now[0])
    await state.adjust([Counter("c", 3.0, 0, 10)])
    assert (await state.admit([Counter("c", 0, 1e9, 10)])).values == (3.0,)
    now[0] = 11.0
    assert (await state.admit([Counter("c", 0, 1e9, 10)])).values == (0.0,)


async def test_keys_and_revocation() -> None:
    state = MemoryState()
    await state.put_key("k1", "sha256:ab", '{"id": "k1"}')
    assert await state.key_by_hash("sha256:ab") == '{"id": "k1"}'
    assert await state.get_key("k1") == '{"id": "k1"}'
    assert await state.list_keys() == ['{"id": "k1"}']
    assert await state.is_revoked("k1") is False
    await state.revoke("k1")
    assert await state.is_revoked("k1") is True
