"""Re-check the arithmetic an answer states: ``3 x 60 = 180``, ``<<3*60=180>>``, ``22 + 4 x 12 = 70``.

Pure, no ``eval``: a small tokenizer and recursive-descent parser over numbers (``1,300.50``, ``$5``,
``20%``), ``+ - * / x × ÷ ^ **`` and parentheses. The checker is built to be *conservative*: it only
judges a statement whose both sides are plain arithmetic, and it accepts a result that matches up to the
precision the answer wrote it with, a whole number rounded either way, or — for a running chain
``5 + 3 = 8 + 2 = 10`` — the first number of the right side. What it cannot read it skips, never rejects.

How statements are found, line by line: GSM8K-style calculator annotations ``<<lhs=rhs>>`` are checked
and then removed; every remaining ``=`` (not ``==``, ``<=``, ``>=``, ``!=``, ``=>``) compares the longest
run of arithmetic characters just before it with the run just after it. The left side must hold an
operator between two numbers (``D = 30`` states nothing to check).
"""

from __future__ import annotations

import itertools
import math
import re
from dataclasses import dataclass

__all__ = ["ArithmeticCheck", "WrongStep", "check_arithmetic", "evaluate"]

_ANNOTATION = re.compile(r"<<([^<>=]*)=([^<>]*)>>")
_ANY_ANNOTATION = re.compile(r"<<[^<>]*(?:>>|$)")
_EQUALS = re.compile(r"(?<![=<>!≤≥])=(?![=>])")
_ARITH_CHARS = frozenset("0123456789.,$€£%+-−*/×÷x^() \t")
_NUMBER = re.compile(r"\d{1,3}(?:,\d{3})+(?:\.\d+)?(?![\d,])|\d+(?:\.\d+)?|\.\d+")
_FRACTION = re.compile(rf"({_NUMBER.pattern})/({_NUMBER.pattern})(?![\d%/^])")
_FLAT_EXPONENT = re.compile(r"[x×*]\s*10[-−]\d")
_MAX_EXPONENT = 12
_MAX_BASE = 1e6
_MAX_CHARS = 120  # longer runs are prose with numbers in it, not a statement


@dataclass(frozen=True, slots=True)
class WrongStep:
    statement: str  # "22 + 4 x 12 = 60"
    stated: float
    actual: float


@dataclass(frozen=True, slots=True)
class ArithmeticCheck:
    checked: int  # statements both of whose sides could be evaluated
    wrong: tuple[WrongStep, ...]


class _Unreadable(Exception):
    """Not plain arithmetic: skipped, never counted against the answer."""


def _tokens(text: str) -> list[str]:
    out: list[str] = []
    i = 0
    text = text.replace("**", "^").replace("−", "-").replace("×", "*").replace("÷", "/")
    while i < len(text):
        ch = text[i]
        if ch in " \t$€£":
            i += 1
            continue
        match = _FRACTION.match(text, i)
        if match and (i == 0 or not text[i - 1].isdigit()):
            # "12.8 / 2/5": a fraction written tight binds tighter than the spaced operators around it
            out += ["(", match.group(1).replace(",", ""), "/", match.group(2).replace(",", ""), ")"]
            i = match.end()
            continue
        match = _NUMBER.match(text, i)
        if match:
            out.append(match.group().replace(",", ""))
            i = match.end()
            if i < len(text) and text[i] == "%":
                out.append("%")
                i += 1
            continue
        if ch == "x":
            before, after = text[i - 1 : i], text[i + 1 : i + 2]
            # "4 x 12" and "4x12" multiply; "3x - 10" names a variable
            if not ((before == " " and after == " ") or (before.isdigit() and after.isdigit())):
                raise _Unreadable(text)
            out.append("*")
            i += 1
            continue
        if ch in "+-*/^()":
            out.append(ch)
            i += 1
            continue
        raise _Unreadable(text)
    return out


class _Parser:
    """expr := term (('+'|'-') term)* ; term := unary (('*'|'/') unary)* ; unary := '-' unary | power ;
    power := atom ('^' unary)? ; atom := NUMBER ['%'] | '(' expr ')'."""

    def __init__(self, tokens: list[str], *, percent: bool) -> None:
        self.tokens = tokens
        self.i = 0
        self.percent = percent  # "20%" is 0.2 (else 20: "(12 / 20) x 100 = 60%")

    def parse(self) -> float:
        value = self.expr()
        if self.i != len(self.tokens):
            raise _Unreadable("trailing tokens")
        if not math.isfinite(value):
            raise _Unreadable("not finite")
        return value

    def peek(self) -> str | None:
        return self.tokens[self.i] if self.i < len(self.tokens) else None

    def expr(self) -> float:
        value = self.term()
        while self.peek() in ("+", "-"):
            op = self.tokens[self.i]
            self.i += 1
            right = self.term()
            value = value + right if op == "+" else value - right
        return value

    def term(self) -> float:
        value = self.unary()
        while self.peek() in ("*", "/"):
            op = self.tokens[self.i]
            self.i += 1
            right = self.unary()
            if op == "*":
                value *= right
            elif right == 0:
                raise _Unreadable("division by zero")
            else:
                value /= right
        return value

    def unary(self) -> float:
        if self.peek() == "-":
            self.i += 1
            return -self.unary()
        return self.power()

    def power(self) -> float:
        base = self.atom()
        if self.peek() == "^":
            self.i += 1
            exponent = self.unary()
            if not exponent.is_integer() or abs(exponent) > _MAX_EXPONENT or abs(base) > _MAX_BASE:
                raise _Unreadable("power out of range")
            if base == 0 and exponent < 0:
                raise _Unreadable("division by zero")
            return base ** int(exponent)
        return base

    def atom(self) -> float:
        token = self.peek()
        if token is None:
            raise _Unreadable("unexpected end")
        self.i += 1
        if token == "(":
            value = self.expr()
            if self.peek() != ")":
                raise _Unreadable("unbalanced parenthesis")
            self.i += 1
            return value
        if token[0].isdigit() or token[0] == ".":
            value = float(token)
            if self.peek() == "%":
                self.i += 1
                if self.percent:
                    value /= 100
            return value
        raise _Unreadable(f"unexpected {token!r}")


def evaluate(text: str, *, percent: bool = True) -> float | None:
    """The value of a plain arithmetic expression, or None if it is not one. Never calls ``eval``."""
    try:
        return _Parser(_tokens(text), percent=percent).parse()
    except (_Unreadable, OverflowError, ValueError):
        return None


def _values(text: str) -> set[float]:
    """Every reading of an expression: with ``%`` as hundredths and as a plain number."""
    out = {evaluate(text, percent=True)}
    if "%" in text:
        out.add(evaluate(text, percent=False))
    out.discard(None)
    return out  # type: ignore[return-value]


def _decimals(text: str) -> int:
    return max((len(n.split(".")[1]) for n in _NUMBER.findall(text) if "." in n), default=0)


def _close(actual: float, stated: float, stated_text: str, lhs_text: str) -> bool:
    # Up to the precision the result was written with, plus what rounded inputs carry into it.
    tolerance = 0.5 * 10 ** -_decimals(stated_text) + 1e-9 * max(1.0, abs(stated))
    if _decimals(lhs_text):
        tolerance += 0.01 * abs(stated)  # "0.33 * 300 = 100": rounded inputs, a right step
    if abs(actual - stated) <= tolerance:
        return True
    # A whole-number result of a division rounded down or up ("7 / 2 = 3 boxes") is not a wrong step.
    return stated.is_integer() and math.floor(actual) <= stated <= math.ceil(actual)


def _has_operation(text: str) -> bool:
    try:
        tokens = _tokens(text)
    except _Unreadable:
        return False
    numbers = sum(1 for t in tokens if t[0].isdigit() or t[0] == ".")
    return numbers >= 2 and any(t in ("+", "-", "*", "/", "^") for t in tokens[1:])


def _left(segment: str) -> str:
    """The arithmetic run that ends ``segment`` (the text just before an ``=``), or "" if the
    expression really begins further left, at a variable or a word (``S * 3/4 = 12``)."""
    i = len(segment)
    while i > 0 and segment[i - 1] in _ARITH_CHARS and len(segment) - i < _MAX_CHARS:
        i -= 1
    while i < len(segment) and segment[i] in " \t":
        i += 1
    run = segment[i:].rstrip()
    glued = i > 0 and not segment[i - 1].isspace()  # the run touches the word before it
    if run.startswith("x") and glued and segment[i - 1].isalpha():
        run = run[1:].lstrip()  # the end of a word ("box 3 * 4"), not a multiplication
    while run[:1] in (",", ".") and run[1:2] != "" and not run[1:2].isdigit():
        run = run[1:].lstrip()  # after a clause's comma or a sentence's full stop
    while run.startswith("(") and run.count("(") > run.count(")"):
        run = run[1:].lstrip()
    if run.startswith("-"):
        if run[1:2].isdigit():
            return run  # a negative number ("-30 / 3"), or a bullet: the caller reads it both ways
        # A list bullet ("- 20 * 4 = 80") at the start of a line; elsewhere a minus that continues an
        # expression to the left ("S - 3 = 12").
        return run[1:].lstrip() if i == 0 else ""
    if run[:1] in ("+", "*", "/", "x", "^", ")", "%"):
        return ""
    return run


def _right(segment: str) -> str:
    """The arithmetic run that begins ``segment`` (the text just after an ``=``)."""
    i = 0
    while i < len(segment) and segment[i] in _ARITH_CHARS and i < _MAX_CHARS:
        i += 1
    if i < len(segment) and segment[i].isalnum() and i > 0 and not segment[i - 1].isspace():
        return ""  # "= 5C - 3C": a number glued to a variable or a unit is not a value we can read
    run = segment[:i].strip()
    if run.rstrip(".,").rstrip()[-1:] in ("+", "-", "*", "/", "x", "^", "("):
        return ""  # "= 2 * S": the expression continues past what we can read
    depth = 0
    for j, ch in enumerate(run):  # "(so 3 * 4 = 12)": the run ends at the unmatched ")"
        depth += (ch == "(") - (ch == ")")
        if depth < 0:
            run = run[:j]
            break
    while run and run[-1] in "+-*/x^(,. \t":
        run = run[:-1]
    return run


def _first_number(text: str) -> str | None:
    match = _NUMBER.search(text)
    return match.group() if match else None


def _judge(lhs: str, rhs: str, wrong: list[WrongStep]) -> bool:
    """Check ``lhs = rhs``; True if it was checkable. Appends to ``wrong`` when it is wrong."""
    if not _has_operation(lhs) or not rhs:
        return False
    if _FLAT_EXPONENT.search(lhs) or _FLAT_EXPONENT.search(rhs):
        return False  # "1.18 x 10-12": scientific notation that lost its superscript
    actuals = _values(lhs)
    if lhs.startswith("-"):  # a leading dash may be a list bullet: read it both ways
        actuals |= _values(lhs[1:])
    stated = _values(rhs)
    if not actuals or not stated:
        return False
    if any(_close(a, s, rhs, lhs) for a in actuals for s in stated):
        return True
    first = _first_number(rhs)
    # A running chain: "5 + 3 = 8 + 2 = 10" states 8 for "5 + 3".
    running = _values(first) if first is not None and first != rhs and _has_operation(rhs) else set()
    if any(_close(a, s, first or "", lhs) for a in actuals for s in running):
        return True
    actual = min(actuals, key=lambda a: min(abs(a - s) for s in stated))
    wrong.append(WrongStep(f"{lhs} = {rhs}", min(stated, key=lambda s: abs(s - actual)), actual))
    return True


def check_arithmetic(text: str) -> ArithmeticCheck:
    """Every checkable ``a op b = c`` statement of ``text``, and those whose result is wrong."""
    wrong: list[WrongStep] = []
    checked = 0
    for line in text.replace("\\*", "*").replace("\\times", "×").replace("\\div", "÷").splitlines():
        for match in _ANNOTATION.finditer(line):
            checked += _judge(match.group(1).strip(), match.group(2).strip(), wrong)
        line = _ANY_ANNOTATION.sub("", line)
        if "=" not in line:
            continue
        segments = _EQUALS.split(line)
        for before, after in itertools.pairwise(segments):
            checked += _judge(_left(before), _right(after), wrong)
    return ArithmeticCheck(checked, tuple(wrong))
