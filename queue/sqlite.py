"""The embedded backend: one SQLite file in WAL mode, one process.

Writes go through the group-commit engine (one writer connection on its own thread); reads use
an aiosqlite connection, so they see only committed state. With one writer, event ids are handed
out in commit order, so the feed needs no horizon.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiosqlite
import orjson

from da.queue.errors import DatabaseUnavailable, LockRace, StoreError
from da.queue.groupcommit import Chain, GroupCommit, Statement
from da.queue.models import Row
from da.queue.statements import Statements, migrated
from da.queue.store import Store

logger = logging.getLogger(__name__)

STATEMENTS = Statements("da.queue.sql.sqlite")

# UPDATE ... RETURNING needs 3.35; json_each is older.
MIN_SQLITE = (3, 35, 0)
# A writer waits this long for the lock (a backup or a second process) before failing.
BUSY_TIMEOUT_MS = 5000
# Checkpoint the WAL every ~40 MB instead of SQLite's 4 MB: hot pages are copied back once
# per checkpoint, so fewer checkpoints measured 20% less write cost here.
WAL_CHECKPOINT_PAGES = 10000
# Page cache per connection: task ids and event keys are random UUIDs, so a year of history
# spreads writes over many index pages. SQLite's 2 MB default made a claim at 200k finished
# tasks 1.6x slower here; 8 MB keeps it level (32 MB and mmap measured slower on the hot path).
CACHE_KIB = 8192
SYNC_MODES = ("normal", "full")
# After a write failed for want of space /health answers 503 this long, or until a write commits,
# whatever a tiny probe row manages meanwhile (it can fit in space the failed write freed).
FULL_HOLD = 30.0
# Writes re-measure the free disk space at most this often: statvfs is cheap, but its answer barely
# moves within a second, and a write refused a second longer than needed is retried anyway.
DISK_CHECK_INTERVAL = 1.0
# Writes that go ahead below the reserve: the health probe (a tiny row that shows whether the disk
# still takes writes) and the start's fresh leases (a few rows, without which running tasks would be
# reaped the moment space is freed).
BELOW_RESERVE_ALLOWED = frozenset({"probe", "extend_leases"})
# New tasks wake parked claims as soon as their insert is queued rather than once it is committed: the one
# writer runs statements in the order they are queued, so a claim queued after the insert sees its tasks,
# and one that joins the insert's batch commits with it (one commit from creation to dispatch, not two).
# Every answer still waits for the commit that holds its own write.
WAKE_WHEN_QUEUED = frozenset({"insert_task", "insert_tasks"})


class SqliteStore(Store):
    """Tasks and events in one SQLite file, through one long-lived writer and one reader."""

    backend = "sqlite"
    # One `da serve` holds the file (its lock), and every revoke goes through it.
    tokens_kept = True

    def __init__(self, path: Path, *, sync: str = "full", clock: Callable[[], float] = time.time,
                 reserve: int = 0) -> None:
        super().__init__(clock=clock)
        self.path = path
        self.sync = sync
        self.reserve = reserve
        # The error of the last task write, when it failed for want of space; a later one that commits clears it.
        self._full: tuple[str, float] | None = None
        # Why writes are refused for want of disk (below the reserve) as last measured, and when.
        self._disk_low: str | None = None
        self._disk_checked = -DISK_CHECK_INTERVAL
        self._writer = GroupCommit(self._open_writer)
        self._reader: aiosqlite.Connection | None = None

    async def open(self) -> None:
        """Open the file, set WAL and durability, and migrate the schema forward."""
        if sqlite3.sqlite_version_info < MIN_SQLITE:
            raise StoreError(f"SQLite {sqlite3.sqlite_version} is too old; da needs 3.35 or newer.")
        if self.sync not in SYNC_MODES:
            raise StoreError(f"QUEUE_SYNC={self.sync!r} is not valid; use normal or full.")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            await self._writer.start()
            self._reader = await aiosqlite.connect(self.path, isolation_level=None)
            self._reader.row_factory = sqlite3.Row
            await self._reader.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
            await self._reader.execute(f"PRAGMA cache_size=-{CACHE_KIB}")
        except sqlite3.Error as exc:
            await self.close()
            raise StoreError(f"cannot open the queue database {self.path}: {exc}") from exc

    def _open_writer(self) -> sqlite3.Connection:
        """In the writer thread: connect, set WAL and durability, migrate forward."""
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        db.row_factory = sqlite3.Row
        db.execute("PRAGMA journal_mode=WAL")
        db.execute(f"PRAGMA synchronous={self.sync.upper()}")
        db.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        db.execute(f"PRAGMA wal_autocheckpoint={WAL_CHECKPOINT_PAGES}")
        db.execute(f"PRAGMA cache_size=-{CACHE_KIB}")
        (version,) = db.execute("PRAGMA user_version").fetchone()
        if 0 < version < STATEMENTS.latest():
            backup = self.path.with_name(f"{self.path.name}.v{version}.bak")
            logger.info("backing up %s to %s before migrating it", self.path, backup)
            with sqlite3.connect(backup) as copy:
                db.backup(copy)
        reached = version
        for number, script in STATEMENTS.migrations():
            if number > version:
                logger.debug("migrating queue database %s to schema %d", self.path, number)
                db.executescript(f"BEGIN IMMEDIATE;\n{script}\nPRAGMA user_version={number};\nCOMMIT;")
                reached = number
        if reached != version:
            logger.info(migrated(str(self.path), version, reached))
        return db

    async def close(self) -> None:
        await self._writer.stop()
        if self._reader is not None:
            await self._reader.close()
            self._reader = None

    async def schema_version(self) -> int:
        rows = await self._read("PRAGMA user_version", {})
        return int(rows[0][0])

    async def _read(self, sql: str, params: dict[str, Any]) -> list[sqlite3.Row]:
        if self._reader is None:
            raise StoreError("the queue database is not open.")
        try:
            return list(await self._reader.execute_fetchall(sql, params))
        except (sqlite3.Error, OverflowError) as exc:
            raise StoreError(f"database error: {exc}") from exc

    async def _fetch(self, name: str, **params: Any) -> list[Row]:
        return list(await self._read(STATEMENTS[name], encoded(params)))

    async def _write(self, name: str, **params: Any) -> list[Row]:
        if name not in BELOW_RESERVE_ALLOWED:
            await self._refuse_below_reserve()
        if name in WAKE_WHEN_QUEUED:
            self.pending_changed.notify()
        return await self._committed(name == "probe", STATEMENTS[name], params)

    async def _write_together(self, names: list[str], **params: Any) -> list[Row]:
        await self._refuse_below_reserve()
        return await self._committed(False, [STATEMENTS[name] for name in names], params)

    async def _write_chain(self, steps: list[tuple[str, dict[str, Any]]]) -> list[list[Row]]:
        await self._refuse_below_reserve()
        return await self._committed(False, Chain(tuple((STATEMENTS[name], encoded(params)) for name, params in steps)),
                                     {})

    async def _refuse_below_reserve(self) -> None:
        """Refuse a write (503, nothing changed) while the disk is below the reserve, so the last megabytes
        stay for the WAL to checkpoint and recover; reads go on."""
        now = time.monotonic()
        if self.reserve and now - self._disk_checked >= DISK_CHECK_INTERVAL:
            self._disk_checked = now
            low = await self._below_reserve()
            if low is not None and self._disk_low is None:
                logger.warning("refusing writes: %s", low)
            elif low is None and self._disk_low is not None:
                logger.warning("taking writes again: the disk of %s is above its reserve", self.path)
            self._disk_low = low
        if self._disk_low is not None:
            raise DatabaseUnavailable(self._disk_low)

    async def _below_reserve(self) -> str | None:
        """Why the disk is below the reserve (measured after a checkpoint tried to free space), else None."""
        free = shutil.disk_usage(self.path.parent).free
        if free < self.reserve and self._reader is not None:
            with contextlib.suppress(sqlite3.Error):
                await self._reader.execute_fetchall("PRAGMA wal_checkpoint(TRUNCATE)")
            free = shutil.disk_usage(self.path.parent).free
        if free >= self.reserve:
            return None
        return (f"only {free // 2**20} MB free on the disk of {self.path} (below the reserve of "
                f"{self.reserve // 2**20} MB, QUEUE_DISK_RESERVE_MB), so the queue takes no writes; free space on that "
                "disk (old backups, logs, other files), then try again: nothing was changed.")

    async def _committed(self, probe: bool, statement: Statement, params: dict[str, Any]) -> list[Any]:
        """Run a write; remember whether real writes fail for want of space, which a tiny probe row can hide."""
        try:
            rows = list(await self._writer.run(statement, encoded(params)))
        except StoreError as exc:
            if not probe and isinstance(exc.__cause__, sqlite3.Error) and "full" in str(exc.__cause__):
                self._full = (str(exc.__cause__), time.monotonic())
            raise _lock_race(exc) from exc.__cause__
        if not probe:
            self._full = None
        return rows

    async def check_writable(self) -> None:
        """Also unhealthy below the disk reserve (after a checkpoint tried to free it) and while writes fail full."""
        low = await self._below_reserve()
        if low is not None:
            raise StoreError(low)
        if self._full is not None and time.monotonic() - self._full[1] < FULL_HOLD:
            raise StoreError(f"the last write to {self.path} failed ({self._full[0]}); free space on that disk.")
        await super().check_writable()


def encoded(params: dict[str, Any]) -> dict[str, Any]:
    """The parameters as SQLite binds them: a list (of names) as JSON text, which statements read with json_each
    (orjson: a claim binds five lists, and json.dumps took 1.5 us each)."""
    return {key: orjson.dumps(value).decode() if isinstance(value, (list, tuple)) else value
            for key, value in params.items()}


# How SQLite names a write the tasks_held_lock or tasks_held_checkout index refused (by their columns).
HELD_LOCK_REFUSED = ("UNIQUE constraint failed: tasks.lock", "UNIQUE constraint failed: tasks.checkout")


def _lock_race(error: StoreError) -> StoreError:
    """The store's error for a write a held-lock index refused: another task holds that lock."""
    cause = error.__cause__
    if isinstance(cause, sqlite3.IntegrityError) and str(cause).startswith(HELD_LOCK_REFUSED):
        return LockRace()
    return error


def backup_file(db_path: Path, destination: Path) -> None:
    """Copy a live queue database with SQLite's online backup (safe while `da serve` writes)."""
    if not db_path.is_file():
        raise StoreError(f"no queue database at {db_path}; set QUEUE_DB_PATH.")
    destination.parent.mkdir(parents=True, exist_ok=True)
    source = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        with sqlite3.connect(destination) as copy:
            source.backup(copy)
            # One self-contained file: a WAL-mode copy would grow -wal/-shm files beside it when read.
            copy.execute("PRAGMA journal_mode=DELETE")
    except sqlite3.Error as exc:
        raise StoreError(f"backup of {db_path} failed: {exc}") from exc
    finally:
        source.close()


def check_file(path: Path, remedy: str, what: str = "a queue database", *, backup: bool = False) -> None:
    """Raise StoreError, in one line ending with `remedy`, unless `path` is a sound queue database; a `backup`
    is read as immutable, so nothing (no -wal or -shm file) is left beside it."""
    if path.is_file() and path.stat().st_size == 0:
        raise StoreError(f"{path} is empty (0 bytes), not {what}; {remedy}.")
    uri = f"file:{path}?mode=ro" + ("&immutable=1" if backup else "")
    try:
        with contextlib.closing(sqlite3.connect(uri, uri=True)) as check:
            if check.execute("PRAGMA integrity_check").fetchone()[0] != "ok":
                raise StoreError(f"{path} fails SQLite's integrity check; {remedy}.")
            check.execute("SELECT count(*) FROM tasks").fetchone()
    except sqlite3.Error as exc:
        raise StoreError(f"{path} is not {what} ({exc}); {remedy}.") from exc


def restore_file(backup: Path, db_path: Path) -> Path | None:
    """Put a backup (checked first with check_file) in place of the database; the old file, if there was one,
    is kept beside it (returned)."""
    kept = None
    # An empty file is the one the lock made for a database that did not exist yet: nothing to keep.
    if db_path.exists() and db_path.stat().st_size > 0:
        kept = db_path.with_name(f"{db_path.name}.before-restore")
        with sqlite3.connect(db_path) as current, sqlite3.connect(kept) as copy:
            current.backup(copy)
    for suffix in ("-wal", "-shm"):
        db_path.with_name(db_path.name + suffix).unlink(missing_ok=True)
    db_path.parent.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(f"file:{backup}?mode=ro&immutable=1", uri=True) as source, \
            sqlite3.connect(db_path) as target:
        source.backup(target)
    return kept
