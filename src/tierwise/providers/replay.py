"""Replay: serve recorded real answers from an evaluation dataset instead of calling a paid API.

The upstream model id *is* the dataset's model name (``upstream: gpt-4-1106-preview``). The request's first
user message is looked up among the dataset's prompts (exact match after stripping whitespace; the last user
message is tried next), and that model's recorded answer is returned with its recorded token counts, as an
OpenAI ``chat.completion`` or as a stream of ``chat.completion.chunk`` objects.

Failures map onto the real ones, so dispatch treats them alike: a prompt the dataset does not hold is
``UpstreamRejected`` (the request cannot be served here), a model without an answer for a known prompt is
``UpstreamUnavailable`` (another model may have one: fall back).
"""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from ..arena_data import BUILTIN, ArenaData, load_arena
from ..config import ProviderConfig
from ..errors import UpstreamRejected, UpstreamUnavailable
from ..messages import user_texts
from .base import Chunk, Completion, UpstreamCall, Usage

_WORDS_PER_CHUNK = 4
_PIECE = re.compile(r"\s*\S+\s*|\s+")  # words with the whitespace after them; concatenation is lossless


class ReplayProvider:
    """Answers from a recorded dataset; ``config.dataset`` is ``arena-bench-v1`` or a path.

    ``data`` is that dataset already read (``tierwise.arena_data.load_arena``), for callers that build
    several providers over one file; by default each provider reads its own.
    """

    def __init__(
        self, name: str, config: ProviderConfig, *, http: Any = None, data: ArenaData | None = None
    ) -> None:
        del http  # no network
        self.name = name
        self.dataset_name = config.dataset or BUILTIN
        # Read here, so a bad path or a malformed file is a ConfigError at start-up, not a request failure.
        self._data = data if data is not None else load_arena(self.dataset_name)

    async def complete(self, call: UpstreamCall) -> Completion:
        answer, usage = self._lookup(call)
        body = {
            "id": _completion_id(),
            "object": "chat.completion",
            "created": int(time.time()),
            "model": call.model.upstream,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": answer},
                    "logprobs": None,
                    "finish_reason": "stop",
                }
            ],
            "usage": _usage_body(usage),
        }
        return Completion(body=body, usage=usage)

    async def stream(self, call: UpstreamCall) -> AsyncIterator[Chunk]:
        answer, usage = self._lookup(call)  # raises before the first chunk: fallback stays possible
        base = {
            "id": _completion_id(),
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": call.model.upstream,
        }

        def chunk(delta: dict[str, str], finish_reason: str | None = None) -> Chunk:
            choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
            return Chunk(data={**base, "choices": [choice]})

        yield chunk({"role": "assistant", "content": ""})
        pieces = _PIECE.findall(answer)
        for start in range(0, len(pieces), _WORDS_PER_CHUNK):
            yield chunk({"content": "".join(pieces[start : start + _WORDS_PER_CHUNK])})
            await asyncio.sleep(0)  # let other requests run between chunks, as a network stream would
        yield chunk({}, "stop")
        yield Chunk(data={**base, "choices": [], "usage": _usage_body(usage)}, usage=usage)

    async def aclose(self) -> None:
        return None

    def _lookup(self, call: UpstreamCall) -> tuple[str, Usage]:
        model = call.model.upstream
        qid = self._question_id(call.body.get("messages"))
        if qid is None:
            raise UpstreamRejected(
                f"{call.model.name}: a replay fleet answers only the {len(self._data.questions)} prompts "
                f"recorded in {self.dataset_name} (examples/demo.py sends them), and this is not one of "
                "them; to answer any prompt, serve a fleet of real providers, e.g. "
                "`tierwise serve --config examples/tierwise.yaml` with their API keys in the environment",
                model=call.model.name,
                status=400,
            )
        if model not in self._data.models:
            raise UpstreamRejected(
                f"{call.model.name}: model {model!r} not in replay dataset {self.dataset_name}; "
                f"it has: {', '.join(self._data.models)}",
                model=call.model.name,
                status=404,
            )
        answer = self._data.answer(qid, model)
        if answer is None:
            raise UpstreamUnavailable(
                f"{call.model.name}: replay dataset {self.dataset_name} has no answer of {model} "
                f"for question {qid}",
                model=call.model.name,
                status=503,
            )
        input_tokens, output_tokens = self._data.tokens(qid, model)
        return answer, Usage(input_tokens=input_tokens, output_tokens=output_tokens)

    def _question_id(self, messages: Any) -> str | None:
        """The first user message is the arena prompt; the last one is tried for conversations that
        put something else first."""
        texts = user_texts(messages)
        for text in (texts[0], texts[-1]) if texts else ():
            qid = self._data.by_prompt(text)
            if qid is not None:
                return qid
        return None


def _completion_id() -> str:
    return f"chatcmpl-replay-{uuid.uuid4().hex[:24]}"


def _usage_body(usage: Usage) -> dict[str, int]:
    return {
        "prompt_tokens": usage.input_tokens,
        "completion_tokens": usage.output_tokens,
        "total_tokens": usage.input_tokens + usage.output_tokens,
    }
