"""The projection against hand-computed costs, and the clusters on the real embeddings."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import orjson
import pytest

from tierwise.config import Config
from tierwise.estimate.clusters import Reservoir, kmeans
from tierwise.estimate.formats import LoggedRequest
from tierwise.estimate.output import build_report, render
from tierwise.estimate.project import DEFAULT_OUTPUT_TOKENS, Pricer, project
from tierwise.policy.engine import PolicyEngine

CLASSIFY = {"model": "x", "messages": [{"role": "user", "content": "Classify the sentiment: I love it"}]}
CODE = {"model": "x", "messages": [{"role": "user", "content": "Write a python function to merge two dicts"}]}
M = 1_000_000


def test_today_by_fleet_price_spend_or_strongest(config: Config) -> None:
    pricer = Pricer(config, PolicyEngine(config))
    # The logged model is exec-1 by its upstream id: its fleet price; routed: the draft tier.
    fleet = pricer.price(LoggedRequest("a:1", CLASSIFY, "strong-model", 100, 10))
    assert (fleet.today_method, fleet.today_model) == ("fleet-price", "exec-1")
    assert fleet.today_usd == pytest.approx((100 * 3 + 10 * 15) / M)
    assert (fleet.routed_model, fleet.tier, fleet.rule, fleet.layer) == (
        "draft-1",
        "draft",
        "cheap-task",
        "rules",
    )
    assert fleet.routed_usd == pytest.approx((100 * 0.5 + 10 * 1) / M)
    assert "cheap-task" in fleet.reason
    # A provider prefix is ignored; a model outside the fleet with a logged spend is charged that spend.
    assert pricer.price(LoggedRequest("a:2", CODE, "openai/review-1", 50, 5)).today_model == "review-1"
    spend = pricer.price(LoggedRequest("a:3", CODE, "gpt-4o", 50, 5, spend_usd=0.01))
    assert (spend.today_method, spend.today_usd) == ("logged-spend", 0.01)
    assert (spend.routed_model, spend.rule) == ("exec-1", "code-math")
    # Neither: the always-strongest model's price, and the features' input estimate without usage.
    guess = pricer.price(LoggedRequest("a:4", CLASSIFY, "gpt-4o", None, 20))
    assert guess.today_method == "strongest-price" and guess.today_model == "exec-1"
    assert guess.input_tokens > 0
    assert guess.today_usd == pytest.approx((guess.input_tokens * 3 + 20 * 15) / M)


def test_features_from_the_ledger_when_no_prompt_was_kept(config: Config) -> None:
    pricer = Pricer(config, PolicyEngine(config))
    logged = {"task": "classify", "input_tokens": 70, "turns": 1, "has_code": False, "unknown_key": 1}
    priced = pricer.price(LoggedRequest("l#1", None, "exec-1", 70, 4, 0.5, logged_features=logged))
    assert (priced.task, priced.routed_model, priced.input_tokens) == ("classify", "draft-1", 70)
    bare = pricer.price(LoggedRequest("l#2", None, "exec-1", 70, 4))
    assert bare.task == "chat" and bare.routed_model == "review-1"


def write(path: Path, records: list[dict]) -> Path:
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in records))
    return path


def test_projection_totals_and_output_estimate(tmp_path: Path, config: Config) -> None:
    logs = write(
        tmp_path / "r.jsonl",
        [
            {**CLASSIFY, "model": "exec-1", "usage": {"prompt_tokens": 100, "completion_tokens": 10}},
            {**CODE, "model": "exec-1", "usage": {"prompt_tokens": 200, "completion_tokens": 30}},
            {**CLASSIFY, "model": "exec-1", "usage": {"prompt_tokens": 100}},  # output estimated: mean 20
        ],
    )
    result = project(config, PolicyEngine(config), [str(logs)], clusters=0)
    assert result.output_estimate()["classify"] == pytest.approx(20.0)
    report = build_report(result, config, policy_version="v")
    today = (100 * 3 + 10 * 15 + 200 * 3 + 30 * 15 + 100 * 3 + 20 * 15) / M
    routed = (100 * 0.5 + 10 * 1 + 200 * 3 + 30 * 15 + 100 * 0.5 + 20 * 1) / M
    assert report["total"]["today_usd"] == pytest.approx(today)
    assert report["total"]["routed_usd"] == pytest.approx(routed)
    assert report["total"]["output_tokens_estimated_for"] == 1
    by_type = {row["type"]: row for row in report["by_type"]}
    assert by_type["classify"]["requests"] == 2 and by_type["classify"]["model"] == "draft-1"
    assert by_type["code"]["share_of_spend"] == pytest.approx((200 * 3 + 30 * 15) / M / today)
    assert report["headline"].startswith(f"you would have saved {(today - routed) / today:.1%}")
    text = render(report)
    assert "cost projection" in text and "quality at the cheaper tiers is unmeasured" in text
    assert "output tokens estimated for 1 requests" in text


def test_no_usage_anywhere_uses_the_default_output(tmp_path: Path, config: Config) -> None:
    logs = write(tmp_path / "r.jsonl", [CLASSIFY])
    result = project(config, PolicyEngine(config), [str(logs)], clusters=0)
    assert set(result.output_estimate().values()) == {DEFAULT_OUTPUT_TOKENS}


def test_reservoir_is_uniform_and_bounded() -> None:
    hits = [0] * 10
    for seed in range(2000):
        reservoir = Reservoir(3, seed=seed)
        for item in range(10):
            reservoir.offer(item)
        assert len(reservoir.items) == 3
        for item in reservoir.items:
            hits[item] += 1
    assert all(abs(h / 2000 - 0.3) < 0.05 for h in hits)


def test_kmeans_separates_two_directions() -> None:
    import numpy as np

    rng = np.random.default_rng(0)
    a = np.array([1.0, 0, 0]) + rng.normal(0, 0.05, (50, 3))
    b = np.array([0, 1.0, 0]) + rng.normal(0, 0.05, (50, 3))
    vectors = np.vstack([a, b]).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    centroids = kmeans(vectors, 2, seed=0)
    labels = np.argmax(vectors @ centroids.T, axis=1)
    assert len(set(labels[:50])) == 1 and len(set(labels[50:])) == 1 and labels[0] != labels[50]


def needs_the_embeddings() -> None:
    # find_spec, not importorskip: wordllama's files are read, its code must never be imported (a test
    # of embeddings.py checks that it is not in sys.modules).
    for name in ("tokenizers", "wordllama"):
        if importlib.util.find_spec(name) is None:
            pytest.skip(f"needs {name}: pip install 'tierwise[learned]'")


def test_batched_embedding_matches_the_router_embedding() -> None:
    needs_the_embeddings()
    import numpy as np

    from tierwise.embeddings import load_wordllama
    from tierwise.estimate.clusters import KEEP_CHARS, embed

    embedder = load_wordllama()
    texts = ["Translate to French: good morning", "", "x" * 5000, "Write a python function"]
    ours = embed(embedder, texts)
    theirs = embedder.embed_many([t[:KEEP_CHARS] for t in texts])
    assert np.allclose(ours, theirs, atol=1e-5) and not ours[1].any()


def test_clusters_on_the_router_embeddings(tmp_path: Path, config: Config) -> None:
    needs_the_embeddings()
    topics = [
        "Translate to French: good morning, how are you today",
        "Translate to German: where is the railway station please",
        "Write a python function that reverses a linked list",
        "Write a python function that parses a CSV file into dicts",
    ]
    logs = write(
        tmp_path / "r.jsonl",
        [
            {"model": "exec-1", "messages": [{"role": "user", "content": f"{t} ({i})"}]}
            for i in range(10)
            for t in topics
        ],
    )
    result = project(config, PolicyEngine(config), [str(logs)], clusters=2)
    report = build_report(result, config, policy_version="v")
    assert report["clusters_fitted"] == 2
    sizes = sorted(row["requests"] for row in report["by_cluster"])
    assert sizes == [20, 20]
    tasks = {row["task"] for row in report["by_cluster"]}
    assert tasks == {"translate", "code"}
