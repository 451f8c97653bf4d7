"""Time the queue did not see: a paused service, a clock stepped forward, a worker cut off, a claim never started.

A queue that is paused (SIGSTOP here, like a laptop lid or a VM pause) or whose clock steps forward
must not read that time as every worker lost; a worker that comes back from a partition with a real
outcome for a task the reaper gave up has it kept for the person who resolves the task; and a claim
that expired before it started never counts as an attempt.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from da.queue import errors
from da.queue.client import ClaimedTask, QueueClient
from da.queue.models import Task
from tests.support.processes import launch_serve, wait_serving
from tests.support.server import SECRET, QueueServer
from tests.support.tcp_proxy import Proxy
from tests.support.waiting import wait_until
from tests.support.workers import wait_for_status

pytestmark = pytest.mark.long

# Leases that run out within a test, yet outlast a claim-to-start gap on a busy machine.
SHORT_LEASE = 1.0

RUN = ["run_script"]
BOTH = pytest.mark.backends("sqlite", "postgres")


@pytest.fixture
async def serve(backend: str, new_database: Callable[[], Awaitable[str]], tmp_path: Path
                ) -> AsyncIterator[tuple[subprocess.Popen[bytes], str, Path]]:
    """A real `da serve` with 2 s leases, on the test's backend."""
    database = {"QUEUE_DB_URL": await new_database()} if backend == "postgres" else {}
    process, url, log = launch_serve(tmp_path, SECRET_KEY=SECRET, QUEUE_LEASE="2", QUEUE_REAP_INTERVAL="0.1",
                                     LOG_LEVEL="INFO", **database)
    try:
        await asyncio.to_thread(wait_serving, url, log)
        yield process, url, log
    finally:
        process.send_signal(signal.SIGCONT)
        process.terminate()
        process.wait(10)


@BOTH
async def test_a_queue_paused_longer_than_a_lease_keeps_its_running_tasks(
        serve: tuple[subprocess.Popen[bytes], str, Path]) -> None:
    process, url, log = serve
    async with QueueClient(url, SECRET, timeout=30) as client:
        task, held = await started_task(client, "sleep 60")
        process.send_signal(signal.SIGSTOP)
        try:
            await asyncio.sleep(3.5)  # paused past the 2 s lease; the worker could not have heartbeat
        finally:
            process.send_signal(signal.SIGCONT)

        async def reaper_looked() -> bool:
            return "time back" in log.read_text() or (await client.get_task(task.id)).status != "in_progress"

        await wait_until(reaper_looked, timeout=20)
        current = await client.get_task(task.id)
        assert current.status == "in_progress", (current.notes, log.read_text())
        assert (await client.heartbeat(task.id, held.lease)).status == "in_progress"
        assert (await client.report(task.id, held.lease, "done", {"returncode": 0})).status == "done"


@pytest.mark.backends("postgres")
async def test_a_paused_replica_gives_back_only_time_no_replica_watched(
        new_database: Callable[[], Awaitable[str]], tmp_path: Path) -> None:
    url = await new_database()
    replicas = []
    for name in ("paused", "watching"):
        (tmp_path / name).mkdir()
        replicas.append(launch_serve(tmp_path / name, SECRET_KEY=SECRET, QUEUE_LEASE="2", QUEUE_REAP_INTERVAL="0.1",
                                     LOG_LEVEL="INFO", QUEUE_DB_URL=url))
    (paused, _, log), (_, watching_url, _) = replicas
    try:
        for _, replica_url, replica_log in replicas:
            await asyncio.to_thread(wait_serving, replica_url, replica_log)
        async with QueueClient(watching_url, SECRET, timeout=30) as client:
            task = await client.create_task("run_script", {"script": "sleep 60"})
            held = await client.claim("mac-mini", RUN, lease=30)
            assert held is not None
            await client.start(task.id, held.lease)
            before = (await client.get_task(task.id)).lease_expires_at
            paused.send_signal(signal.SIGSTOP)
            try:
                await asyncio.sleep(3.5)  # the other replica watched all along; nobody heartbeat
            finally:
                paused.send_signal(signal.SIGCONT)

            async def looked() -> bool:
                return "did not watch leases" in log.read_text() or "time back" in log.read_text()

            await wait_until(looked, timeout=20)
            after = (await client.get_task(task.id)).lease_expires_at
    finally:
        for process, _, _ in replicas:
            process.send_signal(signal.SIGCONT)
            process.terminate()
            process.wait(10)
    assert before is not None and after is not None
    assert after - before < 1.0, f"the lease moved by {after - before:.1f} s while another replica watched"


@BOTH
async def test_a_clock_stepped_forward_past_the_lease_keeps_running_tasks(
        make_server: Callable[..., Awaitable[QueueServer]], caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="da.queue.upkeep")
    step = [0.0]
    server = await make_server(lease=2.0, clock=lambda: time.time() + step[0])
    async with QueueClient(server.url, SECRET) as client:
        task, held = await started_task(client, "sleep 60")
        step[0] = 3600.0  # NTP steps the queue's clock an hour forward

        async def reaper_looked() -> bool:
            return "time back" in caplog.text or (await client.get_task(task.id)).status != "in_progress"

        await wait_until(reaper_looked, timeout=20)
        assert (await client.get_task(task.id)).status == "in_progress"
        assert (await client.heartbeat(task.id, held.lease)).status == "in_progress"


async def test_a_dead_worker_is_still_reaped_after_a_pause(make_server: Callable[..., Awaitable[QueueServer]]) -> None:
    step = [0.0]
    server = await make_server(lease=1.0, clock=lambda: time.time() + step[0])
    async with QueueClient(server.url, SECRET) as client:
        task, _ = await started_task(client, "sleep 60")
        step[0] = 600.0
        # The step is given back once; the lease then runs down on the queue's watch, and nobody heartbeats.
        lost = await wait_for_status(client, task.id, ("needs_human",), timeout=20)
        assert "was lost" in lost.notes


async def started_task(client: QueueClient, script: str) -> tuple[Task, ClaimedTask]:
    """A run_script task claimed and started by mac-mini."""
    task = await client.create_task("run_script", {"script": script})
    held = await client.claim("mac-mini", RUN)
    assert held is not None
    await client.start(task.id, held.lease)
    return task, held


async def reaped_task(client: QueueClient, script: str) -> tuple[Task, ClaimedTask]:
    """A task started by mac-mini whose lease then ran out (the server's lease must be short)."""
    task, held = await started_task(client, script)
    await wait_for_status(client, task.id, ("needs_human",))
    return task, held


@BOTH
async def test_a_late_report_on_a_reaped_task_is_kept_for_whoever_resolves_it(
        make_server: Callable[..., Awaitable[QueueServer]]) -> None:
    server = await make_server(lease=SHORT_LEASE)
    async with QueueClient(server.url, SECRET) as client:
        task, held = await reaped_task(client, "make deploy")
        events_before = await client.task_events(task.id)

        late = await client.report(task.id, held.lease, "done", {"returncode": 0, "stdout": "deployed v2"},
                                   notes="script finished in 41.0s")
        assert late.status == "needs_human"  # not applied as a transition: someone may be acting on it
        assert late.result["late_report"] == {"status": "done", "by": "mac-mini", "notes": "script finished in 41.0s",
                                              "result": {"returncode": 0, "stdout": "deployed v2"}}
        assert late.result["error"] == "worker lost" and "reported done after" in late.result["action"]
        assert late.notes == ("worker mac-mini was lost (lease expired), then reported done late: "
                              "script finished in 41.0s")
        assert await client.task_events(task.id) == events_before
        # The worker retries until acknowledged: the same report again changes nothing.
        again = await client.report(task.id, held.lease, "done", {"returncode": 0, "stdout": "deployed v2"},
                                    notes="script finished in 41.0s")
        assert again.result == late.result and again.updated_at == late.updated_at

        resolved = await client.resolve(task.id, "done", by="ana", notes="checked: v2 is live")
        assert resolved.status == "done" and resolved.result["late_report"]["status"] == "done"
        with pytest.raises(errors.LeaseLost):
            await client.report(task.id, held.lease, "failed", {"returncode": 1})


@BOTH
async def test_a_late_report_after_the_task_ran_again_is_refused(
        make_server: Callable[..., Awaitable[QueueServer]]) -> None:
    server = await make_server(lease=SHORT_LEASE)
    async with QueueClient(server.url, SECRET) as client:
        task, first = await reaped_task(client, "true")
        await client.resolve(task.id, "pending", by="ana")
        second = await client.claim("thinkpad", RUN, lease=60)
        assert second is not None and second.task.id == task.id
        with pytest.raises(errors.LeaseLost):
            await client.report(task.id, first.lease, "done", {"returncode": 0})
        current = await client.get_task(task.id)
        assert current.status == "claimed" and current.assigned_to == "thinkpad"
        assert "late_report" not in (current.result or {})


async def test_a_worker_cut_off_from_the_queue_delivers_its_outcome_when_it_comes_back(
        make_server: Callable[..., Awaitable[QueueServer]], tmp_path: Path, make_worker) -> None:
    server = await make_server(lease=3.0)
    network = await Proxy("127.0.0.1", server.port or 0).start()
    go, finished = tmp_path / "go", tmp_path / "finished"
    worker = make_worker(f"http://127.0.0.1:{network.port}", tmp_path, WORKER_CAPABILITIES="run_script")
    try:
        async with QueueClient(server.url, SECRET) as client:
            task = await client.create_task("run_script", {
                "script": f"while [ ! -f {go} ]; do sleep 0.05; done; touch {finished}; echo shipped"})
            await wait_for_status(client, task.id, ("in_progress",))
            await network.cut()  # the worker's network goes; the task finishes within the lease
            go.touch()
            await wait_until(lambda: _exists(finished))
            await wait_for_status(client, task.id, ("needs_human",))  # the report could not arrive in time
            await network.restore()
            kept = await wait_until(lambda: _late_report(client, task.id), timeout=40)
    finally:
        worker.signal(signal.SIGTERM)
        await worker.wait_exit()
        await network.close()
    assert kept.status == "needs_human"
    late = kept.result["late_report"]
    assert late["status"] == "done" and "shipped" in late["result"]["stdout"]
    assert "given" in worker.log and "kept on the task" in worker.log


async def _exists(path: Path) -> bool:
    return path.exists()


async def _late_report(client: QueueClient, task_id: str) -> object:
    task = await client.get_task(task_id)
    return task if task.result and "late_report" in task.result else None


@BOTH
async def test_a_claim_that_expired_before_it_started_is_not_an_attempt(
        make_server: Callable[..., Awaitable[QueueServer]]) -> None:
    server = await make_server(lease=SHORT_LEASE)
    async with QueueClient(server.url, SECRET) as client:
        task = await client.create_task("git_pull", {"repo_path": "/r"}, max_attempts=2)
        for _ in range(3):  # claimed by workers that vanished before starting it
            held = await client.claim("w", ["git_pull"], retry_safe=["git_pull"])
            assert held is not None and held.task.attempts == 1
            back = await wait_for_status(client, task.id, ("pending",))
            assert back.attempts == 0
        events = await client.task_events(task.id)
        assert events[-1].note == "claim by w expired before it started"
        for attempt, after in ((1, "pending"), (2, "needs_human")):
            held = await client.claim("w", ["git_pull"], retry_safe=["git_pull"])
            assert held is not None and held.task.attempts == attempt
            await client.start(task.id, held.lease)
            await wait_for_status(client, task.id, (after,))
        final = await client.get_task(task.id)
        assert final.attempts == 2 and "it failed 2 times" in final.result["action"]
