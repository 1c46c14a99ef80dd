"""Budget periods, rate-limit windows and the cost a reservation holds.

Periods are UTC calendar days and months; rate-limit windows are fixed wall-clock minutes. Every
replica computes the same counter names from its clock, so they meet in the state store without
coordination (clocks a second apart only move a request into the next window).
"""

from __future__ import annotations

import calendar
import time
from dataclasses import dataclass

from ..config import ModelEntry
from ..features import Features

# Budget counters outlive their period a little, so a late settlement still lands and can be read.
_PERIOD_GRACE_S = 2 * 86_400.0
_WINDOW_S = 60.0


@dataclass(frozen=True, slots=True)
class Period:
    """One budget period or rate-limit window: its id (part of the counter's name) and end."""

    label: str  # "daily", "monthly", "minute"
    id: str
    ends: float  # unix time

    def ttl_s(self, now: float) -> float:
        grace = _WINDOW_S if self.label == "minute" else _PERIOD_GRACE_S
        return max(1.0, self.ends - now + grace)


def day(now: float) -> Period:
    t = time.gmtime(now)
    start = calendar.timegm((t.tm_year, t.tm_mon, t.tm_mday, 0, 0, 0))
    return Period("daily", time.strftime("%Y%m%d", t), start + 86_400.0)


def month(now: float) -> Period:
    t = time.gmtime(now)
    year, mon = (t.tm_year + 1, 1) if t.tm_mon == 12 else (t.tm_year, t.tm_mon + 1)
    return Period("monthly", time.strftime("%Y%m", t), float(calendar.timegm((year, mon, 1, 0, 0, 0))))


def minute(now: float) -> Period:
    index = int(now // _WINDOW_S)
    return Period("minute", str(index), (index + 1) * _WINDOW_S)


def output_tokens(features: Features, model: ModelEntry, default: int) -> int:
    """Output tokens a request may produce: its max_tokens, else the model's cap, else ``default``."""
    return features.max_output_tokens or model.max_output_tokens or default


def estimate_usd(features: Features, model: ModelEntry, default_output: int) -> float:
    """What one call of ``model`` may cost: the input estimate and the most output it may produce."""
    return model.cost(features.input_tokens, output_tokens(features, model, default_output))
