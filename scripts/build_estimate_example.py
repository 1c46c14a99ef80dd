"""Write ``examples/requests.jsonl``: a request log as a team sending everything to GPT-4 would have it.

The 300 prompts of arena-bench-v1 (shipped with tierwise), each logged as an OpenAI chat-completions
request to ``gpt-4-1106-preview`` with the response's ``usage``: the recorded GPT-4-1106 answer's
output tokens, and the prompt's tokens plus the 7 tokens of chat framing OpenAI's cookbook counts for
one user message (3 per message, 1 for the role, 3 to prime the reply); all cl100k_base, as the
dataset counted them. The answers themselves are left out to keep the file small.

    python scripts/build_estimate_example.py [--out examples/requests.jsonl]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import orjson

from tierwise.arena_data import load_arena

MODEL = "gpt-4-1106-preview"
CHAT_FRAMING_TOKENS = 7


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=str(Path(__file__).parent.parent / "examples" / "requests.jsonl"))
    args = parser.parse_args()
    data = load_arena()
    lines = []
    for n, question in enumerate(data.questions):
        _, output_tokens = data.tokens(question.id, MODEL)
        input_tokens = question.input_tokens + CHAT_FRAMING_TOKENS
        record = {
            "model": MODEL,
            "messages": [{"role": "user", "content": question.prompt}],
            "response": {
                "id": f"chatcmpl-{question.id[:24]}",
                "object": "chat.completion",
                "created": 1_700_000_000 + 60 * n,
                "model": MODEL,
                "usage": {
                    "prompt_tokens": input_tokens,
                    "completion_tokens": output_tokens,
                    "total_tokens": input_tokens + output_tokens,
                },
            },
        }
        lines.append(orjson.dumps(record))
    Path(args.out).write_bytes(b"\n".join(lines) + b"\n")
    print(f"wrote {len(lines)} requests to {args.out}")


if __name__ == "__main__":
    main()
