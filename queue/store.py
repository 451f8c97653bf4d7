"""The store: every task verb, once, over either of two databases.

`Store` holds the verbs (create, claim, report, reap, ...) and their rules in terms of named
statements; a backend runs those statements: `da.queue.sqlite.SqliteStore` on one embedded file
with group commit (the default), `da.queue.postgres.PostgresStore` on a PostgreSQL database that
several replicas of the service share. Nothing above this module knows which one runs; only the
store modules speak SQL, and the statements live in `queue/sql/<dialect>/`.

Atomicity contract, on both: every transition is one statement (an UPDATE ... RETURNING, with the
event row written by a trigger in the same statement), so a crash never leaves a transition half
written and two claimers, on any replica, never receive the same task. A write is answered only
after its COMMIT returned.
"""

from __future__ import annotations

import asyncio
import importlib.resources
import json
import os
import random
import re
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from da.queue import models
from da.queue.errors import BadRequest, Conflict, Forbidden, LeaseLost, NotFound, StoreError
from da.queue.models import ClaimRequest, Event, NewTask, NewToken, Report, Row, Task, Token

if TYPE_CHECKING:
    from da.queue.settings import QueueSettings

# A claim that lost a race for a lock to a claim on another replica tries again this often; each
# retry sees the winner's lock and skips that task, so a second retry is already rare.
CLAIM_RETRIES = 5

_HEADER = re.compile(r"^-- (\w+) --$", re.MULTILINE)
_MIGRATION = re.compile(r"^(\d{4})_\w+\.sql$")


class Statements:
    """The named statements (`queries.sql`) and numbered migrations of one SQL dialect."""

    def __init__(self, package: str) -> None:
        self.package = package
        text = importlib.resources.files(package).joinpath("queries.sql").read_text(encoding="utf-8")
        parts = _HEADER.split(text)
        self.queries = {name: body.strip().rstrip(";")
                        for name, body in zip(parts[1::2], parts[2::2], strict=True)}

    def __getitem__(self, name: str) -> str:
        return self.queries[name]

    def migrations(self) -> list[tuple[int, str]]:
        """Numbered migration scripts (`0001_initial.sql` ...) in order."""
        found = []
        for entry in importlib.resources.files(self.package).iterdir():
            match = _MIGRATION.match(entry.name)
            if match:
                found.append((int(match.group(1)), entry.read_text(encoding="utf-8")))
        return sorted(found)

    def latest(self) -> int:
        return max(number for number, _ in self.migrations())


# Ids and lease tokens come from a generator seeded once from the OS: os.urandom per call
# (uuid4) measured 60 us under load here, a tenth of a claim's budget. Lease tokens only need to
# be unique: they are predictable from enough earlier ones, so a worker token's verbs also check
# that the task is its machine's (`assigned_to` in the statements), and a lease alone proves nothing.
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


@dataclass(frozen=True)
class Sighting:
    """The last time a machine spoke to the queue and what it said it can do."""

    name: str
    at: float
    capabilities: tuple[str, ...] = ()
    agents: tuple[str, ...] = ()


class LockRace(StoreError):
    """A concurrent claim took this task's lock first."""


class Store(ABC):
    """Tasks and events: the verbs every backend shares, over the statements it runs."""

    backend: ClassVar[str]

    def __init__(self, *, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        # Woken when a task may have become claimable (created, re-queued, a lock freed).
        self.pending_changed = Signal()
        # Woken when events were appended.
        self.events_appended = Signal()

    # ---- what a backend provides ---------------------------------------------------

    @abstractmethod
    async def open(self) -> None:
        """Connect and migrate the schema forward."""

    @abstractmethod
    async def close(self) -> None:
        """Finish queued writes and disconnect."""

    @abstractmethod
    async def schema_version(self) -> int:
        """The number of the newest migration applied."""

    @abstractmethod
    async def _fetch(self, name: str, **params: Any) -> list[Row]:
        """Run a named read; it sees only committed state."""

    @abstractmethod
    async def _write(self, name: str, **params: Any) -> list[Row]:
        """Run a named write and return once it is committed."""

    @abstractmethod
    async def _write_together(self, names: list[str], **params: Any) -> list[Row]:
        """Several named statements in one transaction; returns the rows of the last."""

    @abstractmethod
    def _names(self, values: Sequence[str]) -> Any:
        """A list of names in the form this backend's statements take it."""

    def _claimable(self, types: Sequence[str], pins: Sequence[str], agents: Sequence[str]) -> dict[str, Any]:
        """The claim statement's parameters for the types, pins ('' for none) and agents a worker takes."""
        return {"capabilities": self._names(types), "pins": self._names(pins), "agents": self._names(agents)}

    def _changed(self, *, pending: bool) -> None:
        """A transition was committed: wake event followers, and claimers when `pending`."""
        if pending:
            self.pending_changed.notify()
        self.events_appended.notify()

    async def record_sightings(self, sightings: Sequence[Sighting]) -> None:  # noqa: B027 - a no-op by default
        """Share machine liveness with other replicas; one replica keeps it in memory only."""

    async def sightings(self) -> list[Sighting]:
        """Liveness other replicas shared."""
        return []

    # ---- creating and reading ------------------------------------------------------

    async def _tasks(self, name: str, **params: Any) -> list[Task]:
        return [Task.from_row(row) for row in await self._fetch(name, **params)]

    async def _write_tasks(self, name: str, **params: Any) -> list[Task]:
        return [Task.from_row(row) for row in await self._write(name, **params)]

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
            lock_per_machine=spec.lock_per_machine,
            created_by=spec.created_by,
            max_attempts=spec.max_attempts,
            notes=spec.notes,
            now=self.clock(),
        )
        self._changed(pending=True)
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

    async def list_tasks(self, *, statuses: tuple[str, ...] = (), task_type: str | None = None,
                         machine: str | None = None, before: int | None = None,
                         limit: int = 50) -> tuple[list[Task], int | None]:
        """Newest first; returns the page and the cursor for the next one (None at the end)."""
        attention = bool(statuses) and set(statuses) <= {models.NEEDS_HUMAN, models.FAILED}
        rows = await self._fetch(
            "list_attention" if attention else "list_tasks",
            status=self._names(statuses) if statuses else None,
            type=task_type,
            machine=machine,
            before=before,
            limit=limit + 1,
        )
        tasks = [Task.from_row(row) for row in rows[:limit]]
        cursor = int(rows[limit - 1]["seq"]) if len(rows) > limit else None
        return tasks, cursor

    async def events(self, task_id: str) -> list[Event]:
        return [Event.from_row(row) for row in await self._fetch("task_events", task_id=task_id)]

    async def events_after(self, after: int, limit: int = 500) -> list[Event]:
        """The feed after an event id, oldest first; a follower that resumes from the last id it
        got never misses an event, never sees one twice."""
        return [Event.from_row(row) for row in await self._fetch("events_after", after=after, limit=limit)]

    async def last_event_id(self) -> int:
        """Where a new follower starts: every event committed after this answer has a larger id."""
        return int((await self._fetch("last_event"))[0]["id"])

    # ---- the worker's side ---------------------------------------------------------

    async def claim(self, request: ClaimRequest, *, lease_seconds: float, overflow_grace: float) -> Claim | None:
        """Hand the best pending task this worker may take to it, or None.

        Best means highest priority, then oldest. The task's type must be one of the worker's
        capabilities; its pin, if any, one of the worker's names; its agent, if any, one the
        worker has; a soft preference for another machine holds for `overflow_grace` seconds;
        and its lock must not be held by a running task (a named lock across the fleet, a cwd
        lock on the same machine).
        """
        names = [request.machine, *request.aliases]
        for _ in range(CLAIM_RETRIES):
            now = self.clock()
            lease = new_token()
            expires = now + lease_seconds
            try:
                tasks = await self._write_tasks(
                    "claim_task",
                    machine=request.machine,
                    lease=lease,
                    expires=expires,
                    retry_safe=self._names(request.retry_safe),
                    names=self._names(names),
                    **self._claimable(request.capabilities, ("", *names), ("", *request.agents)),
                    overflow_before=now - overflow_grace,
                    now=now,
                )
            except LockRace:
                continue
            if not tasks:
                return None
            self._changed(pending=False)
            return Claim(tasks[0], lease, expires)
        return None

    async def release(self, task_id: str, lease: str, *, machine: str | None = None) -> Task:
        """Hand back a claim that will not run (its worker is stopping or went away); repeating it is harmless.

        Here and in `start`, `heartbeat` and `report`, `machine` (a worker token's) limits the verb
        to that machine's tasks; None (the admin secret) allows any.
        """
        rows = await self._write_tasks("release_task", id=task_id, lease=lease, machine=machine, now=self.clock())
        if rows:
            self._changed(pending=True)
            return rows[0]
        task = await self._current(task_id)
        if task.status == models.PENDING and task.lease is None:
            return task
        _check_owner(task, lease, machine)
        if task.lease != lease:
            raise LeaseLost(f"task {task.short_id} is no longer held by this lease (it is {task.status}).")
        raise LeaseLost(f"task {task.short_id} is {task.status}; only a claimed task that has not started "
                        "can be released.")

    async def start(self, task_id: str, lease: str, *, machine: str | None = None) -> Task:
        """claimed → in_progress; repeating it is harmless."""
        rows = await self._write_tasks("start_task", id=task_id, lease=lease, machine=machine, now=self.clock())
        if rows:
            self._changed(pending=False)
            return rows[0]
        task = await self._held(task_id, lease, machine)
        if task.status == models.IN_PROGRESS:
            return task
        raise LeaseLost(f"task {task.short_id} is {task.status}; it cannot be started.")

    async def heartbeat(self, task_id: str, lease: str, *, lease_seconds: float, progress: str | None,
                        machine: str | None = None) -> tuple[Task, bool]:
        """Extend the lease; returns the task and whether the worker should cancel it."""
        now = self.clock()
        rows = await self._write_tasks("heartbeat", id=task_id, lease=lease, expires=now + lease_seconds,
                                       progress=progress, machine=machine, now=now)
        if rows:
            return rows[0], False
        task = await self._held(task_id, lease, machine)
        if task.status == models.CANCELLED:
            return task, True
        raise LeaseLost(f"task {task.short_id} is {task.status}; stop running it.")

    async def report(self, task_id: str, report: Report, *, machine: str | None = None) -> Task:
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
            machine=machine,
            now=self.clock(),
        )
        if rows:
            self._changed(pending=True)
            return rows[0]
        task = await self._held(task_id, report.lease, machine)
        if task.status == report.status and task.lease_expires_at is None:
            return task
        raise LeaseLost(f"task {task.short_id} is {task.status}; this report was not applied.")

    async def _current(self, task_id: str) -> Task:
        rows = await self._tasks("get_task", id=task_id)
        if not rows:
            raise NotFound(f"no task with id {task_id!r}.")
        return rows[0]

    async def _held(self, task_id: str, lease: str, machine: str | None = None) -> Task:
        """The task, if this lease is (or was last) the one on it; else a lease-lost error."""
        task = await self._current(task_id)
        _check_owner(task, lease, machine)
        if task.lease != lease:
            raise LeaseLost(f"task {task.short_id} is no longer held by this lease (it is {task.status}).")
        return task

    async def reap(self) -> list[Task]:
        """Settle tasks whose lease expired: retry the safe ones, hand the rest to a human."""
        tasks = await self._write_tasks("reap_expired", now=self.clock())
        if tasks:
            self._changed(pending=True)
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
        self._changed(pending=True)
        return rows[0]

    async def count(self, status: str) -> int:
        """How many tasks are in `status` (what a bulk resolve would change)."""
        return int((await self._fetch("count_status", status=status))[0]["n"])

    async def resolve_many(self, from_status: str, status: str, *, by: str | None, notes: str | None) -> list[str]:
        """Resolve every task in `from_status`; returns the ids changed."""
        rows = await self._write("resolve_many", from_status=from_status, status=status, by=by, notes=notes,
                                 now=self.clock())
        if rows:
            self._changed(pending=True)
        return [row["id"] for row in rows]

    async def cancel(self, task_id: str, *, by: str | None, notes: str | None) -> Task:
        """Cancel a task that has not finished."""
        task = await self.get(task_id)
        rows = await self._write_tasks("cancel_task", id=task.id, by=by, notes=notes, now=self.clock())
        if not rows:
            raise Conflict(f"task {task.short_id} is already {task.status}; nothing to cancel.")
        self._changed(pending=True)
        return rows[0]

    # ---- scoped tokens -------------------------------------------------------------

    async def add_token(self, spec: NewToken, *, token_id: str, digest: str) -> Token:
        """Store a new token by the digest of its secret; an active token's name is taken only once."""
        rows = await self._write("insert_token", id=token_id, digest=digest, kind=spec.kind, token_name=spec.name,
                                 machine=spec.machine, aliases=",".join(spec.aliases), now=self.clock())
        if not rows:
            raise Conflict(f"there is already an active token named {spec.name!r}; revoke it first "
                           "(`da token revoke NAME`) or pick another --name.")
        return Token.from_row(rows[0])

    async def find_token(self, digest: str) -> Token | None:
        """The token whose secret has this digest, revoked or not; read from the database every time,
        so a revoke on any replica counts at once."""
        rows = await self._fetch("find_token", digest=digest)
        return Token.from_row(rows[0]) if rows else None

    async def tokens(self) -> list[Token]:
        return [Token.from_row(row) for row in await self._fetch("list_tokens")]

    async def revoke_token(self, token_id: str) -> Token:
        """Refuse a token from now on; revoking it again is harmless."""
        rows = await self._write("revoke_token", id=token_id, now=self.clock())
        if not rows:
            rows = await self._fetch("get_token", id=token_id)
            if not rows:
                raise NotFound(f"no token with id {token_id!r}; `da token list` shows them.")
        return Token.from_row(rows[0])

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
            counts[row["machine"]] = MachineCounts(int(row["active"]), int(row["done"]), int(row["failed"]),
                                                   top[1] if top else None)
        return counts

    async def prune(self, older_than: float) -> int:
        """Delete finished tasks (and their events) older than `older_than` seconds; counts are kept."""
        rows = await self._write_together(["prune_count", "prune_events", "prune_tasks"],
                                          before=self.clock() - older_than)
        return len(rows)

    async def status_counts(self) -> list[tuple[str, str, int]]:
        return [(row["status"], row["type"], int(row["n"])) for row in await self._fetch("status_counts")]


def _check_owner(task: Task, lease: str, machine: str | None) -> None:
    """Refuse a worker token that holds another machine's lease (leases alone are not proof enough)."""
    if machine is not None and task.lease == lease and task.assigned_to != machine:
        raise Forbidden(f"task {task.short_id} is held by {task.assigned_to}; this token may only act for {machine}.")


def create_store(settings: QueueSettings, *, clock: Callable[[], float] = time.time) -> Store:
    """The store the settings ask for: PostgreSQL when QUEUE_DB_URL is set, else the SQLite file."""
    if settings.db_url:
        from da.queue.postgres import PostgresStore

        return PostgresStore(settings.db_url, clock=clock)
    from da.queue.sqlite import SqliteStore

    return SqliteStore(settings.db_path, sync=settings.sync, clock=clock)
