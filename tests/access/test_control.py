"""Access control over the in-process state: grants merge, budgets downgrade then block, limits refuse."""

from __future__ import annotations

from typing import Any

import pytest

from tests.policy.test_engine import fleet
from tierwise.access import Access, hash_secret
from tierwise.config import parse_config
from tierwise.errors import AccessDenied, BudgetExceeded, RateLimited
from tierwise.features import Features
from tierwise.policy.engine import PolicyEngine
from tierwise.state import MemoryState

NOON = 1_764_504_000.0  # 2025-11-30 12:00:00 UTC
CODE = Features(task="code", input_tokens=100, max_output_tokens=100)


def access_for(
    tenant: dict[str, Any], key: dict[str, Any] | None = None
) -> tuple[Access, PolicyEngine, list[float]]:
    config = parse_config(
        fleet(
            auth={"mode": "keys"},
            tenants={"t": tenant},
            keys=[{"id": "k", "tenant": "t", "hash": hash_secret("tw-k"), **(key or {})}],
        )
    )
    now = [NOON]
    return Access(config, MemoryState(), clock=lambda: now[0]), PolicyEngine(config), now


async def serve(
    access: Access, engine: PolicyEngine, features: Features = CODE, cost: float | None = None
) -> str:
    principal = await access.authenticate("tw-k")
    features, constraint = await access.admit(principal, features, "auto")
    decision = engine.decide(features, constraint=constraint)
    reservation = await access.reserve(principal, decision, features)
    if reservation is not None:
        await access.settle(reservation, reservation.estimate_usd if cost is None else cost)
    return decision.tier


async def test_a_key_narrows_its_tenants_grants() -> None:
    access, engine, _ = access_for({"allowed_tiers": ["draft", "review"]}, {"allowed_models": ["d1", "e1"]})
    principal = await access.authenticate("tw-k")
    assert principal.models == frozenset({"d1"})  # e1 is execution: the tenant does not grant it
    assert await serve(access, engine) == "draft"
    with pytest.raises(AccessDenied) as caught:
        await access.admit(principal, CODE, "r1")
    assert caught.value.status == 403 and "'r1'" in caught.value.message


async def test_budget_downgrades_then_blocks_until_the_day_ends() -> None:
    # Each code request costs 100 × 3 + 100 × 6 = 900 µUSD on e1: $0.0045 is five of them.
    access, engine, now = access_for({"budget": {"daily_usd": 0.0045, "downgrade_at": 0.5}})
    tiers = [await serve(access, engine) for _ in range(3)]
    assert tiers == ["execution", "execution", "execution"]  # 0.0027 spent after the third: 60%
    assert await serve(access, engine) == "draft"  # past 50%: downgraded, and drafts are cheap
    high = Features(task="code", input_tokens=100, max_output_tokens=100, quality="high")
    assert await serve(access, engine, high) == "execution"  # critical_hints: keep; 0.00366 spent
    assert await serve(access, engine, high) == "execution"  # admitted below the limit: 0.00456 spent
    with pytest.raises(BudgetExceeded) as caught:
        await serve(access, engine)
    assert caught.value.reset_at == NOON + 12 * 3600
    assert caught.value.retry_after == pytest.approx(12 * 3600)
    now[0] += 12 * 3600  # a new day
    assert await serve(access, engine) == "execution"


async def test_critical_hints_can_be_downgraded_too() -> None:
    access, engine, _ = access_for({"budget": {"monthly_usd": 1.0, "critical_hints": "downgrade"}})
    await access.state.adjust([])  # nothing yet
    principal = await access.authenticate("tw-k")
    reservation = await access.reserve(principal, engine.decide(CODE), CODE)
    assert reservation is not None
    await access.settle(reservation, 0.9)
    critical = Features(task="code", input_tokens=100, risk="critical")
    _, constraint = await access.admit(principal, critical, "auto")
    assert constraint.max_tier == "draft" and "monthly $1.00" in constraint.why


async def test_rate_limits_refuse_with_openai_headers() -> None:
    access, engine, now = access_for(
        {"rate_limits": {"tokens_per_minute": 500}}, {"rate_limits": {"requests_per_minute": 5}}
    )
    assert await serve(access, engine) == "execution"  # 200 tokens
    assert await serve(access, engine) == "execution"  # 400
    with pytest.raises(RateLimited) as caught:
        await serve(access, engine)
    assert "tenant t is limited to 500 tokens per minute" in caught.value.message
    assert caught.value.headers == {
        "x-ratelimit-limit-tokens": "500",
        "x-ratelimit-remaining-tokens": "100",
        "x-ratelimit-reset-tokens": "60s",
    }
    now[0] += 60
    assert await serve(access, engine) == "execution"


async def test_a_revoked_key_is_refused_at_once() -> None:
    access, _, _ = access_for({})
    await access.authenticate("tw-k")
    await access.keys.revoke("k")
    with pytest.raises(AccessDenied) as caught:
        await access.authenticate("tw-k")
    assert caught.value.status == 401 and "revoked" in caught.value.message


async def test_a_downgrade_stays_within_the_keys_grant() -> None:
    access, engine, _ = access_for({"budget": {"daily_usd": 1.0}}, {"allowed_tiers": ["review", "execution"]})
    principal = await access.authenticate("tw-k")
    reservation = await access.reserve(principal, engine.decide(CODE), CODE)
    assert reservation is not None
    await access.settle(reservation, 0.9)
    features, constraint = await access.admit(principal, CODE, "auto")
    assert constraint.max_tier == "review"  # the draft tier is not granted: the cheapest granted one
    assert engine.decide(features, constraint=constraint).chain == ("r1",)


async def test_a_budget_held_by_requests_in_flight_refuses_for_a_moment_only() -> None:
    access, engine, _ = access_for({"budget": {"daily_usd": 0.002}})
    principal = await access.authenticate("tw-k")
    held = [await access.reserve(principal, engine.decide(CODE), CODE) for _ in range(3)]  # 3 × 900 µUSD
    with pytest.raises(BudgetExceeded) as caught:
        await access.reserve(principal, engine.decide(CODE), CODE)
    assert caught.value.retry_after == 1.0 and caught.value.reset_at is None
    assert "held by requests in flight" in caught.value.message
    for reservation in held:
        assert reservation is not None
        await access.settle(reservation, 0.0001)  # they cost far less than their estimates
    assert await access.reserve(principal, engine.decide(CODE), CODE) is not None
    assert (await access.spent("tenant", "t"))["daily"] == pytest.approx(0.0003)
