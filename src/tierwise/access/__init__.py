"""Who may call, what they may use and how much they may spend.

``keys.py`` turns a presented secret into a key record (config or state store, hashed, revocable);
``budget.py`` has the periods, counters and cost estimate; ``control.py`` is what the Router calls:
authenticate, admit (rate limits, budget standing → the downgrade signal), reserve and settle.
"""

from __future__ import annotations

from .control import Access, Principal, Reservation
from .keys import KeyRecord, Keys, hash_secret

__all__ = ["Access", "KeyRecord", "Keys", "Principal", "Reservation", "hash_secret"]
