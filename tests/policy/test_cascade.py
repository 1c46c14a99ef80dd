"""Each cascade verifier from a table of requests and answers; the judge's prompt and parser; the config."""

from __future__ import annotations

from typing import Any

import pytest

from tests.harness import fleet_config
from tierwise.config import CascadeConfig, VerifierConfig
from tierwise.errors import ConfigError
from tierwise.policy.cascade import (
    KINDS,
    AgreementVerifier,
    JudgeVerifier,
    build_verifiers,
    completion_from_chunks,
    final_number,
    judge_messages,
    parse_judge_score,
)


def answer(
    content: str | None = "fine",
    *,
    finish: str = "stop",
    tool_calls: list[dict[str, Any]] | None = None,
    refusal: str | None = None,
) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if tool_calls is not None:
        message["tool_calls"] = tool_calls
    if refusal is not None:
        message["refusal"] = refusal
    return {
        "object": "chat.completion",
        "choices": [{"index": 0, "message": message, "finish_reason": finish}],
    }


def call(name: str, arguments: str) -> dict[str, Any]:
    return {"id": "call_1", "type": "function", "function": {"name": name, "arguments": arguments}}


def ask(text: str = "hello", **extra: Any) -> dict[str, Any]:
    return {"model": "auto", "messages": [{"role": "user", "content": text}], **extra}


SCHEMA = {
    "type": "json_schema",
    "json_schema": {
        "name": "r",
        "schema": {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]},
    },
}
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "unit": {"enum": ["c", "f"]}},
            "required": ["city"],
            "additionalProperties": False,
        },
    },
}
TOOLS = {"tools": [WEATHER]}


def verdict(kind: str, body: dict[str, Any], completion: dict[str, Any], **options: Any) -> tuple[bool, str]:
    verifier = KINDS[kind](VerifierConfig(kind=kind, **options))  # type: ignore[arg-type]
    result = verifier.check(body, completion)
    assert result.verifier == (options.get("name") or kind)
    return result.accept, result.reason


@pytest.mark.parametrize(
    ("kind", "body", "completion", "options", "accepted", "reason"),
    [
        # json_schema
        ("json_schema", ask(response_format=SCHEMA), answer('{"n": 3}'), {}, True, "accepted"),
        (
            "json_schema",
            ask(response_format=SCHEMA),
            answer('{"n": "3"}'),
            {},
            False,
            "does not match the schema: $.n: expected integer, got string",
        ),
        (
            "json_schema",
            ask(response_format=SCHEMA),
            answer("{'n': 3}"),
            {},
            False,
            "not valid JSON: Expecting property name enclosed in double quotes: line 1 column 2 (char 1)",
        ),
        (
            "json_schema",
            ask(response_format=SCHEMA),
            answer(None, refusal="no"),
            {},
            False,
            "refused instead of answering in JSON",
        ),
        (
            "json_schema",
            ask(response_format={"type": "json_object"}),
            answer("[1]"),
            {},
            False,
            "expected a JSON object",
        ),
        (
            "json_schema",
            ask(response_format={"type": "json_object"}),
            answer(' {"a": 1} '),
            {},
            True,
            "accepted",
        ),
        ("json_schema", ask(), answer("plain text"), {}, True, "accepted"),  # nothing asked of the format
        # regex
        ("regex", ask(), answer("... #### 42"), {"pattern": r"####\s*\d+"}, True, "accepted"),
        (
            "regex",
            ask(),
            answer("it is 42"),
            {"pattern": r"####\s*\d+", "name": "final"},
            False,
            r"does not match '####\\s*\\d+'",
        ),
        ("regex", ask(), answer("YES"), {"pattern": "(?i)^yes$"}, True, "accepted"),
        # non_empty
        ("non_empty", ask(), answer("  \n "), {}, False, "empty answer"),
        ("non_empty", ask(), answer(None), {}, False, "empty answer"),
        (
            "non_empty",
            ask(**TOOLS),
            answer(None, tool_calls=[call("get_weather", "{}")]),
            {},
            True,
            "accepted",
        ),
        # no_refusal
        (
            "no_refusal",
            ask(),
            answer("I’m sorry, but I can’t help with that."),
            {},
            False,
            "refusal phrase \"i'm sorry, but i can't\"",
        ),
        (
            "no_refusal",
            ask(),
            answer("As an AI language model, I have no opinions."),
            {},
            False,
            "refusal phrase 'as an ai'",
        ),
        (
            "no_refusal",
            ask(),
            answer(None, refusal="I can't do that"),
            {},
            False,
            'refused: "I can\'t do that"',
        ),
        (
            "no_refusal",
            ask(),
            answer("", finish="content_filter"),
            {},
            False,
            "stopped by the provider's content filter",
        ),
        (
            "no_refusal",
            ask(),
            answer("Sure. " + "x" * 400 + " as an AI"),
            {},
            True,
            "accepted",
        ),  # late: quoted
        ("no_refusal", ask(), answer("I'm sorry to hear that. Here is how to fix it."), {}, True, "accepted"),
        # not_truncated
        (
            "not_truncated",
            ask(),
            answer("cut mid", finish="length"),
            {},
            False,
            "cut off at max_tokens (finish_reason: length)",
        ),
        ("not_truncated", ask(), answer("done"), {}, True, "accepted"),
        # tool_calls
        (
            "tool_calls",
            ask(**TOOLS),
            answer(None, tool_calls=[call("get_weather", '{"city": "Oslo"}')]),
            {},
            True,
            "accepted",
        ),
        (
            "tool_calls",
            ask(**TOOLS),
            answer(None, tool_calls=[call("get_wether", "{}")]),
            {},
            False,
            "calls unknown tool 'get_wether'; declared: get_weather",
        ),
        (
            "tool_calls",
            ask(**TOOLS),
            answer(None, tool_calls=[call("get_weather", '{"city": ')]),
            {},
            False,
            "get_weather: arguments are not valid JSON: Expecting value: line 1 column 10 (char 9)",
        ),
        (
            "tool_calls",
            ask(**TOOLS),
            answer(None, tool_calls=[call("get_weather", '{"unit": "k"}')]),
            {},
            False,
            "get_weather: arguments do not match its parameters: $: missing required property 'city'; "
            "$.unit: 'k' is not one of ['c', 'f']",
        ),
        (
            "tool_calls",
            ask(**TOOLS),
            answer(None, tool_calls=[call("get_weather", "[]")]),
            {},
            False,
            "get_weather: arguments must be a JSON object",
        ),
        (
            "tool_calls",
            ask(tool_choice="required", **TOOLS),
            answer("It is sunny."),
            {},
            False,
            "tool_choice requires a tool call; the answer made none",
        ),
        (
            "tool_calls",
            ask(tool_choice="none", **TOOLS),
            answer(None, tool_calls=[call("get_weather", '{"city": "a"}')]),
            {},
            False,
            "tool_choice is 'none' but the answer called a tool",
        ),
        ("tool_calls", ask(**TOOLS), answer("no tool needed"), {}, True, "accepted"),
        (
            "tool_calls",
            ask(),
            answer(None, tool_calls=[call("rm_rf", "{}")]),
            {},
            False,
            "calls unknown tool 'rm_rf'; declared: none",
        ),
        # arithmetic
        (
            "arithmetic",
            ask(),
            answer("3 x 60 = 180, and 180 x 3 = 540.\n#### 540"),
            {},
            True,
            "2 steps checked",
        ),
        (
            "arithmetic",
            ask(),
            answer("3 x 60 = 180, and 180 x 3 = 560."),
            {},
            False,
            "'180 x 3 = 560' is wrong (it is 540); 1 of 2 checked steps wrong",
        ),
        ("arithmetic", ask(), answer("Paris is the capital of France."), {}, True, "no checkable step"),
        # uses_numbers
        (
            "uses_numbers",
            ask("A pen costs $3; 20% off 5 pens?"),
            answer("5 * 3 = 15, less 20% = 12"),
            {},
            True,
            "accepted",
        ),
        (
            "uses_numbers",
            ask("A pen costs $3; 20% off 5 pens?"),
            answer("5 * 3 = 15"),
            {},
            False,
            "never uses 20 from the request",
        ),
        ("uses_numbers", ask("Summarise this thread."), answer("Done."), {}, True, "accepted"),
    ],
)
def test_verifier(
    kind: str,
    body: dict[str, Any],
    completion: dict[str, Any],
    options: dict[str, Any],
    accepted: bool,
    reason: str,
) -> None:
    assert verdict(kind, body, completion, **options) == (accepted, reason)


def test_structural_checks_look_at_every_choice() -> None:
    two = answer('{"n": 1}')
    two["choices"].append(
        {"index": 1, "message": {"role": "assistant", "content": "nope"}, "finish_reason": "stop"}
    )
    assert verdict("json_schema", ask(response_format=SCHEMA), two) == (
        False,
        "choice 1: not valid JSON: Expecting value: line 1 column 1 (char 0)",
    )
    assert verdict("non_empty", ask(), {"choices": []}) == (False, "the answer has no choices")


# -- agreement ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("a", "b", "mode", "agree"),
    [
        ("so 6 x 7 = 42\n#### 42", "the total is 42.0\n#### 42", "auto", True),
        ("#### 1,200", "#### 1200", "auto", True),
        ("#### 42", "#### 41", "auto", False),
        ("The answer is 12.", "after all that, 12", "number", True),
        ("\\boxed{7}", "\\boxed{8}", "number", False),
        ("Paris", "  paris ", "auto", True),
        ("The capital of France is Paris.", "Paris is the capital of France.", "text", True),  # overlap 1.0
        ("The capital is Paris.", "I believe it is Lyon, not Paris.", "text", False),
        ("no numbers here", "none here either", "number", False),
    ],
)
def test_agreement(a: str, b: str, mode: str, agree: bool) -> None:
    verifier = AgreementVerifier(VerifierConfig(kind="agreement", answer=mode))  # type: ignore[arg-type]
    result = verifier.check(ask(), answer(a), [answer(b)])
    assert result.accept is agree
    assert result.score == (1.0 if agree else 0.0)


def test_agreement_needs_every_sample_and_a_sample_that_failed_rejects() -> None:
    verifier = AgreementVerifier(VerifierConfig(kind="agreement", samples=3))
    assert verifier.check(ask(), answer("#### 4"), [answer("#### 4"), answer("#### 5")]).reason == (
        "1 of 2 samples disagree"
    )
    assert verifier.check(ask(), answer("#### 4"), [answer("#### 4"), None]).reason == (
        "a sample call failed: cannot check agreement"
    )
    assert not verifier.check(ask(), answer("#### 4"), []).accept


def test_final_number() -> None:
    assert final_number("3 + 4 = 7\n#### 7") == 7
    assert final_number("costs $1,250.50 in total") == 1250.5
    assert final_number("The answer is: **-3**") == -3
    assert final_number("no number") is None
    assert final_number("it is 5", marked_only=True) is None


# -- judge --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reply", "score"),
    [
        ("Score: 7", 7),
        ("7", 7),
        ("score: 10/10", 10),
        ("Rating: [[3]]", 3),
        ("**Score:** 8", 8),
        ("  Score: 6.5.  ", 6.5),
        ("Score: 0", None),
        ("Score: 11", None),
        ("7 or 8", None),
        ("I'd give it a 7.", None),
        ("Score: 7\nReason: fine", None),
        ("", None),
    ],
)
def test_parse_judge_score_is_strict(reply: str, score: float | None) -> None:
    assert parse_judge_score(reply) == score


def test_judge_prompt_carries_rubric_request_and_answer() -> None:
    body = ask("What is 2 + 2?", response_format={"type": "json_object"})
    messages = judge_messages(body, answer('{"sum": 4}'), "Be harsh about arithmetic.")
    assert [m["role"] for m in messages] == ["system", "user"]
    assert "Be harsh about arithmetic." in messages[0]["content"] and "`Score: N`" in messages[0]["content"]
    assert "user: What is 2 + 2?" in messages[1]["content"]
    assert '[Answer]\n{"sum": 4}' in messages[1]["content"]
    assert "required response format" in messages[1]["content"]
    long = judge_messages(ask("x" * 50_000), answer("y"))[1]["content"]
    assert len(long) < 13_000 and "characters omitted" in long
    tool = judge_messages(ask(**TOOLS), answer(None, tool_calls=[call("get_weather", '{"city": "Oslo"}')]))
    assert "get_weather" in tool[1]["content"]


@pytest.mark.parametrize(
    ("extra", "accepted", "reason"),
    [
        ("Score: 8", True, "judge score 8 ≥ 7"),
        ("Score: 6", False, "judge score 6 < 7"),
        ("Looks great!", False, "the judge's reply does not parse as a score: 'Looks great!'"),
        (None, False, "the judge call failed"),
    ],
)
def test_judge_verdict(extra: str | None, accepted: bool, reason: str) -> None:
    judge = JudgeVerifier(VerifierConfig(kind="judge", model="review-1"))
    result = judge.check(ask(), answer(), extra)
    assert (result.accept, result.reason) == (accepted, reason)


# -- assembly -------------------------------------------------------------------------------------------


def test_build_verifiers_runs_checks_without_calls_first() -> None:
    cascade = CascadeConfig(
        verifiers=(
            VerifierConfig(kind="judge", model="m"),
            VerifierConfig(kind="json_schema"),
            VerifierConfig(kind="agreement"),
            VerifierConfig(kind="regex", pattern="x", name="format"),
        )
    )
    assert [v.name for v in build_verifiers(cascade)] == ["json_schema", "format", "judge", "agreement"]


def test_completion_from_chunks() -> None:
    chunks = [
        {"id": "c1", "model": "m", "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]},
        {"choices": [{"index": 0, "delta": {"content": "Hel"}}]},
        {"choices": [{"index": 0, "delta": {"content": "lo"}}]},
        {
            "choices": [
                {
                    "index": 0,
                    "delta": {
                        "tool_calls": [
                            {"index": 0, "id": "t1", "function": {"name": "get_weather", "arguments": '{"ci'}}
                        ]
                    },
                }
            ]
        },
        {
            "choices": [
                {
                    "index": 0,
                    "delta": {"tool_calls": [{"index": 0, "function": {"arguments": 'ty": "Oslo"}'}}]},
                }
            ]
        },
        {"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]},
        {"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 4}},
    ]
    completion = completion_from_chunks(chunks)
    assert completion["id"] == "c1" and completion["object"] == "chat.completion"
    (choice,) = completion["choices"]
    assert choice["message"]["content"] == "Hello" and choice["finish_reason"] == "tool_calls"
    assert choice["message"]["tool_calls"] == [
        {"id": "t1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'}}
    ]
    assert verdict("tool_calls", ask(**TOOLS), completion) == (True, "accepted")


# -- config ---------------------------------------------------------------------------------------------


def _config(*verifiers: dict[str, Any]) -> dict[str, Any]:
    urls = {
        "cheap": "http://127.0.0.1:1/v1",
        "backup": "http://127.0.0.1:2/v1",
        "strong": "http://127.0.0.1:3",
    }
    return fleet_config(urls, ledger="none", policy={"cascade": {"verifiers": list(verifiers)}})


@pytest.mark.parametrize(
    ("verifier", "message"),
    [
        ({"kind": "judge"}, "policy.cascade.verifiers[0].model: required for a judge"),
        ({"kind": "judge", "model": "nope"}, "policy.cascade.verifiers[0].model: unknown model 'nope'"),
        ({"kind": "regex"}, "policy.cascade.verifiers[0].pattern: required for a regex verifier"),
        (
            {"kind": "regex", "pattern": "(("},
            "policy.cascade.verifiers[0].pattern: invalid regular expression",
        ),
        (
            {"kind": "json_schema", "min_score": 5},
            "policy.cascade.verifiers[0].min_score: only for judge verifiers",
        ),
        ({"kind": "agreement", "min_overlap": 2}, "policy.cascade.verifiers[0].min_overlap: must be ≤ 1"),
        ({"kind": "spellcheck"}, "policy.cascade.verifiers[0].kind: must be one of"),
    ],
)
def test_config_errors_name_the_field(verifier: dict[str, Any], message: str) -> None:
    from tierwise.config import parse_config

    with pytest.raises(ConfigError) as caught:
        parse_config(_config(verifier))
    assert message in str(caught.value)


def test_two_verifiers_of_one_kind_need_names() -> None:
    from tierwise.config import parse_config

    with pytest.raises(ConfigError, match="two verifiers named 'regex'"):
        parse_config(_config({"kind": "regex", "pattern": "a"}, {"kind": "regex", "pattern": "b"}))
    config = parse_config(
        _config(
            {"kind": "regex", "pattern": "a", "name": "a"},
            {"kind": "regex", "pattern": "b"},
            {"kind": "arithmetic"},
        )
    )
    assert config.policy.cascade is not None and len(config.policy.cascade.verifiers) == 3
