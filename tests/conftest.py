"""Shared fixtures: a real queue service on a loopback port over a real SQLite file or PostgreSQL database.

Tests marked `@pytest.mark.backends("sqlite", "postgres")` (or a module's `pytestmark`) run once per
backend through the `backend` fixture; the rest run on SQLite. PostgreSQL tests share one
throwaway cluster per session and get a database each; without PostgreSQL they skip, saying why,
unless DA_REQUIRE_POSTGRES=1 (CI), where a missing PostgreSQL fails them.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from da import fleet as fleet_module
from da.queue.client import QueueClient
from da.queue.settings import QueueSettings
from da.queue.sqlite import SqliteStore
from tests.support import loopback, postgres
from tests.support.postgres import need_postgres
from tests.support.server import SECRET, QueueServer
from tests.support.workers import WorkerProcess

# The Slack tests' fixtures (emulator, bot, fleet queue) live in their own module.
pytest_plugins = ("tests.support.slack",)

PROJECT_VARIABLES = ("SECRET_KEY", "QUEUE_", "MACHINE_NAME", "MAX_CONCURRENT", "SHUTDOWN_GRACE", "SLACK_",
                     "DA_", "ROUTER", "GROQ_", "LOG_")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "backends(*names): run the test once on each named queue backend")
    config.addinivalue_line("markers", "long: mostly waiting (drills, retries, backoffs, leases running out)")
    # A record per request from each side (30,000 a run) would bury a failure's own log lines.
    for chatty in ("aiohttp.access", "httpx"):
        logging.getLogger(chatty).setLevel(logging.WARNING)


# How much of each test process's share the long tests are spread over; the rest is short tests only.
LONG_SPREAD = 0.85


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Long tests are spread over the first part of each test process's share of the run (xdist's worksteal
    hands each process a contiguous share, and idle processes take from the far end of the others'), so
    their waiting overlaps short tests' work and the run ends on short tests, which keep the cores busy."""
    long = [item for item in items if item.get_closest_marker("long")]
    if not long:
        return
    processes = int(getattr(config, "workerinput", {}).get("workercount", 1))
    starts = share_starts(len(items), processes)
    per_share = -(-len(long) // processes)
    stride = max(1, int(len(items) // processes * LONG_SPREAD) // per_share)
    slots: list[pytest.Item | None] = [None] * len(items)
    for index, item in enumerate(long):
        slot = starts[index % processes] + stride * (index // processes)
        if slot >= len(items) or slots[slot] is not None:
            return  # fewer tests than the processes need for this (one file, say): keep the collected order
        slots[slot] = item
    rest = iter(item for item in items if not item.get_closest_marker("long"))
    items[:] = [slot if slot is not None else next(rest) for slot in slots]


def share_starts(count: int, processes: int) -> list[int]:
    """Where each test process's share begins, as xdist's worksteal deals them: each process in turn takes what
    is left divided by the processes still to serve, so the later shares are one longer when it does not divide.
    (Assuming equal shares put a long test meant to open a share at the end of the share before it.)"""
    starts, left = [], count
    for remaining in range(processes, 0, -1):
        starts.append(count - left)
        left -= left // remaining
    return starts


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Say why PostgreSQL tests were skipped, even under -q."""
    reason = postgres.unavailable()
    if reason is not None and terminalreporter.stats.get("skipped"):
        terminalreporter.write_line(f"PostgreSQL tests skipped: {reason} (DA_REQUIRE_POSTGRES=1 makes that a failure)")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    marker = metafunc.definition.get_closest_marker("backends")
    if marker is not None and "backend" in metafunc.fixturenames:
        metafunc.parametrize("backend", marker.args, indirect=True)


def initdb_folder(config: pytest.Config) -> Path:
    """Where the run keeps its one fresh `initdb`, shared by its test processes and removed when the run
    ends: xdist's test processes are children of the run's first pytest process, which owns it."""
    owner = os.getppid() if hasattr(config, "workerinput") else os.getpid()
    return Path(tempfile.gettempdir()) / f"da-initdb-{owner}"


def pytest_unconfigure(config: pytest.Config) -> None:
    if not hasattr(config, "workerinput"):
        shutil.rmtree(initdb_folder(config), ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_cluster(pytestconfig: pytest.Config) -> Iterator[postgres.Cluster]:
    """One PostgreSQL server for the whole session, with a migrated template database."""
    need_postgres()
    cluster = postgres.Cluster().start(shared=initdb_folder(pytestconfig))
    try:
        cluster.prepare_template()
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def backend(request: pytest.FixtureRequest) -> str:
    """Which store the test's queue runs on: "sqlite" unless the test is marked for more."""
    return str(getattr(request, "param", "sqlite"))


@pytest.fixture
async def new_database(backend: str, request: pytest.FixtureRequest) -> AsyncIterator[Callable[[], Awaitable[str]]]:
    """Makes a fresh PostgreSQL database per call (dropped afterwards); returns its URL."""
    made: list[str] = []
    cluster = request.getfixturevalue("postgres_cluster") if backend == "postgres" else None

    async def factory() -> str:
        assert cluster is not None, "new_database() is for PostgreSQL tests"
        made.append(await cluster.create_database())
        return made[-1]

    yield factory
    for url in made:
        assert cluster is not None
        await cluster.drop_database(url)


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests see none of the developer's own da settings."""
    for key in list(os.environ):
        if key.startswith(PROJECT_VARIABLES):
            monkeypatch.delenv(key)


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A queue database migrated once (by the store's own code), copied for each test's new SQLite queue:
    migrating a new file costs ~15 ms of CPU and a commit per migration, hundreds of times a run."""
    path = tmp_path_factory.mktemp("template") / "queue.db"
    SqliteStore(path)._open_writer().close()
    return path


@pytest.fixture
async def make_server(tmp_path: Path, backend: str, new_database: Callable[[], Awaitable[str]],
                      sqlite_template: Path) -> AsyncIterator[Callable[..., Awaitable[QueueServer]]]:
    """Starts queue services; on PostgreSQL each gets a new database unless `db_url` names one, on SQLite
    a copy of the migrated template unless `db_path` names a file."""
    servers: list[QueueServer] = []

    async def factory(fleet: fleet_module.Fleet | None = None, clock: Callable[[], float] | None = None,
                      **overrides: Any) -> QueueServer:
        values: dict[str, Any] = {"secret": SECRET, "db_path": tmp_path / f"queue{len(servers)}.db",
                                  "reap_interval": 0.1, "config_dir": tmp_path / "config"}
        if backend == "postgres" and "db_url" not in overrides:
            values["db_url"] = await new_database()
        elif "db_path" not in overrides:
            shutil.copyfile(sqlite_template, values["db_path"])
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
    async with loopback.client(base_url=server.url, headers={"x-secret-key": SECRET}, timeout=30) as client:
        yield client


@pytest.fixture
async def client(server: QueueServer) -> AsyncIterator[QueueClient]:
    async with QueueClient(server.url, SECRET, timeout=30) as queue_client:
        yield queue_client


@pytest.fixture
def make_worker(tmp_path: Path) -> Iterator[Callable[..., WorkerProcess]]:
    """Starts real `da worker` processes (`make_worker(url, folder=tmp_path, **env)`); all are killed at teardown."""
    started: list[WorkerProcess] = []

    def factory(url: str, folder: Path | None = None, **env: str) -> WorkerProcess:
        worker = WorkerProcess(url, folder or tmp_path, **env)
        started.append(worker)
        return worker.start()

    yield factory
    for worker in started:
        worker.kill()
