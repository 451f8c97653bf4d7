"""Ctrl-C and closed pipes, with real processes: `da` on a real terminal, SIGINT to a real `da up`."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from da import fleet as fleet_module
from da.queue.client import QueueClient
from tests.support.ports import free_port
from tests.support.processes import wait_serving
from tests.support.server import SECRET, QueueServer
from tests.support.terminal import CTRL_C, END_OF_INPUT, PtyTerminal
from tests.support.workers import kill_leftover, start_long_task

FLEET = fleet_module.parse_fleet({"machines": {
    "thinkpad-x1": {"os": "linux", "capabilities": ["android_build", "agent_run", "lint"], "agents": ["gemini"]},
}}, "test")


def client_env(url: str, home: Path) -> dict[str, str]:
    return {"PATH": os.environ["PATH"], "HOME": str(home), "QUEUE_URL": url, "SECRET_KEY": SECRET, "USER": "tester",
            "NO_COLOR": "1", "TERM": "xterm"}


@pytest.fixture
async def terminals() -> AsyncIterator[list[PtyTerminal]]:
    opened: list[PtyTerminal] = []
    yield opened
    for terminal in opened:
        terminal.close()


async def test_ctrl_c_at_the_prompt_clears_the_line_and_twice_leaves(make_server, tmp_path: Path,
                                                                      terminals: list[PtyTerminal]) -> None:
    server = await make_server(fleet=FLEET)
    repl = PtyTerminal(cwd=tmp_path, env=client_env(server.url, tmp_path))
    terminals.append(repl)
    end = await repl.expect("da › ")
    repl.type("queue --sta")
    end = await repl.expect("queue --sta", after=end)
    repl.type(CTRL_C)
    # The half-typed line is dropped and the new prompt starts a line of its own.
    end = await repl.expect("\r\nda › ", after=end)
    repl.type("status\r")
    end = await repl.expect("thinkpad-x1", after=end)
    end = await repl.expect("da › ", after=end)
    repl.type(CTRL_C)
    end = await repl.expect("(Ctrl-C again or Ctrl-D to leave)\r\nda › ", after=end)
    repl.type(CTRL_C)
    assert await repl.exit_code() == 0
    assert "Traceback" not in repl.output and "KeyboardInterrupt" not in repl.output
    assert "unknown" not in repl.output  # "queue --sta" never ran

    second = PtyTerminal(cwd=tmp_path, env=client_env(server.url, tmp_path))
    terminals.append(second)
    await second.expect("da › ")
    second.type(END_OF_INPUT)
    assert await second.exit_code() == 0


async def test_ctrl_c_at_confirm_stops_with_nothing_changed(make_server, tmp_path: Path,
                                                            terminals: list[PtyTerminal]) -> None:
    server = await make_server(fleet=FLEET)
    one_shot = PtyTerminal("assign", "android release build", "--cwd=/src", cwd=tmp_path,
                        env=client_env(server.url, tmp_path))
    terminals.append(one_shot)
    end = await one_shot.expect("Confirm? [Y/n] ")
    started = time.monotonic()
    one_shot.type(CTRL_C)
    assert await one_shot.exit_code(timeout=10) == 130
    assert time.monotonic() - started < 3
    assert one_shot.output[end:].lstrip("^C").startswith("\r\nnothing changed.")
    assert "Traceback" not in one_shot.output
    async with QueueClient(server.url, SECRET) as client:
        assert (await client.list_tasks())[0] == []

    # In the REPL the same Ctrl-C stops the verb, and the prompt comes back.
    repl = PtyTerminal(cwd=tmp_path, env=client_env(server.url, tmp_path))
    terminals.append(repl)
    end = await repl.expect("da › ")
    repl.type("assign android release build --cwd=/src\r")
    end = await repl.expect("Confirm? [Y/n] ", after=end)
    repl.type(CTRL_C)
    end = await repl.expect("nothing changed.\r\nda › ", after=end)
    repl.type("exit\r")
    assert await repl.exit_code() == 0
    assert "Traceback" not in repl.output


@pytest.mark.parametrize("args", [("queue",), ("--help",), ("status",)])
async def test_a_closed_pipe_ends_quietly(server: QueueServer, tmp_path: Path, args: tuple[str, ...]) -> None:
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader (`head -1`) is gone before da writes its first line
    try:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "da.cli", *args, cwd=tmp_path, env=client_env(server.url, tmp_path),
            stdout=write_end, stderr=asyncio.subprocess.PIPE)
    finally:
        os.close(write_end)
    _, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 141
    assert err.decode() == ""


def start_up(folder: Path, **env: str) -> tuple[subprocess.Popen[bytes], str, Path]:
    """A real `da up` (queue and local worker) on a free port, serving when this returns."""
    port = free_port()
    log = folder / "up.log"
    environment = {"PATH": os.environ["PATH"], "HOME": str(folder), "SECRET_KEY": SECRET, "MACHINE_NAME": "laptop",
                   "QUEUE_DB_PATH": str(folder / "q.db"), "DA_CONFIG_DIR": str(folder), "LOG_LEVEL": "INFO",
                   "DA_LOG_DIR": str(folder / "logs"), **env}
    with log.open("wb") as out:
        process = subprocess.Popen([sys.executable, "-m", "da.cli", "up", f"--port={port}"], env=environment,
                                   cwd=folder, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    wait_serving(url, log)
    return process, url, log


async def exited(process: subprocess.Popen[bytes], timeout: float) -> int | None:
    deadline = time.monotonic() + timeout
    while process.poll() is None and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    return process.poll()


async def test_ctrl_c_on_up_stops_at_once_whoever_is_long_polling(tmp_path: Path) -> None:
    process, url, log = start_up(tmp_path)
    try:
        async with QueueClient(url, SECRET, rounds=1) as remote:
            parked_claim = asyncio.create_task(remote.claim("far-away", ["lint"], wait=30))
            parked_feed = asyncio.create_task(remote.events(0, wait=30))
            await asyncio.sleep(0.5)  # both are parked in the queue (nothing to answer them with)
            assert not parked_claim.done() and not parked_feed.done()
            started = time.monotonic()
            process.send_signal(signal.SIGINT)
            assert await exited(process, 10) == 0, log.read_text()
            assert time.monotonic() - started < 3, log.read_text()
            # Both long-polls were answered, empty, rather than cut off.
            assert await asyncio.wait_for(parked_claim, 5) is None
            assert (await asyncio.wait_for(parked_feed, 5))[0] == []
    finally:
        process.kill()
        process.wait()
    assert "Traceback" not in log.read_text()


async def test_ctrl_c_on_up_says_which_running_tasks_it_waits_for(tmp_path: Path) -> None:
    process, url, log = start_up(tmp_path, SHUTDOWN_GRACE="20")
    try:
        async with QueueClient(url, SECRET) as client:
            task_id, _ = await start_long_task(client, tmp_path)
        process.send_signal(signal.SIGINT)
        deadline = time.monotonic() + 10
        while "SIGINT: waiting" not in log.read_text():
            assert time.monotonic() < deadline, log.read_text()
            await asyncio.sleep(0.05)
        assert f"SIGINT: waiting up to 20s for 1 running task(s): {task_id[:8]}; send SIGINT again to stop them " \
               "now" in log.read_text()
        process.send_signal(signal.SIGINT)
        assert await exited(process, 10) is not None, log.read_text()
    finally:
        process.kill()
        process.wait()
        kill_leftover(tmp_path)
    assert "Traceback" not in log.read_text()
