"""embeddings.py: wordllama's table and tokenizer read offline, without importing wordllama."""

from __future__ import annotations

import struct
import sys
from pathlib import Path

import numpy as np
import orjson
import pytest

from tierwise.embeddings import (
    HEAD_CHARS,
    TABLE_FILE,
    TAIL_CHARS,
    load_wordllama,
    read_safetensor,
    wordllama_root,
)
from tierwise.errors import ConfigError


@pytest.fixture(scope="module")
def embeddings():
    return load_wordllama()


def test_mean_of_token_rows_unit_length(embeddings) -> None:
    text = "How does the dancing links algorithm work?"
    ids = embeddings.ids(text)
    assert 5 < len(ids) < 30 and max(ids) < 32_000
    expected = embeddings.table[ids].mean(axis=0)
    expected /= np.linalg.norm(expected)
    vector = embeddings.embed(text)
    assert vector.shape == (256,) and vector.dtype == np.float32
    np.testing.assert_allclose(vector, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(embeddings.embed_many([text, "x"])[0], vector, rtol=1e-5, atol=1e-6)
    assert not embeddings.embed("").any()
    assert "wordllama" not in sys.modules  # the package's files are read, its code never runs


def test_related_texts_are_closer(embeddings) -> None:
    a, b, c = embeddings.embed_many(
        ["Solve for x: 2x + 3 = 7", "Find x if 5x - 1 = 9", "Write a poem about love"]
    )
    assert a @ b > a @ c


def test_long_texts_are_clipped_head_and_tail(embeddings) -> None:
    long = "alpha " * 2000 + "omega"
    ids = embeddings.ids(long)
    assert len(ids) < (HEAD_CHARS + TAIL_CHARS) // 2
    assert embeddings.ids("omega")[-1] == ids[-1]


def test_matryoshka_prefix_dimensions() -> None:
    small = load_wordllama(dim=64)
    assert small.dim == 64 and small.embed("hello").shape == (64,)
    with pytest.raises(ConfigError, match="between 1 and 256"):
        load_wordllama(dim=300)


def test_missing_extra_asks_for_it(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ConfigError, match=r"pip install 'tierwise\[learned\]'"):
        wordllama_root()


def test_damaged_table_is_a_config_error(tmp_path: Path) -> None:
    header = orjson.dumps({"embedding.weight": {"dtype": "F16", "shape": [2, 2], "data_offsets": [0, 8]}})
    good = tmp_path / "good.safetensors"
    good.write_bytes(struct.pack("<Q", len(header)) + header + np.arange(4, dtype=np.float16).tobytes())
    assert read_safetensor(good).tolist() == [[0.0, 1.0], [2.0, 3.0]]
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x05\x00\x00\x00\x00\x00\x00\x00{oops")
    with pytest.raises(ConfigError, match="not a safetensors file"):
        read_safetensor(bad)
    assert (wordllama_root() / TABLE_FILE).stat().st_size > 16_000_000
