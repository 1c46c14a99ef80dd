"""A short run of ``bench/faults.py``: a real ``tierwise serve`` over four fake upstream processes that fail
30% of their calls (429, 500, timeouts, resets, cut streams, malformed and empty 200s), restarted
gracefully under load, loses no answer, no fallback and no ledger row. The full run is 60 s of load."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.fakes.upstream import MIX_KINDS

ROOT = Path(__file__).resolve().parents[2]


def test_a_third_of_upstream_calls_failing_loses_nothing(tmp_path: Path) -> None:
    out = tmp_path / "faults.json"
    command = [
        sys.executable,
        "bench/faults.py",
        "--duration",
        "5",
        "--concurrency",
        "20",
        "--json",
        str(out),
    ]
    run = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=180)
    assert out.exists(), run.stdout[-3000:] + run.stderr[-3000:]
    summary = json.loads(out.read_text())
    report = run.stdout[-3000:]
    # The load and the faults really happened: about 30% of the upstream calls failed, streams and JSON
    # on three APIs were sent.
    assert summary["requests"] >= 50, report
    assert sum(summary["faults_injected"].values()) >= 0.15 * summary["upstream_calls"], report
    assert set(summary["faults_injected"]) <= set(MIX_KINDS), report
    assert all(sum(verdicts.values()) > 0 for verdicts in summary["verdicts_by_api"].values()), report
    assert summary["restart"]["done"] and summary["server_exit_codes"] == [0, 0], report
    # Nothing lost.
    verdicts = summary["verdicts"]
    assert summary["errors_with_fallback_left"] == 0, report
    for broken in ("cut_before_content", "truncated_done", "silent_cut", "wrong_content", "client_timeout"):
        assert verdicts.get(broken, 0) == 0, (broken, report)
    ledger = summary["ledger"]
    assert ledger["rows"] == ledger["answered_requests"] == summary["answered"], report
    assert (
        ledger["missing_rows"] == ledger["duplicated_rows"] == ledger["rows_of_requests_never_answered"] == 0
    )
    assert ledger["rows_with_another_status"] == ledger["rows_not_matching_request_id"] == 0, report
    assert summary["answered_200_without_request_id"] == 0, report
    assert run.returncode == 0 and summary["passed"], report
