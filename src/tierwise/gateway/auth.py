"""Reading the caller's key from HTTP headers: ``Authorization: Bearer …`` (the openai SDKs) or
``x-api-key`` (the anthropic SDK). What a key grants is decided in ``access/``."""

from __future__ import annotations

from collections.abc import Mapping

from ..access import Principal
from ..router import Router


def presented_key(headers: Mapping[str, str]) -> str | None:
    """The secret the client sent, or None."""
    auth = headers.get("Authorization")
    if auth:
        scheme, _, value = auth.strip().partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    key = headers.get("x-api-key")
    return key.strip() if key and key.strip() else None


async def principal(router: Router, headers: Mapping[str, str]) -> Principal | None:
    """The caller's Principal with ``auth.mode: keys`` (AccessDenied when the key is missing, unknown
    or revoked); None with ``auth.mode: none``, where any client is served unmetered."""
    if not router.access.required:
        return None
    return await router.access.authenticate(presented_key(headers))
