"""Features: task inference, token estimate, multi-turn signals, hints that win."""

from __future__ import annotations

import random

import pytest

from tierwise import features
from tierwise.arena_data import load_arena
from tierwise.errors import RequestError
from tierwise.features import FEATURE_NAMES, TASKS, extract_features, parse_hints
from tierwise.messages import content_text


def user(text: str, **body: object) -> dict:
    return {"model": "auto", "messages": [{"role": "user", "content": text}], **body}


@pytest.mark.parametrize(
    ("text", "task"),
    [
        ("Summarize the following article in three bullet points: The city council met…", "summarize"),
        ("Translate to French: the meeting is postponed until Monday.", "translate"),
        ("Classify the sentiment of this review: 'Terrible battery life.'", "classify"),
        ("Extract all dates and names from this email: Hi Bob, on 3 May …", "extract"),
        ("Reformat this as a markdown table: a=1, b=2", "format"),
        ("Write a Python function that merges two sorted lists.", "code"),
        ("```js\nconst x = foo(;\n```\nwhy does this fail?", "code"),
        ("Solve for x: 3x + 7 = 22", "math"),
        ("What is the capital of Australia?", "qa"),
        ("Explain why the Roman Republic fell, weighing the main theories.", "reasoning"),
        ("hey! I had the strangest dream last night, want to hear about it", "chat"),
        ("Summarize this code:\n```python\ndef f(x):\n    return x\n```", "summarize"),
        ("Explain me negamax with examples in c#", "code"),  # \b cannot follow the "#"
        ("How do templates work in C++?", "code"),
        ("Explain why my F# program is slow", "code"),
    ],
)
def test_task_inference(text: str, task: str) -> None:
    assert extract_features(user(text)).task == task


def test_json_mode_without_other_signal_is_extraction() -> None:
    features = extract_features(
        user("Give me the person in this text: Ann, 34, Oslo", response_format={"type": "json_object"})
    )
    assert features.json_mode
    assert features.task == "extract"


def test_token_estimate_is_chars_over_four_plus_framing() -> None:
    features = extract_features(user("x" * 400))
    assert features.input_tokens == 100 + 4 + 3
    two = extract_features(
        {
            "model": "auto",
            "messages": [{"role": "system", "content": "y" * 40}, {"role": "user", "content": "x" * 400}],
        }
    )
    assert two.input_tokens == 110 + 8 + 3


def test_conversation_signals_come_from_every_turn() -> None:
    body = {
        "model": "auto",
        "messages": [
            {"role": "user", "content": "```python\nprint('hi')\n```"},
            {"role": "assistant", "content": "That prints hi."},
            {"role": "user", "content": "ok and now make it shout"},
        ],
    }
    features = extract_features(body)
    assert features.has_code
    assert features.turns == 3
    assert features.task == "code"
    assert features.text == "ok and now make it shout"


def test_multi_step_signals() -> None:
    assert extract_features(user("Think step by step about the migration plan")).multi_step
    numbered = "Do this:\n1. read the file\n2. count words\n3. write a report"
    assert extract_features(user(numbered)).multi_step
    assert not extract_features(user("what time is it in Tokyo?")).multi_step


def test_tools_images_and_output_limit() -> None:
    body = user(
        "look",
        tools=[{"type": "function", "function": {"name": "f", "parameters": {}}}],
        max_completion_tokens=64,
    )
    body["messages"][0]["content"] = [
        {"type": "text", "text": "look"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AA"}},
    ]
    features = extract_features(body)
    assert features.has_tools and features.has_images
    assert features.max_output_tokens == 64


def test_hints_win_over_inference_headers_over_metadata() -> None:
    hints = parse_hints(
        {"x-tierwise-task": "code", "x-tierwise-latency-ms": "800"},
        {"task": "summarize", "risk": "critical", "quality": "high"},
    )
    features = extract_features(user("Summarize this"), hints)
    assert features.task == "code"
    assert features.task_source == "hint"
    assert features.latency_ms == 800
    assert features.risk == "critical"
    assert features.quality == "high"


@pytest.mark.parametrize(
    ("headers", "metadata", "param"),
    [
        ({"x-tierwise-task": "poetry"}, None, "x-tierwise-task"),
        ({"x-tierwise-latency-ms": "soon"}, None, "x-tierwise-latency-ms"),
        (None, {"risk": "extreme"}, "metadata.risk"),
        (None, {"tierwise_quality": "ultra"}, "metadata.tierwise_quality"),
    ],
)
def test_bad_hints_name_their_source(headers: dict | None, metadata: dict | None, param: str) -> None:
    with pytest.raises(RequestError) as info:
        parse_hints(headers, metadata)
    assert info.value.param == param
    assert info.value.message.startswith(param)


def test_to_log_never_holds_the_prompt() -> None:
    logged = extract_features(user("my secret prompt")).to_log()
    assert "my secret prompt" not in str(logged)
    assert set(logged) == FEATURE_NAMES - {"text"}


def test_huge_prompt_is_bounded_work() -> None:
    features = extract_features(user("lorem ipsum " * 200_000 + " Summarize the above."))
    assert features.input_tokens > 500_000
    assert features.task in TASKS


def test_multi_part_text_is_joined_by_newlines_everywhere() -> None:
    content = [
        {"type": "text", "text": "Summarize"},
        {"type": "image_url", "image_url": {"url": "data:,"}},
        {"type": "text", "text": "this"},
    ]
    features = extract_features({"messages": [{"role": "user", "content": content}]})
    assert features.text == "Summarize\nthis" == content_text(content)
    assert features.has_images and features.task == "summarize"


# Every pattern word and phrase the gated searches know, near misses, and non-ASCII neighbours.
_SPLICED = (
    "def(", "class Foo:", "return x;", "let x =", "console.log", "#include", "create table", "c++", "c#",
    "f#", "stack trace", "stacktrace", "unit test", "apis", "codes", "declassify", "functional", "1 + 2",
    "3*4", "5 = 5", "\\frac", "∫", "π", "how many", "percentage", "step-by-step", "first do this then",
    "think carefully", "trade-off", "tradeoffs", "pros and cons", "analyse", "logical", "implications",
    "why?", "tl;dr", "sum up", "key points", "into french", "translation", "label this", "which category",
    "is this spam", "pull out", "find all", "list every", "named entity", "extracted", "parser", "reformat",
    "format as", "convert this file to", "json", "rewrite it as", "as a markdown table", "bullet list",
    "what is",
)  # fmt: skip


def _spliced_texts(texts: list[str], count: int) -> list[str]:
    rng = random.Random(7)
    out = []
    for _ in range(count):
        text = list(rng.choice(texts)[: rng.randint(0, 700)])
        for _ in range(rng.randint(1, 4)):
            word = rng.choice(_SPLICED)
            word = word.capitalize() if rng.random() < 0.3 else word
            at = rng.randint(0, len(text))
            before, after = rng.choice(["", " ", "\n", "—", "é", "_"]), rng.choice(["", " ", "(", "é", "s"])
            text[at:at] = before + word + after
        out.append("".join(text).lower())
    return out


def test_word_gates_skip_only_searches_that_cannot_match() -> None:
    """The gated searches give what the plain patterns give, on the arena prompts and on texts with
    the patterns' words spliced in anywhere (cut mid-word, glued to accents and underscores)."""
    prompts = [q.prompt for q in load_arena().questions]
    texts = [p.lower() for p in prompts] + _spliced_texts(prompts, 3000)
    gates = [features._CODE, features._MATH, features._MULTI_STEP, features._REASONING]
    gates += [gate for _, gate in features._INSTRUCTION_GATES]
    matched = 0
    for text in texts:
        for head in (text, text[:300]):
            words = features._words(head)
            assert words == set(features._WORDS.findall(head))
            for gate in gates:
                plain = gate.pattern.search(head) is not None
                assert gate.search(head, words) == plain, (gate.pattern.pattern[:40], head)
                matched += plain
    assert matched > 3000  # the spliced words did make the patterns match
