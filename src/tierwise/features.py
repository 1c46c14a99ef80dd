"""Request → Features: what the policy knows about a chat request.

Everything here is cheap and deterministic: a few precompiled regexes over bounded snippets of the
conversation, no tokenizer, no network. Explicit hints (``x-tierwise-*`` headers or the body's
``metadata``) always win over inferred values, because the caller knows its task better than we do.

Token counts are an estimate: characters / 4 (OpenAI's rule of thumb for English text) plus 4 tokens
of framing per message, and the JSON of tool definitions counted the same way. On the arena-bench-v1
prompts it is within ±15% of cl100k_base for most English prompts; it only has to rank requests by size.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from .errors import RequestError
from .messages import HINT_HEADERS, HINT_KEYS, HINT_METADATA_KEYS, content_text, has_image

TASKS: tuple[str, ...] = (
    "summarize",
    "classify",
    "extract",
    "translate",
    "format",
    "qa",
    "chat",
    "code",
    "math",
    "reasoning",
)
RISKS: tuple[str, ...] = ("low", "normal", "high", "critical")
QUALITIES: tuple[str, ...] = ("low", "normal", "high")

# How much of each message the classifiers read: the start says what is asked, the end often
# repeats the instruction after a pasted document. Bounded so a 1 MB prompt costs what a 5 kB one does.
_HEAD = 3000
_TAIL = 1000
_INSTRUCTION_HEAD = 300


@dataclass(frozen=True, slots=True)
class Features:
    """What the policy engine sees of one request. Names here are the names rules may test."""

    task: str = "chat"
    input_tokens: int = 0
    max_output_tokens: int | None = None
    turns: int = 1
    has_code: bool = False
    has_math: bool = False
    multi_step: bool = False
    has_tools: bool = False
    json_mode: bool = False
    has_images: bool = False
    stream: bool = False
    latency_ms: int | None = None
    risk: str = "normal"
    quality: str = "normal"
    tier: str | None = None
    user_tier: str | None = None
    task_source: str = "inferred"  # "hint" when the caller named the task
    text: str = ""  # the last user message, for `regex` conditions; never written to the ledger

    def context_needed(self) -> int:
        """Estimated context window the request needs: its input plus the output it reserves."""
        return self.input_tokens + (self.max_output_tokens or 0)

    def to_log(self) -> dict[str, Any]:
        """The features as a JSON-ready dict for the ledger, without the prompt text."""
        return {name: getattr(self, name) for name in _LOGGED_FIELDS}


FEATURE_NAMES: frozenset[str] = frozenset(Features.__dataclass_fields__)
_LOGGED_FIELDS: tuple[str, ...] = tuple(name for name in Features.__dataclass_fields__ if name != "text")

_RE_CODE = re.compile(
    r"\b(?:def|class|import|return|function|const|let|var|public|private|static|void|fn|impl|struct|"
    r"select|insert|update|create\s+table|#include|console\.log|printf|println)\b[^\n]{0,80}[({;:=]"
    r"|\b(?:python|javascript|typescript|java|rust|golang|kotlin|swift|php|ruby|bash|sql|regex|"
    r"html|css|react|django|flask|numpy|pandas|api|code|script|program|function|compile|debug|bug|"
    r"stack\s*trace|exception|refactor|unit\s+test)\b"
    # \b cannot end a name that ends in a symbol: "in c#" has no word boundary after the "#".
    r"|(?<![\w#+])(?:c\+\+|c#|f#)(?![\w#+])",
)
_RE_MATH = re.compile(
    r"\d\s*[-+*/^×÷=]\s*\(?\d|\\(?:frac|int|sum|sqrt|cdot|lim)\b|[∫∑√π≤≥≠]"
    r"|\b(?:solve|equation|integral|derivative|probability|prove|theorem|calculate|compute|arithmetic|"
    r"algebra|geometry|polynomial|matrix|logarithm|factorial|percent(?:age)?|how many|how much)\b",
)
# Every pattern below is matched against lower-cased text (one str.lower() per message is far cheaper
# than re.IGNORECASE on each of them).
_RE_MULTI_STEP = re.compile(
    r"\bstep[- ]by[- ]step\b|\bfirst\b[^.?!\n]{0,200}\bthen\b|\bthink (?:carefully|through)\b"
    r"|\b(?:plan|design|architect|trade-?offs?|pros and cons|compare and contrast)\b",
)
_RE_NUMBERED = re.compile(r"^\s*(?:\d+[.)]|[-*]) \S", re.MULTILINE)
_RE_REASONING = re.compile(
    r"\b(?:why|explain|analy[sz]e|reason|evaluate|critique|argue|justify|infer|deduce|riddle|puzzle|"
    r"logic(?:al)?|implications?|strategy|decide|recommend)\b",
)
# Instruction verbs are read from the start of the last user message (or the system prompt): "Summarize
# this code" is a summary even though it contains code.
_INSTRUCTIONS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("summarize", re.compile(r"\b(?:summari[sz]e|summary|tl;?dr|sum up|condense|key points|recap)\b")),
    (
        "translate",
        re.compile(
            r"\btranslat(?:e|ion)\b|\b(?:into|to) (?:english|french|german|spanish|"
            r"italian|portuguese|chinese|japanese|korean|russian|arabic|hindi|dutch)\b",
        ),
    ),
    (
        "classify",
        re.compile(
            r"\b(?:classify|categori[sz]e|sentiment|label (?:this|the|each)|which category|"
            r"is (?:this|it) (?:spam|positive|negative|toxic))\b",
        ),
    ),
    ("extract", re.compile(r"\b(?:extract|pull out|parse|find all|list (?:all|every)|named entit)")),
    (
        "format",
        re.compile(
            r"\b(?:reformat|format (?:this|the|as)|convert (?:this|it|the)\b[^\n]{0,40}\bto\b|"
            r"rewrite (?:this|it) as|as (?:a )?(?:json|csv|yaml|markdown table|bullet list))\b",
        ),
    ),
)
_RE_QUESTION = re.compile(
    r"^\s*(?:what|who|whom|when|where|which|how|is|are|does|do|can|could|should|was|were|define)\b|\?\s*$",
)

# Python's regex engine tries every alternative of a ``\b(?:word|word|…)`` at every position, which made
# the searches above most of a request's routing time (~100 µs for a 300-character prompt). Each one is
# therefore gated by a condition that every match implies: one of its words as a whole word of the text
# (a match of ``\bword\b`` is a maximal run of word characters, i.e. one of ``_WORDS``), or one of its
# literal pieces in the text. A text that fails the gate cannot match, so the search is skipped; the
# results are those of the plain searches (tests/test_features.py checks that on the arena prompts).
_WORDS = re.compile(r"\w+")
# ASCII text: every byte that is not a word character becomes a space, and split() gives the same words
# as _WORDS.findall, several times faster.
_ASCII_NON_WORD = bytes(c if chr(c).isalnum() or c == 0x5F else 0x20 for c in range(128)) + b" " * 128


def _words(text: str) -> set[str]:
    """The maximal runs of word characters (``\\w+``) in ``text``."""
    if text.isascii():
        return set(text.encode("ascii").translate(_ASCII_NON_WORD).decode("ascii").split())
    return set(_WORDS.findall(text))


@dataclass(frozen=True, slots=True)
class _Gated:
    """A pattern, and what any match of it needs: one of ``words`` among the text's words, or a match
    of ``pieces`` (its literal pieces, one search) in the text."""

    pattern: re.Pattern[str]
    words: frozenset[str]
    pieces: re.Pattern[str] | None = None

    def search(self, text: str, words: set[str]) -> bool:
        if words.isdisjoint(self.words) and (self.pieces is None or self.pieces.search(text) is None):
            return False
        return self.pattern.search(text) is not None


def _gate(pattern: re.Pattern[str], words: str, pieces: tuple[str, ...] = ()) -> _Gated:
    literal = re.compile("|".join(map(re.escape, pieces))) if pieces else None
    return _Gated(pattern, frozenset(words.split()), literal)


_CODE = _gate(
    _RE_CODE,
    # the first alternative's keywords (#include: "include"; console.log: "console"; create table: "create")
    "def class import return function const let var public private static void fn impl struct select "
    "insert update create include console printf println "
    # the second's (stack trace: "stack" or "stacktrace"; unit test: "unit")
    "python javascript typescript java rust golang kotlin swift php ruby bash sql regex html css react "
    "django flask numpy pandas api code script program compile debug bug stack stacktrace exception "
    "refactor unit "
    # c++, c#, f#: a lone "c" or "f"
    "c f",
)
_MATH = _gate(
    _RE_MATH,
    "solve equation integral derivative probability prove theorem calculate compute arithmetic algebra "
    "geometry polynomial matrix logarithm factorial percent percentage how",
    # an operator between digits, a LaTeX command, a math symbol
    ("-", "+", "*", "/", "^", "×", "÷", "=", "\\", "∫", "∑", "√", "π", "≤", "≥", "≠"),
)
_MULTI_STEP = _gate(
    _RE_MULTI_STEP,
    "step first think plan design architect trade tradeoff tradeoffs pros compare",
)
_REASONING = _gate(
    _RE_REASONING,
    "why explain analyse analyze reason evaluate critique argue justify infer deduce riddle puzzle logic "
    "logical implication implications strategy decide recommend",
)
_INSTRUCTION_GATES: tuple[tuple[str, _Gated], ...] = tuple(
    (task, _gate(pattern, words, pieces))
    for (task, pattern), (words, pieces) in zip(
        _INSTRUCTIONS,
        (
            ("summarise summarize summary tl tldr sum condense key recap", ()),
            (
                "translate translation english french german spanish italian portuguese chinese japanese "
                "korean russian arabic hindi dutch",
                (),
            ),
            ("classify categorise categorize sentiment label category spam positive negative toxic", ()),
            # no \b at its end: "extracted", "parser" match too
            ("pull find list named", ("extract", "parse")),
            ("reformat format convert rewrite json csv yaml markdown bullet", ()),
        ),
        strict=True,
    )
)


def _snippet(text: str) -> str:
    if len(text) <= _HEAD + _TAIL:
        return text
    return text[:_HEAD] + "\n" + text[-_TAIL:]


def _infer_task(
    last_user: str,
    system: str,
    *,
    has_code: bool,
    has_math: bool,
    json_mode: bool,
    short: bool,
    user_words: set[str] | None = None,
    system_words: set[str] | None = None,
) -> str:
    """``last_user`` and ``system`` are lower-cased snippets; ``short``: the full message is short.
    ``user_words`` and ``system_words``, when known, are their words (see ``_words``)."""
    head = last_user[:_INSTRUCTION_HEAD]
    system_head = system[:_INSTRUCTION_HEAD]
    # The words of the heads themselves: a word cut at the head's end is a different word.
    head_words = user_words if user_words is not None and head == last_user else _words(head)
    if not system_head:
        system_words = set()
    elif system_words is None or system_head != system:
        system_words = _words(system_head)
    for task, gated in _INSTRUCTION_GATES:
        if gated.search(head, head_words) or (system_head and gated.search(system_head, system_words)):
            return task
    if has_code:
        return "code"
    if has_math:
        return "math"
    if json_mode:
        return "extract"
    if _REASONING.search(head, head_words):
        return "reasoning"
    if short and _RE_QUESTION.search(last_user[-200:] if len(last_user) > 200 else last_user):
        return "qa"
    return "chat"


def parse_hints(headers: Mapping[str, str] | None, metadata: Any) -> dict[str, Any]:
    """Collect routing hints from ``x-tierwise-*`` headers and the body's ``metadata``.

    Headers win over metadata. Values are validated here so a bad hint is a 400 naming its source.
    """
    raw: dict[str, tuple[Any, str]] = {}
    if isinstance(metadata, dict):
        for name, key in HINT_METADATA_KEYS.items():
            if name in metadata:
                raw[key] = (metadata[name], f"metadata.{name}")
    if headers:
        for header, key in HINT_HEADERS.items():
            value = headers.get(header)
            if value is not None:
                raw[key] = (value, header)
    return validate_hints({k: v for k, (v, _) in raw.items()}, sources={k: s for k, (_, s) in raw.items()})


# A latency budget beyond an hour says nothing a request of any size could use.
MAX_LATENCY_MS = 3_600_000
# Tier and user-tier hints are names: they go into the ledger, reasons and rules, never free text.
_NAME = re.compile(r"[a-z0-9][a-z0-9_.:-]{0,63}")


def validate_hints(hints: Mapping[str, Any], *, sources: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Check and normalise hint values; raise RequestError naming the offending hint."""
    out: dict[str, Any] = {}
    for key, value in hints.items():
        where = (sources or {}).get(key, key)
        if key not in HINT_KEYS:
            raise RequestError(
                f"{where}: unknown routing hint; expected one of {', '.join(HINT_KEYS)}", param=where
            )
        if value is None:
            continue
        if key == "latency_ms":
            out[key] = _latency_ms(value, where)
            continue
        if not isinstance(value, str):
            raise RequestError(f"{where}: must be a string, got {type(value).__name__}", param=where)
        text = value.strip().lower()
        allowed = {"task": TASKS, "risk": RISKS, "quality": QUALITIES}.get(key)
        if allowed is not None:
            if text not in allowed:
                raise RequestError(
                    f"{where}: must be one of {', '.join(allowed)}, got {_shown(value)}", param=where
                )
        elif not _NAME.fullmatch(text):
            raise RequestError(
                f"{where}: must be a name of 1 to 64 letters, digits and _.:- , got {_shown(value)}",
                param=where,
            )
        out[key] = text
    return out


def _latency_ms(value: Any, where: str) -> int:
    number: int | None = None
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, float) and value.is_integer():
        number = int(value)
    elif isinstance(value, str) and value.strip().isascii() and value.strip().isdigit():
        number = int(value.strip()) if len(value.strip()) <= 12 else MAX_LATENCY_MS + 1
    if number is None or not 0 < number <= MAX_LATENCY_MS:
        raise RequestError(
            f"{where}: must be an integer of milliseconds from 1 to {MAX_LATENCY_MS}, got {_shown(value)}",
            param=where,
        )
    return number


def _shown(value: Any) -> str:
    """A client's value as an error message quotes it: bounded, and ASCII so any header can carry it."""
    text = ascii(value) if isinstance(value, str | int | float) else type(value).__name__
    return text if len(text) <= 40 else text[:39] + "…"


def extract_features(body: Mapping[str, Any], hints: Mapping[str, Any] | None = None) -> Features:
    """Compute the Features of an OpenAI chat-completions request body.

    ``body`` must already be validated (``messages`` a non-empty list of dicts). ``hints`` are
    already-validated routing hints (see :func:`parse_hints`); they override inferred values.
    """
    messages = body["messages"]
    chars = 0
    has_code = has_math = has_images = multi_step = False
    last_user = ""
    user_lower = system_lower = ""  # lower-cased snippets the classifiers read
    user_words: set[str] = set()
    system_words: set[str] | None = None
    system = ""
    tool_turns = 0
    for message in messages:
        content = message.get("content")
        text = content_text(content)
        has_images = has_images or has_image(content)
        chars += len(text)
        role = message.get("role")
        if role == "user":
            last_user = text
        elif role in ("system", "developer") and not system:
            system = text
        elif role == "tool" or message.get("tool_calls"):
            tool_turns += 1
        if not text:
            continue
        snippet = _snippet(text).lower()
        words = _words(snippet)
        if role == "user":
            user_lower, user_words = snippet, words
        elif role in ("system", "developer") and not system_lower:
            system_lower, system_words = snippet, words
        if not has_code and ("```" in snippet or _CODE.search(snippet, words)):
            has_code = True
        if not has_math and _MATH.search(snippet, words):
            has_math = True
        if (
            not multi_step
            and role in ("user", "system", "developer")
            and (_MULTI_STEP.search(snippet, words) or len(_RE_NUMBERED.findall(snippet[:_HEAD])) >= 3)
        ):
            multi_step = True
    tools = body.get("tools") or body.get("functions")
    if tools:
        chars += len(orjson.dumps(tools))
    multi_step = multi_step or tool_turns >= 2
    response_format = body.get("response_format")
    json_mode = isinstance(response_format, dict) and response_format.get("type") in (
        "json_object",
        "json_schema",
    )
    max_out = body.get("max_completion_tokens") or body.get("max_tokens")

    hints = hints or {}
    task = hints.get("task")
    task_source = "hint"
    if task is None:
        task_source = "inferred"
        task = _infer_task(
            user_lower,
            system_lower,
            has_code=has_code,
            has_math=has_math,
            json_mode=json_mode,
            short=len(last_user) < 400,
            user_words=user_words,
            system_words=system_words,
        )
    return Features(
        task=task,
        input_tokens=chars // 4 + 4 * len(messages) + 3,
        max_output_tokens=max_out if isinstance(max_out, int) and not isinstance(max_out, bool) else None,
        turns=len(messages),
        has_code=has_code,
        has_math=has_math,
        multi_step=multi_step,
        has_tools=bool(tools),
        json_mode=json_mode,
        has_images=has_images,
        stream=bool(body.get("stream")),
        latency_ms=hints.get("latency_ms"),
        risk=hints.get("risk", "normal"),
        quality=hints.get("quality", "normal"),
        tier=hints.get("tier"),
        user_tier=hints.get("user_tier"),
        task_source=task_source,
        text=last_user,
    )


def features_json(features: Features) -> bytes:
    """Ledger encoding of features (no prompt text)."""
    return orjson.dumps(features.to_log())
