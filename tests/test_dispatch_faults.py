"""Every way a real upstream fails (the fake's fault mix: 429, 500, timeout, reset, cut, malformed, empty),
streamed and not, on both wire formats: until something has reached the client, the next model answers
in full; after, the stream ends in an error. ``bench/faults.py`` runs the same mix under load."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.fakes.upstream import MIX_KINDS, FakeUpstream
from tierwise import Router
from tierwise.config import parse_config
from tierwise.errors import ProviderError

FAST = {"connect": 1.0, "first_byte": 0.3, "read": 0.3, "total": 1.0}
PRICE = {"input_per_mtok": 1, "output_per_mtok": 2}


@pytest.fixture(params=["openai", "anthropic"])
async def fleet(request: pytest.FixtureRequest) -> AsyncIterator[dict[str, FakeUpstream]]:
    """A primary speaking the parametrized wire format, and an OpenAI fallback."""
    async with (
        FakeUpstream(kind=request.param, reply="primary says hello there") as primary,
        FakeUpstream(reply="fallback says hello there") as fallback,
    ):
        yield {"primary": primary, "fallback": fallback}


def router(fleet: dict[str, FakeUpstream], tmp_path: Path, **policy: Any) -> Router:
    config = {
        "providers": {
            name: {"kind": up.kind, "base_url": up.url, "timeouts": FAST} for name, up in fleet.items()
        },
        "models": [
            {
                "name": name,
                "provider": name,
                "upstream": name,
                "tier": "review",
                "context_window": 8000,
                "price": PRICE,
            }
            for name in fleet
        ],
        "policy": {
            "rules": [],
            "default": {"model": "primary", "fallbacks": ["fallback"]},
            # One try each, and a Retry-After past the bound: every fault moves on to the fallback at once.
            "retry": {"attempts": 1, "backoff_s": 0, "max_retry_after_s": 1},
            **policy,
        },
        "storage": {"ledger": f"sqlite:///{tmp_path / 'ledger.db'}"},
    }
    return Router(parse_config(config))


def body(stream: bool) -> dict[str, Any]:
    doc: dict[str, Any] = {"model": "auto", "max_tokens": 50, "messages": [{"role": "user", "content": "hi"}]}
    if stream:
        doc["stream"] = True
    return doc


async def answer_text(r: Router, stream: bool) -> tuple[str, str]:
    """(the answering model, the whole text the client received)."""
    if not stream:
        routed = await r.route(body(False))
        return routed.model, routed.response["choices"][0]["message"]["content"]
    answer = await r.route_stream(body(True))
    pieces = [
        (choice.get("delta") or {}).get("content") or ""
        async for chunk in answer
        for choice in chunk.data.get("choices") or ()
    ]
    return answer.model, "".join(pieces)


# Every kind fails before any content, but a stream cut after its first chunk (see the cut test below).
BEFORE_CONTENT = [
    (fault, stream) for fault in MIX_KINDS for stream in (False, True) if (fault, stream) != ("cut", True)
]


@pytest.mark.parametrize(
    ("fault", "stream"), BEFORE_CONTENT, ids=[f"{f}-{'stream' if s else 'json'}" for f, s in BEFORE_CONTENT]
)
async def test_a_failure_before_any_content_falls_back_to_the_next_model(
    fleet: dict[str, FakeUpstream], tmp_path: Path, fault: str, stream: bool
) -> None:
    fleet["primary"].fault_mix([fault], rate=1.0, retry_after="5")
    async with router(fleet, tmp_path) as r:
        model, text = await answer_text(r, stream)
        await r.ledger.flush()
        [row] = await r.ledger.fetch()
    assert fleet["primary"].injected == {fault: 1}
    assert (model, text) == ("fallback", "fallback says hello there")
    assert (row.http_status, row.status, row.final_model) == (200, "ok", "fallback")
    assert [a.model for a in row.attempts] == ["primary", "fallback"]
    assert row.attempts[0].status not in ("ok", "cancelled") and row.attempts[1].status == "ok"


@pytest.mark.parametrize(
    "answer",
    [
        {"choices": []},
        {"id": "chatcmpl-1", "choices": [{"index": 0, "message": None, "finish_reason": None}]},
    ],
    ids=["no-choices", "no-message"],
)
async def test_a_200_without_any_answer_in_it_falls_back(
    fleet: dict[str, FakeUpstream], tmp_path: Path, answer: dict[str, Any]
) -> None:
    """Valid JSON, status 200, and no message in it: no answer, so the next model's, not a 200 whose
    ``choices`` the client cannot read."""
    fleet["primary"].fail_next(1, status=200, body=answer)
    async with router(fleet, tmp_path) as r:
        model, text = await answer_text(r, stream=False)
        await r.ledger.flush()
        [row] = await r.ledger.fetch()
    assert (model, text) == ("fallback", "fallback says hello there")
    assert [(a.model, a.status) for a in row.attempts] == [
        ("primary", "UpstreamUnavailable"),
        ("fallback", "ok"),
    ]


async def test_a_stream_ending_with_no_answer_is_not_an_empty_answer_under_a_cascade(
    fleet: dict[str, FakeUpstream], tmp_path: Path
) -> None:
    """The cascade reads the cheap model's stream whole before verifying it: an end marker with nothing
    before it is a failed call (the next model answers), not an answer the verifiers could accept."""
    fleet["primary"].fault_mix(["empty"], rate=1.0)
    cascade = {"verifiers": [{"kind": "no_refusal"}], "tiers": ["review"]}
    async with router(fleet, tmp_path, cascade=cascade) as r:
        model, text = await answer_text(r, stream=True)
        await r.ledger.flush()
        [row] = await r.ledger.fetch()
    assert (model, text) == ("fallback", "fallback says hello there")
    assert (row.http_status, row.final_model) == (200, "fallback")
    assert row.attempts[0].status == "UpstreamUnavailable"


async def test_a_stream_cut_after_its_first_content_ends_in_an_error_not_a_splice(
    fleet: dict[str, FakeUpstream], tmp_path: Path
) -> None:
    fleet["primary"].fault_mix(["cut"], rate=1.0)
    async with router(fleet, tmp_path) as r:
        answer = await r.route_stream(body(True))
        received: list[str] = []
        with pytest.raises(ProviderError):
            async for chunk in answer:
                received += [
                    (c.get("delta") or {}).get("content") or "" for c in chunk.data.get("choices") or ()
                ]
        await r.ledger.flush()
        [row] = await r.ledger.fetch()
    assert "".join(received) == "primary "  # the first chunk, and nothing of the fallback's answer
    assert (row.status, row.http_status, row.final_model) == ("interrupted", 502, "primary")
    assert [a.model for a in row.attempts] == ["primary"]


async def test_the_fault_mix_is_seeded_and_can_be_changed_while_the_upstream_runs() -> None:
    async def statuses(up: FakeUpstream, n: int) -> list[int]:
        async with aiohttp.ClientSession() as http:
            seen = []
            for _ in range(n):
                async with http.post(f"{up.url}/chat/completions", json=body(False)) as resp:
                    seen.append(resp.status)
            return seen

    async with FakeUpstream() as up:
        control = f"http://127.0.0.1:{up.port}/_fake/faults"
        async with aiohttp.ClientSession() as http:
            async with http.post(control, json={"mix": ["500", "429"], "rate": 0.5, "seed": 7}) as resp:
                assert resp.status == 200
            first = await statuses(up, 40)
            async with http.get(control) as resp:
                state = await resp.json()
            async with http.post(control, json={"mix": ["500", "429"], "rate": 0.5, "seed": 7}) as resp:
                assert resp.status == 200
            again = await statuses(up, 40)
            async with http.post(control, json={"mix": ["teapot"]}) as resp:
                assert resp.status == 400
            async with http.post(control, json={"mix": None}) as resp:
                assert (await resp.json())["mix"] == []
            calm = await statuses(up, 5)
    assert first == again  # the same seed fails the same requests the same way
    assert set(first) == {200, 429, 500}
    assert state["calls"] == 40 and sum(state["injected"].values()) == first.count(429) + first.count(500)
    assert calm == [200] * 5
