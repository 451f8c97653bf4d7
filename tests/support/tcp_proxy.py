"""A loopback TCP proxy the tests can cut, restore and freeze.

It stands between a client and a real server (PostgreSQL, or the queue itself) to play a host
that dies (`cut`: every connection reset, new ones refused), comes back (`restore`) or hangs
(`freeze`: connections stay open but no byte moves), which a real server on loopback cannot be
made to do on demand.
"""

from __future__ import annotations

import asyncio
import contextlib

from tests.support.ports import free_port

CHUNK = 65536


class Proxy:
    """Forwards 127.0.0.1:<port> to a target host and port."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = free_port()
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._pumps: set[asyncio.Task[None]] = set()
        self._flowing = asyncio.Event()
        self._flowing.set()

    async def start(self) -> Proxy:
        self._server = await asyncio.start_server(self._accepted, "127.0.0.1", self.port)
        return self

    async def cut(self) -> None:
        """The host dies: reset every connection and refuse new ones until `restore`."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()
        for pump in list(self._pumps):
            pump.cancel()

    async def restore(self) -> None:
        """The host answers again on the same port."""
        self._flowing.set()
        if self._server is None:
            await self.start()

    def freeze(self) -> None:
        """The host hangs: connections stay open and new ones are accepted, but nothing is forwarded."""
        self._flowing.clear()

    def thaw(self) -> None:
        self._flowing.set()

    async def close(self) -> None:
        await self.cut()

    async def _accepted(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        try:
            server_reader, server_writer = await asyncio.open_connection(*self.target)
        except OSError:
            client_writer.transport.abort()
            return
        self._writers.update((client_writer, server_writer))
        pumps = [asyncio.ensure_future(self._pump(client_reader, server_writer)),
                 asyncio.ensure_future(self._pump(server_reader, client_writer))]
        self._pumps.update(pumps)
        try:
            await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for pump in pumps:
                pump.cancel()
                self._pumps.discard(pump)
            for writer in (client_writer, server_writer):
                self._writers.discard(writer)
                writer.transport.abort()

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            while True:
                data = await reader.read(CHUNK)
                if not data:
                    return
                await self._flowing.wait()
                writer.write(data)
                await writer.drain()
