"""Shared counters: per-model cooldowns (the circuit breaker), spend, budgets, rate limits and keys.

``open_state`` picks the backend from ``storage.state``: ``memory://`` (one process, the default) or
``redis://…`` / ``rediss://…`` (shared by replicas; needs ``tierwise[redis]``).
"""

from __future__ import annotations

from ..errors import ConfigError
from .base import Admission, Counter, State
from .memory import MemoryState

__all__ = ["Admission", "Counter", "MemoryState", "State", "open_state"]


def open_state(url: str) -> State:
    """The state backend for ``url``."""
    scheme, sep, _ = url.partition("://")
    scheme = scheme.lower()
    if scheme == "memory" and sep:
        return MemoryState()
    if scheme in ("redis", "rediss") and sep:
        try:
            import redis  # noqa: F401  (only the Redis state needs it)
        except ImportError:
            raise ConfigError(
                "storage.state: Redis needs the redis package: pip install 'tierwise[redis]'"
            ) from None
        from .redis import RedisState

        return RedisState(url)
    # Only the scheme is echoed: the rest of the URL may carry a password.
    got = f"unsupported scheme '{scheme}://'" if sep else "not a URL"
    raise ConfigError(f"storage.state: {got}; use memory:// or redis://host:port/db")
