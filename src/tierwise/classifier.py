"""The small-LLM classifier: a cheap model of the fleet says which tier a request needs.

For fleets without training data for the learned router. The Router asks it only when the policy
engine would otherwise fall back to its default (no hint, no rule, no learned router decided), and
hands the answer to ``PolicyEngine.decide(classified_tier=…)``: the classifier calls a model, so it
lives here and not in the pure ``policy/``.

What the grader model is sent, bounded so a 1 MB request costs what a 5 kB one does:
  * system: the rubric — the fleet's tiers (those with models), cheapest → strongest, one line each
    (``policy.classifier.rubric`` replaces it);
  * user: one line about the conversation (message count, estimated tokens, tools' names, response
    format, images), the system prompt's first 500 characters, the last user message (its first
    2,000 characters; when longer, its first 1,500 and last 500, since a pasted document often ends
    with the instruction), then "Answer with exactly one word: draft, review or execution.";
  * ``max_tokens`` 16, ``temperature`` 0, not streamed, no retries.

The answer is parsed strictly: stripped and lower-cased, the reply must be exactly one tier name, or
a JSON object with the single key ``tier`` (``{"tier": "draft"}``), which models told to be terse
sometimes prefer. Anything else ("Draft.", "draft or review", prose) is no answer: the attempt is
logged with status ``unparsed`` and the rules' choice stands.

Answers are cached in an LRU of ``cache_size`` keyed by the blake2b digest of exactly what the grader
reads of the request (the excerpt above, built from messages, tools and response_format; sampling
parameters never matter), so two requests share an answer only when the grader could not tell them
apart. The cache holds the tier name only, never the prompt; failures are not cached. Identical
requests in flight share one call (single-flight). A call that takes longer than ``timeout_ms``, or
fails, is no answer; after ``policy.cooldown.failures`` such failures in a row the classifier is
skipped for ``policy.cooldown.seconds``, so a dead grader does not add its timeout to every request
(counted in the Router's state store, so replicas sharing Redis pause together).
"""

from __future__ import annotations

import asyncio
import hashlib
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

import orjson

from .calls import call_once
from .config import Config, ModelEntry
from .errors import ConfigError
from .features import Features
from .ledger.base import Attempt
from .messages import message_text, reply_text
from .policy.engine import Decision
from .providers.base import Provider
from .state.base import State
from .state.memory import MemoryState

MAX_TOKENS = 16  # a tier name, or {"tier": "execution"}, with room to spare
SYSTEM_CHARS = 500  # of the request's system prompt
USER_CHARS = 2000  # of the last user message; longer ones: the first 1,500 and the last 500
_USER_HEAD, _USER_TAIL = 1500, 500
_MAX_TOOL_NAMES = 8

# One line per built-in tier; a tier of another name gets a generic line from its position.
TIER_LINES: dict[str, str] = {
    "draft": "short, well-defined work: classification, extraction, formatting, translation, short "
    "summaries, simple factual questions, small talk",
    "review": "general writing and explanation, open questions, advice, longer documents, moderate reasoning",
    "execution": "code, mathematics, multi-step reasoning and planning, analysis where a mistake is costly",
}


def default_rubric(tiers: tuple[str, ...]) -> str:
    """The built-in rubric for a fleet's tiers, given cheapest first."""
    lines = [
        "You route requests to language models of different cost. The tiers, cheapest first:",
    ]
    for i, tier in enumerate(tiers):
        if tier in TIER_LINES:
            what = TIER_LINES[tier]
        elif i == 0:
            what = "the cheapest models: simple, well-defined work"
        else:
            what = f"stronger and costlier than {tiers[i - 1]}"
        lines.append(f"- {tier}: {what}")
    lines.append("Choose the cheapest tier that will answer the request well.")
    return "\n".join(lines)


def parse_tier(reply: Any, tiers: Mapping[str, str]) -> str | None:
    """The tier a reply names, or None. ``tiers`` maps lower-cased names to the fleet's names.

    Accepted: exactly a tier name (any case, surrounding whitespace ignored), or a JSON object whose
    only key is ``tier`` and whose value is a tier name."""
    if not isinstance(reply, str):
        return None
    text = reply.strip().lower()
    if text in tiers:
        return tiers[text]
    if text.startswith("{") and text.endswith("}"):
        try:
            doc = orjson.loads(text)
        except orjson.JSONDecodeError:
            return None
        if isinstance(doc, dict) and len(doc) == 1 and isinstance(doc.get("tier"), str):
            return tiers.get(doc["tier"].strip())
    return None


def _clip(text: str, head: int, tail: int = 0) -> str:
    if len(text) <= head + tail:
        return text
    omitted = len(text) - head - tail
    return text[:head] + f"\n[… {omitted} characters omitted …]\n" + (text[-tail:] if tail else "")


def request_excerpt(body: Mapping[str, Any], features: Features) -> str:
    """What the grader reads of a request (see the module docstring); also the cache key's source."""
    messages = body.get("messages") or ()
    system = next(
        (
            message_text(m)
            for m in messages
            if isinstance(m, dict) and m.get("role") in ("system", "developer")
        ),
        "",
    )
    notes = [
        f"{len(messages)} message{'s' if len(messages) != 1 else ''}",
        f"~{features.input_tokens} tokens",
    ]
    tools = body.get("tools") or body.get("functions") or ()
    if tools:
        names = [
            str((t.get("function") or t).get("name", "?")) if isinstance(t, dict) else "?" for t in tools
        ]
        more = f" and {len(names) - _MAX_TOOL_NAMES} more" if len(names) > _MAX_TOOL_NAMES else ""
        notes.append(f"tools: {', '.join(names[:_MAX_TOOL_NAMES])}{more}")
    response_format = body.get("response_format")
    if isinstance(response_format, dict) and response_format.get("type") not in (None, "text"):
        notes.append(f"response format: {response_format.get('type')}")
    if features.has_images:
        notes.append("with images")
    parts = [f"Request ({'; '.join(notes)}):"]
    if system:
        parts.append("System prompt:\n" + _clip(system, SYSTEM_CHARS))
    last_user = features.text
    if len(last_user) > USER_CHARS:
        last_user = _clip(last_user, _USER_HEAD, _USER_TAIL)
    parts.append("Last user message:\n" + last_user)
    return "\n\n".join(parts)


@dataclass(frozen=True, slots=True)
class Classification:
    """The classifier's answer for one request.

    ``tier``: the tier named, or None (no answer: the rules decide). ``attempt``: the call this
    request made, to be logged and charged (purpose ``classifier``), or None when it made none.
    ``cached``: no call of its own — an LRU hit, or it joined an identical call in flight."""

    tier: str | None
    attempt: Attempt | None
    cached: bool

    def annotate(self, decision: Decision) -> Decision:
        """The decision with its reason saying what the classifier did (for the ledger and headers)."""
        if self.tier is not None:
            if decision.layer != "classifier":
                return replace(decision, reason=f"{decision.reason}; classifier: {self.tier} (not used)")
            if not self.cached:
                return decision
            return replace(decision, reason=decision.reason.replace("classifier:", "classifier (cached):", 1))
        if self.attempt is not None:
            why = self.attempt.status
        else:
            why = "an identical request's call had none" if self.cached else "none"
        return replace(decision, reason=f"{decision.reason}; classifier: no answer ({why})")


class TierClassifier:
    """Asks ``policy.classifier.model`` which tier a request needs. One per Router; holds its cache."""

    def __init__(self, config: Config, providers: Mapping[str, Provider], state: State | None = None) -> None:
        settings = config.policy.classifier
        if settings is None:
            raise ConfigError("policy.classifier: not configured")
        self.model: ModelEntry = config.model(settings.model)
        self._provider = providers[self.model.provider]
        self.tiers: tuple[str, ...] = tuple(t for t in config.tiers if config.tier_models(t))
        self._names = {t.lower(): t for t in self.tiers}
        self.rubric = settings.rubric or default_rubric(self.tiers)
        names = self.tiers
        choices = f"{', '.join(names[:-1])} or {names[-1]}" if len(names) > 1 else names[0]
        self._instruction = f"Answer with exactly one word: {choices}."
        self._timeout_s = settings.timeout_ms / 1000
        self._cache_size = settings.cache_size
        self._cache: OrderedDict[bytes, str] = OrderedDict()
        self._inflight: dict[bytes, asyncio.Task[tuple[str | None, Attempt]]] = {}
        # The classifier's own breaker, in the state store beside the models' (shared by replicas):
        # consecutive failures, as a dead grader must stop costing its timeout after a few requests.
        self._state: State = state if state is not None else MemoryState()
        self._breaker_key = f"classifier:{self.model.name}"
        self._breaker_failures = config.policy.cooldown.failures
        self._breaker_seconds = config.policy.cooldown.seconds
        self._suspect = False  # a call failed since the last success: the next success is reported

    def body(self, excerpt: str) -> dict[str, Any]:
        """The chat request sent to the grader model."""
        return {
            "model": self.model.name,
            "messages": [
                {"role": "system", "content": self.rubric},
                {"role": "user", "content": f"{excerpt}\n\n{self._instruction}"},
            ],
            "max_tokens": MAX_TOKENS,
            "temperature": 0,
        }

    async def classify(
        self, body: Mapping[str, Any], features: Features, *, request_id: str = ""
    ) -> Classification:
        """Which tier ``body`` needs, from the cache, a call in flight or a new call. Never raises
        ProviderError: every failure is an answer of None with the failed attempt."""
        excerpt = request_excerpt(body, features)
        key = hashlib.blake2b(excerpt.encode("utf-8", "surrogatepass"), digest_size=16).digest()
        tier = self._cache.get(key)
        if tier is not None:
            self._cache.move_to_end(key)
            return Classification(tier, None, cached=True)
        task = self._inflight.get(key)
        if task is not None:
            tier, _ = await asyncio.shield(task)
            return Classification(tier, None, cached=True)
        if await self._state.cooling([self._breaker_key]):
            skipped = Attempt(
                self.model.name,
                self.model.provider,
                "skipped",
                error=f"classifier cooling down after {self._breaker_failures} failed calls in a row",
                purpose="classifier",
            )
            return Classification(None, skipped, cached=False)
        # The call runs as its own task, so identical requests can join it and a leader that goes away
        # (client disconnected) does not cancel it for them.
        task = asyncio.create_task(self._ask(key, excerpt, request_id))
        self._inflight[key] = task
        task.add_done_callback(lambda _: self._inflight.pop(key, None))
        tier, attempt = await asyncio.shield(task)
        return Classification(tier, attempt, cached=False)

    async def _ask(self, key: bytes, excerpt: str, request_id: str) -> tuple[str | None, Attempt]:
        model = self.model
        call = await call_once(
            self._provider,
            model,
            self.body(excerpt),
            request_id=request_id,
            purpose="classifier",
            timeout_s=self._timeout_s,
            timeout_setting="policy.classifier.timeout_ms",
        )
        attempt = call.attempt
        if call.completion is None:
            self._suspect = True
            await self._state.record_failure(
                self._breaker_key, threshold=self._breaker_failures, cooldown_s=self._breaker_seconds
            )
            return None, attempt
        if self._suspect:
            self._suspect = False
            await self._state.record_success(self._breaker_key)
        reply = reply_text(call.completion.body)
        tier = parse_tier(reply, self._names)
        if tier is None:
            attempt.status = "unparsed"
            # Not the reply itself: a grader that answered the request instead may echo the prompt,
            # and the ledger never holds prompt text.
            attempt.error = f"{model.name}: reply is not one tier name ({len(reply)} characters)"
            return None, attempt
        if self._cache_size:
            self._cache[key] = tier
            if len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return tier, attempt
