"""`da up` keeps the admin secret away from the tasks its local worker runs: a generated SECRET_KEY goes to the
user's config folder, not the `.env` of the folder tasks run in, and the worker holds a worker token made for
each run (the previous run's revoked), never the admin secret."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx

from da.queue.client import QueueClient
from tests.support import loopback
from tests.support.ports import free_port
from tests.support.waiting import wait_until
from tests.support.workers import run_task


def start_up(folder: Path, home: Path, port: int, log: Path) -> subprocess.Popen[bytes]:
    """`da up` in `folder` with nothing configured but its machine's name, as a newcomer runs it."""
    env = {"PATH": os.environ["PATH"], "HOME": str(home), "MACHINE_NAME": "box", "LOG_LEVEL": "INFO",
           "DA_CONFIG_DIR": str(folder / "config"), "DA_WORKSPACES": str(home / "workspaces")}
    with log.open("ab") as out:
        return subprocess.Popen([sys.executable, "-m", "da.cli", "up", f"--port={port}"], cwd=folder, env=env,
                                stdout=out, stderr=subprocess.STDOUT)


async def serving(url: str) -> bool:
    try:
        async with loopback.client() as http:
            await http.get(f"{url}/health")
        return True
    except httpx.TransportError:
        return False


def stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    process.wait(30)


async def test_up_keeps_the_admin_secret_out_of_the_task_folder_and_runs_its_worker_on_a_fresh_token(
        tmp_path: Path) -> None:
    folder, home = tmp_path / "project", tmp_path / "home"
    folder.mkdir()
    home.mkdir()
    port, log = free_port(), tmp_path / "up.log"
    url = f"http://127.0.0.1:{port}"
    process = start_up(folder, home, port, log)
    try:
        await wait_until(lambda: serving(url), timeout=30)
        kept = home / ".config" / "da" / "secret"
        secret = kept.read_text().strip()
        assert len(secret) >= 40 and (kept.stat().st_mode & 0o777) == 0o600
        assert f"generated SECRET_KEY and saved it to {kept}" in log.read_text()
        assert not (folder / ".env").exists()
        async with QueueClient(url, secret) as admin:
            first = [t for t in await admin.tokens() if t.name == "da-up:box"]
            assert [(t.kind, t.machine, t.revoked_at) for t in first] == [("worker", "box", None)]
            task = await run_task(admin, "run_script", {"script": "ls -A; cat .env; env | grep -c -e SECRET_KEY "
                                                                   "-e DA_TOKEN; true"})
        assert task.status == "done", task.result
        assert task.result is not None and task.result["stdout"].splitlines()[-1] == "0"
        assert "No such file" in task.result["stderr"]
        for path in folder.rglob("*"):
            assert not path.is_file() or secret.encode() not in path.read_bytes(), path
    finally:
        stop(process)

    # A second run: the first run's token is refused from now on, and the worker holds the new one.
    process = start_up(folder, home, port, log)
    try:
        await wait_until(lambda: serving(url), timeout=30)
        async with QueueClient(url, secret) as admin:
            tokens = [t for t in await admin.tokens() if t.name == "da-up:box"]
            assert [t.id for t in tokens if t.revoked_at is not None] == [first[0].id]
            (current,) = [t for t in tokens if t.revoked_at is None]
            assert (await run_task(admin, "run_script", {"script": "true"})).status == "done"
            # Without its token the worker can take nothing: it never held the admin secret.
            await admin.revoke_token(current.id)
            waiting = await admin.create_task("run_script", {"script": "true"})
            await wait_until(lambda: "refused this worker's credential" in log.read_text(), timeout=20)
            assert (await admin.get_task(waiting.id)).status == "pending"
        assert "the worker token `da up` made for this run (da-up:box)" in log.read_text()
    finally:
        stop(process)
