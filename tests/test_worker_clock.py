"""A worker whose clock disagrees with the queue's keeps its leases: it counts only durations.

How the skew is made: the queue's store takes its clock as a parameter (`make_server(clock=)`),
so the tests run the real service with a clock an hour ahead of (or behind) the machine's, against a real `da
worker` on the machine's clock. Only the difference between the two clocks matters, so a
queue an hour ahead is exactly a worker an hour behind. Moving the real system clock would
need privileges and would disturb every other process on this shared machine; faking time
inside the worker (libfaketime, patching `time.time`) would test a worker we do not ship.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from da.queue.client import QueueClient
from tests.support import loopback
from tests.support.server import SECRET
from tests.support.workers import wait_for_status

HOUR = 3600.0


def skewed(skew: float) -> Callable[[], float]:
    """The machine's clock, `skew` seconds off."""
    return lambda: time.time() + skew


async def test_claim_and_heartbeat_answer_the_seconds_left(make_server) -> None:
    server = await make_server(clock=skewed(HOUR))
    async with loopback.client(base_url=server.url, headers={"x-secret-key": SECRET}) as http:
        created = (await http.post("/v1/tasks", json={"type": "run_script", "payload": {}})).json()
        claimed = await http.post("/v1/claim", json={"machine": "box", "capabilities": ["run_script"], "lease": 42})
        body = claimed.json()
        assert body["lease_seconds"] == 42
        assert body["lease_expires_at"] is not None  # kept for older workers
        beat = await http.post(f"/v1/tasks/{created['id']}/heartbeat", json={"lease": body["lease"], "extend": 30})
        assert beat.json()["lease_seconds"] == 30 and beat.json()["lease_expires_at"] is not None
    async with QueueClient(server.url, SECRET) as client:
        await client.create_task("run_script", {})
        held = await client.claim("box", ["run_script"], lease=12)
        assert held is not None and held.lease_seconds == 12


@pytest.mark.long
@pytest.mark.parametrize("skew", [HOUR, -HOUR], ids=["worker-an-hour-behind", "worker-an-hour-ahead"])
async def test_a_skewed_worker_keeps_its_lease_at_the_normal_pace(make_server, tmp_path: Path, skew: float,
                                                                  caplog: pytest.LogCaptureFixture,
                                                                  make_worker) -> None:
    # The queue's own access log counts the heartbeats it served.
    caplog.set_level(logging.INFO, logger="aiohttp.access")
    lease = 3.0
    server = await make_server(clock=skewed(skew))
    process = make_worker(server.url, tmp_path, WORKER_LEASE=str(lease))
    async with QueueClient(server.url, SECRET) as client:
        task = await client.create_task("run_script", {"script": "sleep 6; echo outlived the lease"})
        finished = await wait_for_status(client, task.id, timeout=40)
        trail = [(e.to_status, e.by) for e in await client.task_events(task.id)]
    # Behind: the old worker waited a third of "an hour and 3 s" before its first heartbeat.
    assert finished.status == "done", (finished.notes, trail, process.log)
    assert finished.attempts == 1 and ("needs_human", "reaper") not in trail
    heartbeats = [r for r in caplog.records if "/heartbeat" in r.getMessage()]
    # Ahead: the old worker saw its lease already expired and heartbeat every 0.2 s (about 30 here).
    # At a third of the lease a 6 s task needs about 6; fewer when the machine is busy, never many more.
    assert 1 <= len(heartbeats) <= 10, len(heartbeats)


async def test_a_lease_longer_than_the_longest_held_heartbeat_is_still_renewed(make_server, tmp_path: Path,
                                                                               make_worker) -> None:
    # A third of a 300 s lease (100 s) is past the 60 s the queue holds a heartbeat: such beats were refused.
    server = await make_server()
    process = make_worker(server.url, tmp_path, WORKER_LEASE="300")
    async with QueueClient(server.url, SECRET) as client:
        task = await client.create_task("run_script", {"script": "sleep 2; echo done"})
        finished = await wait_for_status(client, task.id, timeout=40)
    assert finished.status == "done", finished.notes
    assert "heartbeat for" not in process.log, process.log
