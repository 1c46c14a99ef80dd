"""Shadow calls (policy.shadow) end to end: the openai SDK against the gateway on fake upstreams."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from tests.harness import Stack, fleet_config, start_stack
from tierwise.config import parse_config
from tierwise.errors import ConfigError
from tierwise.ledger import SqliteLedger
from tierwise.report import summarize

CLASSIFY = [{"role": "user", "content": "Classify the sentiment of this review: 'Great battery.'"}]
CODE = [{"role": "user", "content": "Write a Python function that reverses a linked list."}]


def _stack(tmp_path: Path, **shadow: Any) -> Stack:
    ledger = f"sqlite:///{tmp_path / 'config-ledger.db'}"
    policy = {
        "retry": {"attempts": 1, "backoff_s": 0.01},
        "shadow": {"model": "exec-1", "share": 1.0, "timeout_s": 5, **shadow},
    }
    return start_stack(tmp_path, policy=policy, storage={"ledger": ledger, "capture_prompts": True})


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    s = _stack(tmp_path, answer="text")
    yield s
    s.close()


def _ask(stack: Stack, messages: list[dict[str, str]], **kwargs: Any) -> Any:
    with openai.OpenAI(base_url=stack.base_url, api_key="k", max_retries=0) as client:
        return client.chat.completions.with_raw_response.create(model="auto", messages=messages, **kwargs)


def _settled(stack: Stack) -> tuple[list[Any], list[Any]]:
    """Rows and feedback once every shadow call in flight has finished."""
    assert stack.router.shadow is not None
    stack.loop.run(stack.router.shadow.aclose())
    return stack.rows(), stack.loop.run(stack.router.ledger.fetch_feedback())


def test_a_shadow_answer_that_agrees_labels_the_served_one_1(stack: Stack) -> None:
    stack.upstreams["cheap"].reply = "Positive."
    stack.upstreams["strong"].reply = "positive"
    raw = _ask(stack, CLASSIFY)
    request_id = raw.headers["x-tierwise-request-id"]
    assert raw.headers["x-tierwise-model"] == "draft-1"
    assert raw.parse().choices[0].message.content == "Positive."  # the response is never touched
    rows, feedback = _settled(stack)
    request, shadow = rows[0], rows[1]
    assert shadow.id == f"{request_id}.shadow" and shadow.decision["layer"] == "shadow"
    assert shadow.decision["of"] == request_id and shadow.final_model == "exec-1"
    assert [(a.model, a.purpose, a.status) for a in shadow.attempts] == [("exec-1", "shadow", "ok")]
    assert shadow.cost_usd > 0 and shadow.prompt is None
    assert request.cost_usd == pytest.approx(sum(a.cost_usd for a in request.attempts))  # not charged here
    [label] = feedback
    assert (label.request_id, label.score, label.source) == (request_id, 1.0, "shadow")
    assert label.comment == "shadow exec-1 agrees with draft-1"
    sent = stack.upstreams["strong"].requests[-1]  # the same request, on the Anthropic wire
    assert sent["messages"][-1]["content"][0]["text"] == CLASSIFY[0]["content"]
    report = summarize(rows, feedback)
    assert report["requests"] == 1  # the shadow call is not a request …
    assert report["shadow"] == {
        "calls": 1,
        "cost_usd": pytest.approx(shadow.cost_usd),  # … its cost is reported apart
        "agreement": {"draft-1": {"agree": 1, "disagree": 0}},
        "judge_cost_usd": 0.0,  # no judge configured
        "judged_by_task": {},
        "judged_by_policy_version": {},
    }


def test_a_shadow_answer_that_disagrees_labels_it_0(stack: Stack) -> None:
    stack.upstreams["cheap"].reply = "Negative."
    stack.upstreams["strong"].reply = "Positive: the reviewer likes the battery."
    raw = _ask(stack, CLASSIFY)
    _, feedback = _settled(stack)
    assert [(f.request_id, f.score) for f in feedback] == [(raw.headers["x-tierwise-request-id"], 0.0)]


def test_no_shadow_for_the_shadow_model_itself_nor_for_streams(stack: Stack) -> None:
    assert _ask(stack, CODE).headers["x-tierwise-model"] == "exec-1"
    with openai.OpenAI(base_url=stack.base_url, api_key="k", max_retries=0) as client:
        list(client.chat.completions.create(model="auto", messages=CLASSIFY, stream=True))
    rows, feedback = _settled(stack)
    assert len(rows) == 2 and not any(r.decision.get("layer") == "shadow" for r in rows)
    assert feedback == []


def test_a_failed_shadow_call_is_logged_and_labels_nothing(stack: Stack) -> None:
    stack.upstreams["strong"].fault("500")
    _ask(stack, CLASSIFY)
    rows, feedback = _settled(stack)
    shadow = rows[-1]
    assert shadow.decision["layer"] == "shadow" and shadow.status == "error" and shadow.http_status == 502
    assert shadow.attempts[0].purpose == "shadow" and shadow.attempts[0].status != "ok"
    assert feedback == []


def test_closing_the_gateway_waits_for_shadow_calls_in_flight(tmp_path: Path) -> None:
    stack = _stack(tmp_path)
    stack.upstreams["strong"].delay_s = 0.5
    _ask(stack, CLASSIFY)
    ledger = stack.router.ledger
    stack.close()  # while the shadow call is still waiting on its upstream
    assert isinstance(ledger, SqliteLedger)
    reader = SqliteLedger(ledger.path)
    assert len(asyncio.run(reader.fetch_feedback())) == 1
    assert [r.decision.get("layer") for r in asyncio.run(reader.fetch())][-1] == "shadow"


def test_shadow_config_is_checked() -> None:
    doc = fleet_config(dict.fromkeys(("cheap", "backup", "strong"), "http://127.0.0.1:9/v1"), ledger="none")
    doc["policy"] = {"shadow": {"model": "exec-1", "share": 0.1}}
    with pytest.raises(ConfigError, match=r"policy\.shadow: its calls and labels are kept in the ledger"):
        parse_config(doc)
    doc["storage"] = {"ledger": "sqlite:///x.db"}
    doc["policy"] = {"shadow": {"model": "gpt-9", "share": 0}}
    with pytest.raises(ConfigError) as info:
        parse_config(doc)
    assert "policy.shadow.share: must be > 0" in str(info.value)


def _judge_prefers(word: str):  # type: ignore[no-untyped-def]
    """A judge that reads its prompt and prefers the answer containing ``word``, whichever slot it is in."""

    def reply(body: dict[str, Any]) -> str:
        prompt = body["messages"][-1]["content"]
        a = prompt.split("[Answer A]")[1].split("[Answer B]")[0]
        return "A" if word in a else "B"

    return reply


@pytest.mark.parametrize(("preferred", "verdict", "score"), [("cheap", "win", 1.0), ("strong", "loss", 0.0)])
def test_a_judged_shadow_compares_blind_in_both_orders(
    tmp_path: Path, preferred: str, verdict: str, score: float
) -> None:
    stack = _stack(tmp_path, answer="text", judge={"model": "review-1", "timeout_s": 5})
    try:
        stack.upstreams["backup"].reply_for = _judge_prefers(preferred)
        for _ in range(4):
            assert _ask(stack, CLASSIFY).headers["x-tierwise-model"] == "draft-1"
        rows, feedback = _settled(stack)
        judge_prompts = [r["messages"][-1]["content"] for r in stack.upstreams["backup"].requests]
    finally:
        stack.close()
    assert len(judge_prompts) == 8  # two orders per request
    assert all("draft-1" not in p and "exec-1" not in p for p in judge_prompts)  # blind
    judged = [f for f in feedback if f.source == "judge"]
    assert [f.score for f in judged] == [score] * 4
    assert all(f"draft-1 {verdict} against exec-1" in (f.comment or "") for f in judged)
    shadows = [r for r in rows if r.decision.get("layer") == "shadow"]
    assert all(sum(a.purpose == "judge" and a.cost_usd > 0 for a in r.attempts) == 2 for r in shadows)
    summary = summarize(rows, feedback)
    by_task = summary["shadow"]["judged_by_task"]["classify"]
    assert (by_task["judged"], by_task["wins" if verdict == "win" else "losses"]) == (4, 4)
    assert by_task["no_worse_share"] == (1.0 if verdict == "win" else 0.0)
    lo, hi = by_task["no_worse_ci95"]
    assert 0 <= lo <= by_task["no_worse_share"] <= hi <= 1 and hi - lo > 0.3  # 4 samples: a wide interval
    assert by_task["cost_share"] < 1  # the cheap answers cost less than the baseline's
    assert summary["shadow"]["judge_cost_usd"] > 0
    assert summary["requests"] == 4  # shadow and judge calls are not requests


def test_a_judge_whose_verdict_flips_with_the_order_is_a_tie(tmp_path: Path) -> None:
    stack = _stack(tmp_path, answer="text", judge={"model": "review-1", "timeout_s": 5})
    try:
        stack.upstreams["backup"].reply = "A"  # always the first slot: position bias
        _ask(stack, CLASSIFY)
        _, feedback = _settled(stack)
    finally:
        stack.close()
    assert [f.score for f in feedback if f.source == "judge"] == [0.5]
