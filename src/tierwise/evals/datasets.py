"""Evaluation datasets by name or path: real prompts × models → score, tokens, cost (:class:`EvalDataset`).

``load_dataset(name_or_path, *, data_dir=None)`` reads one of the benchmarks below by name, or a file of
your own in the generic format (``evals/generic.py``). Errors are :class:`~tierwise.errors.DatasetError`,
naming the file, the row and the column.

Benchmarks (shipped with tierwise, Apache-2.0; see ``tierwise/data/*/README.md``)
    ``routellm-mmlu``    14,037 MMLU questions (14,042 less 5 contaminated), 57 subjects as categories;
                         Mixtral-8x7B vs GPT-4-1106, correct = 1.0, wrong = 0.0.
    ``routellm-gsm8k``   1,307 grade-school maths problems (1,319 less 12), same two models, with answers.
    ``routellm-mtbench`` 72 MT-Bench questions (80 less 8), routed on the first turn, scored by GPT-4's
                         1–10 grade averaged over both turns, / 10.
    ``arena-bench-v1``   300 Chatbot-Arena prompts, 15 models, GPT-4 grades 1–10, / 10.

The three RouteLLM sets are read by ``evals/routellm.py``, arena-bench-v1 by ``evals/arena.py``. With
``data_dir``, a benchmark is read from its original files in that folder instead of the shipped copy
(see those modules).
"""

from __future__ import annotations

import os
from pathlib import Path

from ..arena_data import BUILTIN as ARENA
from ..errors import DatasetError
from .arena import load_arena_bench
from .generic import load_generic
from .records import EvalDataset
from .routellm import SETS as ROUTELLM
from .routellm import load_routellm

KNOWN: tuple[str, ...] = (*ROUTELLM, ARENA)


def load_dataset(name_or_path: str, *, data_dir: str | os.PathLike[str] | None = None) -> EvalDataset:
    """A benchmark by name (``KNOWN``), or a file in the generic format (see ``evals/generic.py``).

    ``data_dir`` applies to the named benchmarks only: read their original files from that folder.
    """
    if name_or_path in ROUTELLM:
        return load_routellm(name_or_path, data_dir=data_dir)
    if name_or_path == ARENA:
        return load_arena_bench(data_dir=data_dir)
    path = Path(name_or_path)
    if path.is_file():
        return load_generic(path)
    if path.exists():
        raise DatasetError(f"{name_or_path}: is a folder; give a dataset file or one of: {', '.join(KNOWN)}")
    raise DatasetError(
        f"unknown dataset {name_or_path!r}: neither a known name ({', '.join(KNOWN)}) nor an existing file"
    )
