"""The queue service: the app factory, and the listening sockets it is served on.

The routes are declared in `routes` (the three that wait in `waiting`), what every route shares
(state, the middleware, JSON in and out) is in `http`, and what runs beside them (the reaper,
give-back, liveness sharing) is in `upkeep`.
"""

from __future__ import annotations

import asyncio
import logging
import socket

from aiohttp import web

from da import fleet as fleet_module
from da.queue import auth, connections, metrics, routes, upkeep
from da.queue import store as store_module
from da.queue.http import CLAIM_LATENCY, CLOSING, ROSTER, SETTINGS, STORE, middleware
from da.queue.roster import Roster
from da.queue.settings import QueueSettings

logger = logging.getLogger(__name__)


def make_app(settings: QueueSettings, fleet: fleet_module.Fleet | None = None) -> web.Application:
    """Build the queue service; the store opens and the reaper starts with the app."""
    if not settings.secret:
        raise ValueError("the queue service needs a secret")
    limit = connections.descriptor_limit()
    unauthenticated, per_credential = connections.caps(limit)
    guard = connections.ConnectionGuard(header_timeout=settings.header_timeout, idle_timeout=settings.idle_timeout,
                                        max_unauthenticated=settings.max_unauthenticated or unauthenticated,
                                        max_per_credential=settings.max_per_credential or per_credential)
    logger.info("%d file descriptors: at most %d unauthenticated connections, %d per credential", limit,
                guard.max_unauthenticated, guard.max_per_credential)
    gate = auth.Gate(settings.secret, lease=settings.lease, guard=guard, access=routes.ACCESS)
    app = web.Application(middlewares=[middleware(gate, routes.PUBLIC)], client_max_size=settings.max_body)
    app[SETTINGS] = settings
    app[ROSTER] = Roster(fleet or fleet_module.Fleet())
    app[CLAIM_LATENCY] = metrics.Histogram("da_claim_seconds", "Time to run one claim statement.")
    app[STORE] = store_module.create_store(settings)
    app[connections.GUARD] = guard
    app[CLOSING] = asyncio.Event()
    app.on_shutdown.append(closing)
    app.add_routes([route.definition() for route in routes.ROUTES])
    app.cleanup_ctx.append(upkeep.running)
    app.cleanup_ctx.append(connections.watching)
    return app


async def closing(app: web.Application) -> None:
    """on_shutdown: wake every parked long-poll so it answers before the server waits for handlers."""
    app[CLOSING].set()
    store = app[STORE]
    for signal in (store.pending_changed, store.events_appended, store.task_cancelled):
        signal.notify()


def bind(host: str, port: int) -> list[socket.socket]:
    """Listening sockets for host:port (every address it names, as aiohttp's own site would), taken
    before the app starts: a port that is in use fails here, before the store has opened the
    database or renewed a lease. Pass them to `web.run_app(sock=...)` or `web.SockSite`."""
    sockets: list[socket.socket] = []
    try:
        for family, kind, proto, _, address in dict.fromkeys(
                socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)):
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(address)
            # Listening at once holds the port; connections that arrive before the app is ready wait.
            sock.listen(socket.SOMAXCONN)
    except OSError:
        for sock in sockets:
            sock.close()
        raise
    return sockets
