"""The dashboard in a real browser: headless Chromium (Debian's chromium and chromium-driver, driven
over the WebDriver protocol by tests/fakes/browser.py) loads /dashboard from a gateway whose ledger holds
real traffic, and the numbers it shows must equal the ledger's. The screenshot goes to the test's
directory, or to docs/dashboard.png with TIERWISE_SCREENSHOT=1 (how the README's picture is made)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from tests.fakes.browser import CHROMEDRIVER, CHROMIUM, Browser
from tests.harness import Stack, start_stack
from tierwise.report import summarize

ROOT = Path(__file__).resolve().parents[2]
CLASSIFY = [{"role": "user", "content": "Classify the sentiment of this review: 'Great battery.'"}]
CODE = [{"role": "user", "content": "Write a Python function that reverses a linked list."}]
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None or CHROMEDRIVER is None,
    reason="needs Debian's chromium and chromium-driver (.ci/run installs them)",
)


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    s = start_stack(
        tmp_path,
        policy={
            "retry": {"attempts": 1},
            "cascade": {"verifiers": [{"kind": "regex", "name": "says-backup", "pattern": "backup"}]},
        },
    )
    with openai.OpenAI(base_url=s.base_url, api_key="k", max_retries=0, timeout=20) as client:
        for _ in range(3):  # escalated: the draft answer fails the regex
            client.chat.completions.create(model="auto", messages=CLASSIFY)
        for _ in range(4):
            client.chat.completions.create(model="auto", messages=CODE)
        s.upstreams["cheap"].fault("500")
        for _ in range(2):  # fell back: draft is down
            client.chat.completions.create(model="auto", messages=CLASSIFY)
    yield s
    s.close()


LOADED = "return document.body.dataset.loaded === 'true'"
TEXT = "return document.querySelector(arguments[0])?.textContent ?? null"
DECISION_IDS = "return [...document.querySelectorAll('#decisions tbody tr[data-id]')].map(r => r.dataset.id)"


@needs_chromium
def test_the_dashboard_shows_the_ledgers_numbers(stack: Stack, tmp_path: Path) -> None:
    rows = stack.rows()
    expected = summarize(rows)
    with Browser() as browser:
        browser.get(stack.base_url.removesuffix("/v1") + "/dashboard")
        browser.wait_for(LOADED)

        def text(selector: str) -> str | None:
            return browser.run(TEXT, selector)

        assert text("#status").endswith("updated " + text("#status").rsplit("updated ", 1)[-1])
        assert text("#kpi-requests") == str(expected["requests"]) == "9"
        assert text("#kpi-cost") == f"${expected['cost_usd']:.4f}"
        assert text("#kpi-counterfactual") == f"${expected['counterfactual_usd']:.4f}"
        assert text("#kpi-errors") == "0"
        assert text("#policy-version") == stack.router.policy_version
        by_task = expected["escalation_by_task"]["classify"]
        assert (
            text('#escalation tr[data-task="classify"] .escalated')
            == f"{by_task['escalated_share'] * 100:.1f}%"
        )
        assert (
            text('#escalation tr[data-task="classify"] .fell-back')
            == f"{by_task['fell_back_share'] * 100:.1f}%"
        )
        for model, group in expected["by_model"].items():
            assert text(f'#models tr[data-model="{model}"] .requests') == str(group["requests"])
            assert text(f'#models tr[data-model="{model}"] .cost') == f"{group['cost_usd']:.4f}"
        assert sorted(browser.run(DECISION_IDS)) == sorted(row.id for row in rows)
        assert browser.run("return document.querySelectorAll('#series rect').length") >= 1  # the chart

        # Search, as a person types it.
        browser.run(
            "const box = document.getElementById('search'); box.value = 'exec-1';"
            "box.dispatchEvent(new Event('input'));"
        )
        browser.wait_for("return document.querySelectorAll('#decisions tbody tr[data-id]').length === 4")
        cells = "#decisions tbody tr td:nth-child(3)"
        models = browser.run(f"return [...document.querySelectorAll('{cells}')].map(c => c.textContent)")
        assert set(models) == {"exec-1"}
        browser.run(
            "const box = document.getElementById('search'); box.value = '';"
            "box.dispatchEvent(new Event('input'));"
        )
        browser.wait_for("return document.querySelectorAll('#decisions tbody tr[data-id]').length === 9")
        target = (
            ROOT / "docs" / "dashboard.png"
            if os.environ.get("TIERWISE_SCREENSHOT")
            else tmp_path / "shot.png"
        )
        browser.screenshot(target)
    assert target.stat().st_size > 10_000


def test_the_dashboard_api_refuses_a_bad_window(stack: Stack) -> None:
    import urllib.error
    import urllib.request

    base = stack.base_url.removesuffix("/v1")
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(f"{base}/dashboard/api/summary?since=abc", timeout=5)
    info.value.close()
    assert info.value.code == 400
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(f"{base}/dashboard/api/decisions?since=10&until=5", timeout=5)
    info.value.close()
    assert info.value.code == 400


@needs_chromium
def test_the_dashboard_shows_each_canary_arm_and_its_guard(tmp_path: Path) -> None:
    # The canary's draft answers always fail a verifier: it escalates every request and is rolled back.
    never = {"cascade": {"verifiers": [{"kind": "regex", "name": "never", "pattern": "^never$"}]}}
    s = start_stack(
        tmp_path,
        policy={
            "retry": {"attempts": 1},
            "canary": {"policy": never, "share": 0.5, "sticky_by": "header:x-user", "min_samples": 10},
        },
    )
    try:
        with openai.OpenAI(base_url=s.base_url, api_key="k", max_retries=0, timeout=20) as client:
            for i in range(60):
                raw = client.chat.completions.with_raw_response.create(
                    model="auto", messages=CLASSIFY, extra_headers={"x-user": f"user-{i}"}
                )
                score = 0.5 if raw.headers["x-tierwise-canary-arm"] == "canary" else 1.0
                client.post(
                    "/feedback",
                    body={"request_id": raw.headers["x-tierwise-request-id"], "score": score},
                    cast_to=object,
                )
        expected = summarize(s.rows(), s.loop.run(s.router.ledger.fetch_feedback(since=0)))
        assert set(expected["by_arm"]) == {"stable", "canary"}
        with Browser() as browser:
            browser.get(s.base_url.removesuffix("/v1") + "/dashboard")
            browser.wait_for(LOADED)

            def text(selector: str) -> str | None:
                return browser.run(TEXT, selector)

            assert text("#canary-rollout") == "rolled back"
            assert "BREACHED" in (text('#guard li[data-metric="escalated"]') or "")
            for arm, a in expected["by_arm"].items():
                row = f'#arms tr[data-arm="{arm}"]'
                assert text(f"{row} .requests") == str(a["requests"])
                assert text(f"{row} .cost") == f"{a['cost_per_request_usd']:.6f}"
                assert text(f"{row} .escalated") == f"{a['escalated_share'] * 100:.1f}%"
                assert text(f"{row} .graded") == str(a["graded"])
                assert text(f"{row} .score") == f"{a['mean_score']:.2f}"
            assert text('#arms tr[data-arm="canary"] .escalated') == "100.0%"
            assert text('#arms tr[data-arm="canary"] .score') == "0.50"
            arm_cells = "#versions tbody tr td:nth-child(2)"
            arms = browser.run(
                f"return [...document.querySelectorAll('{arm_cells}')].map(c => c.textContent)"
            )
            assert sorted(arms) == ["canary", "stable"]  # each policy version names its arm
            browser.screenshot(tmp_path / "canary.png")
    finally:
        s.close()
