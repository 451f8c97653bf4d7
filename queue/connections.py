"""What a client without a valid credential can hold: bounded time, bounded connections.

A slow client (slow-loris) opens connections and dribbles header bytes, holding a file descriptor
each without ever sending a secret. `ConnectionGuard` watches every connection from accept until a
request on it presents a valid credential (`trust`); until then the connection is *unauthenticated*:

- it must deliver a complete request within `header_timeout` of opening (or of its last answer),
  else it is closed;
- at most `max_unauthenticated` such connections are open at once; over that, the oldest idle
  ones of the address holding the most are closed (so a flood from one address pays for itself,
  and one client's burst is not cut for being many: there is no smaller per-address limit).
  *Idle* means it has not delivered a whole request head and is not waiting for an answer, and
  is older than `GRACE`: a real client sends its request the moment it connects, so a burst of
  them (a fleet behind one address, hundreds of requests at once) is not mistaken for a
  flood. Over `FLOOD_FACTOR` times the total limit, the newest idle ones go too, so a flood
  faster than the grace cannot take every file descriptor.

Trusted connections are not watched (aiohttp's keep-alive timeout still ends idle ones). Request
bodies are only read after authentication, under their own time limit (`app.read_json`). Closing
is logged once per sweep and address, never per connection, so a flood cannot flood the log.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
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
# A new connection is not counted as idle for this long (at most half the header timeout): a
# client busy with hundreds of requests of its own can take a while to write each one.
GRACE = 2.0
FLOOD_FACTOR = 2
HEAD_END = b"\r\n\r\n"


@dataclass
class _Entry:
    address: str
    transport: asyncio.BaseTransport
    opened: float
    deadline: float
    busy: int = 0
    # A whole request head arrived: it waits for the app now, not for the client.
    delivered: bool = False
    # The last bytes received, to see a head's end split across two reads.
    tail: bytes = b""

    def idle(self, settled: float) -> bool:
        """Neither delivering nor being answered, and opened before `settled`."""
        return not self.busy and not self.delivered and self.opened <= settled


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
        self.entry.delivered = False
        self.entry.tail = b""
        self.entry.deadline = self.guard.clock() + self.guard.header_timeout


class ConnectionGuard:
    """Bounds the time and number of connections that have not presented a valid credential."""

    def __init__(self, *, header_timeout: float, max_unauthenticated: int,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.header_timeout = header_timeout
        self.grace = min(GRACE, header_timeout / 2)
        self.max_unauthenticated = max_unauthenticated
        # A share the gate uses for answers that wait (`auth.Gate`); connections have no per-address limit.
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
        now = self.clock()
        self._watched[protocol] = _Entry(address, transport, now, now + self.header_timeout)
        self._limit(now)

    def received(self, protocol: object, data: bytes) -> None:
        entry = self._watched.get(protocol)
        if entry is None or entry.delivered:
            return
        keep = len(HEAD_END) - 1
        if HEAD_END in data or HEAD_END in entry.tail + data[:keep]:
            entry.delivered = True
        else:
            entry.tail = (entry.tail + data[-keep:])[-keep:]

    def closed(self, protocol: object) -> None:
        self._watched.pop(protocol, None)

    # ---- limits --------------------------------------------------------------------------

    def _limit(self, now: float) -> None:
        """Close idle connections over the limit, from the address that holds the most."""
        while len(self._watched) > self.max_unauthenticated:
            name = Counter(entry.address for entry in self._watched.values()).most_common(1)[0][0]
            if not self._close_over(now, len(self._watched) - self.max_unauthenticated, name,
                                    f"over the limit of {self.max_unauthenticated} unauthenticated connections"):
                break

    def _close_over(self, now: float, excess: int, address: str, why: str) -> int:
        """Close up to `excess` idle connections of this address, oldest first; how many were closed."""
        if excess <= 0:
            return 0
        mine = [key for key, entry in self._watched.items() if entry.address == address]
        victims = [key for key in mine if self._watched[key].idle(now - self.grace)][:excess]
        flood = len(self._watched) - len(victims) - FLOOD_FACTOR * self.max_unauthenticated
        if flood > 0:
            chosen = set(victims)
            fresh = [key for key in mine if key not in chosen and self._watched[key].idle(now)]
            victims += fresh[-flood:]
        for key in victims:
            entry = self._watched.pop(key)
            self._closed[(entry.address, why)] += 1
            entry.transport.close()
        return len(victims)

    # ---- the sweep -------------------------------------------------------------------

    def sweep(self) -> None:
        """Close idle connections past their deadline or over a limit, and log what was closed."""
        now = self.clock()
        for key, entry in list(self._watched.items()):
            if not entry.busy and not entry.delivered and entry.deadline <= now:
                self._closed[(entry.address, f"no complete request within {self.header_timeout:g} s")] += 1
                del self._watched[key]
                entry.transport.close()
        self._limit(now)
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
        self.guard.received(self.inner, data)
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
    """A site on an already bound listening socket whose connections the app's ConnectionGuard
    watches from accept. The socket is bound first (`queue.app.bind`) so a port in use fails before
    the store opens the database or renews a lease."""

    def __init__(self, runner: web.AppRunner, sock: socket.socket) -> None:
        super().__init__(runner)
        self._sock = sock

    @property
    def name(self) -> str:
        host, port = self._sock.getsockname()[:2]
        return f"http://{host}:{port}"

    @property
    def port(self) -> int:
        return int(self._sock.getsockname()[1])

    async def start(self) -> None:
        await super().start()
        runner = self._runner
        assert isinstance(runner, web.AppRunner) and runner.server is not None
        factory = runner.app[GUARD].protocol_factory(runner.server)
        self._server = await asyncio.get_running_loop().create_server(factory, sock=self._sock)


def make_runner(app: web.Application) -> web.AppRunner:
    """The runner every way of serving the queue uses (`da serve`, `da up`)."""
    return web.AppRunner(app, access_log=None, keepalive_timeout=KEEPALIVE_TIMEOUT)


async def serve(app: web.Application, sockets: list[socket.socket], *,
                ready: Callable[[], Any] | None = None) -> None:
    """Serve the app on bound sockets until SIGINT or SIGTERM, then shut down gracefully (what
    `web.run_app` does)."""
    runner = make_runner(app)
    await runner.setup()
    try:
        for sock in sockets:
            await GuardedSite(runner, sock).start()
        if ready is not None:
            ready()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        await stop.wait()
    finally:
        await runner.cleanup()
