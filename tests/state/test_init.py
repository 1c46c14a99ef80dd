"""open_state: the storage.state URL picks the backend."""

from __future__ import annotations

import sys

import pytest

from tierwise.errors import ConfigError
from tierwise.state import MemoryState, open_state


def test_memory() -> None:
    assert isinstance(open_state("memory://"), MemoryState)


@pytest.mark.parametrize("url", ["redis://127.0.0.1:6379/0", "rediss://:secret@cache.internal:6380/1"])
async def test_redis(url: str) -> None:
    from tierwise.state.redis import RedisState

    state = open_state(url)
    assert isinstance(state, RedisState)
    assert "secret" not in state.where
    await state.close()


def test_redis_without_the_package_asks_for_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "redis", None)
    with pytest.raises(ConfigError, match=r"pip install 'tierwise\[redis\]'"):
        open_state("redis://localhost")


@pytest.mark.parametrize(
    ("url", "message"),
    [("memcached://u:hunter2@cache", "unsupported scheme 'memcached://'"), ("memory", "not a URL")],
)
def test_bad_urls_are_config_errors_without_secrets(url: str, message: str) -> None:
    with pytest.raises(ConfigError, match=r"^storage\.state: ") as caught:
        open_state(url)
    assert message in str(caught.value)
    assert "hunter2" not in str(caught.value)
