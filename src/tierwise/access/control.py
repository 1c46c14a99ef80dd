"""What the Router asks of access control for one keyed request.

``authenticate``: the presented secret → a Principal (key, tenant, merged grants).
``admit``: the model asked for is granted; the rate-limit windows take the request and its tokens, or it
is refused (429 with OpenAI's rate-limit headers); a spent budget refuses (429 ``budget_exceeded`` with
the reset time); a budget past ``downgrade_at`` yields a Constraint capping the tier. All counters are
checked and taken in one atomic step (``State.admit``).
``reserve``: the decision's first model's estimated cost (input estimate × input price + max_tokens, or
the model's or ``auth.default_max_output_tokens``, × output price) is added to every budget counter in
the same atomic step that checks none is spent.
``settle``: the reservation is replaced by the real cost (failed attempts and side calls included).

Every admitted request saw its counters (settled costs + reservations in flight) below the limit, so a
budget is overshot by at most the reservation of the last request admitted, plus whatever calls cost
above their estimates (an escalation to a pricier model, an answer longer than the estimate allowed).
A refusal says which of two things happened: the settled costs alone reached the limit (429 until the
period resets, with ``x-tierwise-budget-reset``), or reservations in flight hold what is left (429 with
``Retry-After: 1``: estimates are upper bounds, so most of it comes back when those requests settle).

State keys (under the store's prefix, ``ctr:``): ``budget:{key|tenant}:{name}:{daily|monthly}:{period}``
(settled + held) and the same with ``:settled``; ``rate:{key|tenant}:{name}:{requests|tokens}:{minute}``.
"""

from __future__ import annotations

import dataclasses
import hmac
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass

from ..config import Budget, Config, Grants, RateLimits
from ..errors import AccessDenied, BudgetExceeded, RateLimited
from ..features import Features
from ..policy.engine import Constraint, Decision
from ..state import Counter, State
from .budget import Period, day, estimate_usd, minute, month
from .keys import KeyRecord, Keys


@dataclass(frozen=True, slots=True)
class _Scope:
    """A key or a tenant as far as counters go."""

    kind: str  # "key" or "tenant"
    name: str
    budget: Budget
    rate: RateLimits

    @property
    def label(self) -> str:
        return f"{self.kind} {self.name}"


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: the key, its tenant, and what both grant together."""

    key: KeyRecord
    tenant: str
    scopes: tuple[_Scope, ...]  # the key's, then the tenant's
    models: frozenset[str] | None  # models granted by both (None: every model)
    max_tier: str | None  # highest tier of a granted model (None: no cap)
    user_tier: str | None

    @property
    def key_id(self) -> str:
        return self.key.id


@dataclass(frozen=True, slots=True)
class Reservation:
    """Estimated cost held on a request's budget counters until it is settled."""

    counters: tuple[Counter, ...]
    estimate_usd: float


@dataclass(frozen=True, slots=True)
class _Meter:
    """What one admission counter stands for, to explain a refusal."""

    scope: _Scope
    what: str  # "requests", "tokens" or "budget"
    period: Period
    limit: float


class Access:
    """Keys, rate limits and budgets of one config over one state store."""

    def __init__(self, config: Config, state: State, *, clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.state = state
        self.keys = Keys(config, state)
        self._clock = clock
        self._tiers = config.tiers
        self._tier_of = {m.name: m.tier for m in config.models}
        self._models = {m.name: m for m in config.models}
        self._default_output = config.auth.default_max_output_tokens
        self._principals: dict[str, tuple[KeyRecord, Principal]] = {}
        self._calendar: tuple[float, Period, Period] = (-1.0, day(0), month(0))  # (valid until, day, month)
        self._window: tuple[float, Period] = (-1.0, minute(0))

    def _budget_periods(self, now: float) -> tuple[Period, Period]:
        """Today and this month, recomputed only when the day ends (formatting dates costs more than
        the rest of an admission)."""
        until, today, this_month = self._calendar
        if now >= until or now < until - 86_400.0:
            today, this_month = day(now), month(now)
            self._calendar = (today.ends, today, this_month)
        return today, this_month

    def _minute(self, now: float) -> Period:
        until, window = self._window
        if now >= until or now < until - 60.0:
            window = minute(now)
            self._window = (window.ends, window)
        return window

    @property
    def required(self) -> bool:
        """Whether every gateway request must carry a key (``auth.mode: keys``)."""
        return self.config.auth.mode == "keys"

    def is_master(self, secret: str | None) -> bool:
        """Whether ``secret`` is the master key (compared in constant time). False when it is unset."""
        master = os.environ.get(self.config.auth.master_key_env)
        if not master or not secret:
            return False
        return hmac.compare_digest(master.encode(), secret.encode())

    async def authenticate(self, secret: str | None) -> Principal:
        """The Principal for a presented key. Raises AccessDenied (401) when it is missing, unknown or
        revoked."""
        if not secret:
            raise AccessDenied(
                "missing API key: send a tierwise virtual key as 'Authorization: Bearer <key>' or 'x-api-key'"
            )
        record = await self.keys.lookup(secret)
        # Principals are built once per key record: the config's records are fixed objects, stored
        # ones are reused by Keys while their text is unchanged.
        cached = self._principals.get(record.id)
        if cached is not None and cached[0] is record:
            return cached[1]
        principal = self._principal(record)
        if len(self._principals) >= 4096:
            self._principals.clear()
        self._principals[record.id] = (record, principal)
        return principal

    def _principal(self, record: KeyRecord) -> Principal:
        tenant = self.config.tenants.get(record.tenant)
        if tenant is None:  # a stored key whose tenant was removed from the config since
            raise AccessDenied(f"the API key {record.id} belongs to no configured tenant", status=403)
        models: set[str] | None = None
        for grants in (tenant, record.grants):
            granted = _granted(self.config, grants)
            if granted is not None:
                models = granted if models is None else models & granted
        max_tier = None
        if models is not None:
            tiers = [self._tiers.index(self._tier_of[m]) for m in models]
            max_tier = self._tiers[max(tiers)] if tiers else self._tiers[0]
        return Principal(
            key=record,
            tenant=record.tenant,
            scopes=(
                _Scope("key", record.id, record.grants.budget, record.grants.rate_limits),
                _Scope("tenant", record.tenant, tenant.budget, tenant.rate_limits),
            ),
            models=None if models is None else frozenset(models),
            max_tier=max_tier,
            user_tier=record.grants.user_tier or tenant.user_tier,
        )

    # -- per request --

    async def admit(
        self, principal: Principal, features: Features, requested: str
    ) -> tuple[Features, Constraint]:
        """Check grants, take rate limits, read budgets: the request's features (with the key's user
        tier) and the Constraint the engine applies. Raises AccessDenied, RateLimited, BudgetExceeded."""
        self._check_granted(principal, requested, features.tier)
        if principal.user_tier is not None and features.user_tier is None:
            features = dataclasses.replace(features, user_tier=principal.user_tier)
        now = self._clock()
        counters, meters = self._admission(principal, features, now)
        admission = await self.state.admit(counters)
        if admission.refused is not None:
            raise await self._refusal(meters, admission.values, admission.refused, now)
        return features, self._constraint(principal, features, meters, admission.values)

    def _check_granted(self, principal: Principal, requested: str, tier_hint: str | None) -> None:
        allowed = principal.models
        if allowed is None:
            return
        if requested in self._models and requested not in allowed:
            raise AccessDenied(
                f"model: {requested!r} is not allowed for key {principal.key_id}; "
                f"allowed: {', '.join(sorted(allowed)) or 'none'}",
                status=403,
                code="model_not_allowed",
            )
        for tier, where in ((requested, "model"), (tier_hint, "tier hint")):
            if tier in self._tiers and not any(self._tier_of[m] == tier for m in allowed):
                raise AccessDenied(
                    f"{where}: tier {tier!r} is not allowed for key {principal.key_id}",
                    status=403,
                    code="model_not_allowed",
                )

    def _admission(
        self, principal: Principal, features: Features, now: float
    ) -> tuple[list[Counter], list[_Meter]]:
        counters: list[Counter] = []
        meters: list[_Meter] = []
        window = self._minute(now)
        today, this_month = self._budget_periods(now)
        tokens = features.input_tokens + (features.max_output_tokens or self._default_output)
        for scope in principal.scopes:
            base = f"{scope.kind}:{scope.name}"
            for what, limit, amount in (
                ("requests", scope.rate.requests_per_minute, 1),
                ("tokens", scope.rate.tokens_per_minute, tokens),
            ):
                if limit is not None:
                    # A request larger than a whole window's tokens still runs alone in a fresh window.
                    strict = amount <= limit
                    counters.append(
                        Counter(f"rate:{base}:{what}:{window.id}", amount, limit, window.ttl_s(now), strict)
                    )
                    meters.append(_Meter(scope, what, window, limit))
            for period, limit in ((today, scope.budget.daily_usd), (this_month, scope.budget.monthly_usd)):
                if limit is not None:
                    counters.append(
                        Counter(_budget_key(base, period), 0.0, limit, period.ttl_s(now), strict=False)
                    )
                    meters.append(_Meter(scope, "budget", period, limit))
        return counters, meters

    async def _refusal(
        self, meters: list[_Meter], values: tuple[float, ...], index: int, now: float
    ) -> Exception:
        meter = meters[index]
        wait = max(0.0, meter.period.ends - now)
        if meter.what == "budget":
            key = _budget_key(f"{meter.scope.kind}:{meter.scope.name}", meter.period)
            settled = await self._read(key + _SETTLED, meter.period, now)
            if settled < meter.limit:
                # What is left is held by requests in flight: their reservations are mostly given back
                # when they settle, so this refusal lasts a moment, not until the period ends.
                return BudgetExceeded(
                    f"budget nearly spent: {meter.scope.label} has ${meter.limit - settled:.4f} of its "
                    f"{meter.period.label} ${meter.limit:.2f} left, held by requests in flight; "
                    "retry shortly",
                    retry_after=1.0,
                )
            reset = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(meter.period.ends))
            return BudgetExceeded(
                f"budget exceeded: {meter.scope.label} has spent its {meter.period.label} budget of "
                f"${meter.limit:.2f}; it resets at {reset}",
                retry_after=wait,
                reset_at=meter.period.ends,
            )
        headers: dict[str, str] = {}
        for m, value in zip(meters, values, strict=True):
            if m.scope is meter.scope and m.what != "budget":
                suffix = m.what
                headers[f"x-ratelimit-limit-{suffix}"] = str(int(m.limit))
                headers[f"x-ratelimit-remaining-{suffix}"] = str(max(0, int(m.limit - value)))
                headers[f"x-ratelimit-reset-{suffix}"] = f"{max(1, math.ceil(m.period.ends - now))}s"
        per = "requests" if meter.what == "requests" else "tokens"
        return RateLimited(
            f"rate limit reached: {meter.scope.label} is limited to {int(meter.limit)} {per} per minute; "
            f"retry after {max(1, math.ceil(wait))}s",
            retry_after=wait,
            headers=headers,
        )

    def _constraint(
        self, principal: Principal, features: Features, meters: list[_Meter], values: tuple[float, ...]
    ) -> Constraint:
        max_tier, why = principal.max_tier, ""
        if max_tier is not None:
            why = f"key {principal.key_id} is granted tiers up to {max_tier}"
        for meter, value in zip(meters, values, strict=True):
            budget = meter.scope.budget
            if meter.what != "budget" or value < budget.downgrade_at * meter.limit:
                continue
            if budget.critical_hints == "keep" and (
                features.quality == "high" or features.risk == "critical"
            ):
                continue
            tier = budget.downgrade_tier or self._tiers[0]
            if principal.models:  # never below the cheapest tier the key may use
                floor = min(self._tiers.index(self._tier_of[m]) for m in principal.models)
                tier = self._tiers[max(self._tiers.index(tier), floor)]
            if max_tier is None or self._tiers.index(tier) < self._tiers.index(max_tier):
                max_tier = tier
                why = (
                    f"budget: {meter.scope.label} has spent {value / meter.limit:.0%} of its "
                    f"{meter.period.label} ${meter.limit:.2f} (downgrade at {budget.downgrade_at:.0%})"
                )
        return Constraint(max_tier=max_tier, why=why, models=principal.models)

    async def reserve(
        self, principal: Principal, decision: Decision, features: Features
    ) -> Reservation | None:
        """Hold the estimated cost of the decision's first model on every budget counter, refusing
        (BudgetExceeded) if one was spent since ``admit``: checked and added in one atomic step, so no
        two replicas can both take the last of a budget."""
        now = self._clock()
        estimate = estimate_usd(features, self._models[decision.chain[0]], self._default_output)
        today, this_month = self._budget_periods(now)
        counters: list[Counter] = []
        meters: list[_Meter] = []
        for scope in principal.scopes:
            base = f"{scope.kind}:{scope.name}"
            for period, limit in ((today, scope.budget.daily_usd), (this_month, scope.budget.monthly_usd)):
                if limit is not None:
                    key = _budget_key(base, period)
                    counters.append(Counter(key, estimate, limit, period.ttl_s(now), strict=False))
                    meters.append(_Meter(scope, "budget", period, limit))
        if not counters:
            return None
        admission = await self.state.admit(counters)
        if admission.refused is not None:
            raise await self._refusal(meters, admission.values, admission.refused, now)
        return Reservation(tuple(counters), estimate)

    async def charge(self, principal: Principal, cost_usd: float) -> None:
        """Add a cost that had no reservation to every budget of the key, as spent and settled: an
        embeddings call, whose cost is tiny and known only once made."""
        now = self._clock()
        today, this_month = self._budget_periods(now)
        counters: list[Counter] = []
        for scope in principal.scopes:
            base = f"{scope.kind}:{scope.name}"
            for period, limit in ((today, scope.budget.daily_usd), (this_month, scope.budget.monthly_usd)):
                if limit is not None:
                    key = _budget_key(base, period)
                    counters.append(Counter(key, cost_usd, limit, period.ttl_s(now)))
                    counters.append(Counter(key + _SETTLED, cost_usd, limit, period.ttl_s(now)))
        if counters and cost_usd:
            await self.state.adjust(counters)

    async def settle(self, reservation: Reservation, cost_usd: float) -> None:
        """Replace the reservation by the request's real cost (and count that cost as settled spend)."""
        delta = cost_usd - reservation.estimate_usd
        counters = [Counter(c.key, delta, c.limit, c.ttl_s) for c in reservation.counters]
        counters += [Counter(c.key + _SETTLED, cost_usd, c.limit, c.ttl_s) for c in reservation.counters]
        await self.state.adjust(counters)

    async def spent(self, kind: str, name: str) -> dict[str, float]:
        """A key's or tenant's settled spend this day and month (0 for a period it has no budget for)."""
        now = self._clock()
        periods = self._budget_periods(now)
        return {
            p.label: await self._read(_budget_key(f"{kind}:{name}", p) + _SETTLED, p, now) for p in periods
        }

    async def _read(self, key: str, period: Period, now: float) -> float:
        admission = await self.state.admit([Counter(key, 0.0, _NO_LIMIT, period.ttl_s(now), strict=False)])
        return admission.values[0]


# A limit never reached, for reading counters through ``admit`` (Lua cannot parse "inf").
_NO_LIMIT = 1e300
# A budget period has two counters: costs settled plus reservations in flight (what admission checks),
# and this suffix's, costs settled alone (what tells a spent budget from one held by requests in flight).
_SETTLED = ":settled"


def _budget_key(base: str, period: Period) -> str:
    return f"budget:{base}:{period.label}:{period.id}"


def _granted(config: Config, grants: Grants) -> set[str] | None:
    """The models ``grants`` allow, or None when they allow every model."""
    if grants.allowed_tiers is None and grants.allowed_models is None:
        return None
    models = {m.name for m in config.models}
    if grants.allowed_tiers is not None:
        models = {m.name for m in config.models if m.tier in grants.allowed_tiers}
    if grants.allowed_models is not None:
        models &= set(grants.allowed_models)
    return models
