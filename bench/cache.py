"""What does a cache hit cost, and how often is the semantic cache right? One command:

    python bench/cache.py [--requests N] [--thresholds 0.9,0.95,...] [--skip-serve]

1. **Hit vs routed, through ``tierwise serve``** (as ``bench/overhead.py`` runs it: a fake upstream in
   its own process, the SQLite ledger on): the server's CPU ms and the client's latency per request for
   a routed request (a question never asked: exact and semantic miss, routed, called upstream), an
   exact hit (the same question again) and a semantic hit (the same question, re-cased and re-spaced).
2. **Semantic precision on the arena prompts** (``src/tierwise/data/arena-bench-v1``, 300 questions):
   half of them (seeded) are answered and cached; then every question is asked again, paraphrased
   deterministically (casing, punctuation, filler, a swapped pair of words). A paraphrase of a cached
   question should hit it; one of an uncached question should miss. Per threshold: the hit rate on
   cached questions, the false hits on uncached ones, and precision (hits that were answers to the
   same question).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import aiohttp
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))
from overhead import HEADERS, Server, free_port, tierwise_config
from tierwise.arena_data import load_arena
from tierwise.cache import _Semantic
from tierwise.config import SemanticCacheConfig
from tierwise.embeddings import load_wordllama

SYSTEM = "You are a precise text classifier. Answer with one word."
QUESTION = "Classify the sentiment of this customer review: the jacket arrived late and the zipper broke."
FILLERS_BEFORE = ("", "Please: ", "Hey, ", "Quick question. ", "Can you help? ", "I was wondering, ")
FILLERS_AFTER = ("", " Thanks!", " Thank you.", " Please answer.", "?", " :)")


def reworded(text: str, i: int) -> str:
    """The ``i``-th of 288 distinct rewordings of ``text`` (filler before and after, first letter's case,
    end punctuation): each an exact miss that a semantic lookup should find."""
    before, i = FILLERS_BEFORE[i % 6], i // 6
    after, i = FILLERS_AFTER[i % 6], i // 6
    first, i = (str.lower, str.upper)[i % 2], i // 2
    return before + first(text[0]) + text[1:].rstrip(".") + ("", ".", "!", " ...")[i % 4] + after


def body(text: str) -> bytes:
    messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": text}]
    return orjson.dumps({"model": "auto", "messages": messages, "temperature": 0, "max_tokens": 5})


async def _send(session: aiohttp.ClientSession, url: str, data: bytes) -> tuple[float, str | None]:
    started = time.perf_counter()
    async with session.post(url, data=data, headers=HEADERS) as response:
        await response.read()
        assert response.status == 200, response.status
        return time.perf_counter() - started, response.headers.get("x-tierwise-cache-kind")


async def serve_bench(requests: int, workdir: Path) -> list[list[str]]:
    py = sys.executable
    up_port = free_port()
    upstream = Server(
        "upstream",
        [py, "-m", "tests.fakes.upstream", "--kind", "openai", "--port", str(up_port), "--reply", "Negative"],
        port=up_port,
        cpus=None,
        logdir=workdir,
    )
    servers = [upstream]
    try:
        upstream.wait_ready()
        default = SemanticCacheConfig()
        cached = {"exact": {"max_entries": 100_000}, "semantic": {"max_entries": 10_000}}
        urls = {}
        for name, cache in (("tierwise", cached), ("tierwise-nocache", None)):
            settings = tierwise_config(f"http://127.0.0.1:{up_port}/v1", f"sqlite:///{workdir / name}.db")
            if cache is not None:
                settings["cache"] = cache
            config = workdir / f"{name}.yaml"
            config.write_bytes(orjson.dumps(settings))
            port = free_port()
            argv = [py, "-m", "tierwise.cli", "serve", "--config", str(config), "--port", str(port)]
            servers.append(Server(name, argv, port=port, cpus=None, logdir=workdir))
            servers[-1].wait_ready()
            urls[name] = f"http://127.0.0.1:{port}/v1/chat/completions"
        kinds = {
            "routed, no cache configured": lambda i: body(
                f"{QUESTION} Order {i * 7919 % 1_000_003}, ref {i:x}."
            ),
            # a new order number each time: never asked, never close enough to a cached one
            "routed (cache miss)": lambda i: body(f"{QUESTION} Order {i * 7919 % 1_000_003}, ref {i:x}."),
            "exact hit": lambda i: body(QUESTION),
            "semantic hit": lambda i: body(reworded(QUESTION, i + 1)),
        }
        rows = []
        async with aiohttp.ClientSession() as session:
            for url in urls.values():
                await _send(session, url, body(QUESTION))  # the answer the hits are served from
                for _ in range(100):  # warm-up
                    await _send(session, url, body(QUESTION))
            for name, make in kinds.items():
                server = servers[2] if name.endswith("no cache configured") else servers[1]
                url = urls[server.name]
                # rewordings run out at 287: a repeat would be an exact hit
                n = min(requests, 287) if name == "semantic hit" else requests
                bodies = [make(i) for i in range(n)]
                cpu = server.cpu_seconds()
                latencies, served = [], []
                for data in bodies:
                    latency, kind = await _send(session, url, data)
                    latencies.append(latency)
                    served.append(kind)
                cpu = server.cpu_seconds() - cpu
                expected = {"exact hit": "exact", "semantic hit": "semantic"}.get(name)
                share = sum(k == expected for k in served) / len(served)
                rows.append(
                    [
                        name,
                        str(n),
                        f"{cpu / n * 1000:.3f}",
                        f"{statistics.median(latencies) * 1000:.2f}",
                        f"{sorted(latencies)[int(len(latencies) * 0.99)] * 1000:.2f}",
                        f"{share:.0%}",
                    ]
                )
        print(f"(semantic threshold {default.threshold}, SQLite ledger on, one client, sequential requests)")
        return rows
    finally:
        for server in reversed(servers):
            server.stop()


def paraphrase(text: str, rng: random.Random) -> str:
    """A deterministic rewording that keeps the question: casing, punctuation, filler, a word swap."""
    words = text.split()
    if len(words) > 6 and rng.random() < 0.5:  # swap one adjacent pair away from the ends
        i = rng.randrange(1, len(words) - 3)
        words[i], words[i + 1] = words[i + 1], words[i]
    out = " ".join(words)
    choice = rng.random()
    if choice < 0.33:
        out = out.lower()
    elif choice < 0.5:
        out = out[:1].upper() + out[1:]
    if rng.random() < 0.5:
        out = out.rstrip("?.!") + rng.choice(("", ".", "?", "!!"))
    return rng.choice(FILLERS_BEFORE) + out + rng.choice(FILLERS_AFTER)


def twin(text: str, other: str) -> str:
    """A different question worded almost the same: its digits shifted, or (none) its longest word
    replaced by another question's longest word — what a semantic cache must not confuse."""
    if any(c in "0123456789" for c in text):
        return "".join(str((int(c) + 1) % 10) if c in "0123456789" else c for c in text)
    word = max(text.split(), key=len)
    return text.replace(word, max(other.split(), key=len), 1)


def precision_table(thresholds: Sequence[float], seed: int, *, same_terms: bool) -> list[list[str]]:
    questions = [q.prompt for q in load_arena().questions]
    rng = random.Random(seed)
    order = list(range(len(questions)))
    rng.shuffle(order)
    cached = set(order[: len(order) // 2])
    embedder = load_wordllama()
    # threshold 0: every best match the guard lets through is reported, with its similarity
    store = _Semantic(0.0, 3600, 100_000, embedder, same_terms=same_terms)
    for i in sorted(cached):
        store.put("scope", questions[i], orjson.dumps(i))
    asked = [(i, paraphrase(questions[i], rng)) for i in range(len(questions)) for _ in range(2)]
    # Twins of cached questions are new questions: asked as "question -1", any hit on them is wrong.
    twins = [(-1, twin(questions[i], questions[rng.randrange(len(questions))])) for i in sorted(cached)]
    asked += twins
    best: list[tuple[int, int, float]] = []  # (asked question, matched question, similarity)
    for i, text in asked:
        found = store.get("scope", text)
        if found is not None:
            best.append((i, orjson.loads(found[0]), found[1]))
    rows = []
    for threshold in thresholds:
        hits = [(i, j) for i, j, score in best if score >= threshold]
        right = sum(i == j for i, j in hits)
        on_cached = sum(1 for i, _ in asked if i in cached)
        cached_hits = sum(1 for i, j in hits if i in cached and i == j)
        false_hits = sum(1 for i, _ in hits if i not in cached and i != -1)
        twin_hits = sum(1 for i, _ in hits if i == -1)
        wrong = len(hits) - right
        rows.append(
            [
                f"{threshold:.2f}",
                f"{cached_hits / on_cached:.1%}",
                f"{false_hits}/{len(asked) - on_cached - len(twins)}",
                f"{twin_hits}/{len(twins)}",
                str(len(hits)),
                str(wrong),
                f"{right / len(hits):.1%}" if hits else "—",
            ]
        )
    return rows


def table(head: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(r[c]) for r in [head, *rows]) for c in range(len(head))]
    lines = ["  ".join(cell.rjust(w) for cell, w in zip(row, widths, strict=True)) for row in [head, *rows]]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--thresholds", default="0.80,0.85,0.90,0.93,0.95,0.97,0.98,0.99")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--skip-serve", action="store_true")
    args = parser.parse_args(argv)
    if not args.skip_serve:
        with tempfile.TemporaryDirectory(prefix="tierwise-cache-bench-") as tmp:
            rows = asyncio.run(serve_bench(args.requests, Path(tmp)))
        head = ["request", "n", "server CPU ms/req", "p50 ms", "p99 ms", "served as expected"]
        print(table(head, rows))
        print()
    thresholds = [float(t) for t in args.thresholds.split(",")]
    head = ["threshold", "hit rate", "false hits: uncached", "near-twins", "hits", "wrong", "precision"]
    print(
        "semantic cache on the 300 arena prompts: 150 cached; each of the 300 asked twice, paraphrased;\n"
        "plus a near-twin of each cached one (digits shifted or one word replaced: a different question)"
    )
    for same_terms in (False, True):
        guard = "with the lexical guard (semantic.same_terms, the default)" if same_terms else "cosine alone"
        print(f"\n{guard}:")
        print(table(head, precision_table(thresholds, args.seed, same_terms=same_terms)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
