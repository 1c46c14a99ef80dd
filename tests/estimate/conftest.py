"""Shared pieces of the estimate tests: the test fleet as a config file, and a way to run the command."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.harness import fleet_config
from tierwise.cli import main
from tierwise.config import Config, parse_config

# Nothing listens there: the projection never calls a model.
DEAD_URLS = {
    "cheap": "http://127.0.0.1:9/v1",
    "backup": "http://127.0.0.1:9/v1",
    "strong": "http://127.0.0.1:9",
}


def fleet(**overrides: Any) -> dict[str, Any]:
    """The test fleet: draft-1 ($0.5/$1 per M), review-1 ($1/$4), exec-1 ($3/$15, upstream strong-model)."""
    return fleet_config(DEAD_URLS, ledger="none", **overrides)


@pytest.fixture
def config() -> Config:
    return parse_config(fleet())


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "fleet.yaml"
    path.write_text(yaml.safe_dump(fleet()))
    return path


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """Run ``tierwise`` in this process; (exit status, stdout, stderr)."""
    status = main(list(args))
    captured = capsys.readouterr()
    return status, captured.out, captured.err
