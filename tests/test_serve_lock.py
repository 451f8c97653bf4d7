"""One `da serve` per SQLite file: a second one is refused with a line naming the first, and a serve that
cannot take its port changes nothing in the database (no lease renewed)."""

from __future__ import annotations

import asyncio
import os
import socket
import sqlite3
import subprocess
import sys
from pathlib import Path

from da.queue.client import QueueClient
from tests.support import loopback
from tests.support.processes import exit_of, launch_serve, start_serve
from tests.support.server import SECRET
from tests.support.waiting import wait_until


def _busy_port() -> socket.socket:
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    return busy


async def test_a_second_serve_on_the_same_file_is_refused_naming_the_first(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    first, url, first_log = start_serve(tmp_path / "a", SECRET_KEY=SECRET, LOG_LEVEL="WARNING")
    database = tmp_path / "a" / "q.db"
    try:
        async with QueueClient(url, SECRET) as client:
            await client.create_task("lint", {"cwd": "/x"})
        same_port = url.rsplit(":", 1)[1]
        for name, port in (("b", None), ("c", same_port)):
            (tmp_path / name).mkdir()
            extra = {"QUEUE_PORT": port} if port else {}
            second, _, log = launch_serve(tmp_path / name, SECRET_KEY=SECRET, QUEUE_DB_PATH=str(database), **extra)
            code, out = await exit_of(second, log)
            assert code == 1, out
            assert out.strip().splitlines() == [
                f"da: the queue database {database} is in use by another queue process (pid {first.pid} on "
                f"{socket.gethostname()}); stop it first, or point QUEUE_DB_PATH at another file."], out
        # Nor may a restore pull the file from under it (the health check only knows its own port).
        (tmp_path / "backup.db").write_bytes(database.read_bytes())
        restore = await asyncio.to_thread(
            subprocess.run, [sys.executable, "-m", "da.cli", "restore", str(tmp_path / "backup.db")],
            env={"PATH": os.environ["PATH"], "QUEUE_DB_PATH": str(database), "QUEUE_PORT": "9"},
            cwd=tmp_path / "b", capture_output=True, text=True, timeout=60)
        assert restore.returncode == 1 and f"in use by another queue process (pid {first.pid} on" in restore.stderr
        # The first one was not disturbed.
        async with QueueClient(url, SECRET) as client:
            tasks, _ = await client.list_tasks()
            assert len(tasks) == 1
    finally:
        first.terminate()
        first.wait(10)
    assert "Traceback" not in first_log.read_text()


async def test_a_serve_that_cannot_take_its_port_renews_no_lease(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    database = tmp_path / "a" / "q.db"
    first, url, _ = start_serve(tmp_path / "a", SECRET_KEY=SECRET, LOG_LEVEL="WARNING")
    try:
        async with QueueClient(url, SECRET) as client:
            task = await client.create_task("run_script", {"script": "true"})
            held = await client.claim("box", ["run_script"], lease=1)
            assert held is not None
            await client.start(task.id, held.lease)
    finally:
        first.terminate()
        first.wait(10)

    def lease() -> float:
        with sqlite3.connect(database) as db:
            return float(db.execute("SELECT lease_expires_at FROM tasks").fetchone()[0])

    before = lease()
    (tmp_path / "b").mkdir()
    with _busy_port() as busy:
        port = busy.getsockname()[1]
        second, _, log = launch_serve(tmp_path / "b", SECRET_KEY=SECRET, QUEUE_DB_PATH=str(database),
                                      QUEUE_PORT=str(port))
        code, out = await exit_of(second, log)
    assert code == 1 and out.strip().splitlines()[-1].startswith(f"da: cannot listen on 127.0.0.1:{port}: "), out
    assert lease() == before
    # The failed start left no lock behind, and a serve that does start renews the lease.
    (tmp_path / "c").mkdir()
    third, url, _ = start_serve(tmp_path / "c", SECRET_KEY=SECRET, QUEUE_DB_PATH=str(database))
    try:
        async with loopback.client() as probe:
            assert (await probe.get(f"{url}/health")).status_code == 200
        await wait_until(lambda: asyncio.to_thread(lambda: lease() > before + 30))
    finally:
        third.terminate()
        third.wait(10)
