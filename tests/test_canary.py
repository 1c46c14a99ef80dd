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


async def _run_with_labels(
    guard: Canary, rng: random.Random, *, loss: dict[str, float], score: dict[str, float], n: int
) -> tuple[int | None, object]:
    """Both arms answer ``n`` requests each, equal in escalations and errors; a third of the answers get
    a judged verdict (lost with probability ``loss[arm]``) and a third a 0/1 feedback score (1 with
    probability ``score[arm]``). The request at which the guard rolled the canary back, and its check."""
    for i in range(1, n + 1):
        for arm in ("stable", "canary"):
            check = await guard.observe(row(arm, escalated=rng.random() < 0.1))
            if check is not None:
                return i, check
            if rng.random() < 1 / 3:
                await guard.observe_verdict(
                    arm, "loss" if rng.random() < loss[arm] else rng.choice(["win", "tie"])
                )
            if rng.random() < 1 / 3:
                await guard.observe_feedback(arm, float(rng.random() < score[arm]))
    return None, None


async def test_a_canary_the_judge_finds_worse_is_rolled_back_once_it_has_enough_labels() -> None:
    guard = canary(MemoryState(), guard={"escalation_rate": None, "error_rate": None, "min_labels": 60})
    at, check = await _run_with_labels(
        guard,
        random.Random(3),
        loss={"stable": 0.10, "canary": 0.45},
        score={"stable": 0.8, "canary": 0.8},
        n=2000,
    )
    assert at is not None and 100 <= at <= 400, at  # past min_samples and ~60 verdicts, not long after
    assert check.metric == "judge_losses" and check.breached  # type: ignore[attr-defined]
    assert "of " in str(check) and await guard.flag() == ROLLED_BACK
    figures = (await guard.status())["arms"]
    assert figures["canary"]["judge_loss_rate"] > figures["stable"]["judge_loss_rate"] + 0.2


async def test_a_canary_whose_feedback_falls_is_rolled_back() -> None:
    guard = canary(
        MemoryState(), guard={"escalation_rate": None, "error_rate": None, "judge_loss_rate": None}
    )
    at, check = await _run_with_labels(
        guard,
        random.Random(4),
        loss={"stable": 0.1, "canary": 0.1},
        score={"stable": 0.85, "canary": 0.5},
        n=2000,
    )
    assert at is not None and at <= 400, at
    assert check.metric == "feedback" and check.breached  # type: ignore[attr-defined]
    assert "canary mean 0." in str(check)
    figures = (await guard.status())["arms"]
    assert figures["canary"]["feedback_mean"] < figures["stable"]["feedback_mean"] - 0.2


@pytest.mark.parametrize("seed", range(5))
async def test_equal_labels_never_roll_a_canary_back(seed: int) -> None:
    guard = canary(MemoryState())
    at, check = await _run_with_labels(
        guard,
        random.Random(seed),
        loss={"stable": 0.3, "canary": 0.3},
        score={"stable": 0.7, "canary": 0.7},
        n=3000,
    )
    assert at is None, check
    status = await guard.status()
    assert {c["metric"] for c in status["checks"]} == {"escalated", "errors", "judge_losses", "feedback"}
    assert status["arms"]["canary"]["judged"] > 800 and status["arms"]["canary"]["feedback"] > 800


async def test_label_checks_wait_for_min_labels_in_both_arms() -> None:
    guard = canary(MemoryState(), min_samples=10, guard={"min_labels": 30})
    for _ in range(20):
        await guard.observe(row("stable"))
        await guard.observe(row("canary"))
        await guard.observe_verdict("canary", "loss")  # every canary answer lost, but only 20 verdicts
        await guard.observe_verdict("stable", "win")
    assert {c.metric for c in await guard.checks()} == {"escalated", "errors"}
    assert await guard.flag() == RUNNING
    for _ in range(10):
        await guard.observe_verdict("canary", "loss")
        await guard.observe_verdict("stable", "win")
    check = await guard.guard()
    assert check is not None and check.metric == "judge_losses" and await guard.flag() == ROLLED_BACK


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
