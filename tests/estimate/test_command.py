"""``tierwise estimate`` as a user runs it: outputs, exit statuses, the shipped example."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.estimate.conftest import run

ROOT = Path(__file__).resolve().parents[2]
LINES = [
    '{"model": "exec-1", "messages": [{"role": "user", "content": "Classify the sentiment: I love it"}],'
    ' "usage": {"prompt_tokens": 100, "completion_tokens": 10}}',
    '{"model": "exec-1", "messages": [{"role": "user", "content": "Write a python function to sort"}],'
    ' "usage": {"prompt_tokens": 200, "completion_tokens": 300}}',
    '{"model": "exec-1", "messages": "oops"',
    '{"model": "exec-1", "messages": [{"role": "user", "content": "Summarize: the build is green"}]}',
]


def test_malformed_line_is_named_and_the_rest_counted(
    tmp_path: Path, config_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    logs = tmp_path / "requests.jsonl"
    logs.write_text("\n".join(LINES) + "\n")
    out = tmp_path / "out"
    status, stdout, stderr = run(
        capsys, "estimate", "--config", str(config_file), "--logs", str(logs), "--out", str(out),
        "--clusters", "0",
    )  # fmt: skip
    assert status == 1
    assert "skipped 1 malformed record(s); the other 3 were counted" in stderr
    assert f"{logs}:3: not JSON" in stderr
    assert "you would have saved" in stdout and "cost projection" in stdout
    report = json.loads((out / "report.json").read_text())
    assert report["logs"]["requests"] == 3 and report["logs"]["skipped"] == 1
    assert report["logs"]["formats"] == {str(logs): "openai-chat"}
    assert (out / "estimate.png").stat().st_size > 0


def test_json_output_and_clean_exit(
    tmp_path: Path, config_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    logs = tmp_path / "requests.jsonl"
    logs.write_text("\n".join(LINES[:2]) + "\n")
    status, stdout, _ = run(
        capsys, "estimate", "--config", str(config_file), "--logs", str(logs), "--json", "--clusters", "0"
    )
    assert status == 0
    report = json.loads(stdout)
    assert report["kind"] == "cost projection" and report["total"]["requests"] == 2
    assert {row["type"] for row in report["by_type"]} == {"classify", "code"}


def test_unknown_format_and_bad_options(
    tmp_path: Path, config_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("hello\n")
    status, _, stderr = run(capsys, "estimate", "--config", str(config_file), "--logs", str(notes))
    assert status == 1 and f"tierwise: {notes}: not a known log format" in stderr
    status, _, stderr = run(
        capsys, "estimate", "--config", str(config_file), "--logs", str(notes), "--sample", "2"
    )
    assert status == 2 and "--sample needs --judge" in stderr


def test_shipped_example(capsys: pytest.CaptureFixture[str]) -> None:
    status, stdout, stderr = run(
        capsys, "estimate", "--config", str(ROOT / "examples/tierwise.yaml"),
        "--logs", str(ROOT / "examples/requests.jsonl"), "--clusters", "0",
    )  # fmt: skip
    assert status == 0, stderr
    assert "you would have saved" in stdout and "300 requests" in stdout
    assert "300 by tokens × the price of the config's always-strongest model (gpt-5.5)" in stdout


def test_shipped_example_is_what_its_script_writes(tmp_path: Path) -> None:
    import subprocess
    import sys

    out = tmp_path / "requests.jsonl"
    subprocess.run(
        [sys.executable, str(ROOT / "scripts/build_estimate_example.py"), "--out", str(out)],
        check=True,
        capture_output=True,
    )
    assert out.read_bytes() == (ROOT / "examples/requests.jsonl").read_bytes()
