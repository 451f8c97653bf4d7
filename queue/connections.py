"""What a connection can hold: bounded time for every connection, bounded numbers for strangers and
for each credential, and the descriptors to hold them with.

A slow client (slow-loris) opens connections and dribbles header bytes, holding a file descriptor
each. `ConnectionGuard` watches every connection from accept to close:

- a request's head must arrive whole within `header_timeout`: of the connection's opening or last
  answer while it has never presented a valid credential (a *stranger*), of its first byte once it
  has. Blank lines before a request line are not a request (HTTP skips them), so they never stop
  the clock;
- an authenticated connection that sends nothing (or only blank lines) closes after `idle_timeout`;
- at most `max_unauthenticated` strangers are open at once; over that, the oldest idle ones of the
  address holding the most are closed (so a flood from one address pays for itself, and one
  client's burst is not cut for being many: there is no smaller per-address limit). *Idle* means
  it has not delivered a whole request head and is not being answered, and is older than `GRACE`:
  a real client sends its request the moment it connects, so a burst of them (a fleet behind one
  address) is not mistaken for a flood. Over `FLOOD_FACTOR` times the limit, the oldest idle ones
  go even within their grace: a flood faster than the grace cannot take every descriptor, and a
  real client connecting after it still has the time to send its request. A connection that has
  authenticated is never cut for strangers;
- each credential (the admin secret, each token) holds at most `max_per_credential` connections:
  authenticating one more closes that credential's oldest idle connection, and when all of them are
  busy the request is refused (`auth.Gate`), so no token a task can read holds every descriptor.

The caps derive from the descriptor limit, which the service raises to its hard limit at start
(`descriptor_limit`). Request bodies are read under their own time limit (`http.read_json`). Closing
is logged once per sweep and address, never per connection, so a flood cannot flood the log.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import resource
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
DEFAULT_IDLE_TIMEOUT = 75.0
# Sweeps run this often at most (more often for short timeouts, as in the tests).
SWEEP_INTERVAL = 1.0
# A new connection is not counted as idle for this long (at most half the header timeout): a
# client busy with hundreds of requests of its own can take a while to write each one.
GRACE = 2.0
FLOOD_FACTOR = 2
HEAD_END = b"\r\n\r\n"
# Descriptors kept back from the caps for the database and its WAL, the log, and pipes.
RESERVED_DESCRIPTORS = 64
# Caps for a very high limit: beyond these a flood costs memory rather than descriptors.
MOST_UNAUTHENTICATED = 4096
MOST_PER_CREDENTIAL = 1024
# What the soft limit is raised to when the hard limit is unlimited (macOS under launchd), and
# macOS's per-process ceiling (OPEN_MAX) when even that is refused.
UNLIMITED_TARGET = 65536
MACOS_OPEN_MAX = 10240


def descriptor_limit() -> int:
    """Raise this process's soft descriptor limit (RLIMIT_NOFILE) to its hard limit; the limit now."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = UNLIMITED_TARGET if hard == resource.RLIM_INFINITY else hard
    if soft == resource.RLIM_INFINITY or soft >= target:
        return UNLIMITED_TARGET if soft == resource.RLIM_INFINITY else soft
    for wanted in (target, min(target, MACOS_OPEN_MAX)):
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
            return wanted
    return soft


def caps(limit: int) -> tuple[int, int]:
    """(unauthenticated connections, connections per credential) for a descriptor limit: strangers
    (twice their cap in a flood) and two credentials at their cap still leave descriptors free."""
    usable = max(limit - RESERVED_DESCRIPTORS, 32)
    return min(usable // 4, MOST_UNAUTHENTICATED), min(usable // 8, MOST_PER_CREDENTIAL)


@dataclass
class _Entry:
    address: str
    transport: asyncio.BaseTransport
    opened: float
    deadline: float
    # The credential it authenticated with (`auth.Principal.credential`); None: a stranger.
    credential: str | None = None
    busy: int = 0
    # A request line has begun since the last answer (blank lines before one do not count).
    started: bool = False
    # A whole request head arrived: it waits for the app now, not for the client.
    delivered: bool = False
    # The last bytes received, to see a head's end split across two reads.
    tail: bytes = b""

    def idle(self, settled: float) -> bool:
        """Neither delivering nor being answered, and opened before `settled`."""
        return not self.busy and not self.delivered and self.opened <= settled


class _Handling:
    """While a request is answered its connection is busy; afterwards it has a fresh header
    timeout (a stranger) or idle timeout (authenticated) for its next request."""

    __slots__ = ("entry", "guard")

    def __init__(self, guard: ConnectionGuard, entry: _Entry) -> None:
        self.guard = guard
        self.entry = entry

    def __enter__(self) -> None:
        self.entry.busy += 1

    def __exit__(self, *exc: object) -> None:
        entry = self.entry
        entry.busy -= 1
        if entry.busy:
            return
        entry.delivered = entry.started = False
        entry.tail = b""
        guard = self.guard
        entry.deadline = guard.clock() + (guard.header_timeout if entry.credential is None else guard.idle_timeout)


class ConnectionGuard:
    """Bounds the time of every connection, and the number held by strangers and by each credential."""

    def __init__(self, *, header_timeout: float, max_unauthenticated: int, max_per_credential: int,
                 idle_timeout: float = DEFAULT_IDLE_TIMEOUT, clock: Callable[[], float] = time.monotonic) -> None:
        self.header_timeout = header_timeout
        self.idle_timeout = idle_timeout
        self.grace = min(GRACE, header_timeout / 2)
        self.max_unauthenticated = max_unauthenticated
        self.max_per_credential = max_per_credential
        # A share the gate uses for answers that wait (`auth.Gate`); connections have no per-address limit.
        self.per_address = max(1, max_unauthenticated // 4)
        self.clock = clock
        # Every connection, and the strangers and each credential's apart, oldest first, keyed by
        # aiohttp's protocol (request.protocol).
        self._entries: dict[object, _Entry] = {}
        self._strangers: dict[object, _Entry] = {}
        self._members: dict[str, dict[object, _Entry]] = {}
        self._closed: Counter[tuple[str, str]] = Counter()

    @property
    def unauthenticated(self) -> int:
        return len(self._strangers)

    def protocol_factory(self, factory: Callable[[], asyncio.Protocol]) -> Callable[[], asyncio.Protocol]:
        """Wrap a server's protocol factory so each new connection is watched from accept."""
        return lambda: _Watched(factory(), self)

    def handling(self, protocol: object) -> contextlib.AbstractContextManager[None]:
        """The connection is busy answering a request for as long as this is entered."""
        entry = self._entries.get(protocol)
        return contextlib.nullcontext() if entry is None else _Handling(self, entry)

    def trust(self, protocol: object, credential: str, name: str) -> bool:
        """A request on this connection presented a valid credential; False when that credential
        holds its cap of connections already, all of them busy (the connection stays a stranger)."""
        entry = self._entries.get(protocol)
        if entry is None or entry.credential == credential:
            return True
        group = self._members.setdefault(credential, {})
        excess = len(group) + 1 - self.max_per_credential
        if excess > 0:
            victims = [key for key, other in group.items() if other.idle(self.clock())][:excess]
            if len(victims) < excess:
                return False
            for key in victims:
                self._close(key, f"over the limit of {self.max_per_credential} connections of {name}")
        self._leave(protocol, entry)
        entry.credential = credential
        group[protocol] = entry
        return True

    # ---- called by the watched protocol ---------------------------------------------

    def opened(self, protocol: object, transport: asyncio.BaseTransport) -> None:
        peer = transport.get_extra_info("peername")
        address = str(peer[0]) if isinstance(peer, tuple) else str(peer or "?")
        now = self.clock()
        entry = _Entry(address, transport, now, now + self.header_timeout)
        self._entries[protocol] = self._strangers[protocol] = entry
        self._limit(now)

    def received(self, protocol: object, data: bytes) -> None:
        entry = self._entries.get(protocol)
        if entry is None or entry.delivered:
            return
        if not entry.started:
            data = data.lstrip(b"\r\n")
            if not data:
                return
            entry.started = True
            if entry.credential is not None:
                entry.deadline = self.clock() + self.header_timeout
        keep = len(HEAD_END) - 1
        if HEAD_END in data or HEAD_END in entry.tail + data[:keep]:
            entry.delivered = True
        else:
            entry.tail = (entry.tail + data[-keep:])[-keep:]

    def closed(self, protocol: object) -> None:
        entry = self._entries.pop(protocol, None)
        if entry is not None:
            self._leave(protocol, entry)

    def _leave(self, protocol: object, entry: _Entry) -> None:
        if entry.credential is None:
            self._strangers.pop(protocol, None)
            return
        group = self._members[entry.credential]
        group.pop(protocol, None)
        if not group:
            del self._members[entry.credential]

    def _close(self, protocol: object, why: str) -> None:
        entry = self._entries.pop(protocol)
        self._leave(protocol, entry)
        self._closed[(entry.address, why)] += 1
        entry.transport.close()

    # ---- limits --------------------------------------------------------------------------

    def _limit(self, now: float) -> None:
        """Close idle strangers over the limit, oldest first, from the address that holds the most."""
        while len(self._strangers) > self.max_unauthenticated:
            address = Counter(entry.address for entry in self._strangers.values()).most_common(1)[0][0]
            mine = [key for key, entry in self._strangers.items() if entry.address == address]
            excess = len(self._strangers) - self.max_unauthenticated
            victims = [key for key in mine if self._strangers[key].idle(now - self.grace)][:excess]
            flood = len(self._strangers) - len(victims) - FLOOD_FACTOR * self.max_unauthenticated
            if flood > 0:
                chosen = set(victims)
                victims += [key for key in mine if key not in chosen and self._strangers[key].idle(now)][:flood]
            if not victims:
                break
            for key in victims:
                self._close(key, f"over the limit of {self.max_unauthenticated} unauthenticated connections")

    # ---- the sweep -------------------------------------------------------------------

    def sweep(self) -> None:
        """Close idle connections past their deadline or over a limit, and log what was closed."""
        now = self.clock()
        for key, entry in list(self._entries.items()):
            if not entry.busy and not entry.delivered and entry.deadline <= now:
                idle = entry.credential is not None and not entry.started
                self._close(key, f"idle for {self.idle_timeout:g} s" if idle
                            else f"no complete request within {self.header_timeout:g} s")
        self._limit(now)
        for (address, why), count in sorted(self._closed.items()):
            logger.warning("closed %d slow or surplus connection(s) from %s: %s", count, address, why)
        self._closed.clear()

    async def sweep_forever(self) -> None:
        interval = min(SWEEP_INTERVAL, self.header_timeout / 4, self.idle_timeout / 4)
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
    return web.AppRunner(app, access_log=None, keepalive_timeout=app[GUARD].idle_timeout)


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
