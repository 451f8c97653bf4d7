"""Where one task's life goes inside `da serve`: cProfile of the server while tasks are created one per
request, and run by workers whose reports claim the next task, grouped into the parts of a request.

    python bench/profile_task.py                      # SQLite
    python bench/profile_task.py --backend postgres   # PostgreSQL (a throwaway cluster)

The server runs on one core, first without the profiler to measure the CPU of its main thread and of its
other threads (with SQLite, the writer thread that runs every statement and commit), then under cProfile,
which watches only the main thread (its figures are inflated by the profiler alike for every part): the
table gives each part's share of the main thread, and of the whole server. It is a map of where to cut,
not a speed figure: `queue_bench.py` measures speed.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import pstats
import sys
import tempfile
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

import queue_bench

from tests.support import postgres

# Parts of a request, recognised by the file (and function) a sample's time is spent in; the first
# match wins, the rest is "other" (asyncio's loop, the app's own handlers, logging).
PARTS = (
    ("HTTP parsing and writing", ("aiohttp/http_", "aiohttp/web_protocol", "aiohttp/streams", "aiohttp/web_response",
                                  "aiohttp/web_request", "aiohttp/base_protocol", "aiohttp/helpers",
                                  "aiohttp/web_urldispatcher", "multidict", "yarl", "aiohttp/web_app",
                                  "selector_events", "aiohttp/web_middlewares")),
    ("auth (credential, token lookup)", ("queue/auth.py",)),
    ("JSON and models (orjson, parse, to_json, from_row)", ("orjson", "queue/models.py", "json/", "queue/http.py")),
    # SQLite: handing a batch to the writer thread and taking its answers (the thread itself is measured apart);
    # PostgreSQL: asyncpg's side of the statements.
    ("statements (SQLite: handing them to the writer; asyncpg)", ("_queue.SimpleQueue", "groupcommit", "sqlite3",
                                                                "aiosqlite", "asyncpg",
                                                     "queue/pgdatabase.py", "queue/sqlite.py", "queue/postgres.py",
                                                     "threading", "concurrent/futures")),
    ("store verbs", ("queue/store.py",)),
    ("wake-up (signals, waiting)", ("queue/signals.py", "queue/waiting.py")),
    ("routes", ("queue/routes.py",)),
    ("event loop", ("asyncio/",)),
)


# Not work: the app's cleanup context spans the whole run, and the selector's poll is idle time.
IDLE = ("web_app.py:_on_cleanup", "select.epoll", "run_forever", "_run_once",
        # Starting up (imports, TLS defaults, migrations) is not a task's life either.
        "importlib", "marshal", "_ssl.", "builtins.compile", "builtins.exec", "__build_class__", "_imp.",
        "sre_", "re/_")


def part_of(filename: str, function: str) -> str | None:
    where = f"{filename}:{function}"
    if any(mark in where for mark in IDLE):
        return None
    for part, marks in PARTS:
        if any(mark in where for mark in marks):
            return part
    return "other"


def summarise(profile: Path) -> list[tuple[str, float]]:
    """Each part's share of the server's own (tottime) seconds."""
    stats = pstats.Stats(str(profile))
    totals: dict[str, float] = {}
    for (filename, _line, function), (_cc, _nc, tottime, _ct, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        part = part_of(filename, function)
        if part is None:
            continue
        totals[part] = totals.get(part, 0.0) + tottime
    whole = sum(totals.values()) or 1.0
    return sorted(((part, seconds / whole) for part, seconds in totals.items()), key=lambda item: -item[1])


async def drive(server: queue_bench.Server, count: int) -> dict[str, float]:
    """Run dispatch rounds and a lifecycle; the CPU seconds each thread of the server spent meanwhile."""
    async with aiohttp.ClientSession(headers=queue_bench.HEADERS) as session:
        await server.wait_ready(session)
        before = thread_cpu(server.process.pid)
        await queue_bench.dispatch_latency(session, server.url, server.url, count // 10)
        await queue_bench.lifecycle(session, [server.url], count)
        after = thread_cpu(server.process.pid)
    return {name: seconds - before.get(name, 0.0) for name, seconds in after.items()}


MAIN, OTHERS = "main thread", "other threads (SQLite: the writer and the reader)"


def thread_cpu(pid: int) -> dict[str, float]:
    """CPU seconds (user and system) of a process's main thread and of its other threads (Linux /proc)."""
    seconds = {MAIN: 0.0, OTHERS: 0.0}
    for task in Path(f"/proc/{pid}/task").iterdir():
        seconds[MAIN if task.name == str(pid) else OTHERS] += queue_bench.cpu_seconds(task / "stat")
    return seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--backend", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--count", type=int, default=3000)
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) > 1:
        os.sched_setaffinity(0, {1})
    cluster = None
    env = {}
    if args.backend == "postgres":
        cluster = postgres.Cluster(durable=True).start()
        env["QUEUE_DB_URL"] = asyncio.run(cluster.create_database(migrated=False))
    with tempfile.TemporaryDirectory() as folder:
        # First without the profiler, for each thread's share of the server's CPU: cProfile watches only the
        # main thread (and slows it), so the SQLite writer thread's statements and commits are measured here.
        plain = queue_bench.Server(Path(folder) / "plain", core=0, **env)
        try:
            threads = asyncio.run(drive(plain, args.count))
        finally:
            plain.stop()
        profile = Path(folder) / "serve.prof"
        server = queue_bench.Server(Path(folder) / "profiled", core=0, profile=profile, **env)
        try:
            asyncio.run(drive(server, args.count))
        finally:
            server.stop()
            if cluster is not None:
                cluster.stop()
        whole = sum(threads.values()) or 1.0
        main = threads[MAIN] / whole
        print(f"server CPU: {whole:.2f} s; " + ", ".join(f"{name} {seconds / whole * 100:.1f}%" for name, seconds
                                                         in sorted(threads.items(), key=lambda item: -item[1])))
        print(f"the main thread's {main * 100:.1f}%, by part (cProfile):")
        for part, share in summarise(profile):
            print(f"{share * 100:5.1f}%  {part}  ({share * main * 100:.1f}% of the server)")
        print("\nlargest in 'other':")
        stats = pstats.Stats(str(profile))
        rest = [(tottime, f"{filename}:{line}({function})") for (filename, line, function), (_cc, _nc, tottime, _ct, _c)
                in stats.stats.items() if part_of(filename, function) == "other"]  # type: ignore[attr-defined]
        for tottime, where in sorted(rest, reverse=True)[:12]:
            print(f"{tottime:8.3f} s  {where}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
