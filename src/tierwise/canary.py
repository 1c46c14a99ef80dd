"""Canary releases of a routing policy, rolled back automatically when they do worse.

``policy.canary`` runs a second policy beside the stable one on a sticky ``share`` of the traffic: a
request's arm is a hash of its sticky value (the body's ``user``, the virtual key, or a header), so one
user keeps one policy. Every response header (``x-tierwise-canary-arm``) and ledger row (the decision's
``arm`` and ``policy_version``) names the arm that served it.

Each answered request counts, per arm, in the state store (shared by replicas, kept across restarts
with Redis): requests, answers escalated for quality, failed requests, cost. Labels that arrive later
count too: the judged shadow's verdict on a routed answer (win, tie or loss against the baseline) and
the feedback score a client sends. Once the canary has ``min_samples`` requests, the guard compares it
with the stable arm after every ``CHECK_EVERY`` canary requests: for each bound it computes the
one-sided lower confidence limit of how much worse the canary is (its escalation, error or judge-loss
rate minus the stable arm's; the stable arm's mean feedback minus its own) and rolls the canary back
when that limit is past the bound. The label checks wait for ``min_labels`` labels in each arm.
Testing the *interval* against a bound above zero, at 99% by default, keeps repeated looks from
turning noise into a rollback; a canary that is truly worse by more than the bound is caught as soon
as the samples show it. A rollback is a flag in the state store, so it holds on every replica and
across restarts, and it is logged with its evidence. ``tierwise canary status | promote | rollback``
is for people.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from statistics import NormalDist
from typing import Any

from .answer_path import answer_path
from .config import CanaryConfig
from .ledger.base import LedgerRow
from .state.base import Counter, State

log = logging.getLogger("tierwise.canary")

ARMS = ("stable", "canary")
# Per arm: requests and what became of them; then the labels that come later (judged shadows' verdicts
# and client feedback, a score 0..1 whose sum of squares gives the spread of its mean).
METRICS = ("requests", "escalated", "errors", "cost_usd",
           "judged", "judge_wins", "judge_ties", "judge_losses",
           "feedback", "feedback_sum", "feedback_squares")  # fmt: skip
_VERDICT_COUNTER = {"win": "judge_wins", "tie": "judge_ties", "loss": "judge_losses"}
CHECK_EVERY = 10  # canary requests between two looks of the guard
TTL_S = 90 * 86_400.0  # how long the counters and the flag outlive the last request
FLAG_TTL_S = 5.0  # how long a replica trusts its copy of the flag before reading it again
# The rollout's states: running, rolled back (all traffic stable), promoted (all traffic canary).
RUNNING, ROLLED_BACK, PROMOTED = 0, 1, 2


@dataclass(frozen=True, slots=True)
class Check:
    """One guard check: the canary's and the stable arm's figure, and the lower confidence limit of how
    much worse the canary is (a rate's increase; for ``feedback``, the mean score's fall), against the
    bound."""

    metric: str
    canary: float
    stable: float
    lower_limit: float
    bound: float
    samples: tuple[int, int]  # (canary, stable): requests, or labels for the label checks

    @property
    def breached(self) -> bool:
        return self.lower_limit > self.bound

    def __str__(self) -> str:
        if self.metric == "feedback":
            return (
                f"feedback: canary mean {self.canary:.3f} vs stable {self.stable:.3f} "
                f"({self.samples[0]} and {self.samples[1]} scores), lower by ≥ {self.lower_limit:.3f} at "
                f"the guard's confidence (bound {self.bound:.3f})"
            )
        return (
            f"{self.metric}: canary {self.canary:.1%} vs stable {self.stable:.1%} (of {self.samples[0]} "
            f"and {self.samples[1]}), difference ≥ {self.lower_limit:+.1%} at the guard's confidence "
            f"(bound {self.bound:+.1%})"
        )

    def to_dict(self) -> dict[str, Any]:
        return {"metric": self.metric, "canary": self.canary, "stable": self.stable,
                "lower_limit": self.lower_limit, "bound": self.bound, "samples": list(self.samples),
                "breached": self.breached}  # fmt: skip


class Canary:
    """The arms of one Router's canary: assignment, counting, the guard and the flag."""

    def __init__(
        self,
        config: CanaryConfig,
        state: State,
        *,
        stable_version: str,
        canary_version: str,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.stable_version = stable_version
        self.version = canary_version
        self._state = state
        self._clock = clock
        self._prefix = f"canary:{canary_version}:"
        self._cut = int(config.share * 2**32)
        header = config.sticky_by.partition(":")[2] if config.sticky_by.startswith("header:") else None
        self._header = header.lower() if header else None
        self._flag = RUNNING
        self._flag_read = -math.inf
        self._seen = 0  # canary requests this process counted: when to look again
        self._z = NormalDist().inv_cdf(config.guard.confidence)

    # -- assignment --

    def sticky_value(
        self, body: Mapping[str, Any], headers: Mapping[str, str] | None, key_id: str | None, request_id: str
    ) -> str:
        """What a request's arm is a hash of; a request with none is its own (not sticky)."""
        sticky = self.config.sticky_by
        value: Any = None
        if sticky == "user":
            value = body.get("user")
        elif sticky == "key":
            value = key_id
        elif self._header is not None and headers is not None:
            value = headers.get(self._header)
        return str(value) if isinstance(value, str | int) and str(value) else request_id

    async def arm(self, sticky_value: str) -> str:
        """``stable`` or ``canary`` for a request with this sticky value."""
        flag = await self.flag()
        if flag != RUNNING:
            return "canary" if flag == PROMOTED else "stable"
        digest = hashlib.blake2b(sticky_value.encode("utf-8", "surrogatepass"), digest_size=4).digest()
        return "canary" if int.from_bytes(digest, "big") < self._cut else "stable"

    async def flag(self) -> int:
        """The rollout's state (running, rolled back, promoted), read from the state store at most every
        ``FLAG_TTL_S`` seconds."""
        now = self._clock()
        if now - self._flag_read >= FLAG_TTL_S:
            keys = [Counter(self._prefix + name, 0, math.inf, TTL_S) for name in ("rolled_back", "promoted")]
            rolled_back, promoted = (await self._state.admit(keys)).values
            self._flag = PROMOTED if promoted > 0 else ROLLED_BACK if rolled_back > 0 else RUNNING
            self._flag_read = now
        return self._flag

    # -- counting and the guard --

    async def observe(self, row: LedgerRow) -> Check | None:
        """Count one answered request of either arm; run the guard when it is due. The check that rolled
        the canary back, if this one did."""
        arm = row.decision.get("arm")
        if arm not in ARMS or self._flag != RUNNING:
            return None
        kind = answer_path(row).kind
        counts = {"requests": 1, "escalated": int(kind == "escalated"), "errors": int(kind == "error"),
                  "cost_usd": row.cost_usd}  # fmt: skip
        await self._count(arm, counts)
        if arm != "canary":
            return None
        self._seen += 1
        if self._seen % CHECK_EVERY:
            return None
        return await self.guard()

    async def observe_verdict(self, arm: str | None, verdict: str) -> None:
        """Count a judged shadow's verdict (``win``, ``tie`` or ``loss``) on a routed answer of ``arm``."""
        if arm in ARMS and verdict in _VERDICT_COUNTER and self._flag == RUNNING:
            await self._count(arm, {"judged": 1, _VERDICT_COUNTER[verdict]: 1})

    async def observe_feedback(self, arm: str | None, score: float) -> None:
        """Count a client's feedback score (0..1) on an answer of ``arm``."""
        if arm in ARMS and self._flag == RUNNING:
            await self._count(arm, {"feedback": 1, "feedback_sum": score, "feedback_squares": score * score})

    async def _count(self, arm: str, counts: dict[str, float]) -> None:
        await self._state.adjust(
            [Counter(f"{self._prefix}{arm}:{m}", n, math.inf, TTL_S) for m, n in counts.items() if n]
        )

    async def guard(self) -> Check | None:
        """Run every check now; roll the canary back on the first one breached, and return it."""
        for check in await self.checks():
            if check.breached:
                await self.set_flag(ROLLED_BACK, why=str(check))
                return check
        return None

    async def counts(self) -> dict[str, dict[str, float]]:
        """Each arm's counters, from the state store."""
        keys = [Counter(f"{self._prefix}{arm}:{m}", 0, math.inf, TTL_S) for arm in ARMS for m in METRICS]
        values = iter((await self._state.admit(keys)).values)
        return {arm: {m: next(values) for m in METRICS} for arm in ARMS}

    async def checks(self, counts: dict[str, dict[str, float]] | None = None) -> list[Check]:
        """The guard's checks now (on ``counts`` when the caller has just read them); none before the
        canary has ``min_samples`` requests, and no label check before both arms have ``min_labels``
        labels of its kind."""
        counts = counts if counts is not None else await self.counts()
        canary, stable = counts["canary"], counts["stable"]
        if canary["requests"] < self.config.min_samples or stable["requests"] < 1:
            return []
        guard = self.config.guard
        out = []
        for metric, of, bound in (
            ("escalated", "requests", guard.escalation_rate),
            ("errors", "requests", guard.error_rate),
            ("judge_losses", "judged", guard.judge_loss_rate),
        ):
            n_c, n_s = int(canary[of]), int(stable[of])
            if bound is None or (of != "requests" and min(n_c, n_s) < guard.min_labels):
                continue
            p_c, p_s = canary[metric] / n_c, stable[metric] / n_s
            spread = math.sqrt(p_c * (1 - p_c) / n_c + p_s * (1 - p_s) / n_s)
            out.append(Check(metric, p_c, p_s, (p_c - p_s) - self._z * spread, bound, (n_c, n_s)))
        n_c, n_s = int(canary["feedback"]), int(stable["feedback"])
        if guard.feedback_drop is not None and min(n_c, n_s) >= guard.min_labels:
            (m_c, v_c), (m_s, v_s) = _mean_var(canary), _mean_var(stable)
            spread = math.sqrt(v_c / n_c + v_s / n_s)
            limit = (m_s - m_c) - self._z * spread
            out.append(Check("feedback", m_c, m_s, limit, guard.feedback_drop, (n_c, n_s)))
        return out

    async def set_flag(self, flag: int, *, why: str) -> None:
        """Roll the canary back or promote it, on every replica. Each is a counter that only grows, so
        replicas that decide at once agree; a promotion outranks a rollback. To run a canary again,
        change its policy: a new policy is a new version, with counters of its own."""
        name = {ROLLED_BACK: "rolled_back", PROMOTED: "promoted"}[flag]
        await self._state.adjust([Counter(self._prefix + name, 1, math.inf, TTL_S)])
        self._flag_read = -math.inf
        await self.flag()
        log.warning("canary %s %s: %s", self.version, name.replace("_", " "), why)

    async def status(self) -> dict[str, Any]:
        """The rollout for people: versions, state, each arm's counts and figures, the guard's checks."""
        flag = await self.flag()
        counts = await self.counts()
        return {
            "stable_version": self.stable_version,
            "canary_version": self.version,
            "share": self.config.share,
            "state": {RUNNING: "running", ROLLED_BACK: "rolled back", PROMOTED: "promoted"}[flag],
            "min_samples": self.config.min_samples,
            "min_labels": self.config.guard.min_labels,
            "counts": counts,
            "arms": {arm: arm_figures(c) for arm, c in counts.items()},
            "checks": [c.to_dict() for c in await self.checks(counts)],
        }


def arm_figures(counts: Mapping[str, float]) -> dict[str, float | None]:
    """An arm's counters as the figures people compare: cost per request, escalation and error rates,
    the share of judged shadows won, tied and lost, and the mean feedback score (None: nothing yet)."""
    n, judged, scores = counts["requests"], counts["judged"], counts["feedback"]
    return {
        "requests": n,
        "cost_per_request_usd": counts["cost_usd"] / n if n else None,
        "escalation_rate": counts["escalated"] / n if n else None,
        "error_rate": counts["errors"] / n if n else None,
        "judged": judged,
        "judge_win_rate": counts["judge_wins"] / judged if judged else None,
        "judge_tie_rate": counts["judge_ties"] / judged if judged else None,
        "judge_loss_rate": counts["judge_losses"] / judged if judged else None,
        "feedback": scores,
        "feedback_mean": counts["feedback_sum"] / scores if scores else None,
    }


def _mean_var(counts: Mapping[str, float]) -> tuple[float, float]:
    """The mean feedback score and its sample variance, from the count, sum and sum of squares."""
    n, total = counts["feedback"], counts["feedback_sum"]
    mean = total / n
    var = max(0.0, (counts["feedback_squares"] - n * mean * mean) / (n - 1)) if n > 1 else 0.0
    return mean, var
