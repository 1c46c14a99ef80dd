"""The journal: each accepted row on local disk before its answer is sent, so that killing the process
loses no answered request's row.

``record`` appends the row (one ``_rows.row_to_json`` line, as in the spill) to this process's journal
before it queues it; the router records a request's row before the answer's last byte (the JSON body,
or a stream's ``[DONE]``) is sent. A part is a file mapped into memory (``MAP_SHARED``), so appending
is a copy into the kernel's page cache with no system call (a ``write()`` per row, and the handover of
the interpreter lock to the ledger's writer thread it invites, cost ~2/3 of the journal's time). The
page cache outlives the process: a SIGKILL, an OOM kill or a crash of Python loses nothing journaled.
A part's disk blocks are written with zeros when it is made, so a full disk is an OSError then, never
a fault on a page being copied into. There is no fsync per row (a disk flush per request
would cost more than the request): a crash of the machine itself, or a power cut, can lose what the
kernel had not yet written back — as it can the last commits of SQLite with ``synchronous=NORMAL``.

The journal is a few files ``journal-<ns>-<pid>.jsonl`` in the spill directory, each held by its
process with an exclusive ``flock`` as long as it lives. When the writer takes a batch from the
queue it seals the part being appended to (rows recorded from then on go to another part) if that
part holds ``PART_BYTES`` or is ``PART_S`` old, or a flush is waiting; a sealed part is retired once
every row queued before the seal is in the store or set aside in the spill, and deleted in a worker
thread: deleting (or truncating) a file whose pages the kernel is writing back can wait for the disk,
and the event loop must not. So the event loop only appends, and makes a new part a second or so.
``close`` deletes every part: by then each accepted row is written or spilled.

A part no living process holds was left by one that was killed: ``adopt`` (run by ``start``, and every
``ADOPT_EVERY_S`` while serving) cuts it back to whole lines (dropping the unused, zeroed end) and
renames it into a spill segment, which is replayed like any other. Some of its rows may already be in
the store (their part was not retired yet): the stores skip ids they have, so a row is never written
twice. Parts of processes still running are locked, and never adopted.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import mmap
import os
import time
from collections import deque
from pathlib import Path

PREFIX = "journal-"
# A living process looks for parts killed neighbours left in a shared directory this often.
ADOPT_EVERY_S = 10.0
# A part is sealed (and retired once its rows are written) when it holds this much, or is this old.
PART_BYTES = 256 * 1024
PART_S = 1.0
_ROOM = PART_BYTES + 64 * 1024  # a part's first size; it grows (rarely) for rows past it


class _Part:
    __slots__ = ("born", "fd", "map", "path", "size")

    def __init__(self, fd: int, path: Path) -> None:
        self.fd = fd
        self.path = path
        self.size = 0
        self.born = time.monotonic()
        self.map = mmap.mmap(fd, _ROOM)

    def grow(self, needed: int) -> None:
        """Room for ``needed`` bytes in all: reserve the blocks first, then map them (OSError when the
        disk is full, before any byte is copied)."""
        room = max(needed, 2 * len(self.map))
        _reserve(self.fd, room)
        self.map.resize(room)


class Journal:
    """This process's journal parts in ``directory``. Used from the event loop only."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._open: _Part | None = None  # appended to
        self._sealed: deque[tuple[_Part, int]] = deque()  # (part, rows queued when it was sealed)
        self._retired: list[_Part] = []  # to delete (drop_retired)
        self._dropping: asyncio.Future[None] | None = None  # a deletion running in a worker thread

    @property
    def parts(self) -> int:
        """How many parts hold rows not yet known to be written or spilled."""
        return len(self._sealed) + (1 if self._open is not None and self._open.size else 0)

    def owns(self, path: Path) -> bool:
        return any(p.path == path for p in self._all())

    def _all(self) -> list[_Part]:
        parts = [p for p, _ in self._sealed] + self._retired
        return [*parts, self._open] if self._open is not None else parts

    def append(self, line: bytes) -> None:
        """Append one newline-terminated row. Raises OSError (disk full, directory not writable …)
        before any byte of it is copied."""
        part = self._open
        if part is None:
            part = self._open = _Part(*_create(self.directory))
        start = part.size
        end = start + len(line)
        if end > len(part.map):
            part.grow(end)
        part.map[start:end] = line
        part.size = end

    def seal(self, queued: int, *, now: bool = False) -> None:
        """Rows recorded from now on go to another part, if the one being appended to is large or old
        enough (or ``now``); that one is retired once the first ``queued`` rows put on the queue are
        written or spilled."""
        part = self._open
        if (
            part is not None
            and part.size
            and (now or part.size >= PART_BYTES or time.monotonic() - part.born >= PART_S)
        ):
            self._sealed.append((part, queued))
            self._open = None

    def retire(self, settled: int) -> None:
        """The first ``settled`` rows put on the queue are written or spilled: retire the parts that
        held only rows among them (``drop_retired`` deletes them)."""
        sealed = self._sealed
        while sealed and sealed[0][1] <= settled:
            self._retired.append(sealed.popleft()[0])

    async def drop_retired(self) -> None:
        """Delete the retired parts, in a worker thread."""
        if self._retired:
            parts, self._retired = self._retired, []
            self._dropping = asyncio.ensure_future(asyncio.to_thread(_delete_all, parts))
            # Shielded: the writer may be cancelled meanwhile (close), and the parts must still go.
            await asyncio.shield(self._dropping)

    async def close(self) -> None:
        """Delete every part, in a worker thread (every row accepted is written or spilled by now)."""
        parts = self._all()
        self._sealed.clear()
        self._retired = []
        self._open = None
        if parts:
            await asyncio.to_thread(_delete_all, parts)
        if self._dropping is not None:
            await self._dropping  # so that the directory is empty, if nothing else is in it


def adopt(directory: Path, journal: Journal | None = None) -> list[tuple[Path, int]]:
    """Turn the journal parts that no living process holds into spill segments, and return them with
    their sizes. Parts of ``journal`` (this process's own) are left alone."""
    try:
        found = sorted(directory.glob(f"{PREFIX}*.jsonl")) + sorted(directory.glob(f".{PREFIX}*.new"))
    except OSError:
        return []
    adopted = []
    for path in found:
        if journal is not None and journal.owns(path):
            continue
        segment = _adopt_one(path)
        if segment is not None:
            adopted.append(segment)
    return adopted


def _adopt_one(path: Path) -> tuple[Path, int] | None:
    try:
        fd = os.open(path, os.O_RDWR)
    except OSError:  # gone (retired, or adopted by another process), or not ours to touch
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return None  # its process is alive (or another one is adopting it)
        # Between our open and our lock its owner may have deleted it, or another process renamed it.
        try:
            if os.fstat(fd).st_ino != os.stat(path).st_ino:
                return None
        except FileNotFoundError:
            return None
        size = _whole_lines(fd)
        if not size or path.name.startswith("."):  # empty, or made and never renamed: nothing in it
            with contextlib.suppress(OSError):
                os.unlink(path)
            return None
        # Same filesystem, one rename: the rows are in the journal or in the spill, never in neither.
        target = path.with_name("spill-" + path.name[len(PREFIX) :])
        os.rename(path, target)
        return target, size
    except OSError:
        return None
    finally:
        os.close(fd)


def _whole_lines(fd: int) -> int:
    """Cut a part back to its last newline: after it come only the zeros of the room not yet used, or
    a line torn by a kill mid-copy (never acknowledged, so its request was never answered). Return the
    size left."""
    size = os.fstat(fd).st_size
    if not size:
        return 0
    tail = os.pread(fd, 1, size - 1)
    if tail == b"\n":
        return size
    end = size
    block = 1 << 16
    while end > 0:
        start = max(0, end - block)
        chunk = os.pread(fd, end - start, start)
        cut = chunk.rfind(b"\n")
        if cut >= 0:
            os.ftruncate(fd, start + cut + 1)
            return start + cut + 1
        end = start
    os.ftruncate(fd, 0)
    return 0


def _create(directory: Path) -> tuple[int, Path]:
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    name = f"{PREFIX}{time.time_ns():020d}-{os.getpid()}.jsonl"
    # Made and locked under a name adopt() leaves alone while locked, then renamed: no other process
    # can take a part between its creation and its lock.
    temporary = directory / f".{name}.new"
    fd = os.open(temporary, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        _reserve(fd, _ROOM)
        os.rename(temporary, directory / name)
    except BaseException:
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
    return fd, directory / name


def _reserve(fd: int, size: int) -> None:
    """Make the file ``size`` bytes, its new blocks written with zeros: copying into its map can then
    never fault for want of space (a full disk is an OSError here), and the first write to each page
    finds a block already written (an unwritten, fallocated one has the filesystem convert it on that
    fault, under its own journal: tens of µs with the interpreter lock held)."""
    start = os.fstat(fd).st_size
    zeros = bytes(min(size - start, 1 << 16)) if size > start else b""
    while start < size:
        start += os.pwrite(fd, zeros[: size - start], start)


def _delete_all(parts: list[_Part]) -> None:
    for part in parts:
        # Unlinked before closed: while we hold the lock no other process adopts it, and once
        # unlinked none can find it.
        with contextlib.suppress(OSError):
            os.unlink(part.path)
        with contextlib.suppress(BufferError, ValueError):
            part.map.close()
        with contextlib.suppress(OSError):
            os.close(part.fd)
