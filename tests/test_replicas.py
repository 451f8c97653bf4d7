"""Two real `da serve` replicas on one PostgreSQL database: one queue, whichever replica answers."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import pytest

from da.queue.client import QueueClient
from tests.support import loopback, postgres
from tests.support.processes import launch_serve, wait_serving
from tests.support.server import SECRET
from tests.support.waiting import until_parked, wait_until
from tests.support.workers import cancel_and_watch, kill_leftover, start_long_task, wait_for_status

RUN = ["run_script"]


@dataclass
class Replicas:
    """Two `da serve` processes sharing one database, each with its own client."""

    url: str
    processes: list[subprocess.Popen[bytes]]
    urls: list[str]
    logs: list[Path]
    a: QueueClient
    b: QueueClient

    async def sql(self, statement: str) -> list[asyncpg.Record]:
        db = await asyncpg.connect(self.url)
        try:
            return list(await db.fetch(statement))
        finally:
            await db.close()


@pytest.fixture
async def replicas(postgres_cluster: postgres.Cluster, tmp_path: Path) -> AsyncIterator[Replicas]:
    # An empty database: both replicas start at the same moment and must not race to migrate it.
    url = await postgres_cluster.create_database(migrated=False)
    processes, urls, logs = [], [], []
    try:
        for name in ("a", "b"):
            folder = tmp_path / name
            folder.mkdir()
            process, queue_url, log = launch_serve(folder, SECRET_KEY=SECRET, QUEUE_DB_URL=url, QUEUE_LEASE="3",
                                                   QUEUE_REAP_INTERVAL="0.2", LOG_LEVEL="WARNING")
            processes.append(process)
            urls.append(queue_url)
            logs.append(log)
        for queue_url, log in zip(urls, logs, strict=True):
            await asyncio.to_thread(wait_serving, queue_url, log)
        async with QueueClient(urls[0], SECRET, timeout=30) as a, QueueClient(urls[1], SECRET, timeout=30) as b:
            yield Replicas(url, processes, urls, logs, a, b)
    finally:
        for process in processes:
            if process.poll() is None:
                process.terminate()
                process.wait(10)
        await postgres_cluster.drop_database(url)


async def test_both_replicas_serve_one_shared_state(replicas: Replicas) -> None:
    a, b = replicas.a, replicas.b
    for client in (a, b):
        assert (await client.health())["backend"] == "postgresql"
    task = await a.create_task("run_script", {"script": "true"})
    assert (await b.get_task(task.short_id)).id == task.id
    held = await b.claim("mac-mini", RUN)
    assert held is not None and held.task.id == task.id
    await a.start(task.id, held.lease)
    await b.heartbeat(task.id, held.lease, progress="half way")
    done = await a.report(task.id, held.lease, "done", {"returncode": 0})
    assert done.status == "done" and (await b.get_task(task.id)).progress == "half way"
    assert [t.id for t in (await a.list_tasks())[0]] == [t.id for t in (await b.list_tasks())[0]] == [task.id]

    async def seen_on_a() -> dict | None:
        machines = {m["name"]: m for m in await a.machines()}
        return machines.get("mac-mini") if machines.get("mac-mini", {}).get("online") else None

    # The worker only ever spoke to B; A learns of it through the database.
    entry = await wait_until(seen_on_a, timeout=15)
    assert entry["done"] == 1 and entry["capabilities"] == RUN
    async with loopback.client(headers={"Authorization": f"Bearer {SECRET}"}) as http:
        pages = [(await http.get(f"{url}/metrics")).text for url in replicas.urls]
    for page in pages:
        assert 'da_replica_info{backend="postgresql"} 1' in page
        assert 'da_tasks{status="done",type="run_script"} 1' in page


async def test_a_claim_parked_on_one_replica_wakes_on_a_create_through_the_other(replicas: Replicas) -> None:
    waiting = asyncio.create_task(replicas.b.claim("w", RUN, wait=30))
    _, last = await replicas.b.events(-1)
    following = asyncio.create_task(replicas.b.events(last, wait=30))
    await until_parked(replicas.b.url, "claim")
    await until_parked(replicas.b.url, "events")
    assert not waiting.done() and not following.done()
    created_at = time.monotonic()
    task = await replicas.a.create_task("run_script", {"script": "true"})
    done, _ = await asyncio.wait({waiting}, timeout=5)
    if not done:  # seen once on a loaded machine, though B re-checks every second: keep what the replicas said
        waiting.cancel()
        raise AssertionError("B's parked claim had no answer 5 s after the create; replica logs:\n"
                             + "\n".join(log.read_text(errors="replace") for log in replicas.logs))
    claim = waiting.result()
    assert claim is not None and claim.task.id == task.id
    assert time.monotonic() - created_at < 0.9  # woken by NOTIFY, well before the 1 s re-check
    events, _ = await asyncio.wait_for(following, 5)
    assert (events[0].task_id, events[0].to_status) == (task.id, "pending")


async def test_600_tasks_raced_by_16_claimers_over_both_replicas_are_each_claimed_once(replicas: Replicas) -> None:
    clients = (replicas.a, replicas.b)
    # Created in two requests, one through each replica: the race is between the claims.
    halves = ([{"type": "run_script", "payload": {"n": n}} for n in range(half, 600, 2)] for half in (0, 1))
    answers = await asyncio.gather(*(client.request("POST", "/v1/tasks", json=bodies, idempotent=False)
                                     for client, bodies in zip(clients, halves, strict=True)))
    created = [task for answer in answers for task in answer.json()["tasks"]]
    taken: list[str] = []

    async def claimer(number: int) -> None:
        client = clients[number % 2]
        while (claim := await client.claim(f"worker-{number}", RUN, lease=600)) is not None:
            taken.append(claim.task.id)

    await asyncio.gather(*(claimer(n) for n in range(16)))
    assert len(taken) == 600 and set(taken) == {t["id"] for t in created}
    assert await replicas.sql("SELECT count(*) FROM tasks WHERE status = 'claimed' AND attempts = 1") == [(600,)]


async def test_a_lock_is_never_held_twice_across_replicas(replicas: Replicas) -> None:
    clients = (replicas.a, replicas.b)
    for n in range(24):
        await clients[n % 2].create_task("run_script", {"n": n}, lock="deploy-prod")
    holding, most, finished = 0, 0, 0

    async def claimer(number: int) -> None:
        nonlocal holding, most, finished
        client = clients[number % 2]
        while finished < 24:
            claim = await client.claim(f"worker-{number}", RUN, wait=1)
            if claim is None:
                continue
            holding += 1
            most = max(most, holding)
            await client.start(claim.task.id, claim.lease)
            await asyncio.sleep(0.005)
            holding -= 1  # before the report: from here on the database alone keeps others out
            await client.report(claim.task.id, claim.lease, "done", {})
            finished += 1

    await asyncio.wait_for(asyncio.gather(*(claimer(n) for n in range(12))), 90)
    assert most == 1 and finished == 24


async def test_the_database_refuses_a_lock_a_concurrent_claim_holds(replicas: Replicas) -> None:
    """Check-then-act would miss an uncommitted holder; the unique index does not."""
    first = await replicas.a.create_task("run_script", {"n": 1}, lock="deploy-prod")
    second = await replicas.a.create_task("run_script", {"n": 2}, lock="deploy-prod")
    holder = await asyncpg.connect(replicas.url)
    try:
        transaction = holder.transaction()
        await transaction.start()
        await holder.execute("UPDATE tasks SET status = 'claimed', assigned_to = 'other', lease = 'x', "
                             "lease_expires_at = 1e12 WHERE id = $1", first.id)
        claiming = asyncio.create_task(replicas.b.claim("w", RUN))

        async def blocked() -> bool:
            rows = await replicas.sql("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                                      "AND application_name = 'da-queue'")
            return rows[0][0] == 1

        # The claim passed its NOT EXISTS (the holder is not committed) and now waits on the index.
        await wait_until(blocked)
        await transaction.commit()
    finally:
        await holder.close()
    assert await asyncio.wait_for(claiming, 10) is None
    assert (await replicas.a.get_task(second.id)).status == "pending"


async def test_an_event_follower_sees_every_transition_exactly_once_while_both_write(replicas: Replicas) -> None:
    clients = (replicas.a, replicas.b)
    _, start = await replicas.b.events(-1)
    followed: list[int] = []
    writing = True

    async def follow() -> None:
        after = start
        while True:
            events, after = await replicas.b.events(after, wait=1)
            followed.extend(event.id for event in events)
            if not events and not writing:
                return

    async def writer(number: int) -> None:
        client, other = clients[number % 2], clients[(number + 1) % 2]
        for n in range(15):
            await client.create_task("run_script", {"n": n})
            claim = await other.claim(f"w{number}", RUN)
            if claim is not None:
                await client.start(claim.task.id, claim.lease)
                await other.report(claim.task.id, claim.lease, "done", {})

    async def slow_writer(number: int) -> None:
        """Takes an event id, then commits a moment later: ids commit out of order."""
        db = await asyncpg.connect(replicas.url)
        try:
            for n in range(10):
                async with db.transaction():
                    # An xid before the event id, as da's writers have (their trigger runs after the task row
                    # is written): the feed's horizon counts on it (see da.queue.postgres).
                    await db.execute("SELECT pg_current_xact_id()")
                    await db.execute("INSERT INTO events (task_id, to_status, at) VALUES ($1, 'pending', 0)",
                                     f"slow-{number}-{n}")
                    await db.execute("SELECT pg_sleep(0.02)")
        finally:
            await db.close()

    follower = asyncio.create_task(follow())
    await asyncio.gather(*(writer(n) for n in range(8)), *(slow_writer(n) for n in range(3)))
    writing = False
    await asyncio.wait_for(follower, 30)
    stored = [row[0] for row in await replicas.sql(f"SELECT id FROM events WHERE id > {start} ORDER BY id")]
    assert len(stored) >= 8 * 15 * 2  # at least every create and its claim
    assert followed == stored  # every one, in order, none twice


async def test_the_feed_never_steps_past_an_event_that_commits_later(replicas: Replicas) -> None:
    """Sequence values commit out of order; the feed waits for the writer holding the lower id."""
    early = await replicas.a.create_task("run_script", {"n": 1})
    _, last = await replicas.b.events(-1)
    writer = await asyncpg.connect(replicas.url)
    try:
        transaction = writer.transaction()
        await transaction.start()
        # This transaction takes the next event id and stays open.
        await writer.execute("UPDATE tasks SET status = 'cancelled' WHERE id = $1", early.id)
        late = await replicas.a.create_task("run_script", {"n": 2})  # a higher id, committed first
        events, newest = await replicas.b.events(last)
        assert events == [] and newest == last
        await transaction.commit()
    finally:
        await writer.close()
    events, _ = await replicas.b.events(last, wait=5)
    assert [(e.task_id, e.to_status) for e in events] == [(early.id, "cancelled"), (late.id, "pending")]


async def test_killing_one_replica_under_real_workers_loses_nothing(replicas: Replicas, tmp_path: Path,
                                                                    make_worker) -> None:
    marks = tmp_path / "ran.txt"
    tasks = [await replicas.b.create_task("run_script", {"script": f"sleep 0.05; echo {n} >> {marks}"})
             for n in range(80)]
    urls = ",".join(replicas.urls)
    workers = [make_worker(urls, tmp_path / f"w{n}", MACHINE_NAME=f"box-{n}", WORKER_CAPABILITIES="run_script",
                           WORKER_AGENTS="", MAX_CONCURRENT="4", WORKER_POLL_WAIT="2") for n in range(2)]
    try:
        await wait_until(lambda: _finished_at_least(replicas.b, 15), timeout=60)
        replicas.processes[0].send_signal(signal.SIGKILL)
        replicas.processes[0].wait(10)
        for task in tasks:
            assert (await wait_for_status(replicas.b, task.id, timeout=90)).status == "done"
    finally:
        for worker in workers:
            worker.kill()
    ran = Counter(marks.read_text().split())
    assert sorted(ran) == sorted(str(n) for n in range(80)) and set(ran.values()) == {1}


async def _finished_at_least(client: QueueClient, count: int) -> bool:
    done, _ = await client.list_tasks(status="done", limit=count)
    return len(done) >= count


async def test_both_reapers_settle_each_expired_lease_once(replicas: Replicas) -> None:
    tasks = [await replicas.a.create_task("agent_run", {"prompt": str(n)}) for n in range(20)]
    for n in range(20):
        claim = await (replicas.a, replicas.b)[n % 2].claim("lost-box", ["agent_run"], lease=1)
        assert claim is not None
        await replicas.b.start(claim.task.id, claim.lease)
    for task in tasks:
        assert (await wait_for_status(replicas.a, task.id, ("needs_human",), timeout=30)).status == "needs_human"
    rows = await replicas.sql("SELECT task_id, count(*) FROM events WHERE by = 'reaper' GROUP BY task_id")
    assert sorted(rows) == sorted((task.id, 1) for task in tasks)


async def test_a_cancel_through_one_replica_stops_a_worker_heartbeating_on_the_other(
        replicas: Replicas, tmp_path: Path, make_worker) -> None:
    worker = make_worker(replicas.urls[1], tmp_path, WORKER_LEASE="60", WORKER_CAPABILITIES="run_script",
                         WORKER_AGENTS="")
    try:
        task_id, pid = await start_long_task(replicas.b, tmp_path)
        await cancel_and_watch(replicas.a, task_id, pid)
    finally:
        worker.kill()
        kill_leftover(tmp_path)
