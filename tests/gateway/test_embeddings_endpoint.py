"""``POST /v1/embeddings`` driven by the official openai SDK: forwarded, costed and logged, not routed."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from tests.fakes.upstream import embedding_of
from tests.harness import Stack, fleet_config, start_stack
from tierwise.access import hash_secret
from tierwise.config import parse_config
from tierwise.errors import ConfigError

EMBEDDINGS = [
    {
        "name": "embed-small",
        "provider": "cheap",
        "upstream": "text-embedding-3-small",
        "input_per_mtok": 0.02,
    },
    {
        "name": "embed-large",
        "provider": "backup",
        "upstream": "text-embedding-3-large",
        "input_per_mtok": 0.13,
    },
]


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    s = start_stack(tmp_path, embeddings=EMBEDDINGS)
    yield s
    s.close()


def test_embeddings_are_forwarded_costed_and_logged(stack: Stack, client: openai.OpenAI) -> None:
    raw = client.embeddings.with_raw_response.create(model="embed-large", input=["red apple", "green pear"])
    result = raw.parse()
    assert [d.index for d in result.data] == [0, 1]
    assert result.data[0].embedding == pytest.approx(embedding_of("red apple"), abs=1e-6)
    assert result.usage.prompt_tokens == 4
    assert raw.headers["x-tierwise-model"] == "embed-large"
    assert raw.headers["x-tierwise-tier"] == "embedding"
    sent = stack.upstreams["backup"].requests[-1]
    assert sent["model"] == "text-embedding-3-large" and sent["input"] == ["red apple", "green pear"]
    row = stack.rows()[-1]
    assert row.decision["layer"] == "embeddings" and row.final_model == "embed-large"
    assert row.input_tokens == 4 and row.cost_usd == pytest.approx(4 * 0.13 / 1e6)
    assert float(raw.headers["x-tierwise-cost-usd"]) == pytest.approx(row.cost_usd, abs=1e-10)
    assert [a.model for a in row.attempts] == ["embed-large"] and row.attempts[0].status == "ok"


def test_an_unknown_name_takes_the_first_model_and_floats_pass_through(
    stack: Stack, client: openai.OpenAI
) -> None:
    result = client.embeddings.create(
        model="text-embedding-3-small", input="hello", encoding_format="float", dimensions=4
    )
    assert len(result.data[0].embedding) == 4
    assert stack.upstreams["cheap"].requests[-1]["dimensions"] == 4
    row = stack.rows()[-1]
    assert row.final_model == "embed-small" and "the first" in row.decision["reason"]


def test_bad_input_and_upstream_failure(stack: Stack, client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError, match=r"input\[1\]"):
        client.embeddings.create(model="embed-small", input=["ok", ""])  # type: ignore[list-item]
    stack.upstreams["cheap"].fault("500")
    with pytest.raises(openai.InternalServerError):
        client.embeddings.create(model="embed-small", input="hello")
    row = stack.rows()[-1]
    assert row.status == "error" and row.http_status == 502 and row.attempts[0].http_status == 500


def test_off_without_config(tmp_path: Path) -> None:
    stack = start_stack(tmp_path)
    try:
        with (
            openai.OpenAI(base_url=stack.base_url, api_key="k", max_retries=0) as client,
            pytest.raises(openai.NotFoundError, match="no embedding model is configured"),
        ):
            client.embeddings.create(model="embed-small", input="hello")
    finally:
        stack.close()


def test_config_checks_the_provider() -> None:
    urls = {
        "cheap": "http://127.0.0.1:1/v1",
        "backup": "http://127.0.0.1:1/v1",
        "strong": "http://127.0.0.1:1",
    }
    bad = [{"name": "e", "provider": "strong", "upstream": "x", "input_per_mtok": 0.1}]
    with pytest.raises(ConfigError, match=r"embeddings\[0\]\.provider: 'strong' is of kind anthropic"):
        parse_config(fleet_config(urls, ledger="none", embeddings=bad))
    clash = [{"name": "draft-1", "provider": "cheap", "upstream": "x", "input_per_mtok": 0.1}]
    with pytest.raises(ConfigError, match=r"embeddings\[0\]\.name: 'draft-1'"):
        parse_config(fleet_config(urls, ledger="none", embeddings=clash))


def test_keys_are_charged_and_limited(tmp_path: Path) -> None:
    secret = "tw-embed-secret-0123456789abcdefghijklmnopqrstu"
    stack = start_stack(
        tmp_path,
        embeddings=EMBEDDINGS,
        auth={"mode": "keys"},
        tenants={"acme": {"budget": {"daily_usd": 1.0}}},
        keys=[
            {
                "id": "embedder",
                "tenant": "acme",
                "hash": hash_secret(secret),
                "rate_limits": {"requests_per_minute": 2},
            }
        ],
    )
    try:
        with openai.OpenAI(base_url=stack.base_url, api_key=secret, max_retries=0) as client:
            client.embeddings.create(model="embed-large", input="one two three")
            spent = stack.loop.run(stack.router.access.spent("tenant", "acme"))
            assert max(spent.values()) == pytest.approx(3 * 0.13 / 1e6)  # the daily budget, settled
            client.embeddings.create(model="embed-large", input="again")
            with pytest.raises(openai.RateLimitError):
                client.embeddings.create(model="embed-large", input="and again")
        assert [r.key_id for r in stack.rows()] == ["embedder", "embedder"]
    finally:
        stack.close()
