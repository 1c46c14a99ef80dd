"""Fixtures of the gateway tests: a whole stack on 127.0.0.1 (tests/harness.py) and the official openai
SDK pointed at it. A test module that needs another fleet or policy defines its own ``stack``; ``client``
then uses it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from tests.harness import Stack, start_stack


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    s = start_stack(tmp_path)
    yield s
    s.close()


@pytest.fixture
def client(stack: Stack) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=stack.base_url, api_key="client-key", max_retries=0, timeout=20) as c:
        yield c
