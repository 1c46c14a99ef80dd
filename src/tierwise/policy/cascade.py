"""Verifiers of a cheap answer: accept it, or escalate to the next model of the chain.

Pure, no I/O. A verifier takes the request body (OpenAI chat format) and the candidate answer (an OpenAI
``chat.completion`` object) and returns a :class:`Verdict`. Two kinds need something only dispatch can
fetch, and say so in ``needs``: ``agreement`` compares the answer with more samples of the same model
(``needs = "sample"``), ``judge`` reads a review model's reply to the messages it builds
(``needs = "judge"``). Dispatch makes those calls and passes what came back as ``extra``.

One registry, ``KINDS``, maps each config ``kind`` to its class; ``build_verifiers`` builds a cascade's
verifiers in the order dispatch runs them: the checks that need no call first (a schema failure should
not pay for a judge), then the calling ones, each group in config order.

Offline kinds and what they read:
    json_schema   ``response_format`` json_schema (validated, see ``schema.py``) or json_object
    regex         ``pattern`` must be found in the text (``re.search``; inline flags such as ``(?i)``)
    non_empty     text or a tool call
    no_refusal    ``message.refusal``, ``finish_reason: content_filter``, a refusal phrase early on
    not_truncated ``finish_reason != "length"``
    tool_calls    a declared tool, JSON arguments valid against its ``parameters``; ``tool_choice`` kept
    arithmetic    every ``a op b = c`` the answer states re-evaluated (``arithmetic.py``)
    uses_numbers  every number of the last user message appears in the answer (word problems)

Structural checks look at every choice of an ``n > 1`` answer; agreement and the judge read the first.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from ..config import CascadeConfig, VerifierConfig
from ..messages import last_user_text, message_text, reply_message, reply_text
from .arithmetic import check_arithmetic
from .schema import schema_errors

__all__ = [
    "KINDS",
    "Verdict",
    "Verifier",
    "answers_unverified",
    "build_verifiers",
    "completion_from_chunks",
    "final_number",
    "judge_messages",
    "parse_judge_score",
]

ACCEPTED = "accepted"


@dataclass(frozen=True, slots=True)
class Verdict:
    """One verifier's judgement of one answer. ``score``: the judge's grade, agreement's share of
    agreeing samples, the arithmetic share of right steps; None where a verifier has no scale."""

    accept: bool
    verifier: str  # the verifier's name (its ``name`` in the config, else its kind)
    reason: str
    score: float | None = None


# -- reading an answer --------------------------------------------------------------------------------


def _choices(completion: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    choices = completion.get("choices")
    return [c for c in choices if isinstance(c, Mapping)] if isinstance(choices, list) else []


def _message(choice: Mapping[str, Any]) -> Mapping[str, Any]:
    message = choice.get("message")
    return message if isinstance(message, Mapping) else {}


def _where(index: int, total: int) -> str:
    return f"choice {index}: " if total > 1 else ""


def answers_unverified(position: int, chain_length: int, rejections: int, max_escalations: int) -> bool:
    """Whether the model at ``position`` of a cascading chain answers without being verified: it is the
    chain's last, or ``max_escalations`` rejections have already been spent — nothing is left to
    escalate to, and a verdict nobody can act on is money spent for a log line."""
    return rejections >= max_escalations or position == chain_length - 1


# -- the verifiers ------------------------------------------------------------------------------------


class Verifier:
    """Base of every kind: ``check`` is pure; ``needs`` names what dispatch must fetch first."""

    kind: ClassVar[str]
    needs: ClassVar[str | None] = None  # None, "sample" or "judge"
    offline: ClassVar[bool] = True  # runs on one recorded answer (evals replay it)

    def __init__(self, config: VerifierConfig) -> None:
        self.config = config
        self.name = config.name or config.kind

    def check(self, body: Mapping[str, Any], completion: Mapping[str, Any], extra: Any = None) -> Verdict:
        choices = _choices(completion)
        if not choices:
            return self.reject("the answer has no choices")
        for i, choice in enumerate(choices):
            problem = self.problem(body, choice)
            if problem is not None:
                return self.reject(_where(i, len(choices)) + problem)
        return self.accept()

    def problem(self, body: Mapping[str, Any], choice: Mapping[str, Any]) -> str | None:
        """What is wrong with one choice, or None."""
        raise NotImplementedError

    def accept(self, reason: str = ACCEPTED, score: float | None = None) -> Verdict:
        return Verdict(True, self.name, reason, score)

    def reject(self, reason: str, score: float | None = None) -> Verdict:
        return Verdict(False, self.name, reason, score)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}>"


class JsonSchemaVerifier(Verifier):
    kind = "json_schema"

    def problem(self, body: Mapping[str, Any], choice: Mapping[str, Any]) -> str | None:
        fmt = body.get("response_format")
        kind = fmt.get("type") if isinstance(fmt, Mapping) else None
        if kind not in ("json_schema", "json_object"):
            return None  # nothing was asked of the format
        message = _message(choice)
        if message.get("refusal"):
            return "refused instead of answering in JSON"
        text = message_text(message).strip()
        if not text:
            return "no JSON content"
        try:
            value = json.loads(text)
        except ValueError as exc:
            return f"not valid JSON: {exc}"
        if kind == "json_object":
            return None if isinstance(value, dict) else "expected a JSON object"
        spec = fmt.get("json_schema") if isinstance(fmt, Mapping) else None
        schema = spec.get("schema") if isinstance(spec, Mapping) else None
        if schema is None:
            return None
        errors = schema_errors(value, schema)
        return "does not match the schema: " + "; ".join(errors) if errors else None


class RegexVerifier(Verifier):
    kind = "regex"

    def __init__(self, config: VerifierConfig) -> None:
        super().__init__(config)
        self.pattern = re.compile(config.pattern or "")

    def problem(self, body: Mapping[str, Any], choice: Mapping[str, Any]) -> str | None:
        message = _message(choice)
        if message.get("tool_calls") and not message_text(message):
            return None  # a tool call has no text to match
        if self.pattern.search(message_text(message)) is None:
            return f"does not match {self.pattern.pattern!r}"
        return None


class NonEmptyVerifier(Verifier):
    kind = "non_empty"

    def problem(self, body: Mapping[str, Any], choice: Mapping[str, Any]) -> str | None:
        message = _message(choice)
        if message_text(message).strip() or message.get("tool_calls"):
            return None
        return "empty answer"


# Said early in an answer, these mean it declined. Conservative on purpose: a phrase that also opens
# helpful answers ("I'm sorry to hear that") would escalate good answers.
REFUSAL_PHRASES: tuple[str, ...] = (
    "i can't help with",
    "i cannot help with",
    "i can't assist with",
    "i cannot assist",
    "i can not assist",
    "i'm unable to help",
    "i am unable to help",
    "i'm not able to help",
    "i am not able to help",
    "i'm unable to assist",
    "i am unable to assist",
    "i can't provide",
    "i cannot provide",
    "i'm sorry, but i can't",
    "i'm sorry, but i cannot",
    "i am sorry, but i cannot",
    "i can't comply",
    "i cannot comply",
    "i won't be able to help",
    "i must decline",
    "as an ai",
    "as a language model",
    "as an artificial intelligence",
)
_REFUSAL = re.compile("|".join(re.escape(p) for p in REFUSAL_PHRASES))
REFUSAL_WINDOW = 300  # characters: a refusal comes first; a quoted phrase deep in an answer is not one


class NoRefusalVerifier(Verifier):
    kind = "no_refusal"

    def problem(self, body: Mapping[str, Any], choice: Mapping[str, Any]) -> str | None:
        message = _message(choice)
        if message.get("refusal"):
            return f"refused: {str(message['refusal'])[:80]!r}"
        if choice.get("finish_reason") == "content_filter":
            return "stopped by the provider's content filter"
        head = message_text(message)[:REFUSAL_WINDOW].lower().replace("’", "'")
        found = _REFUSAL.search(head)
        return f"refusal phrase {found.group()!r}" if found else None


class NotTruncatedVerifier(Verifier):
    kind = "not_truncated"
    offline = False  # recorded answers do not keep their finish_reason

    def problem(self, body: Mapping[str, Any], choice: Mapping[str, Any]) -> str | None:
        return (
            "cut off at max_tokens (finish_reason: length)"
            if choice.get("finish_reason") == "length"
            else None
        )


def _tool_schemas(body: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for tool in body.get("tools") or ():
        function = tool.get("function") if isinstance(tool, Mapping) else None
        if isinstance(function, Mapping) and isinstance(function.get("name"), str):
            out[function["name"]] = function.get("parameters", True)
    return out


class ToolCallsVerifier(Verifier):
    kind = "tool_calls"

    def problem(self, body: Mapping[str, Any], choice: Mapping[str, Any]) -> str | None:
        declared = _tool_schemas(body)
        calls = _message(choice).get("tool_calls") or []
        wanted = body.get("tool_choice")
        forced = None
        if isinstance(wanted, Mapping):
            forced = (wanted.get("function") or {}).get("name")
        if not calls:
            if wanted == "required" or forced:
                return "tool_choice requires a tool call; the answer made none"
            return None
        if wanted == "none":
            return "tool_choice is 'none' but the answer called a tool"
        for call in calls:
            function = call.get("function") if isinstance(call, Mapping) else None
            name = function.get("name") if isinstance(function, Mapping) else None
            if name not in declared:
                known = ", ".join(sorted(declared)) or "none"
                return f"calls unknown tool {name!r}; declared: {known}"
            if forced and name != forced:
                return f"calls {name!r}, tool_choice requires {forced!r}"
            raw = function.get("arguments") if isinstance(function, Mapping) else None
            try:
                arguments = json.loads(raw) if isinstance(raw, str) and raw.strip() else {}
            except ValueError as exc:
                return f"{name}: arguments are not valid JSON: {exc}"
            if not isinstance(arguments, dict):
                return f"{name}: arguments must be a JSON object"
            errors = schema_errors(arguments, declared[name])
            if errors:
                return f"{name}: arguments do not match its parameters: " + "; ".join(errors)
        return None


class ArithmeticVerifier(Verifier):
    kind = "arithmetic"

    def check(self, body: Mapping[str, Any], completion: Mapping[str, Any], extra: Any = None) -> Verdict:
        choices = _choices(completion)
        checked = wrong = 0
        first = None
        for i, choice in enumerate(choices):
            result = check_arithmetic(message_text(_message(choice)))
            checked += result.checked
            wrong += len(result.wrong)
            if result.wrong and first is None:
                step = result.wrong[0]
                first = f"{_where(i, len(choices))}{step.statement!r} is wrong (it is {step.actual:g})"
        score = None if not checked else 1 - wrong / checked
        if first is not None:
            return self.reject(f"{first}; {wrong} of {checked} checked steps wrong", score)
        return self.accept(f"{checked} steps checked" if checked else "no checkable step", score)


_NUMBER = re.compile(r"(?<![\w.])\d{1,3}(?:,\d{3})+(?:\.\d+)?|(?<![\w.])\d+(?:\.\d+)?")


def _numbers(text: str) -> set[float]:
    return {float(n.replace(",", "")) for n in _NUMBER.findall(text)}


class UsesNumbersVerifier(Verifier):
    """A word problem's answer uses every number the question gives (or its percentage as a fraction).
    A weak check — answers that restate a number in words pass, unit conversions fail — so list it last."""

    kind = "uses_numbers"

    def problem(self, body: Mapping[str, Any], choice: Mapping[str, Any]) -> str | None:
        given = _numbers(last_user_text(body.get("messages") or ()))
        if not given:
            return None
        used = _numbers(message_text(_message(choice)))
        unused = [g for g in sorted(given) if g not in used and g / 100 not in used]
        if unused:
            return "never uses " + ", ".join(f"{n:g}" for n in unused[:5]) + " from the request"
        return None


# -- agreement ----------------------------------------------------------------------------------------

_FINAL_MARKERS = (
    re.compile(r"####\s*\$?\s*(-?[\d,]*\.?\d+)"),
    re.compile(r"\\boxed\{\s*\$?(-?[\d,]*\.?\d+)"),
    re.compile(r"(?i)\banswer(?:\s+is)?\s*[:=]?\s*\**\s*\$?\s*(-?[\d,]*\.?\d+)"),
)
_ANY_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?|-?\.\d+")


def final_number(text: str, *, marked_only: bool = False) -> float | None:
    """The answer's final number: after ``####``, in ``\\boxed{}``, after "answer is"/"Answer:", else
    (unless ``marked_only``) the last number of the text."""
    for marker in _FINAL_MARKERS:
        found = marker.findall(text)
        if found:
            return _to_float(found[-1])
    if marked_only:
        return None
    numbers = _ANY_NUMBER.findall(text)
    return _to_float(numbers[-1]) if numbers else None


def _to_float(text: str) -> float | None:
    try:
        return float(text.replace(",", ""))
    except ValueError:
        return None


def _words(text: str) -> list[str]:
    return re.findall(r"\w+", text.lower())


class AgreementVerifier(Verifier):
    """The candidate and ``samples - 1`` more answers of the same model must agree. ``answer: number``
    compares final numbers; ``text`` compares whitespace- and case-normalised text, or a word-overlap
    ratio (Jaccard) of at least ``min_overlap``; ``auto`` compares numbers when every answer marks a final
    number (``####``, ``\\boxed{}``, "answer is"), else text."""

    kind = "agreement"
    needs = "sample"
    offline = False

    def __init__(self, config: VerifierConfig) -> None:
        super().__init__(config)
        self.mode = config.answer
        self.min_overlap = config.min_overlap if config.min_overlap is not None else 0.6

    def agree(self, a: str, b: str) -> bool:
        mode = self.mode
        if mode == "auto":
            both = final_number(a, marked_only=True), final_number(b, marked_only=True)
            mode = "number" if None not in both else "text"
        if mode == "number":
            x, y = final_number(a), final_number(b)
            return x is not None and y is not None and abs(x - y) <= 1e-9 * max(1.0, abs(x))
        wa, wb = _words(a), _words(b)
        if wa == wb:
            return True
        sa, sb = set(wa), set(wb)
        return bool(sa | sb) and len(sa & sb) / len(sa | sb) >= self.min_overlap

    def check(self, body: Mapping[str, Any], completion: Mapping[str, Any], extra: Any = None) -> Verdict:
        samples: Sequence[Mapping[str, Any] | None] = extra or ()
        if not samples:
            return self.reject("no second sample to compare with")
        text = reply_text(completion)
        agreeing = 0
        for sample in samples:
            if sample is None:
                return self.reject("a sample call failed: cannot check agreement")
            agreeing += self.agree(text, reply_text(sample))
        score = agreeing / len(samples)
        if agreeing < len(samples):
            return self.reject(f"{len(samples) - agreeing} of {len(samples)} samples disagree", score)
        return self.accept(f"{len(samples)} samples agree", score)


# -- judge --------------------------------------------------------------------------------------------

DEFAULT_RUBRIC = (
    "Grade how well the answer serves the request: is it correct, complete, and does it follow the "
    "request's instructions, format included? 10: fully correct and complete. 7: correct, with minor "
    "omissions. 4: partly wrong or incomplete. 1: wrong, refused or off-topic."
)
DEFAULT_MIN_SCORE = 7.0
_JUDGE_SYSTEM = (
    "You review another assistant's answer to a user's request. {rubric}\n"
    "Reply with exactly one line, `Score: N`, where N is a whole number from 1 to 10. Write nothing else."
)
_JUDGE_CHARS = 12_000  # per part: the head and tail of a longer request or answer are shown
_SCORE = re.compile(
    r"\s*(?:\**\s*(?:score|rating|grade)\s*\**\s*[:=]?\s*)?\**\s*(?:\[\[\s*)?"
    r"(\d{1,2}(?:\.\d+)?)(?:\s*\]\])?\s*(?:/\s*10)?\s*\**\s*\.?\s*",
    re.IGNORECASE,
)


def clip_for_judge(text: str, limit: int = _JUDGE_CHARS) -> str:
    """``text`` bounded for a judge's prompt: its head and tail, the middle elided."""
    if len(text) <= limit:
        return text
    half = limit // 2
    return f"{text[:half]}\n[… {len(text) - limit} characters omitted …]\n{text[-half:]}"


def transcript(body: Mapping[str, Any]) -> str:
    """A request's messages as the text a judge reads (and its required response format)."""
    parts = []
    for message in body.get("messages") or ():
        if isinstance(message, Mapping):
            parts.append(f"{message.get('role', 'user')}: {message_text(message)}")
    fmt = body.get("response_format")
    if isinstance(fmt, Mapping) and fmt.get("type") in ("json_schema", "json_object"):
        parts.append(f"(required response format: {json.dumps(fmt, ensure_ascii=False)[:2000]})")
    return "\n\n".join(parts)


def judge_messages(
    body: Mapping[str, Any], completion: Mapping[str, Any], rubric: str | None = None
) -> list[dict[str, str]]:
    """The messages to send the review model: the rubric, the request and the answer to grade."""
    answer = reply_text(completion)
    calls = reply_message(completion).get("tool_calls")
    if calls:
        answer += "\n(tool calls: " + json.dumps(calls, ensure_ascii=False)[:4000] + ")"
    return [
        {"role": "system", "content": _JUDGE_SYSTEM.format(rubric=rubric or DEFAULT_RUBRIC)},
        {
            "role": "user",
            "content": f"[Request]\n{clip_for_judge(transcript(body))}\n\n[Answer]\n{clip_for_judge(answer)}",
        },
    ]


def parse_judge_score(reply: str) -> float | None:
    """The grade in a judge's reply, strictly: ``Score: 7``, ``7``, ``7/10``, ``[[7]]``; 1–10, else None."""
    match = _SCORE.fullmatch(reply or "")
    if match is None:
        return None
    score = float(match.group(1))
    return score if 1 <= score <= 10 else None


class JudgeVerifier(Verifier):
    kind = "judge"
    needs = "judge"
    offline = False

    def __init__(self, config: VerifierConfig) -> None:
        super().__init__(config)
        self.model = config.model
        self.rubric = config.rubric
        self.min_score = config.min_score if config.min_score is not None else DEFAULT_MIN_SCORE

    def messages(self, body: Mapping[str, Any], completion: Mapping[str, Any]) -> list[dict[str, str]]:
        return judge_messages(body, completion, self.rubric)

    def check(self, body: Mapping[str, Any], completion: Mapping[str, Any], extra: Any = None) -> Verdict:
        if extra is None:
            return self.reject("the judge call failed")
        score = parse_judge_score(str(extra))
        if score is None:
            return self.reject(f"the judge's reply does not parse as a score: {str(extra)[:60]!r}")
        if score < self.min_score:
            return self.reject(f"judge score {score:g} < {self.min_score:g}", score)
        return self.accept(f"judge score {score:g} ≥ {self.min_score:g}", score)


KINDS: dict[str, type[Verifier]] = {
    "json_schema": JsonSchemaVerifier,
    "regex": RegexVerifier,
    "non_empty": NonEmptyVerifier,
    "no_refusal": NoRefusalVerifier,
    "not_truncated": NotTruncatedVerifier,
    "tool_calls": ToolCallsVerifier,
    "arithmetic": ArithmeticVerifier,
    "uses_numbers": UsesNumbersVerifier,
    "agreement": AgreementVerifier,
    "judge": JudgeVerifier,
}


def build_verifiers(cascade: CascadeConfig) -> tuple[Verifier, ...]:
    """The cascade's verifiers in run order: those that need no call first, each group in config order."""
    verifiers = [KINDS[v.kind](v) for v in cascade.verifiers]
    return tuple(sorted(verifiers, key=lambda v: v.needs is not None))


# -- streams ------------------------------------------------------------------------------------------


def completion_from_chunks(chunks: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Assemble streamed ``chat.completion.chunk`` objects into the ``chat.completion`` they spell."""
    choices: dict[int, dict[str, Any]] = {}
    head: dict[str, Any] = {}
    for chunk in chunks:
        for key in ("id", "model", "created"):
            if key in chunk and key not in head:
                head[key] = chunk[key]
        for delta_choice in chunk.get("choices") or ():
            index = delta_choice.get("index", 0)
            choice = choices.setdefault(
                index,
                {"index": index, "message": {"role": "assistant", "content": None}, "finish_reason": None},
            )
            message = choice["message"]
            delta = delta_choice.get("delta") or {}
            if delta.get("content"):
                message["content"] = (message["content"] or "") + delta["content"]
            if delta.get("refusal"):
                message["refusal"] = message.get("refusal", "") + delta["refusal"]
            for call in delta.get("tool_calls") or ():
                calls = message.setdefault("tool_calls", [])
                slot = call.get("index", len(calls))
                while len(calls) <= slot:
                    calls.append({"id": None, "type": "function", "function": {"name": "", "arguments": ""}})
                target = calls[slot]
                if call.get("id"):
                    target["id"] = call["id"]
                function = call.get("function") or {}
                if function.get("name"):
                    target["function"]["name"] += function["name"]
                if function.get("arguments"):
                    target["function"]["arguments"] += function["arguments"]
            if delta_choice.get("finish_reason"):
                choice["finish_reason"] = delta_choice["finish_reason"]
    return {**head, "object": "chat.completion", "choices": [choices[i] for i in sorted(choices)]}
