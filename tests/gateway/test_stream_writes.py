"""The gateway's stream writer: frames of chunks that arrive together go out in one write, the first
content at once, and nothing is held while the handler waits for the upstream."""

from __future__ import annotations

import asyncio

import pytest

from tierwise.gateway.app import _FrameWriter


class _Recorder:
    """Stands in for the aiohttp response: records each write."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.eof: bytes | None = None
        self.fail = False

    async def write(self, data: bytes) -> None:
        if self.fail:
            raise ConnectionResetError("the client went away")
        self.writes.append(data)

    async def write_eof(self, data: bytes = b"") -> None:
        self.eof = data


async def _wait() -> None:
    """What the handler does while the upstream is silent: let the loop run (twice: the queued
    callback starts the write, then the write runs)."""
    await asyncio.sleep(0)
    await asyncio.sleep(0)


async def _started(response: _Recorder) -> _FrameWriter:
    writer = _FrameWriter(response)  # type: ignore[arg-type]
    await writer.write(b"role")
    await writer.write(b"first", content=True)
    return writer


async def test_frames_that_arrive_together_are_one_write_and_the_first_content_is_not_held() -> None:
    response = _Recorder()
    writer = await _started(response)
    assert response.writes == [b"rolefirst"]  # the role chunk went out with the first content, at once
    for frame in (b"second", b"third", b"finish"):
        await writer.write(frame, content=True)
    await writer.end(b"[DONE]")
    assert response.writes == [b"rolefirst"]
    assert response.eof == b"secondthirdfinish[DONE]"  # the rest of the burst: one write, with the end


async def test_nothing_is_held_while_the_handler_waits() -> None:
    response = _Recorder()
    writer = await _started(response)
    await writer.write(b"second", content=True)
    await _wait()  # the upstream is silent: what was held is sent now, not with the next chunk
    assert response.writes == [b"rolefirst", b"second"]
    await writer.write(b"third", content=True)  # after a wait: written at once, as a plain write would
    assert response.writes == [b"rolefirst", b"second", b"third"]
    await _wait()
    await writer.end(b"[DONE]")
    assert response.writes == [b"rolefirst", b"second", b"third"]
    assert response.eof == b"[DONE]"


async def test_a_large_burst_is_not_held_past_the_limit() -> None:
    response = _Recorder()
    writer = await _started(response)
    frame = b"x" * 1000
    for _ in range(100):
        await writer.write(frame, content=True)
    assert sum(map(len, response.writes[1:])) > 64 * 1024  # written while the burst went on
    await writer.end(b"")
    assert sum(map(len, response.writes[1:])) + len(response.eof or b"") == 100 * len(frame)


async def test_a_client_gone_during_a_held_write_is_raised_at_the_next_write() -> None:
    response = _Recorder()
    writer = await _started(response)
    await writer.write(b"second", content=True)
    response.fail = True
    await _wait()  # the held frame's write fails in the background
    with pytest.raises(ConnectionResetError):
        await writer.write(b"third", content=True)
    writer.discard()
