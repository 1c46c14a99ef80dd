"""The spill directory: segments, their locks when processes share a directory, replay positions, the
bound, and rows read back from segments a crashed process left."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from tierwise.ledger import SqliteLedger
from tierwise.ledger._rows import row_to_json
from tierwise.ledger._spill import Spill

from .rows import dead_letters, make_rows

LINES = [row_to_json(row) for row in make_rows(10)]


async def test_appended_rows_are_replayed_then_deleted(tmp_path: Path) -> None:
    spill = Spill(tmp_path / "spill", max_bytes=1 << 20)
    assert not spill.waiting
    assert spill.append(LINES[:4]) == 4
    assert spill.append(LINES[4:]) == 6
    assert spill.waiting and spill.bytes == sum(map(len, LINES))
    assert stat.S_IMODE((tmp_path / "spill").stat().st_mode) == 0o700  # rows may hold prompts
    await spill.sync()
    segment = await spill.next_segment()
    assert segment is not None
    assert segment.read(3) == LINES[:3]
    assert segment.read(100) == LINES[3:]
    assert segment.read(100) == []
    spill.done(segment)
    assert not spill.waiting and spill.bytes == 0
    assert await spill.next_segment() is None
    await spill.close()
    assert not (tmp_path / "spill").exists()


async def test_the_bound_takes_whole_lines_only(tmp_path: Path) -> None:
    spill = Spill(tmp_path, max_bytes=len(LINES[0]) * 2 + 10)
    assert spill.append(LINES[:5]) == 2
    assert spill.append(LINES[5:]) == 0
    await spill.close()
    (segment,) = tmp_path.glob("spill-*.jsonl")
    assert segment.read_bytes() == LINES[0] + LINES[1]


async def test_a_segment_being_written_is_never_replayed_by_another_process(tmp_path: Path) -> None:
    # Two Spill objects on one directory stand for two processes: flock locks conflict between open
    # file descriptions, even within one process.
    writer = Spill(tmp_path, max_bytes=1 << 20)
    other = Spill(tmp_path, max_bytes=1 << 20)
    writer.append(LINES[:3])
    other.scan()
    assert await other.next_segment() is None
    assert not other.waiting and other.bytes == 0
    await writer.close()  # stops, leaving its rows for whoever starts next
    other.scan()
    segment = await other.next_segment()
    assert segment is not None
    assert segment.read(10) == LINES[:3]
    # Locked by `other` for replay now: a third process does not take it too.
    third = Spill(tmp_path, max_bytes=1 << 20)
    third.scan()
    assert await third.next_segment() is None
    other.done(segment)
    assert list(tmp_path.glob("spill-*")) == []


async def test_a_released_segment_resumes_after_the_rows_written(tmp_path: Path) -> None:
    spill = Spill(tmp_path, max_bytes=1 << 20)
    spill.append(LINES)
    segment = await spill.next_segment()
    assert segment is not None
    assert segment.read(4) == LINES[:4]
    segment.written_through()
    assert segment.read(2) == LINES[4:6]  # read, not written: the process stops here
    segment.release()
    later = Spill(tmp_path, max_bytes=1 << 20)
    later.scan()
    resumed = await later.next_segment()
    assert resumed is not None
    assert resumed.read(100) == LINES[4:]
    later.done(resumed)
    assert os.listdir(tmp_path) == []


async def test_rows_a_crashed_process_left_are_written_and_a_torn_line_dead_lettered(tmp_path: Path) -> None:
    db = tmp_path / "ledger.db"
    spill = tmp_path / "ledger.db.spill"  # the default for this database
    spill.mkdir()
    rows = make_rows(6)
    # Killed mid-append: the last line is cut short.
    torn = row_to_json(make_rows(7)[6])[:40]
    (spill / "spill-00000000000000000001-4242.jsonl").write_bytes(b"".join(map(row_to_json, rows)) + torn)
    ledger = SqliteLedger(str(db))
    await ledger.start()
    await ledger.flush()
    assert await ledger.fetch() == rows
    assert ledger.health().state == "ok"
    assert ledger.health().replayed_rows == 6
    (letter,) = dead_letters(spill)
    assert letter["error"] == "JSONDecodeError"
    assert letter["row"] == torn.decode()
    await ledger.close()
    assert sorted(os.listdir(spill)) == ["dead-letter.jsonl"]
