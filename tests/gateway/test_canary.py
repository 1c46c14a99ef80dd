"""A canary policy over real HTTP: sticky arms named in every response and ledger row, and a worse
canary rolled back by its guard while the traffic keeps flowing."""

from __future__ import annotations

from pathlib import Path

import openai

from tests.harness import start_stack
from tierwise.canary import CHECK_EVERY, ROLLED_BACK, RUNNING

CLASSIFY = [{"role": "user", "content": "Classify the sentiment of this review: 'Great battery.'"}]


def _canary_stack(tmp_path: Path, canary_policy: dict) -> object:
    return start_stack(
        tmp_path,
        policy={
            "retry": {"attempts": 1},
            "canary": {
                "policy": {"retry": {"attempts": 1}, **canary_policy},
                "share": 0.5,
                "sticky_by": "header:x-user",
                "min_samples": 20,
            },
        },
    )


def test_a_worse_canary_is_rolled_back_by_its_guard(tmp_path: Path) -> None:
    # The canary verifies draft answers with a check they always fail: every canary request escalates.
    worse = {"cascade": {"verifiers": [{"kind": "regex", "name": "never", "pattern": "^never$"}]}}
    stack = _canary_stack(tmp_path, worse)
    try:
        arms = []
        with openai.OpenAI(base_url=stack.base_url, api_key="k", max_retries=0, timeout=20) as client:
            for i in range(120):
                raw = client.chat.completions.with_raw_response.create(
                    model="auto", messages=CLASSIFY, extra_headers={"x-user": f"user-{i}"}
                )
                arms.append((raw.headers["x-tierwise-canary-arm"], raw.headers["x-tierwise-model"]))
            # Sticky: the same user gets the same arm (while the canary runs).
        canary = stack.router.canary
        assert canary is not None
        assert stack.loop.run(canary.flag()) == ROLLED_BACK
        served_by_canary = [i for i, (arm, _) in enumerate(arms) if arm == "canary"]
        assert 20 <= len(served_by_canary) <= 20 + CHECK_EVERY  # caught at the first look past min_samples
        assert all(model == "review-1" for arm, model in arms if arm == "canary")  # escalated
        assert all(arm == "stable" for arm, _ in arms[served_by_canary[-1] + 1 :])  # then everyone stable
        rows = stack.rows()
        versions = {row.decision["arm"]: row.policy_version for row in rows}
        assert versions["canary"] == canary.version != versions["stable"] == stack.router.policy_version
        status = stack.loop.run(canary.status())
        assert status["state"] == "rolled back" and any(c["breached"] for c in status["checks"])
    finally:
        stack.close()  # type: ignore[attr-defined]


def test_an_equal_canary_keeps_running(tmp_path: Path) -> None:
    stack = _canary_stack(tmp_path, {})  # the same playbook under another version
    try:
        with openai.OpenAI(base_url=stack.base_url, api_key="k", max_retries=0, timeout=20) as client:
            first = {}
            for i in range(100):
                raw = client.chat.completions.with_raw_response.create(
                    model="auto", messages=CLASSIFY, extra_headers={"x-user": f"user-{i % 25}"}
                )
                arm = raw.headers["x-tierwise-canary-arm"]
                assert first.setdefault(i % 25, arm) == arm  # sticky by user
        canary = stack.router.canary
        assert canary is not None and stack.loop.run(canary.flag()) == RUNNING
        assert set(first.values()) == {"stable", "canary"}
    finally:
        stack.close()  # type: ignore[attr-defined]


def test_a_canary_its_users_grade_worse_is_rolled_back_by_their_feedback(tmp_path: Path) -> None:
    # Both arms route alike; only the clients' feedback (POST /v1/feedback) tells the canary is worse.
    stack = _canary_stack(tmp_path, {})
    guard = {"escalation_rate": None, "error_rate": None, "min_labels": 10}
    canary = stack.router.canary
    assert canary is not None
    canary.config = canary.config.model_copy(update={"guard": canary.config.guard.model_copy(update=guard)})
    try:
        arms = []
        with openai.OpenAI(base_url=stack.base_url, api_key="k", max_retries=0, timeout=20) as client:
            for i in range(120):
                raw = client.chat.completions.with_raw_response.create(
                    model="auto", messages=CLASSIFY, extra_headers={"x-user": f"user-{i}"}
                )
                arm = raw.headers["x-tierwise-canary-arm"]
                arms.append(arm)
                score = 0.0 if arm == "canary" else 1.0
                # The SDK's generic request path: it has no feedback method. A 4xx/5xx would raise.
                stored = client.post(
                    "/feedback",
                    body={"request_id": raw.headers["x-tierwise-request-id"], "score": score},
                    cast_to=object,
                )
                assert stored["score"] == score  # type: ignore[index]
        assert stack.loop.run(canary.flag()) == ROLLED_BACK
        assert 20 <= arms.count("canary") <= 20 + CHECK_EVERY  # the first look with enough of both
        status = stack.loop.run(canary.status())
        breached = [c for c in status["checks"] if c["breached"]]
        assert [c["metric"] for c in breached] == ["feedback"] and breached[0]["canary"] == 0.0
        assert status["arms"]["stable"]["feedback_mean"] == 1.0
        assert status["arms"]["canary"]["feedback"] >= 10
        assert status["arms"]["canary"]["cost_per_request_usd"] > 0
    finally:
        stack.close()  # type: ignore[attr-defined]
