"""Re-run every ``tierwise eval`` whose figures the README quotes, and check the README quotes them exactly.

    python scripts/figures.py [--all] [--reuse] [--only RUN,…] [--out out/figures]

Each ``Quote`` is a piece of README text with ``{}`` where figures stand, and for each figure the
path of its value in ``report.json`` and its format. The check renders the quote from the report and
requires that exact text in the README (whitespace collapsed, since prose wraps): one digit off fails,
and the message names the figure, what the report says and what the README says. Runs marked slow
(the two MMLU cross-validations, each about 25 minutes on two cores) are skipped unless ``--all``;
``--reuse`` checks against reports already in ``--out`` without running anything. Every run uses
the CLI's defaults (seed 0, 1,000 bootstrap resamples), so the same command gives the same numbers.
The library versions are pinned (``constraints.txt``) and so are OpenBLAS's kernels: by default it
picks them by CPU, and its AVX-512 ones (an Intel Xeon) moved last digits of the GSM8K rows against its
AVX2 ones (an AMD EPYC). Every run uses the Haswell (AVX2) kernels, which any x86-64 CPU of the last
decade runs, unless ``OPENBLAS_CORETYPE`` says otherwise.
A run whose plot the README shows (``Run.docs``) writes its report, plot and printed table
(``table.txt``) to that folder under ``docs/eval/`` instead.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
# OpenBLAS kernels every run uses (see the module docstring): the figures then agree across x86-64 CPUs.
_BLAS_KERNELS = "Haswell"


@dataclass(frozen=True, slots=True)
class Run:
    """One ``tierwise eval`` invocation (``--out`` and, unless ``docs``, ``--no-plot`` are added)."""

    name: str
    args: tuple[str, ...]
    slow: bool = False
    docs: str | None = None  # the README shows this run's plot: write it here (relative to the repo)


@dataclass(frozen=True, slots=True)
class Quote:
    """README text with ``{}`` per figure; ``figures`` gives each one's report.json path and format."""

    run: str
    text: str
    figures: tuple[tuple[str, str], ...]


RUNS: tuple[Run, ...] = (
    Run("mmlu-rules", ("--data", "routellm-mmlu", "--policy", "rules")),
    Run("gsm8k-rules", ("--data", "routellm-gsm8k", "--policy", "rules")),
    Run("mtbench-rules", ("--data", "routellm-mtbench", "--policy", "rules")),
    Run("arena-rules", ("--data", "arena-bench-v1", "--policy", "rules"), docs="docs/eval/arena-bench-v1"),
    Run("mmlu-learned", ("--data", "routellm-mmlu", "--policy", "learned", "--cv", "5"), slow=True),
    Run(
        "mmlu-learned-subject",
        ("--data", "routellm-mmlu", "--policy", "learned", "--cv", "5", "--split", "subject"),
        slow=True,
    ),
    Run("gsm8k-learned", ("--data", "routellm-gsm8k", "--policy", "learned", "--cv", "5")),
    Run(
        "gsm8k-hybrid",
        ("--data", "routellm-gsm8k", "--policy", "learned:examples/cascade-gsm8k.yaml", "--cv", "5"),
    ),
    Run(
        "mtbench-learned",
        (
            "--data",
            "routellm-mtbench",
            "--train-data",
            "arena-bench-v1,routellm-mmlu,routellm-gsm8k",
            "--policy",
            "learned",
        ),
    ),
    Run("gsm8k-cascade", ("--data", "routellm-gsm8k", "--policy", "examples/cascade-gsm8k.yaml")),
    Run(
        "arena-learned",
        ("--data", "arena-bench-v1", "--policy", "learned:examples/arena-fleet.yaml", "--cv", "5"),
    ),
    Run(
        "arena-utility",
        ("--data", "arena-bench-v1", "--policy", "utility:examples/arena-fleet.yaml", "--cv", "5"),
        docs="docs/eval/arena-bench-v1-utility",
    ),
)

_Q3, _C2, _PCT1, _PCTF = "{:.3f}", "{:.2f}", "{:.1%}", "{:.1f}%"


def _rules_rows(run: str, label: str) -> tuple[Quote, ...]:
    """The three rows of one dataset in the rules table."""
    p = "policies"
    return (
        Quote(
            run,
            f"| {label} | rules | {{}} | {{}} | {{}} | {{}} [{{}}, {{}}] | {{}} | {{}} |",
            (
                (f"{p}/rules/quality", _Q3),
                (f"{p}/rules/cost_per_1k_usd", _C2),
                (f"{p}/rules/strong_share", _PCT1),
                (f"{p}/rules/apgr", _Q3),
                (f"{p}/rules/ci95/apgr/0", _Q3),
                (f"{p}/rules/ci95/apgr/1", _Q3),
                (f"{p}/rules/savings_pct", _PCTF),
                (f"{p}/rules/savings_at_95", _PCT1),
            ),
        ),
        Quote(
            run,
            "| | random | {} | {} | {} | {} [{}, {}] | {} | {} |",
            (
                (f"{p}/random/quality", _Q3),
                (f"{p}/random/cost_per_1k_usd", _C2),
                (f"{p}/random/strong_share", _PCT1),
                (f"{p}/random/apgr", _Q3),
                (f"{p}/random/ci95/apgr/0", _Q3),
                (f"{p}/random/ci95/apgr/1", _Q3),
                (f"{p}/random/savings_pct", _PCTF),
                (f"{p}/random/savings_at_95", _PCT1),
            ),
        ),
        Quote(
            run,
            "| | always-strongest / oracle | {} / {} | {} / {} | 100% / {} | — / {} | 0 / {} | — / {} |",
            (
                (f"{p}/always-strongest/quality", _Q3),
                (f"{p}/oracle/quality", _Q3),
                (f"{p}/always-strongest/cost_per_1k_usd", _C2),
                (f"{p}/oracle/cost_per_1k_usd", _C2),
                (f"{p}/oracle/strong_share", _PCT1),
                (f"{p}/oracle/apgr", _Q3),
                (f"{p}/oracle/savings_pct", _PCTF),
                (f"{p}/oracle/savings_at_95", _PCT1),
            ),
        ),
    )


def _learned_row(run: str, label: str, policy: str = "learned") -> Quote:
    """A row of the learned-router table: APGR with its interval and CPT(50%)."""
    p = f"policies/{policy}"
    return Quote(
        run,
        f"| {label} | {{}} [{{}}, {{}}] | {{}} |",
        ((f"{p}/apgr", _Q3), (f"{p}/ci95/apgr/0", _Q3), (f"{p}/ci95/apgr/1", _Q3), (f"{p}/cpt_50", _PCTF)),
    )


# The GSM8K hybrid's APGR and CPT(50%), each with its 95% interval: the table row and the paragraph.
_HYBRID_FIELDS = (
    ("policies/learned/apgr", _Q3),
    ("policies/learned/ci95/apgr/0", _Q3),
    ("policies/learned/ci95/apgr/1", _Q3),
    ("policies/learned/cpt_50", _PCTF),
    ("policies/learned/ci95/cpt_50/0", "{:.1f}"),
    ("policies/learned/ci95/cpt_50/1", "{:.1f}"),
)


QUOTES: tuple[Quote, ...] = (
    *_rules_rows("mmlu-rules", "MMLU (14,037)"),
    *_rules_rows("gsm8k-rules", "GSM8K (1,307)"),
    *_rules_rows("mtbench-rules", "MT-Bench (72)"),
    *_rules_rows("arena-rules", "arena-bench-v1 (300)"),
    Quote(
        "mtbench-rules",  # the last of the three runs, so all three reports exist
        "random router APGR {} / {} / {} and oracle {} / {} / {} on MMLU / GSM8K / MT-Bench",
        (
            ("@mmlu-rules:policies/random/apgr", _Q3),
            ("@gsm8k-rules:policies/random/apgr", _Q3),
            ("policies/random/apgr", _Q3),
            ("@mmlu-rules:policies/oracle/apgr", _Q3),
            ("@gsm8k-rules:policies/oracle/apgr", _Q3),
            ("policies/oracle/apgr", _Q3),
        ),
    ),
    _learned_row("mmlu-learned", "MMLU, 5-fold"),
    _learned_row("mmlu-learned-subject", "MMLU, whole subjects held out"),
    _learned_row("gsm8k-learned", "GSM8K, 5-fold"),
    Quote(
        "gsm8k-hybrid",
        "| GSM8K, hybrid: learned layer + cascade, 5-fold | {} [{}, {}] | {} [{}, {}] |",
        _HYBRID_FIELDS,
    ),
    _learned_row("mtbench-learned", "MT-Bench, trained on arena + MMLU + GSM8K"),
    Quote(
        "gsm8k-hybrid",
        "pooled over 1,307 prompts): APGR {} [{}, {}] and CPT(50%) {} [{}, {}] over the router's",
        _HYBRID_FIELDS,
    ),
    Quote("gsm8k-cascade", "against {} for the cascade alone", (("policies/cascade-gsm8k/apgr", _Q3),)),
    Quote("gsm8k-learned", "and {} for the router alone", (("policies/learned/apgr", _Q3),)),
    Quote(
        "gsm8k-hybrid",
        "it keeps {} on the test folds ({} [{}, {}] vs {}) for ${} per 1k requests against ${} — {} saved",
        (
            ("ratio:policies/learned/quality:policies/always-strongest/quality", _PCT1),
            ("policies/learned/quality", _Q3),
            ("policies/learned/ci95/quality/0", _Q3),
            ("policies/learned/ci95/quality/1", _Q3),
            ("policies/always-strongest/quality", _Q3),
            ("policies/learned/cost_per_1k_usd", _C2),
            ("policies/always-strongest/cost_per_1k_usd", _C2),
            ("policies/learned/savings_pct", "{:.0f}%"),
        ),
    ),
    Quote(
        "gsm8k-cascade",
        "no-refusal, uses-the-question's-numbers): APGR {} [{}, {}] and CPT(50%) {} [{}, {}]",
        (
            ("policies/cascade-gsm8k/apgr", _Q3),
            ("policies/cascade-gsm8k/ci95/apgr/0", _Q3),
            ("policies/cascade-gsm8k/ci95/apgr/1", _Q3),
            ("policies/cascade-gsm8k/cpt_50", _PCTF),
            ("policies/cascade-gsm8k/ci95/cpt_50/0", "{:.1f}"),
            ("policies/cascade-gsm8k/ci95/cpt_50/1", "{:.1f}"),
        ),
    ),
    Quote(
        "gsm8k-cascade",
        "quality {} for ${} per 1k requests against GPT-4-1106's {} for ${}",
        (
            ("policies/cascade-gsm8k/quality", _Q3),
            ("policies/cascade-gsm8k/cost_per_1k_usd", _C2),
            ("policies/always-strongest/quality", _Q3),
            ("policies/always-strongest/cost_per_1k_usd", _C2),
        ),
    ),
    Quote(
        "gsm8k-cascade",
        "The checks catch {} of Mixtral's wrong answers at {} precision",
        (
            ("policies/cascade-gsm8k/details/cascade/detection/cascade/recall_wrong", "{:.0%}"),
            ("policies/cascade-gsm8k/details/cascade/detection/cascade/precision_wrong", "{:.0%}"),
        ),
    ),
)


QUOTES += (
    Quote(
        "arena-learned",
        "the learned router's threshold sweep has AIQ {} [{}, {}] and saves {} at 95% of GPT-4-1106's",
        (
            ("policies/learned/aiq", _Q3),
            ("policies/learned/ci95/aiq/0", _Q3),
            ("policies/learned/ci95/aiq/1", _Q3),
            ("policies/learned/savings_at_95", _PCT1),
        ),
    ),
    Quote(
        "arena-utility",
        "AIQ {} [{}, {}] against the zero router's {} [{}, {}]; the oracle's is {}.",
        (
            ("policies/utility/aiq", _Q3),
            ("policies/utility/ci95/aiq/0", _Q3),
            ("policies/utility/ci95/aiq/1", _Q3),
            ("policies/zero-router/aiq", _Q3),
            ("policies/zero-router/ci95/aiq/0", _Q3),
            ("policies/zero-router/ci95/aiq/1", _Q3),
            ("policies/oracle/aiq", _Q3),
        ),
    ),
    Quote(
        "arena-utility",
        "It saves {} at 95% of GPT-4-1106's quality, the zero router {}, but",
        (("policies/utility/savings_at_95", _PCT1), ("policies/zero-router/savings_at_95", _PCT1)),
    ),
    Quote(
        "arena-utility",
        "for 95% of GPT-4-1106's quality it keeps {} of it on the test folds, for ${} per 1k requests "
        "against ${}.",
        (
            ("ratio:policies/utility/quality:policies/always-strongest/quality", _PCT1),
            ("policies/utility/cost_per_1k_usd", _C2),
            ("policies/always-strongest/cost_per_1k_usd", _C2),
        ),
    ),
)


def value_at(reports: dict[str, dict[str, Any]], run: str, path: str) -> Any:
    """The value at a ``/``-separated path (list items by index) of ``run``'s report.

    ``@OTHER:PATH`` reads another run's report; ``ratio:A:B`` is A / B.
    """
    if path.startswith("ratio:"):
        _, a, b = path.split(":")
        return value_at(reports, run, a) / value_at(reports, run, b)
    if path.startswith("@"):
        run, path = path[1:].split(":", 1)
    if run not in reports:
        raise KeyError(f"{path}: no report of run {run!r}")
    node: Any = reports[run]
    for part in path.split("/"):
        if isinstance(node, list):
            node = node[int(part)]
        elif isinstance(node, dict) and part in node:
            node = node[part]
        else:
            raise KeyError(f"{path}: no {part!r} in the report")
    return node


def render(value: Any, fmt: str) -> str:
    return "—" if value is None else fmt.format(value)


def _flat(text: str) -> str:
    return " ".join(text.split())


def check(quote: Quote, reports: dict[str, dict[str, Any]], readme: str) -> list[str]:
    """What differs between the README and the reports (by run name) for one quote; empty when exact."""
    try:
        expected = [render(value_at(reports, quote.run, path), fmt) for path, fmt in quote.figures]
    except (KeyError, IndexError, TypeError) as exc:
        return [f"{quote.run}: {exc}"]
    text = _flat(readme)
    rendered = _flat(quote.text.format(*expected))
    if rendered in text:
        return []
    literal = [re.escape(part) for part in _flat(quote.text).split("{}")]
    found = re.search("(.+?)".join(literal), text)
    if found is None:
        return [f"{quote.run}: the README has no text like {_flat(quote.text)!r} (expected {rendered!r})"]
    return [
        f"{quote.run}: {path} is {want} in report.json, {have} in the README"
        for (path, _), want, have in zip(quote.figures, expected, found.groups(), strict=True)
        if want != have
    ] or [f"{quote.run}: expected {rendered!r}"]


def run_path(run: Run, out: Path) -> Path:
    """Where a run's report.json is written: its docs folder, else ``out/run.name``."""
    return (ROOT / run.docs if run.docs else out / run.name) / "report.json"


def run_eval(run: Run, out: Path) -> dict[str, Any]:
    """Run one eval into ``out/run.name`` (or its docs folder, with the plot) and return its report."""
    target = run.docs or str(out / run.name)  # a docs folder relative to the repo, as its table says
    flags = () if run.docs else ("--no-plot",)
    command = [sys.executable, "-m", "tierwise.cli", "eval", *run.args, *flags, "--out", target]
    started = time.perf_counter()
    env = {**os.environ, "OPENBLAS_CORETYPE": os.environ.get("OPENBLAS_CORETYPE", _BLAS_KERNELS)}
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False, env=env)
    if done.returncode:
        raise RuntimeError(f"{' '.join(command)} failed:\n{done.stderr}")
    if run.docs:
        (ROOT / run.docs / "table.txt").write_text(done.stdout)
    print(f"  {run.name}: {time.perf_counter() - started:.0f} s", flush=True)
    return json.loads(run_path(run, out).read_text())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--all", action="store_true", help="also the slow runs (MMLU learned, 5-fold)")
    parser.add_argument("--reuse", action="store_true", help="check existing reports, run nothing")
    parser.add_argument("--only", default="", help="comma-separated run names")
    parser.add_argument("--out", type=Path, default=ROOT / "out" / "figures")
    parser.add_argument("--readme", type=Path, default=ROOT / "README.md")
    args = parser.parse_args(argv)
    only = {n for n in args.only.split(",") if n}
    readme = args.readme.read_text()
    problems: list[str] = []
    skipped = []
    checked = 0
    reports: dict[str, dict[str, Any]] = {}
    for run in RUNS:
        if only and run.name not in only:
            continue
        if run.slow and not args.all and not only:
            skipped.append(run.name)
            continue
        path = run_path(run, args.out)
        if args.reuse:
            if not path.exists():
                problems.append(f"{run.name}: no {path} to reuse")
                continue
            reports[run.name] = json.loads(path.read_text())
        else:
            reports[run.name] = run_eval(run, args.out)
        for quote in (q for q in QUOTES if q.run == run.name):
            checked += 1
            problems += check(quote, reports, readme)
    for problem in problems:
        print(problem, file=sys.stderr)
    note = f"; skipped the slow {', '.join(skipped)} (--all runs them)" if skipped else ""
    print(f"{checked} README quotes checked, {len(problems)} differ{note}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
