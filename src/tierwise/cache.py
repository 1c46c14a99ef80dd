"""Response caches: a repeated question answered without an upstream call, at $0.

Looked up after the policy has decided (so the ledger row still says what routing would have done)
and before any upstream call. The key is the canonical request — the client's body without routing
hints, the stream flags or the cache opt-out — together with the deciding policy's version, the
decision's first model and the cache scope (key, tenant or global). Keyed on the request the client
sent rather than on the templated body one model received, a hit does not depend on which model of
the chain answered it; with the policy version and first model in it, a new policy (or a canary arm)
starts with its own entries, and a request routed elsewhere — a key granted fewer tiers, a budget
downgrade, a paraphrase that reads as another task — never meets another route's answers.

* exact: the sha256 of that key, in a bounded in-memory LRU with a TTL, or in the state store's
  Redis (shared by every replica, evicted by TTL).
* semantic (opt-in): single-turn requests only (system prompts and one user message), bucketed by
  everything but the user's text — scope, policy, parameters, system prompt — and matched within
  the bucket by cosine similarity of the router's own static embeddings, then checked by a lexical
  guard (``same_question``: no content term dropped, no number or negation added), because averaged
  word vectors cannot tell "… in 2023?" from "… in 2024?". In each replica's memory.

Never cached unless ``cache`` allows it: sampled requests (temperature > 0), requests with tools or
functions, ``n > 1``; nor a request that opts out (``x-tierwise-cache: off`` or
``metadata.tierwise_cache: "off"``).
"""

from __future__ import annotations

import hashlib
import logging
import re
import time
from collections import Counter, OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson

from .config import CacheConfig
from .messages import CACHE_HEADER, CACHE_METADATA_KEY, content_text, without_hints

if TYPE_CHECKING:
    import numpy as np

    from .embeddings import StaticEmbeddings

log = logging.getLogger("tierwise.cache")

_NOT_KEYED = ("stream", "stream_options")
_OFF = frozenset({"off", "false", "0", "no", "bypass"})
_SYSTEM_ROLES = frozenset({"system", "developer"})
_CANDIDATES = 4  # semantic matches above the threshold checked by the guard, closest first
_WORD = re.compile(r"[^\W_]+")
# Words that turn a question into another however little they move its embedding.
_NEGATIONS = frozenset({"no", "not", "never", "without", "nor", "none", "dont", "isnt", "cant", "wont"})


def terms(text: str) -> Counter[str]:
    """A question's content terms, counted: words of 4+ letters, every number and negation, lower-cased."""
    words = (w.lower() for w in _WORD.findall(text.replace("'", "")))
    return Counter(w for w in words if len(w) >= 4 or any(c.isdigit() for c in w) or w in _NEGATIONS)


def same_question(cached: Counter[str], asked: Counter[str]) -> bool:
    """The lexical guard on a semantic match: the new question keeps every content term of the cached
    one (it may add filler) and adds no number or negation. Static embeddings average words, so a
    changed number or name barely moves them; this is what tells those questions apart."""
    added = asked - cached
    return cached <= asked and not any(w in _NEGATIONS or any(c.isdigit() for c in w) for w in added)


@dataclass(frozen=True, slots=True)
class CacheKey:
    """Where one request's answer is looked up and stored."""

    exact: str  # hex digest of scope, policy version and canonical request
    bucket: str | None  # semantic: digest of everything but the user's text (None: not single-turn)
    text: str | None  # semantic: the user's text
    # The text's embedding and terms, computed once for the lookup and reused to store the answer.
    memo: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class CacheHit:
    """An answer served from the cache: who gave it, what it cost then, how close the question was."""

    kind: str  # "exact" or "semantic"
    response: dict[str, Any]
    model: str
    saved_usd: float
    similarity: float | None = None

    def to_log(self) -> dict[str, Any]:
        return {
            "hit": self.kind,
            "model": self.model,
            "saved_usd": self.saved_usd,
            "similarity": self.similarity,
        }


def opted_out(headers: Mapping[str, str] | None, metadata: Any) -> bool:
    """Whether the client asked not to be served from (nor to fill) the cache. The header wins."""
    value: Any = headers.get(CACHE_HEADER) if headers else None
    if value is None and isinstance(metadata, dict):
        value = metadata.get(CACHE_METADATA_KEY)
    if value is None:
        return False
    if value is False:
        return True
    return str(value).strip().lower() in _OFF


def not_cacheable(config: CacheConfig, body: Mapping[str, Any]) -> str | None:
    """Why ``body`` may not be cached under ``config`` (None: it may). An absent temperature counts
    as not sampled: the client left the choice to the gateway."""
    temperature = body.get("temperature")
    if not config.allow_sampled and isinstance(temperature, int | float) and temperature > 0:
        return "temperature > 0"
    if not config.allow_tools and (body.get("tools") or body.get("functions")):
        return "tools"
    n = body.get("n")
    if not config.allow_n and isinstance(n, int) and n > 1:
        return "n > 1"
    return None


def _digest(*parts: Any) -> str:
    return hashlib.sha256(orjson.dumps(parts, option=orjson.OPT_SORT_KEYS)).hexdigest()


def cache_key(body: Mapping[str, Any], *, scope: str, policy_version: str, first: str = "") -> CacheKey:
    """The cache key of a request body (hints are stripped here, so hinting never splits entries)."""
    canonical = {k: v for k, v in without_hints(dict(body)).items() if k not in _NOT_KEYED}
    metadata = canonical.get("metadata")
    if isinstance(metadata, dict) and CACHE_METADATA_KEY in metadata:
        rest = {k: v for k, v in metadata.items() if k != CACHE_METADATA_KEY}
        if rest:
            canonical["metadata"] = rest
        else:
            del canonical["metadata"]
    exact = _digest(scope, policy_version, first, canonical)
    messages = canonical.get("messages") or []
    users = [m for m in messages if isinstance(m, dict) and m.get("role") == "user"]
    others = [m for m in messages if not (isinstance(m, dict) and m.get("role") in _SYSTEM_ROLES)]
    if len(users) != 1 or len(others) != 1 or not isinstance(users[0].get("content"), str):
        return CacheKey(exact, None, None)  # multi-turn or multi-part: context the embedding cannot see
    params = {k: v for k, v in canonical.items() if k != "messages"}
    system = [m for m in messages if m is not users[0]]
    return CacheKey(exact, _digest(scope, policy_version, first, params, system), users[0]["content"])


def _payload(response: dict[str, Any], model: str, cost_usd: float) -> bytes:
    return orjson.dumps({"response": response, "model": model, "cost_usd": cost_usd})


def _hit(kind: str, payload: bytes, similarity: float | None = None) -> CacheHit:
    doc = orjson.loads(payload)  # a fresh copy for each hit: callers may change it
    return CacheHit(kind, doc["response"], doc["model"], float(doc["cost_usd"]), similarity)


class _MemoryExact:
    """LRU with a TTL; expired entries are dropped when met."""

    def __init__(self, ttl_s: float, max_entries: int) -> None:
        self._ttl, self._max = ttl_s, max_entries
        self._entries: OrderedDict[str, tuple[float, bytes]] = OrderedDict()

    async def get(self, key: str) -> bytes | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry[0] < time.monotonic():
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return entry[1]

    async def put(self, key: str, payload: bytes) -> None:
        self._entries[key] = (time.monotonic() + self._ttl, payload)
        self._entries.move_to_end(key)
        while len(self._entries) > self._max:
            self._entries.popitem(last=False)

    async def aclose(self) -> None:
        self._entries.clear()


class _RedisExact:
    """Entries shared by every replica on the state store's Redis; an outage is a miss, never an error."""

    def __init__(self, url: str, ttl_s: float) -> None:
        import redis.asyncio as redis

        self._redis = redis.from_url(url, socket_timeout=0.5, socket_connect_timeout=0.5)
        self._ttl_ms = max(1, int(ttl_s * 1000))

    async def get(self, key: str) -> bytes | None:
        try:
            value: bytes | None = await self._redis.get("tierwise:cache:" + key)
        except Exception as exc:  # redis or connection errors: answer from upstream instead
            log.warning("cache: redis get failed: %s", type(exc).__name__)
            return None
        return value

    async def put(self, key: str, payload: bytes) -> None:
        try:
            await self._redis.set("tierwise:cache:" + key, payload, px=self._ttl_ms)
        except Exception as exc:
            log.warning("cache: redis set failed: %s", type(exc).__name__)

    async def aclose(self) -> None:
        await self._redis.aclose()


class _Bucket:
    """One bucket's unit vectors in a growing matrix, so a lookup is one matrix-vector product."""

    def __init__(self, dim: int) -> None:
        import numpy as np

        self.matrix = np.zeros((8, dim), dtype=np.float32)
        self.ids: list[int] = []

    def add(self, entry_id: int, vector: np.ndarray) -> None:
        import numpy as np

        n = len(self.ids)
        if n == len(self.matrix):
            self.matrix = np.concatenate([self.matrix, np.zeros_like(self.matrix)])
        self.matrix[n] = vector
        self.ids.append(entry_id)

    def remove(self, entry_id: int) -> None:
        i, last = self.ids.index(entry_id), len(self.ids) - 1
        self.matrix[i], self.ids[i] = self.matrix[last], self.ids[last]  # the last row fills the gap
        self.ids.pop()

    def scores(self, vector: np.ndarray) -> np.ndarray:
        return self.matrix[: len(self.ids)] @ vector


class _Semantic:
    """Answered single-turn questions by bucket; a lookup scans its bucket (a scope's few thousand)."""

    def __init__(
        self,
        threshold: float,
        ttl_s: float,
        max_entries: int,
        embedder: StaticEmbeddings,
        *,
        same_terms: bool = True,
    ) -> None:
        self.threshold, self._ttl, self._max, self._same_terms = threshold, ttl_s, max_entries, same_terms
        self._embedder = embedder
        self._buckets: dict[str, _Bucket] = {}
        # id → bucket, expiry, payload, the question's terms
        self._entries: OrderedDict[int, tuple[str, float, bytes, Counter[str]]] = OrderedDict()
        self._next = 0

    def _features(self, text: str, memo: dict[str, Any]) -> tuple[np.ndarray, Counter[str]]:
        if "vector" not in memo:
            memo["vector"] = self._embedder.embed(text)
            memo["terms"] = terms(text) if self._same_terms else Counter()
        return memo["vector"], memo["terms"]

    def get(self, bucket: str, text: str, memo: dict[str, Any] | None = None) -> tuple[bytes, float] | None:
        """The closest live answer at or above the threshold, with its similarity."""
        import numpy as np

        found = self._buckets.get(bucket)
        if found is None:
            return None
        vector, asked = self._features(text, {} if memo is None else memo)
        scores = found.scores(vector)
        now = time.monotonic()
        # The closest few only: templated traffic fills a bucket with near-twins the guard turns down.
        top = np.flatnonzero(scores >= self.threshold)
        if len(top) > _CANDIDATES:
            top = top[np.argpartition(-scores[top], _CANDIDATES)[:_CANDIDATES]]
        for i in top[np.argsort(-scores[top])]:
            entry_id = found.ids[i]
            entry = self._entries.get(entry_id)
            if (
                entry is not None
                and entry[1] >= now
                and (not self._same_terms or same_question(entry[3], asked))
            ):
                self._entries.move_to_end(entry_id)
                return entry[2], float(scores[i])
        return None

    def put(self, bucket: str, text: str, payload: bytes, memo: dict[str, Any] | None = None) -> None:
        entry_id, self._next = self._next, self._next + 1
        vector, asked = self._features(text, {} if memo is None else memo)
        self._buckets.setdefault(bucket, _Bucket(len(vector))).add(entry_id, vector)
        self._entries[entry_id] = (bucket, time.monotonic() + self._ttl, payload, asked)
        while len(self._entries) > self._max:
            old_id, (old_bucket, *_) = self._entries.popitem(last=False)
            self._buckets[old_bucket].remove(old_id)
            if not self._buckets[old_bucket].ids:
                del self._buckets[old_bucket]


class ResponseCache:
    """The exact and semantic caches of one Router (see the module docstring)."""

    def __init__(self, config: CacheConfig, *, state_url: str) -> None:
        self.config = config
        exact = config.exact
        self._exact: _MemoryExact | _RedisExact | None = None
        if exact is not None:
            self._exact = (
                _RedisExact(state_url, exact.ttl_s)
                if exact.backend == "redis"
                else _MemoryExact(exact.ttl_s, exact.max_entries)
            )
        self._semantic: _Semantic | None = None
        if config.semantic is not None:
            from .embeddings import load_wordllama  # numpy and the table load only when asked for

            s = config.semantic
            self._semantic = _Semantic(
                s.threshold, s.ttl_s, s.max_entries, load_wordllama(), same_terms=s.same_terms
            )

    def scope(self, key_id: str | None, tenant: str | None) -> str:
        """Who shares entries: never wider than ``cache.scope`` allows."""
        if self.config.scope == "global":
            return "global"
        if self.config.scope == "key":
            return "key:" + (key_id or "")
        return "tenant:" + (tenant or "")

    def key(
        self,
        body: Mapping[str, Any],
        headers: Mapping[str, str] | None,
        *,
        policy_version: str,
        first: str,
        key_id: str | None,
        tenant: str | None,
    ) -> CacheKey | None:
        """The request's cache key, or None when it must not be served from the cache or fill it."""
        if opted_out(headers, body.get("metadata")) or not_cacheable(self.config, body) is not None:
            return None
        return cache_key(body, scope=self.scope(key_id, tenant), policy_version=policy_version, first=first)

    async def get(self, key: CacheKey) -> CacheHit | None:
        """An answer for ``key``: exact first, then (single-turn requests) semantic."""
        if self._exact is not None:
            payload = await self._exact.get(key.exact)
            if payload is not None:
                return _hit("exact", payload)
        if self._semantic is not None and key.bucket is not None and key.text is not None:
            found = self._semantic.get(key.bucket, key.text, key.memo)
            if found is not None:
                return _hit("semantic", *found)
        return None

    async def put(self, key: CacheKey, response: dict[str, Any], *, model: str, cost_usd: float) -> None:
        """Keep an answer: only a complete one-choice answer is worth serving again."""
        choices = response.get("choices")
        if not isinstance(choices, list) or len(choices) != 1 or not isinstance(choices[0], dict):
            return
        payload = _payload(response, model, cost_usd)
        if self._exact is not None:
            await self._exact.put(key.exact, payload)
        if self._semantic is not None and key.bucket is not None and key.text is not None:
            self._semantic.put(key.bucket, key.text, payload, key.memo)

    async def aclose(self) -> None:
        if self._exact is not None:
            await self._exact.aclose()


def hit_response(hit: CacheHit, request_id: str) -> dict[str, Any]:
    """The cached completion as this request's answer: its own id and time."""
    return {**hit.response, "id": "chatcmpl-" + request_id, "created": int(time.time())}


def hit_chunks(response: dict[str, Any]) -> list[dict[str, Any]]:
    """A cached completion as OpenAI ``chat.completion.chunk`` objects: role, content, the end, usage."""
    choice = response["choices"][0]
    message = choice.get("message") or {}
    base = {
        "id": response.get("id"),
        "object": "chat.completion.chunk",
        "created": response.get("created"),
        "model": response.get("model"),
    }
    delta: dict[str, Any] = {"role": "assistant", "content": content_text(message.get("content"))}
    if message.get("tool_calls"):
        delta["tool_calls"] = [{**call, "index": i} for i, call in enumerate(message["tool_calls"])]
    chunks = [
        {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": None}]},
        {
            **base,
            "choices": [{"index": 0, "delta": {}, "finish_reason": choice.get("finish_reason") or "stop"}],
        },
    ]
    if response.get("usage") is not None:
        chunks.append({**base, "choices": [], "usage": response["usage"]})
    return chunks


class StreamCollector:
    """Rebuilds one streamed answer as a completion, so a streamed miss fills the cache too."""

    def __init__(self) -> None:
        self._text: list[str] = []
        self._finish: str | None = None
        self._first: dict[str, Any] | None = None
        self._usage: Any = None
        self._usable = True

    def add(self, data: dict[str, Any]) -> None:
        if self._first is None:
            self._first = data
        if data.get("usage"):
            self._usage = data["usage"]
        for choice in data.get("choices") or ():
            delta = choice.get("delta") or {}
            if choice.get("index", 0) != 0 or delta.get("tool_calls") or delta.get("function_call"):
                self._usable = False  # tool calls and many choices are not rebuilt: not cached
            if isinstance(delta.get("content"), str):
                self._text.append(delta["content"])
            if choice.get("finish_reason"):
                self._finish = choice["finish_reason"]

    def completion(self) -> dict[str, Any] | None:
        """The answer as a ``chat.completion`` (None when it cannot be rebuilt, or never finished)."""
        if not self._usable or self._first is None or self._finish is None:
            return None
        return {
            "id": self._first.get("id"),
            "object": "chat.completion",
            "created": self._first.get("created"),
            "model": self._first.get("model"),
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "".join(self._text)},
                    "finish_reason": self._finish,
                }
            ],
            "usage": self._usage,
        }
