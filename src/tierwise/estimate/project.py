"""The projection: each logged request priced as it was served and as the policy would route it.

For every request the configured ``PolicyEngine`` decides on the request's ``extract_features`` (the
same features and decision the gateway would compute), and two costs are added up:

- **today**, by the first method that applies (``TODAY_METHODS``): the logged usage at the logged
  model's fleet price, when that model is in the fleet (by name or upstream id, a ``provider/``
  prefix ignored); else the logged spend (LiteLLM's ``spend``, the ledger's ``cost_usd``); else the
  logged or estimated tokens at the price of the config's always-strongest model
  (``policy.counterfactual_model``, else the priciest model of the top tier), as if every request had
  gone there.
- **routed**: the same tokens at the price of the first model of the decision's chain. The routed
  model is assumed to write as many output tokens as the logged one did; retries, fallbacks and a
  cascade's escalations are not counted.

Input tokens are the logged usage, else the features' estimate (characters / 4). Output tokens are the
logged usage, else estimated (``OUTPUT_METHOD``): the mean output of the log's requests of the same
task type that have usage (at least ``MIN_TASK_SAMPLES`` of them), else of all its requests with usage,
else ``DEFAULT_OUTPUT_TOKENS``. Since cost is linear in tokens, requests without output usage carry
their output prices per token, and the estimate is applied once the whole log has been read.

Aggregates are bounded: per group, counters over the fleet's models and the policy's rules only.
"""

from __future__ import annotations

import dataclasses
import struct
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from ..config import Config, ModelEntry
from ..errors import RequestError
from ..features import TASKS, Features, extract_features, parse_hints
from ..messages import last_user_text
from ..policy.engine import PolicyEngine
from .clusters import KEEP_CHARS, Clusters, Reservoir
from .formats import LoggedRequest, LogStats, read_logs

TODAY_METHODS: dict[str, str] = {
    "fleet-price": "logged usage × the logged model's price in the fleet",
    "logged-spend": "the logged spend",
    "strongest-price": "tokens × the price of the config's always-strongest model",
}
DEFAULT_OUTPUT_TOKENS = 300
MIN_TASK_SAMPLES = 20
OUTPUT_METHOD = (
    "requests without logged output usage: the mean output tokens of the log's requests of the same "
    f"task type with usage (when ≥ {MIN_TASK_SAMPLES}), else of all with usage, else "
    f"{DEFAULT_OUTPUT_TOKENS}"
)
NO_PROMPT = "(no prompt logged)"
EXAMPLE_CHARS = 100
_FEATURE_FIELDS = {f.name for f in dataclasses.fields(Features)}


@dataclass(frozen=True, slots=True)
class Priced:
    """One request: its features, the decision, and both costs (output cost apart when estimated)."""

    task: str
    text: str
    input_tokens: int
    output_tokens: int | None  # None: not logged, to be estimated
    today_model: str  # the fleet model or the logged model name
    today_method: str
    today_usd: float  # the full cost when output_tokens is known or spend was logged
    today_out_price: float  # USD per output token still to add (0 when spend covered it)
    routed_model: str
    tier: str
    rule: str
    layer: str
    reason: str
    routed_usd: float
    routed_out_price: float


@dataclass(slots=True)
class Tally:
    """What one group of requests (a task type, a cluster, all) adds up to."""

    requests: int = 0
    today_usd: float = 0.0
    routed_usd: float = 0.0
    input_tokens: int = 0
    logged_output_tokens: int = 0
    with_output: int = 0
    # task → [requests without output usage, Σ today's output price, Σ routed output price]
    pending: dict[str, list[float]] = field(default_factory=dict)
    routes: Counter[tuple[str, str]] = field(default_factory=Counter)  # (model, tier)
    rules: Counter[tuple[str, str]] = field(default_factory=Counter)  # (layer, rule)
    reasons: dict[str, str] = field(default_factory=dict)  # rule → one reason it gave
    tasks: Counter[str] = field(default_factory=Counter)
    methods: Counter[str] = field(default_factory=Counter)
    today_models: Counter[str] = field(default_factory=Counter)
    example: str | None = None

    def add(self, priced: Priced) -> None:
        self.requests += 1
        self.today_usd += priced.today_usd
        self.routed_usd += priced.routed_usd
        self.input_tokens += priced.input_tokens
        if priced.output_tokens is None:
            slot = self.pending.setdefault(priced.task, [0, 0.0, 0.0])
            slot[0] += 1
            slot[1] += priced.today_out_price
            slot[2] += priced.routed_out_price
        else:
            self.logged_output_tokens += priced.output_tokens
            self.with_output += 1
        self.routes[(priced.routed_model, priced.tier)] += 1
        self.rules[(priced.layer, priced.rule)] += 1
        self.reasons.setdefault(priced.rule, priced.reason)
        self.tasks[priced.task] += 1
        self.methods[priced.today_method] += 1
        self.today_models[priced.today_model] += 1
        if self.example is None and priced.text.strip():
            self.example = priced.text

    def summary(self, output_estimate: dict[str, float], total_today: float) -> dict[str, Any]:
        """The group's figures, with the output-token estimate applied to what lacked usage."""
        today, routed = self.today_usd, self.routed_usd
        estimated = 0
        for task, (count, today_price, routed_price) in self.pending.items():
            tokens = output_estimate[task]
            today += tokens * today_price
            routed += tokens * routed_price
            estimated += int(count)
        (model, tier), routed_count = self.routes.most_common(1)[0] if self.routes else (("", ""), 0)
        (layer, rule), rule_count = self.rules.most_common(1)[0] if self.rules else (("", ""), 0)
        return {
            "requests": self.requests,
            "today_usd": today,
            "routed_usd": routed,
            "saved_usd": today - routed,
            "saved_share": (today - routed) / today if today > 0 else 0.0,
            "share_of_spend": today / total_today if total_today > 0 else 0.0,
            "input_tokens": self.input_tokens,
            "output_tokens_estimated_for": estimated,
            "model": model,
            "tier": tier,
            "model_share": routed_count / self.requests if self.requests else 0.0,
            "routes": {f"{m} ({t})": n for (m, t), n in self.routes.most_common()},
            "rule": rule,
            "layer": layer,
            "rule_share": rule_count / self.requests if self.requests else 0.0,
            "reason": self.reasons.get(rule, ""),
            "task": self.tasks.most_common(1)[0][0] if self.tasks else "",
            "tasks": dict(self.tasks.most_common()),
            "today_methods": dict(self.methods.most_common()),
            "today_models": dict(self.today_models.most_common(5)),
            "example": _shorten(self.example) if self.example else NO_PROMPT,
        }


def _shorten(text: str, limit: int = EXAMPLE_CHARS) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


class Pricer:
    """Prices logged requests today and routed, for one config (its engine built once)."""

    def __init__(self, config: Config, engine: PolicyEngine) -> None:
        self.config = config
        self.engine = engine
        self.strongest = config.counterfactual()
        self._fleet: dict[str, ModelEntry] = {}
        for model in config.models:
            self._fleet.setdefault(model.upstream.lower(), model)
        for model in config.models:  # fleet names win over upstream ids
            self._fleet[model.name.lower()] = model

    def fleet_model(self, logged: str | None) -> ModelEntry | None:
        """The fleet model a logged model name is (by name or upstream id; ``openai/…`` prefix ignored)."""
        if not logged:
            return None
        name = logged.strip().lower()
        return self._fleet.get(name) or self._fleet.get(name.rpartition("/")[2])

    def features(self, request: LoggedRequest) -> Features:
        if request.body is not None:
            metadata = request.body.get("metadata")
            try:
                hints = parse_hints(None, metadata)
            except RequestError:  # a logged hint tierwise would reject: route as if it were absent
                hints = {}
            features = extract_features(request.body, hints)
        elif request.logged_features:
            known = {k: v for k, v in request.logged_features.items() if k in _FEATURE_FIELDS}
            try:
                features = Features(**known)
            except TypeError:
                features = Features()
        else:
            features = Features(task="chat")
        if request.input_tokens is not None and request.input_tokens != features.input_tokens:
            features = dataclasses.replace(features, input_tokens=request.input_tokens)
        return features

    def price(self, request: LoggedRequest) -> Priced:
        features = self.features(request)
        # A request logged against a concrete model is re-routed as if it had asked for "auto".
        try:
            decision = self.engine.decide(features)
        except RequestError:  # a logged tier hint this fleet does not have: route without it
            decision = self.engine.decide(dataclasses.replace(features, tier=None))
        routed = self.config.model(decision.chain[0])
        input_tokens = features.input_tokens
        output = request.output_tokens
        logged = self.fleet_model(request.model)
        if logged is not None:
            method, today_model, today_price = "fleet-price", logged.name, logged
        elif request.spend_usd is not None:
            method, today_model, today_price = "logged-spend", request.model or "?", None
        else:
            method, today_model, today_price = "strongest-price", self.strongest.name, self.strongest
        if today_price is None:
            today, today_out = float(request.spend_usd or 0.0), 0.0
        else:
            today = today_price.cost(input_tokens, output or 0)
            today_out = 0.0 if output is not None else today_price.price.output_per_mtok / 1e6
        return Priced(
            task=features.task,
            text=features.text,
            input_tokens=input_tokens,
            output_tokens=output,
            today_model=today_model,
            today_method=method,
            today_usd=today,
            today_out_price=today_out,
            routed_model=routed.name,
            tier=decision.tier,
            rule=decision.rule,
            layer=decision.layer,
            reason=decision.reason,
            routed_usd=routed.cost(input_tokens, output or 0),
            routed_out_price=0.0 if output is not None else routed.price.output_per_mtok / 1e6,
        )


class _Spool:
    """Each priced request of the first pass, packed into 48 bytes in a temporary file, so the second
    pass (clusters) reads it back instead of computing features and a decision again. The names a
    record refers to (task, model, rule …) are few and kept in memory; the file holds only numbers."""

    _RECORD = struct.Struct("<HHHHHqqdddd")

    def __init__(self) -> None:
        self._file = tempfile.TemporaryFile()  # noqa: SIM115 (closed by close())
        self._names: dict[tuple[str, ...], int] = {}
        self._keys: list[tuple[str, ...]] = []
        self._reader: BinaryIO | None = None

    def _index(self, key: tuple[str, ...]) -> int:
        index = self._names.get(key)
        if index is None:
            index = self._names[key] = len(self._keys)
            self._keys.append(key)
        return index

    def write(self, p: Priced) -> None:
        self._file.write(
            self._RECORD.pack(
                self._index((p.task,)),
                self._index((p.today_model, p.today_method)),
                self._index((p.routed_model, p.tier)),
                self._index((p.layer, p.rule)),
                0,
                p.input_tokens,
                -1 if p.output_tokens is None else p.output_tokens,
                p.today_usd,
                p.today_out_price,
                p.routed_usd,
                p.routed_out_price,
            )
        )

    def rewind(self) -> None:
        self._file.flush()
        self._file.seek(0)

    def read(self, text: str, reasons: dict[str, str]) -> Priced:
        raw = self._file.read(self._RECORD.size)
        task, today, route, rule, _, tokens, output, today_usd, today_out, routed_usd, routed_out = (
            self._RECORD.unpack(raw)
        )
        layer, rule_name = self._keys[rule]
        return Priced(
            task=self._keys[task][0],
            text=text,
            input_tokens=tokens,
            output_tokens=None if output < 0 else output,
            today_model=self._keys[today][0],
            today_method=self._keys[today][1],
            today_usd=today_usd,
            today_out_price=today_out,
            routed_model=self._keys[route][0],
            tier=self._keys[route][1],
            rule=rule_name,
            layer=layer,
            reason=reasons.get(rule_name, ""),
            routed_usd=routed_usd,
            routed_out_price=routed_out,
        )

    def close(self) -> None:
        self._file.close()


@dataclass(slots=True)
class Projection:
    """Everything the estimate found: totals, per task type, per cluster, and how it was read."""

    total: Tally = field(default_factory=Tally)
    by_task: dict[str, Tally] = field(default_factory=dict)
    by_cluster: dict[int, Tally] = field(default_factory=dict)
    cluster_examples: tuple[str, ...] = ()
    stats: LogStats = field(default_factory=LogStats)
    clusters_note: str | None = None
    elapsed_s: float = 0.0

    def output_estimate(self) -> dict[str, float]:
        """Output tokens assumed per task type for requests without output usage (``OUTPUT_METHOD``)."""
        total = self.total
        overall = (
            total.logged_output_tokens / total.with_output if total.with_output else DEFAULT_OUTPUT_TOKENS
        )
        estimate = {}
        for task in TASKS:
            tally = self.by_task.get(task)
            if tally is not None and tally.with_output >= MIN_TASK_SAMPLES:
                estimate[task] = tally.logged_output_tokens / tally.with_output
            else:
                estimate[task] = overall
        return estimate


Progress = Callable[[LogStats], None]


def project(
    config: Config,
    engine: PolicyEngine,
    sources: list[str],
    *,
    clusters: int = 20,
    sample_size: int = 4000,
    embedder: Any = None,
    seed: int = 0,
    progress: Progress | None = None,
    on_request: Callable[[LoggedRequest, Priced], None] | None = None,
) -> Projection:
    """Stream ``sources`` through the policy: per task type on the first pass (with a reservoir sample
    of texts), then, when ``clusters`` > 0 and the embeddings are installed, a second pass assigning
    each request to a cluster fitted on that sample. ``on_request`` sees every priced request of the
    first pass (the judged sample draws from it)."""
    started = time.perf_counter()
    pricer = Pricer(config, engine)
    result = Projection()
    reservoir = Reservoir(sample_size, seed=seed)
    stats = result.stats
    spool = _Spool() if clusters > 0 else None
    try:
        for request in _ticking(read_logs(sources, stats), stats, progress):
            priced = pricer.price(request)
            result.total.add(priced)
            result.by_task.setdefault(priced.task, Tally()).add(priced)
            if priced.text.strip():
                reservoir.offer(priced.text[:KEEP_CHARS])
            if spool is not None:
                spool.write(priced)
            if on_request is not None:
                on_request(request, priced)
        if spool is not None:
            _cluster_pass(result, spool, reservoir, sources, clusters, embedder, seed, progress)
    finally:
        if spool is not None:
            spool.close()
    result.elapsed_s = time.perf_counter() - started
    return result


def _cluster_pass(
    result: Projection,
    spool: _Spool,
    reservoir: Reservoir,
    sources: list[str],
    k: int,
    embedder: Any,
    seed: int,
    progress: Progress | None,
) -> None:
    """Fit the clusters on the reservoir, then read the logs again, in the same order, for each
    request's text, and add its spooled figures to its cluster."""
    if embedder is None:
        embedder, result.clusters_note = _embedder()
        if embedder is None:
            return
    fitted = Clusters.fit(reservoir.items, embedder, k=k, seed=seed)
    if fitted is None:
        result.clusters_note = "too few requests with text to cluster"
        return
    result.cluster_examples = fitted.examples
    spool.rewind()
    reasons = result.total.reasons
    second = LogStats()
    batch: list[Priced] = []
    for request in _ticking(read_logs(sources, second), second, progress):
        text = last_user_text(request.body["messages"]) if request.body is not None else ""
        batch.append(spool.read(text, reasons))
        if len(batch) == 512:
            _assign(fitted, batch, result.by_cluster)
            batch = []
    _assign(fitted, batch, result.by_cluster)


def _assign(fitted: Clusters, batch: list[Priced], by_cluster: dict[int, Tally]) -> None:
    if not batch:
        return
    for priced, index in zip(batch, fitted.assign_many([p.text for p in batch]), strict=True):
        by_cluster.setdefault(-1 if index is None else index, Tally()).add(priced)


def _ticking(
    requests: Iterable[LoggedRequest], stats: LogStats, progress: Progress | None
) -> Iterable[LoggedRequest]:
    if progress is None:
        yield from requests
        return
    for n, request in enumerate(requests):
        if n % 2000 == 0:
            progress(stats)
        yield request
    progress(stats)


def _embedder() -> tuple[Any, str | None]:
    from ..errors import ConfigError

    try:
        from ..embeddings import load_wordllama

        return load_wordllama(), None
    except ConfigError as exc:
        return None, f"no clusters: {exc}"
