"""How a LedgerRow maps to table columns, shared by the SQLite and PostgreSQL backends.

The scalar fields are one column each; features, decision, attempts and the captured prompt are JSON
columns. ``prompt`` is nullable (NULL when prompts are not captured) and was added in schema version 2.
"""

from __future__ import annotations

from typing import Any

import orjson

from .base import Attempt, LedgerRow

# Scalar fields, in column order; the JSON columns follow them.
SCALAR_COLUMNS: tuple[str, ...] = (
    "id",
    "ts",
    "requested_model",
    "stream",
    "policy_version",
    "status",
    "http_status",
    "final_model",
    "tier",
    "input_tokens",
    "output_tokens",
    "cost_usd",
    "counterfactual_cost_usd",
    "latency_ms",
    "ttft_ms",
    "error",
    "key_id",
)
# ``prompt`` last: tables created by schema version 1 gain it with ALTER TABLE … ADD COLUMN, which
# appends, so a migrated table and a new one have their columns in the same order.
JSON_COLUMNS: tuple[str, ...] = ("features", "decision", "attempts", "prompt")
COLUMNS: tuple[str, ...] = SCALAR_COLUMNS + JSON_COLUMNS

_ATTEMPT_FIELDS: tuple[str, ...] = tuple(Attempt.__dataclass_fields__)
_ROW_FIELDS: frozenset[str] = frozenset(LedgerRow.__dataclass_fields__)
# Deeper than this, a value in a dead letter is replaced by TOO_DEEP (orjson stops at 254 levels).
_MAX_DEPTH = 200
TOO_DEEP = "<nested too deep: cut>"
_INT_MIN, _INT_MAX = -(1 << 63), (1 << 64) - 1  # what orjson encodes


def _fallback(obj: Any) -> Any:
    # A feature value orjson cannot encode must not stall the writer on a batch that can never be
    # written: sets become lists, anything else its str().
    if isinstance(obj, set | frozenset):
        return sorted(obj, key=str)
    return str(obj)


def dumps(obj: Any) -> bytes:
    """JSON-encode a features/decision/attempts/prompt value. Odd values (sets, paths …) are converted;
    what JSON cannot hold at all (an int beyond 64 bits, nesting past orjson's limit) raises TypeError."""
    return orjson.dumps(obj, default=_fallback, option=orjson.OPT_NON_STR_KEYS)


def row_to_json(row: LedgerRow) -> bytes:
    """One spill line: the whole row as JSON, newline-terminated. Raises (TypeError) for a row JSON
    cannot hold: an int beyond 64 bits, nesting deeper than orjson allows."""
    return orjson.dumps(row, default=_fallback, option=orjson.OPT_NON_STR_KEYS | orjson.OPT_APPEND_NEWLINE)


def row_from_json(line: bytes) -> LedgerRow:
    """The row of one spill line; fields this version does not know are ignored."""
    data = orjson.loads(line)
    attempts = attempts_from_json(data.pop("attempts", None))
    return LedgerRow(**{k: v for k, v in data.items() if k in _ROW_FIELDS}, attempts=attempts)


def lenient(value: Any, depth: int = 0) -> Any:
    """``value`` made encodable as far as it can be, for a dead letter: ints beyond 64 bits become
    strings, anything nested deeper than _MAX_DEPTH becomes TOO_DEEP, other odd values their str()."""
    if value is None or isinstance(value, str | bool | float):
        return value
    if isinstance(value, int):
        return value if _INT_MIN <= value <= _INT_MAX else str(value)
    if depth >= _MAX_DEPTH:
        return TOO_DEEP
    if isinstance(value, dict):
        return {k if isinstance(k, str) else str(k): lenient(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [lenient(v, depth + 1) for v in value]
    if isinstance(value, LedgerRow | Attempt):
        return {name: lenient(getattr(value, name), depth + 1) for name in value.__dataclass_fields__}
    return str(value)


def attempts_to_json(attempts: list[Attempt]) -> list[dict[str, Any]]:
    return [{name: getattr(a, name) for name in _ATTEMPT_FIELDS} for a in attempts]


def attempts_from_json(items: list[dict[str, Any]] | None) -> list[Attempt]:
    # Keys this version does not know (written by a newer one) are ignored rather than fatal.
    return [Attempt(**{k: v for k, v in item.items() if k in _ATTEMPT_FIELDS}) for item in items or ()]


def row_values(row: LedgerRow) -> tuple[Any, ...]:
    """The row's scalar column values, in SCALAR_COLUMNS order."""
    return (
        row.id,
        row.ts,
        row.requested_model,
        row.stream,
        row.policy_version,
        row.status,
        row.http_status,
        row.final_model,
        row.tier,
        row.input_tokens,
        row.output_tokens,
        row.cost_usd,
        row.counterfactual_cost_usd,
        row.latency_ms,
        row.ttft_ms,
        row.error,
        row.key_id,
    )


def build_row(scalars: Any, features: Any, decision: Any, attempts: Any, prompt: Any) -> LedgerRow:
    """Rebuild a LedgerRow from scalar values in SCALAR_COLUMNS order and decoded JSON values; a NULL
    prompt (not captured, or a row written before the column existed) stays None."""
    (
        id_,
        ts,
        requested_model,
        stream,
        policy_version,
        status,
        http_status,
        final_model,
        tier,
        input_tokens,
        output_tokens,
        cost_usd,
        counterfactual_cost_usd,
        latency_ms,
        ttft_ms,
        error,
        key_id,
    ) = scalars
    return LedgerRow(
        id=id_,
        ts=ts,
        requested_model=requested_model,
        stream=bool(stream),
        features=features if features is not None else {},
        decision=decision if decision is not None else {},
        policy_version=policy_version,
        status=status,
        http_status=http_status,
        final_model=final_model,
        tier=tier,
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        cost_usd=cost_usd,
        counterfactual_cost_usd=counterfactual_cost_usd,
        latency_ms=latency_ms,
        ttft_ms=ttft_ms,
        error=error,
        key_id=key_id,
        attempts=attempts_from_json(attempts),
        prompt=prompt,
    )
