"""One queue process per SQLite file: an exclusive lock on a file beside the database.

SQLite lets any number of processes open one file, so a second `da serve` on it would start, serve
and reap the first one's tasks as its own. Before anything touches the database, `da serve` and
`da up` take `flock` on `<db>.lock` and write their pid and host into it; a second process is
refused with a line naming the first. The kernel drops the lock when its holder exits, however it
exits, so a crash never leaves a stale lock to clean up. (PostgreSQL replicas share their database
by design and take no such lock.)
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from da.queue.errors import StoreError

if TYPE_CHECKING:
    from da.queue.settings import QueueSettings


class DatabaseInUse(StoreError):
    """Another queue process holds the database."""


class LockFile:
    """The lock that makes one process the only user of a SQLite queue database."""

    def __init__(self, database: Path) -> None:
        self.database = database
        self.path = database.with_name(f"{database.name}.lock")
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock or raise DatabaseInUse naming its holder; never waits."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise StoreError(f"cannot lock the queue database: {self.path}: {exc.strerror or exc}.") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode(), 0)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "pid not recorded yet"
            os.close(fd)
            raise DatabaseInUse(f"the queue database {self.database} is in use by another queue process "
                                f"({holder}); stop it first, or point QUEUE_DB_PATH at another file.") from None
        except OSError as exc:
            os.close(fd)
            raise StoreError(f"cannot lock the queue database: {self.path}: {exc.strerror or exc}.") from exc
        self._fd = fd

    def release(self) -> None:
        # The file stays: removing it could let a third process lock a new file while a second holds the old one.
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)


@contextlib.contextmanager
def held(settings: QueueSettings) -> Iterator[None]:
    """Hold the lock of the service's SQLite database for the block (on PostgreSQL, nothing)."""
    if settings.db_url:
        yield
        return
    lock = LockFile(settings.db_path)
    lock.acquire()
    try:
        yield
    finally:
        lock.release()
