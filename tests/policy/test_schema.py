"""The JSON-Schema subset validator: a table of structured-output cases, and properties over any JSON."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tierwise.policy.schema import schema_errors

PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "minLength": 1},
        "age": {"type": "integer", "minimum": 0},
        "email": {"type": ["string", "null"]},
        "role": {"enum": ["admin", "user"]},
        "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 3},
        "address": {"$ref": "#/$defs/address"},
    },
    "required": ["name", "age", "email"],
    "additionalProperties": False,
    "$defs": {
        "address": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "zip": {"type": "string", "pattern": "^[0-9]{5}$"}},
            "required": ["city"],
            "additionalProperties": False,
        }
    },
}
TREE = {  # recursive, as structured outputs allow
    "$defs": {
        "node": {
            "type": "object",
            "properties": {
                "value": {"type": "number"},
                "children": {"type": "array", "items": {"$ref": "#"}},
            },
            "required": ["value"],
        }
    },
    "$ref": "#/$defs/node",
}


@pytest.mark.parametrize(
    ("value", "schema", "errors"),
    [
        ({"name": "Ada", "age": 36, "email": None}, PERSON, []),
        ({"name": "Ada", "age": 36, "email": "a@b.c", "role": "admin", "tags": ["x"]}, PERSON, []),
        ({"name": "Ada", "age": 36.0, "email": None}, PERSON, []),  # 36.0 is an integer in JSON Schema
        ({"name": "Ada", "age": "36", "email": None}, PERSON, ["$.age: expected integer, got string"]),
        ({"name": "Ada", "age": True, "email": None}, PERSON, ["$.age: expected integer, got boolean"]),
        ({"name": "Ada", "age": 36}, PERSON, ["$: missing required property 'email'"]),
        ({"name": "Ada", "age": 36, "email": None, "x": 1}, PERSON, ["$: unexpected property 'x'"]),
        (
            {"name": "", "age": -1, "email": None},
            PERSON,
            ["$.name: 0 characters, at least 1 required", "$.age: -1 is not ≥ 0"],
        ),
        (
            {"name": "A", "age": 1, "email": None, "role": "root"},
            PERSON,
            ["$.role: 'root' is not one of ['admin', 'user']"],
        ),
        (
            {"name": "A", "age": 1, "email": None, "tags": ["a", 2]},
            PERSON,
            ["$.tags[1]: expected string, got integer"],
        ),
        (
            {"name": "A", "age": 1, "email": None, "tags": ["a"] * 4},
            PERSON,
            ["$.tags: 4 items, at most 3 allowed"],
        ),
        (
            {"name": "A", "age": 1, "email": None, "address": {"city": "Oslo", "zip": "1234"}},
            PERSON,
            ["$.address.zip: '1234' does not match '^[0-9]{5}$'"],
        ),
        (
            {"name": "A", "age": 1, "email": None, "address": {}},
            PERSON,
            ["$.address: missing required property 'city'"],
        ),
        ([1, 2], PERSON, ["$: expected object, got array"]),
        ({"value": 1, "children": [{"value": 2, "children": [{"value": 3}]}]}, TREE, []),
        (
            {"value": 1, "children": [{"value": "2"}]},
            TREE,
            ["$.children[0].value: expected number, got string"],
        ),
        (3, {"anyOf": [{"type": "string"}, {"type": "integer"}]}, []),
        (3.5, {"anyOf": [{"type": "string"}, {"type": "integer"}]}, ["$: matches none of the anyOf schemas"]),
        (
            3,
            {"oneOf": [{"type": "number"}, {"type": "integer"}]},
            ["$: matches 2 of the oneOf schemas, not exactly one"],
        ),
        (1, {"const": 1.0}, []),
        (True, {"const": 1}, ["$: must be 1"]),
        (7, {"multipleOf": 3}, ["$: 7 is not a multiple of 3"]),
        (0.3, {"multipleOf": 0.1}, []),
        (5, {"exclusiveMaximum": 5}, ["$: 5 is not < 5"]),
        ("x", True, []),
        ("x", False, ["$: no value is allowed here"]),
        ("anything", {"format": "email", "description": "unknown keywords are ignored"}, []),
        (
            {"a b": 1},
            {"additionalProperties": {"type": "string"}},
            ["$['a b']: expected string, got integer"],
        ),
        (
            [1, "a"],
            {"prefixItems": [{"type": "integer"}, {"type": "integer"}]},
            ["$[1]: expected integer, got string"],
        ),
        (1, {"$ref": "#/$defs/missing"}, ["$: $ref '#/$defs/missing' does not resolve"]),
    ],
)
def test_schema_errors(value: Any, schema: Any, errors: list[str]) -> None:
    assert schema_errors(value, schema) == errors


def test_errors_are_capped_and_self_reference_terminates() -> None:
    wide = {"type": "object", "properties": {k: {"type": "string"} for k in "abcdefgh"}}
    assert len(schema_errors(dict.fromkeys("abcdefgh", 1), wide)) == 5
    loop = {"$defs": {"a": {"$ref": "#/$defs/a"}}, "$ref": "#/$defs/a"}
    assert schema_errors(1, loop) == ["$: $ref nesting deeper than 64"]


# -- properties ---------------------------------------------------------------------------------------

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4)
    ),
    max_leaves=20,
)


def infer(value: Any) -> dict[str, Any]:
    """The strictest schema of the subset that ``value`` satisfies, as structured outputs write them."""
    if value is None:
        return {"type": "null"}
    if isinstance(value, bool):
        return {"type": "boolean", "enum": [value]}
    if isinstance(value, int | float):
        return {"type": "number", "minimum": value, "maximum": value}
    if isinstance(value, str):
        return {"type": "string", "minLength": len(value), "maxLength": len(value), "enum": [value]}
    if isinstance(value, list):
        return {
            "type": "array",
            "items": {"anyOf": [infer(v) for v in value]} if value else False,
            "minItems": len(value),
            "maxItems": len(value),
        }
    return {
        "type": "object",
        "properties": {k: infer(v) for k, v in value.items()},
        "required": list(value),
        "additionalProperties": False,
    }


@settings(max_examples=300, deadline=None)
@given(json_values)
def test_a_value_satisfies_the_schema_inferred_from_it(value: Any) -> None:
    assert schema_errors(value, infer(value)) == []


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.text(min_size=1, max_size=6), json_values, min_size=1, max_size=4), st.data())
def test_removing_adding_or_retyping_a_property_is_an_error(obj: dict[str, Any], data: st.DataObject) -> None:
    schema = infer(obj)
    key = data.draw(st.sampled_from(sorted(obj)))
    missing = {k: v for k, v in obj.items() if k != key}
    assert f"$: missing required property {key!r}" in schema_errors(missing, schema, limit=50)
    new = key + "\x00"
    while new in obj:
        new += "\x00"
    extra = {**obj, new: 1}
    assert schema_errors(extra, schema, limit=50) != []
    retyped = {**obj, key: [obj[key]] if not isinstance(obj[key], list) else "not a list"}
    assert schema_errors(retyped, schema, limit=50) != []


@given(st.one_of(st.text(), st.none()), st.integers() | st.booleans() | st.lists(st.none(), max_size=2))
def test_nullable_by_type_list(accepted: str | None, rejected: Any) -> None:
    nullable = {"type": ["string", "null"]}
    assert schema_errors(accepted, nullable) == []
    assert schema_errors(rejected, nullable) != []
