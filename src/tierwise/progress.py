"""A progress display on stderr, for the long commands (``tierwise eval``, ``tierwise estimate``)."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from typing import Any


@contextlib.contextmanager
def stderr_progress(*, elapsed: bool = False) -> Iterator[Any]:
    """A ``rich.progress.Progress`` drawn on stderr (cleared at the end), or None when stderr is not a
    terminal or rich is not installed. ``elapsed``: a bar and the time elapsed beside the description."""
    try:
        from rich.console import Console
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
    except ImportError:
        yield None
        return
    if not sys.stderr.isatty():
        yield None
        return
    columns = (TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn()) if elapsed else ()
    with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
        yield bar
