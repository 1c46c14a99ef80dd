"""Canary releases of a routing policy, rolled back automatically when they do worse.

``policy.canary`` runs a second policy beside the stable one on a sticky ``share`` of the traffic: a
request's arm is a hash of its sticky value (the body's ``user``, the virtual key, or a header), so one
user keeps one policy. Every response header (``x-tierwise-canary-arm``) and ledger row (the decision's
``arm`` and ``policy_version``) names the arm that served it.

Each answered request counts, per arm, in the state store (shared by replicas, kept across restarts
with Redis): requests, answers escalated for quality, failed requests. Once the canary has
``min_samples`` requests, the guard compares its rates with the stable arm's after every
``CHECK_EVERY`` canary requests: for each bound it computes the one-sided lower confidence limit of
(canary rate − stable rate) and rolls the canary back when that limit is past the bound. Testing the
*interval* against a bound above zero, at 99% by default, keeps repeated looks from turning noise into
a rollback; a canary that is truly worse by more than the bound is caught as soon as the samples
show it. A rollback is a flag in the state store, so it holds on every replica and across restarts,
and it is logged with its evidence. ``tierwise canary status | promote | rollback`` is for people.
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
METRICS = ("requests", "escalated", "errors")
CHECK_EVERY = 10  # canary requests between two looks of the guard
TTL_S = 90 * 86_400.0  # how long the counters and the flag outlive the last request
FLAG_TTL_S = 5.0  # how long a replica trusts its copy of the flag before reading it again
# The rollout's states: running, rolled back (all traffic stable), promoted (all traffic canary).
RUNNING, ROLLED_BACK, PROMOTED = 0, 1, 2


@dataclass(frozen=True, slots=True)
class Check:
    """One guard check: the canary's and the stable arm's rates and the lower confidence limit of their
    difference, against the bound."""

    metric: str
    canary_rate: float
    stable_rate: float
    lower_limit: float
    bound: float

    @property
    def breached(self) -> bool:
        return self.lower_limit > self.bound

    def __str__(self) -> str:
        return (
            f"{self.metric}: canary {self.canary_rate:.1%} vs stable {self.stable_rate:.1%}, "
            f"difference ≥ {self.lower_limit:+.1%} at the guard's confidence (bound {self.bound:+.1%})"
        )


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
        counts = {"requests": 1, "escalated": int(kind == "escalated"), "errors": int(kind == "error")}
        await self._state.adjust(
            [Counter(f"{self._prefix}{arm}:{m}", n, math.inf, TTL_S) for m, n in counts.items() if n]
        )
        if arm != "canary":
            return None
        self._seen += 1
        if self._seen % CHECK_EVERY:
            return None
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

    async def checks(self) -> list[Check]:
        """The guard's checks now; none before the canary has ``min_samples`` requests."""
        counts = await self.counts()
        canary, stable = counts["canary"], counts["stable"]
        if canary["requests"] < self.config.min_samples or stable["requests"] < 1:
            return []
        out = []
        guard = self.config.guard
        for metric, bound in (("escalated", guard.escalation_rate), ("errors", guard.error_rate)):
            if bound is None:
                continue
            n_c, n_s = canary["requests"], stable["requests"]
            p_c, p_s = canary[metric] / n_c, stable[metric] / n_s
            spread = math.sqrt(p_c * (1 - p_c) / n_c + p_s * (1 - p_s) / n_s)
            out.append(Check(metric, p_c, p_s, (p_c - p_s) - self._z * spread, bound))
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
        """The rollout for people: versions, state, each arm's counts and the guard's checks."""
        flag = await self.flag()
        return {
            "stable_version": self.stable_version,
            "canary_version": self.version,
            "share": self.config.share,
            "state": {RUNNING: "running", ROLLED_BACK: "rolled back", PROMOTED: "promoted"}[flag],
            "min_samples": self.config.min_samples,
            "counts": await self.counts(),
            "checks": [
                {"metric": c.metric, "canary_rate": c.canary_rate, "stable_rate": c.stable_rate,
                 "lower_limit": c.lower_limit, "bound": c.bound, "breached": c.breached}
                for c in await self.checks()
            ],
        }  # fmt: skip
