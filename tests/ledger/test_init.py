"""open_ledger: the storage.ledger URL picks the backend; NullLedger keeps nothing."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tierwise.errors import ConfigError
from tierwise.ledger import Feedback, LedgerHealth, NullLedger, SqliteLedger, open_ledger

from .rows import make_row


def test_sqlite_urls_relative_and_absolute() -> None:
    relative = open_ledger("sqlite:///data/ledger.db")
    assert isinstance(relative, SqliteLedger)
    assert relative.path == "data/ledger.db"
    absolute = open_ledger("sqlite:////var/lib/tierwise/ledger.db", queue_size=7)
    assert isinstance(absolute, SqliteLedger)
    assert absolute.path == "/var/lib/tierwise/ledger.db"
    assert absolute._queue.maxsize == 7


@pytest.mark.parametrize("url", ["postgresql://u:pw@db.internal:5433/app", "postgres://db.internal/app"])
def test_postgres_urls(url: str) -> None:
    from tierwise.ledger.postgres import PostgresLedger

    ledger = open_ledger(url)
    assert isinstance(ledger, PostgresLedger)
    assert "pw" not in ledger.where


def test_postgres_without_asyncpg_asks_for_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "asyncpg", None)  # makes `import asyncpg` fail
    with pytest.raises(ConfigError, match=r"pip install 'tierwise\[postgres\]'"):
        open_ledger("postgresql://localhost/test")


def test_the_spill_is_beside_the_ledger_unless_given(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sqlite = open_ledger("sqlite:///data/ledger.db")
    assert sqlite.spill_dir == Path("data/ledger.db.spill")  # type: ignore[attr-defined]
    monkeypatch.chdir(tmp_path)
    postgres = open_ledger("postgresql://u:pw@db.internal:5433/app")
    # Absolute, fixed when the ledger is made; named for the server, database and table, never the password.
    assert postgres.spill_dir == tmp_path / "tierwise-spill" / "db.internal-5433-app-tierwise_requests"  # type: ignore[attr-defined]
    given = open_ledger("sqlite:///x.db", spill_dir=str(tmp_path / "s"), spill_max_bytes=123)
    assert given.spill_dir == tmp_path / "s"  # type: ignore[attr-defined]
    assert given._spill.max_bytes == 123  # type: ignore[attr-defined]
    assert not (tmp_path / "s").exists()  # made when first needed


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("mysql://root:hunter2@db/app", "unsupported scheme 'mysql://'"),
        ("ledger.db", "not a URL"),
        ("sqlite://ledger.db", "sqlite:///relative/path.db"),
        ("sqlite:///", "sqlite:///relative/path.db"),
    ],
)
def test_bad_urls_are_config_errors_without_secrets(url: str, message: str) -> None:
    with pytest.raises(ConfigError, match=r"^storage\.ledger: ") as caught:
        open_ledger(url)
    assert message in str(caught.value)
    assert "hunter2" not in str(caught.value)


async def test_none_keeps_nothing() -> None:
    ledger = open_ledger("none")
    assert isinstance(ledger, NullLedger)
    await ledger.start()
    await ledger.record(make_row(1))
    await ledger.flush()
    assert await ledger.count() == 0
    assert await ledger.fetch() == []
    assert await ledger.get(make_row(1).id) is None
    assert ledger.health() == LedgerHealth(state="ok")
    # Feedback is refused out loud, never dropped silently.
    with pytest.raises(RuntimeError, match=r"^the none ledger keeps no feedback$"):
        await ledger.record_feedback(Feedback(request_id=make_row(1).id, score=1.0, ts=0.0))
    assert await ledger.fetch_feedback() == []
    await ledger.close()
    with pytest.raises(RuntimeError, match="ledger is closed"):
        await ledger.record(make_row(2))
    with pytest.raises(RuntimeError, match="ledger is closed"):
        await ledger.record_feedback(Feedback(request_id="x", score=0.0, ts=0.0))


def test_importing_tierwise_does_not_import_the_optional_drivers() -> None:
    code = (
        "import sys, tierwise, tierwise.ledger, tierwise.state; "
        "print(sorted(m for m in ('asyncpg', 'redis') if m in sys.modules))"
    )
    src = Path(__file__).resolve().parents[2] / "src"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=src
    ).stdout
    assert out.strip() == "[]"
