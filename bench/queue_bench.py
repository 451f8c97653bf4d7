"""Queue benchmark: dispatch latency, lifecycle throughput and claim cost against backlog.

Starts a real `da serve` pinned to one core and drives it from this process on the other
core with aiohttp (an httpx client tops out near the server's own rate and would measure
itself). Prints one table; ratios compare each backlog with the 1k baseline of the same run.

    python bench/queue_bench.py            # full run (about a minute)
    python bench/queue_bench.py --quick    # smaller counts, for a smoke check
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
from pathlib import Path

import aiohttp

SECRET = "bench-secret"
HEADERS = {"x-secret-key": SECRET}
WORKER = {"machine": "bench-worker", "capabilities": ["run_script"], "agents": []}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


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
    """A `da serve` subprocess on its own core and its own database file."""

    def __init__(self, folder: Path, core: int | None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        command = [sys.executable, "-m", "da.cli", "serve", "--port", str(self.port), "--db", str(folder / "q.db")]
        if core is not None and shutil.which("taskset"):
            command = ["taskset", "-c", str(core), *command]
        env = {**os.environ, "SECRET_KEY": SECRET, "LOG_LEVEL": "WARNING", "DA_CONFIG_DIR": str(folder)}
        self.process = subprocess.Popen(command, env=env, cwd=folder)

    async def wait_ready(self, session: aiohttp.ClientSession) -> None:
        deadline = time.monotonic() + 20
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


async def create(session: aiohttp.ClientSession, url: str, body: dict) -> dict:
    async with session.post(url + "/v1/tasks", json=body) as response:
        assert response.status == 201, await response.text()
        return await response.json()


async def create_many(session: aiohttp.ClientSession, url: str, body: dict, count: int, concurrency: int = 16) -> None:
    remaining = iter(range(count))

    async def pump() -> None:
        for _ in remaining:
            await create(session, url, body)

    await asyncio.gather(*(pump() for _ in range(concurrency)))


async def claim(session: aiohttp.ClientSession, url: str, wait: float = 0.0) -> dict | None:
    async with session.post(url + "/v1/claim", json={**WORKER, "wait": wait}) as response:
        if response.status == 204:
            return None
        assert response.status == 200, await response.text()
        return await response.json()


async def finish(session: aiohttp.ClientSession, url: str, claimed: dict) -> None:
    task_id, lease = claimed["task"]["id"], claimed["lease"]
    async with session.post(f"{url}/v1/tasks/{task_id}/start", json={"lease": lease}) as response:
        assert response.status == 200
    async with session.post(f"{url}/v1/tasks/{task_id}/report",
                            json={"lease": lease, "status": "done", "result": {"returncode": 0}}) as response:
        assert response.status == 200


async def dispatch_latency(session: aiohttp.ClientSession, url: str, rounds: int) -> list[float]:
    """Task created → claimed by an idle long-polling worker, in seconds."""
    samples = []
    for _ in range(rounds):
        waiting = asyncio.create_task(claim(session, url, wait=30))
        await asyncio.sleep(0.005)  # let the claim reach the server and park
        started = time.perf_counter()
        await create(session, url, {"type": "run_script", "payload": {"script": "true"}})
        claimed = await waiting
        samples.append(time.perf_counter() - started)
        await finish(session, url, claimed)
    return samples


async def lifecycle(session: aiohttp.ClientSession, url: str, count: int, workers: int = 8) -> float:
    """Pre-created tasks run through claim, start and report by `workers` loops; tasks per second."""
    await create_many(session, url, {"type": "run_script", "payload": {"script": "true"}}, count)
    done = 0

    async def loop() -> None:
        nonlocal done
        while (claimed := await claim(session, url)) is not None:
            await finish(session, url, claimed)
            done += 1

    started = time.perf_counter()
    await asyncio.gather(*(loop() for _ in range(workers)))
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


async def run(quick: bool) -> int:
    os.sched_setaffinity(0, {1}) if hasattr(os, "sched_setaffinity") and os.cpu_count() > 1 else None
    sizes = [0, 1000, 10_000, 50_000] if not quick else [0, 1000, 5000]
    rounds, count, claimable = (300, 5000, 200) if not quick else (50, 1000, 50)
    history = 200_000 if not quick else 20_000
    rows: list[tuple[str, str, str, str]] = []
    ok = True
    with tempfile.TemporaryDirectory() as folder:
        async with aiohttp.ClientSession(headers=HEADERS, connector=aiohttp.TCPConnector(limit=64)) as session:
            history_base = None
            for title in ("dispatch", "lifecycle", "pinned elsewhere", "type it lacks", "fresh", "history"):
                sub = Path(folder) / title.replace(" ", "_")
                sub.mkdir()
                if title == "history":
                    prefill_history(sub / "q.db", history)
                server = Server(sub, core=0)
                try:
                    await server.wait_ready(session)
                    if title == "dispatch":
                        samples = dispatch_latency(session, server.url, rounds)
                        values = await samples
                        p50, p99 = percentile(values, 0.5) * 1000, percentile(values, 0.99) * 1000
                        rows.append(("dispatch latency p50", f"{p50:.2f} ms", "< 5 ms", "ok" if p50 < 5 else "MISS"))
                        rows.append(("dispatch latency p99", f"{p99:.2f} ms", "< 20 ms", "ok" if p99 < 20 else "MISS"))
                        ok &= p50 < 5 and p99 < 20
                    elif title == "lifecycle":
                        # This shared machine's speed drifts between runs; the median of three is the figure.
                        rates = sorted([await lifecycle(session, server.url, count) for _ in range(3)])
                        rate = rates[1]
                        rows.append((f"lifecycle, 8 workers (median of 3: {rates[0]:,.0f}..{rates[2]:,.0f})",
                                     f"{rate:,.0f} tasks/s", ">= 1,500 tasks/s", "ok" if rate >= 1500 else "MISS"))
                        ok &= rate >= 1500
                    elif title in ("fresh", "history"):
                        median = await claim_median(session, server.url, claimable)
                        if title == "fresh":
                            history_base = median
                            rows.append(("claim, empty database", f"{median * 1000:.3f} ms", "baseline", "ok"))
                        else:
                            ratio = median / (history_base or median)
                            ok &= ratio <= 1.5
                            rows.append((f"claim, {history:,} finished tasks kept", f"{median * 1000:.3f} ms",
                                         f"x{ratio:.2f} of empty (<= 1.5)", "ok" if ratio <= 1.5 else "MISS"))
                    else:
                        series = await backlog_series(session, server.url, title, sizes, claimable)
                        base = series[1000]
                        for size, median in series.items():
                            ratio = median / base
                            verdict = "ok" if size <= 1000 or ratio <= 1.5 else "MISS"
                            ok &= verdict == "ok"
                            rows.append((f"claim, {size:,} {title}", f"{median * 1000:.3f} ms",
                                         f"x{ratio:.2f} of 1k" + (" (<= 1.5)" if size > 1000 else ""), verdict))
                finally:
                    server.stop()
    width = max(len(r[0]) for r in rows)
    print(f"{'measure':<{width}}  {'value':>16}  {'target / ratio':<22}  verdict")
    for name, value, target, verdict in rows:
        print(f"{name:<{width}}  {value:>16}  {target:<22}  {verdict}")
    return 0 if ok else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller counts for a smoke run")
    return asyncio.run(run(parser.parse_args().quick))


if __name__ == "__main__":
    sys.exit(main())
