"""Running real `da worker` processes against the test's queue service, with fake CLIs on PATH."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from da.queue.client import QueueClient
from da.queue.models import Task
from tests.support.server import SECRET
from tests.support.waiting import wait_until

FAKES = Path(__file__).resolve().parent.parent / "fakes"
FAKE_TOOLS = ("claude", "gemini", "codex", "npm", "gradle", "ruff", "xcodebuild", "flutter", "eslint", "swiftlint",
              "ktlint")
TERMINAL = ("done", "failed", "needs_human", "cancelled")


def fake_tool(path: Path, fake: Path) -> None:
    """`path` runs the `fake` script under its own name (as a link would) with this interpreter: the fakes'
    `#!/usr/bin/env python3` may find a version manager's shim, which costs more than the fake itself."""
    path.write_text(f"#!{sys.executable}\nFAKE = {str(fake)!r}\nwith open(FAKE) as source:\n"
                    "    exec(compile(source.read(), FAKE, 'exec'), {'__name__': '__main__', '__file__': FAKE})\n")
    path.chmod(0o755)


def fake_bin(folder: Path) -> Path:
    """A folder of fake CLIs, each running fake_cli.py under the tool's name."""
    folder.mkdir(parents=True, exist_ok=True)
    for tool in FAKE_TOOLS:
        if not (folder / tool).exists():
            fake_tool(folder / tool, FAKES / "fake_cli.py")
    return folder


class WorkerProcess:
    """A `da worker` subprocess; its log is kept for assertions."""

    def __init__(self, url: str, tmp: Path, **env: str) -> None:
        self.log_file = tmp / f"worker-{os.getpid()}-{id(self)}.log"
        bin_dir = fake_bin(tmp / "bin")
        self.env = {
            "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
            # Not the developer's home: a `da up` run there leaves ~/.config/da/secret, which a worker reads
            # when SECRET_KEY and DA_TOKEN are unset.
            "HOME": str(tmp),
            "SECRET_KEY": SECRET,
            "QUEUE_URL": url,
            "MACHINE_NAME": "test-box",
            "WORKER_CAPABILITIES": "agent_run,run_script,git_pull,npm_build,test_run,lint,ios_build,android_build",
            "WORKER_AGENTS": "claude,gemini,codex,groq",
            "WORKER_POLL_WAIT": "2",
            "DA_LOG_DIR": str(tmp / "logs"),
            "DA_CONFIG_DIR": str(tmp / "config"),
            "LOG_LEVEL": "INFO",
            **env,
        }
        self.cwd = tmp
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> WorkerProcess:
        with self.log_file.open("wb") as log:
            self.process = subprocess.Popen([sys.executable, "-m", "da.cli", "worker"], env=self.env, cwd=self.cwd,
                                            stdout=log, stderr=subprocess.STDOUT)
        return self

    @property
    def log(self) -> str:
        return self.log_file.read_text(errors="replace")

    def signal(self, signum: int) -> None:
        assert self.process is not None
        self.process.send_signal(signum)

    async def wait_exit(self, timeout: float = 20) -> int:
        assert self.process is not None
        deadline = asyncio.get_running_loop().time() + timeout
        while self.process.poll() is None:
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"worker did not exit within {timeout}s; log:\n{self.log}")
            await asyncio.sleep(0.05)
        return self.process.returncode

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()


async def wait_for_status(client: QueueClient, task_id: str, statuses: tuple[str, ...] = TERMINAL,
                          timeout: float = 20) -> Task:
    """The task once its status is one of `statuses`, followed on the queue's long-poll (asking every 20 ms
    cost some 4,900 requests a run)."""
    progress = await client.wait_for_status(task_id, statuses, timeout)
    if progress.status not in statuses:
        raise AssertionError(f"task {task_id[:8]} is still {progress.status} after {timeout}s; "
                             f"awaited {' or '.join(statuses)}")
    return await client.get_task(task_id)


async def run_task(client: QueueClient, task_type: str, payload: dict[str, Any], **fields: Any) -> Task:
    task = await client.create_task(task_type, payload, **fields)
    return await wait_for_status(client, task.id)


# A cancelled task's process is gone within this many seconds (its worker heartbeats every 20 s).
CANCEL_SEEN = 5.0


def alive(pid: int) -> bool:
    """Whether a process runs (a zombie waiting to be reaped counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, IndexError):
        return False


def kill_leftover(tmp_path: Path) -> None:
    """The task's process, if a failed test left it running (it leads its own session, so killing the
    worker does not end it)."""
    pid_file = tmp_path / "task.pid"
    text = pid_file.read_text().strip() if pid_file.exists() else ""
    if text and alive(int(text)):
        os.kill(int(text), signal.SIGKILL)


async def start_long_task(client: QueueClient, tmp_path: Path) -> tuple[str, int]:
    """A running task whose process we can watch; returns its id and the process's pid."""
    pid_file = tmp_path / "task.pid"
    task = await client.create_task("run_script", {"script": f"echo $$ > {pid_file}; exec sleep 300"})
    await wait_for_status(client, task.id, ("in_progress",))

    async def pid() -> int | None:
        text = pid_file.read_text().strip() if pid_file.exists() else ""
        return int(text) if text else None

    return task.id, await wait_until(pid)


async def cancel_and_watch(cancel_through: QueueClient, task_id: str, pid: int) -> None:
    """Cancel the task, then wait (at most CANCEL_SEEN seconds) until its process is gone."""
    cancelled = await cancel_through.cancel(task_id, by="tester")
    assert cancelled.status == "cancelled"

    async def gone() -> bool:
        return not alive(pid)

    await wait_until(gone, timeout=CANCEL_SEEN)
