"""A TCP proxy on 127.0.0.1 that can take a real server away and give it back, for outage tests.

It forwards bytes both ways between its clients and one target (PostgreSQL, Redis …), in the current
event loop, and fails on demand the way networks and servers fail::

    async with TcpProxy("127.0.0.1", 5432) as proxy:     # clients connect to 127.0.0.1:proxy.port
        proxy.refuse()      # every open connection is reset; new ones are refused (ECONNREFUSED)
        proxy.blackhole()   # every open connection is reset; new ones are accepted and never answered
        proxy.cut()         # reset every open connection once; new ones go through
        await proxy.restore()   # forward again (blackholed connections are reset first)

``proxy.connections`` counts the connections accepted so far.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from typing import Literal, Self

Mode = Literal["forward", "refuse", "blackhole"]


class TcpProxy:
    def __init__(self, target_host: str, target_port: int, *, port: int = 0) -> None:
        self.target = (target_host, target_port)
        self.port = port
        self.mode: Mode = "forward"
        self.connections = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> Self:
        await self._listen()
        return self

    async def stop(self) -> None:
        self._stop_listening()
        self.cut()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def cut(self) -> None:
        """Reset every open connection (both sides), as a server crash or a network drop would."""
        for writer in list(self._writers):
            _reset(writer)
        self._writers.clear()

    def refuse(self) -> None:
        """Reset every open connection and stop listening: new connections are refused."""
        self.mode = "refuse"
        self._stop_listening()
        self.cut()

    def blackhole(self) -> None:
        """Reset every open connection; new ones are accepted and then never answered."""
        self.mode = "blackhole"
        self.cut()

    async def restore(self) -> None:
        """Forward again."""
        if self.mode == "blackhole":
            self.cut()
        self.mode = "forward"
        if self._server is None:
            await self._listen()

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port, reuse_address=True)
        self.port = self._server.sockets[0].getsockname()[1]

    def _stop_listening(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._writers.add(writer)
        if self.mode != "forward":
            # Blackholed: read and drop whatever the client sends until the connection is reset.
            with contextlib.suppress(ConnectionError, OSError):
                while await reader.read(65536):
                    pass
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            _reset(writer)
            return
        self._writers.add(up_writer)
        pumps = [
            asyncio.create_task(self._pump(reader, up_writer)),
            asyncio.create_task(self._pump(up_reader, writer)),
        ]
        for task in pumps:
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        # One side closed: close the other so that neither end waits on a half-dead pair.
        for w in (writer, up_writer):
            self._writers.discard(w)
            w.close()

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, OSError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()


def _reset(writer: asyncio.StreamWriter) -> None:
    # SO_LINGER with a zero timeout makes close() send RST: the peer sees "connection reset", not a
    # polite end of stream.
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()
