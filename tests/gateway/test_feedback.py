"""Feedback on answers (``POST /v1/feedback`` through the openai SDK, ``Router.afeedback``), prompt
capture, and the loop they exist for: ``tierwise train --ledger`` on the gateway's own traffic."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
import yaml

from tests.fakes.upstream import free_port
from tests.harness import Stack, fleet_config, run_cli, start_stack
from tierwise.artefact import read_artefact
from tierwise.config import parse_config
from tierwise.errors import RequestError
from tierwise.gateway.responses import error_response
from tierwise.ledger import NullLedger, open_ledger
from tierwise.router import Router

ASK = [{"role": "user", "content": "Classify the sentiment of this review: 'Great battery.'"}]
DEAD = dict.fromkeys(("cheap", "backup", "strong"), "http://127.0.0.1:9/v1")  # never called
CAPTURE = {"ledger": "none", "capture_prompts": True}  # the stack passes its own SQLite ledger


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    s = start_stack(tmp_path, storage=CAPTURE)
    yield s
    s.close()


def _feedback(client: openai.OpenAI, body: dict[str, Any]) -> Any:
    """POST /v1/feedback through the SDK's generic request path (it has no feedback method)."""
    return client.post("/feedback", body=body, cast_to=object)


def test_feedback_is_stored_beside_the_request_and_the_prompt_is_captured(
    stack: Stack, client: openai.OpenAI
) -> None:
    raw = client.chat.completions.with_raw_response.create(model="auto", messages=ASK)
    request_id = raw.headers["x-tierwise-request-id"]
    # At once: the row may still be in the write-behind queue, and feedback must still find it.
    stored = _feedback(client, {"request_id": request_id, "score": 0.25, "comment": "too terse"})
    assert stored == {
        "object": "feedback",
        "request_id": request_id,
        "score": 0.25,
        "comment": "too terse",
        "created": stored["created"],
    }
    _feedback(client, {"request_id": request_id, "score": 1})
    row = stack.rows()[-1]
    assert row.id == request_id and row.prompt == ASK
    kept = stack.loop.run(stack.router.ledger.fetch_feedback())
    assert [(f.request_id, f.score, f.comment) for f in kept] == [
        (request_id, 0.25, "too terse"),
        (request_id, 1.0, None),
    ]


@pytest.mark.parametrize(
    ("body", "param", "message"),
    [
        ({"score": 1}, "request_id", "request_id: required"),
        ({"request_id": "req_x"}, "score", "score: required"),
        ({"request_id": "req_x", "score": 1.5}, "score", "score: must be a number from 0 to 1, got 1.5"),
        ({"request_id": "req_x", "score": True}, "score", "score: must be a number from 0 to 1"),
        ({"request_id": 7, "score": 1}, "request_id", "request_id: must be a non-empty string"),
        ({"request_id": "req_x", "score": 1, "comment": "x" * 2001}, "comment", "at most 2000"),
        ({"request_id": "req_x", "score": 1, "rating": 5}, "rating", "rating: unknown field"),
    ],
)
def test_bad_feedback_is_a_400_naming_the_field(
    client: openai.OpenAI, body: dict[str, Any], param: str, message: str
) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        _feedback(client, body)
    error = info.value.body
    assert isinstance(error, dict)
    assert error["param"] == param and message in error["message"]
    assert error["type"] == "invalid_request_error"


def test_feedback_on_an_unknown_request_is_a_404_and_stores_nothing(
    stack: Stack, client: openai.OpenAI
) -> None:
    with pytest.raises(openai.NotFoundError) as info:
        _feedback(client, {"request_id": "req_nope", "score": 1})
    assert info.value.body["code"] == "request_not_found"  # type: ignore[index]
    assert stack.loop.run(stack.router.ledger.fetch_feedback()) == []


def test_without_capture_no_prompt_is_kept(tmp_path: Path) -> None:
    stack = start_stack(tmp_path)
    try:
        with openai.OpenAI(base_url=stack.base_url, api_key="k", max_retries=0) as client:
            client.chat.completions.create(model="auto", messages=ASK)
        assert stack.rows()[-1].prompt is None
    finally:
        stack.close()


def test_in_process_feedback_and_the_none_ledger(tmp_path: Path) -> None:
    doc = fleet_config(DEAD, ledger="none")
    router = Router(parse_config(doc))
    assert isinstance(router.ledger, NullLedger)
    with pytest.raises(RequestError, match=r"feedback needs a ledger to keep it: storage\.ledger is none"):
        asyncio.run(router.afeedback("req_x", 1.0))
    with pytest.raises(RequestError, match=r"score: must be a number from 0 to 1, got -1"):
        asyncio.run(router.afeedback("req_x", -1))


def test_feedback_while_the_ledger_is_unavailable_is_a_503_at_once(tmp_path: Path) -> None:
    pytest.importorskip("asyncpg", reason="the PostgreSQL ledger needs asyncpg")
    doc = fleet_config(DEAD, ledger=f"postgresql://admin:hunter2@127.0.0.1:{free_port()}/app")
    doc["storage"]["spill_dir"] = str(tmp_path / "spill")
    router = Router(parse_config(doc))
    assert router.ledger.spill_dir == tmp_path / "spill"  # type: ignore[attr-defined]

    async def feedback() -> tuple[RequestError, float]:
        started = time.monotonic()
        try:
            with pytest.raises(RequestError) as info:
                await router.afeedback("req_x", 1.0)  # the router starts, the ledger degraded
            return info.value, time.monotonic() - started
        finally:
            await router.aclose()

    error, seconds = asyncio.run(feedback())
    assert seconds < 1.0
    assert (error.status, error.code, error.type) == (503, "ledger_unavailable", "server_error")
    assert error.retry_after is not None and error.retry_after >= 1
    assert "hunter2" not in error.message and "127.0.0.1" not in error.message  # the store is not named
    response = error_response(error)
    assert response.status == 503
    assert int(response.headers["Retry-After"]) >= 1


def test_sync_router_feedback(stack: Stack, tmp_path: Path) -> None:
    own = open_ledger(f"sqlite:///{tmp_path / 'in-process.db'}")
    router = Router(stack.router.config, ledger=own)  # its own connections, on its own loop
    with router:
        routed = router.complete(ASK)
        stored = router.feedback(routed.request_id, 0.0)
    assert stored.request_id == routed.request_id and stored.score == 0.0


# -- the loop: serve, grade, retrain --------------------------------------------------------------------

PROMPTS = [f"Classify the sentiment of review #{i}: 'The battery lasts {i} hours.'" for i in range(24)]


def test_train_on_the_gateways_own_traffic(tmp_path: Path) -> None:
    """Cheap answers the cascade accepts are 1s for draft-1, refusals it rejects 0s; the caller grades
    exec-1's answers; `tierwise train --ledger` learns from exactly that."""
    two = [m for m in fleet_config({"cheap": "", "backup": "", "strong": ""}, ledger="none")["models"]]
    models = [two[0], two[2]]  # draft-1 and exec-1: a model that never answers has nothing to learn
    policy = {
        "rules": [],
        "default": {"tier": "draft", "fallbacks": ["execution"]},
        "cascade": {"verifiers": [{"kind": "no_refusal"}], "tiers": ["draft"]},
    }
    stack = start_stack(tmp_path, storage=CAPTURE, models=models, policy=policy)
    try:
        with openai.OpenAI(base_url=stack.base_url, api_key="k", max_retries=0) as client:
            for i, prompt in enumerate(PROMPTS):
                refuses = i % 2 == 1
                stack.upstreams["cheap"].reply = (
                    "I'm sorry, but I can't help with that." if refuses else "positive"
                )
                raw = client.chat.completions.with_raw_response.create(
                    model="auto", messages=[{"role": "user", "content": prompt}]
                )
                assert raw.headers["x-tierwise-model"] == ("exec-1" if refuses else "draft-1")
                if refuses:
                    _feedback(client, {"request_id": raw.headers["x-tierwise-request-id"], "score": 1})
        rows = stack.rows()
        assert sum(a.verified for row in rows for a in row.attempts) == 12
        config = tmp_path / "fleet.yaml"
        doc = fleet_config(DEAD, ledger=stack.ledger_url)
        doc.update(models=models, policy=policy)
        config.write_text(yaml.safe_dump(doc))
    finally:
        stack.close()

    artefact = tmp_path / "router.npz"
    trained = run_cli(
        "train", "--ledger", "--config", str(config), "--families", "linear", "--out", str(artefact)
    )
    assert trained.returncode == 0, trained.stderr
    assert (
        "24 ledger rows, 24 with their prompt, 24 labelled "
        "(12 by feedback, 0 by shadow calls, 24 by the cascade's" in trained.stderr
    )
    meta = read_artefact(artefact).meta
    [ledger] = meta["training"]["datasets"]
    assert ledger["name"].startswith("ledger:sqlite:///") and ledger["prompts"] == 24
    assert [m["name"] for m in meta["models"]] == ["draft-1", "exec-1"]
    routed = run_cli("route", "--config", str(config), "--explain", PROMPTS[0], "--json")
    assert routed.returncode == 0, routed.stderr
    assert json.loads(routed.stdout)["decision"]["layer"] in ("default", "rules")  # no learned section yet


def test_train_from_a_ledger_without_prompts_says_what_to_turn_on(tmp_path: Path) -> None:
    stack = start_stack(tmp_path)
    try:
        with openai.OpenAI(base_url=stack.base_url, api_key="k", max_retries=0) as client:
            client.chat.completions.create(model="auto", messages=ASK)
        stack.rows()
    finally:
        stack.close()
    config = tmp_path / "fleet.yaml"
    config.write_text(yaml.safe_dump(fleet_config(DEAD, ledger=stack.ledger_url)))
    trained = run_cli("train", "--ledger", "--config", str(config), "--out", str(tmp_path / "r.npz"))
    assert trained.returncode == 2
    assert "no labelled prompt to train on: turn on storage.capture_prompts" in trained.stderr
