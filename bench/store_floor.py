"""The floor under issue 23's create and lifecycle goals: the SQLite store alone, without HTTP, against
aiohttp's JSON echo on the same core in the same run.

    python bench/store_floor.py [--count N] [--sync normal]

A created task is one durable insert with its event row; a task's life is its claim, its start and the
report that claims the next (three statements with their event rows, two commits). This runs those through
`SqliteStore` itself, 16 creates or 8 workers in flight as `queue_bench.py` does, pinned to the core the
echo server had, and gives the CPU of each (every thread, commits and their fsync included) against the
CPU of one echo request. A queue request costs at least an echo's HTTP work plus its store work, so the
best ratio any request path on this store could reach is echo / (echo + store): the table prints it beside
issue 23's goals.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent))

import queue_bench

from da.queue.models import ClaimRequest, NewTask, Report
from da.queue.sqlite import SqliteStore

CORE = 0
LEASE_SECONDS = 60.0
WORKER = ClaimRequest(machine="bench-worker", capabilities=("run_script",))
TASK = NewTask.parse(queue_bench.TASK)


def own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def store_costs(folder: Path, count: int, sync: str) -> dict[str, float]:
    """CPU seconds of one create and of one task's life through the store (run in the pinned child)."""
    store = SqliteStore(folder / "q.db", sync=sync)
    await store.open()
    try:
        async def creates(each: int) -> None:
            for _ in range(each):
                await store.create(TASK)

        await asyncio.gather(*(creates(count // 160) for _ in range(16)))  # warm the file and the statements
        await drain(store)
        before = own_cpu()
        await asyncio.gather(*(creates(count // 16) for _ in range(16)))
        created = count // 16 * 16
        create = (own_cpu() - before) / created

        before = own_cpu()
        done = await drain(store)
        return {"create": create, "task": (own_cpu() - before) / done}
    finally:
        await store.close()


async def drain(store: SqliteStore, workers: int = 8) -> int:
    """Run every pending task to done as the worker does: claim, then start and a report that claims the next."""
    done = 0

    async def loop() -> None:
        nonlocal done
        claim = await store.claim(WORKER, lease_seconds=LEASE_SECONDS, overflow_grace=0)
        while claim is not None:
            await store.start(claim.task.id, claim.lease)
            _, claim = await store.report_and_claim(claim.task.id, Report(claim.lease, "done", {"returncode": 0}),
                                                    WORKER, lease_seconds=LEASE_SECONDS, overflow_grace=0)
            done += 1

    await asyncio.gather(*(loop() for _ in range(workers)))
    return done


async def echo_cost(folder: Path, count: int) -> float:
    """CPU seconds of one request to aiohttp's JSON echo on CORE, driven from the other core."""
    server = queue_bench.Server(folder / "echo", CORE, echo=True)
    try:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=64)) as session:
            await server.wait_ready(session)
            await queue_bench.echo_rate(session, server.url, count // 10)
            before = server.cpu()
            await queue_bench.echo_rate(session, server.url, count)
            return (server.cpu() - before) / count
    finally:
        server.stop()


def pinned_store_costs(folder: Path, count: int, sync: str) -> dict[str, float]:
    """`store_costs` in a child process on CORE, as `da serve` runs in queue_bench."""
    command = [sys.executable, __file__, "--store-only", "--count", str(count), "--folder", str(folder),
               "--sync", sync]
    if shutil.which("taskset"):
        command = ["taskset", "-c", str(CORE), *command]
    answer = subprocess.run(command, check=True, capture_output=True, text=True)
    return dict(json.loads(answer.stdout))


def report(echo: float, store: dict[str, float]) -> list[tuple[str, str, str, str]]:
    """The table's rows: each figure in µs, as a share of an echo, and the best ratio it leaves."""
    best_create = echo / (echo + store["create"])
    # Two requests a task (start, and the report that claims the next): two echoes of HTTP work at least.
    best_task = 2 * echo / (2 * echo + store["task"])
    return [
        ("one echo request (aiohttp's HTTP work and JSON)", f"{echo * 1e6:.0f} µs", "", ""),
        ("the store alone: one create", f"{store['create'] * 1e6:.0f} µs", f"x{store['create'] / echo:.2f} of echo",
         f"create at best x{best_create:.2f} of echo (goal x0.8)"),
        ("the store alone: one task (claim, start, report claiming the next)", f"{store['task'] * 1e6:.0f} µs",
         f"x{store['task'] / echo:.2f} of echo",
         f"lifecycle at best x{best_task:.2f} of echo/2 (goal x1.0)"),
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--count", type=int, default=5000, help="creates and tasks measured (default 5000)")
    parser.add_argument("--sync", choices=["full", "normal"], default="full",
                        help="QUEUE_SYNC of the store: full (the default: an answered write survives a power loss)")
    parser.add_argument("--store-only", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--folder", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.store_only:
        print(json.dumps(asyncio.run(store_costs(args.folder, args.count, args.sync))))
        return 0
    if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) > 1:
        os.sched_setaffinity(0, {1})
    with tempfile.TemporaryDirectory() as folder:
        echo = asyncio.run(echo_cost(Path(folder), args.count))
        store = pinned_store_costs(Path(folder), args.count, args.sync)
    rows = report(echo, store)
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
    return 0


if __name__ == "__main__":
    sys.exit(main())
