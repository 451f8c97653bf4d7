"""The process groups a worker's tasks run in, recorded on disk, so that a worker starting up
stops any its previous life left running before it claims anything.

Each task process leads its own session (so a timeout or cancel kills its whole tree), which
also means it outlives a worker that is SIGKILLed or crashes. Left running, it would overlap the
same task run again (a retry-safe task is handed out again once its lease runs out) in the same
checkout. One file per group under `<DA_LOG_DIR>/processes/<machine>/` holds the group's id, its
leader's start time and the worker's own pid and start time: a group is stopped only when the
worker that started it is gone, and never when its id now belongs to an unrelated process.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import os
import re
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

# After SIGTERM a leftover group gets this long to exit before SIGKILL (as a task's own group does).
KILL_GRACE = 2.0
# How often a stopping group is looked at.
POLL = 0.05
FOLDER = "processes"
# A machine name becomes one folder name, whatever it holds.
UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


def start_time(pid: int) -> str | None:
    """When a process started, as an opaque token that differs for a reused pid; None if it is gone."""
    if sys.platform.startswith("linux"):
        try:
            # Field 22, clock ticks since boot; the command name before it may hold spaces and parentheses.
            return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
        except (OSError, IndexError):
            return None
    try:
        out = subprocess.run(["ps", "-o", "lstart=", "-p", str(pid)], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


@functools.cache
def own_start_time() -> str | None:
    """This worker's own start time, asked once (elsewhere than Linux it costs a `ps`)."""
    return start_time(os.getpid())


def group_alive(pgid: int) -> bool:
    """Whether any process is left in the group."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass(frozen=True)
class Leftover:
    """A process group a previous life of this worker started and did not see end."""

    pgid: int
    task_id: str
    path: Path


class ProcessBook:
    """The record of one machine's running task process groups."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    @classmethod
    def of(cls, log_dir: Path, machine: str) -> ProcessBook:
        """The book of the worker named `machine` (its task logs' folder holds it)."""
        return cls(log_dir / FOLDER / (UNSAFE.sub("_", machine) or "_"))

    def record(self, pid: int, task_id: str) -> None:
        """Note a group just started (its leader is `pid`); written whole or not at all."""
        entry = {"pgid": pid, "started": start_time(pid), "task": task_id,
                 "worker": os.getpid(), "worker_started": own_start_time()}
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            partial = self.folder / f".{pid}.tmp"
            partial.write_text(json.dumps(entry))
            os.replace(partial, self.folder / f"{pid}.json")
        except OSError as exc:
            logger.warning("could not record process group %d of task %s in %s (%s): if this worker is killed, "
                           "its next start cannot stop it", pid, task_id[:8], self.folder, exc)

    def forget(self, pid: int) -> None:
        """The group has been killed: nothing to stop for it any more."""
        with contextlib.suppress(OSError):
            (self.folder / f"{pid}.json").unlink()

    def leftovers(self) -> list[Leftover]:
        """Groups still running whose worker is gone; records of groups that ended are removed."""
        found = []
        for path in sorted(self.folder.glob("*.json")) if self.folder.is_dir() else []:
            try:
                entry = json.loads(path.read_text())
                pgid, owner = int(entry["pgid"]), int(entry["worker"])
            except (OSError, ValueError, KeyError, TypeError):
                logger.warning("ignoring unreadable process record %s", path)
                continue
            if entry.get("worker_started") and start_time(owner) == entry["worker_started"]:
                continue  # its worker still runs (another worker under this machine name): not ours to stop
            leader = start_time(pgid)
            if (leader is not None and leader != entry.get("started")) or not group_alive(pgid):
                # Gone, or its id now names an unrelated process: nothing of ours is left.
                self.forget(pgid)
                continue
            found.append(Leftover(pgid, str(entry.get("task", "?")), path))
        return found

    async def stop_leftovers(self) -> list[Leftover]:
        """SIGTERM every group a previous life of this worker left, SIGKILL what remains after the grace."""
        found = self.leftovers()
        if not found:
            return []
        logger.warning("stopping %d process group(s) left running by this worker's previous run: %s", len(found),
                       ", ".join(f"{left.pgid} (task {left.task_id[:8]})" for left in found))
        for left in found:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(left.pgid, signal.SIGTERM)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + KILL_GRACE
        while any(group_alive(left.pgid) for left in found) and loop.time() < deadline:
            await asyncio.sleep(POLL)
        for left in found:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(left.pgid, signal.SIGKILL)
            self.forget(left.pgid)
        return found
