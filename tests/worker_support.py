"""Running real `da worker` processes against the test's queue service, with fake CLIs on PATH."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from conftest import SECRET, wait_until
from da.queue.client import QueueClient
from da.queue.models import Task

FAKES = Path(__file__).parent / "fakes"
FAKE_TOOLS = ("claude", "gemini", "codex", "npm", "gradle", "ruff", "xcodebuild", "flutter", "eslint", "swiftlint",
              "ktlint")
TERMINAL = ("done", "failed", "needs_human", "cancelled")


def fake_bin(folder: Path) -> Path:
    """A folder of fake CLIs, each a link to fake_cli.py under the tool's name."""
    folder.mkdir(parents=True, exist_ok=True)
    for tool in FAKE_TOOLS:
        link = folder / tool
        if not link.exists():
            link.symlink_to(FAKES / "fake_cli.py")
    return folder


class WorkerProcess:
    """A `da worker` subprocess; its log is kept for assertions."""

    def __init__(self, url: str, tmp: Path, **env: str) -> None:
        self.log_file = tmp / f"worker-{os.getpid()}-{id(self)}.log"
        bin_dir = fake_bin(tmp / "bin")
        self.env = {
            "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
            "HOME": os.environ.get("HOME", str(tmp)),
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
    async def reached() -> Task | None:
        task = await client.get_task(task_id)
        return task if task.status in statuses else None

    return await wait_until(reached, timeout=timeout)


async def run_task(client: QueueClient, task_type: str, payload: dict[str, Any], **fields: Any) -> Task:
    task = await client.create_task(task_type, payload, **fields)
    return await wait_for_status(client, task.id)
