"""The request ledger: one append-only row per request, written off the hot path.

``open_ledger`` picks the backend from ``storage.ledger``: ``sqlite:///relative.db`` or
``sqlite:////absolute.db`` (embedded, the default), ``postgresql://…`` (shared by replicas; needs
``tierwise[postgres]``), or ``none`` (keeps nothing).
"""

from __future__ import annotations

from ..errors import ConfigError
from ._queue import SPILL_MAX_BYTES
from .base import Attempt, Feedback, Ledger, LedgerHealth, LedgerRow
from .null import NullLedger
from .sqlite import SqliteLedger

__all__ = [
    "Attempt",
    "Feedback",
    "Ledger",
    "LedgerHealth",
    "LedgerRow",
    "NullLedger",
    "SqliteLedger",
    "open_ledger",
    "safe_url",
]


def open_ledger(
    url: str,
    *,
    queue_size: int = 10000,
    spill_dir: str | None = None,
    spill_max_bytes: int = SPILL_MAX_BYTES,
    journal: bool = True,
) -> Ledger:
    """The ledger backend for ``url``, not yet started. ``spill_dir``: where rows wait while the store
    is unavailable (None: derived from ``url``, see SqliteLedger and PostgresLedger). ``journal``: each
    accepted row is first appended to a journal file there, so that a killed process loses none
    (``_journal.py``)."""
    if url.strip().lower() == "none":
        return NullLedger()
    scheme, sep, rest = url.partition("://")
    scheme = scheme.lower()
    if scheme == "sqlite" and sep:
        if not rest.startswith("/") or rest == "/":
            raise ConfigError(
                "storage.ledger: a SQLite URL is sqlite:///relative/path.db or sqlite:////absolute/path.db"
            )
        return SqliteLedger(
            rest[1:],
            queue_size=queue_size,
            spill_dir=spill_dir,
            spill_max_bytes=spill_max_bytes,
            journal=journal,
        )
    if scheme in ("postgresql", "postgres") and sep:
        try:
            import asyncpg  # noqa: F401  (only the PostgreSQL ledger needs it)
        except ImportError:
            raise ConfigError(
                "storage.ledger: PostgreSQL needs asyncpg: pip install 'tierwise[postgres]'"
            ) from None
        from .postgres import PostgresLedger

        return PostgresLedger(
            url,
            queue_size=queue_size,
            spill_dir=spill_dir,
            spill_max_bytes=spill_max_bytes,
            journal=journal,
        )
    # Only the scheme is echoed: the rest of the URL may carry a password.
    got = f"unsupported scheme '{scheme}://'" if sep else "not a URL"
    raise ConfigError(f"storage.ledger: {got}; use sqlite:///path.db, postgresql://host/db or none")


def safe_url(url: str) -> str:
    """A storage URL without its credentials, for logs, reports and artefacts."""
    scheme, sep, rest = url.partition("://")
    return f"{scheme}://{rest.rpartition('@')[2]}" if sep else url
