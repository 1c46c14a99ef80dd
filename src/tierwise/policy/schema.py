"""A compact JSON-Schema validator for the subset OpenAI structured outputs and tool parameters use.

Pure and dependency-free (the cascade runs it on every verified answer; the ``jsonschema`` package
would add two compiled dependencies for a subset this small). Supported keywords:

    type (a name or a list of names: ``["string", "null"]`` is how structured outputs say nullable),
    properties, required, additionalProperties (bool or schema), items (schema), prefixItems,
    minItems, maxItems, enum, const, anyOf, oneOf, allOf, $ref to ``#/…`` (``$defs``, recursion),
    minLength, maxLength, pattern, minimum, maximum, exclusiveMinimum, exclusiveMaximum, multipleOf,
    and boolean schemas (``true`` accepts anything, ``false`` nothing).

Unknown keywords (``format``, ``description``, …) are ignored, so an answer is never rejected for a
keyword this validator does not understand. As in JSON Schema, ``integer`` accepts 3.0, and booleans
are not numbers.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

__all__ = ["schema_errors"]

_TYPES = ("object", "array", "string", "number", "integer", "boolean", "null")
_MAX_ERRORS = 5  # enough to explain a rejection; more only lengthens the ledger row
_MAX_DEPTH = 64  # $ref recursion guard: a schema that refers to itself forever


def schema_errors(instance: Any, schema: Any, *, limit: int = _MAX_ERRORS) -> list[str]:
    """Where ``instance`` breaks ``schema``: ``["$.age: expected integer, got string"]``; [] if valid."""
    errors: list[str] = []
    _check(instance, schema, "$", schema, errors, limit, 0)
    return errors[:limit]


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def _is(value: Any, name: str) -> bool:
    if name == "null":
        return value is None
    if name == "boolean":
        return isinstance(value, bool)
    if name == "integer":
        if isinstance(value, bool):
            return False
        return isinstance(value, int) or (isinstance(value, float) and value.is_integer())
    if name == "number":
        return isinstance(value, int | float) and not isinstance(value, bool)
    if name == "string":
        return isinstance(value, str)
    if name == "array":
        return isinstance(value, list)
    if name == "object":
        return isinstance(value, dict)
    return True  # an unknown type name: not ours to reject


def _equal(a: Any, b: Any) -> bool:
    """JSON equality: 1 == 1.0, but True != 1 and "1" != 1."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, int | float) and isinstance(b, int | float):
        return a == b
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    return type(a) is type(b) and a == b


@lru_cache(maxsize=256)
def _pattern(source: str) -> re.Pattern[str] | None:
    try:
        return re.compile(source)
    except re.error:
        return None  # a pattern Python cannot compile is ignored, like an unknown keyword


def _resolve(root: Any, ref: str) -> Any:
    if not ref.startswith("#"):
        return True  # remote references are not fetched: accept
    node = root
    for part in ref[1:].split("/")[1:] if ref != "#" else ():
        part = part.replace("~1", "/").replace("~0", "~")
        if isinstance(node, Mapping) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return None
    return node


def _check(value: Any, schema: Any, path: str, root: Any, errors: list[str], limit: int, depth: int) -> None:
    if len(errors) >= limit:
        return
    if schema is True or schema is None or (isinstance(schema, Mapping) and not schema):
        return
    if schema is False:
        errors.append(f"{path}: no value is allowed here")
        return
    if not isinstance(schema, Mapping):
        return
    if "$ref" in schema:
        if depth >= _MAX_DEPTH:
            errors.append(f"{path}: $ref nesting deeper than {_MAX_DEPTH}")
            return
        target = _resolve(root, str(schema["$ref"]))
        if target is None:
            errors.append(f"{path}: $ref {schema['$ref']!r} does not resolve")
            return
        _check(value, target, path, root, errors, limit, depth + 1)
    kind = schema.get("type")
    if kind is not None:
        names = kind if isinstance(kind, list) else [kind]
        if not any(_is(value, n) for n in names if isinstance(n, str)):
            expected = " or ".join(str(n) for n in names)
            errors.append(f"{path}: expected {expected}, got {_type_name(value)}")
            return
    options = schema.get("enum")
    if isinstance(options, list) and not any(_equal(value, option) for option in options):
        errors.append(f"{path}: {_short(value)} is not one of {_short(options)}")
    if "const" in schema and not _equal(value, schema["const"]):
        errors.append(f"{path}: must be {_short(schema['const'])}")
    for keyword in ("anyOf", "oneOf"):
        alternatives = schema.get(keyword)
        if isinstance(alternatives, list) and alternatives:
            matches = sum(not _fails(value, o, root, depth) for o in alternatives)
            if matches == 0:
                errors.append(f"{path}: matches none of the {keyword} schemas")
            elif keyword == "oneOf" and matches > 1:
                errors.append(f"{path}: matches {matches} of the oneOf schemas, not exactly one")
    for sub in schema.get("allOf") or ():
        _check(value, sub, path, root, errors, limit, depth + 1)
    if isinstance(value, dict):
        _object(value, schema, path, root, errors, limit, depth)
    elif isinstance(value, list):
        _array(value, schema, path, root, errors, limit, depth)
    elif isinstance(value, str):
        _string(value, schema, path, errors)
    elif isinstance(value, int | float) and not isinstance(value, bool):
        _number(value, schema, path, errors)


def _fails(value: Any, schema: Any, root: Any, depth: int) -> bool:
    """Whether ``value`` breaks a sub-schema, resolving ``$ref`` against the whole document."""
    errors: list[str] = []
    _check(value, schema, "$", root, errors, 1, depth + 1)
    return bool(errors)


def _object(
    value: dict[str, Any],
    schema: Mapping[str, Any],
    path: str,
    root: Any,
    errors: list[str],
    limit: int,
    depth: int,
) -> None:
    properties = schema.get("properties")
    properties = properties if isinstance(properties, Mapping) else {}
    for name in schema.get("required") or ():
        if name not in value:
            errors.append(f"{path}: missing required property {name!r}")
    extra = schema.get("additionalProperties", True)
    for name, item in value.items():
        where = f"{path}.{name}" if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name) else f"{path}[{name!r}]"
        if name in properties:
            _check(item, properties[name], where, root, errors, limit, depth + 1)
        elif extra is False:
            errors.append(f"{path}: unexpected property {name!r}")
        elif isinstance(extra, Mapping):
            _check(item, extra, where, root, errors, limit, depth + 1)


def _array(
    value: list[Any],
    schema: Mapping[str, Any],
    path: str,
    root: Any,
    errors: list[str],
    limit: int,
    depth: int,
) -> None:
    low, high = schema.get("minItems"), schema.get("maxItems")
    if isinstance(low, int) and len(value) < low:
        errors.append(f"{path}: {len(value)} items, at least {low} required")
    if isinstance(high, int) and len(value) > high:
        errors.append(f"{path}: {len(value)} items, at most {high} allowed")
    prefix = schema.get("prefixItems")
    prefix = prefix if isinstance(prefix, list) else []
    for i, sub in enumerate(prefix[: len(value)]):
        _check(value[i], sub, f"{path}[{i}]", root, errors, limit, depth + 1)
    items = schema.get("items")
    if isinstance(items, Mapping | bool):
        for i in range(len(prefix), len(value)):
            _check(value[i], items, f"{path}[{i}]", root, errors, limit, depth + 1)


def _string(value: str, schema: Mapping[str, Any], path: str, errors: list[str]) -> None:
    low, high = schema.get("minLength"), schema.get("maxLength")
    if isinstance(low, int) and len(value) < low:
        errors.append(f"{path}: {len(value)} characters, at least {low} required")
    if isinstance(high, int) and len(value) > high:
        errors.append(f"{path}: {len(value)} characters, at most {high} allowed")
    source = schema.get("pattern")
    if isinstance(source, str):
        compiled = _pattern(source)
        if compiled is not None and compiled.search(value) is None:
            errors.append(f"{path}: {_short(value)} does not match {source!r}")


def _number(value: float, schema: Mapping[str, Any], path: str, errors: list[str]) -> None:
    checks = (
        ("minimum", lambda b: value >= b, "≥"),
        ("maximum", lambda b: value <= b, "≤"),
        ("exclusiveMinimum", lambda b: value > b, ">"),
        ("exclusiveMaximum", lambda b: value < b, "<"),
    )
    for keyword, holds, symbol in checks:
        bound = schema.get(keyword)
        if isinstance(bound, int | float) and not isinstance(bound, bool) and not holds(bound):
            errors.append(f"{path}: {value} is not {symbol} {bound}")
    step = schema.get("multipleOf")
    if isinstance(step, int | float) and not isinstance(step, bool) and step > 0:
        quotient = value / step
        if not math.isfinite(quotient) or abs(quotient - round(quotient)) > 1e-9 * max(1.0, abs(quotient)):
            errors.append(f"{path}: {value} is not a multiple of {step}")


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
