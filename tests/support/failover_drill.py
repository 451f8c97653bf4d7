"""The failover drill: the PostgreSQL primary dies mid-run and its synchronous standby is promoted.

A primary and a streaming standby (`pg_basebackup -R`) with synchronous replication on, two
`da serve` replicas on the multi-host URL (`postgresql://da@127.0.0.1:P1,127.0.0.1:P2/db`), two
real `da worker` processes with QUEUE_URL=A,B, and N run_script tasks that each append their
index to a side file. Once a share of them ran, the primary's postmaster is SIGKILLed and the
standby promoted a little later; meanwhile a client asks both replicas for /health (which commits
a write) and a task page, as a load balancer and a front end would. Nothing is restarted.

Shared by test_failover.py (a short run in CI) and bench/failover.py (the long one, with a table).
"""

from __future__ import annotations

import asyncio
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from da.queue.client import QueueClient
from tests.support import loopback, postgres
from tests.support import processes as tests_support

SECRET = "failover-secret-0123456789"
# "Answered within seconds": no request during the outage may take longer than this.
ANSWER_BOUND = 5.0
PROBE_EVERY = 0.05
UNAVAILABLE = "503 database_unavailable"


@dataclass
class Probe:
    """One request of the watching client: `write` is /health (it commits), `read` a task page."""

    at: float
    kind: str
    ok: bool
    seconds: float
    status: str
    ran: int


@dataclass
class Fleet:
    """Two `da serve` replicas and two `da worker` processes, none of them restarted during the drill."""

    folder: Path
    serves: list[subprocess.Popen[bytes]] = field(default_factory=list)
    urls: list[str] = field(default_factory=list)
    workers: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def start(self, db_url: str, lease: float) -> None:
        logs = []
        for name in ("a", "b"):
            folder = self.folder / f"serve-{name}"
            folder.mkdir()
            process, url, log = tests_support.launch_serve(
                folder, SECRET_KEY=SECRET, QUEUE_DB_URL=db_url, QUEUE_LEASE=str(lease), QUEUE_REAP_INTERVAL="0.2",
                LOG_LEVEL="WARNING")
            self.serves.append(process)
            self.urls.append(url)
            logs.append(log)
        for url, log in zip(self.urls, logs, strict=True):
            tests_support.wait_serving(url, log)
        for index in (1, 2):
            env = {"PATH": os.environ["PATH"], "HOME": str(self.folder), "SECRET_KEY": SECRET,
                   "QUEUE_URL": ",".join(self.urls), "MACHINE_NAME": f"drill-{index}",
                   "WORKER_CAPABILITIES": "run_script", "MAX_CONCURRENT": "4", "WORKER_POLL_WAIT": "5",
                   "SHUTDOWN_GRACE": "5", "DA_LOG_DIR": str(self.folder / "logs"),
                   "DA_CONFIG_DIR": str(self.folder), "LOG_LEVEL": "WARNING"}
            with (self.folder / f"worker-{index}.log").open("wb") as log_file:
                self.workers.append(subprocess.Popen([sys.executable, "-m", "da.cli", "worker"], env=env,
                                                     cwd=self.folder, stdout=log_file, stderr=subprocess.STDOUT))

    def stop(self) -> None:
        processes = [*self.workers, *self.serves]
        for process in processes:
            if process.poll() is None:
                process.terminate()
        for process in processes:
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def all_running(self) -> bool:
        return all(process.poll() is None for process in [*self.workers, *self.serves])

    def logs(self) -> str:
        """Every process's log, for a failed check."""
        return "\n".join(f"--- {path.relative_to(self.folder)}\n{path.read_text(errors='replace')[-4000:]}"
                         for path in sorted(self.folder.glob("**/*.log")) if path.parent.name != "logs")


@dataclass
class Outcome:
    """What the drill saw; `problems()` lists every check that failed."""

    acknowledged: dict[str, int]
    statuses: dict[str, str]
    runs: Counter[int]
    done_twice: int
    fleet_resumed: bool
    probes: list[Probe]
    killed_at: float
    promoting_at: float
    promoted_at: float
    finished_at: float
    started_at: float
    ran_before_kill: int
    logs: str = ""

    @property
    def not_done(self) -> list[str]:
        return [task_id for task_id in self.acknowledged if self.statuses.get(task_id) != "done"]

    @property
    def run_twice(self) -> list[int]:
        return sorted(index for index, n in self.runs.items() if n > 1)

    @property
    def never_run(self) -> list[int]:
        return sorted(set(self.acknowledged.values()) - set(self.runs))

    def _during(self) -> list[Probe]:
        """Probes from the first failure after the kill to the first success after the last failure."""
        after = [probe for probe in self.probes if probe.at >= self.killed_at]
        failed = [index for index, probe in enumerate(after) if not probe.ok]
        if not failed:
            return []
        return after[failed[0]:failed[-1] + 2]

    @property
    def outage(self) -> float | None:
        """First failed to first successful request, as the watching client saw it."""
        during = self._during()
        if not during or not during[-1].ok:
            return None
        return during[-1].at + during[-1].seconds - during[0].at

    @property
    def slowest_during_outage(self) -> float:
        return max((probe.seconds for probe in self._during()), default=0.0)

    def first_write_after(self, moment: float) -> float | None:
        """Seconds from `moment` to the end of the first /health that committed after it."""
        write = next((probe for probe in self.probes
                      if probe.kind == "write" and probe.ok and probe.at >= moment), None)
        return None if write is None else write.at + write.seconds - moment

    def steady(self, kind: str) -> float:
        """Median answer time of one kind of request before the kill: the baseline."""
        times = [probe.seconds for probe in self.probes if probe.kind == kind and probe.at < self.killed_at]
        return statistics.median(times) if times else float("nan")

    def throughput(self, after: bool) -> float:
        """Tasks run a second from the first one to the kill, or from the first write after promotion to the end."""
        if not after:
            first = next((probe for probe in self.probes if probe.ran), None)
            if first is None or first.at >= self.killed_at:
                return 0.0
            return (self.ran_before_kill - first.ran) / max(self.killed_at - first.at, 1e-9)
        back = self.first_write_after(self.promoting_at)
        if back is None:
            return 0.0
        resumed = self.promoting_at + back
        ran_then = max((probe.ran for probe in self.probes if probe.at <= resumed), default=0)
        return (len(self.acknowledged) - ran_then) / max(self.finished_at - resumed, 1e-9)

    def problems(self) -> list[str]:
        found = []
        if self.not_done:
            found.append(f"{len(self.not_done)} acknowledged tasks did not end done: "
                         f"{[self.statuses.get(task_id) for task_id in self.not_done][:10]}")
        if self.run_twice:
            found.append(f"indexes run twice: {self.run_twice[:20]}")
        if self.never_run:
            found.append(f"indexes never run: {self.never_run[:20]}")
        if self.done_twice:
            found.append(f"{self.done_twice} tasks reported done twice")
        if not self.fleet_resumed:
            found.append("a replica or a worker exited")
        if self.outage is None:
            found.append("the clients never saw the outage end (or never saw it)")
        if self.slowest_during_outage >= ANSWER_BOUND:
            found.append(f"a request took {self.slowest_during_outage:.1f} s during the outage")
        return found

    def table(self) -> list[tuple[str, Any]]:
        during = self._during()
        failures = Counter(probe.status for probe in during if not probe.ok)
        write_back = self.first_write_after(self.promoting_at)
        steady_write = self.steady("write")
        before, after = self.throughput(False), self.throughput(True)
        return [
            ("tasks acknowledged", len(self.acknowledged)),
            ("ran before the kill", self.ran_before_kill),
            ("baseline: steady /health write, median (ms)", round(steady_write * 1000, 1)),
            ("baseline: steady task page read, median (ms)", round(self.steady("read") * 1000, 1)),
            ("kill to promotion (s)", round(self.promoting_at - self.killed_at, 2)),
            ("pg_ctl promote took (s)", round(self.promoted_at - self.promoting_at, 2)),
            ("first write after promotion began (s)", None if write_back is None else round(write_back, 2)),
            ("  x steady write", None if write_back is None else round(write_back / steady_write)),
            ("outage seen by clients (s)", None if self.outage is None else round(self.outage, 2)),
            ("requests during the outage", len(during)),
            (f"  answered {UNAVAILABLE}", failures.get(UNAVAILABLE, 0)),
            ("  other failures", {status: n for status, n in failures.items() if status != UNAVAILABLE} or 0),
            ("slowest answer during the outage (s)", round(self.slowest_during_outage, 3)),
            ("throughput before the kill (tasks/s)", round(before, 1)),
            ("throughput after recovery (tasks/s)", round(after, 1)),
            ("  ratio after/before", round(after / before, 2) if before else None),
            ("acknowledged not done (lost)", len(self.not_done)),
            ("indexes run twice", len(self.run_twice)),
            ("indexes never run", len(self.never_run)),
            ("done reported twice", self.done_twice),
            ("needs_human", sum(1 for status in self.statuses.values() if status == "needs_human")),
            ("fleet resumed by itself", self.fleet_resumed),
            ("drill total (s)", round(self.finished_at - self.started_at, 1)),
        ]


def side_file_count(path: Path) -> int:
    return len(path.read_text().split()) if path.exists() else 0


async def wait_for(condition: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not await condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} did not happen within {timeout:g} s")
        await asyncio.sleep(0.05)


async def sql(url: str, statement: str) -> list[asyncpg.Record]:
    db = await asyncpg.connect(url, timeout=5)
    try:
        return list(await db.fetch(statement))
    finally:
        await db.close()


async def watch(urls: list[str], side: Path, probes: list[Probe], stop: asyncio.Event) -> None:
    """Ask each replica for /health and one task page every PROBE_EVERY seconds."""
    async with loopback.client(headers={"x-secret-key": SECRET}, timeout=30) as http:
        while not stop.is_set():
            for url in urls:
                for kind, path in (("write", "/health"), ("read", "/v1/tasks?limit=1")):
                    started = time.monotonic()
                    try:
                        response = await http.get(url + path)
                        ok, status = response.status_code == 200, str(response.status_code)
                        if not ok:
                            status += " " + str(response.json().get("error", ""))
                    except (httpx.HTTPError, ValueError) as exc:
                        ok, status = False, type(exc).__name__
                    probes.append(Probe(started, kind, ok, time.monotonic() - started, status,
                                        side_file_count(side)))
            await asyncio.sleep(PROBE_EVERY)


async def run(tasks: int = 200, *, lease: float = 10.0, task_seconds: float = 0.3, kill_after: float = 1 / 3,
              promote_after: float = 2.0, durable: bool = False, timeout: float = 180.0) -> Outcome:
    """The whole drill in a temporary folder, its own two PostgreSQL servers torn down at the end."""
    with tempfile.TemporaryDirectory(prefix="da-failover-") as name:
        root = Path(name)
        primary = postgres.Cluster(durable=durable)
        standby = postgres.Cluster(durable=durable)
        fleet = Fleet(root)
        stop_watching = asyncio.Event()
        try:
            await asyncio.to_thread(primary.start)
            database = (await primary.create_database(migrated=False)).rsplit("/", 1)[1]
            await asyncio.to_thread(standby.start_standby, primary)
            await primary.require_synchronous_standby()
            db_url = (f"postgresql://{postgres.ADMIN}@127.0.0.1:{primary.port},"
                      f"127.0.0.1:{standby.port}/{database}")
            await asyncio.to_thread(fleet.start, db_url, lease)
            return await _drill(fleet, primary, standby, database, root / "ran.txt", stop_watching, tasks=tasks,
                                task_seconds=task_seconds, kill_after=kill_after, promote_after=promote_after,
                                timeout=timeout)
        finally:
            stop_watching.set()
            await asyncio.to_thread(fleet.stop)
            await asyncio.to_thread(standby.stop)
            await asyncio.to_thread(primary.stop)


async def _drill(fleet: Fleet, primary: postgres.Cluster, standby: postgres.Cluster, database: str,
                 side: Path, stop_watching: asyncio.Event, *, tasks: int, task_seconds: float, kill_after: float,
                 promote_after: float, timeout: float) -> Outcome:
    probes: list[Probe] = []
    watcher = asyncio.create_task(watch(fleet.urls, side, probes, stop_watching))
    try:
        async with QueueClient(fleet.urls, SECRET, timeout=30) as client:
            acknowledged = {}
            started_at = time.monotonic()
            for index in range(tasks):
                task = await client.create_task("run_script", {"script": f"echo {index} >> {side}; "
                                                               f"sleep {task_seconds}"})
                acknowledged[task.id] = index

        async def a_share_ran() -> bool:
            return side_file_count(side) >= tasks * kill_after

        await wait_for(a_share_ran, timeout, "the first share of tasks running")
        ran_before_kill = side_file_count(side)
        killed_at = time.monotonic()
        os.kill(primary.postmaster_pid(), signal.SIGKILL)
        await asyncio.sleep(promote_after)
        promoting_at = time.monotonic()
        await asyncio.to_thread(standby.promote)
        promoted_at = time.monotonic()
        new_primary = standby.url(database)

        async def all_done() -> bool:
            rows = await sql(new_primary, "SELECT count(*) AS n FROM tasks WHERE status = 'done'")
            return bool(rows[0]["n"] >= tasks)

        await wait_for(all_done, timeout, "every task ending done")
        finished_at = time.monotonic()
        stop_watching.set()
        await watcher
        fleet_resumed = fleet.all_running()
        rows = await sql(new_primary, "SELECT id, status FROM tasks")
        done_twice = await sql(new_primary, "SELECT task_id FROM events WHERE to_status = 'done' "
                                            "GROUP BY task_id HAVING count(*) > 1")
    except BaseException:
        print(fleet.logs(), file=sys.stderr)
        raise
    finally:
        stop_watching.set()
        await asyncio.gather(watcher, return_exceptions=True)
    outcome = Outcome(
        acknowledged=acknowledged, statuses={row["id"]: row["status"] for row in rows},
        runs=Counter(int(index) for index in side.read_text().split()), done_twice=len(done_twice),
        fleet_resumed=fleet_resumed, probes=probes, killed_at=killed_at, promoting_at=promoting_at,
        promoted_at=promoted_at, finished_at=finished_at, started_at=started_at, ran_before_kill=ran_before_kill)
    if outcome.problems():
        outcome.logs = fleet.logs()
    return outcome
