"""Shared fixtures: a real queue service on a loopback port over a real SQLite file."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiohttp.test_utils import TestServer

from da import fleet as fleet_module
from da.queue import app as queue_app
from da.queue.client import QueueClient
from da.queue.settings import QueueSettings
from da.queue.store import Store

# The Slack tests' fixtures (emulator, bot, fleet queue) live in their own module.
pytest_plugins = ("slack_support",)

SECRET = "test-secret-0123456789"
PROJECT_VARIABLES = ("SECRET_KEY", "QUEUE_", "MACHINE_NAME", "MAX_CONCURRENT", "SHUTDOWN_GRACE", "SLACK_",
                     "DA_", "ROUTER", "GROQ_", "LOG_")


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests see none of the developer's own da settings."""
    for key in list(os.environ):
        if key.startswith(PROJECT_VARIABLES):
            monkeypatch.delenv(key)


async def wait_until(condition: Callable[[], Awaitable[Any]], timeout: float = 10.0, interval: float = 0.02) -> Any:
    """Poll an async condition until it is truthy; fail with a clear message on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = await condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(interval)


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

    async def start(self) -> None:
        app = queue_app.make_app(self.settings, self.fleet)
        if self.clock is not None:
            # The store's clock: how tests put the queue's time off the workers' (clock skew).
            app[queue_app.STORE] = Store(self.settings.db_path, sync=self.settings.sync, clock=self.clock)
        self.server = TestServer(app, host="127.0.0.1", port=self.port)
        await self.server.start_server()
        self.port = self.server.port

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.close()
            self.server = None

    async def restart(self) -> None:
        await self.stop()
        await self.start()


@pytest.fixture
async def make_server(tmp_path: Path) -> AsyncIterator[Callable[..., Awaitable[QueueServer]]]:
    servers: list[QueueServer] = []

    async def factory(fleet: fleet_module.Fleet | None = None, clock: Callable[[], float] | None = None,
                      **overrides: Any) -> QueueServer:
        values = {"secret": SECRET, "db_path": tmp_path / f"queue{len(servers)}.db", "reap_interval": 0.1,
                  "config_dir": tmp_path / "config"}
        values.update(overrides)
        server = QueueServer(QueueSettings(**values), fleet or fleet_module.Fleet(), clock)
        await server.start()
        servers.append(server)
        return server

    yield factory
    for server in servers:
        await server.stop()


@pytest.fixture
async def server(make_server: Callable[..., Awaitable[QueueServer]]) -> QueueServer:
    return await make_server()


@pytest.fixture
async def http(server: QueueServer) -> AsyncIterator[httpx.AsyncClient]:
    """A plain HTTP client with the secret, for asserting raw statuses and bodies."""
    async with httpx.AsyncClient(base_url=server.url, headers={"x-secret-key": SECRET}, timeout=30) as client:
        yield client


@pytest.fixture
async def client(server: QueueServer) -> AsyncIterator[QueueClient]:
    async with QueueClient(server.url, SECRET, timeout=30) as queue_client:
        yield queue_client
