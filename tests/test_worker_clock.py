"""A worker whose clock disagrees with the queue's keeps its leases: it counts only durations.

How the skew is made: the queue's store takes its clock as a parameter, so the tests run the
real service with a clock an hour ahead of (or behind) the machine's, against a real `da
worker` on the machine's clock. Only the difference between the two clocks matters, so a
queue an hour ahead is exactly a worker an hour behind. Moving the real system clock would
need privileges and would disturb every other process on this shared machine; faking time
inside the worker (libfaketime, patching `time.time`) would test a worker we do not ship.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any
from pathlib import Path

import httpx
import pytest
from aiohttp.test_utils import TestServer

from conftest import SECRET
from da.queue import app as queue_app
from da.queue.client import QueueClient
from da.queue.settings import QueueSettings
from da.queue.store import Store
from worker_support import WorkerProcess, wait_for_status

HOUR = 3600.0


@pytest.fixture
async def skewed_queue(tmp_path: Path) -> AsyncIterator[Callable[[float], Any]]:
    """Start the real queue service whose store reads a clock `skew` seconds off the machine's."""
    servers: list[TestServer] = []

    async def start(skew: float, **settings: Any) -> TestServer:
        values = {"secret": SECRET, "db_path": tmp_path / f"skewed{len(servers)}.db", "reap_interval": 0.1,
                  "config_dir": tmp_path / "config", **settings}
        queue_settings = QueueSettings(**values)
        app = queue_app.make_app(queue_settings)
        app[queue_app.STORE] = Store(queue_settings.db_path, sync=queue_settings.sync,
                                     clock=lambda: time.time() + skew)
        server = TestServer(app, host="127.0.0.1")
        await server.start_server()
        servers.append(server)
        return server

    yield start
    for server in servers:
        await server.close()


def url_of(server: TestServer) -> str:
    return f"http://127.0.0.1:{server.port}"


async def test_claim_and_heartbeat_answer_the_seconds_left(skewed_queue) -> None:
    server = await skewed_queue(HOUR)
    async with httpx.AsyncClient(base_url=url_of(server), headers={"x-secret-key": SECRET}) as http:
        created = (await http.post("/v1/tasks", json={"type": "run_script", "payload": {}})).json()
        claimed = await http.post("/v1/claim", json={"machine": "box", "capabilities": ["run_script"], "lease": 42})
        body = claimed.json()
        assert body["lease_seconds"] == 42
        assert body["lease_expires_at"] is not None  # kept for older workers
        beat = await http.post(f"/v1/tasks/{created['id']}/heartbeat", json={"lease": body["lease"], "extend": 30})
        assert beat.json()["lease_seconds"] == 30 and beat.json()["lease_expires_at"] is not None
    async with QueueClient(url_of(server), SECRET) as client:
        await client.create_task("run_script", {})
        held = await client.claim("box", ["run_script"], lease=12)
        assert held is not None and held.lease_seconds == 12


@pytest.mark.parametrize("skew", [HOUR, -HOUR], ids=["worker-an-hour-behind", "worker-an-hour-ahead"])
async def test_a_skewed_worker_keeps_its_lease_at_the_normal_pace(skewed_queue, tmp_path: Path, skew: float,
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    # The queue's own access log counts the heartbeats it served.
    caplog.set_level(logging.INFO, logger="aiohttp.access")
    lease = 3.0
    server = await skewed_queue(skew)
    process = WorkerProcess(url_of(server), tmp_path, WORKER_LEASE=str(lease)).start()
    try:
        async with QueueClient(url_of(server), SECRET) as client:
            task = await client.create_task("run_script", {"script": "sleep 6; echo outlived the lease"})
            finished = await wait_for_status(client, task.id, timeout=40)
            trail = [(e.to_status, e.by) for e in await client.task_events(task.id)]
    finally:
        process.kill()
    # Behind: the old worker waited a third of "an hour and 3 s" before its first heartbeat.
    assert finished.status == "done", (finished.notes, trail, process.log)
    assert finished.attempts == 1 and ("needs_human", "reaper") not in trail
    heartbeats = [r for r in caplog.records if "/heartbeat" in r.getMessage()]
    # Ahead: the old worker saw its lease already expired and heartbeat every 0.2 s (about 30 here).
    # At a third of the lease a 6 s task needs about 6; fewer when the machine is busy, never many more.
    assert 1 <= len(heartbeats) <= 10, len(heartbeats)
