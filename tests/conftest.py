"""Fixtures shared across the test tree: fake upstream servers (real HTTP on 127.0.0.1) and the
environment the test fleet's configuration expects."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.fakes.upstream import FakeUpstream


@pytest.fixture(autouse=True)
def _fleet_key(monkeypatch: pytest.MonkeyPatch) -> None:
    """The fleet of tests/harness.py reads its upstream API key from TW_TEST_KEY."""
    from tests.harness import API_KEY  # imported here: the harness pulls in the whole gateway

    monkeypatch.setenv("TW_TEST_KEY", API_KEY)


@pytest.fixture
async def openai_upstream() -> AsyncIterator[FakeUpstream]:
    """A started OpenAI-compatible FakeUpstream; ``.url`` ends in ``/v1``."""
    async with FakeUpstream(kind="openai") as upstream:
        yield upstream


@pytest.fixture
async def anthropic_upstream() -> AsyncIterator[FakeUpstream]:
    """A started Anthropic Messages FakeUpstream; ``.url`` has no ``/v1``."""
    async with FakeUpstream(kind="anthropic") as upstream:
        yield upstream
