"""The SQLite database file itself, whatever names reach it: one queue process per file, and `da migrate`
refuses an empty or damaged file in one line (issue 24, files and disks)."""

from __future__ import annotations

import os
import shutil
import socket
from pathlib import Path

import pytest

from da.queue.client import QueueClient
from tests.support import loopback
from tests.support.processes import exit_of, launch_serve, run_da, start_serve
from tests.support.server import SECRET


@pytest.mark.parametrize("link", ["symlink", "hard link"])
async def test_a_second_serve_through_another_name_of_the_file_is_refused(tmp_path: Path, link: str) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first, url, first_log = start_serve(tmp_path / "a", SECRET_KEY=SECRET, LOG_LEVEL="WARNING")
    database = tmp_path / "a" / "q.db"
    other_name = tmp_path / "b" / "other.db"
    try:
        async with QueueClient(url, SECRET) as client:
            await client.create_task("lint", {"cwd": "/x"})
        if link == "symlink":
            other_name.symlink_to(database)
        else:
            os.link(database, other_name)
        second, _, log = launch_serve(tmp_path / "b", SECRET_KEY=SECRET, QUEUE_DB_PATH=str(other_name))
        code, out = await exit_of(second, log)
        assert code == 1, out
        # A hard link has no real path of its own to find the holder's note by; the refusal stands.
        holder = (f"pid {first.pid} on {socket.gethostname()}" if link == "symlink"
                  else "its pid is recorded beside another name of this file")
        assert out.strip().splitlines() == [
            f"da: the queue database {other_name} is in use by another queue process ({holder}); stop it first, "
            "or point QUEUE_DB_PATH at another file."], out
        assert not (tmp_path / "b" / "other.db-wal").exists()
        # Nor may da migrate copy it from under the live queue.
        code, out = await run_da("migrate", "--to", "postgresql://da@127.0.0.1:9/da", cwd=tmp_path / "b",
                                 QUEUE_DB_PATH=str(other_name), QUEUE_PORT="9")
        assert code == 1 and out.count("\n") == 1 and f"in use by another queue process ({holder})" in out, out
        async with QueueClient(url, SECRET) as client:
            tasks, _ = await client.list_tasks()
            assert len(tasks) == 1
    finally:
        first.terminate()
        first.wait(10)
    assert "Traceback" not in first_log.read_text()


@pytest.mark.parametrize(("content", "says"), [
    (b"", "is empty (0 bytes), not a queue database"),
    (b"SQLite format 3\x00" + b"\xff" * 200, "is not a queue database"),
    (b"this was never a database" * 100, "is not a queue database"),
])
async def test_migrate_from_an_empty_or_damaged_file_is_one_line_and_fails(tmp_path: Path, content: bytes,
                                                                         says: str) -> None:
    database = tmp_path / "q.db"
    database.write_bytes(content)
    code, out = await run_da("migrate", "--to", "postgresql://da@127.0.0.1:9/da", cwd=tmp_path,
                             QUEUE_DB_PATH=str(database), QUEUE_PORT="9")
    assert code == 1, out
    assert out.count("\n") == 1 and out.startswith(f"da: {database} {says}") and "Traceback" not in out, out
    assert "QUEUE_DB_PATH" in out
    assert database.read_bytes() == content


async def test_migrate_from_a_missing_file_leaves_no_file_behind(tmp_path: Path) -> None:
    database = tmp_path / "q.db"
    code, out = await run_da("migrate", "--to", "postgresql://da@127.0.0.1:9/da", cwd=tmp_path,
                             QUEUE_DB_PATH=str(database), QUEUE_PORT="9")
    assert code == 1 and out == f"da: no queue database at {database}; set QUEUE_DB_PATH to the file `da serve` used.\n"
    assert not database.exists()


async def test_serve_fsyncs_every_commit_unless_told_otherwise(tmp_path: Path) -> None:
    process, _, log = start_serve(tmp_path, SECRET_KEY=SECRET, LOG_LEVEL="INFO")
    try:
        assert f"database {tmp_path / 'q.db'}, QUEUE_SYNC=full" in log.read_text()
    finally:
        process.terminate()
        process.wait(10)


async def test_health_answers_503_every_time_while_the_disk_is_below_its_reserve(tmp_path: Path) -> None:
    free_mb = shutil.disk_usage(tmp_path).free // 2**20
    process, url, _ = start_serve(tmp_path, SECRET_KEY=SECRET, LOG_LEVEL="WARNING",
                                  QUEUE_DISK_RESERVE_MB=str(free_mb + 10_000))
    try:
        async with loopback.client() as http:
            answers = [await http.get(f"{url}/health") for _ in range(5)]
        assert [a.status_code for a in answers] == [503] * 5
        detail = answers[-1].json()["detail"]
        assert f"free on the disk of {tmp_path / 'q.db'} (below the reserve of {free_mb + 10_000} MB" in detail
        assert "QUEUE_DISK_RESERVE_MB" in detail
    finally:
        process.terminate()
        process.wait(10)
