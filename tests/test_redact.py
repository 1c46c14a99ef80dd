"""Secrets are removed whole or in pieces of 8 characters or more, before anything is cut."""

from __future__ import annotations

import pytest

from tierwise.redact import MARK, Redactor

KEY = "sk-proj-4f9Qz7LmB2xV8nR1tY6uW3eK0aJ5hC"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (f"bad key {KEY} given", f"bad key {MARK} given"),
        (f"key ending {KEY[-8:]}.", f"key ending {MARK}."),  # the last 8 characters alone
        (f"{KEY[5:20]} and {KEY[22:31]}", f"{MARK} and {MARK}"),  # two pieces from the middle
        (f"short {KEY[:7]} piece", f"short {KEY[:7]} piece"),  # 7 characters are not the key
        (f"{KEY}{KEY}", MARK),  # adjacent copies: one run
        ("nothing here", "nothing here"),
    ],
)
def test_pieces_of_a_key_are_redacted(text: str, expected: str) -> None:
    assert Redactor([KEY])(text) == expected


def test_several_keys_and_short_keys() -> None:
    redact = Redactor(["abc", None, KEY, ""])
    assert redact(f"x abc y {KEY[3:12]}") == f"x {MARK} y {MARK}"
    assert not Redactor([None, ""])
    assert Redactor([None])("sk-anything") == "sk-anything"


def test_no_window_of_a_long_text_keeps_eight_characters_of_the_key() -> None:
    text = ("lorem " * 40 + KEY[3:] + " ipsum ") * 50
    clean = Redactor([KEY])(text)
    assert all(KEY[i : i + 8] not in clean for i in range(len(KEY) - 7))
