"""The spill: rows waiting on local disk while the ledger's store cannot take them.

A directory, created when first needed and readable by its owner only (rows may hold prompts), of
append-only segment files ``spill-<ns>-<pid>.jsonl``, one row a line (``_rows.row_to_json``), and
``dead-letter.jsonl``: rows no store will take as they are, each with its error and the time. The
journal's parts (``journal-<ns>-<pid>.jsonl``, ``_journal.py``) live beside them; one a killed process
left becomes a segment here (``add``).

A process appends to its own open segment and holds an exclusive ``flock`` on it the whole time. A
closed segment (sealed for replay, or left by a process that stopped or died) is replayed by whichever
process locks it first, from the offset its ``.pos`` file records as written, and deleted once all of
it is. So replicas sharing the directory (or a report run beside a server) never replay a segment that
is still being written; and replaying a segment twice after a crash is harmless, since the stores skip
ids they already have.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import time
from pathlib import Path
from typing import BinaryIO

DEAD_LETTER = "dead-letter.jsonl"
# Past this size the open segment is sealed and a new one begun, so that a replayed segment is deleted
# (and its disk space returned) long before a long outage has spilled everything.
SEGMENT_BYTES = 64 << 20


class Spill:
    """The spill directory as one process sees it. Used from the event loop only; ``bytes`` counts what
    waits in the segments this process knows of (its own, and those it found)."""

    def __init__(self, directory: Path, *, max_bytes: int) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        self.bytes = 0
        self.dirty = False  # appended to since the last fsync
        self._fd: int | None = None  # the open segment, locked
        self._path: Path | None = None
        self._open_bytes = 0
        self._closed: dict[Path, int] = {}  # closed segments to replay, with their sizes

    @property
    def waiting(self) -> bool:
        """Whether rows wait to be replayed (this process's, or a closed segment it found)."""
        return self._open_bytes > 0 or bool(self._closed)

    def scan(self) -> None:
        """Find the closed segments left in the directory by earlier or other processes."""
        try:
            found = list(self.directory.glob("spill-*.jsonl"))
        except OSError:
            return
        for path in found:
            if path in self._closed or (path == self._path and self._fd is not None):
                continue
            with contextlib.suppress(FileNotFoundError):
                size = path.stat().st_size
                self._closed[path] = size
                self.bytes += size

    def add(self, path: Path, size: int) -> None:
        """Count a closed segment made in the directory by other means (a journal a killed process left,
        renamed into a segment), to replay it."""
        if path not in self._closed:
            self._closed[path] = size
            self.bytes += size

    def append(self, lines: list[bytes]) -> int:
        """Append whole lines, as many as fit under ``max_bytes``; return how many. Raises OSError
        (the disk is full, the directory cannot be made …), having appended none of them."""
        data = b"".join(lines)
        if self.bytes + len(data) > self.max_bytes:
            room = self.max_bytes - self.bytes
            fitting = 0
            for line in lines:
                if len(line) > room:
                    break
                room -= len(line)
                fitting += 1
            lines = lines[:fitting]
            data = b"".join(lines)
        if not data:
            return 0
        fd = self._fd if self._fd is not None else self._open_segment()
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
        except OSError:
            # A torn line would merge with the next one appended: cut the segment back to whole lines.
            with contextlib.suppress(OSError):
                os.ftruncate(fd, self._open_bytes)
            raise
        self._open_bytes += len(data)
        self.bytes += len(data)
        self.dirty = True
        return len(lines)

    async def sync(self) -> None:
        """fsync the open segment, in a thread (on a duplicate descriptor, so that closing the segment
        meanwhile cannot pull the descriptor from under it)."""
        if not self.dirty or self._fd is None:
            return
        self.dirty = False
        await asyncio.to_thread(_fsync_and_close, os.dup(self._fd))

    async def seal_if_large(self) -> None:
        if self._open_bytes >= SEGMENT_BYTES:
            await self._seal()

    async def next_segment(self) -> Segment | None:
        """Lock the oldest closed segment for replay; if there is none, seal this process's open one
        first, and failing that look for segments other processes have closed. None: nothing to replay."""
        segment = self._claim()
        if segment is None and self._open_bytes:
            await self._seal()
            segment = self._claim()
        if segment is None:
            self.scan()
            segment = self._claim()
        return segment

    def done(self, segment: Segment) -> None:
        """Every row of ``segment`` is written (or dead-lettered): delete it."""
        segment.delete()
        self.bytes = max(0, self.bytes - segment.size)

    def dead_letter(self, line: bytes) -> bool:
        """Append one line to the dead-letter file; False if that would take it past ``max_bytes``."""
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(self.directory / DEAD_LETTER, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            if os.fstat(fd).st_size + len(line) > self.max_bytes:
                return False
            os.write(fd, line)
        finally:
            os.close(fd)
        return True

    async def close(self) -> None:
        """fsync and close the open segment (it stays, for the next start to replay); remove the
        directory if nothing is left in it."""
        if self._fd is not None:
            await self.sync()
            fd, self._fd = self._fd, None
            if not self._open_bytes and self._path is not None:
                with contextlib.suppress(OSError):
                    self._path.unlink()  # nothing in it: no empty segment left behind
            os.close(fd)
        with contextlib.suppress(OSError):
            self.directory.rmdir()  # fails, as it should, unless empty

    def _open_segment(self) -> int:
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        name = f"spill-{time.time_ns():020d}-{os.getpid()}.jsonl"
        # Made and locked under a name scan() does not match, then renamed: no other process can claim
        # (and replay, and delete) the segment between its creation and its lock.
        temporary = self.directory / f".{name}.new"
        fd = os.open(temporary, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            os.rename(temporary, self.directory / name)
        except BaseException:
            os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            raise
        self._fd, self._path, self._open_bytes = fd, self.directory / name, 0
        return fd

    async def _seal(self) -> None:
        await self.sync()
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        path, self._path = self._path, None
        os.close(fd)  # releases the lock: the segment can now be claimed, by this process or another
        assert path is not None
        if self._open_bytes:
            self._closed[path] = self._open_bytes
        else:
            with contextlib.suppress(OSError):
                path.unlink()
        self._open_bytes = 0

    def _claim(self) -> Segment | None:
        while self._closed:
            path = min(self._closed)  # names start with the time they were begun: oldest first
            size = self._closed.pop(path)
            segment = Segment.lock(path, size)
            if segment is not None:
                return segment
            # Gone, or locked by another process that writes or replays it: not ours to count.
            self.bytes = max(0, self.bytes - size)
        return None


class Segment:
    """A closed segment this process has locked for replay."""

    def __init__(self, path: Path, file: BinaryIO, size: int) -> None:
        self.path = path
        self.size = size
        self._file = file
        self._pos = path.with_suffix(".pos")

    @classmethod
    def lock(cls, path: Path, size: int) -> Segment | None:
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            if os.fstat(fd).st_nlink == 0:  # replayed and deleted by another process before we locked it
                raise BlockingIOError
        except OSError:
            os.close(fd)
            return None
        file = os.fdopen(fd, "rb")
        # No .pos yet, or one torn by a crash: from the start (replay is idempotent).
        with contextlib.suppress(FileNotFoundError, ValueError):
            file.seek(int(path.with_suffix(".pos").read_bytes()))
        return cls(path, file, size)

    def read(self, n: int) -> list[bytes]:
        """Up to ``n`` more lines (a last line torn by a crash included, without its newline)."""
        lines = []
        for _ in range(n):
            line = self._file.readline()
            if not line:
                break
            lines.append(line)
        return lines

    def written_through(self) -> None:
        """Record that every line read so far is written, so that a later replay starts after them."""
        with contextlib.suppress(OSError):
            self._pos.write_bytes(str(self._file.tell()).encode())

    def delete(self) -> None:
        for path in (self._pos, self.path):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        self._file.close()

    def release(self) -> None:
        """Unlock without deleting: the rest is replayed later, by this process or another."""
        self._file.close()


def _fsync_and_close(fd: int) -> None:
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
