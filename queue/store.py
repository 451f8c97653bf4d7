"""The only module that speaks SQL: tasks, claims, leases and the event trail on SQLite.

Atomicity contract: every transition is one SQL statement (an UPDATE ... RETURNING, with the
event row written by a trigger in the same statement) run by the one writer connection, so two
claimers can never receive the same task and a crash never leaves a transition half written.

Writes are group-committed: statements that arrive while the writer is busy run together in one
transaction, and each caller is answered only after that COMMIT. A batch shares the cost of a
commit (about 2.5x faster at 8 concurrent workers) without weakening what an answer promises.
The writer is a plain sqlite3 connection on its own thread so a batch costs one thread hop;
aiosqlite would cost one per statement. Reads use an aiosqlite connection, so they see only
committed state.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import importlib.resources
import json
import logging
import os
import random
import re
import sqlite3
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiosqlite

from da.queue import models
from da.queue.errors import BadRequest, Conflict, LeaseLost, NotFound, StoreError
from da.queue.models import ClaimRequest, Event, NewTask, Report, Task

logger = logging.getLogger(__name__)

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
# Statements per group commit; bounds how long one batch holds the write lock.
MAX_BATCH = 64
SYNC_MODES = ("normal", "full")

_HEADER = re.compile(r"^-- (\w+) --$", re.MULTILINE)


def load_queries() -> dict[str, str]:
    """Parse `queries.sql` into {name: statement} once at import."""
    text = importlib.resources.files("da.queue.sql").joinpath("queries.sql").read_text(encoding="utf-8")
    parts = _HEADER.split(text)
    return {name: body.strip().rstrip(";") for name, body in zip(parts[1::2], parts[2::2], strict=True)}


def migrations() -> list[tuple[int, str]]:
    """Numbered migration scripts (`0001_initial.sql` ...) in order."""
    found = []
    for entry in importlib.resources.files("da.queue.sql").iterdir():
        match = re.match(r"^(\d{4})_\w+\.sql$", entry.name)
        if match:
            found.append((int(match.group(1)), entry.read_text(encoding="utf-8")))
    return sorted(found)


QUERIES = load_queries()

# Ids and lease tokens come from a generator seeded once from the OS: os.urandom per call
# (uuid4) measured 60 us under load here, a tenth of a claim's budget. Tokens only need to
# be unique and unguessable by a worker that already holds the shared secret.
_random = random.Random(os.urandom(32))


def new_id() -> str:
    return str(uuid.UUID(int=_random.getrandbits(128), version=4))


def new_token() -> str:
    return f"{_random.getrandbits(128):032x}"


class Signal:
    """A broadcast wake-up: waiters take `waiter()` before checking, so no notify is missed."""

    def __init__(self) -> None:
        self._future: asyncio.Future[None] | None = None

    def waiter(self) -> asyncio.Future[None]:
        if self._future is None or self._future.done():
            self._future = asyncio.get_running_loop().create_future()
        return self._future

    def notify(self) -> None:
        if self._future is not None and not self._future.done():
            self._future.set_result(None)


@dataclass(frozen=True)
class Claim:
    """A claimed task with the lease that proves ownership."""

    task: Task
    lease: str
    lease_expires_at: float


@dataclass(frozen=True)
class MachineCounts:
    """What the store knows of a machine's work."""

    active: int = 0
    done: int = 0
    failed: int = 0
    top_agent: str | None = None


class Store:
    """Tasks and events in one SQLite file, through one long-lived connection."""

    def __init__(self, path: Path, *, sync: str = "normal", clock: Callable[[], float] = time.time) -> None:
        self.path = path
        self.sync = sync
        self.clock = clock
        self._writer: sqlite3.Connection | None = None
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._reader: aiosqlite.Connection | None = None
        self._pending: list[tuple[Any, dict[str, Any], asyncio.Future[list[sqlite3.Row]]]] = []
        self._has_work = asyncio.Event()
        self._writer_task: asyncio.Task[None] | None = None
        # Woken when a task may have become claimable (created, re-queued, a lock freed).
        self.pending_changed = Signal()
        # Woken when events were appended.
        self.events_appended = Signal()

    # ---- lifecycle -----------------------------------------------------------------

    async def open(self) -> None:
        """Open the file, set WAL and durability, and migrate the schema forward."""
        if sqlite3.sqlite_version_info < MIN_SQLITE:
            raise StoreError(f"SQLite {sqlite3.sqlite_version} is too old; da needs 3.35 or newer.")
        if self.sync not in SYNC_MODES:
            raise StoreError(f"QUEUE_SYNC={self.sync!r} is not valid; use normal or full.")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="da-store-writer")
        loop = asyncio.get_running_loop()
        try:
            self._writer = await loop.run_in_executor(self._executor, self._open_writer)
            self._reader = await aiosqlite.connect(self.path, isolation_level=None)
            self._reader.row_factory = sqlite3.Row
            await self._reader.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
            await self._reader.execute(f"PRAGMA cache_size=-{CACHE_KIB}")
        except sqlite3.Error as exc:
            await self.close()
            raise StoreError(f"cannot open the queue database {self.path}: {exc}") from exc
        self._writer_task = asyncio.create_task(self._write_batches())

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
        latest = max(number for number, _ in migrations())
        if 0 < version < latest:
            backup = self.path.with_name(f"{self.path.name}.v{version}.bak")
            logger.info("backing up %s to %s before migrating it", self.path, backup)
            with sqlite3.connect(backup) as copy:
                db.backup(copy)
        for number, script in migrations():
            if number > version:
                logger.info("migrating queue database %s to schema %d", self.path, number)
                db.executescript(f"BEGIN IMMEDIATE;\n{script}\nPRAGMA user_version={number};\nCOMMIT;")
        return db

    async def close(self) -> None:
        if self._writer_task is not None:
            while self._pending:
                await asyncio.sleep(0.001)
            self._writer_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._writer_task
            self._writer_task = None
        if self._reader is not None:
            await self._reader.close()
            self._reader = None
        if self._executor is not None:
            writer, self._writer = self._writer, None
            if writer is not None:
                await asyncio.get_running_loop().run_in_executor(self._executor, writer.close)
            self._executor.shutdown(wait=True)
            self._executor = None

    async def schema_version(self) -> int:
        rows = await self._fetch_raw("PRAGMA user_version", {})
        return int(rows[0][0])

    def _require(self) -> sqlite3.Connection:
        if self._writer is None:
            raise StoreError("the queue database is not open.")
        return self._writer

    async def _fetch_raw(self, sql: str, params: dict[str, Any]) -> list[sqlite3.Row]:
        """Run a read on the reader connection."""
        if self._reader is None:
            raise StoreError("the queue database is not open.")
        try:
            return list(await self._reader.execute_fetchall(sql, params))
        except sqlite3.Error as exc:
            raise StoreError(f"database error: {exc}") from exc

    async def _fetch(self, name: str, **params: Any) -> list[sqlite3.Row]:
        return await self._fetch_raw(QUERIES[name], params)

    async def _tasks(self, name: str, **params: Any) -> list[Task]:
        return [Task.from_row(row) for row in await self._fetch(name, **params)]

    async def _write(self, name: str, **params: Any) -> list[sqlite3.Row]:
        """Queue a write for the next group commit and wait until it is committed."""
        self._require()
        future: asyncio.Future[list[sqlite3.Row]] = asyncio.get_running_loop().create_future()
        self._pending.append((QUERIES[name], params, future))
        self._has_work.set()
        return await future

    async def _write_together(self, names: list[str], **params: Any) -> list[sqlite3.Row]:
        """Several statements in one transaction; returns the rows of the last."""
        self._require()
        future: asyncio.Future[list[sqlite3.Row]] = asyncio.get_running_loop().create_future()
        self._pending.append(([QUERIES[name] for name in names], params, future))
        self._has_work.set()
        return await future

    async def _write_tasks(self, name: str, **params: Any) -> list[Task]:
        return [Task.from_row(row) for row in await self._write(name, **params)]

    async def _write_batches(self) -> None:
        """The writer loop: hand whatever is queued to the writer thread as one batch."""
        loop = asyncio.get_running_loop()
        while True:
            await self._has_work.wait()
            # One turn of the loop lets requests that already arrived join this batch.
            await asyncio.sleep(0)
            batch, self._pending = self._pending[:MAX_BATCH], self._pending[MAX_BATCH:]
            if not self._pending:
                self._has_work.clear()
            outcomes = await loop.run_in_executor(self._executor, self._run_batch, [(q, p) for q, p, _ in batch])
            for (_, _, future), outcome in zip(batch, outcomes, strict=True):
                if future.done():
                    continue
                if isinstance(outcome, Exception):
                    future.set_exception(StoreError(f"database error: {outcome}"))
                else:
                    future.set_result(outcome)

    @staticmethod
    def _execute(db: sqlite3.Connection, sql: Any, params: dict[str, Any]) -> list[sqlite3.Row]:
        """One statement, or a list of them (rows of the last)."""
        if isinstance(sql, str):
            return db.execute(sql, params).fetchall()
        rows: list[sqlite3.Row] = []
        for statement in sql:
            rows = db.execute(statement, params).fetchall()
        return rows

    def _run_batch(self, batch: list[tuple[Any, dict[str, Any]]]) -> list[list[sqlite3.Row] | Exception]:
        """In the writer thread: one transaction for the batch, or one each if the batch fails."""
        db = self._writer
        assert db is not None
        if len(batch) > 1 or not isinstance(batch[0][0], str):
            try:
                db.execute("BEGIN IMMEDIATE")
                results: list[list[sqlite3.Row] | Exception] = [self._execute(db, sql, params)
                                                                 for sql, params in batch]
                db.execute("COMMIT")
                return results
            except sqlite3.Error as exc:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                if len(batch) == 1:
                    return [exc]
        # Alone, or after a failed batch: each in its own transaction, so only the one at fault fails.
        outcomes: list[list[sqlite3.Row] | Exception] = []
        for sql, params in batch:
            try:
                if isinstance(sql, str):
                    outcomes.append(db.execute(sql, params).fetchall())
                    continue
                db.execute("BEGIN IMMEDIATE")
                outcomes.append(self._execute(db, sql, params))
                db.execute("COMMIT")
            except sqlite3.Error as exc:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                outcomes.append(exc)
        return outcomes

    # ---- creating and reading ------------------------------------------------------

    async def create(self, spec: NewTask) -> Task:
        """Insert a pending task and wake the claimers that wait for work."""
        (task,) = await self._write_tasks(
            "insert_task",
            id=new_id(),
            type=spec.type,
            priority=spec.priority,
            payload=json.dumps(spec.payload),
            target_machine=spec.target_machine,
            preferred_machine=spec.preferred_machine,
            agent=spec.agent,
            lock=spec.lock,
            lock_per_machine=int(spec.lock_per_machine),
            created_by=spec.created_by,
            max_attempts=spec.max_attempts,
            notes=spec.notes,
            now=self.clock(),
        )
        self.pending_changed.notify()
        self.events_appended.notify()
        return task

    async def get(self, task_id: str) -> Task:
        """A task by full id or by a unique prefix of at least 4 characters."""
        if not models.ID_PREFIX_PATTERN.match(task_id) or len(task_id) > 36:
            raise BadRequest(f"{task_id[:40]!r} is not a task id; use the short id shown by `da queue`.")
        task_id = task_id.lower()
        rows = await self._tasks("get_task", id=task_id)
        if rows:
            return rows[0]
        if len(task_id) < models.MIN_PREFIX:
            raise BadRequest(f"task id {task_id!r} is too short; give at least {models.MIN_PREFIX} characters.")
        rows = await self._tasks("find_by_prefix", prefix=task_id)
        if not rows:
            raise NotFound(f"no task with id {task_id!r}.")
        if len(rows) > 1:
            raise Conflict(f"task id {task_id!r} is ambiguous; give more characters.")
        return rows[0]

    async def list(self, *, statuses: tuple[str, ...] = (), type: str | None = None, machine: str | None = None,
                   before: int | None = None, limit: int = 50) -> tuple[list[Task], int | None]:
        """Newest first; returns the page and the cursor for the next one (None at the end)."""
        attention = bool(statuses) and set(statuses) <= {models.NEEDS_HUMAN, models.FAILED}
        rows = await self._fetch(
            "list_attention" if attention else "list_tasks",
            status=json.dumps(list(statuses)) if statuses else None,
            type=type,
            machine=machine,
            before=before,
            limit=limit + 1,
        )
        tasks = [Task.from_row(row) for row in rows[:limit]]
        cursor = rows[limit - 1]["seq"] if len(rows) > limit else None
        return tasks, cursor

    async def events(self, task_id: str) -> list[Event]:
        return [Event.from_row(row) for row in await self._fetch("task_events", task_id=task_id)]

    async def events_after(self, after: int, limit: int = 500) -> list[Event]:
        return [Event.from_row(row) for row in await self._fetch("events_after", after=after, limit=limit)]

    async def last_event_id(self) -> int:
        return int((await self._fetch("last_event"))[0]["id"])

    # ---- the worker's side ---------------------------------------------------------

    async def claim(self, request: ClaimRequest, *, lease_seconds: float, overflow_grace: float) -> Claim | None:
        """Hand the best pending task this worker may take to it, or None.

        Best means highest priority, then oldest. The task's type must be one of the worker's
        capabilities; its pin, if any, one of the worker's names; its agent, if any, one the
        worker has; a soft preference for another machine holds for `overflow_grace` seconds;
        and its lock must not be held by a running task.
        """
        now = self.clock()
        names = [request.machine, *request.aliases]
        lease = new_token()
        expires = now + lease_seconds
        tasks = await self._write_tasks(
            "claim_task",
            machine=request.machine,
            lease=lease,
            expires=expires,
            retry_safe=json.dumps(list(request.retry_safe)),
            capabilities=json.dumps(list(request.capabilities)),
            pins=json.dumps(["", *names]),
            agents=json.dumps(["", *request.agents]),
            names=json.dumps(names),
            overflow_before=now - overflow_grace,
            now=now,
        )
        if not tasks:
            return None
        self.events_appended.notify()
        return Claim(tasks[0], lease, expires)

    async def release(self, task_id: str, lease: str) -> Task:
        """Hand back a claim that will not run (its worker is stopping or went away); repeating it is harmless."""
        rows = await self._write_tasks("release_task", id=task_id, lease=lease, now=self.clock())
        if rows:
            self.pending_changed.notify()
            self.events_appended.notify()
            return rows[0]
        task = await self._held_or_released(task_id, lease)
        return task

    async def _held_or_released(self, task_id: str, lease: str) -> Task:
        rows = await self._tasks("get_task", id=task_id)
        if not rows:
            raise NotFound(f"no task with id {task_id!r}.")
        task = rows[0]
        if task.status == models.PENDING and task.lease is None:
            return task
        if task.lease != lease:
            raise LeaseLost(f"task {task.short_id} is no longer held by this lease (it is {task.status}).")
        raise LeaseLost(f"task {task.short_id} is {task.status}; only a claimed task that has not started "
                        "can be released.")

    async def start(self, task_id: str, lease: str) -> Task:
        """claimed → in_progress; repeating it is harmless."""
        rows = await self._write_tasks("start_task", id=task_id, lease=lease, now=self.clock())
        if rows:
            self.events_appended.notify()
            return rows[0]
        task = await self._held(task_id, lease)
        if task.status == models.IN_PROGRESS:
            return task
        raise LeaseLost(f"task {task.short_id} is {task.status}; it cannot be started.")

    async def heartbeat(self, task_id: str, lease: str, *, lease_seconds: float,
                        progress: str | None) -> tuple[Task, bool]:
        """Extend the lease; returns the task and whether the worker should cancel it."""
        now = self.clock()
        rows = await self._write_tasks("heartbeat", id=task_id, lease=lease, expires=now + lease_seconds,
                                 progress=progress, now=now)
        if rows:
            return rows[0], False
        task = await self._held(task_id, lease)
        if task.status == models.CANCELLED:
            return task, True
        raise LeaseLost(f"task {task.short_id} is {task.status}; stop running it.")

    async def report(self, task_id: str, report: Report) -> Task:
        """Record the outcome once; the same report again returns the stored task unchanged."""
        result = dict(report.result)
        if report.action:
            result["action"] = report.action
        rows = await self._write_tasks(
            "report_task",
            id=task_id,
            lease=report.lease,
            status=report.status,
            result=json.dumps(result),
            notes=report.notes,
            now=self.clock(),
        )
        if rows:
            self.pending_changed.notify()
            self.events_appended.notify()
            return rows[0]
        task = await self._held(task_id, report.lease)
        if task.status == report.status and task.lease_expires_at is None:
            return task
        raise LeaseLost(f"task {task.short_id} is {task.status}; this report was not applied.")

    async def _held(self, task_id: str, lease: str) -> Task:
        """The task, if this lease is (or was last) the one on it; else a lease-lost error."""
        rows = await self._tasks("get_task", id=task_id)
        if not rows:
            raise NotFound(f"no task with id {task_id!r}.")
        task = rows[0]
        if task.lease != lease:
            raise LeaseLost(f"task {task.short_id} is no longer held by this lease (it is {task.status}).")
        return task

    async def reap(self) -> list[Task]:
        """Settle tasks whose lease expired: retry the safe ones, hand the rest to a human."""
        tasks = await self._write_tasks("reap_expired", now=self.clock())
        if tasks:
            self.pending_changed.notify()
            self.events_appended.notify()
        return tasks

    async def extend_leases(self, seconds: float) -> int:
        """Give running tasks a fresh lease after a restart of the queue."""
        return len(await self._write("extend_leases", expires=self.clock() + seconds))

    # ---- people's side -------------------------------------------------------------

    async def resolve(self, task_id: str, status: str, *, by: str | None, notes: str | None) -> Task:
        """Settle a needs_human or failed task; a second resolve says who did the first."""
        task = await self.get(task_id)
        rows = await self._write_tasks("resolve_task", id=task.id, status=status, by=by, notes=notes, now=self.clock())
        if not rows:
            who = f" by {task.changed_by}" if task.changed_by else ""
            raise Conflict(f"task {task.short_id} is {task.status} (set{who}); only needs_human or failed "
                           "tasks can be resolved.")
        self.pending_changed.notify()
        self.events_appended.notify()
        return rows[0]

    async def count(self, status: str) -> int:
        """How many tasks are in `status` (what a bulk resolve would change)."""
        return int((await self._fetch("count_status", status=status))[0]["n"])

    async def resolve_many(self, from_status: str, status: str, *, by: str | None, notes: str | None) -> list[str]:
        """Resolve every task in `from_status`; returns the ids changed."""
        rows = await self._write("resolve_many", from_status=from_status, status=status, by=by, notes=notes,
                                 now=self.clock())
        if rows:
            self.pending_changed.notify()
            self.events_appended.notify()
        return [row["id"] for row in rows]

    async def cancel(self, task_id: str, *, by: str | None, notes: str | None) -> Task:
        """Cancel a task that has not finished."""
        task = await self.get(task_id)
        rows = await self._write_tasks("cancel_task", id=task.id, by=by, notes=notes, now=self.clock())
        if not rows:
            raise Conflict(f"task {task.short_id} is already {task.status}; nothing to cancel.")
        self.pending_changed.notify()
        self.events_appended.notify()
        return rows[0]

    # ---- reporting -----------------------------------------------------------------

    async def machine_counts(self) -> dict[str, MachineCounts]:
        """Active/done/failed counts and the most used agent, per machine that ran anything."""
        agents: dict[str, tuple[int, str]] = {}
        for row in await self._fetch("machine_agents"):
            best = agents.get(row["machine"])
            if best is None or row["n"] > best[0]:
                agents[row["machine"]] = (row["n"], row["agent"])
        counts = {}
        for row in await self._fetch("machine_counts"):
            top = agents.get(row["machine"])
            counts[row["machine"]] = MachineCounts(row["active"], row["done"], row["failed"], top[1] if top else None)
        return counts

    async def prune(self, older_than: float) -> int:
        """Delete finished tasks (and their events) older than `older_than` seconds; counts are kept."""
        rows = await self._write_together(["prune_count", "prune_events", "prune_tasks"],
                                          before=self.clock() - older_than)
        return len(rows)

    async def status_counts(self) -> list[tuple[str, str, int]]:
        return [(row["status"], row["type"], row["n"]) for row in await self._fetch("status_counts")]


    # ---- named leases (one holder per name: e.g. the one Slack bot of a workspace) ------

    async def acquire_lease(self, name: str, holder: str, ttl: float,
                            data: dict[str, Any] | None = None) -> models.NamedLease:
        """Take `name` for `holder` for `ttl` seconds, or renew it (keeping `data` with it, else the
        data it had); Conflict while another holds it.

        One upsert decides, so two holders racing for a free lease cannot both get it.
        """
        rows = await self._write("acquire_named_lease", lease_name=name, holder=holder, ttl=ttl, now=self.clock(),
                                 data=None if data is None else json.dumps(data))
        if rows:
            return models.NamedLease.from_row(rows[0])
        held = await self._fetch("named_lease", lease_name=name)
        if not held:
            return await self.acquire_lease(name, holder, ttl, data)  # let go of in between: try again
        current = models.NamedLease.from_row(held[0])
        left = max(0.0, current.expires_at - self.clock())
        raise Conflict(f"lease {name!r} is held by {current.holder} for {left:.0f} more second(s) unless it "
                       "renews; try again later.")

    async def release_lease(self, name: str, holder: str) -> bool:
        """Let go of `name` if `holder` has it (its data stays for the next holder); False when nobody
        holds it, Conflict when another does."""
        now = self.clock()
        if await self._write("release_named_lease", lease_name=name, holder=holder, now=now):
            return True
        held = await self._fetch("named_lease", lease_name=name)
        if held and held[0]["holder"] != holder and held[0]["expires_at"] > now:
            raise Conflict(f"lease {name!r} is held by {held[0]['holder']}, not {holder}; nothing released.")
        return False


def backup_file(db_path: Path, destination: Path) -> None:
    """Copy a live queue database with SQLite's online backup (safe while `da serve` writes)."""
    if not db_path.is_file():
        raise StoreError(f"no queue database at {db_path}; set QUEUE_DB_PATH.")
    destination.parent.mkdir(parents=True, exist_ok=True)
    source = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        with sqlite3.connect(destination) as copy:
            source.backup(copy)
    except sqlite3.Error as exc:
        raise StoreError(f"backup of {db_path} failed: {exc}") from exc
    finally:
        source.close()


def restore_file(backup: Path, db_path: Path) -> Path:
    """Put a backup in place of the database (service stopped); the old file is kept beside it."""
    try:
        with sqlite3.connect(f"file:{backup}?mode=ro", uri=True) as check:
            if check.execute("PRAGMA integrity_check").fetchone()[0] != "ok":
                raise StoreError(f"{backup} fails SQLite's integrity check; pick another backup.")
            check.execute("SELECT count(*) FROM tasks").fetchone()
    except sqlite3.Error as exc:
        raise StoreError(f"{backup} is not a queue database backup ({exc}).") from exc
    kept = db_path.with_name(f"{db_path.name}.before-restore")
    if db_path.exists():
        with sqlite3.connect(db_path) as current, sqlite3.connect(kept) as copy:
            current.backup(copy)
    for suffix in ("-wal", "-shm"):
        db_path.with_name(db_path.name + suffix).unlink(missing_ok=True)
    db_path.parent.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(f"file:{backup}?mode=ro", uri=True) as source, sqlite3.connect(db_path) as target:
        source.backup(target)
    return kept
