"""The policy engine: Features + fleet → Decision. Pure and synchronous, no I/O, no clock.

Order of precedence: a concrete model named by the client (manual override) → a tier named by the
client (``model="draft"`` or the ``tier`` hint) → the rules, first match wins → the default target.
Every chain is precomputed at construction, so ``decide`` allocates little more than the Decision.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Protocol

from ..config import Config, Target
from ..errors import AccessDenied, RequestError
from ..features import Features
from .playbook import PLAYBOOK_DEFAULT, PLAYBOOK_RULES
from .rules import CompiledRule, compile_rule, first_match

AUTO_MODELS: frozenset[str] = frozenset({"auto", "tierwise/auto", "tierwise"})


@dataclass(frozen=True, slots=True)
class Decision:
    """Which models to try, in order, and why."""

    chain: tuple[str, ...]  # fleet model names, first choice first
    tier: str  # tier of the first choice
    reason: str  # "rule fast-short: input_tokens=212 < 500, latency_ms=800 < 1000 → draft"
    rule: str  # the rule's name, "default", "tier-hint" or "manual"
    layer: str  # which layer decided: "manual", "hint", "rules", "learned", "classifier" or "default"
    policy_version: str
    cascade: bool = False  # dispatch verifies the first model's answer and may escalate along the chain
    score: float | None = None  # the learned router's score, when it decided
    arm: str | None = None  # "stable" or "canary" while a canary runs (policy.canary), else None

    def to_log(self) -> dict[str, Any]:
        return {
            "arm": self.arm,
            "chain": list(self.chain),
            "tier": self.tier,
            "reason": self.reason,
            "rule": self.rule,
            "layer": self.layer,
            "policy_version": self.policy_version,
            "cascade": self.cascade,
            "score": self.score,
        }


@dataclass(frozen=True, slots=True)
class Constraint:
    """Limits access control puts on one request, decided outside the policy (budgets and grants need
    the state store) and applied here, so the engine stays pure.

    ``max_tier``: route no higher than this tier (a budget past its downgrade threshold, or the
    highest tier a key is granted); ``why`` says which, in the decision's reason. ``models``: only these
    models may stay in the chain (None: any)."""

    max_tier: str | None = None
    why: str = ""
    models: frozenset[str] | None = None


@dataclass(frozen=True, slots=True)
class LearnedChoice:
    """What a learned router says about one request."""

    model: str  # the fleet model to start with: the cheapest predicted good enough
    score: float  # the router's score for that choice (e.g. P(the cheap answer is good))
    uncertain: bool  # the score lies close to the threshold: verify the answer (cascade)
    explain: str = ""  # why, for the decision's reason (else the score is shown)


class LearnedRouter(Protocol):
    """A trained router, loaded at start-up (see ``policy/learned.py``). Pure: no I/O in ``choose``."""

    version: str

    def choose(self, features: Features) -> LearnedChoice: ...


# With a learned router and no rules of the config's own, only these playbook rules stay in front of
# it: the caller's explicit constraints. The soft task rules are what the router replaces.
HARD_RULES = frozenset({"critical", "quality-high-hard", "quality-high", "fast-short"})


class PolicyEngine:
    """Decides where each request goes. Build once per config; ``decide`` is safe to call concurrently."""

    def __init__(self, config: Config, *, learned: LearnedRouter | None = None) -> None:
        self.config = config
        self.learned = learned
        self.version = config.policy_version() + (f"+{learned.version}" if learned is not None else "")
        self._cascade = config.policy.cascade
        self._tier_of = {m.name: m.tier for m in config.models}
        self._tier_members = {t: tuple(m.name for m in config.tier_models(t)) for t in config.tiers}
        self._fallback_map = config.policy.fallbacks
        rules = config.policy.rules if config.policy.rules is not None else PLAYBOOK_RULES
        if learned is not None and config.policy.rules is None:
            rules = tuple(r for r in PLAYBOOK_RULES if r.name in HARD_RULES)
        default = config.policy.default if config.policy.rules is not None else PLAYBOOK_DEFAULT
        self.rules: tuple[CompiledRule, ...] = tuple(compile_rule(r) for r in rules)
        self._rule_routes = {
            r.name: self._route(r.rule.tier, r.rule.model, r.rule.fallbacks) for r in self.rules
        }
        self._default_route = self._route(default.tier, default.model, default.fallbacks)
        self._default_target = default
        self._tier_routes = {t: self._route(t, None, ()) for t in config.tiers}
        self._manual_routes = {m.name: self._route(None, m.name, ()) for m in config.models}
        # A learned choice escalates upwards: the chosen model, then every stronger tier cheapest first.
        self._escalation = {m.name: self._escalation_chain(m.name) for m in config.models}

    # -- chain construction (start-up only) --

    def _resolve_tier(self, tier: str) -> tuple[str, str]:
        """The tier's name and first tier at or above it that has models (else the nearest below)."""
        tiers = self.config.tiers
        start = tiers.index(tier)
        for candidate in (*tiers[start:], *reversed(tiers[:start])):
            if self._tier_members[candidate]:
                return tier, candidate
        raise RequestError("the fleet has no models", status=503)  # Config requires ≥1 model

    def _expand(self, target: str) -> tuple[str, ...]:
        if target in self._tier_members:
            return self._tier_members[self._resolve_tier(target)[1]]
        return (target,)

    def _route(
        self, tier: str | None, model: str | None, fallbacks: tuple[str, ...]
    ) -> tuple[tuple[str, ...], str]:
        """(chain, effective tier) for a target: its models, their configured fallbacks, then the
        target's own fallbacks, each model once."""
        if model is not None:
            primary: tuple[str, ...] = (model,)
            effective = self._tier_of[model]
        else:
            assert tier is not None
            effective = self._resolve_tier(tier)[1]
            primary = self._tier_members[effective]
        chain: list[str] = []
        for name in primary:
            if name not in chain:
                chain.append(name)
        for name in list(chain):
            for fallback in self._fallback_map.get(name, ()):
                chain.extend(m for m in self._expand(fallback) if m not in chain)
        for fallback in fallbacks:
            chain.extend(m for m in self._expand(fallback) if m not in chain)
        return tuple(chain), effective

    def _escalation_chain(self, model: str) -> tuple[str, ...]:
        tiers = self.config.tiers
        chain = [model]
        for tier in tiers[tiers.index(self._tier_of[model]) :]:
            chain.extend(m for m in self._tier_members[tier] if m not in chain)
        return tuple(chain)

    def _cascades(self, tier: str, *, uncertain: bool = False) -> bool:
        cascade = self._cascade
        if cascade is None:
            return False
        if cascade.when == "uncertain":
            return uncertain
        return tier in cascade.tiers

    # -- per request --

    def decide(
        self,
        features: Features,
        *,
        model: str = "auto",
        classified_tier: str | None = None,
        constraint: Constraint | None = None,
    ) -> Decision:
        """Route one request. ``model`` is what the client asked for: ``auto``, a tier or a model name.
        ``classified_tier`` is the small-LLM classifier's answer, when one is configured and answered.
        ``constraint`` caps the tier and narrows the chain (see Constraint)."""
        decision = self._decide(features, model, classified_tier)
        return decision if constraint is None else self._constrain(decision, constraint)

    def _constrain(self, decision: Decision, constraint: Constraint) -> Decision:
        tiers = self.config.tiers
        cap = constraint.max_tier
        if cap is not None and tiers.index(decision.tier) > tiers.index(cap):
            chain, tier = self._tier_routes[cap]
            decision = replace(
                decision,
                chain=chain,
                tier=tier,
                reason=f"{decision.reason}; {constraint.why} → {tier}",
                cascade=self._cascades(tier),
            )
        allowed = constraint.models
        if allowed is not None:
            chain = tuple(m for m in decision.chain if m in allowed)
            if not chain:
                raise AccessDenied(
                    f"model: none of the models this request was routed to ({', '.join(decision.chain)}) "
                    "is allowed for this key",
                    status=403,
                    code="model_not_allowed",
                )
            if chain != decision.chain:
                decision = replace(decision, chain=chain, tier=self._tier_of[chain[0]])
        return decision

    def _decide(self, features: Features, model: str, classified_tier: str | None) -> Decision:
        if model not in AUTO_MODELS:
            if model in self._manual_routes:
                chain, tier = self._manual_routes[model]
                return Decision(
                    chain,
                    tier,
                    f"manual: model {model!r} requested by name",
                    "manual",
                    "manual",
                    self.version,
                )
            if model in self._tier_routes:
                chain, tier = self._tier_routes[model]
                return Decision(
                    chain, tier, f"tier {model!r} requested as model", "tier-request", "hint", self.version
                )
            raise RequestError(
                f"model: unknown model {model!r}; use 'auto', a tier ({', '.join(self.config.tiers)}) "
                f"or a model of the fleet (GET /v1/models)",
                param="model",
                status=404,
                code="model_not_found",
            )
        if features.tier is not None:
            route = self._tier_routes.get(features.tier)
            if route is None:
                raise RequestError(
                    f"tier hint: unknown tier {features.tier!r}; tiers: {', '.join(self.config.tiers)}",
                    param="x-tierwise-tier",
                )
            chain, tier = route
            return Decision(
                chain, tier, f"hint: tier {features.tier!r} requested", "tier-hint", "hint", self.version
            )
        rule = first_match(self.rules, features)
        if rule is not None:
            chain, tier = self._rule_routes[rule.name]
            return Decision(
                chain,
                tier,
                f"rule {rule.name}: {rule.explain(features)} → {tier}",
                rule.name,
                "rules",
                self.version,
                cascade=self._cascades(tier),
            )
        if self.learned is not None:
            choice = self.learned.choose(features)
            tier = self._tier_of[choice.model]
            unsure = " (uncertain)" if choice.uncertain else ""
            return Decision(
                self._escalation[choice.model],
                tier,
                f"learned {self.learned.version}: {choice.explain or f'score {choice.score:.3f}'}{unsure} "
                f"→ {choice.model}",
                "learned",
                "learned",
                self.version,
                cascade=self._cascades(tier, uncertain=choice.uncertain),
                score=choice.score,
            )
        if classified_tier is not None and classified_tier in self._tier_routes:
            chain, tier = self._tier_routes[classified_tier]
            return Decision(
                chain,
                tier,
                f"classifier: {classified_tier} → {tier}",
                "classifier",
                "classifier",
                self.version,
                cascade=self._cascades(tier),
            )
        chain, tier = self._default_route
        return Decision(
            chain,
            tier,
            f"default: no rule matched (task={features.task}) → {tier}",
            "default",
            "default",
            self.version,
            cascade=self._cascades(tier),
        )

    def tier_of(self, model: str) -> str:
        return self._tier_of[model]

    @property
    def default_target(self) -> Target:
        return self._default_target
