"""Splits never put one prompt on both sides, and are fixed by their seed."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tierwise.evals.splits import group_folds, kfold


@given(st.lists(st.sampled_from([f"p{i}" for i in range(30)]), min_size=10, max_size=200), st.integers(2, 5))
def test_kfold_partitions_by_prompt_text(prompts: list[str], k: int) -> None:
    if len(set(prompts)) < k:
        with pytest.raises(ValueError):
            kfold(prompts, k)
        return
    folds = kfold(prompts, k, seed=1)
    tests = np.concatenate([test for _, test in folds])
    assert sorted(tests.tolist()) == list(range(len(prompts)))  # every prompt tested exactly once
    for train, test in folds:
        assert {prompts[i] for i in train}.isdisjoint({prompts[i] for i in test})


def test_seed_fixes_the_folds() -> None:
    prompts = [f"q{i}" for i in range(50)]
    a, b, c = kfold(prompts, 5, seed=7), kfold(prompts, 5, seed=7), kfold(prompts, 5, seed=8)
    assert all(np.array_equal(x[1], y[1]) for x, y in zip(a, b, strict=True))
    assert any(not np.array_equal(x[1], y[1]) for x, y in zip(a, c, strict=True))


def test_group_folds_hold_out_whole_groups_and_shared_texts() -> None:
    prompts = ["a", "b", "c", "d", "a", "e", "f", "g"]
    groups = ["x", "x", "y", "y", "z", "z", "w", "w"]  # "a" appears in x and z: it stays with x
    for train, test in group_folds(prompts, groups, 2, seed=0):
        train_groups = {groups[i] for i in train}
        test_groups = {groups[i] for i in test if prompts[i] != "a"}
        assert train_groups.isdisjoint(test_groups) or "z" in train_groups & test_groups
        assert {prompts[i] for i in train}.isdisjoint({prompts[i] for i in test})
