"""The tierwise command: route and report, as a user runs them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.harness import run_cli

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = str(ROOT / "examples" / "tierwise.yaml")


def test_route_explain_needs_no_keys_and_calls_nothing() -> None:
    result = run_cli("route", "--config", EXAMPLE, "--explain", "Summarize this thread in 3 bullets")
    assert result.returncode == 0, result.stderr
    assert "model    deepseek-v4-pro" in result.stdout
    assert "rule cheap-task" in result.stdout
    assert "deepseek-v4-pro → glm-5.2" in result.stdout


def test_route_explain_json_and_hints() -> None:
    result = run_cli("route", "--config", EXAMPLE, "--explain", "hi", "--risk", "critical", "--json")
    decision = json.loads(result.stdout)["decision"]
    assert decision["rule"] == "critical" and decision["chain"][0] == "claude-sonnet-4.6"


def test_route_takes_the_prompt_as_an_argument_or_on_stdin() -> None:
    question = "What is DNS?"
    for args in (["--json", question], [question, "--json"], ["--explain", question, "--json"]):
        result = run_cli("route", "--config", EXAMPLE, *args)
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout)["features"]["task"] == "qa"
    piped = subprocess.run(
        [sys.executable, "-m", "tierwise.cli", "route", "--config", EXAMPLE, "--json", "-"],
        input="Write a Rust function that reverses a string",
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert piped.returncode == 0, piped.stderr
    assert json.loads(piped.stdout)["features"]["task"] == "code"
    empty = subprocess.run(
        [sys.executable, "-m", "tierwise.cli", "route", "--config", EXAMPLE],
        input="",
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert empty.returncode == 2 and "no prompt" in empty.stderr


def test_bad_config_exits_2_naming_the_field(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(Path(EXAMPLE).read_text().replace("input_per_mtok: 0.435", "input_per_mtok: -1"))
    result = run_cli("route", "--config", str(bad), "--explain", "x")
    assert result.returncode == 2
    assert "models[0].price.input_per_mtok: must be ≥ 0" in result.stderr


def test_serve_without_key_names_the_variable(tmp_path: Path) -> None:
    result = run_cli("serve", "--config", EXAMPLE, "--port", "1")
    assert result.returncode == 2
    assert "api_key_env: DEEPSEEK_API_KEY is not set" in result.stderr


def test_report_on_empty_and_missing_ledger(tmp_path: Path) -> None:
    result = run_cli("report", "--ledger", f"sqlite:///{tmp_path}/none.db", "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["requests"] == 0


def test_route_explain_says_when_the_classifier_would_be_asked(tmp_path: Path) -> None:
    config = tmp_path / "classified.yaml"
    config.write_text(
        Path(EXAMPLE).read_text().replace("policy:\n", "policy:\n  classifier: {model: deepseek-v4-pro}\n", 1)
    )
    chat = run_cli("route", "--config", str(config), "--explain", "hey, I had the strangest dream last night")
    assert chat.returncode == 0, chat.stderr
    assert "layer    default" in chat.stdout
    assert "classify deepseek-v4-pro would be asked which tier this needs (not asked here)" in chat.stdout
    asked = run_cli("route", "--config", str(config), "--explain", "hey", "--json")
    assert json.loads(asked.stdout)["classifier_asked"] == "deepseek-v4-pro"
    # A rule decided: the gateway would not ask.
    ruled = run_cli("route", "--config", str(config), "--explain", "hi", "--risk", "critical", "--json")
    assert json.loads(ruled.stdout)["classifier_asked"] is None
