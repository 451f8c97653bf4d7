"""A worker's lease against a queue that hangs, goes away or stops trusting it, with real processes:
a real `da worker`, the real queue service, a TCP proxy playing the replica that hangs, and the
task's real process tree.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import pytest

from da.queue.client import QueueClient
from da.worker import lease as leases
from da.worker import orphans, runner
from da.worker.redact import Redactor
from tests.support.server import SECRET, QueueServer
from tests.support.tcp_proxy import Proxy
from tests.support.waiting import until_parked, wait_until
from tests.support.workers import WorkerProcess, alive, kill_leftover, start_long_task, wait_for_status


@pytest.mark.long
async def test_a_hanging_first_queue_url_costs_no_lease_and_no_claim(make_server, tmp_path: Path) -> None:
    server = await make_server(lease=3.0)
    replica = await Proxy("127.0.0.1", server.port or 0).start()
    worker = WorkerProcess(f"http://127.0.0.1:{replica.port},{server.url}", tmp_path,
                           WORKER_CAPABILITIES="run_script", MAX_CONCURRENT="2").start()
    try:
        async with QueueClient(server.url, SECRET) as client:
            long = await client.create_task("run_script", {"script": "sleep 7; echo survived"})
            await wait_for_status(client, long.id, ("in_progress",))
            replica.freeze()  # the first URL hangs (a SIGSTOPped replica): connections open, nothing answers
            short = await client.create_task("run_script", {"script": "echo claimed elsewhere"})
            # Claimed through the other URL within about a lease, not after the client's 10 s default.
            quick = await wait_for_status(client, short.id, timeout=8)
            assert quick.status == "done", worker.log
            done = await wait_for_status(client, long.id, timeout=20)
            events = [e.to_status for e in await client.task_events(long.id)]
    finally:
        worker.kill()
        await replica.close()
    # Heartbeats went through the healthy URL in time: never reaped, never handed to a person.
    assert done.status == "done" and done.result["stdout"] == "survived\n", (done.notes, worker.log)
    assert "needs_human" not in events and "pending" not in events[1:], events


async def test_a_lease_that_cannot_be_renewed_stops_the_task_process_tree(make_server, tmp_path: Path) -> None:
    server = await make_server(lease=2.0)
    network = await Proxy("127.0.0.1", server.port or 0).start()
    worker = WorkerProcess(f"http://127.0.0.1:{network.port}", tmp_path, WORKER_CAPABILITIES="run_script").start()
    child_file = tmp_path / "child.pid"
    try:
        async with QueueClient(server.url, SECRET) as client:
            task = await client.create_task(
                "run_script", {"script": f"sleep 300 & echo $! > {child_file}; echo $$ > {tmp_path}/task.pid; wait"})
            await wait_for_status(client, task.id, ("in_progress",))
            child = int(await wait_until(lambda: _read(child_file)))
            await network.cut()  # the worker can no longer renew its lease

            async def stopped() -> bool:
                return not alive(child)

            await wait_until(stopped, timeout=8)  # the 2 s lease, then the process group's kill grace
            await wait_for_status(client, task.id, ("needs_human",))  # the queue gave it up meanwhile
    finally:
        worker.kill()
        kill_leftover(tmp_path)
        await network.close()
    assert "lease could not be renewed" in worker.log and "stopped so that it cannot run twice" in worker.log


async def test_a_revoked_token_stops_the_task_and_frees_the_slot(server: QueueServer, tmp_path: Path) -> None:
    async with QueueClient(server.url, SECRET) as admin:
        token, secret = await admin.create_token("worker", machine="test-box")
        worker = WorkerProcess(server.url, tmp_path, DA_TOKEN=secret, WORKER_LEASE="3", MAX_CONCURRENT="1",
                               WORKER_CAPABILITIES="run_script").start()
        try:
            task_id, pid = await start_long_task(admin, tmp_path)
            await admin.revoke_token(token.id)

            async def stopped() -> bool:
                return not alive(pid)

            await wait_until(stopped, timeout=10)  # at the next heartbeat (a third of the 3 s lease)
            # The slot is free again: the worker asks for work (and is told why it cannot have any).
            await wait_until(lambda: _logged(worker, "claim refused"), timeout=20)
            assert worker.process is not None and worker.process.poll() is None
        finally:
            worker.kill()
            kill_leftover(tmp_path)
    assert f"stopping {task_id[:8]}: the queue refused this worker's credential" in worker.log
    assert "`da token create worker test-box`" in worker.log and "DA_TOKEN" in worker.log


async def test_a_report_refused_for_the_credential_keeps_the_outcome_in_the_log(server: QueueServer,
                                                                               tmp_path: Path) -> None:
    go = tmp_path / "go"
    async with QueueClient(server.url, SECRET) as admin:
        token, secret = await admin.create_token("worker", machine="test-box")
        # A long lease: the work ends between two heartbeats, so only the report meets the revoked token.
        worker = WorkerProcess(server.url, tmp_path, DA_TOKEN=secret, WORKER_LEASE="120", MAX_CONCURRENT="1",
                               WORKER_CAPABILITIES="run_script").start()
        try:
            task = await admin.create_task("run_script", {
                "script": f"while [ ! -f {go} ]; do sleep 0.05; done; echo deployed-v7"})
            await wait_for_status(admin, task.id, ("in_progress",))
            # The first heartbeat is held before the revoke, else it, not the report, meets the revoked token.
            await until_parked(server.url, "heartbeat")
            await admin.revoke_token(token.id)
            go.touch()
            await wait_until(lambda: _logged(worker, "claim refused"), timeout=20)
            # Not retried for ever: the log stops asking once the outcome is written down.
            assert worker.log.count("queue did not take it") == 0
        finally:
            worker.kill()
    assert f"could not report {task.short_id}, so its outcome is kept here: status=done" in worker.log
    assert "deployed-v7" in worker.log and "da token create worker test-box" in worker.log


@pytest.mark.backends("sqlite", "postgres")
async def test_nul_characters_from_a_task_are_stored_replaced_with_a_note(make_server, tmp_path: Path) -> None:
    server = await make_server()
    worker = WorkerProcess(server.url, tmp_path, WORKER_CAPABILITIES="run_script").start()
    try:
        async with QueueClient(server.url, SECRET) as client:
            task = await client.create_task("run_script", {"script": r"printf 'fatal: bad\000byte\n' >&2; exit 3"})
            failed = await wait_for_status(client, task.id, timeout=30)
    finally:
        worker.kill()
    # Failed as the command did, once, with its error readable: not "worker lost", not run again.
    assert failed.status == "failed", (failed.notes, worker.log)
    assert failed.attempts == 1
    assert "bad\ufffdbyte" in failed.result["stderr"]
    assert any("NUL" in note for note in failed.result["delivery_notes"])


def test_time_spent_retrying_a_heartbeat_is_not_counted_as_lease() -> None:
    # A 15 s lease; a heartbeat sent at t=100 needed 40 s of retries (URLs that hung) before one
    # was held its 5 s and answered at t=145 with 10 s left.
    clock = leases.LeaseClock.granted(15.0, 100.0, 15.0)
    wait = clock.wait()
    assert wait == 5.0
    clock.renewed(100.0, 145.0, 10.0, wait)
    assert clock.length == 15.0 and clock.expires == 155.0
    assert clock.wait() == 5.0  # the next one is held a third of the lease, not a third of 55 s
    # A URL that hangs leaves time to renew through another before the lease runs out.
    assert 145.0 + clock.attempt_timeout(145.0, clock.wait()) < clock.expires
    assert not clock.expired(154.9) and clock.expired(155.0)


def test_every_request_timeout_is_bounded_by_the_lease() -> None:
    assert leases.request_timeout(3.0) == 1.0
    assert leases.request_timeout(600.0) == 10.0
    assert leases.request_timeout(None) == 10.0


async def _read(path: Path) -> str | None:
    text = path.read_text().strip() if path.exists() else ""
    return text or None


async def _logged(worker: WorkerProcess, text: str) -> bool:
    return text in worker.log




ORPHAN_JOB = '''
from da.handlers.api import Result

SAFE_TO_RETRY = True


async def run(ctx, payload):
    process = await ctx.run(payload["script"], shell=True, timeout=600)
    return Result("done" if process.returncode == 0 else "failed", process.stdout.strip(), "", {})
'''


async def test_a_restarted_worker_stops_what_its_killed_life_left_before_it_claims(make_server,
                                                                                    tmp_path: Path) -> None:
    server = await make_server(lease=1.5)
    handlers = tmp_path / "handlers"
    handlers.mkdir()
    (handlers / "orphan_job.py").write_text(ORPHAN_JOB)
    pids, overlap = tmp_path / "pids", tmp_path / "overlap"
    # The first run leaves a child and waits; the run after it checks nothing of the first still runs.
    script = (f"if [ -s {pids} ]; then for p in $(cat {pids}); do kill -0 $p 2>/dev/null && echo $p >> {overlap}; "
              f"done; echo second run; exit 0; fi; sleep 300 & echo $! > {pids}; echo $$ >> {pids}; wait")
    env = {"DA_HANDLERS_PATH": str(handlers), "WORKER_CAPABILITIES": "orphan_job"}
    first = WorkerProcess(server.url, tmp_path, **env).start()
    second: WorkerProcess | None = None
    left: list[int] = []
    try:
        async with QueueClient(server.url, SECRET) as client:
            task = await client.create_task("orphan_job", {"script": script})
            await wait_for_status(client, task.id, ("in_progress",))

            async def both_pids() -> list[int] | None:
                text = pids.read_text().split() if pids.exists() else []
                return [int(p) for p in text] if len(text) == 2 else None

            left = await wait_until(both_pids)
            first.kill()  # SIGKILL: the task's process group lives on
            assert all(alive(pid) for pid in left)
            second = WorkerProcess(server.url, tmp_path, **env).start()

            async def all_stopped() -> bool:
                return not any(alive(pid) for pid in left)

            await wait_until(all_stopped, timeout=15)
            done = await wait_for_status(client, task.id, timeout=30)  # reaped, then run again by the new life
    finally:
        first.kill()
        if second is not None:
            second.kill()
        for pid in left:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
    assert second is not None
    assert done.status == "done" and done.notes == "second run", (done.notes, second.log)
    assert not overlap.exists(), f"the first run's processes {overlap.read_text()} still ran during the second"
    assert "left running by this worker's previous run" in second.log
    assert second.log.index("left running by this worker's previous run") < second.log.index("claimed")


async def test_a_worker_killed_between_starting_a_process_and_recording_it_still_stops_it(tmp_path: Path) -> None:
    # The note written before the start is all that is left; the process carries its marker in its
    # environment (as its children do, even one that left the group).
    book = orphans.ProcessBook(tmp_path / "processes")
    dead_worker = subprocess.Popen(["true"])
    dead_worker.wait()
    marker = "0123456789abcdef0123456789abcdef"
    book.folder.mkdir(parents=True)
    (book.folder / f"{marker}{orphans.STARTING}").write_text(json.dumps(
        {"marker": marker, "task": "feedbeef-task", "worker": dead_worker.pid, "worker_started": "long ago"}))
    left = subprocess.Popen(["sleep", "60"], env={**os.environ, orphans.MARKER: marker}, start_new_session=True)
    stranger = subprocess.Popen(["sleep", "60"], start_new_session=True)
    try:
        stopped = await book.stop_leftovers()
        assert [(found.pgid, found.task_id) for found in stopped] == [(left.pid, "feedbeef-task")]
        assert left.wait(timeout=10) == -signal.SIGTERM
        assert stranger.poll() is None
        assert not list(book.folder.iterdir())
    finally:
        for process in (left, stranger):
            process.kill()
            process.wait()


async def test_a_process_that_could_not_start_leaves_no_note(tmp_path: Path) -> None:
    book = orphans.ProcessBook(tmp_path / "processes")
    result = await runner.run_process(["no-such-program-anywhere"], cwd=None, env=dict(os.environ), timeout=10,
                                      log_path=tmp_path / "missing.log", redact=Redactor(()), book=book,
                                      task_id="feedbeef-task")
    assert result.returncode == 127
    assert not list(book.folder.iterdir())
