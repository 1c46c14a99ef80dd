"""The judged sample against fake upstreams on 127.0.0.1: verdicts in both orders, the spend bound."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.estimate.conftest import run
from tests.fakes.upstream import FakeUpstream, _Answer
from tests.harness import LoopThread, fleet_config


class PreferringJudge(FakeUpstream):
    """A judge that prefers whichever answer contains ``preferred``, in either position."""

    def __init__(self, preferred: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.preferred = preferred

    def _answer(self, body: dict[str, Any], *, tools: list[str], choice: Any, last_user: str) -> _Answer:
        answer_a = last_user.split("[Answer A]", 1)[1].split("[Answer B]", 1)[0]
        return _Answer("A" if self.preferred in answer_a else "B", "stop")


@pytest.fixture
def fleet(tmp_path: Path) -> Any:
    """Fake upstreams (cheap: draft-1, backup: review-1, the judge; strong: exec-1) in a loop thread."""
    loop = LoopThread()
    started: dict[str, FakeUpstream] = {}

    def start(judge: FakeUpstream) -> tuple[Path, dict[str, FakeUpstream]]:
        async def up() -> None:
            started["cheap"] = await FakeUpstream(kind="openai", reply="cheap answer here").start()
            started["backup"] = await judge.start()
            started["strong"] = await FakeUpstream(kind="anthropic", reply="strong answer here").start()

        loop.run(up())
        config = tmp_path / "fleet.yaml"
        urls = {name: upstream.url for name, upstream in started.items()}
        config.write_text(yaml.safe_dump(fleet_config(urls, ledger="none")))
        return config, started

    yield start

    async def down() -> None:
        for upstream in started.values():
            await upstream.stop()

    loop.run(down())
    loop.stop()


def logs(tmp_path: Path, *, answered: bool) -> Path:
    """Eight requests the playbook sends to draft-1, served today by exec-1 (with its answer or not)."""
    path = tmp_path / "requests.jsonl"
    lines = []
    for i in range(8):
        task = "Classify the sentiment" if i % 2 else "Summarize this note"
        message = {"role": "user", "content": f"{task}: #{i}"}
        record: dict[str, Any] = {"model": "exec-1", "messages": [message]}
        if answered:
            record["response"] = {
                "model": "exec-1",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": "logged answer"}}],
                "usage": {"prompt_tokens": 12, "completion_tokens": 30},
            }
        lines.append(json.dumps(record))
    path.write_text("\n".join(lines) + "\n")
    return path


def estimate(capsys: Any, config: Path, log: Path, *extra: str) -> tuple[int, dict[str, Any], str]:
    status, stdout, stderr = run(
        capsys, "estimate", "--config", str(config), "--logs", str(log), "--clusters", "0", "--json",
        "--judge", "review-1", *extra,
    )  # fmt: skip
    return status, json.loads(stdout) if stdout.strip() else {}, stderr


def test_a_judge_preferring_the_cheap_answer_in_both_orders_is_a_win(
    tmp_path: Path, fleet: Any, capsys: Any
) -> None:
    config, upstreams = fleet(PreferringJudge("cheap", kind="openai"))
    status, report, stderr = estimate(
        capsys, config, logs(tmp_path, answered=False), "--sample", "3", "--max-spend", "1"
    )
    assert status == 0, stderr
    sample = report["sample"]
    assert set(sample["per_type"]) == {"classify", "summarize"}
    for row in sample["per_type"].values():
        assert (row["judged"], row["win"], row["tie"], row["loss"]) == (3, 3, 0, 0)
        assert row["routed_to"] == "draft-1" and row["no_worse_ci95"][0] > 0.4
    # No answer was logged: each sampled request also got a fresh answer of the always-strongest model.
    assert sample["calls"] == {"sample": 6, "baseline": 6, "judge": 12}
    assert len(upstreams["cheap"].requests) == 6 and len(upstreams["strong"].requests) == 6
    assert len(upstreams["backup"].requests) == 12
    judged = upstreams["backup"].requests[0]
    assert "cheap answer here" in str(judged) and "strong answer here" in str(judged)
    assert 0 < sample["spent_usd"] <= 1


def test_a_verdict_that_flips_with_the_order_is_a_tie(tmp_path: Path, fleet: Any, capsys: Any) -> None:
    config, upstreams = fleet(FakeUpstream(kind="openai", reply="A"))  # always the first answer
    log = logs(tmp_path, answered=True)
    status, report, _ = estimate(capsys, config, log, "--sample", "2", "--max-spend", "1")
    assert status == 0
    for row in report["sample"]["per_type"].values():
        assert (row["win"], row["tie"], row["loss"]) == (0, 2, 0)
    assert "baseline" not in report["sample"]["calls"], "the logged answer is the baseline"
    assert not upstreams["strong"].requests


def test_the_spend_bound_stops_before_a_call_that_could_exceed_it(
    tmp_path: Path, fleet: Any, capsys: Any
) -> None:
    config, upstreams = fleet(PreferringJudge("cheap", kind="openai"))
    max_spend = 0.0039  # a request reserves ~$0.0036 and spends ~$0.0002: the bound stops the second
    status, report, _ = estimate(
        capsys, config, logs(tmp_path, answered=True), "--sample", "4", "--max-spend", str(max_spend)
    )
    assert status == 0
    sample = report["sample"]
    judged = sum(row["judged"] for row in sample["per_type"].values())
    assert 0 < judged < 8 and sample["stopped"].startswith("stopped before a call")
    assert sample["spent_usd"] <= max_spend, sample
    calls = sum(len(u.requests) for u in upstreams.values())
    assert calls == sum(sample["calls"].values()) == 3 * judged
    # A bound below one request's reservation makes no call at all.
    for upstream in upstreams.values():
        upstream.requests.clear()
    log = logs(tmp_path, answered=True)
    _, report, _ = estimate(capsys, config, log, "--sample", "4", "--max-spend", "0.0001")
    assert report["sample"]["calls"] == {} and report["sample"]["spent_usd"] == 0
    assert not any(u.requests for u in upstreams.values())


def test_sample_needs_a_spend_bound_and_a_fleet_judge(tmp_path: Path, config_file: Path, capsys: Any) -> None:
    log = logs(tmp_path, answered=True)
    status, _, stderr = run(
        capsys, "estimate", "--config", str(config_file), "--logs", str(log),
        "--sample", "2", "--judge", "review-1",
    )  # fmt: skip
    assert status == 2 and "--max-spend" in stderr
    status, _, stderr = run(
        capsys, "estimate", "--config", str(config_file), "--logs", str(log), "--clusters", "0",
        "--sample", "2", "--judge", "gpt-judge", "--max-spend", "1",
    )  # fmt: skip
    assert status == 2 and "--judge: unknown model 'gpt-judge'" in stderr
