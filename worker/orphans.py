"""The process groups a worker's tasks run in, recorded on disk, so that a worker starting up
stops any its previous life left running before it claims anything.

Each task process leads its own session (so a timeout or cancel kills its whole tree), which
also means it outlives a worker that is SIGKILLed or crashes. Left running, it would overlap the
same task run again (a retry-safe task is handed out again once its lease runs out) in the same
checkout. One file per group under `<DA_LOG_DIR>/processes/<machine>/` holds the group's id, its
leader's start time and the worker's own pid and start time: a group is stopped only when the
worker that started it is gone, and never when its id now belongs to an unrelated process.

A group's id is known only once it has started, so a note is written before the start too: the
processes carry its marker in their environment (`DA_PROCESS`), and a worker killed between the
start and the record still has its processes found by that marker.
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
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

# After SIGTERM a leftover group gets this long to exit before SIGKILL (as a task's own group does).
KILL_GRACE = 2.0
# How often a stopping group is looked at.
POLL = 0.05
FOLDER = "processes"
# A machine name becomes one folder name, whatever it holds.
UNSAFE = re.compile(r"[^A-Za-z0-9._-]")
# The environment variable that marks a task's processes with the note written before they started.
MARKER = "DA_PROCESS"
STARTING = ".starting"


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


def marked_processes(marker: str) -> list[int]:
    """The processes whose environment carries `marker` (every process of the tree a task started)."""
    needle = f"{MARKER}={marker}"
    if sys.platform.startswith("linux"):
        found = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    environ = (entry / "environ").read_bytes()
                except OSError:
                    continue
                if needle.encode() in environ.split(b"\0"):
                    found.append(int(entry.name))
        return found
    try:
        out = subprocess.run(["ps", "-E", "-ww", "-ax", "-o", "pid=,command="], capture_output=True, text=True,
                             timeout=10)
    except (OSError, subprocess.SubprocessError):
        return []
    return [int(line.split(maxsplit=1)[0]) for line in out.stdout.splitlines()
            if f" {needle}" in line and line.split(maxsplit=1)[0].isdigit()]


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

    async def spawn(self, task_id: str, env: Mapping[str, str],
                    start: Callable[[dict[str, str]], Awaitable[asyncio.subprocess.Process]]
                    ) -> asyncio.subprocess.Process:
        """Start a task's process group with `start(env)`, noted before it starts (its processes carry the
        note's marker) and recorded once its leader's pid is known."""
        marker = uuid.uuid4().hex
        note = self.folder / f"{marker}{STARTING}"
        self._write(note.name, {"marker": marker, "task": task_id}, task_id)
        try:
            started = await start({**env, MARKER: marker})
        except OSError:
            note.unlink(missing_ok=True)  # nothing started
            raise
        self.record(started.pid, task_id)
        with contextlib.suppress(OSError):
            note.unlink()
        return started

    def record(self, pid: int, task_id: str) -> None:
        """Note a group just started (its leader is `pid`)."""
        self._write(f"{pid}.json", {"pgid": pid, "started": start_time(pid), "task": task_id}, task_id)

    def _write(self, name: str, entry: dict[str, object], task_id: str) -> None:
        """One note with this worker's own pid and start time, written whole or not at all."""
        entry = {**entry, "worker": os.getpid(), "worker_started": own_start_time()}
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            partial = self.folder / f".{name}.tmp"
            partial.write_text(json.dumps(entry))
            os.replace(partial, self.folder / name)
        except OSError as exc:
            logger.warning("could not record a process group of task %s in %s (%s): if this worker is killed, "
                           "its next start cannot stop it", task_id[:8], self.folder, exc)

    def forget(self, pid: int) -> None:
        """The group has been killed: nothing to stop for it any more."""
        with contextlib.suppress(OSError):
            (self.folder / f"{pid}.json").unlink()

    def leftovers(self) -> list[Leftover]:
        """Groups still running whose worker is gone; records of groups that ended are removed."""
        found = []
        for path, entry in self._orphaned_notes(f"*{STARTING}", "marker"):
            # Written before a start whose worker died before recording the pid: found by the marker.
            groups = set()
            for pid in marked_processes(str(entry["marker"])):
                with contextlib.suppress(OSError):
                    groups.add(os.getpgid(pid))
            if not groups:
                path.unlink(missing_ok=True)
            found += [Leftover(pgid, str(entry.get("task", "?")), path) for pgid in sorted(groups)]
        for path, entry in self._orphaned_notes("*.json", "pgid", int):
            pgid = int(entry["pgid"])
            leader = start_time(pgid)
            if (leader is not None and leader != entry.get("started")) or not group_alive(pgid):
                # Gone, or its id now names an unrelated process: nothing of ours is left.
                self.forget(pgid)
                continue
            found.append(Leftover(pgid, str(entry.get("task", "?")), path))
        return found

    def _orphaned_notes(self, pattern: str, key: str, kind: type = str) -> list[tuple[Path, dict[str, Any]]]:
        """The readable notes matching `pattern` (with `key` of `kind`) whose worker is gone (a worker still
        running under this machine name keeps its own)."""
        notes = []
        for path in sorted(self.folder.glob(pattern)) if self.folder.is_dir() else []:
            try:
                entry = json.loads(path.read_text())
                owner = int(entry["worker"])
                kind(entry[key])
            except (OSError, ValueError, KeyError, TypeError):
                logger.warning("ignoring unreadable process record %s", path)
                continue
            if not (entry.get("worker_started") and start_time(owner) == entry["worker_started"]):
                notes.append((path, entry))
        return notes

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
            with contextlib.suppress(OSError):
                left.path.unlink(missing_ok=True)
        return found
