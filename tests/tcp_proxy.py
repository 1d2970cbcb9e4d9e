"""A TCP proxy on loopback that a test controls: forward, cut, or swallow everything.

Put it between the gateway and PostgreSQL (``storage.url`` names the proxy's port) to make
the database go away the two ways it does in production:

- ``cut()``: every connection through it is closed, and new ones are closed as soon as they
  are accepted (a database restarting, a network partition the kernel notices);
- ``black_hole()``: connections are accepted and kept, but no byte goes through either way
  (packets silently dropped: a firewall, a dead host, a half-open connection);
- ``forward()``: back to normal; connections made from now on reach the server.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Literal

__all__ = ["TcpProxy", "tcp_proxy"]

Mode = Literal["forward", "cut", "black_hole"]


class TcpProxy:
    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.mode: Mode = "forward"
        self.port = 0
        self._server: asyncio.Server | None = None
        self._closed = asyncio.Event()
        #: Set while bytes may go through (forward, cut, closing); clear in a black hole.
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._links: set[asyncio.Task[None]] = set()
        #: Every socket of the connections in flight, so that a cut can close them.
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    def forward(self) -> None:
        self.mode = "forward"
        self._flowing.set()

    def cut(self) -> None:
        """Close every connection now, and each new one as soon as it is made."""
        self.mode = "cut"
        self._flowing.set()
        for writer in list(self._writers):
            writer.transport.abort()

    def black_hole(self) -> None:
        """Keep every connection open and let nothing through, either way."""
        self.mode = "black_hole"
        self._flowing.clear()

    async def close(self) -> None:
        """Stop listening and end every connection; each one's task then ends by itself."""
        self._closed.set()
        self._flowing.set()
        if self._server is not None:
            self._server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        await asyncio.gather(*self._links, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._links.add(task)
        self._writers.add(writer)
        try:
            if self.mode == "cut":
                return
            if self.mode == "black_hole":
                await self._closed.wait()  # until the test ends
            up_reader, up_writer = await asyncio.open_connection(*self.target)
            self._writers.add(up_writer)
            try:
                await asyncio.gather(self._pump(reader, up_writer),
                                     self._pump(up_reader, writer), return_exceptions=True)
            finally:
                self._writers.discard(up_writer)
                up_writer.transport.abort()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            self._writers.discard(writer)
            writer.transport.abort()
            self._links.discard(task)

    async def _pump(self, source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        while data := await source.read(65536):
            await self._flowing.wait()  # in a black hole, the bytes are held: never arrive
            if self.mode == "cut" or self._closed.is_set():
                break
            sink.write(data)
            await sink.drain()
        # One side finished or was cut: end the other side too.
        sink.transport.abort()


@contextlib.asynccontextmanager
async def tcp_proxy(target_host: str, target_port: int) -> AsyncIterator[TcpProxy]:
    proxy = TcpProxy(target_host, target_port)
    await proxy.start()
    try:
        yield proxy
    finally:
        await proxy.close()
