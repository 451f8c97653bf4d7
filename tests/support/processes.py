"""Small helpers shared by test modules (kept out of conftest so they can be imported)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from da.queue import app as queue_app
from da.queue.client import ClaimedTask, QueueClient
from da.queue.settings import QueueSettings
from tests.support import loopback
from tests.support.ports import free_port


async def run_da(*args: str, cwd: Path, **env: str) -> tuple[int, str]:
    """`da ARGS` as a subprocess with only PATH and `env`: its exit status and its stdout and stderr together."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "da.cli", *args, cwd=cwd, env={"PATH": os.environ["PATH"], **env},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out, _ = await asyncio.wait_for(process.communicate(), 60)
    return process.returncode or 0, out.decode()


async def claim_one(client: QueueClient, **worker: Any) -> ClaimedTask | None:
    """One immediate claim as the given worker."""
    return await client.claim(worker.pop("machine"), worker.pop("capabilities"), **worker)


def start_serve(folder: Path, **env: str) -> tuple[subprocess.Popen[bytes], str, Path]:
    """A real `da serve` subprocess on a free loopback port, ready when this returns."""
    process, url, log = launch_serve(folder, **env)
    wait_serving(url, log)
    return process, url, log


def launch_serve(folder: Path, **env: str) -> tuple[subprocess.Popen[bytes], str, Path]:
    """Start `da serve` without waiting for it (to start several at the same moment)."""
    port = free_port()
    environment = {"PATH": os.environ["PATH"], "QUEUE_PORT": str(port), "QUEUE_DB_PATH": str(folder / "q.db"),
                   "DA_CONFIG_DIR": str(folder), **env}
    log = folder / "serve.log"
    with log.open("wb") as out:
        process = subprocess.Popen([sys.executable, "-m", "da.cli", "serve"], env=environment, cwd=folder,
                                   stdout=out, stderr=subprocess.STDOUT)
    return process, f"http://127.0.0.1:{port}", log


def wait_serving(url: str, log: Path, timeout: float = 20) -> None:
    """Until `da serve` at `url` answers /health; its log in the failure otherwise."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            loopback.get(f"{url}/health")
            return
        except httpx.TransportError:
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)



def served_routes() -> set[tuple[str, str]]:
    """What the queue app really serves, by method and path (without the HEAD aiohttp adds to each GET)."""
    app = queue_app.make_app(QueueSettings(secret="s"))
    return {(route.method, route.resource.canonical) for route in app.router.routes()
            if route.method != "HEAD" and route.resource is not None}


async def exit_of(process: subprocess.Popen[bytes], log: Path, timeout: float = 30) -> tuple[int, str]:
    """The exit status and output of a `da serve` that should stop by itself."""
    try:
        code = await asyncio.to_thread(process.wait, timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        raise AssertionError(f"da serve kept running; its log:\n{log.read_text()}") from None
    return code, log.read_text()


async def up_start_line(folder: Path, env: dict[str, str]) -> str:
    """The line `da up --no-worker` logs once it serves (it is stopped right after)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "da.cli", "up", "--no-worker", f"--port={free_port()}", cwd=folder, env=env,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
    assert process.stderr is not None
    try:
        line = ""
        while "queue on" not in line:
            line = (await asyncio.wait_for(process.stderr.readline(), 30)).decode()
            assert line, "da up exited before serving"
    finally:
        process.terminate()
        await process.wait()
    return line
