"""How a request's answer was reached, read from its ledger row: the one definition the report, the
metrics and the dashboard share.

- ``first_choice``: the model the policy chose first answered.
- ``escalated``: a cascade rejected a cheaper answer (for quality) and a later model of the chain
  answered; ``reason`` is the verifier that rejected it.
- ``fell_back``: the first choice could not answer (for availability: an error, a timeout, the
  breaker, a context window too small) and a later model did; ``reason`` is why the first one failed.
- ``error``: no model answered.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from .ledger.base import LedgerRow

Kind = Literal["first_choice", "escalated", "fell_back", "error"]
KINDS: tuple[Kind, ...] = ("first_choice", "escalated", "fell_back", "error")


@dataclass(frozen=True, slots=True)
class AnswerPath:
    kind: Kind
    first_tier: str  # the tier the policy chose first
    final_tier: str | None  # the tier of the model that answered
    reason: str  # a verifier's name, an error class, "context_window", or "" for the first choice


def answer_path(row: LedgerRow) -> AnswerPath:
    """The path of one request's answer (see the module docstring)."""
    first_tier = str(row.decision.get("tier") or "?")
    chain = row.decision.get("chain") or ()
    if row.status != "ok" or row.final_model is None:
        failed = next((a for a in reversed(row.attempts) if a.status not in ("ok", "rejected")), None)
        return AnswerPath("error", first_tier, row.tier, _reason(failed.status) if failed else "none")
    if not chain or row.final_model == chain[0]:
        return AnswerPath("first_choice", first_tier, row.tier, "")
    answers = [a for a in row.attempts if a.purpose == "answer"]
    rejected = next((a for a in answers if a.status == "rejected"), None)
    if rejected is not None:
        # "cascade: <verifier>: <why>", written by escalation.py
        verifier = (rejected.error or "").removeprefix("cascade: ").partition(":")[0] or "cascade"
        return AnswerPath("escalated", first_tier, row.tier, verifier)
    failed = next((a for a in answers if a.status != "ok"), None)
    return AnswerPath("fell_back", first_tier, row.tier, _reason(failed.status) if failed else "breaker")


def _reason(status: str) -> str:
    return "context_window" if status == "skipped" else status
