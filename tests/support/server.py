"""A real queue service on a loopback port, over a SQLite file or a PostgreSQL database, for the tests to drive."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aiohttp.test_utils import TestServer

from da import fleet as fleet_module
from da.queue import app as queue_app
from da.queue import store as store_module
from da.queue.settings import QueueSettings
from tests.support.ports import free_port

SECRET = "test-secret-0123456789"


class QueueServer:
    """A running queue service; `restart()` keeps the database file."""

    def __init__(self, settings: QueueSettings, fleet: fleet_module.Fleet,
                 clock: Callable[[], float] | None = None) -> None:
        self.settings = settings
        self.fleet = fleet
        self.clock = clock
        self.server: TestServer | None = None
        self.port: int | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def query(self, sql: str) -> list[tuple[Any, ...]]:
        """Run SQL straight on the service's database (either backend), for asserting stored state."""
        if self.settings.db_url:
            import asyncpg

            db = await asyncpg.connect(self.settings.db_url)
            try:
                return [tuple(row) for row in await db.fetch(sql)]
            finally:
                await db.close()
        import sqlite3

        with sqlite3.connect(self.settings.db_path) as db:
            return db.execute(sql).fetchall()

    async def start(self) -> None:
        app = queue_app.make_app(self.settings, self.fleet)
        if self.clock is not None:
            # The store's clock: how tests put the queue's time off the workers' (clock skew).
            app[queue_app.STORE] = store_module.create_store(self.settings, clock=self.clock)
        if self.port is None:
            self.port = free_port()
        self.server = TestServer(app, host="127.0.0.1", port=self.port)
        await self.server.start_server()

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.close()
            self.server = None

    async def restart(self) -> None:
        await self.stop()
        await self.start()
