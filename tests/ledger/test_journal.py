"""The journal: rows a process accepted survive its SIGKILL and are written by the next start, once;
a living process's journal is never taken; a torn last line is dropped; written rows retire their part."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tierwise.ledger import SqliteLedger
from tierwise.ledger._journal import Journal, adopt
from tierwise.ledger._rows import row_to_json

from .rows import make_rows, wait_for
from .test_queue import ListLedger

# A process that records rows into a SQLite ledger, says how many, and then never lets its writer run
# again (the event loop is blocked), as a process is when SIGKILL arrives between answering requests
# and the write behind them. ``STORED`` rows are flushed first: the journal must not duplicate them.
_CHILD = textwrap.dedent(
    """
    import asyncio, sys, time
    sys.path.insert(0, {root!r})
    from tests.ledger.rows import make_rows
    from tierwise.ledger import SqliteLedger

    async def main():
        ledger = SqliteLedger({db!r}, journal={journal!r})
        await ledger.start()
        rows = make_rows({total})
        for row in rows[:{stored}]:
            await ledger.record(row)
        await ledger.flush()
        for row in rows[{stored}:]:
            await ledger.record(row)
        print("recorded", flush=True)
        time.sleep(60)  # blocks the loop: the writer never writes the rest

    asyncio.run(main())
    """
)


def _kill_after_recording(db: Path, *, total: int, stored: int, journal: bool = True) -> None:
    root = str(Path(__file__).resolve().parents[2])
    code = _CHILD.format(root=root, db=str(db), total=total, stored=stored, journal=journal)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline() == b"recorded\n"
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(10) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


def _journal_files(directory: Path) -> list[Path]:
    return sorted(directory.glob("journal-*.jsonl"))


# 900 rows (~850 KB) pass the room a part is made with: it grows (twice) while mapped.
@pytest.mark.parametrize("total", [300, 900])
async def test_rows_of_a_killed_process_are_written_once_by_the_next_start(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, total: int
) -> None:
    db = tmp_path / "ledger.db"
    _kill_after_recording(db, total=total, stored=120)
    spill = tmp_path / "ledger.db.spill"
    assert _journal_files(spill)  # left by the killed process
    ledger = SqliteLedger(str(db))
    await ledger.start()
    await ledger.flush()
    ids = [row.id for row in await ledger.fetch()]
    assert sorted(ids) == sorted(row.id for row in make_rows(total))  # each row once: none lost, none twice
    assert any("journaled by a process that stopped" in r.getMessage() for r in caplog.records)
    health = ledger.health()
    assert (health.state, health.dead_letters, health.lost_rows) == ("ok", 0, 0)
    await ledger.close()
    assert not spill.exists()  # replayed and deleted


async def test_without_the_journal_a_kill_loses_the_rows_not_yet_written(tmp_path: Path) -> None:
    # The loss the journal prevents, shown: the same kill with journal=False.
    db = tmp_path / "ledger.db"
    _kill_after_recording(db, total=300, stored=120, journal=False)
    ledger = SqliteLedger(str(db), journal=False)
    await ledger.start()
    await ledger.flush()
    assert await ledger.count() == 120
    await ledger.close()


async def test_written_rows_retire_their_journal(tmp_path: Path) -> None:
    spill = tmp_path / "spill"
    ledger = ListLedger(spill)
    await ledger.start()
    rows = make_rows(1200)
    for row in rows[:700]:
        await ledger.record(row)
    # Each part: the rows' lines, then the zeros of the room it has not used yet.
    journaled = b"".join(p.read_bytes().rstrip(b"\0") for p in _journal_files(spill))
    assert journaled == b"".join(row_to_json(r) for r in rows[:700])
    await ledger.flush()
    for row in rows[700:]:
        await ledger.record(row)
    await ledger.flush()
    assert ledger.written == rows
    assert ledger._journal is not None and ledger._journal.parts == 0
    await wait_for(lambda: _journal_files(spill) == [])  # deleted by a worker thread
    await ledger.close()
    assert not spill.exists()


async def test_rows_spilled_in_an_outage_retire_their_journal_too(tmp_path: Path) -> None:
    spill = tmp_path / "spill"
    ledger = ListLedger(spill, failures=10**9)
    await ledger.start()
    for row in make_rows(50):
        await ledger.record(row)
    await ledger.flush()  # in the spill: as safe from a kill as the journal
    assert ledger.written == []
    await wait_for(lambda: _journal_files(spill) == [])
    await ledger.close()


async def test_a_living_process_journal_is_never_taken(tmp_path: Path) -> None:
    # Two ledgers on one directory stand for two processes: flock locks conflict between open file
    # descriptions, even within one process.
    spill = tmp_path / "spill"
    first = ListLedger(spill)
    await first.start()
    first.gate.clear()  # its store stalls: its rows stay in its journal
    rows = make_rows(30)
    for row in rows:
        await first.record(row)
    await asyncio.sleep(0.1)
    second = ListLedger(spill)
    await second.start()
    await second.flush()
    assert second.written == []
    assert _journal_files(spill)  # still there, still the first one's
    assert second.health().state == "ok"
    first.gate.set()
    await first.flush()
    assert first.written == rows
    await first.close()
    await second.close()
    assert not spill.exists()


def test_a_torn_last_line_is_dropped_and_an_empty_part_deleted(tmp_path: Path) -> None:
    lines = [row_to_json(row) for row in make_rows(4)]
    torn = tmp_path / "journal-00000000000000000001-4242.jsonl"
    torn.write_bytes(b"".join(lines[:3]) + lines[3][:25])  # killed in the middle of a write
    empty = tmp_path / "journal-00000000000000000002-4243.jsonl"
    empty.write_bytes(b"")
    unnamed = tmp_path / ".journal-00000000000000000003-4244.jsonl.new"  # killed before its rename
    unnamed.write_bytes(b"")
    found = adopt(tmp_path)
    segment = tmp_path / "spill-00000000000000000001-4242.jsonl"
    assert found == [(segment, sum(map(len, lines[:3])))]
    assert segment.read_bytes() == b"".join(lines[:3])
    assert sorted(os.listdir(tmp_path)) == [segment.name]


async def test_a_part_held_by_its_journal_is_left_alone(tmp_path: Path) -> None:
    journal = Journal(tmp_path)
    journal.append(row_to_json(make_rows(1)[0]))
    assert adopt(tmp_path) == []  # locked: its process is alive
    assert adopt(tmp_path, journal) == []
    (part,) = _journal_files(tmp_path)
    await journal.close()
    assert not part.exists()


async def test_a_journal_that_cannot_be_written_costs_no_row(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    ledger = ListLedger(tmp_path / "spill")
    await ledger.start()
    assert ledger._journal is not None

    def full(line: bytes) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(ledger._journal, "append", full)
    rows = make_rows(5)
    for row in rows:
        await ledger.record(row)
    await ledger.flush()
    assert ledger.written == rows
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert any("cannot journal rows" in m and "No space left" in m for m in errors)
    await ledger.close()


async def test_journal_off_writes_no_file(tmp_path: Path) -> None:
    spill = tmp_path / "spill"
    ledger = SqliteLedger(str(tmp_path / "ledger.db"), spill_dir=str(spill), journal=False)
    await ledger.start()
    for row in make_rows(10):
        await ledger.record(row)
    assert not spill.exists()
    await ledger.close()
    assert await ledger.count() == 10


async def test_a_living_ledger_takes_a_killed_neighbours_journal_while_idle(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("tierwise.ledger._queue.ADOPT_EVERY_S", 0.1)
    spill = tmp_path / "spill"
    ledger = ListLedger(spill)
    await ledger.start()
    rows = make_rows(7)
    # What a neighbour sharing the directory left when it was killed: no process holds it.
    spill.mkdir()
    (spill / "journal-00000000000000000001-4242.jsonl").write_bytes(b"".join(map(row_to_json, rows)))
    await wait_for(lambda: len(ledger.written) == 7)
    assert ledger.written == rows
    await ledger.close()
    assert not spill.exists()


@pytest.mark.parametrize("journal", [True, False])
def test_storage_journal_reaches_the_ledger(tmp_path: Path, journal: bool) -> None:
    from tests.harness import fleet_config
    from tierwise.config import parse_config
    from tierwise.router import Router

    urls = dict.fromkeys(("cheap", "backup", "strong"), "http://127.0.0.1:9/v1")
    doc = fleet_config(urls, ledger=f"sqlite:///{tmp_path / 'ledger.db'}")
    if not journal:
        doc["storage"]["journal"] = False
    router = Router(parse_config(doc))
    assert (router.ledger._journal is not None) is journal  # type: ignore[attr-defined]
