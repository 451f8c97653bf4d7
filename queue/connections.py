"""What a client without a valid credential can hold: bounded time, bounded connections.

A slow client (slow-loris) opens connections and dribbles header bytes, holding a file descriptor
each without ever sending a secret. `ConnectionGuard` watches every connection from accept until a
request on it presents a valid credential (`trust`); until then the connection is *unauthenticated*:

- it must deliver a complete request within `header_timeout` of opening (or of its last answer),
  else it is closed;
- at most `max_unauthenticated` such connections are open at once, and a quarter of that per
  address; over either limit the oldest idle one (of the address holding the most) is closed, or
  the new one if every other is waiting for an answer.

Trusted connections are not watched (aiohttp's keep-alive timeout still ends idle ones). Request
bodies are only read after authentication, under their own time limit (`app.read_json`). Closing
is logged once per sweep and address, never per connection, so a flood cannot flood the log.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

logger = logging.getLogger(__name__)

# Idle keep-alive connections of authenticated clients close after this (aiohttp's default is an
# hour); clients (httpx) drop their own idle connections after 5 s, so this never races a request.
KEEPALIVE_TIMEOUT = 75.0
# Sweeps run this often at most (more often for short header timeouts, as in the tests).
SWEEP_INTERVAL = 1.0


@dataclass
class _Entry:
    address: str
    transport: asyncio.BaseTransport
    deadline: float
    busy: int = 0


class _Deciding:
    """While a request on an unauthenticated connection is decided (or its wrong answer waits), the
    connection is not idle; afterwards it has a fresh `header_timeout` for its next request."""

    __slots__ = ("entry", "guard")

    def __init__(self, guard: ConnectionGuard, entry: _Entry) -> None:
        self.guard = guard
        self.entry = entry

    def __enter__(self) -> None:
        self.entry.busy += 1

    def __exit__(self, *exc: object) -> None:
        self.entry.busy -= 1
        self.entry.deadline = self.guard.clock() + self.guard.header_timeout


class ConnectionGuard:
    """Bounds the time and number of connections that have not presented a valid credential."""

    def __init__(self, *, header_timeout: float, max_unauthenticated: int,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.header_timeout = header_timeout
        self.max_unauthenticated = max_unauthenticated
        self.per_address = max(1, max_unauthenticated // 4)
        self.clock = clock
        # Unauthenticated connections, oldest first, keyed by aiohttp's protocol (request.protocol).
        self._watched: dict[object, _Entry] = {}
        self._closed: Counter[tuple[str, str]] = Counter()

    @property
    def unauthenticated(self) -> int:
        return len(self._watched)

    def protocol_factory(self, factory: Callable[[], asyncio.Protocol]) -> Callable[[], asyncio.Protocol]:
        """Wrap a server's protocol factory so each new connection is watched from accept."""
        return lambda: _Watched(factory(), self)

    def trust(self, protocol: object) -> None:
        """A request on this connection presented a valid credential: stop watching it."""
        self._watched.pop(protocol, None)

    def deciding(self, protocol: object) -> contextlib.AbstractContextManager[None]:
        entry = self._watched.get(protocol)
        return contextlib.nullcontext() if entry is None else _Deciding(self, entry)

    # ---- called by the watched protocol ---------------------------------------------

    def opened(self, protocol: object, transport: asyncio.BaseTransport) -> None:
        peer = transport.get_extra_info("peername")
        address = str(peer[0]) if isinstance(peer, tuple) else str(peer or "?")
        self._watched[protocol] = _Entry(address, transport, self.clock() + self.header_timeout)
        mine = [entry for entry in self._watched.values() if entry.address == address]
        if len(mine) > self.per_address:
            self._evict(mine, f"over the limit of {self.per_address} unauthenticated connections per address")
        if len(self._watched) > self.max_unauthenticated:
            by_address = Counter(entry.address for entry in self._watched.values())
            crowded = by_address.most_common(1)[0][0]
            self._evict([entry for entry in self._watched.values() if entry.address == crowded],
                        f"over the limit of {self.max_unauthenticated} unauthenticated connections")

    def closed(self, protocol: object) -> None:
        self._watched.pop(protocol, None)

    def _evict(self, candidates: list[_Entry], why: str) -> None:
        """Close the oldest idle connection of these (the newest, if all others await an answer)."""
        victim = next((entry for entry in candidates if not entry.busy), candidates[-1])
        self._closed[(victim.address, why)] += 1
        victim.transport.close()

    # ---- the sweep -------------------------------------------------------------------

    def sweep(self) -> None:
        """Close idle unauthenticated connections past their deadline, and log what was closed."""
        now = self.clock()
        for entry in list(self._watched.values()):
            if not entry.busy and entry.deadline <= now:
                self._closed[(entry.address, f"no complete request within {self.header_timeout:g} s")] += 1
                entry.transport.close()
        for (address, why), count in sorted(self._closed.items()):
            logger.warning("closed %d slow or surplus connection(s) from %s: %s", count, address, why)
        self._closed.clear()

    async def sweep_forever(self) -> None:
        interval = min(SWEEP_INTERVAL, self.header_timeout / 4)
        while True:
            await asyncio.sleep(interval)
            self.sweep()


class _Watched(asyncio.Protocol):
    """aiohttp's protocol for one connection, with the guard told when it opens and closes."""

    __slots__ = ("guard", "inner")

    def __init__(self, inner: asyncio.Protocol, guard: ConnectionGuard) -> None:
        self.inner = inner
        self.guard = guard

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.inner.connection_made(transport)
        self.guard.opened(self.inner, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self.guard.closed(self.inner)
        self.inner.connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self.inner.eof_received()

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()


GUARD = web.AppKey("connection_guard", ConnectionGuard)


async def watching(app: web.Application) -> AsyncIterator[None]:
    """cleanup_ctx: sweep the app's connection guard while the app runs."""
    sweeper = asyncio.create_task(app[GUARD].sweep_forever())
    yield
    sweeper.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await sweeper


class GuardedSite(web.BaseSite):
    """A TCP site whose connections the app's ConnectionGuard watches from accept."""

    def __init__(self, runner: web.AppRunner, host: str, port: int) -> None:
        super().__init__(runner)
        self._host = host
        self._port = port

    @property
    def name(self) -> str:
        return f"http://{self._host}:{self.port}"

    @property
    def port(self) -> int:
        """The bound port (the asked one until started; useful with port 0)."""
        if self._server is not None and getattr(self._server, "sockets", None):
            return int(self._server.sockets[0].getsockname()[1])  # type: ignore[attr-defined]
        return self._port

    async def start(self) -> None:
        await super().start()
        runner = self._runner
        assert isinstance(runner, web.AppRunner) and runner.server is not None
        factory = runner.app[GUARD].protocol_factory(runner.server)
        self._server = await asyncio.get_running_loop().create_server(factory, self._host, self._port,
                                                                      reuse_address=True)


def make_runner(app: web.Application) -> web.AppRunner:
    """The runner every way of serving the queue uses (`da serve`, `da up`)."""
    return web.AppRunner(app, access_log=None, keepalive_timeout=KEEPALIVE_TIMEOUT)


async def serve(app: web.Application, host: str, port: int, *, ready: Callable[[], Any] | None = None) -> None:
    """Serve the app until SIGINT or SIGTERM, then shut down gracefully (what `web.run_app` does)."""
    runner = make_runner(app)
    await runner.setup()
    try:
        await GuardedSite(runner, host, port).start()
        if ready is not None:
            ready()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        await stop.wait()
    finally:
        await runner.cleanup()
