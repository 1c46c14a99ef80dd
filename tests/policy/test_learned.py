"""policy/learned.py: the threshold rule, target → threshold, and choose() on hand-made arrays."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tierwise.features import Features, extract_features
from tierwise.policy.learned import (
    STRUCTURAL,
    Calibration,
    LearnedRouter,
    LinearScorer,
    encode,
    route_many,
    structural,
    threshold_for,
)

DEMO = str(Path(__file__).resolve().parents[2] / "examples" / "demo.yaml")

# Predicted quality of [cheap, mid, reference] for four requests.
QUALITY = np.array(
    [
        [0.90, 0.92, 0.95],  # cheap is within 0.05 of the reference
        [0.50, 0.88, 0.95],  # only mid is close
        [0.10, 0.20, 0.95],  # nothing is close
        [0.99, 0.50, 0.60],  # cheap predicted better than the reference: a negative gap
    ]
)


@pytest.mark.parametrize(
    ("threshold", "expected"),
    [
        (0.10, [0, 1, 2, 0]),
        (0.04, [1, 2, 2, 0]),
        (-1.0, [2, 2, 2, 2]),
        (1.0, [0, 0, 0, 0]),
        (0.45, [0, 0, 2, 0]),
    ],
)
def test_route_many_picks_the_cheapest_model_within_the_threshold(
    threshold: float, expected: list[int]
) -> None:
    assert route_many(QUALITY, 2, threshold).tolist() == expected


def test_the_reference_always_qualifies_even_when_not_last() -> None:
    # A pricier model than the reference (gpt-4-0314 beside gpt-4-1106) is never reached.
    quality = np.array([[0.1, 0.9, 1.0]])
    assert route_many(quality, 1, -5.0).tolist() == [1]


CALIBRATION = Calibration(
    thresholds=np.array([-0.1, 0.0, 0.1, 0.2, 0.3]),
    strong_share=np.array([1.0, 0.7, 0.4, 0.2, 0.0]),
    cost_per_1k_usd=np.array([20.0, 15.0, 9.0, 5.0, 1.0]),
    quality=np.array([0.90, 0.89, 0.86, 0.80, 0.70]),
    quality_rel=np.array([1.0, 0.99, 0.955, 0.89, 0.78]),
)


@pytest.mark.parametrize(
    ("target", "threshold"),
    [
        ({"strong_share": 0.5}, 0.1),
        ({"strong_share": 0.2}, 0.2),
        ({"strong_share": 0.0}, 0.3),
        ({"budget_per_1k_usd": 10.0}, 0.1),
        ({"budget_per_1k_usd": 0.5}, 0.3),  # unreachable: the cheapest point
        ({"quality_floor": 0.95}, 0.1),
        ({"quality_floor": 0.99}, 0.0),
        ({"quality_floor": 1.0}, -0.1),
    ],
)
def test_threshold_for_each_target(target: dict[str, float], threshold: float) -> None:
    assert threshold_for(CALIBRATION, **target) == pytest.approx(threshold)


def test_calibration_json_round_trip() -> None:
    again = Calibration.from_json(CALIBRATION.to_json())
    for name in Calibration.__dataclass_fields__:
        assert np.array_equal(getattr(again, name), getattr(CALIBRATION, name))


class _Embedder:
    """A three-token vocabulary: 'easy' → 0, 'hard' → 1, anything else → 2."""

    dim = 2
    table = np.array([[1.0, 0.0], [0.0, 1.0], [0.7, 0.7]], dtype=np.float32)

    def ids(self, text: str) -> list[int]:
        return [{"easy": 0, "hard": 1}.get(word, 2) for word in text.split()]


def _router(threshold: float, band: float = 0.0) -> LearnedRouter:
    d = 2 + len(STRUCTURAL)
    w_dense = np.zeros((2, d), dtype=np.float32)
    w_dense[0, 1] = -6.0  # the cheap model is bad at 'hard' (embedding dimension 1)
    arrays = {
        "mean": np.zeros(d, dtype=np.float32),
        "scale": np.ones(d, dtype=np.float32),
        "w_dense": w_dense,
        "w_tokens": np.zeros((2, 3), dtype=np.float32),
        "bias": np.array([2.0, 2.0], dtype=np.float32),
    }
    return LearnedRouter(
        LinearScorer(arrays),
        _Embedder(),
        models=["cheap", "strong"],
        reference=1,
        threshold=threshold,
        uncertain_band=band,
        version="test",
    )


def test_choose_sends_what_the_cheap_model_gets_wrong_to_the_reference() -> None:
    router = _router(0.1)
    easy = router.choose(Features(text="easy easy"))
    hard = router.choose(Features(text="hard hard"))
    assert (easy.model, easy.uncertain) == ("cheap", False)
    assert easy.score == pytest.approx(0.0, abs=1e-6)
    assert hard.model == "strong" and hard.score > 0.5
    # The score is the cheap model's predicted gap: the same number the threshold is compared with.
    assert hard.score == pytest.approx(float(np.diff(router.quality(Features(text="hard hard")))[0]))


def test_uncertain_near_the_threshold() -> None:
    gap = _router(0.0).choose(Features(text="hard easy")).score
    assert 0.05 < gap < 0.9
    assert _router(gap + 0.01, band=0.02).choose(Features(text="hard easy")).uncertain
    assert _router(gap - 0.01, band=0.02).choose(Features(text="hard easy")).uncertain
    assert not _router(gap + 0.2, band=0.02).choose(Features(text="hard easy")).uncertain


def test_structural_features_are_named_and_bounded() -> None:
    features = extract_features(
        {"messages": [{"role": "user", "content": "Solve 2 + 2 = ? step by step\n" * 20}]}
    )
    values = structural(features)
    assert len(values) == len(STRUCTURAL)
    assert values[STRUCTURAL.index("has_math")] == 1.0
    assert values[STRUCTURAL.index(f"task_{features.task}")] == 1.0
    assert np.all((values >= 0) & (values <= 2))
    encoded = encode(features, _Embedder())
    assert encoded.dense.shape == (2 + len(STRUCTURAL),)
    assert np.linalg.norm(encoded.dense[:2]) == pytest.approx(1.0)
    assert encoded.tokens.tolist() == [2]  # distinct ids only


def test_importing_and_serving_rules_load_no_learned_code() -> None:
    code = (
        "import sys, tierwise\n"
        "from tierwise.router import Router\n"
        "from tierwise.config import load_config\n"
        "from tierwise.ledger.null import NullLedger\n"
        f"router = Router(load_config({DEMO!r}), ledger=NullLedger())\n"
        "router.explain({'model': 'auto', 'messages': [{'role': 'user', 'content': 'hi'}]})\n"
        "bad = [m for m in ('tierwise.policy.learned', 'tierwise.embeddings', 'tierwise.artefact', "
        "'tokenizers', 'sklearn') if m in sys.modules]\n"
        "print(bad)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
