"""Declarative routing rules: compiled once from the config, matched against Features.

A rule holds when every one of its conditions holds; the first rule that holds wins. Conditions
test one feature each: equality with a scalar, or ``{op: operand}`` with op one of ``in``, ``not_in``,
``<``, ``<=``, ``>``, ``>=``, ``==``, ``!=``, ``regex``. A numeric comparison against a feature that is
unset (``latency_ms: null``) does not hold: "no latency budget" is not "a budget under 1 s".
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..config import Rule
from ..features import Features

Test = Callable[[Any], bool]

_COMPARE: dict[str, Callable[[Any, Any], bool]] = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}


def _make_test(op: str, operand: Any) -> Test:
    if op == "==":
        return lambda value: value == operand
    if op == "!=":
        return lambda value: value != operand
    if op == "in":
        members = frozenset(operand) if all(isinstance(x, str | int | bool) for x in operand) else operand
        return lambda value: value in members
    if op == "not_in":
        members = frozenset(operand) if all(isinstance(x, str | int | bool) for x in operand) else operand
        return lambda value: value not in members
    if op in _COMPARE:
        compare = _COMPARE[op]
        return lambda value: (
            value is not None and not isinstance(value, bool | str) and compare(value, operand)
        )
    if op == "regex":
        pattern = re.compile(str(operand))
        return lambda value: value is not None and pattern.search(str(value)) is not None
    raise ValueError(f"unknown operator {op!r}")  # config validation makes this unreachable


@dataclass(frozen=True, slots=True)
class Condition:
    feature: str
    op: str
    operand: Any
    test: Test

    def explain(self, features: Features) -> str:
        value = getattr(features, self.feature)
        if self.op == "regex":
            return f"{self.feature}~/{self.operand}/"
        shown = f"{value!r}" if isinstance(value, str) else str(value)
        operand = (
            "[" + ",".join(map(str, self.operand)) + "]" if isinstance(self.operand, list) else self.operand
        )
        return f"{self.feature}={shown} {self.op} {operand}"


@dataclass(frozen=True, slots=True)
class CompiledRule:
    name: str
    conditions: tuple[Condition, ...]
    rule: Rule

    def matches(self, features: Features) -> bool:
        # A plain loop: measurably cheaper than all() over a generator, and this runs per rule per request.
        for condition in self.conditions:  # noqa: SIM110
            if not condition.test(getattr(features, condition.feature)):
                return False
        return True

    def explain(self, features: Features) -> str:
        """Why the rule matched, e.g. ``input_tokens=212 < 500, latency_ms=800 < 1000``."""
        return ", ".join(c.explain(features) for c in self.conditions) or "always"


def compile_rule(rule: Rule) -> CompiledRule:
    conditions: list[Condition] = []
    for feature, spec in rule.when.items():
        if isinstance(spec, dict):
            for op, operand in spec.items():
                conditions.append(Condition(feature, op, operand, _make_test(op, operand)))
        else:
            conditions.append(Condition(feature, "==", spec, _make_test("==", spec)))
    return CompiledRule(rule.name, tuple(conditions), rule)


def first_match(rules: tuple[CompiledRule, ...], features: Features) -> CompiledRule | None:
    for rule in rules:
        if rule.matches(features):
            return rule
    return None
