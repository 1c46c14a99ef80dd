from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tierwise.arena_data import ArenaData, load_arena
from tierwise.config import ModelEntry, Price, ProviderConfig, load_config
from tierwise.errors import ConfigError, UpstreamRejected, UpstreamUnavailable
from tierwise.providers import build_provider
from tierwise.providers.base import Chunk, UpstreamCall, chunk_has_content
from tierwise.providers.replay import ReplayProvider

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
ARENA = ProviderConfig(kind="replay", dataset="arena-bench-v1")


@pytest.fixture(scope="module")
def arena() -> ArenaData:
    return load_arena()


@pytest.fixture(scope="module")
def provider() -> ReplayProvider:
    return ReplayProvider("replay", ARENA, http=None)


def _model(upstream: str, name: str | None = None) -> ModelEntry:
    return ModelEntry(
        name=name or upstream,
        provider="replay",
        upstream=upstream,
        price=Price(input_per_mtok=1, output_per_mtok=2),
        context_window=128_000,
        tier="draft",
    )


def _call(model: str, *messages: dict[str, Any], name: str | None = None) -> UpstreamCall:
    return UpstreamCall(model=_model(model, name), body={"model": "auto", "messages": list(messages)})


def _user(content: Any) -> dict[str, Any]:
    return {"role": "user", "content": content}


async def _collect(provider: ReplayProvider, call: UpstreamCall) -> list[Chunk]:
    return [chunk async for chunk in provider.stream(call)]


@pytest.mark.parametrize("model", ["gpt-4-1106-preview", "Mixtral-8x7B-Instruct-v0.1", "claude-2.1"])
async def test_complete_returns_the_recorded_answer_and_usage(
    provider: ReplayProvider, arena: ArenaData, model: str
) -> None:
    question = arena.questions[3]
    completion = await provider.complete(_call(model, _user(question.prompt)))
    input_tokens, output_tokens = arena.tokens(question.id, model)
    body = completion.body
    assert body["id"].startswith("chatcmpl-replay-")
    assert body["object"] == "chat.completion"
    assert isinstance(body["created"], int)
    assert body["model"] == model
    assert body["choices"] == [
        {
            "index": 0,
            "message": {"role": "assistant", "content": arena.answer(question.id, model)},
            "logprobs": None,
            "finish_reason": "stop",
        }
    ]
    assert body["usage"] == {
        "prompt_tokens": input_tokens,
        "completion_tokens": output_tokens,
        "total_tokens": input_tokens + output_tokens,
    }
    assert (completion.usage.input_tokens, completion.usage.output_tokens) == (input_tokens, output_tokens)
    json.dumps(body)  # serializable as is


async def test_every_prompt_of_the_dataset_is_found(provider: ReplayProvider, arena: ArenaData) -> None:
    for question in arena.questions:
        completion = await provider.complete(_call("gpt-3.5-turbo-1106", _user(f"  {question.prompt}\n")))
        assert completion.body["choices"][0]["message"]["content"] == arena.answer(
            question.id, "gpt-3.5-turbo-1106"
        )


@pytest.mark.parametrize(
    "messages",
    [
        # a system prompt and an earlier exchange do not hide the arena prompt
        lambda p: [{"role": "system", "content": "Be brief."}, _user(p)],
        # OpenAI content parts
        lambda p: [_user([{"type": "text", "text": p}])],
        # the first user message is something else: the last one is the arena prompt
        lambda p: [_user("hello"), {"role": "assistant", "content": "Hi!"}, _user(p)],
    ],
)
async def test_prompt_lookup(provider: ReplayProvider, arena: ArenaData, messages: Any) -> None:
    question = arena.questions[11]
    completion = await provider.complete(_call("claude-instant-1", *messages(question.prompt)))
    assert completion.body["choices"][0]["message"]["content"] == arena.answer(
        question.id, "claude-instant-1"
    )


async def test_stream_reassembles_to_the_recorded_answer(provider: ReplayProvider, arena: ArenaData) -> None:
    question = max(arena.questions, key=lambda q: arena.tokens(q.id, "gpt-4-1106-preview")[1])
    answer = arena.answer(question.id, "gpt-4-1106-preview")
    assert answer
    chunks = await _collect(provider, _call("gpt-4-1106-preview", _user(question.prompt)))

    assert all(chunk.raw is None for chunk in chunks)
    assert len({chunk.data["id"] for chunk in chunks}) == 1
    assert all(
        c.data["object"] == "chat.completion.chunk" and c.data["model"] == "gpt-4-1106-preview"
        for c in chunks
    )
    first, *content, finish, usage = chunks
    assert first.data["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert not chunk_has_content(first.data)
    assert "".join(c.data["choices"][0]["delta"]["content"] for c in content) == answer
    assert len(content) > 10  # in pieces of a few words
    assert all(len(c.data["choices"][0]["delta"]["content"].split()) <= 4 for c in content)
    assert finish.data["choices"] == [{"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop"}]
    input_tokens, output_tokens = arena.tokens(question.id, "gpt-4-1106-preview")
    assert usage.data["choices"] == []
    assert usage.data["usage"]["completion_tokens"] == output_tokens
    assert usage.usage is not None
    assert (usage.usage.input_tokens, usage.usage.output_tokens) == (input_tokens, output_tokens)
    assert all(c.usage is None for c in chunks[:-1])


async def test_stream_of_a_recorded_empty_answer(provider: ReplayProvider, arena: ArenaData) -> None:
    qid = next(q.id for q in arena.questions if arena.answer(q.id, "llama-13b") == "")
    chunks = await _collect(provider, _call("llama-13b", _user(arena.question(qid).prompt)))
    assert [c.data["choices"][0]["finish_reason"] for c in chunks[:-1]] == [None, "stop"]
    assert chunks[-1].usage is not None and chunks[-1].usage.output_tokens == 0


async def test_unknown_prompt_is_rejected(provider: ReplayProvider) -> None:
    call = _call("gpt-4-1106-preview", _user("What is the capital of Atlantis?"), name="strong")
    with pytest.raises(UpstreamRejected) as info:
        await provider.complete(call)
    message = str(info.value)
    assert message.startswith(
        "strong: a replay fleet answers only the 300 prompts recorded in arena-bench-v1"
    )
    assert "tierwise serve --config examples/tierwise.yaml" in message  # what to do instead
    assert info.value.model == "strong"
    assert not info.value.retryable
    with pytest.raises(UpstreamRejected, match="a replay fleet answers only the 300 prompts"):
        await _collect(provider, call)  # before any chunk: dispatch may still fall back
    with pytest.raises(UpstreamRejected, match="a replay fleet answers only the 300 prompts"):
        await provider.complete(UpstreamCall(model=_model("claude-1"), body={}))


async def test_model_not_in_dataset_is_rejected(provider: ReplayProvider, arena: ArenaData) -> None:
    with pytest.raises(
        UpstreamRejected, match="model 'gpt-5' not in replay dataset arena-bench-v1; it has: claude-1"
    ):
        await provider.complete(_call("gpt-5", _user(arena.questions[0].prompt)))


def _custom_dataset(tmp_path: Path) -> Path:
    rows = [
        {
            "question_id": "q1",
            "prompt": "Name a prime.",
            "input_tokens": 4,
            "models": {
                "big": {"answer": "Seven is prime.", "score": 9, "output_tokens": 4},
                "small": {"answer": None, "score": 5, "output_tokens": 2},  # answer trimmed
            },
        }
    ]
    path = tmp_path / "custom.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


async def test_custom_dataset_and_missing_answer_is_unavailable(tmp_path: Path) -> None:
    config = ProviderConfig(kind="replay", dataset=str(_custom_dataset(tmp_path)))
    provider = build_provider("mine", config, http=None)
    assert isinstance(provider, ReplayProvider)
    completion = await provider.complete(_call("big", _user("Name a prime.")))
    assert completion.body["choices"][0]["message"]["content"] == "Seven is prime."
    assert completion.body["usage"]["total_tokens"] == 8
    with pytest.raises(
        UpstreamUnavailable, match=r"small: replay dataset .*custom\.jsonl has no answer of small"
    ):
        await provider.complete(_call("small", _user("Name a prime.")))
    with pytest.raises(UpstreamUnavailable):
        await _collect(provider, _call("small", _user("Name a prime.")))
    await provider.aclose()


def test_bad_dataset_is_a_config_error_at_construction(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read the dataset"):
        ReplayProvider("r", ProviderConfig(kind="replay", dataset=str(tmp_path / "nope.jsonl")), http=None)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question_id": "q"}\n', encoding="utf-8")
    with pytest.raises(ConfigError, match="line 1: prompt: required"):
        ReplayProvider("r", ProviderConfig(kind="replay", dataset=str(bad)), http=None)


def test_the_dataset_is_the_provider_s_own_or_the_one_passed_in(
    provider: ReplayProvider, arena: ArenaData
) -> None:
    own = ReplayProvider("other", ARENA, http=None)
    assert own._data == provider._data
    assert own._data is not provider._data  # no cache shared between providers
    assert ReplayProvider("given", ARENA, http=None, data=arena)._data is arena


def test_the_provider_does_not_import_the_offline_evaluation() -> None:
    code = (
        "import sys, tierwise.providers.replay; "
        "assert not [m for m in sys.modules if m.startswith('tierwise.evals')], sorted(sys.modules)"
    )
    subprocess.run([sys.executable, "-W", "error", "-c", code], check=True)


async def test_demo_fleet_answers_every_prompt(arena: ArenaData) -> None:
    config = load_config(EXAMPLES / "demo.yaml")
    provider = build_provider("replay", config.providers["replay"], http=None)
    for model in config.models:
        assert model.provider == "replay"
        for question in arena.questions:
            completion = await provider.complete(
                UpstreamCall(model=model, body={"messages": [_user(question.prompt)]})
            )
            assert completion.usage.input_tokens == question.input_tokens
