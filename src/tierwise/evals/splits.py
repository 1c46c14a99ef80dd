"""Train/test splits that never put one prompt on both sides.

``kfold`` shuffles with a fixed seed and cuts k folds. ``group_folds`` holds out whole groups (MMLU
subjects, task categories) so a router is tested on a kind of prompt it never saw: the
distribution-shift split. Prompts are identified by their text, so a prompt that appears twice in a
dataset (it happens in MMLU) always lands in one fold.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

Split = tuple[np.ndarray, np.ndarray]  # (train indices, test indices)


def _units(keys: Sequence[str]) -> tuple[list[str], dict[str, list[int]]]:
    members: dict[str, list[int]] = {}
    for i, key in enumerate(keys):
        members.setdefault(key, []).append(i)
    return list(members), members


def _folds(units: list[str], members: dict[str, list[int]], k: int, seed: int) -> list[Split]:
    if k < 2:
        raise ValueError(f"k must be at least 2, got {k}")
    if len(units) < k:
        raise ValueError(f"cannot make {k} folds from {len(units)} distinct units")
    order = np.random.default_rng(seed).permutation(len(units))
    n = sum(len(v) for v in members.values())
    splits = []
    for fold in range(k):
        test_units = [units[j] for j in order[fold::k]]
        test = np.array(sorted(i for u in test_units for i in members[u]), dtype=np.int64)
        mask = np.ones(n, dtype=bool)
        mask[test] = False
        splits.append((np.flatnonzero(mask), test))
    return splits


def kfold(prompts: Sequence[str], k: int = 5, *, seed: int = 0) -> list[Split]:
    """k folds over distinct prompt texts, shuffled with ``seed``."""
    units, members = _units(prompts)
    return _folds(units, members, k, seed)


def group_folds(
    prompts: Sequence[str], groups: Sequence[str | None], k: int = 5, *, seed: int = 0
) -> list[Split]:
    """k folds over whole groups: every prompt of a held-out group is in the test fold.

    A prompt text found in several groups is kept with the first group it appears in, so no text is
    on both sides.
    """
    owner: dict[str, str] = {}
    keys = []
    for prompt, group in zip(prompts, groups, strict=True):
        keys.append(owner.setdefault(prompt, group or "(none)"))
    units, members = _units(keys)
    return _folds(units, members, k, seed)
