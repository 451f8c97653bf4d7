"""The queue on PostgreSQL when its database stops answering: 503 at once, back by itself, no lease lost.

A loopback TCP proxy stands between the queue and the session's PostgreSQL server, so a test can
make the database host die (every connection reset, new ones refused), hang, or come back, which the
real server cannot be made to do on demand. The full failover (a standby promoted) is the drill in
test_failover.py.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import httpx
import pytest

from da.queue import errors, routes
from da.queue.client import QueueClient
from tests.support import loopback, postgres
from tests.support.ports import free_port
from tests.support.server import SECRET, QueueServer
from tests.support.tcp_proxy import Proxy
from tests.support.waiting import until_parked, wait_until
from tests.support.workers import WorkerProcess, wait_for_status

pytestmark = [pytest.mark.backends("postgres"), pytest.mark.long]
RUN = ["run_script"]
# "At once": far below any long-poll's wait and the client's own timeout, with room for a loaded CI.
AT_ONCE = 3.0


@dataclass
class Database:
    """A test database reached directly (`url`) and through a proxy the test controls (`proxied`)."""

    url: str
    proxied: str
    proxy: Proxy

    async def sql(self, statement: str, *, database: str | None = None) -> list[asyncpg.Record]:
        db = await asyncpg.connect(self.url if database is None else f"{self.url.rsplit('/', 1)[0]}/{database}")
        try:
            return list(await db.fetch(statement))
        finally:
            await db.close()


@pytest.fixture
async def database(postgres_cluster: postgres.Cluster,
                   new_database: Callable[[], Awaitable[str]]) -> AsyncIterator[Database]:
    url = await new_database()
    proxy = await Proxy("127.0.0.1", postgres_cluster.port).start()
    yield Database(url, url.replace(f":{postgres_cluster.port}/", f":{proxy.port}/"), proxy)
    await proxy.close()


async def health(server: QueueServer) -> httpx.Response:
    async with loopback.client(timeout=30) as http:
        return await http.get(f"{server.url}/health")


async def timed(call: Awaitable[httpx.Response]) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    response = await call
    return response, time.monotonic() - started


async def test_without_a_database_every_route_answers_503_at_once_and_the_queue_comes_back(
        database: Database, make_server: Callable[..., Awaitable[QueueServer]]) -> None:
    server = await make_server(db_url=database.proxied)
    async with QueueClient(server.url, SECRET, timeout=30) as client, \
            loopback.client(base_url=server.url, headers={"x-secret-key": SECRET}, timeout=30) as http:
        kept = await client.create_task("run_script", {"script": "true"})
        _, last = await client.events(-1)
        bus_before = await database.sql("SELECT pid FROM pg_stat_activity WHERE application_name = 'da-queue-bus' "
                                        "AND datname = current_database()")
        parked_claim = asyncio.create_task(client.claim("w", ["lint"], wait=30))
        parked_feed = asyncio.create_task(client.events(last, wait=30))
        await until_parked(server.url, "claim")
        await until_parked(server.url, "events")
        assert not parked_claim.done() and not parked_feed.done()

        assert (await health(server)).status_code == 200
        await database.proxy.cut()
        cut_at = time.monotonic()
        # Long-polls that were waiting end empty instead of holding on to a dead database.
        assert await asyncio.wait_for(parked_claim, 10) is None
        assert (await asyncio.wait_for(parked_feed, 10))[0] == []
        assert time.monotonic() - cut_at < AT_ONCE + 1.5
        # /health speaks for the database as it is now, not with the probe that passed before the cut.
        assert (await health(server)).status_code == 503
        for method, path, body in (("GET", "/v1/tasks", None), ("GET", f"/v1/tasks/{kept.id}", None),
                                   ("POST", "/v1/tasks", {"type": "run_script", "payload": {"script": "true"}}),
                                   ("POST", "/v1/claim", {"machine": "w", "capabilities": RUN, "wait": 20}),
                                   ("GET", "/v1/events?after=0&wait=20", None), ("GET", "/v1/machines", None)):
            response, seconds = await timed(http.request(method, path, json=body))
            assert response.status_code == 503, (path, response.text)
            assert response.json()["error"] == "database_unavailable"
            assert "not answering" in response.json()["detail"] and response.headers["Retry-After"] == "1"
            assert seconds < AT_ONCE, (path, seconds)
        down, seconds = await timed(health(server))
        assert down.status_code == 503 and seconds < AT_ONCE
        assert down.json()["status"] == "unavailable" and down.json()["error"] == "database_unavailable"
        with pytest.raises(errors.DatabaseUnavailable):
            await client.list_tasks()

        await database.proxy.restore()

        async def answers_again() -> bool:
            await health(server)  # as a load balancer would, keeping a probe of the outage fresh
            try:
                return (await client.get_task(kept.id)).status == "pending"
            except errors.DatabaseUnavailable:
                return False

        await wait_until(answers_again, timeout=20)
        # ... and no probe from the outage outlives it.
        assert (await health(server)).status_code == 200
        created = await client.create_task("run_script", {"script": "true"})
        claim = await client.claim("w", RUN)
        assert claim is not None and claim.task.id == kept.id and created.status == "pending"

        async def bus_back() -> bool:
            rows = await database.sql("SELECT pid FROM pg_stat_activity WHERE application_name = 'da-queue-bus' "
                                      "AND datname = current_database()")
            return len(rows) == 1 and rows != bus_before

        # The LISTEN connection came back too (a new backend, since the old one died with the cut).
        await wait_until(bus_back, timeout=20)


async def _healthy(server: QueueServer) -> bool:
    return (await health(server)).status_code == 200


async def test_a_running_task_keeps_its_lease_through_an_outage_longer_than_the_lease(
        database: Database, make_server: Callable[..., Awaitable[QueueServer]],
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="da.queue.upkeep")
    server = await make_server(db_url=database.proxied, lease=2.0)
    async with QueueClient(server.url, SECRET, timeout=30) as client:
        task = await client.create_task("run_script", {"script": "sleep 60"})
        held = await client.claim("mac-mini", RUN)
        assert held is not None
        await client.start(task.id, held.lease)
        await database.proxy.cut()
        with pytest.raises(errors.DatabaseUnavailable):
            await client.heartbeat(task.id, held.lease)  # a 503, never "lease lost"
        await asyncio.sleep(3.0)  # the outage outlasts the 2 s lease
        await database.proxy.restore()
        await wait_until(lambda: _healthy(server), timeout=20)

        async def reaper_looked() -> bool:
            return "time back" in caplog.text or (await client.get_task(task.id)).status != "in_progress"

        await wait_until(reaper_looked, timeout=20)
        assert (await client.get_task(task.id)).status == "in_progress"
        beat = await client.heartbeat(task.id, held.lease)
        assert beat.cancel is False and beat.status == "in_progress"
        assert (await client.report(task.id, held.lease, "done", {"returncode": 0})).status == "done"


async def test_a_task_that_finishes_during_an_outage_ends_done_once(
        database: Database, make_server: Callable[..., Awaitable[QueueServer]], tmp_path: Path, make_worker) -> None:
    server = await make_server(db_url=database.proxied, lease=2.0)
    finished = tmp_path / "finished"
    async with QueueClient(server.url, SECRET, timeout=30) as client:
        worker = make_worker(server.url, tmp_path, WORKER_CAPABILITIES="run_script")
        try:
            task = await client.create_task("run_script", {"script": f"sleep 1; touch {finished}; echo ran"})
            await wait_for_status(client, task.id, ("in_progress",))
            await database.proxy.cut()
            await wait_until(lambda: _exists(finished), timeout=20)
            await wait_until(lambda: _log_has(worker, "not answering"), timeout=20)  # its report met a 503
            await asyncio.sleep(2.5)  # and the outage outlasts the 2 s lease
            await database.proxy.restore()
            # Until the queue has reconnected, reads answer 503 too (the client gives up after its rounds).
            await wait_until(lambda: _healthy(server), timeout=20)
            done = await wait_for_status(client, task.id, timeout=30)
        finally:
            worker.signal(signal.SIGTERM)
            await worker.wait_exit()
        assert done.status == "done" and done.attempts == 1 and "ran" in done.result["stdout"]
        trail = [(event.from_status, event.to_status) for event in await client.task_events(task.id)]
        assert trail == [(None, "pending"), ("pending", "claimed"), ("claimed", "in_progress"), ("in_progress", "done")]
        assert "lease lost" not in worker.log


async def _exists(path: Path) -> bool:
    return path.exists()


async def _log_has(worker: WorkerProcess, text: str) -> bool:
    return text in worker.log


async def test_a_frozen_database_is_reported_by_health_within_seconds(
        database: Database, make_server: Callable[..., Awaitable[QueueServer]]) -> None:
    server = await make_server(db_url=database.proxied)
    assert (await health(server)).json()["status"] == "ok"
    database.proxy.freeze()
    await asyncio.sleep(1.1)  # past the reuse of the last probe's answer
    down, seconds = await timed(health(server))
    assert down.status_code == 503 and seconds < AT_ONCE + 1
    assert "did not commit within" in down.json()["detail"]
    database.proxy.thaw()
    await wait_until(lambda: _healthy(server), timeout=30)


async def test_a_read_only_database_is_not_healthy(
        database: Database, make_server: Callable[..., Awaitable[QueueServer]]) -> None:
    server = await make_server(db_url=database.url)
    assert (await health(server)).status_code == 200
    name = database.url.rsplit("/", 1)[1]
    await database.sql(f'ALTER DATABASE "{name}" SET default_transaction_read_only = on', database="postgres")
    # Sessions pick the setting up when they connect: end the queue's.
    await database.sql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                       "WHERE datname = current_database() AND pid <> pg_backend_pid()")
    try:
        async def unhealthy() -> httpx.Response | None:
            response = await health(server)
            return response if response.status_code == 503 else None

        down = await wait_until(unhealthy, timeout=20)
        assert down.json()["error"] == "database_unavailable"
    finally:
        await database.sql(f'ALTER DATABASE "{name}" RESET default_transaction_read_only', database="postgres")
    await wait_until(lambda: _healthy(server), timeout=30)


async def test_a_multi_host_url_writes_to_the_host_that_answers(
        postgres_cluster: postgres.Cluster, new_database: Callable[[], Awaitable[str]],
        make_server: Callable[..., Awaitable[QueueServer]]) -> None:
    url = await new_database()
    dead = free_port()
    name = url.rsplit("/", 1)[1]
    multi = f"postgresql://{postgres.ADMIN}@127.0.0.1:{dead},127.0.0.1:{postgres_cluster.port}/{name}"
    from da.queue.settings import QueueSettings

    settings = QueueSettings.from_env({"SECRET_KEY": SECRET, "QUEUE_DB_URL": multi})
    assert settings.db_url == multi + "?target_session_attrs=read-write"
    server = await make_server(db_url=settings.db_url)
    async with QueueClient(server.url, SECRET) as client:
        task = await client.create_task("run_script", {"script": "true"})
    assert [tuple(row) for row in await server.query("SELECT id FROM tasks")] == [(task.id,)]


def test_the_api_document_says_every_route_may_answer_503() -> None:
    paths = routes.document("test")["paths"]
    missing = [f"{method.upper()} {path}" for path, operations in paths.items()
               for method, operation in operations.items() if "503" not in operation["responses"]]
    assert missing == []
