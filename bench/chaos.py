"""Chaos run: real `da serve` replicas and 4 real `da worker` processes, SIGKILLed and SIGSTOPped while they work.

Pushes tasks of a retry-safe and a non-retry-safe type whose handlers record every execution
in a side file, kills a queue replica and random workers (restarting each), SIGSTOPs a replica for
twice the (short, 3 s) lease and then lets it go on (a frozen machine, a paused VM), then checks: every
acknowledged task reached a terminal state, none was reported done twice, none is missing,
and no non-retry-safe task ran twice (those that lost their worker are in needs_human with a
note). Two tasks in a hundred run a child process that outlives its lease, and worker kills go to
workers running one (waiting a while for one if none does): the restarted worker must stop what its
previous life left before it claims, so no task runs again on that machine while the child of its
earlier run there still runs. (Another machine may run a retry-safe task again once its lease is
reaped, orphan or not: it cannot know. All workers share one host here, so that is not counted.)
Every seventh task reports text holding NUL characters: it must be stored (NUL replaced), not lost.
On SQLite one replica
serves the file; with `--db-url` two replicas share a PostgreSQL database and workers fail over
between them (QUEUE_URL=A,B). Prints a table; exits 1 if a check fails.

    python bench/chaos.py                      # 5,000 tasks, 5 queue kills, 10 worker kills, 3 stops
    python bench/chaos.py --tasks 300 --queue-kills 2 --worker-kills 2 --replica-stops 1
    python bench/chaos.py --db-url postgresql://da@127.0.0.1:5432/chaos   # an empty database
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg

from da.queue.client import QueueClient
from da.queue.errors import QueueError

SECRET = "chaos-secret-0123456789"
HANDLER = '''
import asyncio, os, random
from pathlib import Path
from da.handlers.api import Result
SAFE_TO_RETRY = {safe}
ROOT = Path({root!r})


def alive(pid):
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    try:
        return Path(f"/proc/{{pid}}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True  # no /proc (macOS): the signal is all there is to go by


async def run(ctx, payload):
    with open(ROOT / "executions.log", "a") as log:
        log.write(f"{{ctx.task_id}} {{os.getpid()}}\\n")
    if payload.get("child"):
        children = ROOT / "children.log"
        earlier = children.read_text().splitlines() if children.exists() else []
        for line in earlier:
            task_id, pid, machine, _ = line.split()
            if task_id == ctx.task_id and machine == ctx.machine and alive(int(pid)):
                with open(ROOT / "overlaps.log", "a") as out:
                    out.write(line + "\\n")
        line = f"{{ctx.task_id}} $! {{ctx.machine}} $(date +%s)"
        await ctx.run(f"sleep {{payload['child']}} & echo {{line}} >> {{children}}; wait", shell=True, timeout=120)
    await asyncio.sleep(random.uniform(0.0, {max_sleep}))
    if payload.get("nul"):
        return Result("done", "ran\\x00with a NUL", "", {{"stdout": "first\\x00line"}})
    return Result("done", "ran")
'''
# Every CHILD_EVERY-th task runs a child this many leases long; every NUL_EVERY-th reports NUL characters.
# Tasks come in pairs of the two types, so children run in tasks of both (the pair at each CHILD_EVERY).
# Five leases: a queue restart gives leases time back, so a killed task may be reaped late.
CHILD_EVERY, CHILD_LEASES = 100, 5.0
NUL_EVERY = 7
# A stopped replica stays stopped this many leases: long enough that every lease it watches would
# expire if the time it was frozen counted against them.
STOP_LEASES = 2.0
TERMINAL = ("done", "failed", "needs_human", "cancelled")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Fleet:
    folder: Path
    ports: list[int]
    lease: float
    db_url: str | None = None
    queues: list[subprocess.Popen[bytes] | None] = field(default_factory=list)
    workers: list[subprocess.Popen[bytes] | None] = field(default_factory=list)

    @property
    def urls(self) -> list[str]:
        return [f"http://127.0.0.1:{port}" for port in self.ports]

    def env(self, **extra: str) -> dict[str, str]:
        return {"PATH": os.environ["PATH"], "HOME": str(self.folder), "SECRET_KEY": SECRET, "LOG_LEVEL": "WARNING",
                "DA_CONFIG_DIR": str(self.folder), "QUEUE_URL": ",".join(self.urls), **extra}

    def start_queue(self, index: int) -> None:
        database = {"QUEUE_DB_URL": self.db_url} if self.db_url else {"QUEUE_DB_PATH": str(self.folder / "queue.db")}
        env = self.env(QUEUE_PORT=str(self.ports[index]), QUEUE_LEASE=str(self.lease), QUEUE_REAP_INTERVAL="0.2",
                       **database)
        self._start("serve", index, env, self.queues)

    def _start(self, command: str, index: int, env: dict[str, str],
               slots: list[subprocess.Popen[bytes] | None]) -> None:
        """`da <command>` logging to `<command>-<index>.log`, in slot `index` (a restart takes the old one's)."""
        name = "queue" if command == "serve" else command
        with (self.folder / f"{name}-{index}.log").open("ab") as log:
            process = subprocess.Popen([sys.executable, "-m", "da.cli", command], env=env, cwd=self.folder,
                                       stdout=log, stderr=subprocess.STDOUT)
        if index < len(slots):
            slots[index] = process
        else:
            slots.append(process)

    async def stop_a_while(self, index: int, seconds: float) -> None:
        """SIGSTOP a replica (its connections stay open, it answers nothing), then SIGCONT it."""
        process = self.queues[index]
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGSTOP)
        try:
            await asyncio.sleep(seconds)
        finally:
            process.send_signal(signal.SIGCONT)

    def start_worker(self, index: int) -> None:
        env = self.env(MACHINE_NAME=f"chaos-{index}", WORKER_CAPABILITIES="chaos_safe,chaos_unsafe",
                       MAX_CONCURRENT="4", DA_HANDLERS_PATH=str(self.folder / "handlers"),
                       DA_LOG_DIR=str(self.folder / "logs"), WORKER_POLL_WAIT="5", SHUTDOWN_GRACE="2")
        self._start("worker", index, env, self.workers)

    @staticmethod
    def kill(process: subprocess.Popen[bytes] | None) -> None:
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGKILL)
            process.wait()

    def stop_all(self) -> None:
        for process in [*self.queues, *self.workers]:
            if process is not None and process.poll() is None:
                process.send_signal(signal.SIGCONT)
                process.terminate()
        for process in [*self.queues, *self.workers]:
            if process is not None:
                try:
                    process.wait(15)
                except subprocess.TimeoutExpired:
                    self.kill(process)


async def push(client: QueueClient, count: int, acknowledged: dict[str, str], lease: float,
               nul_tasks: set[str]) -> None:
    """Create tasks, alternating types; only answered creates count as acknowledged."""
    for number in range(count):
        task_type = "chaos_safe" if number % 2 else "chaos_unsafe"
        payload: dict[str, object] = {"n": number}
        if number % CHILD_EVERY < 2:
            payload["child"] = round(lease * CHILD_LEASES, 1)
        if number % NUL_EVERY == 3:
            payload["nul"] = True
        while True:
            try:
                task = await client.create_task(task_type, payload, max_attempts=20)
                if payload.get("nul"):
                    nul_tasks.add(task.id)
                acknowledged[task.id] = task_type
                break
            except QueueError:
                await asyncio.sleep(0.2)


async def status_counts(client: QueueClient) -> Counter[str] | None:
    try:
        text = (await client.request("GET", "/metrics")).text
    except QueueError:
        return None
    counts: Counter[str] = Counter()
    for line in text.splitlines():
        if line.startswith("da_tasks{"):
            status = line.split('status="')[1].split('"')[0]
            counts[status] += int(line.rsplit(" ", 1)[1])
    return counts


async def run(tasks: int, queue_kills: int, worker_kills: int, *, replica_stops: int = 0, db_url: str | None = None,
              lease: float = 3.0, max_sleep: float = 0.05, kill_gap: float = 1.5, timeout: float = 900.0,
              folder: Path | None = None) -> dict[str, object]:
    """The whole chaos run; returns the measured figures and check results.

    `db_url` (an empty PostgreSQL database) runs two replicas on it instead of one on a SQLite file.
    """
    own = tempfile.TemporaryDirectory() if folder is None else None
    root = Path(own.name) if own else folder
    assert root is not None
    (root / "handlers").mkdir(parents=True, exist_ok=True)
    for name, safe in (("chaos_safe", True), ("chaos_unsafe", False)):
        (root / "handlers" / f"{name}.py").write_text(HANDLER.format(safe=safe, root=str(root), max_sleep=max_sleep))
    fleet = Fleet(root, [free_port() for _ in range(2 if db_url else 1)], lease, db_url)
    for index in range(len(fleet.ports)):
        fleet.start_queue(index)
    for index in range(4):
        fleet.start_worker(index)
    acknowledged: dict[str, str] = {}
    nul_tasks: set[str] = set()
    kills_with_children = 0
    killed_workers: set[int] = set()
    rng = random.Random(7)
    started = time.monotonic()
    try:
        async with QueueClient(fleet.urls, SECRET, rounds=50, timeout=lease) as client:
            await client.health()
            pusher = asyncio.create_task(push(client, tasks, acknowledged, lease, nul_tasks))
            kills = ["queue"] * queue_kills + ["worker"] * worker_kills + ["stop"] * replica_stops
            rng.shuffle(kills)
            last_kill = time.monotonic()
            for kind in kills:
                await asyncio.sleep(kill_gap)
                if kind == "queue":
                    index = rng.randrange(len(fleet.queues))
                    fleet.kill(fleet.queues[index])
                    await asyncio.sleep(0.3)
                    fleet.start_queue(index)
                elif kind == "stop":
                    await fleet.stop_a_while(rng.randrange(len(fleet.queues)), lease * STOP_LEASES)
                else:
                    busy = await busy_workers(root, acknowledged, lease * CHILD_LEASES)
                    index = busy[0] if busy else rng.randrange(len(fleet.workers))
                    kills_with_children += bool(busy)
                    killed_workers.add(fleet.workers[index].pid if fleet.workers[index] else 0)
                    fleet.kill(fleet.workers[index])
                    fleet.start_worker(index)
                last_kill = time.monotonic()
            await pusher
            deadline = time.monotonic() + timeout
            while True:
                counts = await status_counts(client)
                if counts is not None and sum(counts[s] for s in TERMINAL) >= len(acknowledged) and not any(
                        counts[s] for s in ("pending", "claimed", "in_progress")):
                    break
                if time.monotonic() > deadline:
                    raise TimeoutError(f"queue not drained within {timeout:g}s: {counts}")
                await asyncio.sleep(0.2)
            drained = time.monotonic() - last_kill
    finally:
        fleet.stop_all()
    figures = check(root, acknowledged, nul_tasks, killed_workers, await stored(root, db_url))
    figures.update(tasks=len(acknowledged), backend="postgresql, 2 replicas" if db_url else "sqlite",
                   queue_kills=queue_kills, worker_kills=worker_kills, replica_stops=replica_stops,
                   replica_stop_seconds=lease * STOP_LEASES, lease=lease,
                   worker_kills_with_children_alive=kills_with_children,
                   drain_after_last_kill=round(drained, 1), total_seconds=round(time.monotonic() - started, 1))
    if own:
        own.cleanup()
    return figures


async def busy_workers(root: Path, acknowledged: dict[str, str], patience: float) -> list[int]:
    """`workers_with_children`, waiting up to `patience` seconds for one (children start every CHILD_EVERY tasks)."""
    deadline = time.monotonic() + patience
    while not (busy := workers_with_children(root, acknowledged)) and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    return busy


def workers_with_children(root: Path, acknowledged: dict[str, str]) -> list[int]:
    """The workers (by index) running a task whose child process is alive now: those of a retry-safe
    task first (it runs again once its lease is reaped), youngest child first (it outlives that)."""
    children = root / "children.log"
    lines = [line.split() for line in (children.read_text().splitlines() if children.exists() else []) if line.strip()]
    running = sorted(((acknowledged.get(task_id) != "chaos_safe", -int(started), int(machine.rsplit("-", 1)[1]))
                      for task_id, pid, machine, started in lines if alive(int(pid))))
    return [index for *_, index in running]


def alive(pid: int) -> bool:
    """Whether a process runs (a zombie counts as gone)."""
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    try:
        return not stat.exists() or stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


# What the checks read from the database: each task's status and notes, and the tasks reported done twice.
TASKS_SQL = "SELECT id, status, notes FROM tasks"
DONE_TWICE_SQL = "SELECT task_id FROM events WHERE to_status = 'done' GROUP BY task_id HAVING count(*) > 1"


async def stored(root: Path, db_url: str | None) -> tuple[dict[str, tuple[Any, ...]], list[str]]:
    """Each task's (status, notes) by id, and the ids reported done more than once."""
    if db_url:
        db = await asyncpg.connect(db_url)
        try:
            return ({row[0]: tuple(row)[1:] for row in await db.fetch(TASKS_SQL)},
                    [row[0] for row in await db.fetch(DONE_TWICE_SQL)])
        finally:
            await db.close()
    with sqlite3.connect(root / "queue.db") as lite:
        return ({row[0]: row[1:] for row in lite.execute(TASKS_SQL)}, [row[0] for row in lite.execute(DONE_TWICE_SQL)])


def check(root: Path, acknowledged: dict[str, str], nul_tasks: set[str], killed_workers: set[int],
          database: tuple[dict[str, tuple[Any, ...]], list[str]]) -> dict[str, object]:
    """The promises, read from the database and the side files."""
    executions, overlaps = root / "executions.log", root / "overlaps.log"
    lines = [line.split() for line in executions.read_text().splitlines() if line.strip()]
    runs = Counter(task_id for task_id, _ in lines)
    # A run in a worker that was never SIGKILLed must get its outcome stored.
    ran_in_surviving_worker = {task_id for task_id, pid in lines if int(pid) not in killed_workers}
    overlapping = overlaps.read_text().splitlines() if overlaps.exists() else []
    rows, done_twice = database
    missing = [task_id for task_id in acknowledged if task_id not in rows]
    unfinished = [task_id for task_id in acknowledged if task_id in rows and rows[task_id][0] not in TERMINAL]
    unsafe = [task_id for task_id, kind in acknowledged.items() if kind == "chaos_unsafe"]
    unsafe_twice = [task_id for task_id in unsafe if runs[task_id] > 1]
    lost = [task_id for task_id in unsafe if task_id in rows and rows[task_id][0] == "needs_human"]
    lost_without_note = [task_id for task_id in lost if "lost" not in (rows[task_id][1] or "")]
    statuses = Counter(rows[task_id][0] for task_id in acknowledged if task_id in rows)
    safe_reruns = sum(max(0, runs[t] - 1) for t, kind in acknowledged.items() if kind == "chaos_safe")
    # A NUL-bearing report is stored with the NUL replaced; only a killed worker may keep it from being done.
    nul_not_stored = [t for t in nul_tasks if t in ran_in_surviving_worker
                      and not (rows.get(t, ("",))[0] == "done" and "\ufffd" in (rows[t][1] or ""))]
    return {
        "statuses": dict(statuses),
        "missing": len(missing),
        "not_terminal": len(unfinished),
        "done_twice": len(done_twice),
        "unsafe_run_twice": len(unsafe_twice),
        "unsafe_lost_to_needs_human": len(lost),
        "lost_without_note": len(lost_without_note),
        "safe_reruns": safe_reruns,
        "runs_overlapping_an_orphan": len(overlapping),
        "nul_reports": len(nul_tasks),
        "nul_reports_not_stored": len(nul_not_stored),
        "ok": not (missing or unfinished or done_twice or unsafe_twice or lost_without_note or overlapping
                   or nul_not_stored),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=5000)
    parser.add_argument("--queue-kills", type=int, default=5)
    parser.add_argument("--worker-kills", type=int, default=10)
    parser.add_argument("--replica-stops", type=int, default=3,
                        help=f"SIGSTOPs of a queue replica, each {STOP_LEASES:g} leases long")
    parser.add_argument("--db-url", help="an empty PostgreSQL database: two replicas on it instead of SQLite")
    args = parser.parse_args()
    figures = asyncio.run(run(args.tasks, args.queue_kills, args.worker_kills, replica_stops=args.replica_stops,
                              db_url=args.db_url))
    width = max(len(key) for key in figures)
    for key, value in figures.items():
        print(f"{key:<{width}}  {value}")
    return 0 if figures["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
