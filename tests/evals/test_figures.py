"""``scripts/figures.py``: a README quote rendered from report.json, checked digit for digit."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("tierwise_figures", ROOT / "scripts" / "figures.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


figures = _load()

REPORT = {
    "policies": {
        "rules": {
            "quality": 0.79612,
            "apgr": 0.5149,
            "ci95": {"apgr": [0.5071, 0.5233]},
            "savings_at_95": None,
        },
        "always-strongest": {"quality": 0.8},
    }
}
QUOTE = figures.Quote(
    "demo",
    "| MMLU | rules | {} | {} [{}, {}] |",
    (
        ("policies/rules/quality", "{:.3f}"),
        ("policies/rules/apgr", "{:.3f}"),
        ("policies/rules/ci95/apgr/0", "{:.3f}"),
        ("policies/rules/ci95/apgr/1", "{:.3f}"),
    ),
)


def test_an_exact_quote_passes_even_when_the_prose_wraps() -> None:
    readme = "intro\n| MMLU | rules | 0.796 | 0.515\n[0.507, 0.523] |\n"
    assert figures.check(QUOTE, {"demo": REPORT}, readme) == []


def test_one_digit_off_names_the_figure_and_both_values() -> None:
    readme = "| MMLU | rules | 0.796 | 0.516 [0.507, 0.523] |"
    assert figures.check(QUOTE, {"demo": REPORT}, readme) == [
        "demo: policies/rules/apgr is 0.515 in report.json, 0.516 in the README"
    ]


def test_a_missing_quote_or_path_is_reported() -> None:
    (missing,) = figures.check(QUOTE, {"demo": REPORT}, "no table here")
    assert "the README has no text like" in missing and "0.515 [0.507, 0.523]" in missing
    bad = figures.Quote("demo", "x {}", (("policies/nope/apgr", "{:.3f}"),))
    (problem,) = figures.check(bad, {"demo": REPORT}, "x 1")
    assert "no 'nope'" in problem


def test_ratios_other_runs_and_missing_values() -> None:
    reports = {"demo": REPORT, "other": {"policies": {"random": {"apgr": 0.4926}}}}
    assert figures.value_at(
        reports, "demo", "ratio:policies/rules/quality:policies/always-strongest/quality"
    ) == (pytest.approx(0.99515))
    assert figures.value_at(reports, "demo", "@other:policies/random/apgr") == 0.4926
    assert figures.render(figures.value_at(reports, "demo", "policies/rules/savings_at_95"), "{:.1%}") == "—"


def test_every_quote_names_a_run_and_has_one_format_per_placeholder() -> None:
    names = {run.name for run in figures.RUNS}
    for quote in figures.QUOTES:
        assert quote.run in names
        assert quote.text.count("{}") == len(quote.figures)


def test_reuse_checks_reports_on_disk(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text("| MMLU (14,037) | rules | 0.796 |")
    for run in figures.RUNS:
        (tmp_path / run.name).mkdir()
        (tmp_path / run.name / "report.json").write_text(json.dumps(REPORT))
    # Every quote but none of the shipped README's text: each one is reported, and the exit code says so.
    assert figures.main(["--reuse", "--all", "--out", str(tmp_path), "--readme", str(readme)]) == 1
