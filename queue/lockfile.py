"""One queue process per SQLite file: an exclusive lock on the database file itself.

SQLite lets any number of processes open one file, so a second `da serve` on it would start, serve
and reap the first one's tasks as its own. Before anything touches the database, `da serve`, `da up`,
`da restore` and `da migrate` take `flock` on the database file (the file, not its name: a symlink or
a hard link reaches the same lock) and write their pid and host into `<real path>.lock`; a second
process is refused with a line naming the first. SQLite's own locks are POSIX record locks, which
`flock` neither takes nor disturbs. The kernel drops the lock when its holder exits, however it
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

    def __init__(self, database: Path, create: bool = True) -> None:
        self.database = database
        real = Path(os.path.realpath(database))
        self.path = real.with_name(f"{real.name}.lock")
        self.create = create
        self._fd: int | None = None
        self._created = False

    def acquire(self) -> None:
        """Take the lock or raise DatabaseInUse naming its holder; never waits."""
        for _ in range(5):
            if self._lock_once():
                with contextlib.suppress(OSError):
                    self.path.write_text(f"pid {os.getpid()} on {socket.gethostname()}\n")
                return
        raise StoreError(f"cannot lock the queue database {self.database}: it keeps being replaced; "
                         "stop whatever is replacing it.")

    def _lock_once(self) -> bool:
        """Lock the file the name reaches now; False when the name no longer reaches the locked file."""
        existed = self.database.exists()
        try:
            if self.create:
                self.database.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.database, os.O_RDWR | (os.O_CREAT if self.create else 0), 0o644)
        except FileNotFoundError:
            raise StoreError(f"no queue database at {self.database}; set QUEUE_DB_PATH to the file "
                             "`da serve` used.") from None
        except OSError as exc:
            raise StoreError(f"cannot lock the queue database: {self.database}: {exc.strerror or exc}.") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            locked = os.fstat(fd)
            now = os.stat(self.database)
        except BlockingIOError:
            os.close(fd)
            raise DatabaseInUse(f"the queue database {self.database} is in use by another queue process "
                                f"({self._holder()}); stop it first, or point QUEUE_DB_PATH at another file.") from None
        except FileNotFoundError:
            os.close(fd)
            return False
        except OSError as exc:
            os.close(fd)
            raise StoreError(f"cannot lock the queue database: {self.database}: {exc.strerror or exc}.") from exc
        if (locked.st_dev, locked.st_ino) != (now.st_dev, now.st_ino):
            os.close(fd)
            return False
        self._fd = fd
        self._created = not existed
        return True

    def _holder(self) -> str:
        try:
            return self.path.read_text(errors="replace")[:200].strip() or "pid not recorded yet"
        except OSError:
            return "its pid is recorded beside another name of this file"

    def release(self) -> None:
        """Unlock; an empty file this lock created goes (a process that locked it meanwhile sees it went)."""
        if self._fd is not None:
            fd, self._fd = self._fd, None
            if self._created and os.fstat(fd).st_size == 0:
                with contextlib.suppress(OSError):
                    self.database.unlink()
            os.close(fd)


@contextlib.contextmanager
def held(settings: QueueSettings, create: bool = True) -> Iterator[None]:
    """Hold the lock of the service's SQLite database for the block (on PostgreSQL, nothing).

    With create=False a missing database is a StoreError instead of a new empty file.
    """
    if settings.db_url:
        yield
        return
    lock = LockFile(settings.db_path, create)
    lock.acquire()
    try:
        yield
    finally:
        lock.release()
