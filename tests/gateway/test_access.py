"""Virtual keys, grants, rate limits and budgets at the gateway, with the official SDKs as clients."""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import openai
import pytest

from tests.harness import Stack, start_stack
from tierwise.access import hash_secret
from tierwise.access.budget import day
from tierwise.state import Counter

CLASSIFY = [{"role": "user", "content": "Classify the sentiment of this review: 'Great battery.'"}]
CODE = [{"role": "user", "content": "Write a Python function that reverses a linked list."}]
ALPHA = "tw-alpha-secret-0123456789abcdefghijklmnopqrstuv"  # a config key of tenant acme
DRAFTY = "tw-drafty-secret-0123456789abcdefghijklmnopqrstu"  # granted the draft tier only
LIMITED = "tw-limited-secret-0123456789abcdefghijklmnopqrst"  # 2 requests a minute
MASTER = "tw-master-secret-0123456789abcdefghijklmnopqrstu"
SECRETS = (ALPHA, DRAFTY, LIMITED, MASTER)


def access_config() -> dict[str, Any]:
    return {
        "auth": {"mode": "keys", "master_key_env": "TW_TEST_MASTER"},
        "tenants": {
            "acme": {"budget": {"daily_usd": 1.0, "downgrade_at": 0.8}},
            "small": {"allowed_tiers": ["draft"], "user_tier": "free"},
        },
        "keys": [
            {"id": "alpha", "tenant": "acme", "hash": hash_secret(ALPHA)},
            {"id": "drafty", "tenant": "small", "hash": hash_secret(DRAFTY)},
            {
                "id": "limited",
                "tenant": "acme",
                "hash": hash_secret(LIMITED),
                "rate_limits": {"requests_per_minute": 2},
            },
        ],
    }


@pytest.fixture
def stack(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Stack]:
    monkeypatch.setenv("TW_TEST_MASTER", MASTER)
    s = start_stack(tmp_path, **access_config())
    yield s
    s.close()


def client(stack: Stack, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=stack.base_url, api_key=key, max_retries=0, timeout=20)


def spend(stack: Stack, tenant: str, usd: float) -> None:
    """Charge ``usd`` to the tenant's daily budget, as earlier requests would have."""
    period = day(time.time())
    counter = Counter(f"budget:tenant:{tenant}:daily:{period.id}", usd, 0.0, 86_400)
    settled = Counter(f"budget:tenant:{tenant}:daily:{period.id}:settled", usd, 0.0, 86_400)
    stack.loop.run(stack.router.state.adjust([counter, settled]))


def admin(stack: Stack, method: str, path: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
    async def go() -> tuple[int, Any]:
        url = stack.base_url.removesuffix("/v1") + path
        async with (
            aiohttp.ClientSession() as http,
            http.request(method, url, json=body, headers={"Authorization": f"Bearer {MASTER}"}) as r,
        ):
            return r.status, await r.json()

    return stack.loop.run(go())


def test_a_key_is_mandatory(stack: Stack) -> None:
    for key in ("tw-not-a-key-at-all", "sk-someone-elses"):
        with client(stack, key) as c, pytest.raises(openai.AuthenticationError) as caught:
            c.chat.completions.create(model="auto", messages=CLASSIFY)
        assert caught.value.code == "invalid_api_key"
        assert caught.value.status_code == 401

    async def without_key() -> tuple[int, Any]:
        async with (
            aiohttp.ClientSession() as http,
            http.post(
                f"{stack.base_url}/chat/completions", json={"model": "auto", "messages": CLASSIFY}
            ) as r,
        ):
            return r.status, await r.json()

    status, body = stack.loop.run(without_key())
    assert status == 401 and body["error"]["code"] == "invalid_api_key"
    assert body["error"]["type"] == "authentication_error"
    assert "missing API key" in body["error"]["message"]
    assert stack.rows() == []  # refused before any work: no call, no row


def test_a_valid_key_is_served_and_logged_by_id(stack: Stack) -> None:
    with client(stack, ALPHA) as c:
        raw = c.chat.completions.with_raw_response.create(model="auto", messages=CLASSIFY)
    assert raw.parse().choices[0].message.content == "cheap answer here"
    (row,) = stack.rows()
    assert row.key_id == "alpha"
    assert row.decision["tenant"] == "acme"


def test_anthropic_style_x_api_key(stack: Stack) -> None:
    async def go(key: str) -> int:
        async with (
            aiohttp.ClientSession() as http,
            http.post(
                f"{stack.base_url}/chat/completions",
                json={"model": "auto", "messages": CLASSIFY},
                headers={"x-api-key": key},
            ) as r,
        ):
            await r.read()
            return r.status

    assert stack.loop.run(go(ALPHA)) == 200
    assert stack.loop.run(go("tw-wrong")) == 401


def test_a_model_not_granted_is_403_and_auto_stays_within_the_grant(stack: Stack) -> None:
    with client(stack, DRAFTY) as c:
        with pytest.raises(openai.PermissionDeniedError) as caught:
            c.chat.completions.create(model="exec-1", messages=CODE)
        assert caught.value.code == "model_not_allowed"
        assert "exec-1" in caught.value.message
        with pytest.raises(openai.PermissionDeniedError):
            c.chat.completions.create(model="execution", messages=CODE)
        raw = c.chat.completions.with_raw_response.create(model="auto", messages=CODE)
    assert raw.headers["x-tierwise-model"] == "draft-1"
    assert "granted tiers up to draft" in raw.headers["x-tierwise-reason"]
    (row,) = stack.rows()
    assert row.features["user_tier"] == "free"  # the tenant's user tier feeds the rules


def test_rate_limit_is_429_with_openai_headers(stack: Stack) -> None:
    if 60 - time.time() % 60 < 5:  # the three requests must fall in one minute window
        time.sleep(60 - time.time() % 60 + 0.1)
    with client(stack, LIMITED) as c:
        for _ in range(2):
            c.chat.completions.create(model="auto", messages=CLASSIFY)
        with pytest.raises(openai.RateLimitError) as caught:
            c.chat.completions.create(model="auto", messages=CLASSIFY)
    error = caught.value
    assert error.code == "rate_limit_exceeded"
    headers = error.response.headers
    assert headers["x-ratelimit-limit-requests"] == "2"
    assert headers["x-ratelimit-remaining-requests"] == "0"
    assert headers["x-ratelimit-reset-requests"].endswith("s")
    assert 1 <= int(headers["Retry-After"]) <= 60
    assert len(stack.rows()) == 2


def test_budget_downgrades_then_blocks(stack: Stack) -> None:
    with client(stack, ALPHA) as c:
        raw = c.chat.completions.with_raw_response.create(model="auto", messages=CODE)
        assert raw.headers["x-tierwise-tier"] == "execution"  # within budget: the rules decide
        spend(stack, "acme", 0.85)
        raw = c.chat.completions.with_raw_response.create(model="auto", messages=CODE)
        assert raw.headers["x-tierwise-tier"] == "draft"
        reason = raw.headers["x-tierwise-reason"]
        assert "budget: tenant acme has spent 8" in reason and reason.endswith("-> draft")
        # quality: high keeps its tier (critical_hints: keep, the default)
        raw = c.chat.completions.with_raw_response.create(
            model="auto", messages=CODE, extra_headers={"x-tierwise-quality": "high"}
        )
        assert raw.headers["x-tierwise-tier"] == "execution"
        spend(stack, "acme", 0.2)
        with pytest.raises(openai.RateLimitError) as caught:
            c.chat.completions.create(model="auto", messages=CODE)
    assert caught.value.code == "budget_exceeded"
    assert "tenant acme" in caught.value.message and "resets at" in caught.value.message
    headers = caught.value.response.headers
    assert int(headers["Retry-After"]) >= 1
    assert int(headers["x-tierwise-budget-reset"]) == int(day(time.time()).ends)
    rows = stack.rows()
    assert [r.decision["tier"] for r in rows] == ["execution", "draft", "execution"]
    assert "budget: tenant acme" in rows[1].decision["reason"]


def test_reservation_settles_to_the_real_cost(stack: Stack) -> None:
    with client(stack, ALPHA) as c:
        c.chat.completions.create(model="auto", messages=CLASSIFY, max_tokens=500)
    spent = stack.loop.run(stack.router.access.spent("tenant", "acme"))
    (row,) = stack.rows()
    assert spent["daily"] == pytest.approx(row.cost_usd, abs=1e-12)
    assert spent["monthly"] == 0.0  # acme has no monthly budget: nothing is counted for one


def test_feedback_only_from_the_key_that_asked_or_the_master(stack: Stack) -> None:
    with client(stack, ALPHA) as c:
        raw = c.chat.completions.with_raw_response.create(model="auto", messages=CLASSIFY)
    request_id = raw.headers["x-tierwise-request-id"]

    async def grade(key: str) -> tuple[int, Any]:
        async with (
            aiohttp.ClientSession() as http,
            http.post(
                f"{stack.base_url}/feedback",
                json={"request_id": request_id, "score": 1},
                headers={"Authorization": f"Bearer {key}"},
            ) as r,
        ):
            return r.status, await r.json()

    status, body = stack.loop.run(grade(DRAFTY))
    assert (status, body["error"]["code"]) == (403, "not_request_owner")
    assert stack.loop.run(grade("tw-nobody"))[0] == 401
    assert stack.loop.run(grade(ALPHA))[0] == 200
    assert stack.loop.run(grade(MASTER))[0] == 200


def test_admin_keys_create_use_revoke(stack: Stack) -> None:
    assert admin(stack, "GET", "/admin/keys")[0] == 200
    status, created = admin(
        stack, "POST", "/admin/keys", {"tenant": "acme", "id": "ci-bot", "allowed_tiers": ["draft", "review"]}
    )
    assert status == 201 and created["id"] == "ci-bot" and created["key"].startswith("tw-")
    secret = created["key"]
    with client(stack, secret) as c:
        raw = c.chat.completions.with_raw_response.create(model="auto", messages=CODE)
        assert raw.headers["x-tierwise-tier"] == "review"  # granted up to review
    status, listed = admin(stack, "GET", "/admin/keys")
    assert {k["id"] for k in listed["data"]} == {"alpha", "drafty", "limited", "ci-bot"}
    assert all("hash" not in k and "key" not in k for k in listed["data"])
    status, shown = admin(stack, "GET", "/admin/keys/ci-bot")
    assert shown["spent_usd"]["daily"] == 0.0  # the key has no budget of its own: not counted
    assert admin(stack, "POST", "/admin/keys/ci-bot/revoke")[1]["revoked"] is True
    assert admin(stack, "DELETE", "/admin/keys/alpha")[1]["revoked"] is True  # a config key too
    for key in (secret, ALPHA):
        with client(stack, key) as c, pytest.raises(openai.AuthenticationError) as caught:
            c.chat.completions.create(model="auto", messages=CLASSIFY)
        assert "revoked" in caught.value.message
    status, body = admin(stack, "POST", "/admin/keys", {"tenant": "nobody"})
    assert (status, body["error"]["code"]) == (404, "tenant_not_found")
    status, body = admin(stack, "POST", "/admin/keys", {"tenant": "acme", "id": "a b"})
    assert (status, body["error"]["code"]) == (400, "invalid_key_id")
    status, body = admin(stack, "POST", "/admin/keys", {"tenant": "acme", "allowed_tiers": ["gold"]})
    assert status == 400 and "allowed_tiers: unknown tier 'gold'" in body["error"]["message"]
    status, body = admin(stack, "POST", "/admin/keys", {"tenant": "acme", "id": "alpha"})
    assert (status, body["error"]["code"]) == (409, "key_exists")


def test_admin_needs_the_master_key(stack: Stack) -> None:
    async def go(key: str) -> int:
        async with (
            aiohttp.ClientSession() as http,
            http.get(
                stack.base_url.removesuffix("/v1") + "/admin/keys", headers={"Authorization": f"Bearer {key}"}
            ) as r,
        ):
            return r.status

    assert stack.loop.run(go(ALPHA)) == 401
    assert stack.loop.run(go(MASTER)) == 200


def test_no_key_material_in_logs_ledger_or_responses(
    stack: Stack, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    seen: list[str] = []
    _, created = admin(stack, "POST", "/admin/keys", {"tenant": "acme", "id": "temp"})
    secrets = (*SECRETS, created["key"])
    for key in secrets:
        with client(stack, key) as c:
            for messages, model in ((CLASSIFY, "auto"), (CODE, "exec-1")):
                try:
                    raw = c.chat.completions.with_raw_response.create(model=model, messages=messages)
                    seen.append(raw.http_response.text + str(dict(raw.headers)))
                except openai.APIStatusError as exc:
                    seen.append(exc.response.text + str(dict(exc.response.headers)))
    seen += [
        str(admin(stack, "GET", path)[1]) for path in ("/admin/keys", "/admin/keys/temp", "/admin/keys/alpha")
    ]
    stack.rows()  # flushed
    stack.loop.run(stack.router.ledger.flush())
    written = b"".join(p.read_bytes() for p in tmp_path.rglob("*") if p.is_file())
    con = sqlite3.connect(tmp_path / "ledger.db")
    dumped = "\n".join(con.iterdump())
    con.close()
    everything = "\n".join([*seen, caplog.text, dumped])
    for secret in secrets:
        assert secret not in everything
        assert secret.encode() not in written
        assert hash_secret(secret) not in everything  # not even the hash leaves the state store
    assert "alpha" in dumped  # what the ledger names instead


def test_a_stream_is_reserved_and_settled_like_any_request(stack: Stack) -> None:
    with client(stack, ALPHA) as c:
        chunks = list(c.chat.completions.create(model="auto", messages=CLASSIFY, stream=True))
    assert chunks
    (row,) = stack.rows()
    assert row.key_id == "alpha" and row.stream
    spent = stack.loop.run(stack.router.access.spent("tenant", "acme"))
    assert spent["daily"] == pytest.approx(row.cost_usd, abs=1e-12)
