"""Clusters of similar requests on the router's own static embeddings (``tierwise.embeddings``).

A log of a million requests is never held in memory: a fixed-size reservoir sample of the requests'
texts (Vitter's algorithm R, seeded) is what k-means is fitted on; every request of the log is then
assigned to its nearest centroid as it streams past. Embeddings are unit vectors, so "nearest" is the
largest dot product (spherical k-means), and a centroid is the normalised mean of its members.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

# Characters of a request's text that are embedded for clustering: what kind of request it is shows in
# its start, and tokenizing is most of a request's cost here (300 characters: ~65 µs, against ~180 µs
# for the router's 2,000). The reservoir keeps as much, so a sample of 4,000 holds ~1.2 MB of text.
KEEP_CHARS = 300
# Texts embedded per numpy gather: the gathered rows (≈ 75 tokens × 1 kB each per text) stay ~20 MB.
_BATCH = 256


@dataclass(slots=True)
class Reservoir:
    """A uniform random sample of at most ``size`` items of a stream of unknown length."""

    size: int
    seed: int = 0
    items: list[Any] = field(default_factory=list)
    seen: int = 0
    _random: random.Random = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._random = random.Random(self.seed)

    def offer(self, item: Any) -> None:
        self.seen += 1
        if len(self.items) < self.size:
            self.items.append(item)
            return
        slot = self._random.randrange(self.seen)
        if slot < self.size:
            self.items[slot] = item


def kmeans(vectors: np.ndarray, k: int, *, seed: int = 0, iterations: int = 30) -> np.ndarray:
    """Spherical k-means (k-means++ seeding): ``k`` unit centroids of unit-length ``vectors``."""
    n = len(vectors)
    k = max(1, min(k, n))
    rng = np.random.default_rng(seed)
    centroids = np.empty((k, vectors.shape[1]), dtype=np.float32)
    centroids[0] = vectors[rng.integers(n)]
    distance = np.clip(1.0 - vectors @ centroids[0], 0.0, None)
    for i in range(1, k):
        total = float(distance.sum())
        pick = int(rng.choice(n, p=distance / total)) if total > 0 else int(rng.integers(n))
        centroids[i] = vectors[pick]
        distance = np.minimum(distance, np.clip(1.0 - vectors @ centroids[i], 0.0, None))
    labels = np.full(n, -1)
    for _ in range(iterations):
        new = np.argmax(vectors @ centroids.T, axis=1)
        if np.array_equal(new, labels):
            break
        labels = new
        for i in range(k):
            members = vectors[labels == i]
            if len(members):
                mean = members.mean(axis=0)
                norm = float(np.linalg.norm(mean))
                centroids[i] = mean / norm if norm > 0 else mean
    return centroids


def embed(embedder: Any, texts: Sequence[str]) -> np.ndarray:
    """Unit embeddings of the first ``KEEP_CHARS`` characters of each text (zeros for no tokens): the
    mean of the texts' token rows, as ``StaticEmbeddings.embed_many`` computes it, with one gather
    and one ``reduceat`` per batch of ``_BATCH`` texts instead of one numpy call per text."""
    out = np.zeros((len(texts), embedder.dim), dtype=np.float32)
    for start in range(0, len(texts), _BATCH):
        ids = [embedder.ids(text[:KEEP_CHARS]) for text in texts[start : start + _BATCH]]
        lengths = np.fromiter((len(i) for i in ids), dtype=np.int64, count=len(ids))
        present = np.flatnonzero(lengths > 0)
        if not len(present):
            continue
        flat = np.fromiter((token for i in ids for token in i), dtype=np.int64, count=int(lengths.sum()))
        offsets = np.concatenate(([0], np.cumsum(lengths[present])[:-1]))
        sums = np.add.reduceat(embedder.table[flat], offsets, axis=0)
        norms = np.linalg.norm(sums, axis=1, keepdims=True)  # the mean's direction is the sum's
        out[start + present] = sums / np.where(norms > 0, norms, 1.0)
    return out


@dataclass(slots=True)
class Clusters:
    """Fitted centroids, with the reservoir text nearest each one as its example."""

    centroids: np.ndarray
    examples: tuple[str, ...]
    embedder: Any

    @classmethod
    def fit(cls, texts: Sequence[str], embedder: Any, *, k: int, seed: int = 0) -> Clusters | None:
        """Fit on the sampled texts; None when there are too few to cluster."""
        texts = [t for t in texts if t.strip()]
        if len(texts) < 2 or k < 1:
            return None
        vectors = embed(embedder, texts)
        keep = np.linalg.norm(vectors, axis=1) > 0
        vectors, texts = vectors[keep], [t for t, kept in zip(texts, keep, strict=True) if kept]
        if len(texts) < 2:
            return None
        centroids = kmeans(vectors, k, seed=seed)
        nearest = np.argmax(vectors @ centroids.T, axis=0)
        return cls(centroids, tuple(texts[int(i)] for i in nearest), embedder)

    def assign(self, text: str) -> int | None:
        """The index of the centroid nearest ``text``; None for a text with no tokens."""
        return self.assign_many([text])[0]

    def assign_many(self, texts: Sequence[str]) -> list[int | None]:
        """``assign`` for a batch of texts."""
        vectors = embed(self.embedder, texts)
        nearest = np.argmax(vectors @ self.centroids.T, axis=1)
        empty = ~vectors.any(axis=1)
        return [None if empty[i] else int(nearest[i]) for i in range(len(texts))]
