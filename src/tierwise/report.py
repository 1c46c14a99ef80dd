"""Summaries of the ledger: where requests went, what they cost, and what routing saved.

"Savings" compare the recorded cost with the counterfactual cost of every answered request had it
gone to the always-strongest model, at the same token counts (the counterfactual model's own
tokenizer may count a little differently; the ledger records what the answering model reported).
A request is a *fallback* when the model that answered is not the decision's first choice.

Quality, where the ledger knows it: callers' feedback (the latest grade of each request, 0..1, see
``POST /v1/feedback``) averaged per group; the cascade's verdicts — answers its verifiers accepted
and rejected, counted against the model that gave them; and shadow calls (``policy.shadow``): how
often the shadow model agreed with each model's answers. Shadow calls are not requests: their cost
is reported on its own line, outside every group and total.

Answers served from the response cache cost $0 and carry no tokens, so they add nothing to the routing
savings; what they saved (what each answer cost when it was paid for) is reported apart, as cache
savings.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from .answer_path import KINDS, answer_path
from .ledger.base import Feedback, LedgerRow


@dataclass(slots=True)
class Group:
    requests: int = 0
    errors: int = 0
    fallbacks: int = 0
    cost_usd: float = 0.0
    counterfactual_usd: float = 0.0
    tiers: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    graded: int = 0
    score_sum: float = 0.0

    def add(self, row: LedgerRow, grade: float | None = None) -> None:
        if grade is not None:
            self.graded += 1
            self.score_sum += grade
        self.requests += 1
        if row.status != "ok":
            self.errors += 1
        chain = row.decision.get("chain") or []
        if row.final_model and chain and row.final_model != chain[0]:
            self.fallbacks += 1
        self.cost_usd += row.cost_usd
        self.counterfactual_usd += row.counterfactual_cost_usd
        if row.tier:
            self.tiers[row.tier] += 1

    def as_dict(self, total: int) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "share": self.requests / total if total else 0.0,
            "errors": self.errors,
            "fallback_rate": self.fallbacks / self.requests if self.requests else 0.0,
            "cost_usd": self.cost_usd,
            "counterfactual_usd": self.counterfactual_usd,
            "tiers": dict(self.tiers),
            "graded": self.graded,
            "mean_score": self.score_sum / self.graded if self.graded else None,
        }


@dataclass(slots=True)
class Paths:
    """How the answers of a group of requests were reached (see ``answer_path.py``)."""

    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KINDS, 0))
    reasons: dict[str, dict[str, int]] = field(default_factory=lambda: defaultdict(lambda: defaultdict(int)))

    def add(self, row: LedgerRow) -> None:
        path = answer_path(row)
        self.counts[path.kind] += 1
        if path.kind in ("escalated", "fell_back"):
            self.reasons[path.kind][f"{path.first_tier}->{path.final_tier}: {path.reason}"] += 1

    def as_dict(self) -> dict[str, Any]:
        n = sum(self.counts.values())
        out: dict[str, Any] = {"requests": n}
        for kind in KINDS:
            out[kind] = self.counts[kind]
            out[f"{kind}_share"] = self.counts[kind] / n if n else 0.0
        out["reasons"] = {kind: dict(counts) for kind, counts in self.reasons.items()}
        return out


def summarize(rows: Iterable[LedgerRow], feedback: Iterable[Feedback] = ()) -> dict[str, Any]:
    """The report as a JSON-ready dict: totals, and groups by model, tier and task type."""
    grades: dict[str, float] = {}
    shadow_says: dict[str, float] = {}
    judged: dict[str, float] = {}
    for item in sorted(feedback, key=lambda f: f.ts):  # the latest grade of a request counts
        {"shadow": shadow_says, "judge": judged}.get(item.source, grades)[item.request_id] = item.score
    judge_cost = 0.0
    baseline_cost: dict[str, float] = {}  # request id → what its shadow (baseline) answer cost
    judged_rows: list[LedgerRow] = []
    shadow_calls, shadow_cost = 0, 0.0
    agreement: dict[str, dict[str, int]] = defaultdict(lambda: {"agree": 0, "disagree": 0})
    verdicts: dict[str, dict[str, int]] = defaultdict(lambda: {"accepted": 0, "rejected": 0})
    total = Group()
    by_model: dict[str, Group] = defaultdict(Group)
    by_tier: dict[str, Group] = defaultdict(Group)
    by_task: dict[str, Group] = defaultdict(Group)
    by_key: dict[str, Group] = defaultdict(Group)  # virtual keys' requests only (auth.mode: keys)
    by_tenant: dict[str, Group] = defaultdict(Group)
    downgraded: dict[str, int] = defaultdict(int)  # per tenant: requests a budget sent to a cheaper tier
    answered_counterfactual = 0.0
    answered_cost = 0.0
    latencies: list[float] = []
    cache_hits: dict[str, int] = defaultdict(int)  # kind → requests answered from the cache
    cache_saved = 0.0
    paths: dict[str, Paths] = defaultdict(Paths)
    paths_by_version: dict[str, dict[str, Paths]] = defaultdict(lambda: defaultdict(Paths))
    by_arm: dict[str, Group] = defaultdict(Group)  # policy.canary: the arm that served each request
    paths_by_arm: dict[str, Paths] = defaultdict(Paths)
    arm_versions: dict[str, str] = {}  # policy version → the arm it served as
    for row in rows:
        if row.decision.get("layer") == "shadow":
            shadow_calls += 1
            for attempt in row.attempts:
                if attempt.purpose == "judge":
                    judge_cost += attempt.cost_usd
                else:
                    shadow_cost += attempt.cost_usd
                    baseline_cost[str(row.decision.get("of"))] = attempt.cost_usd
            continue
        if row.id in judged:
            judged_rows.append(row)
        cache = row.decision.get("cache")
        if cache:
            cache_hits[str(cache.get("hit"))] += 1
            cache_saved += float(cache.get("saved_usd") or 0.0)
        if row.id in shadow_says and row.final_model:
            agreement[row.final_model]["agree" if shadow_says[row.id] >= 0.5 else "disagree"] += 1
        grade = grades.get(row.id)
        total.add(row, grade)
        by_model[row.final_model or "(none)"].add(row, grade)
        by_tier[row.tier or "(none)"].add(row, grade)
        task = str(row.features.get("task", "?"))
        by_task[task].add(row, grade)
        if row.key_id is not None:
            by_key[row.key_id].add(row, grade)
            tenant = str(row.decision.get("tenant", "(none)"))
            by_tenant[tenant].add(row, grade)
            if "; budget: " in str(row.decision.get("reason", "")):
                downgraded[tenant] += 1
        paths[task].add(row)
        paths_by_version[row.policy_version][task].add(row)
        arm = row.decision.get("arm")
        if arm is not None:
            by_arm[arm].add(row, grade)
            paths_by_arm[arm].add(row)
            arm_versions[row.policy_version] = arm
        for attempt in row.attempts:
            if attempt.purpose == "answer" and (attempt.verified or attempt.status == "rejected"):
                verdicts[attempt.model]["accepted" if attempt.verified else "rejected"] += 1
        if row.status == "ok":
            answered_cost += row.cost_usd
            answered_counterfactual += row.counterfactual_cost_usd
            latencies.append(row.latency_ms)
    latencies.sort()
    n = total.requests
    return {
        "requests": n,
        "errors": total.errors,
        "fallback_rate": total.fallbacks / n if n else 0.0,
        "cost_usd": total.cost_usd,
        "counterfactual_usd": total.counterfactual_usd,
        "savings_usd": answered_counterfactual - answered_cost,
        "savings_pct": (1 - answered_cost / answered_counterfactual) * 100
        if answered_counterfactual
        else 0.0,
        "cache": {"hits": dict(sorted(cache_hits.items())), "saved_usd": cache_saved},
        "latency_ms_p50": latencies[len(latencies) // 2] if latencies else None,
        "latency_ms_p99": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
        if latencies
        else None,
        "graded": total.graded,
        "mean_score": total.score_sum / total.graded if total.graded else None,
        "cascade": {model: dict(counts) for model, counts in sorted(verdicts.items())},
        "shadow": {
            "calls": shadow_calls,
            "cost_usd": shadow_cost,
            "judge_cost_usd": judge_cost,
            "judged_by_task": _judged(
                judged_rows, judged, baseline_cost, lambda r: str(r.features.get("task"))
            ),
            "judged_by_policy_version": _judged(
                judged_rows, judged, baseline_cost, lambda r: r.policy_version
            ),
            "agreement": {model: dict(counts) for model, counts in sorted(agreement.items())},
        },
        "by_model": {k: g.as_dict(n) for k, g in sorted(by_model.items())},
        "by_tier": {k: g.as_dict(n) for k, g in sorted(by_tier.items())},
        "by_task": {k: g.as_dict(n) for k, g in sorted(by_task.items())},
        "by_key": {k: g.as_dict(n) for k, g in sorted(by_key.items())},
        "by_tenant": {
            k: {**g.as_dict(n), "budget_downgraded": downgraded[k]} for k, g in sorted(by_tenant.items())
        },
        # Per task type: answered by the first choice, escalated for quality (a cascade rejected the
        # cheaper answer), fell back for availability, failed.
        "escalation_by_task": {k: p.as_dict() for k, p in sorted(paths.items())},
        "escalation_by_policy_version": {
            version: {k: p.as_dict() for k, p in sorted(tasks.items())}
            for version, tasks in sorted(paths_by_version.items())
        },
        "by_arm": _arms(by_arm, paths_by_arm, arm_versions, judged_rows, judged, baseline_cost, n),
        "arm_by_policy_version": dict(sorted(arm_versions.items())),
    }


def _arms(
    groups: dict[str, Group],
    paths: dict[str, Paths],
    versions: dict[str, str],
    judged_rows: list[LedgerRow],
    verdicts: dict[str, float],
    baseline_cost: dict[str, float],
    total: int,
) -> dict[str, Any]:
    """Per canary arm, what the guard watches, from the ledger: cost per request, escalation and error
    rates, the judged shadows and the clients' feedback; and the policy versions that served it."""
    judged = _judged(
        [r for r in judged_rows if r.decision.get("arm") is not None],
        verdicts,
        baseline_cost,
        lambda r: str(r.decision.get("arm")),
    )
    out = {}
    for arm, g in sorted(groups.items()):
        p = paths[arm].as_dict()
        out[arm] = {
            **g.as_dict(total),
            "policy_versions": sorted(v for v, a in versions.items() if a == arm),
            "cost_per_request_usd": g.cost_usd / g.requests,
            "escalated_share": p["escalated_share"],
            "error_share": p["error_share"],
            "judged": judged.get(arm),
        }
    return out


def _judged(
    rows: list[LedgerRow],
    verdicts: dict[str, float],
    baseline_cost: dict[str, float],
    key: Callable[[LedgerRow], str],
) -> dict[str, Any]:
    """Judged shadows per group: the served answer's wins, ties and losses against the baseline, the
    share no worse (wins + ties) with its 95% Wilson interval, and the cost of both answers."""
    groups: dict[str, dict[str, Any]] = {}
    for row in rows:
        g = groups.setdefault(
            key(row),
            {"judged": 0, "wins": 0, "ties": 0, "losses": 0, "cost_usd": 0.0, "baseline_cost_usd": 0.0},
        )
        score = verdicts[row.id]
        g["judged"] += 1
        g["wins" if score == 1.0 else "losses" if score == 0.0 else "ties"] += 1
        g["cost_usd"] += row.cost_usd
        g["baseline_cost_usd"] += baseline_cost.get(row.id, 0.0)
    for g in groups.values():
        no_worse = g["wins"] + g["ties"]
        g["no_worse_share"] = no_worse / g["judged"]
        g["no_worse_ci95"] = list(wilson(no_worse, g["judged"]))
        g["cost_share"] = g["cost_usd"] / g["baseline_cost_usd"] if g["baseline_cost_usd"] else None
    return dict(sorted(groups.items()))


def wilson(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score interval of a proportion (95% by default); (0, 1) with no trials."""
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def render(summary: dict[str, Any]) -> str:
    """Plain-text tables of a summary, for the terminal."""
    lines = [
        f"requests {summary['requests']}  errors {summary['errors']}  "
        f"fallback rate {summary['fallback_rate']:.1%}",
        f"cost ${summary['cost_usd']:.4f}  vs always-strongest ${summary['counterfactual_usd']:.4f}  "
        f"saved ${summary['savings_usd']:.4f} ({summary['savings_pct']:.1f}%)",
        "  (always-strongest: the strongest model's prices for the tokens served; its own answers, often",
        "   longer, would have cost more, so this understates the saving — see README, 'One savings figure')",
    ]
    cache = summary.get("cache") or {}
    if cache.get("hits"):
        kinds = ", ".join(f"{kind} {n}" for kind, n in cache["hits"].items())
        lines.append(
            f"cache    {sum(cache['hits'].values())} answers from the cache ({kinds}), "
            f"saved ${cache['saved_usd']:.4f} (apart from the routing saving above)"
        )
    if summary["latency_ms_p50"] is not None:
        lines.append(
            f"latency p50 {summary['latency_ms_p50']:.1f} ms  p99 {summary['latency_ms_p99']:.1f} ms"
        )
    graded = summary.get("graded", 0)
    if graded:
        lines.append(f"feedback on {graded} requests, mean score {summary['mean_score']:.3f}")
    for model, counts in summary.get("cascade", {}).items():
        lines.append(
            f"cascade  {model}: {counts['accepted']} answers accepted, {counts['rejected']} rejected"
        )
    shadow = summary.get("shadow") or {}
    if shadow.get("calls"):
        lines.append(f"shadow   {shadow['calls']} calls, ${shadow['cost_usd']:.4f} (not in the cost above)")
        for model, counts in shadow["agreement"].items():
            lines.append(f"shadow   {model}: agreed {counts['agree']}, disagreed {counts['disagree']}")
        for task, g in shadow.get("judged_by_task", {}).items():
            lo, hi = g["no_worse_ci95"]
            cost = f", at {g['cost_share']:.0%} of its cost" if g["cost_share"] is not None else ""
            lines.append(
                f"judged   {task}: routed answers no worse than the baseline's in {g['no_worse_share']:.0%} "
                f"[{lo:.0%}, {hi:.0%}] of {g['judged']} sampled requests ({g['wins']} won, {g['ties']} tied, "
                f"{g['losses']} lost){cost}"
            )
        if shadow.get("judge_cost_usd"):
            lines.append(f"judge    ${shadow['judge_cost_usd']:.4f} (not in the cost above)")
    escalation = summary.get("escalation_by_task") or {}
    if escalation:
        width = max(4, *(len(k) for k in escalation))
        lines += [
            "",
            f"{'task':<{width}}  {'requests':>8}  {'first choice':>12}  {'escalated':>9}  "
            f"{'fell back':>9}  {'failed':>6}   (escalated: for quality; fell back: for availability)",
        ]
        for task, p in escalation.items():
            lines.append(
                f"{task:<{width}}  {p['requests']:>8}  {p['first_choice_share']:>12.1%}  "
                f"{p['escalated_share']:>9.1%}  {p['fell_back_share']:>9.1%}  {p['error_share']:>6.1%}"
            )
    arms = summary.get("by_arm") or {}
    if arms:
        lines += ["", f"{'arm':<7}  {'requests':>8}  {'$/request':>10}  {'escalated':>9}  {'failed':>6}  "
                  f"{'judged':>6}  {'no worse':>8}  {'graded':>6}  {'score':>5}  policy version"]  # fmt: skip
        for arm, a in arms.items():
            j = a["judged"] or {"judged": 0, "no_worse_share": None}
            no_worse = "—" if j["no_worse_share"] is None else f"{j['no_worse_share']:.0%}"
            score = "—" if a["mean_score"] is None else f"{a['mean_score']:.2f}"
            lines.append(
                f"{arm:<7}  {a['requests']:>8}  {a['cost_per_request_usd']:>10.6f}  "
                f"{a['escalated_share']:>9.1%}  "
                f"{a['error_share']:>6.1%}  {j['judged']:>6}  {no_worse:>8}  {a['graded']:>6}  {score:>5}  "
                f"{', '.join(a['policy_versions'])}"
            )
    for title, key in (
        ("model", "by_model"),
        ("tier", "by_tier"),
        ("task", "by_task"),
        ("key", "by_key"),
        ("tenant", "by_tenant"),
    ):
        groups = summary.get(key) or {}
        if not groups:
            continue
        width = max(len(title), *(len(k) for k in groups))
        quality = f"  {'graded':>6}  {'score':>5}" if graded else ""
        lines.append("")
        head = f"{title:<{width}}  {'requests':>8}  {'share':>6}  {'cost $':>10}  {'fallback':>8}"
        lines.append(f"{head}{quality}  tiers")
        for name, g in groups.items():
            tiers = " ".join(f"{t}:{c}" for t, c in sorted(g["tiers"].items()))
            score = "—" if g["mean_score"] is None else f"{g['mean_score']:.2f}"
            quality = f"  {g['graded']:>6}  {score:>5}" if graded else ""
            lines.append(
                f"{name:<{width}}  {g['requests']:>8}  {g['share']:>6.1%}  {g['cost_usd']:>10.4f}  "
                f"{g['fallback_rate']:>8.1%}{quality}  {tiers}"
            )
    return "\n".join(lines)
