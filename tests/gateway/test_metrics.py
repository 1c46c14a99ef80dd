"""Live proof over real HTTP: escalations per task type in `tierwise report --json` and in /metrics
agree with the ledger; the access log has one line per request and no prompt."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.harness import Stack, run_cli, start_stack
from tierwise.answer_path import answer_path

CLASSIFY = [{"role": "user", "content": "Classify the sentiment of this review: 'Great battery.'"}]
CODE = [{"role": "user", "content": "Write a Python function that reverses a linked list."}]


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    # Draft answers ("cheap answer here") fail the regex, so the cascade escalates them to review-1.
    s = start_stack(
        tmp_path,
        policy={
            "retry": {"attempts": 1},
            "cascade": {
                "verifiers": [{"kind": "regex", "name": "says-backup", "pattern": "backup"}],
                "tiers": ["draft"],
            },
        },
    )
    yield s
    s.close()


def scrape(stack: Stack) -> dict[tuple[str, frozenset], float]:
    async def get() -> str:
        async with (
            aiohttp.ClientSession() as http,
            http.get(stack.base_url.removesuffix("/v1") + "/metrics") as r,
        ):
            assert r.status == 200 and r.headers["Content-Type"].startswith("text/plain")
            return await r.text()

    samples = {}
    for family in text_string_to_metric_families(stack.loop.run(get())):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def total(samples: dict, name: str, **labels: str) -> float:
    wanted = set(labels.items())
    return sum(v for (n, lbls), v in samples.items() if n == name and wanted <= lbls)


def test_escalations_per_task_agree_in_report_metrics_and_ledger(
    stack: Stack, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="tierwise.access")
    with openai.OpenAI(base_url=stack.base_url, api_key="k", max_retries=0, timeout=20) as client:
        for _ in range(3):  # escalated for quality: draft's answer fails the regex
            raw = client.chat.completions.with_raw_response.create(model="auto", messages=CLASSIFY)
            assert raw.headers["x-tierwise-model"] == "review-1"
        stack.upstreams["cheap"].fault("500")
        for _ in range(2):  # fell back for availability: draft is down
            raw = client.chat.completions.with_raw_response.create(model="auto", messages=CLASSIFY)
            assert raw.headers["x-tierwise-model"] == "review-1"
        for _ in range(2):  # the first choice answers
            raw = client.chat.completions.with_raw_response.create(model="auto", messages=CODE)
            assert raw.headers["x-tierwise-model"] == "exec-1"
    rows = stack.rows()
    kinds = [answer_path(row).kind for row in rows]
    assert (
        kinds.count("escalated") == 3 and kinds.count("fell_back") == 2 and kinds.count("first_choice") == 2
    )

    report = run_cli("report", "--ledger", stack.ledger_url, "--json")
    assert report.returncode == 0, report.stderr
    by_task = json.loads(report.stdout)["escalation_by_task"]
    assert by_task["classify"]["requests"] == 5
    assert (by_task["classify"]["escalated"], by_task["classify"]["fell_back"]) == (3, 2)
    assert by_task["classify"]["escalated_share"] == pytest.approx(0.6)
    assert by_task["code"]["first_choice_share"] == 1.0
    assert by_task["classify"]["reasons"]["escalated"] == {"draft->review: says-backup": 3}

    samples = scrape(stack)
    assert total(samples, "tierwise_escalations_total", task="classify", from_tier="draft", to_tier="review",
                 reason="says-backup") == 3  # fmt: skip
    assert total(samples, "tierwise_fallbacks_total", task="classify", reason="UpstreamUnavailable") == 2
    assert total(samples, "tierwise_requests_total") == len(rows) == 7
    assert total(samples, "tierwise_requests_total", task="code", model="exec-1", status="ok") == 2
    assert total(samples, "tierwise_cascade_verdicts_total", verdict="rejected", verifier="says-backup") == 3
    assert (
        total(samples, "tierwise_upstream_errors_total", provider="cheap", error="UpstreamUnavailable") == 2
    )
    assert total(samples, "tierwise_cost_usd_total") == pytest.approx(sum(r.cost_usd for r in rows))
    assert total(samples, "tierwise_counterfactual_cost_usd_total") == pytest.approx(
        sum(r.counterfactual_cost_usd for r in rows)
    )
    assert total(samples, "tierwise_overhead_seconds_count") == 7
    assert not any("request_id" in dict(labels) for _, labels in samples)  # bounded labels

    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == "tierwise.access"]
    assert sorted(line["request_id"] for line in lines) == sorted(row.id for row in rows)
    assert "Classify the sentiment" not in caplog.text and "Great battery" not in caplog.text


def test_metrics_can_be_turned_off(tmp_path: Path) -> None:
    stack = start_stack(tmp_path, server={"metrics": False, "access_log": "off"})
    try:

        async def get() -> int:
            async with (
                aiohttp.ClientSession() as http,
                http.get(stack.base_url.removesuffix("/v1") + "/metrics") as r,
            ):
                return r.status

        assert stack.loop.run(get()) == 404
        assert stack.router.metrics is None
    finally:
        stack.close()
