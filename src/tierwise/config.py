"""The configuration: one YAML file, validated once at start-up into frozen typed objects.

Every error names the field path and what was expected, e.g.
``models[2].price.input_per_mtok: must be ≥ 0``. Unknown keys are errors. Secrets are never in the
file: providers name the environment variable that holds their key (``api_key_env``).
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import orjson
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .errors import ConfigError
from .features import FEATURE_NAMES

DEFAULT_TIERS: tuple[str, ...] = ("draft", "review", "execution")
OPERATORS: tuple[str, ...] = ("in", "not_in", "<", "<=", ">", ">=", "==", "!=", "regex")


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Price(_Frozen):
    """USD per one million tokens."""

    input_per_mtok: float = Field(ge=0, allow_inf_nan=False)
    output_per_mtok: float = Field(ge=0, allow_inf_nan=False)

    def cost(self, input_tokens: int, output_tokens: int) -> float:
        return (input_tokens * self.input_per_mtok + output_tokens * self.output_per_mtok) / 1_000_000


class Timeouts(_Frozen):
    """Seconds. ``first_byte`` bounds the wait for the first streamed event (and for a whole
    non-streamed answer together with ``total``); ``read`` bounds the silence between events."""

    connect: float = Field(default=5.0, gt=0)
    first_byte: float = Field(default=60.0, gt=0)
    read: float = Field(default=60.0, gt=0)
    total: float = Field(default=600.0, gt=0)


class ProviderConfig(_Frozen):
    kind: Literal["openai", "anthropic", "replay"]
    base_url: str | None = None
    api_key_env: str | None = None
    headers: dict[str, str] = Field(default_factory=dict)
    timeouts: Timeouts = Timeouts()
    dataset: str | None = None  # replay: a built-in dataset name or a path
    api_version: str | None = None  # anthropic: the anthropic-version header

    @model_validator(mode="after")
    def _needs(self) -> ProviderConfig:
        if self.kind in ("openai", "anthropic") and not self.base_url:
            raise ValueError(f"base_url: required for kind {self.kind!r}")
        if self.kind == "replay" and not self.dataset:
            raise ValueError("dataset: required for kind 'replay'")
        if self.base_url and not re.match(r"^https?://", self.base_url):
            raise ValueError(f"base_url: must start with http:// or https://, got {self.base_url!r}")
        return self

    def api_key(self, name: str) -> str | None:
        """Read the key from the environment. Raises ConfigError naming the variable, never its value."""
        if not self.api_key_env:
            return None
        value = os.environ.get(self.api_key_env)
        if not value:
            raise ConfigError(f"providers.{name}.api_key_env: {self.api_key_env} is not set")
        return value


class PromptTemplate(_Frozen):
    """How one model is prompted: a prefix and suffix around the system prompt, and message rewrites
    for models that read prompts differently (``fold_system``: no system role, so the system prompt
    goes at the head of the first user turn). Applied to every call of the model, in the adapter layer.
    ``id`` names it in the ledger's attempts (default: a hash of its settings)."""

    id: str | None = Field(default=None, min_length=1, max_length=64)
    system_prefix: str = ""
    system_suffix: str = ""
    # A system prompt for requests that carry none (prefix and suffix then wrap it).
    default_system: str = ""
    fold_system: bool = False
    # developer → system: for upstreams that predate OpenAI's developer role.
    developer_as_system: bool = False

    def template_id(self) -> str:
        """The id the ledger records: ``id``, or a short hash of the settings."""
        if self.id is not None:
            return self.id
        digest = hashlib.sha256(orjson.dumps(self.model_dump(), option=orjson.OPT_SORT_KEYS)).hexdigest()
        return "tpl-" + digest[:10]


class ModelEntry(_Frozen):
    name: str = Field(min_length=1)
    provider: str
    upstream: str = Field(min_length=1)
    price: Price
    context_window: int = Field(gt=0)
    tier: str
    max_output_tokens: int | None = Field(default=None, gt=0)
    capabilities: frozenset[str] = frozenset()
    template: PromptTemplate | None = None

    @property
    def template_id(self) -> str | None:
        """The prompt template's id, as the ledger's attempts record it (None: no template)."""
        return self.template.template_id() if self.template is not None else None

    def fits(self, tokens: int) -> bool:
        """Whether a request needing ``tokens`` (input and reserved output) fits the context window."""
        return tokens <= self.context_window

    def cost(self, input_tokens: int, output_tokens: int) -> float:
        return self.price.cost(input_tokens, output_tokens)


EMBEDDING_TIER = "embedding"


class EmbeddingModel(_Frozen):
    """A model ``POST /v1/embeddings`` forwards to. Embeddings are not routed (a vector from another
    model is not a cheaper equivalent): the request's ``model`` names one of these, or any other name
    takes the first. ``max_input_tokens`` is the model's own limit, for its ledger entry."""

    name: str = Field(min_length=1)
    provider: str
    upstream: str = Field(min_length=1)
    input_per_mtok: float = Field(ge=0, allow_inf_nan=False)
    max_input_tokens: int = Field(default=8192, gt=0)

    def entry(self) -> ModelEntry:
        """This model as a ModelEntry of the ``embedding`` tier: calls and ledger rows treat it alike."""
        return ModelEntry(
            name=self.name,
            provider=self.provider,
            upstream=self.upstream,
            price=Price(input_per_mtok=self.input_per_mtok, output_per_mtok=0.0),
            context_window=self.max_input_tokens,
            tier=EMBEDDING_TIER,
        )


class Target(_Frozen):
    """Where requests go: a ``tier`` or a ``model``, with optional ``fallbacks`` (model or tier names).
    The policy's ``default`` is a Target; a Rule is a Target with a name and conditions."""

    tier: str | None = None
    model: str | None = None
    fallbacks: tuple[str, ...] = ()

    @model_validator(mode="after")
    def _one_action(self) -> Target:
        if (self.tier is None) == (self.model is None):
            raise ValueError("exactly one of 'tier' or 'model' is required")
        return self


class Rule(Target):
    """``when`` maps a feature name to a value (equality) or to ``{operator: operand}``; all must hold."""

    name: str = Field(min_length=1)
    when: dict[str, Any] = Field(default_factory=dict)

    @field_validator("when")
    @classmethod
    def _conditions(cls, when: dict[str, Any]) -> dict[str, Any]:
        for feature, test in when.items():
            if feature not in FEATURE_NAMES:
                raise ValueError(f"{feature}: unknown feature; known: {', '.join(sorted(FEATURE_NAMES))}")
            if not isinstance(test, dict):
                continue
            for op, operand in test.items():
                if op not in OPERATORS:
                    raise ValueError(f"{feature}.{op}: unknown operator; use one of {', '.join(OPERATORS)}")
                if op in ("in", "not_in") and not isinstance(operand, list):
                    raise ValueError(f"{feature}.{op}: must be a list")
                if op in ("<", "<=", ">", ">=") and (
                    isinstance(operand, bool) or not isinstance(operand, int | float)
                ):
                    raise ValueError(f"{feature}.{op}: must be a number")
                if op == "regex":
                    try:
                        re.compile(str(operand))
                    except re.error as exc:
                        raise ValueError(f"{feature}.regex: invalid regular expression: {exc}") from None
        return when


class RetryConfig(_Frozen):
    attempts: int = Field(default=2, ge=1, le=10)  # tries per model, including the first
    backoff_s: float = Field(default=0.2, ge=0)  # base of the jittered exponential backoff
    max_backoff_s: float = Field(default=8.0, ge=0)
    max_retry_after_s: float = Field(default=10.0, ge=0)  # a longer Retry-After moves on to the next model


class CooldownConfig(_Frozen):
    """The circuit breaker: when a model is ejected (tried only after every healthy model of a chain,
    by every replica sharing ``storage.state``) and for how long. Only retryable failures count
    (timeouts, 5xx, refused connections, 429s); a 4xx rejection is the request's fault, not the model's.

    ``mode: ratio`` (the default; ``breaker.py``): a model is ejected when, of at least ``min_calls``
    calls in the last ``window_s`` seconds, at least ``failure_ratio`` failed. Each replica judges from
    its own calls, and shares the ejection. It lasts ``seconds``; with ``max_seconds``, repeated
    ejections last ``seconds`` × their number, up to ``max_seconds``. Back from an ejection, a model is
    ejected again by ``failures`` failed calls in a row before its first success.

    ``mode: consecutive``: ``failures`` failed calls in a row, counted across replicas, eject the model
    for ``seconds``.

    ``failures`` and ``seconds`` also pace the tier classifier's own breaker, in either mode.

    The defaults were chosen with ``python bench/breaker.py`` (``--sweep`` adds the grid behind them; a
    simulated clock and seeded errors, so every run prints the same digits): a primary and a fallback,
    two attempts per model, at 20 and at 2 requests a second. At 30% random errors the primary still
    answered 90.4% of requests at both rates; ``consecutive`` (3 failures, 30 s) left it 2.8% and 24.1%.
    Over six hard outages of 37 s to 5 min it was ejected 4.0 s (20 req/s) and 4.5 s (2 req/s) into each,
    against 0.1 s and 1.0 s, and answered again 4.2 s and 5.3 s after each ended (mean; 7.5 s and 9.0 s
    at most), against 16.6 s and 18.5 s. A ``failure_ratio`` of 0.5 ejected 1 s sooner but was tripped
    by 30% errors at 2 req/s (85% served); growing ejections (``max_seconds``) spared a few requests
    the dead primary (of those during outages, 4.5% → 3.8% tried it at 20 req/s, 12.8% → 6.2% at 2 req/s)
    but delayed recovery to 19–37 s (30 s growing to 300 s: not before the next outage). A model is
    ejected by its failure ratio only once it gets ``min_calls`` calls within ``window_s``: by default
    2 calls a second, about one request with its retry. On fleets quieter than that only
    ``mode: consecutive`` ejects a dead model.
    """

    mode: Literal["ratio", "consecutive"] = "ratio"
    failures: int = Field(default=3, ge=1, le=1000)  # failed calls in a row that eject (ratio: half-open)
    seconds: float = Field(default=10.0, gt=0, le=86_400, allow_inf_nan=False)  # an ejection's length
    max_seconds: float | None = Field(default=None, gt=0, le=86_400, allow_inf_nan=False)  # None: no growth
    window_s: float = Field(default=10.0, gt=0, le=3600, allow_inf_nan=False)
    min_calls: int = Field(default=20, ge=1, le=1_000_000)  # fewer calls in the window never eject
    failure_ratio: float = Field(default=0.6, gt=0, le=1, allow_inf_nan=False)  # failed ÷ calls

    @model_validator(mode="after")
    def _consistent(self) -> CooldownConfig:
        if self.mode == "consecutive":
            for name in ("max_seconds", "window_s", "min_calls", "failure_ratio"):
                if name in self.model_fields_set:
                    raise ValueError(f"{name}: only for mode ratio; mode is consecutive")
        elif self.max_seconds is not None and self.max_seconds < self.seconds:
            raise ValueError(f"max_seconds: must be ≥ seconds ({self.seconds:g}), got {self.max_seconds:g}")
        return self


class LearnedTarget(_Frozen):
    """How the learned router's threshold is set, measured on held-out data at training time: exactly
    one of a share of calls to the strongest model, a budget, or a quality floor relative to
    always-strongest (0.95 = keep 95% of its quality)."""

    strong_share: float | None = Field(default=None, ge=0, le=1)
    budget_per_1k_usd: float | None = Field(default=None, gt=0)
    quality_floor: float | None = Field(default=None, gt=0, le=1)

    @model_validator(mode="after")
    def _one(self) -> LearnedTarget:
        if sum(v is not None for v in (self.strong_share, self.budget_per_1k_usd, self.quality_floor)) != 1:
            raise ValueError("exactly one of strong_share, budget_per_1k_usd or quality_floor is required")
        return self


class LearnedConfig(_Frozen):
    """The learned router: an artefact written by ``tierwise train``; relative paths are relative to
    the config file. ``target`` picks the operating point (stored thresholds in the artefact);
    ``threshold`` overrides it. Requests whose score lies within ``uncertain_band`` of the threshold
    go through the cascade, when one is configured. An artefact of ``tierwise train --router
    utility`` routes by predicted quality − λ·cost: ``target`` sets λ the same way, ``cost_weight``
    overrides it (quality given up per strongest-model call's worth of spend), and ``uncertain_band``
    is the utility margin to the runner-up."""

    artefact: str = Field(min_length=1)
    target: LearnedTarget | None = None
    threshold: float | None = None
    cost_weight: float | None = Field(default=None, ge=0, allow_inf_nan=False)
    uncertain_band: float = Field(default=0.0, ge=0, le=1)


class VerifierConfig(_Frozen):
    """One check of a cheap answer. ``kind``: json_schema (against the request's response_format),
    regex (``pattern`` must match), non_empty, no_refusal, not_truncated, tool_calls (known tool,
    arguments valid against its schema), arithmetic (every ``a op b = c`` the answer states is right),
    uses_numbers (the answer uses every number of the request), agreement (``samples`` cheap answers
    must agree: final numbers or text, see ``answer`` and ``min_overlap``; samples are drawn at
    ``temperature``), judge (the ``model`` grades the answer with ``rubric`` within ``timeout_s``;
    accept at ``min_score`` or above). See ``policy/cascade.py``."""

    kind: Literal[
        "json_schema",
        "regex",
        "non_empty",
        "no_refusal",
        "not_truncated",
        "tool_calls",
        "arithmetic",
        "uses_numbers",
        "agreement",
        "judge",
    ]
    name: str | None = None
    pattern: str | None = None
    model: str | None = None
    rubric: str | None = None
    min_score: float | None = Field(default=None, ge=1, le=10)
    samples: int = Field(default=2, ge=2, le=5)
    answer: Literal["auto", "number", "text"] = "auto"
    min_overlap: float | None = Field(default=None, ge=0, le=1)
    temperature: float = Field(default=0.7, ge=0, le=2)
    timeout_s: float = Field(default=10.0, gt=0)


class CascadeConfig(_Frozen):
    """Escalation: the first model of a decision answers, the verifiers judge, a failed check moves on
    to the next model of the chain (the failed attempt is charged). ``when: uncertain`` runs it only
    where the learned router is unsure; ``always`` on every decision whose first model is in ``tiers``."""

    verifiers: tuple[VerifierConfig, ...] = Field(min_length=1)
    when: Literal["always", "uncertain"] = "always"
    tiers: tuple[str, ...] = ("draft",)
    max_escalations: int = Field(default=1, ge=1, le=5)


class ClassifierConfig(_Frozen):
    """A cheap model of the fleet asked which tier a request needs, for fleets without training data.
    Cached by request hash; past ``timeout_ms`` the rules decide."""

    model: str
    timeout_ms: int = Field(default=800, gt=0)
    cache_size: int = Field(default=10_000, ge=0)
    rubric: str | None = None


class ShadowConfig(_Frozen):
    """Training labels from live traffic. On a sampled ``share`` of the non-streamed requests another
    model answered, tierwise also asks ``model`` (usually the strongest) the same request — after the
    response has been sent, charged and logged as a ledger row of its own — and records whether the
    two answers agree (``answer`` and ``min_overlap`` as for the agreement verifier) as feedback of
    source ``shadow`` on the request: 1 agree, 0 disagree. ``tierwise train --ledger`` learns from it."""

    model: str = Field(min_length=1)
    share: float = Field(gt=0, le=1)
    answer: Literal["auto", "number", "text"] = "auto"
    min_overlap: float | None = Field(default=None, ge=0, le=1)
    timeout_s: float = Field(default=60.0, gt=0)
    judge: ShadowJudgeConfig | None = None


class ShadowJudgeConfig(_Frozen):
    """A judge of the shadow: ``model`` compares the served answer with the shadow model's, blind and
    pairwise, in both orders (a verdict that flips with the order is a tie). The verdict — the served
    answer wins, ties or loses — is stored as feedback of source ``judge`` (1, 0.5, 0), reported per
    task type and policy version with a 95% interval, and counted in /metrics."""

    model: str = Field(min_length=1)
    rubric: str | None = None
    timeout_s: float = Field(default=60.0, gt=0)


class CanaryGuard(_Frozen):
    """How much worse than the stable policy a canary may be before it is rolled back: each bound is an
    absolute increase of a rate (0.05 = 5 points), tested one-sided at ``confidence`` (the canary is
    rolled back only when even the lower end of its confidence interval is past the bound), and only
    once the canary has ``min_samples`` requests. None turns a check off.

    Two checks read labels that come later than the answer, so each also waits for ``min_labels``
    labels in both arms: ``judge_loss_rate``, the increase of the share of judged shadows the routed
    answer lost (``policy.shadow.judge``), and ``feedback_drop``, the fall of the mean feedback score
    (0..1, ``POST /v1/feedback``), rolled back when even the upper end of its interval is below it."""

    escalation_rate: float | None = Field(default=0.05, gt=0, le=1)  # escalated for quality
    error_rate: float | None = Field(default=0.01, gt=0, le=1)  # failed requests
    judge_loss_rate: float | None = Field(default=0.05, gt=0, le=1)  # judged worse than the baseline
    feedback_drop: float | None = Field(default=0.1, gt=0, le=1)  # mean feedback score, 0..1
    min_labels: int = Field(default=30, ge=10)  # judged shadows / feedback per arm before those checks
    confidence: float = Field(default=0.99, ge=0.5, lt=1)


class CanaryConfig(_Frozen):
    """A second policy beside the stable one, on a sticky ``share`` of the traffic: ``sticky_by``
    ``user`` (the body's ``user`` field, else the request), ``key`` (the virtual key) or
    ``header:NAME``. Rolled back automatically by ``guard``; see ``canary.py``."""

    policy: PolicyConfig
    share: float = Field(gt=0, lt=1)
    sticky_by: str = Field(default="user", pattern=r"^(user|key|header:[A-Za-z0-9-]{1,64})$")
    min_samples: int = Field(default=200, ge=10)
    guard: CanaryGuard = CanaryGuard()

    @model_validator(mode="after")
    def _no_nesting(self) -> CanaryConfig:
        if self.policy.canary is not None:
            raise ValueError("policy: a canary's policy cannot have a canary of its own")
        return self


class PolicyConfig(_Frozen):
    rules: tuple[Rule, ...] | None = None  # None: the built-in routing playbook
    default: Target = Target(tier="review")
    fallbacks: dict[str, tuple[str, ...]] = Field(default_factory=dict)  # model → models/tiers to try next
    counterfactual_model: str | None = None  # "always-strongest" reference; default: priciest top-tier model
    retry: RetryConfig = RetryConfig()
    cooldown: CooldownConfig = CooldownConfig()
    learned: LearnedConfig | None = None
    cascade: CascadeConfig | None = None
    classifier: ClassifierConfig | None = None
    shadow: ShadowConfig | None = None
    canary: CanaryConfig | None = None


class ExactCacheConfig(_Frozen):
    """The exact response cache: a repeat of the same request answered from memory or Redis."""

    backend: Literal["memory", "redis"] = "memory"
    ttl_s: float = Field(default=3600.0, gt=0, allow_inf_nan=False)
    max_entries: int = Field(default=10_000, ge=1)  # memory backend; Redis evicts by TTL


class SemanticCacheConfig(_Frozen):
    """The semantic cache: a single-turn request whose question is close enough (cosine similarity of
    the router's own embeddings ≥ ``threshold``) to an answered one, with the same system prompt and
    parameters, gets that answer. In each replica's memory."""

    threshold: float = Field(default=0.90, gt=0, le=1)  # bench/cache.py: the guard keeps precision
    ttl_s: float = Field(default=3600.0, gt=0, allow_inf_nan=False)
    max_entries: int = Field(default=10_000, ge=1)
    # The lexical guard: a match must keep every content term of the cached question and add no
    # number or negation (off: cosine alone decides, which confuses questions that differ in a number).
    same_terms: bool = True


class CacheConfig(_Frozen):
    """Response caches, looked up after the policy decided and before any upstream call. ``scope``:
    who may be served an answer another request paid for (``key``, ``tenant`` — keyless requests
    share the anonymous scope — or ``global``). Sampled (temperature > 0), tool-using and ``n > 1``
    requests are never cached unless allowed here."""

    scope: Literal["key", "tenant", "global"] = "tenant"
    exact: ExactCacheConfig | None = ExactCacheConfig()
    semantic: SemanticCacheConfig | None = None  # opt-in
    allow_sampled: bool = False
    allow_tools: bool = False
    allow_n: bool = False


class StorageConfig(_Frozen):
    """Where the ledger and shared state live. ``capture_prompts`` keeps each request's messages in
    its ledger row — off by default: turn it on to retrain the learned router on your own traffic
    (``tierwise train --ledger``), knowing the ledger then holds what your users sent.

    ``spill_dir``: where rows wait while the ledger's store is unavailable (and where rows no store
    will take are kept, in ``dead-letter.jsonl``); by default ``<db path>.spill/`` for SQLite and
    ``./tierwise-spill/<host>-<port>-<db>-<table>/`` for PostgreSQL (processes that share one are safe:
    each appends to a segment it alone holds). ``spill_max_bytes`` bounds it (0: no spill; rows the
    store cannot take are then lost, and counted).

    ``journal`` (on by default): each row is appended to a journal file in the spill directory (a
    memory-mapped file: a copy into the page cache, no fsync) before its answer is sent, and dropped
    once the row is in the store; a process killed before then (SIGKILL, OOM) leaves it, and the next
    start with the same spill directory — or a living replica sharing it, within 10 s — writes its
    rows, each once. So a kill
    loses no answered request's row (a machine crash or power cut can lose the last few seconds, as it
    can the store's own last commits). Share a spill directory only between processes of one ledger:
    what one leaves, another writes into its own store. The journal costs about 8 µs of CPU per row
    (``python bench/journal.py``); ``false`` turns it off, and a kill then loses the rows of the answers
    sent in the last ~50 ms (the write batching) and of any the queue still held."""

    ledger: str = "sqlite:///./tierwise.db"
    state: str = "memory://"
    ledger_queue: int = Field(default=10_000, ge=1)
    capture_prompts: bool = False
    spill_dir: str | None = None
    spill_max_bytes: int = Field(default=1 << 30, ge=0)
    journal: bool = True

    @field_validator("ledger")
    @classmethod
    def _ledger(cls, url: str) -> str:
        if not re.match(r"^(sqlite:///|postgres(?:ql)?://|none$)", url):
            raise ValueError(f"must be sqlite:///PATH, postgresql://… or none, got {url!r}")
        return url

    @field_validator("state")
    @classmethod
    def _state(cls, url: str) -> str:
        if not re.match(r"^(memory://|rediss?://)", url):
            raise ValueError(f"must be memory:// or redis://…, got {url!r}")
        return url


class ServerConfig(_Frozen):
    """Bounds on what one request may be. Anything past them is the client's error (400, or 413 for
    size), found while parsing and before any routing: a request can never make the gateway fail in a
    way that blames the server, nor hold back the ledger."""

    max_body_bytes: int = Field(default=8 * 1024 * 1024, gt=0)
    # JSON nesting of the body: the ledger's encoder stops at 254 levels and OpenAI's structured
    # outputs at 5 levels of schema, so 64 leaves room for any real tool schema.
    max_json_depth: int = Field(default=64, ge=4, le=200)
    # JSON values (objects, arrays, scalars) in the body: bounds the CPU one request can cost.
    max_json_items: int = Field(default=200_000, ge=100)
    max_messages: int = Field(default=4096, ge=1)
    max_tools: int = Field(default=128, ge=0)  # OpenAI's own limit
    # Characters of message text (all messages, all parts): ~1M tokens by the features' estimate.
    max_input_chars: int = Field(default=4_000_000, gt=0)
    # Prometheus counters and histograms at GET /metrics (about 20 µs of CPU per request).
    metrics: bool = True
    # One JSON line per request on the logger "tierwise.access" at this level: id, key, model, tier,
    # rule, status, latency, cost — never the prompt or a key.
    access_log: Literal["off", "info", "debug"] = "info"
    # OpenTelemetry spans of every request and its upstream calls (tracing.py; the otel extra).
    tracing: bool = False


class Budget(_Frozen):
    """USD a key or tenant may spend per UTC day and per UTC month (None: no limit). Past
    ``downgrade_at`` of either, requests are routed no higher than ``downgrade_tier`` (default: the
    cheapest tier); at 100% they are refused with 429 ``budget_exceeded`` until the period resets.
    ``critical_hints``: whether a request hinted ``quality: high`` or ``risk: critical`` keeps its tier
    while downgraded (``keep``) or is downgraded like any other (``downgrade``)."""

    daily_usd: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    monthly_usd: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    downgrade_at: float = Field(default=0.8, gt=0, le=1)
    downgrade_tier: str | None = None
    critical_hints: Literal["keep", "downgrade"] = "keep"


class RateLimits(_Frozen):
    """Requests and tokens (estimated input + requested output) per minute (None: no limit)."""

    requests_per_minute: int | None = Field(default=None, gt=0)
    tokens_per_minute: int | None = Field(default=None, gt=0)


class Grants(_Frozen):
    """What a tenant or key may use. A key narrows its tenant's grants, never widens them."""

    budget: Budget = Budget()
    rate_limits: RateLimits = RateLimits()
    allowed_tiers: tuple[str, ...] | None = None  # None: every tier
    allowed_models: tuple[str, ...] | None = None  # None: every model of the allowed tiers
    user_tier: str | None = None  # fed to the rules as the ``user_tier`` feature unless the request hints one


class TenantConfig(Grants):
    pass


class KeyConfig(Grants):
    """A virtual key declared in the config: its ``id`` (what logs and the ledger show) and the
    SHA-256 of its secret as ``sha256:<64 hex>`` (``tierwise keys hash`` prints it), never the key."""

    id: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")
    tenant: str
    hash: str = Field(pattern=r"^sha256:[0-9a-f]{64}$")


class AuthConfig(_Frozen):
    """``mode: keys`` makes a virtual key mandatory on every gateway request (``Authorization: Bearer``
    or ``x-api-key``). The master key, read from the ``master_key_env`` variable, opens ``/admin/``."""

    mode: Literal["none", "keys"] = "none"
    master_key_env: str = "TIERWISE_MASTER_KEY"
    # Output tokens a reservation assumes when the request sets no max_tokens and the model no
    # max_output_tokens.
    default_max_output_tokens: int = Field(default=1024, gt=0)


class Config(_Frozen):
    providers: dict[str, ProviderConfig]
    models: tuple[ModelEntry, ...] = Field(min_length=1)
    tiers: tuple[str, ...] = DEFAULT_TIERS
    policy: PolicyConfig = PolicyConfig()
    storage: StorageConfig = StorageConfig()
    server: ServerConfig = ServerConfig()
    cache: CacheConfig | None = None  # None: no response cache
    auth: AuthConfig = AuthConfig()
    tenants: dict[str, TenantConfig] = Field(default_factory=dict)
    keys: tuple[KeyConfig, ...] = ()
    embeddings: tuple[EmbeddingModel, ...] = ()  # what POST /v1/embeddings forwards to; () turns it off

    @model_validator(mode="after")
    def _references(self) -> Config:
        errors: list[str] = []
        errors += self._access_errors()
        errors += self._embedding_errors()
        if len(set(self.tiers)) != len(self.tiers):
            errors.append("tiers: names must be unique")
        names: set[str] = set()
        for i, model in enumerate(self.models):
            where = f"models[{i}]"
            if model.name in names:
                errors.append(f"{where}.name: duplicate model name {model.name!r}")
            names.add(model.name)
            if model.provider not in self.providers:
                errors.append(
                    f"{where}.provider: unknown provider {model.provider!r}; "
                    f"defined: {', '.join(sorted(self.providers)) or 'none'}"
                )
            if model.tier not in self.tiers:
                errors.append(f"{where}.tier: unknown tier {model.tier!r}; tiers: {', '.join(self.tiers)}")
        targets = names | set(self.tiers)

        def check(where: str, tier: str | None, model: str | None, fallbacks: tuple[str, ...]) -> None:
            if tier is not None and tier not in self.tiers:
                errors.append(f"{where}.tier: unknown tier {tier!r}; tiers: {', '.join(self.tiers)}")
            if model is not None and model not in names:
                errors.append(f"{where}.model: unknown model {model!r}; models: {', '.join(sorted(names))}")
            for j, fallback in enumerate(fallbacks):
                if fallback not in targets:
                    errors.append(f"{where}.fallbacks[{j}]: {fallback!r} is neither a model nor a tier")

        for i, rule in enumerate(self.policy.rules or ()):
            check(f"policy.rules[{i}]", rule.tier, rule.model, rule.fallbacks)
        rule_names = [rule.name for rule in self.policy.rules or ()]
        for name in {n for n in rule_names if rule_names.count(n) > 1}:
            errors.append(f"policy.rules: duplicate rule name {name!r}")
        check(
            "policy.default",
            self.policy.default.tier,
            self.policy.default.model,
            self.policy.default.fallbacks,
        )
        for model, fallbacks in self.policy.fallbacks.items():
            if model not in names:
                errors.append(f"policy.fallbacks.{model}: unknown model; models: {', '.join(sorted(names))}")
            check(f"policy.fallbacks.{model}", None, None, fallbacks)
        shadow = self.policy.shadow
        if shadow is not None and shadow.model not in names:
            errors.append(f"policy.shadow.model: unknown model {shadow.model!r}")
        if shadow is not None and shadow.judge is not None and shadow.judge.model not in names:
            errors.append(f"policy.shadow.judge.model: unknown model {shadow.judge.model!r}")
        if shadow is not None and self.storage.ledger == "none":
            errors.append(
                "policy.shadow: its calls and labels are kept in the ledger; storage.ledger is none"
            )
        for i, verifier in enumerate(self.policy.cascade.verifiers if self.policy.cascade else ()):
            if verifier.model is not None and verifier.model not in names:
                errors.append(f"policy.cascade.verifiers[{i}].model: unknown model {verifier.model!r}")
            if verifier.kind == "judge" and verifier.model is None:
                errors.append(f"policy.cascade.verifiers[{i}].model: required for a judge")
            if verifier.kind == "regex" and not verifier.pattern:
                errors.append(f"policy.cascade.verifiers[{i}].pattern: required for a regex verifier")
            if verifier.pattern is not None:
                try:
                    re.compile(verifier.pattern)
                except re.error as exc:
                    errors.append(f"policy.cascade.verifiers[{i}].pattern: invalid regular expression: {exc}")
            for field, kinds in (
                ("pattern", ("regex",)),
                ("model", ("judge",)),
                ("rubric", ("judge",)),
                ("min_score", ("judge",)),
                ("min_overlap", ("agreement",)),
            ):
                if getattr(verifier, field) is not None and verifier.kind not in kinds:
                    errors.append(
                        f"policy.cascade.verifiers[{i}].{field}: only for {' or '.join(kinds)} verifiers, "
                        f"not {verifier.kind}"
                    )
        names_seen = [v.name or v.kind for v in self.policy.cascade.verifiers] if self.policy.cascade else []
        for name in sorted({n for n in names_seen if names_seen.count(n) > 1}):
            errors.append(f"policy.cascade.verifiers: two verifiers named {name!r}; give each its own name")
        for tier in self.policy.cascade.tiers if self.policy.cascade else ():
            if tier not in self.tiers:
                errors.append(f"policy.cascade.tiers: unknown tier {tier!r}; tiers: {', '.join(self.tiers)}")
        if self.policy.classifier is not None and self.policy.classifier.model not in names:
            errors.append(f"policy.classifier.model: unknown model {self.policy.classifier.model!r}")
        if self.policy.counterfactual_model is not None and self.policy.counterfactual_model not in names:
            errors.append(f"policy.counterfactual_model: unknown model {self.policy.counterfactual_model!r}")
        exact = self.cache.exact if self.cache is not None else None
        if exact is not None and exact.backend == "redis" and not self.storage.state.startswith("redis"):
            errors.append(
                "cache.exact.backend: redis shares the state store's Redis; storage.state is "
                f"{self.storage.state!r} (set it to redis://… or use backend: memory)"
            )
        if errors:
            raise ValueError("\n".join(errors))
        return self

    def _embedding_errors(self) -> list[str]:
        errors: list[str] = []
        chat = {m.name for m in self.models}
        seen: set[str] = set()
        for i, model in enumerate(self.embeddings):
            where = f"embeddings[{i}]"
            if model.name in seen or model.name in chat:
                errors.append(f"{where}.name: {model.name!r} is already the name of another model")
            seen.add(model.name)
            provider = self.providers.get(model.provider)
            if provider is None:
                errors.append(
                    f"{where}.provider: unknown provider {model.provider!r}; "
                    f"defined: {', '.join(sorted(self.providers)) or 'none'}"
                )
            elif provider.kind != "openai":
                errors.append(
                    f"{where}.provider: {model.provider!r} is of kind {provider.kind}; embeddings need an "
                    "OpenAI-compatible provider (kind: openai)"
                )
        return errors

    def grant_errors(self, grants: Grants, where: str = "") -> list[str]:
        """What in ``grants`` names a tier or model the fleet does not have (keys made at run time are
        checked with this too)."""
        at = f"{where}." if where else ""
        tiers = ", ".join(self.tiers)
        models = {m.name for m in self.models}
        errors = [
            f"{at}allowed_tiers: unknown tier {t!r}; tiers: {tiers}"
            for t in grants.allowed_tiers or ()
            if t not in self.tiers
        ]
        errors += [
            f"{at}allowed_models: unknown model {m!r}" for m in grants.allowed_models or () if m not in models
        ]
        tier = grants.budget.downgrade_tier
        if tier is not None and tier not in self.tiers:
            errors.append(f"{at}budget.downgrade_tier: unknown tier {tier!r}; tiers: {tiers}")
        return errors

    def _access_errors(self) -> list[str]:
        errors: list[str] = []
        for name, tenant in self.tenants.items():
            errors += self.grant_errors(tenant, f"tenants.{name}")
        seen: set[str] = set()
        hashes: set[str] = set()
        for i, key in enumerate(self.keys):
            where = f"keys[{i}]"
            errors += self.grant_errors(key, where)
            if key.tenant not in self.tenants:
                errors.append(
                    f"{where}.tenant: unknown tenant {key.tenant!r}; "
                    f"tenants: {', '.join(sorted(self.tenants)) or 'none'}"
                )
            if key.id in seen:
                errors.append(f"{where}.id: duplicate key id {key.id!r}")
            if key.hash in hashes:
                errors.append(f"{where}.hash: the same secret as an earlier key")
            seen.add(key.id)
            hashes.add(key.hash)
        if self.auth.mode == "keys" and not self.tenants:
            errors.append("auth.mode: keys needs at least one tenant under tenants")
        return errors

    # -- derived views (cheap; computed on demand by the engine once at start-up) --

    def model(self, name: str) -> ModelEntry:
        for entry in self.models:
            if entry.name == name:
                return entry
        raise KeyError(name)

    def tier_models(self, tier: str) -> list[ModelEntry]:
        """Models of a tier, cheapest first (by the sum of input and output price)."""
        members = [m for m in self.models if m.tier == tier]
        members.sort(key=lambda m: (m.price.input_per_mtok + m.price.output_per_mtok, m.name))
        return members

    def counterfactual(self) -> ModelEntry:
        """The "always-strongest" model that savings are measured against."""
        if self.policy.counterfactual_model:
            return self.model(self.policy.counterfactual_model)
        for tier in reversed(self.tiers):
            members = self.tier_models(tier)
            if members:
                return members[-1]
        return self.models[-1]

    def policy_version(self) -> str:
        """A short hash of everything that changes routing: the policy and the fleet. The learned
        router's artefact is left out by path (resolved, so it differs between checkouts): the engine
        appends the artefact's own content hash."""
        payload = {
            "tiers": list(self.tiers),
            # The canary's policy is its own version: adding one does not change the stable one's.
            "policy": self.policy.model_dump(mode="json", exclude={"learned": {"artefact"}, "canary": True}),
            "models": [m.model_dump(mode="json") for m in self.models],
        }
        return hashlib.sha256(orjson.dumps(payload, option=orjson.OPT_SORT_KEYS)).hexdigest()[:12]


# -- loading and error messages ------------------------------------------------------------------


def _path(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part.startswith(("function-", "tagged-union", "union[")) or part in ("str", "int", "float"):
            continue
        else:
            out += f".{part}" if out else str(part)
    return out


def _describe(error: Mapping[str, Any]) -> str:
    kind = error["type"]
    ctx = error.get("ctx") or {}
    if kind == "greater_than_equal":
        return f"must be ≥ {ctx.get('ge')}"
    if kind == "greater_than":
        return f"must be > {ctx.get('gt')}"
    if kind == "less_than_equal":
        return f"must be ≤ {ctx.get('le')}"
    if kind == "missing":
        return "required"
    if kind == "extra_forbidden":
        return "unknown key"
    if kind == "literal_error":
        return f"must be one of {ctx.get('expected')}"
    if kind == "too_short":
        return "must not be empty"
    if kind == "value_error":
        return str(ctx.get("error", error["msg"]))
    return error["msg"][0].lower() + error["msg"][1:]


def _format(exc: ValidationError, source: str) -> str:
    lines = []
    errors = exc.errors(include_url=False)
    for error in errors:
        if error["type"] == "too_short" and any(
            other["loc"][: len(error["loc"])] == error["loc"] and len(other["loc"]) > len(error["loc"])
            for other in errors
        ):
            continue  # a list whose items failed is "too short" of valid items: the items' errors say why
        where = _path(error["loc"])
        message = _describe(error)
        if error["type"] == "value_error" and ("\n" in message or re.match(r"^[^\s:]+: ", message)):
            # cross-field checks already carry their own paths, relative to `where`
            for line in message.split("\n"):
                lines.append(f"{where + '.' if where else ''}{line}")
            continue
        lines.append(f"{where}: {message}" if where else message)
    return f"{source}: invalid configuration\n  " + "\n  ".join(lines)


def parse_config(data: Any, *, source: str = "config") -> Config:
    """Validate a parsed YAML/JSON document into a Config, or raise ConfigError naming each bad field."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the top level must be a mapping with providers and models")
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format(exc, source)) from None


def load_config(path: str | os.PathLike[str]) -> Config:
    """Read and validate a YAML configuration file."""
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{file}: cannot read the configuration: {exc.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(f"{file}: not valid YAML{where}: {getattr(exc, 'problem', exc)}") from None
    config = parse_config(data, source=str(file))
    if config.providers and any(p.kind == "replay" and p.dataset for p in config.providers.values()):
        # replay datasets given as relative paths are relative to the config file
        providers = {}
        for name, provider in config.providers.items():
            if provider.kind == "replay" and provider.dataset and _looks_like_path(provider.dataset):
                resolved = (file.parent / provider.dataset).resolve()
                provider = provider.model_copy(update={"dataset": str(resolved)})
            providers[name] = provider
        config = config.model_copy(update={"providers": providers})
    learned = config.policy.learned
    if learned is not None and not os.path.isabs(learned.artefact):  # relative to the config file too
        learned = learned.model_copy(update={"artefact": str((file.parent / learned.artefact).resolve())})
        config = config.model_copy(update={"policy": config.policy.model_copy(update={"learned": learned})})
    return config


def _looks_like_path(value: str) -> bool:
    return ("/" in value or value.endswith((".jsonl", ".gz", ".json"))) and not os.path.isabs(value)


CanaryConfig.model_rebuild()
