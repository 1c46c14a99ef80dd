"""The small-LLM classifier through the gateway, driven by the official openai SDK.

The fleet's cheapest model, ``draft-1`` on the ``cheap`` fake upstream, is the grader.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from tests.harness import Stack, start_stack

CHAT = [{"role": "user", "content": "hey, I had the strangest dream last night"}]
CLASSIFY = [{"role": "user", "content": "Classify the sentiment of this review: 'Great battery.'"}]
POLICY = {
    "retry": {"attempts": 2, "backoff_s": 0.01, "max_retry_after_s": 2},
    "cooldown": {"failures": 3, "seconds": 30},
    "classifier": {"model": "draft-1", "timeout_ms": 300},
}


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    s = start_stack(tmp_path, policy=POLICY)
    s.upstreams["cheap"].reply = "execution"
    yield s
    s.close()


def test_classifier_answer_routes_and_is_charged(stack: Stack, client: openai.OpenAI) -> None:
    raw = client.chat.completions.with_raw_response.create(model="auto", messages=CHAT)
    assert raw.parse().choices[0].message.content == "strong answer here"
    assert raw.headers["x-tierwise-model"] == "exec-1"
    assert raw.headers["x-tierwise-tier"] == "execution"
    assert raw.headers["x-tierwise-reason"] == "classifier: execution -> execution"  # headers are ASCII
    grader = stack.upstreams["cheap"].requests
    assert len(grader) == 1 and grader[0]["model"] == "cheap-model" and grader[0]["max_tokens"] == 16
    assert "strangest dream" in grader[0]["messages"][-1]["content"]
    (row,) = stack.rows()
    assert row.decision["layer"] == "classifier" and row.final_model == "exec-1"
    classifier, answer = row.attempts
    assert (classifier.purpose, classifier.model, classifier.status) == ("classifier", "draft-1", "ok")
    expected = (classifier.input_tokens * 0.5 + classifier.output_tokens * 1.0) / 1e6
    assert classifier.cost_usd == pytest.approx(expected) and classifier.cost_usd > 0
    assert (answer.purpose, answer.model) == ("answer", "exec-1")
    assert row.cost_usd == pytest.approx(classifier.cost_usd + answer.cost_usd)
    assert float(raw.headers["x-tierwise-cost-usd"]) == pytest.approx(row.cost_usd, abs=1e-8)
    # the ledger's token counts are the answer's; the classifier's are in its attempt
    assert row.input_tokens == answer.input_tokens


def test_second_identical_request_hits_the_cache(stack: Stack, client: openai.OpenAI) -> None:
    client.chat.completions.create(model="auto", messages=CHAT)
    raw = client.chat.completions.with_raw_response.create(model="auto", messages=CHAT, temperature=0.5)
    assert raw.headers["x-tierwise-model"] == "exec-1"
    assert raw.headers["x-tierwise-reason"] == "classifier (cached): execution -> execution"
    assert len(stack.upstreams["cheap"].requests) == 1  # the grader was asked once
    first, second = stack.rows()
    assert [a.purpose for a in second.attempts] == ["answer"]
    assert second.cost_usd == pytest.approx(second.attempts[0].cost_usd)
    assert second.cost_usd < first.cost_usd


def test_slow_classifier_falls_back_to_the_rules_within_the_timeout(
    stack: Stack, client: openai.OpenAI
) -> None:
    stack.upstreams["cheap"].delay_s = 2.0
    started = time.perf_counter()
    raw = client.chat.completions.with_raw_response.create(model="auto", messages=CHAT)
    elapsed = time.perf_counter() - started
    assert elapsed < 1.0  # 300 ms of classifier timeout, then the answer
    assert raw.headers["x-tierwise-model"] == "review-1"  # the default of the built-in rules
    assert raw.headers["x-tierwise-reason"].endswith("; classifier: no answer (UpstreamTimeout)")
    (row,) = stack.rows()
    assert row.decision["layer"] == "default"
    timeout, answer = row.attempts
    assert (timeout.purpose, timeout.status, timeout.cost_usd) == ("classifier", "UpstreamTimeout", 0.0)
    assert 300 <= timeout.latency_ms < 700 and answer.model == "review-1"


def test_unparsed_reply_leaves_the_decision_to_the_rules(stack: Stack, client: openai.OpenAI) -> None:
    stack.upstreams["cheap"].reply = "What a strangest dream! Tell me more"  # it answered instead
    raw = client.chat.completions.with_raw_response.create(model="auto", messages=CHAT)
    assert raw.headers["x-tierwise-model"] == "review-1"
    (row,) = stack.rows()
    assert row.attempts[0].status == "unparsed" and row.attempts[0].cost_usd > 0  # an answer is paid for
    assert "strangest" not in str(row.attempts[0].error)  # the ledger never holds prompt text
    assert row.cost_usd == pytest.approx(sum(a.cost_usd for a in row.attempts))


def test_rules_and_hints_skip_the_classifier(stack: Stack, client: openai.OpenAI) -> None:
    stack.upstreams["cheap"].reply = "cheap answer here"
    raw = client.chat.completions.with_raw_response.create(model="auto", messages=CLASSIFY)
    assert raw.headers["x-tierwise-reason"].startswith("rule cheap-task:")
    client.chat.completions.create(model="auto", messages=CHAT, extra_headers={"x-tierwise-tier": "draft"})
    client.chat.completions.create(model="review-1", messages=CHAT)
    assert len(stack.upstreams["cheap"].requests) == 2  # two draft answers, no classifier call
    assert all(a.purpose == "answer" for row in stack.rows() for a in row.attempts)


async def test_streamed_request_is_classified_and_charged(stack: Stack) -> None:
    async with openai.AsyncOpenAI(base_url=stack.base_url, api_key="k", max_retries=0) as client:
        stream = await client.chat.completions.create(model="auto", messages=CHAT, stream=True)
        text = ""
        async for chunk in stream:
            if chunk.choices:
                text += chunk.choices[0].delta.content or ""
    assert text == "strong answer here"
    (row,) = stack.rows()
    assert row.stream and [a.purpose for a in row.attempts] == ["classifier", "answer"]
    assert row.cost_usd == pytest.approx(sum(a.cost_usd for a in row.attempts))
