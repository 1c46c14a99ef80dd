"""What an evaluated policy is (:class:`EvalPolicy`) and what it did on a set of prompts (:class:`Routing`).

Shared by the policies (``baselines.py``, ``policies.py``, ``learned.py``) and the report (``run.py``), so it
sits below all of them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from .fleet import EvalFleet
from .records import EvalDataset
from .replay import Matrices


@dataclass(slots=True)
class Routing:
    """What a policy did on a set of prompts: a fleet index per prompt, or a score per prompt."""

    choice: np.ndarray | None = None  # fleet index per prompt (−1: could not be served)
    scores: np.ndarray | None = None  # "send to strongest" score per prompt
    version: str = ""  # the policy version (rules configs) for the report
    details: dict[str, object] | None = None
    extra_cost: np.ndarray | None = None  # USD per prompt besides its answer: a cascade's rejected calls
    sweep: list[tuple[np.ndarray, np.ndarray]] | None = None  # a cascade's curve: (choice, extra_cost)s


class EvalPolicy(Protocol):
    name: str

    def fleet(self, dataset: EvalDataset) -> EvalFleet: ...

    def fit(self, train: EvalDataset, data: Matrices) -> None: ...

    def route(self, dataset: EvalDataset, data: Matrices) -> Routing: ...
