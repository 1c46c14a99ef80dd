"""Pairwise, blind judging of two answers to one request: which is better, or a tie.

The judge sees the request and two answers labelled A and B, never which model gave which. It is asked
twice, the answers swapped, because judges favour a position; only a preference that survives the swap
counts, and one that flips with the order is a tie (as in MT-Bench's pairwise protocol). Pure: the
caller makes the two calls (``shadow.py``) and hands the replies to ``verdict``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Literal

from .cascade import clip_for_judge, transcript

Preference = Literal["A", "B", "tie"]
Verdict = Literal["win", "tie", "loss"]
SCORES: dict[Verdict, float] = {"win": 1.0, "tie": 0.5, "loss": 0.0}

DEFAULT_RUBRIC = (
    "Judge which answer serves the request better: correct, complete, following the request's "
    "instructions (format included), and no longer than it needs to be. Length and style alone are not "
    "better."
)
_SYSTEM = (
    "You compare two assistants' answers to the same request. {rubric}\n"
    "Reply with exactly one of: `A` (answer A is better), `B` (answer B is better) or `tie`. "
    "Write nothing else."
)
_REPLY = re.compile(r"\s*(?:\[\[)?\s*(a|b|tie)\s*(?:\]\])?\s*\.?\s*", re.IGNORECASE)


def pairwise_messages(
    body: Mapping[str, Any], answer_a: str, answer_b: str, rubric: str | None = None
) -> list[dict[str, str]]:
    """The messages asking the judge which of two answers to ``body`` is better."""
    request, a, b = clip_for_judge(transcript(body)), clip_for_judge(answer_a), clip_for_judge(answer_b)
    return [
        {"role": "system", "content": _SYSTEM.format(rubric=rubric or DEFAULT_RUBRIC)},
        {"role": "user", "content": f"[Request]\n{request}\n\n[Answer A]\n{a}\n\n[Answer B]\n{b}"},
    ]


def parse_preference(reply: str | None) -> Preference | None:
    """``A``, ``B`` or ``tie`` from a judge's reply, strictly (``[[A]]`` and a final dot allowed)."""
    match = _REPLY.fullmatch(reply or "")
    if match is None:
        return None
    word = match.group(1).lower()
    return "tie" if word == "tie" else ("A" if word == "a" else "B")


def verdict(served_first: Preference | None, served_second: Preference | None) -> Verdict | None:
    """The served answer's verdict from the two orders: ``served_first`` is the reply when the served
    answer was A, ``served_second`` when it was B. None if either reply could not be read."""
    if served_first is None or served_second is None:
        return None
    first = {"A": 1, "B": -1, "tie": 0}[served_first]
    second = {"B": 1, "A": -1, "tie": 0}[served_second]
    if first > 0 and second > 0:
        return "win"
    if first < 0 and second < 0:
        return "loss"
    return "tie"  # a tie in either order, or a preference that flips with the order
