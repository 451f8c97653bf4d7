"""Faults around a real worker: killed mid-task, the queue restarted mid-task, graceful shutdown."""

from __future__ import annotations

import signal
from pathlib import Path

from da.queue.client import QueueClient
from tests.support.server import SECRET
from tests.support.waiting import wait_until
from tests.support.workers import WorkerProcess, wait_for_status


async def test_sigkilled_worker_task_is_reaped_by_type(make_server, tmp_path: Path, make_worker) -> None:
    server = await make_server(lease=1.5)
    async with QueueClient(server.url, SECRET) as client:
        unsafe = await client.create_task("run_script", {"script": "sleep 20"})
        safe = await client.create_task("test_run", {"cwd": str(tmp_path), "command": "sleep 20"})
        process = make_worker(server.url, tmp_path)
        await wait_for_status(client, unsafe.id, ("in_progress",))
        await wait_for_status(client, safe.id, ("in_progress",))
        process.kill()
        lost = await wait_for_status(client, unsafe.id, ("needs_human",))
        assert lost.notes == "worker test-box was lost (lease expired) while running this task"
        retried = await wait_for_status(client, safe.id, ("pending",))
        assert retried.attempts == 1 and retried.assigned_to is None


async def test_queue_restart_mid_task_loses_no_report(make_server, tmp_path: Path, make_worker) -> None:
    server = await make_server()
    async with QueueClient(server.url, SECRET) as client:
        process = make_worker(server.url, tmp_path)
        finished = tmp_path / "finished"
        task = await client.create_task("run_script", {"script": f"sleep 1; echo survived; touch {finished}"})
        await wait_for_status(client, task.id, ("in_progress",))
        await server.stop()
        await wait_until(lambda: _exists(finished))  # the script finishes while the queue is down
        await wait_until(lambda: _log_has(process, "queue did not take it"), timeout=20)
        await server.start()
        done = await wait_for_status(client, task.id, timeout=30)
        assert done.status == "done" and done.result["stdout"] == "survived\n"


async def test_sigterm_lets_running_tasks_finish_within_the_grace(make_server, tmp_path: Path, make_worker) -> None:
    server = await make_server()
    async with QueueClient(server.url, SECRET) as client:
        process = make_worker(server.url, tmp_path, SHUTDOWN_GRACE="20")
        task = await client.create_task("run_script", {"script": "sleep 1; echo finished"})
        await wait_for_status(client, task.id, ("in_progress",))
        process.signal(signal.SIGTERM)
        later = await client.create_task("run_script", {"script": "echo never"})
        assert await process.wait_exit() == 0
        assert (await client.get_task(task.id)).status == "done"
        # A claim already waiting when the signal came is handed back, never run.
        await wait_for_status(client, later.id, ("pending",))
        assert "in_progress" not in [e.to_status for e in await client.task_events(later.id)]


async def test_sigterm_past_the_grace_kills_and_reports_failed(make_server, tmp_path: Path, make_worker) -> None:
    server = await make_server()
    async with QueueClient(server.url, SECRET) as client:
        process = make_worker(server.url, tmp_path, SHUTDOWN_GRACE="0.5")
        task = await client.create_task("run_script", {"script": "sleep 60"})
        await wait_for_status(client, task.id, ("in_progress",))
        process.signal(signal.SIGTERM)
        assert await process.wait_exit() == 0
        stopped = await client.get_task(task.id)
        assert stopped.status == "failed"
        assert stopped.notes == "the worker shut down before the task finished"


async def test_second_signal_exits_at_once(make_server, tmp_path: Path, make_worker) -> None:
    server = await make_server()
    async with QueueClient(server.url, SECRET) as client:
        process = make_worker(server.url, tmp_path, SHUTDOWN_GRACE="300")
        task = await client.create_task("run_script", {"script": "sleep 60"})
        await wait_for_status(client, task.id, ("in_progress",))
        process.signal(signal.SIGTERM)
        await wait_until(lambda: _log_has(process, "send SIGTERM again to stop them now"))
        process.signal(signal.SIGTERM)
        assert await process.wait_exit(timeout=15) == 0
        stopped = await client.get_task(task.id)
        assert stopped.status == "failed" and "second signal" in stopped.notes


async def test_unreachable_queue_is_retried_not_fatal(tmp_path: Path, make_worker) -> None:
    process = make_worker("http://127.0.0.1:9", tmp_path)
    await wait_until(lambda: _log_has(process, "queue unreachable"), timeout=15)
    assert process.process is not None and process.process.poll() is None


async def _exists(path: Path) -> bool:
    return path.exists()


async def _log_has(process: WorkerProcess, text: str) -> bool:
    return text in process.log


async def test_heartbeats_carry_the_last_output_line_as_progress(make_server, tmp_path: Path, make_worker) -> None:
    server = await make_server(lease=4.5)
    release = tmp_path / "release"
    async with QueueClient(server.url, SECRET) as client:
        make_worker(server.url, tmp_path)
        script = f"echo step 1; echo 'step 2 of 3'; while [ ! -e {release} ]; do sleep 0.05; done"
        task = await client.create_task("run_script", {"script": script})

        async def progressed() -> bool:
            return (await client.get_task(task.id)).progress == "step 2 of 3"

        await wait_until(progressed, timeout=10)
        release.touch()
        assert (await wait_for_status(client, task.id)).status == "done"


async def test_worker_fails_over_across_queue_urls(server, tmp_path: Path, make_worker) -> None:
    async with QueueClient(server.url, SECRET) as client:
        make_worker(f"http://127.0.0.1:9,{server.url}", tmp_path)
        task = await client.create_task("run_script", {"script": "echo via failover"})
        assert (await wait_for_status(client, task.id)).status == "done"
