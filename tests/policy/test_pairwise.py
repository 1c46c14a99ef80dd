"""Pairwise judging: strict parsing of the judge's reply, and verdicts that survive swapping the order."""

from __future__ import annotations

import pytest

from tierwise.policy.pairwise import pairwise_messages, parse_preference, verdict


@pytest.mark.parametrize(
    ("reply", "preference"),
    [("A", "A"), (" b ", "B"), ("[[A]]", "A"), ("Tie.", "tie"), ("TIE", "tie"), ("A is better", None),
     ("", None), (None, None), ("AB", None)],
)  # fmt: skip
def test_parse_preference_is_strict(reply: str | None, preference: str | None) -> None:
    assert parse_preference(reply) == preference


@pytest.mark.parametrize(
    ("served_first", "served_second", "expected"),
    [
        ("A", "B", "win"),  # served preferred in both slots
        ("B", "A", "loss"),  # baseline preferred in both slots
        ("A", "A", "tie"),  # always the first slot: position bias, not a preference
        ("B", "B", "tie"),
        ("tie", "B", "tie"),
        ("A", "tie", "tie"),
        ("A", None, None),
    ],
)
def test_only_a_preference_that_survives_the_swap_counts(
    served_first: str | None, served_second: str | None, expected: str | None
) -> None:
    assert verdict(served_first, served_second) == expected  # type: ignore[arg-type]


def test_the_prompt_is_blind_and_carries_both_answers() -> None:
    body = {"model": "auto", "messages": [{"role": "user", "content": "What is 2+2?"}]}
    system, user = pairwise_messages(body, "four", "4")
    assert "[Answer A]\nfour" in user["content"] and "[Answer B]\n4" in user["content"]
    assert "What is 2+2?" in user["content"] and "`tie`" in system["content"]
