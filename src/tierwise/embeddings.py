"""Static token embeddings for the learned router: wordllama's table, read offline, numpy only.

The ``wordllama`` wheel (MIT) ships a 32,000 × 256 float16 table distilled from large LLMs' token
embeddings (``weights/l2_supercat_256.safetensors``, 16 MB) and the Llama-2 tokenizer it was made for
(``tokenizers/l2_supercat_tokenizer_config.json``). A text's embedding is the mean of its tokens' rows,
L2-normalised: one tokenizer call (Rust, via the ``tokenizers`` package) and one numpy gather.

We never import the ``wordllama`` package: its 0.4.0.post1 loader looks for the tokenizer in
``wordllama/tokenizer/`` while the wheel ships it in ``wordllama/tokenizers/``, and then falls back to a
Hugging Face download. Here the two files are located through the package's import spec (which runs none
of its code) and read directly: the safetensors header is 8 bytes of length and a JSON object, so no
``safetensors`` import is needed either. Nothing is downloaded, ever.
"""

from __future__ import annotations

import importlib.util
import json
import struct
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .errors import ConfigError

WORDLLAMA_VERSION = "0.4.0.post1"
TABLE_FILE = "weights/l2_supercat_256.safetensors"
TOKENIZER_FILE = "tokenizers/l2_supercat_tokenizer_config.json"
_HINT = "pip install 'tierwise[learned]'"
# Embed at most this many characters of a text: its head says what is asked, its tail often repeats
# the instruction after a pasted document (as features.py reads it). Bounds the cost of a 1 MB prompt:
# the tokenizer reads about 6 characters per µs, so 2,000 characters cost ~0.3 ms.
HEAD_CHARS = 1500
TAIL_CHARS = 500
_DTYPES = {"F16": np.float16, "F32": np.float32, "BF16": None}


def wordllama_root() -> Path:
    """The folder of the installed ``wordllama`` package, found without importing it."""
    try:
        spec = importlib.util.find_spec("wordllama")
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(f"policy.learned needs the wordllama embedding table: {_HINT}")
    return Path(next(iter(spec.submodule_search_locations)))


def read_safetensor(path: Path, key: str = "embedding.weight") -> np.ndarray:
    """One tensor of a ``.safetensors`` file, as a read-only numpy array over the file's bytes."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the embedding table: {exc.strerror}; {_HINT}") from None
    try:
        (length,) = struct.unpack("<Q", raw[:8])
        header = json.loads(raw[8 : 8 + length])
        entry = header[key]
        dtype = _DTYPES[entry["dtype"]]
        start, end = entry["data_offsets"]
        shape = tuple(entry["shape"])
    except (struct.error, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"{path}: not a safetensors file with {key!r} ({exc}); {_HINT}") from None
    if dtype is None:
        raise ConfigError(f"{path}: {key} is {entry['dtype']}, which numpy cannot read")
    body = memoryview(raw)[8 + length + start : 8 + length + end]
    return np.frombuffer(body, dtype=dtype).reshape(shape)


def _tokenizer(path: Path) -> Any:
    try:
        from tokenizers import Tokenizer
    except ImportError:
        raise ConfigError(f"policy.learned needs the tokenizers package: {_HINT}") from None
    try:
        tokenizer = Tokenizer.from_file(str(path))
    except Exception as exc:  # the Rust library raises its own Exception subclass
        raise ConfigError(f"{path}: cannot load the tokenizer: {exc}; {_HINT}") from None
    tokenizer.no_padding()
    tokenizer.no_truncation()
    return tokenizer


class StaticEmbeddings:
    """Mean-pooled static token embeddings. Thread-safe; ``embed`` allocates one small array."""

    def __init__(self, table: np.ndarray, tokenizer: Any, *, dim: int | None = None) -> None:
        # Matryoshka training: a prefix of the dimensions is a smaller model. float32 gathers are ~5x
        # faster than float16 ones, for 32 MB of memory.
        self.table = np.ascontiguousarray(table if dim is None else table[:, :dim], dtype=np.float32)
        self.dim = int(self.table.shape[1])
        self._tokenizer = tokenizer

    def ids(self, text: str) -> list[int]:
        if len(text) > HEAD_CHARS + TAIL_CHARS:
            text = text[:HEAD_CHARS] + "\n" + text[-TAIL_CHARS:]
        return self._tokenizer.encode(text, add_special_tokens=False).ids

    def embed(self, text: str) -> np.ndarray:
        """The text's unit-length embedding (float32, ``dim``); zeros for an empty text."""
        ids = self.ids(text)
        if not ids:
            return np.zeros(self.dim, dtype=np.float32)
        vector = self.table[ids].mean(axis=0, dtype=np.float32)
        norm = float(np.sqrt(vector @ vector))
        return vector / norm if norm > 0 else vector

    def embed_many(self, texts: Sequence[str]) -> np.ndarray:
        """Embeddings of many texts, one row each (training and evaluation; batch-tokenized)."""
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        clipped = [
            t if len(t) <= HEAD_CHARS + TAIL_CHARS else t[:HEAD_CHARS] + "\n" + t[-TAIL_CHARS:] for t in texts
        ]
        for i, encoding in enumerate(self._tokenizer.encode_batch(clipped, add_special_tokens=False)):
            if encoding.ids:
                vector = self.table[encoding.ids].mean(axis=0, dtype=np.float32)
                norm = float(np.sqrt(vector @ vector))
                out[i] = vector / norm if norm > 0 else vector
        return out


def load_wordllama(*, dim: int | None = None, root: Path | None = None) -> StaticEmbeddings:
    """wordllama's l2_supercat table (``dim`` ≤ 256 keeps its first dimensions) and tokenizer.

    ``root`` is the ``wordllama`` package folder (default: the installed one). Raises ConfigError with
    the pip command when the extra is not installed.
    """
    root = root or wordllama_root()
    table = read_safetensor(root / TABLE_FILE)
    if dim is not None and not 0 < dim <= table.shape[1]:
        raise ConfigError(f"embedding dim {dim}: must be between 1 and {table.shape[1]}")
    return StaticEmbeddings(table, _tokenizer(root / TOKENIZER_FILE), dim=dim)
