"""Removes secrets (API keys) from text before it is shown, logged or stored.

Not only the whole key: an upstream's error body may echo a key cut short, split or wrapped, so any
run of ``PIECE`` or more characters that appears in a configured key is replaced. Redact first, then
cut: a text cut to length before redaction can end in the part of a key the redactor would have
recognised only whole.
"""

from __future__ import annotations

from collections.abc import Iterable

PIECE = 8  # the shortest piece of a key that counts as the key
MARK = "[redacted]"


class Redactor:
    """``redactor(text)`` is ``text`` with every piece of the given secrets replaced by ``[redacted]``."""

    __slots__ = ("_grams", "_width")

    def __init__(self, secrets: Iterable[str | None]) -> None:
        keys = [s for s in secrets if s]
        # A key shorter than PIECE is matched whole.
        self._width = min([PIECE, *(len(k) for k in keys)])
        self._grams = frozenset(k[i : i + self._width] for k in keys for i in range(len(k) - self._width + 1))

    def __bool__(self) -> bool:
        return bool(self._grams)

    def __call__(self, text: str) -> str:
        if not self._grams or len(text) < self._width:
            return text
        width, grams = self._width, self._grams
        spans: list[list[int]] = []
        for i in range(len(text) - width + 1):
            if text[i : i + width] in grams:
                if spans and i <= spans[-1][1]:
                    spans[-1][1] = i + width  # overlapping or adjacent: one run of key characters
                else:
                    spans.append([i, i + width])
        if not spans:
            return text
        out: list[str] = []
        last = 0
        for start, end in spans:
            out.append(text[last:start])
            out.append(MARK)
            last = end
        out.append(text[last:])
        return "".join(out)
