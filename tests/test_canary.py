"""The canary's guard: a worse canary is rolled back soon after min_samples, an equal one never is, and
the rollout's state is shared through the state store."""

from __future__ import annotations

import json
import random
import uuid
from pathlib import Path

import pytest
import yaml

from tests.harness import fleet_config, run_cli
from tierwise.canary import PROMOTED, ROLLED_BACK, RUNNING, Canary
from tierwise.config import CanaryConfig
from tierwise.ledger.base import Attempt, LedgerRow
from tierwise.state.memory import MemoryState


def row(arm: str, *, escalated: bool = False, failed: bool = False) -> LedgerRow:
    attempts = [Attempt("draft-1", "cheap", "ok")]
    final = "draft-1"
    if escalated:
        attempts = [
            Attempt("draft-1", "cheap", "rejected", error="cascade: says-backup: no match"),
            Attempt("review-1", "backup", "ok"),
        ]
        final = "review-1"
    return LedgerRow(
        id="r",
        ts=0.0,
        requested_model="auto",
        stream=False,
        features={"task": "classify"},
        decision={"chain": ["draft-1", "review-1"], "tier": "draft", "arm": arm},
        policy_version="v",
        status="error" if failed else "ok",
        http_status=502 if failed else 200,
        final_model=None if failed else final,
        tier=None if failed else "draft",
        attempts=attempts,
    )


def canary(state: MemoryState, **config: object) -> Canary:
    settings = CanaryConfig.model_validate({"policy": {}, "share": 0.5, "min_samples": 100, **config})
    return Canary(settings, state, stable_version="stable-v", canary_version="canary-v")


async def test_a_canary_that_escalates_far_more_is_rolled_back_soon_after_min_samples() -> None:
    rng = random.Random(7)
    guard = canary(MemoryState())
    rolled_back_at = None
    for i in range(1, 1001):
        await guard.observe(row("stable", escalated=rng.random() < 0.05))
        check = await guard.observe(row("canary", escalated=rng.random() < 0.30))
        if check is not None:
            rolled_back_at = i
            assert check.metric == "escalated" and check.breached
            assert "canary 3" in str(check) or "canary 2" in str(check)  # evidence: ~30% vs ~5%
            break
    assert rolled_back_at is not None and rolled_back_at <= 110  # at the first look past min_samples
    assert await guard.flag() == ROLLED_BACK
    assert await guard.arm("any user") == "stable"  # everyone is back on the stable policy


@pytest.mark.parametrize("seed", range(5))
async def test_an_equal_canary_is_never_rolled_back(seed: int) -> None:
    rng = random.Random(seed)
    guard = canary(MemoryState())
    for _ in range(3000):  # 300 looks of the guard at two equally noisy arms
        assert (
            await guard.observe(row("stable", escalated=rng.random() < 0.10, failed=rng.random() < 0.01))
            is None
        )
        assert (
            await guard.observe(row("canary", escalated=rng.random() < 0.10, failed=rng.random() < 0.01))
            is None
        )
    assert await guard.flag() == RUNNING
    status = await guard.status()
    assert status["counts"]["canary"]["requests"] == 3000 and not any(c["breached"] for c in status["checks"])


async def test_assignment_is_sticky_and_splits_by_share() -> None:
    guard = canary(MemoryState(), share=0.2)
    arms = [await guard.arm(f"user-{i}") for i in range(2000)]
    assert 0.17 < arms.count("canary") / len(arms) < 0.23
    assert [await guard.arm(f"user-{i}") for i in range(50)] == arms[:50]  # the same user, the same arm
    assert guard.sticky_value({"user": "ada"}, None, None, "req_1") == "ada"
    assert guard.sticky_value({}, None, None, "req_1") == "req_1"  # nothing to stick to: per request
    header = canary(MemoryState(), sticky_by="header:x-team")
    assert header.sticky_value({}, {"x-team": "search"}, None, "req_1") == "search"


async def test_the_rollout_state_is_shared_through_the_state_store() -> None:
    state = MemoryState()
    one, two = canary(state), canary(state)  # two replicas
    await one.set_flag(ROLLED_BACK, why="test")
    two._flag_read = float("-inf")  # past its cache
    assert await two.flag() == ROLLED_BACK
    await two.set_flag(PROMOTED, why="the canary is better")
    one._flag_read = float("-inf")
    assert await one.flag() == PROMOTED and await one.arm("anyone") == "canary"


def test_a_canary_of_a_canary_is_a_config_error() -> None:
    with pytest.raises(ValueError, match="cannot have a canary of its own"):
        CanaryConfig.model_validate({"policy": {"canary": {"policy": {}, "share": 0.1}}, "share": 0.1})


def test_the_canary_command_promotes_and_rolls_back_through_redis(tmp_path: Path) -> None:
    import redis

    try:
        redis.Redis(host="127.0.0.1", port=6379, socket_connect_timeout=0.5).ping()
    except redis.exceptions.ConnectionError:
        pytest.skip("needs Redis on 127.0.0.1:6379 (CI starts it)")
    doc = fleet_config({n: "http://127.0.0.1:9/v1" for n in ("cheap", "backup", "strong")}, ledger="none")
    doc["storage"] = {"ledger": "none", "state": "redis://127.0.0.1:6379/0"}
    # A rule named afresh each run: a new canary version, so no earlier run's rollout is in Redis.
    rule = {"name": f"run-{uuid.uuid4().hex[:12]}", "when": {"task": {"in": ["code"]}}, "tier": "execution"}
    doc["policy"]["canary"] = {"policy": {"rules": [rule]}, "share": 0.1, "min_samples": 50}
    path = tmp_path / "tierwise.yaml"
    path.write_text(yaml.safe_dump(doc))
    status = run_cli("canary", "status", "--config", str(path), "--json")
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["state"] == "running"
    rolled = run_cli("canary", "rollback", "--config", str(path))
    assert rolled.returncode == 0 and "rolled back" in rolled.stdout
    promoted = run_cli("canary", "promote", "--config", str(path), "--json")
    assert json.loads(promoted.stdout)["state"] == "promoted"  # a promotion outranks a rollback
