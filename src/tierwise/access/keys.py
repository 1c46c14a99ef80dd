"""Virtual keys: generated, hashed, stored, looked up and revoked.

A key's secret is ``tw-`` and 43 URL-safe characters (32 random bytes). Only its SHA-256 is stored: the
secret carries 256 bits of entropy, so no guessing attack can reverse the hash, and a slow password hash
(bcrypt, scrypt) would cost milliseconds of CPU on every request for no added safety. The id (``key_…``)
is what logs, the ledger and error messages show.

Keys come from two places: ``keys:`` in the config (fixed, revocable through the state store) and keys
created at run time (``tierwise keys create``, ``POST /admin/keys``), kept in the state store so every
replica sees them and their revocation at once.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
from dataclasses import dataclass
from typing import Any

import orjson
from pydantic import ValidationError

from ..config import Config, Grants
from ..errors import AccessDenied, RequestError
from ..state import State

SECRET_PREFIX = "tw-"
_CACHE_SIZE = 4096
_KEY_ID = re.compile(r"[A-Za-z0-9_.-]{1,64}")  # as config keys' ids: safe in logs and state keys
# What a record shows of its grants: a config key's grants are its KeyConfig, which also holds its hash.
_GRANT_FIELDS = frozenset(Grants.model_fields)


def hash_secret(secret: str) -> str:
    """``sha256:<hex>`` of a key's secret: what is stored and compared, never the secret."""
    return "sha256:" + hashlib.sha256(secret.encode()).hexdigest()


def new_secret() -> str:
    return SECRET_PREFIX + secrets.token_urlsafe(32)


@dataclass(frozen=True, slots=True)
class KeyRecord:
    """A virtual key without its secret: id, tenant, grants, and where it was declared."""

    id: str
    tenant: str
    hash: str
    grants: Grants
    source: str  # "config" or "state"
    created: float | None = None
    revoked: bool = False

    def to_json(self) -> dict[str, Any]:
        """The record as the admin API and CLI show it: no hash, no secret."""
        return {
            "id": self.id,
            "tenant": self.tenant,
            "source": self.source,
            "created": self.created,
            "revoked": self.revoked,
            **self.grants.model_dump(mode="json", include=_GRANT_FIELDS, exclude_defaults=True),
        }

    def dumps(self) -> str:
        return orjson.dumps(
            {
                "id": self.id,
                "tenant": self.tenant,
                "hash": self.hash,
                "created": self.created,
                "revoked": self.revoked,
                "grants": self.grants.model_dump(mode="json", include=_GRANT_FIELDS, exclude_defaults=True),
            }
        ).decode()

    @classmethod
    def loads(cls, text: str) -> KeyRecord:
        doc = orjson.loads(text)
        return cls(
            id=doc["id"],
            tenant=doc["tenant"],
            hash=doc["hash"],
            grants=Grants.model_validate(doc.get("grants") or {}),
            source="state",
            created=doc.get("created"),
            revoked=bool(doc.get("revoked")),
        )


class Keys:
    """The keys of one config and state store: look up a presented secret, create, list, revoke."""

    def __init__(self, config: Config, state: State) -> None:
        self.config = config
        self.state = state
        self._by_hash = {
            k.hash: KeyRecord(k.id, k.tenant, k.hash, k, "config")  # a KeyConfig is its own Grants
            for k in config.keys
        }
        self._by_id = {r.id: r for r in self._by_hash.values()}
        self._parsed: dict[str, KeyRecord] = {}  # stored record text -> parsed, so a request parses none

    async def lookup(self, secret: str) -> KeyRecord:
        """The live key for ``secret``. Raises AccessDenied (401) for an unknown or revoked key, and
        StateUnavailable when a stored key cannot be checked."""
        digest = hash_secret(secret)
        record = self._by_hash.get(digest)
        if record is not None:
            if await self.state.is_revoked(record.id):
                raise AccessDenied(f"the API key {record.id} has been revoked")
        else:
            text = await self.state.key_by_hash(digest)
            if text is None:
                raise AccessDenied("invalid API key: no such key; send a tierwise virtual key")
            record = self._parse(text)
            if record.revoked:
                raise AccessDenied(f"the API key {record.id} has been revoked")
        # Found by the secret's digest, so the lookup's timing tells nothing about the secret itself;
        # confirmed in constant time all the same.
        if not hmac.compare_digest(record.hash, digest):
            raise AccessDenied("invalid API key: no such key; send a tierwise virtual key")
        return record

    async def create(
        self, tenant: str, *, key_id: str | None = None, grants: dict[str, Any] | None = None
    ) -> tuple[KeyRecord, str]:
        """Create and store a key of ``tenant``; return its record and its secret (shown once)."""
        if tenant not in self.config.tenants:
            raise RequestError(
                f"tenant: unknown tenant {tenant!r}; "
                f"tenants: {', '.join(sorted(self.config.tenants)) or 'none'}",
                param="tenant",
                status=404,
                code="tenant_not_found",
            )
        try:
            parsed = Grants.model_validate(grants or {})
        except ValidationError as exc:
            first = exc.errors(include_url=False)[0]
            where = ".".join(str(p) for p in first["loc"])
            raise RequestError(f"{where}: {first['msg']}", param=where) from None
        key_id = key_id or "key_" + secrets.token_hex(6)
        if not _KEY_ID.fullmatch(key_id):
            raise RequestError(
                "id: 1 to 64 letters, digits, '_', '.' or '-'", param="id", code="invalid_key_id"
            )
        if key_id in self._by_id or await self.state.get_key(key_id) is not None:
            raise RequestError(
                f"id: a key {key_id!r} exists already", param="id", status=409, code="key_exists"
            )
        errors = self.config.grant_errors(parsed)
        if errors:
            raise RequestError("; ".join(errors))
        secret = new_secret()
        record = KeyRecord(key_id, tenant, hash_secret(secret), parsed, "state", created=time.time())
        await self.state.put_key(record.id, record.hash, record.dumps())
        return record, secret

    async def find(self, key_or_id: str) -> KeyRecord:
        """A key by its id or its secret, revoked or not. RequestError 404 when there is none."""
        record = self._by_hash.get(hash_secret(key_or_id)) or self._by_id.get(key_or_id)
        if record is not None:
            if await self.state.is_revoked(record.id):
                record = _revoked(record)
            return record
        text = await self.state.key_by_hash(hash_secret(key_or_id)) or await self.state.get_key(key_or_id)
        if text is None:
            # Never echo the argument: it may be a secret.
            raise RequestError(
                "no such key (give its id or the key itself)", status=404, code="key_not_found"
            )
        return self._parse(text)

    async def all(self) -> list[KeyRecord]:
        """Every key, config keys first, with its revocation state."""
        out = []
        for record in self._by_id.values():
            out.append(_revoked(record) if await self.state.is_revoked(record.id) else record)
        out += sorted((self._parse(t) for t in await self.state.list_keys()), key=lambda r: r.id)
        return out

    async def revoke(self, key_or_id: str) -> KeyRecord:
        """Revoke a key for every replica at once; return its record."""
        record = await self.find(key_or_id)
        if record.source == "state":
            record = _revoked(record)
            await self.state.put_key(record.id, record.hash, record.dumps())
        await self.state.revoke(record.id)
        return _revoked(record)

    def _parse(self, text: str) -> KeyRecord:
        record = self._parsed.get(text)
        if record is None:
            if len(self._parsed) >= _CACHE_SIZE:
                self._parsed.clear()
            record = self._parsed[text] = KeyRecord.loads(text)
        return record


def _revoked(record: KeyRecord) -> KeyRecord:
    return KeyRecord(
        record.id, record.tenant, record.hash, record.grants, record.source, record.created, True
    )
