"""The judged sample: does the model the policy chose answer as well as the one that served today?

``N`` logged requests per task type, drawn uniformly from the log while it streams (a reservoir per
type; only requests whose prompt was logged and that the policy sends to another model than today's),
are sent to the model the policy chose, through ``calls.call_once``. A judge model of the fleet
compares each answer with the logged one — or, when none was logged, a fresh answer of the baseline
model (``--baseline``, else the config's always-strongest model) — blind and in both orders
(``policy/pairwise.py``): a preference that flips with the order is a tie. Per type: wins, ties and
losses of the routed answer, with 95% Wilson intervals, beside the projected saving.

Spend is bounded by ``max_spend_usd``: before every call its *reservation* — its input tokens (the
logged usage, else the features' estimate × 1.25) plus its output cap, at the model's prices — is
checked against what is left, and the sample stops before a call that could exceed the bound. The
output cap is the request's own ``max_tokens`` when it has one, else twice the logged output (at
least ``MIN_OUTPUT_CAP``, at most ``MAX_OUTPUT_CAP``), sent as ``max_tokens``; judge replies are
capped at ``JUDGE_MAX_TOKENS``. What was spent is reported, per purpose.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from ..calls import call_once
from ..config import Config, ModelEntry
from ..errors import ConfigError
from ..features import extract_features
from ..messages import reply_text, side_call_body, without_hints
from ..policy.pairwise import pairwise_messages, parse_preference, verdict
from ..report import wilson
from .formats import LoggedRequest
from .project import Priced

MIN_OUTPUT_CAP = 512
MAX_OUTPUT_CAP = 4096
JUDGE_MAX_TOKENS = 16
INPUT_MARGIN = 1.25  # the features' token estimate is characters / 4; leave room for denser text


@dataclass(slots=True)
class SampleDraw:
    """A uniform sample of ``n`` requests per task type, drawn as the log streams (bounded memory)."""

    n: int
    seed: int = 0
    drawn: dict[str, list[tuple[LoggedRequest, Priced]]] = field(default_factory=dict)
    seen: Counter[str] = field(default_factory=Counter)
    _random: random.Random = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._random = random.Random(self.seed)

    def offer(self, request: LoggedRequest, priced: Priced) -> None:
        # Only requests a judge can read, and that routing would change, have a quality question.
        if request.body is None or priced.routed_model == priced.today_model:
            return
        task = priced.task
        self.seen[task] += 1
        slot = self.drawn.setdefault(task, [])
        if len(slot) < self.n:
            slot.append((request, priced))
            return
        index = self._random.randrange(self.seen[task])
        if index < self.n:
            slot[index] = (request, priced)


class SpendBound:
    """What the sample may still spend; a call is made only if its reservation fits."""

    def __init__(self, max_usd: float) -> None:
        self.max_usd = max_usd
        self.spent: Counter[str] = Counter()
        self.calls: Counter[str] = Counter()

    @property
    def total(self) -> float:
        return sum(self.spent.values())

    def fits(self, reservation: float) -> bool:
        return self.total + reservation <= self.max_usd


def _reservation(model: ModelEntry, input_tokens: int, output_cap: int) -> float:
    return model.cost(input_tokens, output_cap)


def _output_cap(body: dict[str, Any], logged_output: int | None) -> tuple[int, bool]:
    """(the output cap of a sampled call, whether it must be sent as ``max_tokens``)."""
    own = body.get("max_completion_tokens") or body.get("max_tokens")
    if isinstance(own, int) and not isinstance(own, bool) and own > 0:
        return own, False
    guess = 2 * logged_output if logged_output else MIN_OUTPUT_CAP
    return max(MIN_OUTPUT_CAP, min(MAX_OUTPUT_CAP, guess)), True


async def judge_sample(
    config: Config,
    draw: SampleDraw,
    *,
    judge: str,
    baseline: str | None,
    max_spend_usd: float,
    projected: list[dict[str, Any]],
    seed: int = 0,
    providers: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Run the judged sample; the report's ``sample`` section. ``providers`` replaces the adapters
    built from the config (by provider name)."""
    names = {m.name for m in config.models}
    for option, name in (("--judge", judge), ("--baseline", baseline)):
        if name is not None and name not in names:
            known = ", ".join(sorted(names))
            raise ConfigError(f"estimate {option}: unknown model {name!r}; models: {known}")
    judge_model = config.model(judge)
    baseline_model = config.model(baseline) if baseline else config.counterfactual()
    http = None
    if providers is None:
        from ..http import HttpPool
        from ..providers import build_provider

        http = HttpPool(limit=16)
        providers = {name: build_provider(name, p, http=http) for name, p in config.providers.items()}
    bound = SpendBound(max_spend_usd)
    per_type: dict[str, Counter[str]] = {}
    stopped: str | None = None
    order = random.Random(seed)
    try:
        for task in sorted(draw.drawn):
            tally = per_type.setdefault(task, Counter())
            for request, priced in draw.drawn[task]:
                outcome = await _one(
                    config, providers, request, priced, judge_model, baseline_model, bound, order
                )
                if outcome == "stopped":
                    stopped = (
                        f"stopped before a call whose reservation would pass --max-spend "
                        f"${max_spend_usd:g} (spent ${bound.total:.4f})"
                    )
                    break
                tally[outcome] += 1
            if stopped:
                break
    finally:
        if http is not None:
            await http.aclose()
    saving = {row["type"]: row for row in projected}
    types = {}
    for task, tally in per_type.items():
        judged = tally["win"] + tally["tie"] + tally["loss"]
        no_worse = tally["win"] + tally["tie"]
        row = saving.get(task, {})
        types[task] = {
            "routed_to": row.get("model"),
            "judged": judged,
            "win": tally["win"],
            "tie": tally["tie"],
            "loss": tally["loss"],
            "failed": tally["failed"],
            "unjudged": tally["unjudged"],
            "no_worse_share": no_worse / judged if judged else None,
            "no_worse_ci95": list(wilson(no_worse, judged)),
            "loss_share": tally["loss"] / judged if judged else None,
            "loss_ci95": list(wilson(tally["loss"], judged)),
            "projected_saved_share": row.get("saved_share"),
        }
    return {
        "per_type": types,
        "judge": judge_model.name,
        "baseline": f"the logged answer, else a fresh answer of {baseline_model.name}",
        "requested_per_type": draw.n,
        "eligible": dict(draw.seen),
        "spent_usd": round(bound.total, 6),
        "spent_by_purpose_usd": {k: round(v, 6) for k, v in bound.spent.items()},
        "calls": dict(bound.calls),
        "max_spend_usd": max_spend_usd,
        "stopped": stopped,
        "method": "blind pairwise judge in both orders; a verdict that flips with the order is a tie; "
        "95% Wilson intervals",
    }


async def _call(
    providers: dict[str, Any],
    model: ModelEntry,
    body: dict[str, Any],
    reservation: float,
    bound: SpendBound,
    purpose: str,
) -> str | None:
    """One call within the bound: its answer text, "" on failure, None if it did not fit."""
    if not bound.fits(reservation):
        return None
    call = await call_once(providers[model.provider], model, body, purpose=purpose)
    bound.spent[purpose] += call.attempt.cost_usd
    bound.calls[purpose] += 1
    if call.completion is None:
        return ""
    return reply_text(call.completion.body)


async def _one(
    config: Config,
    providers: dict[str, Any],
    request: LoggedRequest,
    priced: Priced,
    judge: ModelEntry,
    baseline: ModelEntry,
    bound: SpendBound,
    order: random.Random,
) -> str:
    """Sample, judge and return one request's verdict: win, tie, loss, failed, unjudged or stopped."""
    assert request.body is not None
    body = side_call_body(without_hints(request.body))
    cap, send_cap = _output_cap(body, request.output_tokens)
    if send_cap:
        body = {**body, "max_tokens": cap}
    input_tokens = request.input_tokens or int(extract_features(body).input_tokens * INPUT_MARGIN)
    routed = config.model(priced.routed_model)
    reference = request.answer
    # Reserve the whole request (answer, baseline if needed, two judge calls) before the first call, so
    # the bound never leaves a request half judged.
    needs_baseline = not reference
    judge_input = int((input_tokens + 2 * cap) * INPUT_MARGIN) + 200
    whole = (
        _reservation(routed, input_tokens, cap)
        + (_reservation(baseline, input_tokens, cap) if needs_baseline else 0.0)
        + 2 * _reservation(judge, judge_input, JUDGE_MAX_TOKENS)
    )
    if not bound.fits(whole):
        return "stopped"
    answer = await _call(providers, routed, body, _reservation(routed, input_tokens, cap), bound, "sample")
    if not answer:
        return "failed"
    if needs_baseline:
        reference = await _call(
            providers, baseline, body, _reservation(baseline, input_tokens, cap), bound, "baseline"
        )
        if not reference:
            return "failed"
    assert reference is not None
    replies = []
    # Which order is asked first is random, so a judge's drift across a run favours neither side.
    orders = [(answer, reference), (reference, answer)]
    first = order.random() < 0.5
    for a, b in orders if first else orders[::-1]:
        messages = pairwise_messages(request.body, a, b)
        judged_input = sum(len(m["content"]) for m in messages) // 4 + 8
        reply = await _call(
            providers,
            judge,
            {"messages": messages, "max_tokens": JUDGE_MAX_TOKENS, "temperature": 0},
            _reservation(judge, int(judged_input * INPUT_MARGIN), JUDGE_MAX_TOKENS),
            bound,
            "judge",
        )
        if reply is None:
            return "stopped"
        replies.append(parse_preference(reply))
    served_first, served_second = replies if first else replies[::-1]
    result = verdict(served_first, served_second)
    return result or "unjudged"


def render_sample(sample: dict[str, Any]) -> str:
    """The judged sample as text: per type, verdicts and intervals beside the projected saving."""
    lines = [
        f"judged sample ({sample['judge']} judging; baseline: {sample['baseline']}; {sample['method']})",
        f"{'type':<10} {'routed to':<22} {'n':>4} {'win':>4} {'tie':>4} {'loss':>4} "
        f"{'no worse [95% CI]':>24} {'saved':>7}",
    ]
    for task, row in sample["per_type"].items():
        share = row["no_worse_share"]
        lo, hi = row["no_worse_ci95"]
        shown = f"{share:.0%} [{lo:.0%}, {hi:.0%}]" if share is not None else "—"
        saved = row["projected_saved_share"]
        lines.append(
            f"{task:<10} {row['routed_to'] or '?':<22} {row['judged']:>4} {row['win']:>4} {row['tie']:>4} "
            f"{row['loss']:>4} {shown:>24} {f'{saved:.0%}' if saved is not None else '—':>7}"
        )
    lines.append(
        f"sample cost ${sample['spent_usd']:.4f} of at most ${sample['max_spend_usd']:g} "
        f"({', '.join(f'{k} {v}' for k, v in sample['calls'].items()) or 'no calls'})"
    )
    if sample["stopped"]:
        lines.append(sample["stopped"])
    return "\n".join(lines)
