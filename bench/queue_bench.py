"""Queue benchmark: dispatch latency, lifecycle throughput and claim cost against backlog.

Starts real `da serve` processes pinned to one core (with `--backend postgres`, the PostgreSQL
server runs unpinned beside them) and drives them from this process on the other core with aiohttp (an httpx client
tops out near the server's own rate and would measure itself). Prints one table; ratios compare
each backlog with the 1k baseline of the same run, and PostgreSQL with SQLite of the same run.

Rates are also given as a ratio to the floor this machine allows: aiohttp's own JSON echo server
(`echo_server.py`, on the same core, driven the same way) measured in the same run. Three rounds are
interleaved (echo, then each backend's create and lifecycle runs, three times) and each figure is the
median of its three, so the drift of a shared machine hits the floor and the queue alike.

    python bench/queue_bench.py                      # SQLite (about a minute)
    python bench/queue_bench.py --backend postgres   # SQLite, then PostgreSQL with one and two replicas
    python bench/queue_bench.py --quick              # smaller counts, for a smoke check
    python bench/queue_bench.py --rates              # only the rounds of rates against the echo floor

PostgreSQL runs in a throwaway cluster (tests/support/postgres.py) with its durable defaults
(fsync on, synchronous_commit on): an answered write there survives a power loss, which SQLite
gives only with QUEUE_SYNC=full, its default.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.support import postgres

SECRET = "bench-secret"
HEADERS = {"x-secret-key": SECRET}
WORKER = {"machine": "bench-worker", "capabilities": ["run_script"], "agents": []}
SQLITE, POSTGRES, TWO = "sqlite", "postgres", "postgres, 2 replicas"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def prefill_history(db_path: Path, rows: int) -> None:
    """A year of use: `rows` finished tasks with their events, written straight into the file."""
    import sqlite3
    import uuid

    from da.queue.sqlite import STATEMENTS

    with sqlite3.connect(db_path) as db:
        for number, script in STATEMENTS.migrations():
            db.executescript(f"{script}\nPRAGMA user_version={number};")
        now = time.time()
        ids = [str(uuid.uuid4()) for _ in range(rows)]
        db.executemany(
            "INSERT INTO tasks (id, type, status, priority, payload, assigned_to, agent, max_attempts, attempts,"
            " result, created_at, updated_at, finished_at) VALUES (?, 'agent_run', 'done', 5, '{}', 'old-box',"
            " 'claude', 3, 1, '{\"returncode\": 0}', ?, ?, ?)",
            ((task_id, now - 3e7 + n, now - 3e7 + n, now - 3e7 + n) for n, task_id in enumerate(ids)))
        db.executemany("INSERT INTO events (task_id, from_status, to_status, by, at) VALUES (?, ?, ?, 'old-box', 0)",
                       ((task_id, a, b) for task_id in ids for a, b in
                        (("pending", "claimed"), ("claimed", "in_progress"), ("in_progress", "done"))))


class Server:
    """A `da serve` subprocess on its own core (`echo`: aiohttp's JSON echo server instead)."""

    def __init__(self, folder: Path, core: int | None, echo: bool = False, profile: Path | None = None,
                 **env: str) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        profiler = ["-m", "cProfile", "-o", str(profile)] if profile else []
        command = [sys.executable, *profiler, "-m", "da.cli", "serve", "--port", str(self.port), "--db",
                   str(folder / "q.db")]
        if echo:
            command = [sys.executable, str(Path(__file__).with_name("echo_server.py")), str(self.port)]
        if core is not None and shutil.which("taskset"):
            command = ["taskset", "-c", str(core), *command]
        environment = {**os.environ, "SECRET_KEY": SECRET, "LOG_LEVEL": "WARNING", "DA_CONFIG_DIR": str(folder),
                       **env}
        self.process = subprocess.Popen(command, env=environment, cwd=folder)

    async def wait_ready(self, session: aiohttp.ClientSession) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                async with session.get(self.url + "/health") as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientError:
                await asyncio.sleep(0.05)
        raise RuntimeError("da serve did not start")

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(10)

    def cpu(self) -> float:
        """CPU seconds (user and system, every thread) the server has used so far; 0 where /proc is missing."""
        return cpu_seconds(Path(f"/proc/{self.process.pid}/stat"))


def cpu_seconds(stat: Path) -> float:
    """The user and system CPU seconds in a /proc `stat` file (a process's or one thread's); 0 if unreadable."""
    try:
        fields = stat.read_text().rpartition(") ")[2].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def create(session: aiohttp.ClientSession, url: str, body: dict[str, Any]) -> dict[str, Any]:
    async with session.post(url + "/v1/tasks", json=body) as response:
        assert response.status == 201, await response.text()
        return dict(await response.json())


# Concurrent requests the rate figures (echo, create) keep in flight: enough to keep one core busy.
RATE_CONCURRENCY = 16
TASK = {"type": "run_script", "payload": {"script": "true"}}


async def create_many(session: aiohttp.ClientSession, url: str, body: dict[str, Any], count: int,
                      concurrency: int = RATE_CONCURRENCY) -> None:
    remaining = iter(range(count))

    async def pump() -> None:
        for _ in remaining:
            await create(session, url, body)

    await asyncio.gather(*(pump() for _ in range(concurrency)))


async def create_rate(session: aiohttp.ClientSession, url: str, count: int) -> float:
    """Tasks created per second, one per request."""
    started = time.perf_counter()
    await create_many(session, url, TASK, count)
    return count / (time.perf_counter() - started)


async def echo_rate(session: aiohttp.ClientSession, url: str, count: int) -> float:
    """Requests per second aiohttp's own JSON echo answers, driven like `create_rate`: the floor."""
    remaining = iter(range(count))

    async def pump() -> None:
        for _ in remaining:
            async with session.post(url + "/echo", json=TASK) as response:
                assert response.status == 200
                await response.json()

    started = time.perf_counter()
    await asyncio.gather(*(pump() for _ in range(RATE_CONCURRENCY)))
    return count / (time.perf_counter() - started)


async def bulk_rate(session: aiohttp.ClientSession, url: str, count: int, per_request: int = 100) -> float:
    """Tasks created per second in lists of `per_request`."""
    started = time.perf_counter()
    for _ in range(count // per_request):
        async with session.post(url + "/v1/tasks", json=[TASK] * per_request) as response:
            assert response.status == 201, await response.text()
            await response.read()
    return count // per_request * per_request / (time.perf_counter() - started)


async def claim(session: aiohttp.ClientSession, url: str, wait: float = 0.0,
                headers: dict[str, str] | None = None) -> dict[str, Any] | None:
    async with session.post(url + "/v1/claim", json={**WORKER, "wait": wait}, headers=headers) as response:
        if response.status == 204:
            return None
        assert response.status == 200, await response.text()
        return dict(await response.json())


async def finish(session: aiohttp.ClientSession, url: str, claimed: dict[str, Any],
                 headers: dict[str, str] | None = None, claim_next: bool = False) -> dict[str, Any] | None:
    """Start and report a claimed task; with `claim_next`, the report also claims the next (returned)."""
    task_id, lease = claimed["task"]["id"], claimed["lease"]
    async with session.post(f"{url}/v1/tasks/{task_id}/start", json={"lease": lease}, headers=headers) as response:
        assert response.status == 200
    body: dict[str, Any] = {"lease": lease, "status": "done", "result": {"returncode": 0}}
    if claim_next:
        body["claim"] = WORKER
    async with session.post(f"{url}/v1/tasks/{task_id}/report", headers=headers, json=body) as response:
        assert response.status == 200
        answer = await response.json()
    return answer.get("next")


async def dispatch_latency(session: aiohttp.ClientSession, creator: str, claimer: str, rounds: int) -> list[float]:
    """Task created through `creator` → claimed by an idle worker long-polling `claimer`, in seconds."""
    samples = []
    for _ in range(rounds):
        waiting = asyncio.create_task(claim(session, claimer, wait=30))
        await asyncio.sleep(0.005)  # let the claim reach the server and park
        started = time.perf_counter()
        await create(session, creator, {"type": "run_script", "payload": {"script": "true"}})
        claimed = await waiting
        samples.append(time.perf_counter() - started)
        assert claimed is not None
        await finish(session, claimer, claimed)
    return samples


async def lifecycle(session: aiohttp.ClientSession, urls: list[str], count: int, workers: int = 8,
                    token: str | None = None, combined: bool = True) -> float:
    """Pre-created tasks run through claim, start and report by `workers` loops spread over `urls`; tasks/s.

    `combined`: each report also claims the next task, as the worker does (two requests a task: start,
    report); else claim, start and report are three. With `token`, the loops send that worker token
    instead of the admin secret, as a fleet does.
    """
    await create_many(session, urls[0], TASK, count)
    done = 0
    headers = {"x-secret-key": token} if token else None

    async def loop(url: str) -> None:
        nonlocal done
        claimed = await claim(session, url, headers=headers)
        while claimed is not None:
            handed = await finish(session, url, claimed, headers=headers, claim_next=combined)
            done += 1
            claimed = handed if combined else None
            if claimed is None:
                claimed = await claim(session, url, headers=headers)

    started = time.perf_counter()
    await asyncio.gather(*(loop(urls[n % len(urls)]) for n in range(workers)))
    elapsed = time.perf_counter() - started
    assert done == count, (done, count)
    return count / elapsed


async def claim_median(session: aiohttp.ClientSession, url: str, claimable: int) -> float:
    """Median seconds of one immediate claim while `claimable` tasks it may take exist."""
    await create_many(session, url, {"type": "run_script", "payload": {"script": "true"}}, claimable)
    samples = []
    for _ in range(claimable):
        started = time.perf_counter()
        claimed = await claim(session, url)
        samples.append(time.perf_counter() - started)
        assert claimed is not None
        await finish(session, url, claimed)
    return statistics.median(samples)


async def backlog_series(session: aiohttp.ClientSession, url: str, kind: str, sizes: list[int],
                         claimable: int) -> dict[int, float]:
    blocker = ({"type": "run_script", "target_machine": "elsewhere"} if kind == "pinned elsewhere"
               else {"type": "ios_build"})
    results, current = {}, 0
    for size in sizes:
        await create_many(session, url, {**blocker, "payload": {"x": 1}}, size - current)
        current = size
        results[size] = await claim_median(session, url, claimable)
    return results


@dataclass
class Sizes:
    backlogs: list[int]
    rounds: int
    count: int
    claimable: int
    history: int


@dataclass
class Backend:
    """Where one column of the table runs: a fresh queue (and database) per scenario."""

    name: str
    folder: Path
    cluster: postgres.Cluster | None = None
    replicas: int = 1
    figures: dict[str, Any] = field(default_factory=dict)

    async def queue(self, session: aiohttp.ClientSession, title: str,
                    prepare: Callable[[Path], None] | None = None) -> list[Server]:
        folder = self.folder / self.name.replace(" ", "_").replace(",", "") / title.replace(" ", "_")
        folder.mkdir(parents=True)
        if self.cluster is None:
            if prepare is not None:
                prepare(folder / "q.db")
            servers = [Server(folder, core=0)]
        else:
            url = await self.cluster.create_database(migrated=False)
            servers = [Server(folder / str(n), core=0, QUEUE_DB_URL=url) for n in range(self.replicas)]
        for server in servers:
            await server.wait_ready(session)
        return servers

    async def run(self, session: aiohttp.ClientSession, title: str,
                  measure: Callable[[list[str]], Awaitable[Any]],
                  prepare: Callable[[Path], None] | None = None, round_: int | None = None) -> None:
        """Measure on a fresh queue; a figure of a round (`round_`) is kept beside the other rounds'."""
        servers = await self.queue(session, title if round_ is None else f"{title} {round_}", prepare)
        try:
            used = sum(server.cpu() for server in servers)
            value = await measure([server.url for server in servers])
            used = sum(server.cpu() for server in servers) - used
        finally:
            for server in servers:
                server.stop()
        if round_ is None:
            self.figures[title] = value
        else:
            self.figures.setdefault(title, []).append(value)
            self.figures.setdefault(f"{title} cpu", []).append(used)


# Interleaved rounds of the rate figures; each figure is the median of its rounds.
ROUNDS = 3
RATES = ("create", "bulk create", "lifecycle", "lifecycle, separate requests")


async def measure_rounds(session: aiohttp.ClientSession, backends: list[Backend], folder: Path, sizes: Sizes
                         ) -> tuple[list[float], list[float]]:
    """The echo floor and every backend's rates, round after round; returns the floor's rounds, and the
    echo server's CPU seconds per request in each."""
    echo = Server(folder / "echo", core=0, echo=True)
    floors, costs = [], []
    try:
        await echo.wait_ready(session)
        for round_ in range(ROUNDS):
            used = echo.cpu()
            floors.append(await echo_rate(session, echo.url, sizes.count))
            costs.append((echo.cpu() - used) / sizes.count)
            for backend in backends:
                if backend.replicas == 1:
                    await backend.run(session, "create", lambda urls: create_rate(session, urls[0], sizes.count),
                                      round_=round_)
                    await backend.run(session, "bulk create", lambda urls: bulk_rate(session, urls[0], sizes.count),
                                      round_=round_)
                    await backend.run(session, "lifecycle, separate requests", lambda urls: lifecycle(
                        session, urls, sizes.count, combined=False), round_=round_)
                await backend.run(session, "lifecycle", lambda urls: lifecycle(session, urls, sizes.count),
                                  round_=round_)
    finally:
        echo.stop()
    return floors, costs


async def measure_backend(session: aiohttp.ClientSession, backend: Backend, sizes: Sizes, full: bool = True
                          ) -> None:
    """Every scenario this column has but the rates of `measure_rounds`; figures land in `backend.figures`."""
    async def token_lifecycles(urls: list[str]) -> list[list[float]]:
        """Admin secret and worker token runs interleaved, so drift on this machine hits both alike."""
        async with session.post(urls[0] + "/v1/tokens", json={"kind": "worker", "machine": WORKER["machine"]}) as made:
            token = (await made.json())["token"]
        runs: list[list[float]] = [[], []]
        for _ in range(3):
            runs[0].append(await lifecycle(session, urls, sizes.count))
            runs[1].append(await lifecycle(session, urls, sizes.count, token=token))
        return [sorted(runs[0]), sorted(runs[1])]

    if backend.replicas > 1:
        await backend.run(session, "dispatch across", lambda urls: dispatch_latency(session, urls[0], urls[1],
                                                                                    sizes.rounds))
        return
    await backend.run(session, "dispatch", lambda urls: dispatch_latency(session, urls[0], urls[0], sizes.rounds))
    if not full:
        return
    await backend.run(session, "lifecycle tokens", token_lifecycles)
    for kind in ("pinned elsewhere", "type it lacks"):
        await backend.run(session, kind, lambda urls, kind=kind: backlog_series(
            session, urls[0], kind, sizes.backlogs, sizes.claimable))
    if backend.cluster is None:
        await backend.run(session, "fresh", lambda urls: claim_median(session, urls[0], sizes.claimable))
        await backend.run(session, "history", lambda urls: claim_median(session, urls[0], sizes.claimable),
                          prepare=lambda path: prefill_history(path, sizes.history))


# Goals (issue 23): dispatch p50 by backend; create against the echo rate; a task's life against
# half the echo rate (a task costs two requests: start, and the report that claims the next).
DISPATCH_P50 = {SQLITE: 2.0, POSTGRES: 3.0}
CREATE_OF_ECHO = 0.8
LIFECYCLE_OF_HALF_ECHO = {SQLITE: 1.0, POSTGRES: 0.8}


def table(backends: list[Backend], sizes: Sizes, floors: list[float],
          echo_costs: list[float] | None = None) -> tuple[list[tuple[str, ...]], bool]:
    """Rows of measure, one value per backend, target and verdict."""
    by_name = {backend.name: backend.figures for backend in backends}
    echo = statistics.median(floors)
    names = [backend.name for backend in backends]
    rows: list[tuple[str, ...]] = []
    ok = True

    def row(measure: str, values: dict[str, str], target: str, passed: bool | None) -> None:
        nonlocal ok
        ok &= passed is not False
        rows.append((measure, *(values.get(name, "-") for name in names), target,
                     "-" if passed is None else "ok" if passed else "MISS"))

    for label, fraction in (("p50", 0.5), ("p99", 0.99)):
        values, verdict = {}, True
        for name in names:
            samples = by_name[name].get("dispatch")
            if samples:
                millis = percentile(samples, fraction) * 1000
                values[name] = f"{millis:.2f} ms"
                verdict &= millis < (DISPATCH_P50[name] if label == "p50" else 20.0)
        target = "< 2 ms sqlite, < 3 ms postgres" if label == "p50" else "< 20 ms"
        row(f"dispatch latency {label}, same replica", values, target, verdict)
    across = by_name.get(TWO, {}).get("dispatch across")
    if across:
        for label, fraction, limit in (("p50", 0.5, 10.0), ("p99", 0.99, 40.0)):
            millis = percentile(across, fraction) * 1000
            row(f"dispatch latency {label}, across replicas", {TWO: f"{millis:.2f} ms"}, f"< {limit:g} ms",
                millis < limit if label == "p50" else None)
    row(f"aiohttp JSON echo, the floor (median of {ROUNDS})", {name: f"{echo:,.0f} req/s" for name in names},
        "-", None)

    def median_of(title: str) -> dict[str, float]:
        return {name: statistics.median(by_name[name][title]) for name in names if by_name[name].get(title)}

    created = median_of("create")
    row("create, one per request", {name: f"{rate:,.0f}/s x{rate / echo:.2f} of echo" for name, rate in
                                    created.items()}, f">= x{CREATE_OF_ECHO:g} of echo",
        all(rate / echo >= CREATE_OF_ECHO for rate in created.values()))
    row("create, lists of 100", {name: f"{rate:,.0f}/s x{rate / echo:.2f} of echo" for name, rate in
                                 median_of("bulk create").items()}, "-", None)
    rates = median_of("lifecycle")
    verdict = all(rates[name] / (echo / 2) >= goal for name, goal in LIFECYCLE_OF_HALF_ECHO.items() if name in rates)
    row("lifecycle, 8 workers, report claims the next", {
        name: f"{rate:,.0f} tasks/s x{rate / (echo / 2):.2f} of echo/2" for name, rate in rates.items()},
        ">= x1.0 sqlite, x0.8 postgres", verdict)
    row("lifecycle, claim + start + report", {
        name: f"{rate:,.0f} tasks/s x{rate / (echo / 2):.2f} of echo/2" for name, rate in
        median_of("lifecycle, separate requests").items()}, "-", None)
    # The server's CPU per request against the echo's: what the rates come to on an idle core, however much
    # else the machine runs meanwhile (a lifecycle run creates its tasks first, so a task's create is taken off).
    echo_cost = statistics.median(echo_costs) if echo_costs and all(echo_costs) else None
    if echo_cost:
        def cost_of(title: str, per: int) -> dict[str, float]:
            return {name: statistics.median(by_name[name][f"{title} cpu"]) / per for name in names
                    if by_name[name].get(f"{title} cpu")}

        create_cost = cost_of("create", sizes.count)
        row("server CPU a request: echo / create", {
            name: f"{echo_cost * 1e6:.0f} / {cost * 1e6:.0f} us, x{echo_cost / cost:.2f}" for name, cost in
            create_cost.items()}, "(x: echo's CPU / create's)", None)
        row("server CPU a task: start + report (claims next)", {
            name: f"{(cost - create_cost[name]) * 1e6:.0f} us, x{2 * echo_cost / (cost - create_cost[name]):.2f}"
            for name, cost in cost_of("lifecycle", sizes.count).items() if name in create_cost},
            "(x: two echoes' CPU / a task's)", None)
    sqlite_rate = rates.get(SQLITE)
    if POSTGRES in rates and sqlite_rate:
        share = rates[POSTGRES] / sqlite_rate
        row("  postgres lifecycle / sqlite", {POSTGRES: f"x{share:.2f}"}, ">= x0.50", share >= 0.5)
    if TWO in rates and sqlite_rate:
        row("  2 replicas lifecycle / sqlite", {TWO: f"x{rates[TWO] / sqlite_rate:.2f}"}, "(one core for all)",
            None)
    for name in names:
        pair = by_name[name].get("lifecycle tokens")
        if pair:
            share = pair[1][1] / pair[0][1]
            row(f"  {name}: worker token / admin secret", {name: f"x{share:.2f}"}, ">= x0.80", share >= 0.8)
    for kind in ("pinned elsewhere", "type it lacks"):
        if not any(by_name[name].get(kind) for name in names):
            continue  # --rates
        for size in sizes.backlogs:
            values, verdict = {}, True
            for name in names:
                series = by_name[name].get(kind)
                if not series:
                    continue
                ratio = series[size] / series[1000]
                values[name] = f"{series[size] * 1000:.3f} ms" + (f" x{ratio:.2f}" if size > 1000 else "")
                verdict &= size <= 1000 or ratio <= 1.5
            row(f"claim, {size:,} {kind}", values, "x of 1k <= 1.5" if size > 1000 else "baseline",
                verdict if size > 1000 else None)
    fresh, history = by_name[SQLITE].get("fresh"), by_name[SQLITE].get("history")
    if fresh and history:
        row("claim, empty database", {SQLITE: f"{fresh * 1000:.3f} ms"}, "baseline", None)
        ratio = history / fresh
        row(f"claim, {sizes.history:,} finished tasks kept", {SQLITE: f"{history * 1000:.3f} ms x{ratio:.2f}"},
            "x of empty <= 1.5", ratio <= 1.5)
    return rows, ok


async def run(quick: bool, backend_choice: str, rates_only: bool = False) -> int:
    if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) > 1:
        os.sched_setaffinity(0, {1})
    sizes = (Sizes([0, 1000, 10_000, 50_000], 300, 5000, 200, 200_000) if not quick
             else Sizes([0, 1000, 5000], 50, 1000, 50, 20_000))
    cluster = None
    with tempfile.TemporaryDirectory() as folder:
        backends = [Backend(SQLITE, Path(folder))]
        if backend_choice == POSTGRES:
            reason = postgres.unavailable()
            if reason:
                print(f"queue_bench: {reason}", file=sys.stderr)
                return 2
            # The database server gets no core of its own to share with the replicas: it is left to
            # the scheduler, as it would run on its own machine in production.
            cluster = postgres.Cluster(durable=True).start()
            backends += [Backend(POSTGRES, Path(folder), cluster), Backend(TWO, Path(folder), cluster, replicas=2)]
        try:
            async with aiohttp.ClientSession(headers=HEADERS, connector=aiohttp.TCPConnector(limit=64)) as session:
                floors, echo_costs = await measure_rounds(session, backends, Path(folder), sizes)
                for backend in backends:
                    await measure_backend(session, backend, sizes, full=not rates_only)
        finally:
            if cluster is not None:
                cluster.stop()
    rows, ok = table(backends, sizes, floors, echo_costs)
    header = ("measure", *(b.name for b in backends), "target", "verdict")
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    for line in [header, *rows]:
        print("  ".join(str(cell).ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip())
    return 0 if ok else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller counts for a smoke run")
    parser.add_argument("--rates", action="store_true",
                        help="only dispatch and the rates against the echo floor (no backlog series)")
    parser.add_argument("--backend", choices=[SQLITE, POSTGRES], default=SQLITE,
                        help="postgres also measures PostgreSQL, one replica and two, beside SQLite")
    args = parser.parse_args()
    return asyncio.run(run(args.quick, args.backend, args.rates))


if __name__ == "__main__":
    sys.exit(main())
