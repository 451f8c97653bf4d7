"""A cancel reaches the worker at once: its heartbeat waits on the queue for one, so the task's process is
gone within moments, not at the next heartbeat a third of a lease later."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from da.queue.client import QueueClient
from tests.support.server import SECRET, QueueServer
from tests.support.waiting import wait_until
from tests.support.workers import WorkerProcess, cancel_and_watch, kill_leftover, start_long_task

pytestmark = pytest.mark.backends("sqlite", "postgres")
# The worker's lease: it heartbeats every 20 s, so only a cancel that wakes it stops the task within seconds.
LEASE = "60"


async def test_a_cancel_stops_the_running_process_at_once(server: QueueServer, tmp_path: Path, make_worker) -> None:
    worker = make_worker(server.url, tmp_path, WORKER_LEASE=LEASE, WORKER_CAPABILITIES="run_script",
                         WORKER_AGENTS="")
    try:
        async with QueueClient(server.url, SECRET) as client:
            task_id, pid = await start_long_task(client, tmp_path)
            await cancel_and_watch(client, task_id, pid)
            assert (await client.get_task(task_id)).status == "cancelled"
            assert "stopped" in await wait_until(lambda: _logged(worker, "cancelled in the queue"))
    finally:
        worker.kill()
        kill_leftover(tmp_path)


async def _logged(worker: WorkerProcess, text: str) -> str:
    return worker.log if text in worker.log else ""


async def test_a_held_heartbeat_answers_the_lease_it_has_left(http: httpx.AsyncClient) -> None:
    task = (await http.post("/v1/tasks", json={"type": "run_script", "payload": {}})).json()
    claimed = (await http.post("/v1/claim", json={"machine": "w", "capabilities": ["run_script"]})).json()
    beat = await http.post(f"/v1/tasks/{task['id']}/heartbeat",
                           json={"lease": claimed["lease"], "extend": 30, "wait": 0.3})
    assert beat.status_code == 200 and beat.json()["cancel"] is False
    assert 29 < beat.json()["lease_seconds"] <= 29.7
    bad = await http.post(f"/v1/tasks/{task['id']}/heartbeat", json={"lease": claimed["lease"], "wait": 61})
    assert bad.status_code == 400 and "'wait' must be between 0 and 60" in bad.json()["detail"]
