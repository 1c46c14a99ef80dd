"""tierwise demo: send the 300 arena-bench-v1 prompts through a running gateway and count what routing saved.

    tierwise serve --config examples/demo.yaml --port 8080
    python examples/demo.py --base-url http://127.0.0.1:8080/v1 [--limit N] [--concurrency 8]

Every prompt goes out with the official openai SDK as ``model="auto"``; tierwise picks a model of the replay
fleet in ``demo.yaml``, which answers with that model's real recorded answer. The response headers say which
model and tier answered and what it cost. The report compares the routed run with sending every prompt to
the counterfactual model (gpt-4-1106-preview): cost from the dataset's token counts × its list price, quality
as the mean GPT-4 judge grade (1–10) of the answers actually served. Missing grades are left out and counted.
Exits 1 if any request failed.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path

import openai

from tierwise.arena_data import ArenaData, Question, load_arena
from tierwise.config import Config, load_config

DEFAULT_CONFIG = Path(__file__).with_name("demo.yaml")


@dataclass(frozen=True, slots=True)
class Outcome:
    """One request: what the gateway said about it, or why it failed."""

    qid: str
    model: str | None = None  # x-tierwise-model
    tier: str | None = None  # x-tierwise-tier
    cost_usd: float | None = None  # x-tierwise-cost-usd
    reason: str | None = None  # x-tierwise-reason
    content: str | None = None
    error: str | None = None


@dataclass(slots=True)
class Group:
    """Requests that share a tier or a model."""

    requests: int = 0
    cost_usd: float = 0.0
    scores: list[float] = field(default_factory=list)
    missing_scores: int = 0

    def add(self, cost: float, score: float | None) -> None:
        self.requests += 1
        self.cost_usd += cost
        if score is None:
            self.missing_scores += 1
        else:
            self.scores.append(score)

    @property
    def mean_score(self) -> float | None:
        return sum(self.scores) / len(self.scores) if self.scores else None


@dataclass(slots=True)
class Summary:
    strong_model: str
    total: int = 0
    failures: list[Outcome] = field(default_factory=list)
    by_tier: dict[str, Group] = field(default_factory=dict)
    by_model: dict[str, Group] = field(default_factory=dict)
    routed: Group = field(default_factory=Group)
    strong: Group = field(default_factory=Group)  # the same prompts, all sent to the strong model
    cost_from_dataset: int = 0  # answers whose cost header was missing, priced from the dataset instead
    answer_mismatches: int = 0  # served answers that differ from the recorded one
    # The served answers' own tokens at the strong model's prices: the counterfactual the gateway can
    # compute live (tierwise report, /metrics), since it never sees the strong model's own answer.
    served_at_strong_usd: float = 0.0

    @property
    def savings(self) -> float | None:
        """Share of the always-strong cost that routing saved."""
        if self.strong.cost_usd <= 0:
            return None
        return 1 - self.routed.cost_usd / self.strong.cost_usd

    @property
    def savings_at_served_tokens(self) -> float | None:
        """Share saved against the strong model's prices for the tokens actually served."""
        if self.served_at_strong_usd <= 0:
            return None
        return 1 - self.routed.cost_usd / self.served_at_strong_usd

    @property
    def quality_retained(self) -> float | None:
        routed, strong = self.routed.mean_score, self.strong.mean_score
        return routed / strong if routed is not None and strong else None


def _upstream(config: Config, model: str) -> str:
    """The dataset's name for a fleet model (a replay model's upstream id is its dataset name)."""
    try:
        return config.model(model).upstream
    except KeyError:
        return model


def summarize(outcomes: Iterable[Outcome], data: ArenaData, config: Config) -> Summary:
    """Tally the outcomes against the dataset's scores and token counts, and the always-strong baseline."""
    strong = config.counterfactual()
    summary = Summary(strong_model=strong.name)
    tier_order = {tier: i for i, tier in enumerate(config.tiers)}
    model_order = {m.name: i for i, m in enumerate(config.models)}
    for outcome in outcomes:
        summary.total += 1
        if outcome.error is not None or outcome.model is None:
            summary.failures.append(outcome)
            continue
        upstream = _upstream(config, outcome.model)
        if data.result(outcome.qid, upstream) is None:
            summary.failures.append(
                replace(outcome, error=f"{outcome.model} answered, but has no recorded result")
            )
            continue
        cost = outcome.cost_usd
        if cost is None and outcome.model in model_order:
            summary.cost_from_dataset += 1
            cost = config.model(outcome.model).cost(*data.tokens(outcome.qid, upstream))
        score = data.score(outcome.qid, upstream)
        recorded = data.answer(outcome.qid, upstream)
        if recorded is not None and outcome.content != recorded:
            summary.answer_mismatches += 1
        if cost is None:
            summary.failures.append(
                replace(outcome, error=f"no x-tierwise-cost-usd, unknown model {outcome.model}")
            )
            continue
        summary.routed.add(cost, score)
        summary.by_tier.setdefault(outcome.tier or "?", Group()).add(cost, score)
        summary.by_model.setdefault(outcome.model, Group()).add(cost, score)
        summary.served_at_strong_usd += strong.cost(*data.tokens(outcome.qid, upstream))
        strong_cost = strong.cost(*data.tokens(outcome.qid, strong.upstream))
        summary.strong.add(strong_cost, data.score(outcome.qid, strong.upstream))
    # Tiers and models in the order the config lists them.
    summary.by_tier = dict(
        sorted(summary.by_tier.items(), key=lambda kv: tier_order.get(kv[0], len(tier_order)))
    )
    summary.by_model = dict(
        sorted(summary.by_model.items(), key=lambda kv: model_order.get(kv[0], len(model_order)))
    )
    return summary


def _score(group: Group) -> str:
    mean = group.mean_score
    return "-" if mean is None else f"{mean:.2f}"


def _percent(value: float | None) -> str:
    return "n/a" if value is None else f"{value * 100:.1f}%"


def _table(title: str, groups: dict[str, Group], total: int) -> list[str]:
    width = max([len(title), *map(len, groups)])
    header = ("requests", "share", "cost USD", "mean score", "no score")
    lines = [
        f"{title:<{width}}  {header[0]:>8}  {header[1]:>6}  {header[2]:>10}  {header[3]:>10}  {header[4]:>8}"
    ]
    for name, group in groups.items():
        share = group.requests / total if total else 0.0
        lines.append(
            f"{name:<{width}}  {group.requests:>8}  {share * 100:>5.1f}%  {group.cost_usd:>10.4f}  "
            f"{_score(group):>10}  {group.missing_scores:>8}"
        )
    return lines


def format_report(summary: Summary) -> str:
    served = summary.routed.requests
    routed, strong = summary.routed, summary.strong
    columns = ("routed by tierwise", f"always {summary.strong_model}")
    width = max(map(len, columns))

    def row(label: str, left: object, right: object) -> str:
        return f"{label:<24}  {left!s:>{width}}  {right!s:>{width}}"

    lines = [
        f"requests: {summary.total}, answered: {served}, failed: {len(summary.failures)}",
        "",
        *_table("tier", summary.by_tier, served),
        "",
        *_table("model", summary.by_model, served),
        "",
        row("", *columns),
        row("cost USD", f"{routed.cost_usd:.4f}", f"{strong.cost_usd:.4f}"),
        row("mean judge score (1-10)", _score(routed), _score(strong)),
        row("answers without a score", routed.missing_scores, strong.missing_scores),
        "",
        f"savings against always-{summary.strong_model}:",
        f"  {_percent(summary.savings):>6} priced with its own recorded answers (this dataset has them)",
        f"  {_percent(summary.savings_at_served_tokens):>6} at its prices for the tokens actually served: "
        "what `tierwise report` and /metrics compute",
        "         live, where its own (often longer) answers are never seen, so this one is lower",
        f"quality retained: {_percent(summary.quality_retained)} of its mean judge score",
    ]
    if summary.cost_from_dataset:
        lines.append(
            f"note: {summary.cost_from_dataset} answers had no x-tierwise-cost-usd; priced from the dataset"
        )
    if summary.answer_mismatches:
        lines.append(
            f"note: {summary.answer_mismatches} answers differ from the recorded answer of their model"
        )
    for outcome in summary.failures[:10]:
        lines.append(f"failed: {outcome.qid}: {outcome.error or 'no x-tierwise-model header'}")
    if len(summary.failures) > 10:
        lines.append(f"failed: … and {len(summary.failures) - 10} more")
    return "\n".join(lines)


def _float(value: str | None) -> float | None:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


async def ask(client: openai.AsyncOpenAI, question: Question) -> Outcome:
    """Send one prompt with model="auto" and read tierwise's headers."""
    try:
        raw = await client.chat.completions.with_raw_response.create(
            model="auto", messages=[{"role": "user", "content": question.prompt}]
        )
        completion = raw.parse()
    except openai.APIStatusError as exc:
        return Outcome(question.id, error=f"HTTP {exc.status_code}: {exc.message}")
    except openai.APIError as exc:
        return Outcome(question.id, error=f"{type(exc).__name__}: {exc.message}")
    headers = raw.headers
    return Outcome(
        question.id,
        model=headers.get("x-tierwise-model"),
        tier=headers.get("x-tierwise-tier"),
        cost_usd=_float(headers.get("x-tierwise-cost-usd")),
        reason=headers.get("x-tierwise-reason"),
        content=completion.choices[0].message.content if completion.choices else None,
    )


async def send_all(
    base_url: str, questions: list[Question], *, concurrency: int = 8, timeout: float = 60.0
) -> list[Outcome]:
    """Send every question, ``concurrency`` at a time; outcomes in the questions' order."""
    gate = asyncio.Semaphore(concurrency)
    done = 0

    async def one(client: openai.AsyncOpenAI, question: Question) -> Outcome:
        nonlocal done
        async with gate:
            outcome = await ask(client, question)
        done += 1
        if done % 50 == 0 or done == len(questions):
            print(f"  {done}/{len(questions)}", file=sys.stderr)
        return outcome

    # No SDK retries: a failed request must show up as failed, not be hidden by a second try.
    async with openai.AsyncOpenAI(
        base_url=base_url, api_key="demo", max_retries=0, timeout=timeout
    ) as client:
        return list(await asyncio.gather(*(one(client, q) for q in questions)))


def wait_for_gateway(base_url: str, seconds: float) -> bool:
    """Poll the gateway's /healthz until it answers 200 or ``seconds`` pass."""
    health = base_url.rstrip("/").removesuffix("/v1") + "/healthz"
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(health, timeout=1) as response:
                if response.status == 200:
                    return True
        except OSError:
            pass
        time.sleep(0.1)
    return False


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--base-url", required=True, help="the gateway's OpenAI base URL, e.g. http://127.0.0.1:8080/v1"
    )
    parser.add_argument("--limit", type=int, help="send only the first N prompts")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds per request")
    parser.add_argument(
        "--config", type=Path, default=DEFAULT_CONFIG, help="the fleet's config (prices, tiers)"
    )
    parser.add_argument(
        "--wait",
        type=float,
        nargs="?",
        const=30.0,
        default=0.0,
        metavar="S",
        help="first wait up to S seconds (default 30) for the gateway's /healthz",
    )
    args = parser.parse_args(argv)
    if args.concurrency < 1 or (args.limit is not None and args.limit < 1):
        parser.error("--concurrency and --limit must be at least 1")

    if args.wait and not wait_for_gateway(args.base_url, args.wait):
        print(
            f"the gateway at {args.base_url} did not answer /healthz within {args.wait:.0f} s",
            file=sys.stderr,
        )
        return 1
    config = load_config(args.config)
    data = load_arena()
    questions = list(data.questions[: args.limit])
    print(
        f'sending {len(questions)} arena-bench-v1 prompts to {args.base_url} with model="auto"',
        file=sys.stderr,
    )
    started = time.perf_counter()
    outcomes = asyncio.run(
        send_all(args.base_url, questions, concurrency=args.concurrency, timeout=args.timeout)
    )
    elapsed = time.perf_counter() - started
    summary = summarize(outcomes, data, config)
    print(format_report(summary))
    print(f"\n{len(outcomes)} requests in {elapsed:.1f} s")
    return 1 if summary.failures else 0


if __name__ == "__main__":
    sys.exit(main())
