"""How long to wait before trying again: the one backoff of tierwise (upstream retries, ledger writes)."""

from __future__ import annotations

from collections.abc import Callable


def backoff_s(tries: int, *, base: float, cap: float, jitter: Callable[[], float] | None = None) -> float:
    """Seconds to wait after ``tries`` failed tries (1 after the first): ``base`` doubling per try, at
    most ``cap``. With ``jitter`` (a ``random.random``), spread over 0.5–1.5× so that clients that failed
    together do not retry together."""
    delay = min(cap, base * 2 ** max(0, tries - 1))
    return delay * (0.5 + jitter()) if jitter is not None else delay
