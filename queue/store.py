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
import dataclasses
import json
import logging
import os
import random
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from da.queue import models
from da.queue.errors import BadRequest, Conflict, Forbidden, LeaseLost, LockHeld, LockRace, NotFound, StoreError
from da.queue.models import ClaimRequest, Event, NewTask, NewToken, Report, Row, Task, Token
from da.queue.signals import Signal, within

if TYPE_CHECKING:
    from da.queue.settings import QueueSettings

logger = logging.getLogger(__name__)

# A claim that lost a race for a lock to a claim on another replica tries again this often; each
# retry sees the winner's lock and skips that task, so a second retry is already rare.
CLAIM_RETRIES = 5
# /health commits a probe row and answers within this bound whatever the database does, so a
# frozen database reads as down rather than hanging the load balancer's check.
PROBE_TIMEOUT = 2.0
# Load balancers each poll /health every few seconds; one probe a second answers all of them.
PROBE_REUSE = 1.0
# Tokens kept in memory at most (a fleet has tens); past it they are read again.
MAX_KEPT_TOKENS = 4096
# Who settles expired leases; a task it handed to a person still carries the lost worker's lease.
REAPER = "reaper"

# Ids and lease tokens come from a generator seeded once from the OS: os.urandom per call
# (uuid4) measured 60 us under load here, a tenth of a claim's budget. Lease tokens only need to
# be unique: they are predictable from enough earlier ones, so a worker token's verbs also check
# that the task is its machine's (`assigned_to` in the statements), and a lease alone proves nothing.
_random = random.Random(os.urandom(32))


def new_id() -> str:
    return str(uuid.UUID(int=_random.getrandbits(128), version=4))


def new_token() -> str:
    return f"{_random.getrandbits(128):032x}"


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


class Store(ABC):
    """Tasks and events: the verbs every backend shares, over the statements it runs."""

    backend: ClassVar[str]
    # Whether tokens found may be kept in memory: only where every revoke goes through this process.
    tokens_kept: ClassVar[bool] = False

    def __init__(self, *, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        # Woken when a task may have become claimable (created, re-queued, a lock freed).
        self.pending_changed = Signal()
        # Woken when events were appended.
        self.events_appended = Signal()
        # Woken when a task was cancelled, so heartbeats held for its worker answer at once.
        self.task_cancelled = Signal()
        # Woken when an ask was answered or expired, so the worker waiting for it hears at once.
        self.asks_settled = Signal()
        # Woken when a progress record was replaced, for `da watch` and the bot.
        self.progress_saved = Signal()
        # Woken when a steering message was queued, so a held heartbeat hands it over at once.
        self.message_queued = Signal()
        # Tokens found, by digest, while `tokens_kept`; and a count of changes, so a read under way across one
        # keeps nothing.
        self._tokens: dict[str, Token] = {}
        self._tokens_generation = 0
        # The health probe in flight or last finished, shared by concurrent /health requests.
        self._probe: asyncio.Future[None] | None = None
        self._probe_started = 0.0

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

    # The runners below take parameters as Python values, a list of names as a list; each backend
    # encodes them for its dialect (SQLite: JSON text for json_each, PostgreSQL: an array).

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
    async def _write_chain(self, steps: list[tuple[str, dict[str, Any]]]) -> list[list[Row]]:
        """Named statements, each with its own parameters, in one transaction, each run only if the one
        before it returned rows; the rows of each (empty for those not run). All commit or none does."""

    def _claimable(self, types: Sequence[str], pins: Sequence[str], agents: Sequence[str]) -> dict[str, Any]:
        """The claim statement's parameters for the types, pins ('' for none) and agents a worker takes."""
        return {"capabilities": list(types), "pins": list(pins), "agents": list(agents)}

    def _changed(self, *, pending: bool, cancelled: bool = False, settled: bool = False, progress: bool = False,
                 message: bool = False) -> None:
        """A change was committed: wake event followers, claimers when `pending`, held heartbeats when a
        task was `cancelled` or sent a `message`, ask waiters when an ask was `settled`, and progress
        followers when a record was saved (`progress`, which appends no event)."""
        if pending:
            self.pending_changed.notify()
        if cancelled:
            self.task_cancelled.notify()
        if settled:
            self.asks_settled.notify()
        if progress:
            self.progress_saved.notify()
        if message:
            self.message_queued.notify()
        if not progress or settled:
            self.events_appended.notify()

    async def record_sightings(self, sightings: Sequence[Sighting]) -> None:  # noqa: B027 - a no-op by default
        """Share machine liveness with other replicas; one replica keeps it in memory only."""

    async def sightings(self) -> list[Sighting]:
        """Liveness other replicas shared."""
        return []

    # ---- health --------------------------------------------------------------------

    async def check_writable(self) -> None:
        """Raise a StoreError unless the database commits a write within PROBE_TIMEOUT seconds.

        A read-only, frozen or unreachable database must not look healthy to a load balancer;
        concurrent checks share one probe, and a probe's answer serves for PROBE_REUSE seconds.
        """
        loop = asyncio.get_running_loop()
        if self._probe is None or (self._probe.done() and loop.time() - self._probe_started > PROBE_REUSE):
            self._probe_started = loop.time()
            self._probe = asyncio.ensure_future(self._probe_once())
        await asyncio.shield(self._probe)

    async def _probe_once(self) -> None:
        """Commit the probe row in time."""
        try:
            await within(PROBE_TIMEOUT, self._write("probe", writer=self.backend, now=self.clock()))
        except TimeoutError:
            raise StoreError(f"the database did not commit a write within {PROBE_TIMEOUT:g} s "
                             "(frozen, out of space or locked by another process).") from None

    # ---- creating and reading ------------------------------------------------------

    async def _tasks(self, name: str, **params: Any) -> list[Task]:
        return await self._readable([Task.from_row(row) for row in await self._fetch(name, **params)])

    async def _readable(self, tasks: list[Task]) -> list[Task]:
        """The tasks, with any waiting one whose stored payload cannot be read back quarantined first."""
        if not any(task.unreadable for task in tasks):
            return tasks
        return [await self._quarantine(task) if task.unreadable and task.status in (models.PENDING, models.CLAIMED)
                else task for task in tasks]

    async def _quarantine(self, task: Task) -> Task:
        """Hand a task whose payload cannot be read back to a person (see the quarantine_task statement)."""
        notes = f"quarantined: the stored payload cannot be read back ({task.unreadable})"
        result = {"error": "unreadable payload",
                  "action": f"resubmit the task with a payload that is a JSON object nested at most {models.MAX_DEPTH} "
                            "levels deep, then resolve this one as failed"}
        rows = await self._write_tasks("quarantine_task", id=task.id, notes=notes, result=json.dumps(result),
                                       now=self.clock())
        if not rows:
            return await self._current(task.id)  # a concurrent read or claim quarantined it first
        logger.warning("task %s %s %s", task.short_id, task.type, notes, extra={"task_id": task.id})
        self._changed(pending=False)
        return rows[0]

    async def _write_tasks(self, name: str, **params: Any) -> list[Task]:
        return [Task.from_row(row) for row in await self._write(name, **params)]

    async def create(self, spec: NewTask) -> Task:
        """Insert a pending task and wake the claimers that wait for work."""
        (task,) = await self._write_tasks("insert_task", **_new_task_fields(spec), now=self.clock())
        self._changed(pending=True)
        return task

    async def create_many(self, specs: Sequence[NewTask]) -> list[Task]:
        """Insert pending tasks in one statement, all or none, in the order given, and wake the claimers once."""
        fields = [_new_task_fields(spec) for spec in specs]
        tasks = await self._write_tasks("insert_tasks", tasks=json.dumps(fields), now=self.clock())
        self._changed(pending=True)
        order = {field["id"]: index for index, field in enumerate(fields)}
        return sorted(tasks, key=lambda task: order[task.id])

    async def get(self, task_id: str) -> Task:
        """A task by full id or by a unique prefix of at least 4 characters."""
        if not models.ID_PREFIX_PATTERN.fullmatch(task_id) or len(task_id) > 36:
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
            status=list(statuses) if statuses else None,
            type=task_type,
            machine=machine,
            before=before,
            limit=limit + 1,
        )
        tasks = await self._readable([Task.from_row(row) for row in rows[:limit]])
        if statuses:
            tasks = [task for task in tasks if task.status in statuses]  # quarantined on the way
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
        and its locks must not be held by a running task (a named lock across the fleet, its
        checkout on the same machine).
        """
        races = 0
        while races < CLAIM_RETRIES:
            params = self._claim_params(request, lease_seconds, overflow_grace)
            try:
                tasks = await self._write_tasks("claim_task", **params)
            except LockRace:
                races += 1
                continue
            if not tasks:
                return None
            self._changed(pending=False)
            if tasks[0].unreadable:
                # Its answer could not be encoded: handed out, it would be reaped and claimed forever.
                await self._quarantine(tasks[0])
                continue
            return Claim(tasks[0], params["lease"], params["expires"])
        return None

    def _claim_params(self, request: ClaimRequest, lease_seconds: float, overflow_grace: float) -> dict[str, Any]:
        """The claim statement's parameters for this worker, with a fresh lease from now."""
        now = self.clock()
        names = [request.machine, *request.aliases]
        return {"machine": request.machine, "lease": new_token(), "expires": now + lease_seconds,
                "retry_safe": list(request.retry_safe), "names": names,
                **self._claimable(request.capabilities, ("", *names), ("", *request.agents)),
                "overflow_before": now - overflow_grace, "now": now}

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
        if task.status == models.PENDING and task.lease is None and machine is None:
            return task
        _check_owner(task, lease, machine)
        if task.lease != lease:
            raise LeaseLost(f"task {task.short_id} is no longer held by this lease (it is {task.status}).")
        raise LeaseLost(f"task {task.short_id} is {task.status}; only a claimed task that has not started "
                        "can be released.")

    async def start(self, task_id: str, lease: str, *, checkout: str | None = None,
                    machine: str | None = None) -> Task:
        """claimed → in_progress; repeating it is harmless.

        `checkout` is the task's folder as its worker resolved it on its machine (~, .., symlinks): its
        checkout lock moves to it, so every spelling of one folder is one lock, enforced by the database's
        unique index. When another task on the machine holds that folder the start is refused
        (LockHeld) and the claim handed back without counting an attempt.
        """
        for _ in range(CLAIM_RETRIES):
            try:
                rows = await self._write_tasks("start_task", id=task_id, lease=lease, checkout=checkout,
                                               machine=machine, now=self.clock())
            except LockRace:
                await self._defer(task_id, lease, checkout or "")
                continue
            if rows:
                # A lock moved off the folder the task named: claims passed over for it may go now.
                self._changed(pending=checkout is not None and rows[0].checkout == checkout)
                return rows[0]
            break
        task = await self._held(task_id, lease, machine)
        if task.status == models.IN_PROGRESS:
            return task
        raise LeaseLost(f"task {task.short_id} is {task.status}; it cannot be started.")

    async def _defer(self, task_id: str, lease: str, checkout: str) -> None:
        """Hand back a claim whose folder another task on its machine holds, keyed by that folder (so claims
        pass over it until the folder is free), and raise LockHeld; return if the holder already finished."""
        task = await self._held(task_id, lease)
        holders = await self._fetch("lock_holder", checkout=checkout, machine=task.assigned_to, id=task.id)
        if not holders:
            return
        holder = str(holders[0]["id"])[:models.SHORT_ID_LENGTH]
        note = f"waiting for the folder {checkout} on {task.assigned_to}, held by task {holder}"
        if await self._write_tasks("defer_task", id=task.id, lease=lease, checkout=checkout, note=note,
                                   now=self.clock()):
            self._changed(pending=True)
        raise LockHeld(f"the folder {checkout} is in use on {task.assigned_to} by task {holder}; task "
                       f"{task.short_id} went back to the queue until it is free.")

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
        return (await self._report(task_id, report, machine))[0]

    async def report_and_claim(self, task_id: str, report: Report, claim: ClaimRequest, *, lease_seconds: float,
                               overflow_grace: float, machine: str | None = None) -> tuple[Task, Claim | None]:
        """Record the outcome, then claim the next task as `claim` would: one round trip for a worker.

        The same statements as `report` and `claim`, one after the other: a report that fails raises and
        claims nothing, and only a report applied now claims (a repeated one, or a late one kept for a
        person, answers None), so a worker retrying a report whose answer was lost never holds two tasks.
        The two statements run in one transaction (one commit), the claim only if the report changed the task;
        should the claim part fail (a lock race), nothing of it stands and both run one after the other.
        """
        reported, result, usage = self._report_params(task_id, report, machine)
        wanted = self._claim_params(claim, lease_seconds, overflow_grace)
        try:
            rows, claimed = await self._write_chain([("report_task", reported), ("claim_task", wanted)])
        except LockRace:
            task, applied = await self._report(task_id, report, machine)
            return task, await self.claim(claim, lease_seconds=lease_seconds,
                                          overflow_grace=overflow_grace) if applied else None
        if not rows:
            return await self._not_reported(task_id, report, result, machine), None
        task = await self._reported(Task.from_row(rows[0]), report.lease, usage)
        if not claimed:
            return task, None
        next_task = Task.from_row(claimed[0])
        if next_task.unreadable:
            # Its answer could not be encoded: handed out, it would be reaped and claimed forever.
            await self._quarantine(next_task)
            return task, await self.claim(claim, lease_seconds=lease_seconds, overflow_grace=overflow_grace)
        return task, Claim(next_task, wanted["lease"], wanted["expires"])

    def _report_params(self, task_id: str, report: Report,
                       machine: str | None) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any] | None]:
        """The report statement's parameters, the result it stores, and the usage to account for (None: none)."""
        result = dict(report.result)
        if report.action:
            result["action"] = report.action
        try:
            usage = models.usage_of(result.get("usage"), "the result's 'usage'")
        except BadRequest:
            usage = None  # the result keeps what the worker sent; only the accounting leaves it out
        params = {"id": task_id, "lease": report.lease, "status": report.status, "result": json.dumps(result),
                  "notes": report.notes, "machine": machine, "now": self.clock()}
        return params, result, usage

    async def _reported(self, task: Task, lease: str, usage: dict[str, Any] | None) -> Task:
        """A report was applied: wake who waits for it, and account for its usage."""
        self._changed(pending=True)
        if usage is None:
            return task
        await self.record_usage(task.id, lease, usage)
        return dataclasses.replace(task, usage=usage)

    async def _report(self, task_id: str, report: Report, machine: str | None) -> tuple[Task, bool]:
        """The task after the report, and whether this report changed it now."""
        params, result, usage = self._report_params(task_id, report, machine)
        rows = await self._write_tasks("report_task", **params)
        if rows:
            return await self._reported(rows[0], report.lease, usage), True
        return await self._not_reported(task_id, report, result, machine), False

    async def _not_reported(self, task_id: str, report: Report, result: dict[str, Any], machine: str | None) -> Task:
        """The task after a report that changed nothing now: a repeat, or a late one kept for a person; else
        LeaseLost."""
        task = await self._held(task_id, report.lease, machine)
        if task.status == models.NEEDS_HUMAN and task.changed_by == REAPER:
            return await self._record_late_report(task, report.status, result, report.notes)
        if task.status == report.status and task.lease_expires_at is None:
            return task
        raise LeaseLost(f"task {task.short_id} is {task.status}; this report was not applied.")

    async def _record_late_report(self, task: Task, status: str, result: dict[str, Any], notes: str | None) -> Task:
        """Keep the outcome of a worker that came back after the reaper gave its task to a person.

        The task stays needs_human (the worker was presumed lost, and someone may already be acting
        on that), but whoever resolves it sees what really happened instead of guessing.
        """
        machine = task.assigned_to or "?"
        late = {"status": status, "result": result, "notes": notes, "by": machine}
        if isinstance(task.result, dict) and task.result.get("late_report") == late:
            return task
        said = f"worker {machine} was lost (lease expired), then reported {status} late"
        rows = await self._write_tasks(
            "record_late_report", id=task.id, lease=task.lease, late=json.dumps(late),
            action=f"{machine} reported {status} after the queue had given the task up: check result.late_report, "
                   f"then resolve it ({status} if that outcome stands, or pending to run it again)",
            notes=(f"{said}: {notes}" if notes else said)[:models.MAX_NOTES], now=self.clock())
        if not rows:
            raise LeaseLost(f"task {task.short_id} changed while its late report arrived; this report was not applied.")
        return rows[0]

    async def _current(self, task_id: str) -> Task:
        rows = await self._tasks("get_task", id=task_id)
        if not rows:
            raise NotFound(f"no task with id {task_id!r}.")
        return rows[0]

    async def held(self, task_id: str, lease: str, machine: str | None = None) -> Task:
        """The task this lease holds (or last held), for a worker's long-poll; else a lease-lost error."""
        return await self._held(task_id, lease, machine)

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

    async def shift_leases(self, seconds: float, *, period: float, tolerance: float) -> int:
        """Give running leases back `seconds` this replica could not watch (a stall, a clock jump, an
        outage), less any of it another replica watched (it reaped every `period`); nothing when what
        is left is within `tolerance`."""
        return len(await self._write("shift_leases", seconds=seconds, period=period, tolerance=tolerance,
                                     now=self.clock()))

    # ---- people's side -------------------------------------------------------------

    async def resolve(self, task_id: str, status: str, *, by: str | None, notes: str | None,
                      via: str | None = None) -> Task:
        """Settle a needs_human or failed task; a second resolve says who did the first.

        Here and in the verbs below, `by` is who the caller says acted and `via` the credential the queue
        verified (`auth.Principal.label`), recorded beside it.
        """
        task = await self.get(task_id)
        rows = await self._write_tasks("resolve_task", id=task.id, status=status, by=by, notes=notes, via=via,
                                       now=self.clock())
        if not rows:
            who = f" by {task.changed_by}" if task.changed_by else ""
            raise Conflict(f"task {task.short_id} is {task.status} (set{who}); only needs_human or failed "
                           "tasks can be resolved.")
        self._changed(pending=True)
        return rows[0]

    async def count(self, status: str) -> int:
        """How many tasks are in `status` (what a bulk resolve would change)."""
        return int((await self._fetch("count_status", status=status))[0]["n"])

    async def resolve_many(self, from_status: str, status: str, *, by: str | None, notes: str | None,
                           via: str | None = None) -> list[str]:
        """Resolve every task in `from_status`; returns the ids changed."""
        rows = await self._write("resolve_many", from_status=from_status, status=status, by=by, notes=notes, via=via,
                                 now=self.clock())
        if rows:
            self._changed(pending=True)
        return [row["id"] for row in rows]

    async def cancel(self, task_id: str, *, by: str | None, notes: str | None, via: str | None = None) -> Task:
        """Cancel a task that has not finished."""
        task = await self.get(task_id)
        rows = await self._write_tasks("cancel_task", id=task.id, by=by, notes=notes, via=via, now=self.clock())
        if not rows:
            raise Conflict(f"task {task.short_id} is already {task.status}; nothing to cancel.")
        self._changed(pending=True, cancelled=True)
        return rows[0]

    async def cancel_requested(self, task_id: str, lease: str) -> bool:
        """Whether the task this lease holds was cancelled (a held heartbeat's check); LeaseLost if the
        lease no longer holds it at all."""
        task = await self._held(task_id, lease)
        if task.status == models.CANCELLED:
            return True
        if task.status in models.ACTIVE:
            return False
        raise LeaseLost(f"task {task.short_id} is {task.status}; stop running it.")

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
        """The token whose secret has this digest, revoked or not. Read from the database every time where
        another replica may revoke it (PostgreSQL), so a revoke on any replica counts at once; where this
        process is the only writer (`tokens_kept`), a token found is kept until a revoke commits here."""
        kept = self._tokens.get(digest)
        if kept is not None:
            return kept
        generation = self._tokens_generation
        rows = await self._fetch("find_token", digest=digest)
        token = Token.from_row(rows[0]) if rows else None
        # A revoke that committed while this read was under way may not be in what it read: keep nothing then.
        if token is not None and self.tokens_kept and generation == self._tokens_generation:
            if len(self._tokens) >= MAX_KEPT_TOKENS:
                self._tokens.clear()
            self._tokens[digest] = token
        return token

    def _forget_tokens(self) -> None:
        """A token changed: read every token from the database again, and keep none read before this."""
        self._tokens.clear()
        self._tokens_generation += 1

    async def token_revoked(self, token_id: str) -> bool:
        """Whether a token admitted earlier has been revoked (or removed) since; a long-poll asks again
        before it hands out work."""
        kept = next((token for token in self._tokens.values() if token.id == token_id), None)
        if kept is not None:
            return kept.revoked_at is not None
        rows = await self._fetch("get_token", id=token_id)
        return not rows or rows[0]["revoked_at"] is not None

    async def tokens(self) -> list[Token]:
        return [Token.from_row(row) for row in await self._fetch("list_tokens")]

    async def revoke_token(self, token_id: str) -> Token:
        """Refuse a token from now on; revoking it again is harmless."""
        try:
            rows = await self._write("revoke_token", id=token_id, now=self.clock())
        finally:
            self._forget_tokens()
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
        raise Conflict(f"lease {name!r} is held by {shown_holder(current.holder)} for {left:.0f} more second(s) "
                       "unless it renews; try again later.")

    async def release_lease(self, name: str, holder: str) -> bool:
        """Let go of `name` if `holder` has it (its data stays for the next holder); False when nobody
        holds it, Conflict when another does."""
        now = self.clock()
        if await self._write("release_named_lease", lease_name=name, holder=holder, now=now):
            return True
        held = await self._fetch("named_lease", lease_name=name)
        if held and held[0]["holder"] != holder and held[0]["expires_at"] > now:
            raise Conflict(f"lease {name!r} is held by {shown_holder(held[0]['holder'])}, not {holder}; "
                           "nothing released.")
        return False

    # ---- supervised sessions: asks, progress, steering messages, usage ------------

    async def open_ask(self, task_id: str, spec: models.NewAsk, *, default_timeout: float,
                       machine: str | None = None) -> models.Ask:
        """A worker asks a person about the task its lease holds; the task waits while any ask is open.

        Past MAX_OPEN_ASKS open asks on one task (a permission-request flood) the ask is refused and the
        worker told, so it rejects the request itself without asking anyone.
        """
        task = await self._current(task_id)
        rows: list[Row] = []
        for _ in range(CLAIM_RETRIES):
            now = self.clock()
            try:
                rows = await self._write("open_ask", id=task.id, lease=spec.lease, machine=machine, kind=spec.kind,
                                         title=spec.title, detail=spec.detail,
                                         options=json.dumps([{"id": o.id, "label": o.label} for o in spec.options]),
                                         now=now, expires=now + models.ask_timeout_of(task.payload, default_timeout),
                                         max_open=models.MAX_OPEN_ASKS)
                break
            except LockRace:
                continue  # another ask of this task took the same number (PostgreSQL): number it again
        if rows:
            self._changed(pending=False)
            return models.Ask.from_row(rows[0])
        task = await self._held(task.id, spec.lease, machine)
        if task.status not in (models.IN_PROGRESS, models.WAITING):
            raise LeaseLost(f"task {task.short_id} is {task.status}; only a running task can ask.")
        raise Conflict(f"task {task.short_id} already has {models.MAX_OPEN_ASKS} open asks, the most one task may "
                       "have; reject this request without asking, or wait for an answer.")

    async def asks(self, task_id: str) -> list[models.Ask]:
        """A task's asks, oldest first."""
        return [models.Ask.from_row(row) for row in await self._fetch("task_asks", task_id=task_id)]

    async def open_asks(self, limit: int = models.MAX_LIMIT) -> list[models.Ask]:
        """Open asks across the fleet, oldest first."""
        return [models.Ask.from_row(row) for row in await self._fetch("open_asks", limit=limit)]

    async def ask(self, task_id: str, ask_id: int) -> models.Ask:
        """One ask of a task; NotFound names what exists."""
        rows = await self._fetch("get_ask", task_id=task_id, ask_id=ask_id)
        if not rows:
            raise NotFound(f"task {task_id[:models.SHORT_ID_LENGTH]} has no ask {ask_id}; `da show "
                           f"{task_id[:models.SHORT_ID_LENGTH]}` lists its asks.")
        return models.Ask.from_row(rows[0])

    async def answer_ask(self, task_id: str, ask_id: int, answer: models.AskAnswer) -> models.Ask:
        """Answer an open ask with one of its options: the first answer wins (one conditional UPDATE), a
        later one is a Conflict naming who answered; an expired ask is a Conflict too."""
        task = await self.get(task_id)
        ask = await self.ask(task.id, ask_id)
        if ask.status == models.ASK_OPEN and answer.option not in {option.id for option in ask.options}:
            choices = ", ".join(option.id for option in ask.options)
            raise BadRequest(f"ask {ask_id} of task {task.short_id} has no option {answer.option[:40]!r}; "
                             f"choose one of {choices}.")
        now = self.clock()
        rows = await self._write("answer_ask", task_id=task.id, ask_id=ask_id, option=answer.option,
                                 note=answer.note, by=answer.by or "someone", via=answer.via, now=now)
        if rows:
            self._changed(pending=False, settled=True)
            return models.Ask.from_row(rows[0])
        ask = await self.ask(task.id, ask_id)
        if ask.status == models.ASK_ANSWERED:
            raise Conflict(f"ask {ask_id} of task {task.short_id} was already answered {ask.answer} by "
                           f"{ask.answered_by}.")
        if ask.status == models.ASK_EXPIRED or ask.expires_at <= now:
            raise Conflict(f"ask {ask_id} of task {task.short_id} expired at {models.iso(ask.expires_at)}: nobody "
                           "answered in time, so the agent was told no.")
        task = await self._current(task.id)
        raise Conflict(f"task {task.short_id} is {task.status}; its asks can no longer be answered.")

    async def expire_asks(self) -> list[models.Ask]:
        """Record asks nobody answered in time as expired (a reject); the upkeep calls this."""
        asks = [models.Ask.from_row(row) for row in await self._write("expire_asks", now=self.clock())]
        if asks:
            self._changed(pending=False, settled=True)
        return asks

    async def save_progress(self, task_id: str, lease: str, record: dict[str, Any], *,
                            machine: str | None = None) -> Task:
        """Replace the running task's progress record (one row write, no event; its revision counts up)."""
        usage = models.usage_of(record.get("usage"), "the progress record's 'usage'")
        rows = await self._write_tasks("save_progress", id=task_id, lease=lease, record=json.dumps(record),
                                       usage=json.dumps(usage) if usage else None,
                                       cost_usd=usage["cost_usd"] if usage else None, machine=machine,
                                       now=self.clock())
        if rows:
            self._changed(pending=False, progress=True)
            return rows[0]
        task = await self._held(task_id, lease, machine)
        raise LeaseLost(f"task {task.short_id} is {task.status}; its progress is no longer recorded.")

    async def record_workspace(self, task_id: str, facts: dict[str, Any], *, machine: str | None = None) -> Task:
        """Merge a later delivery's workspace facts (pushed, PR URL) into a finished task's result."""
        task = await self.get(task_id)
        rows = await self._write_tasks("record_workspace", id=task.id, facts=json.dumps(facts), machine=machine,
                                       now=self.clock())
        if rows:
            return rows[0]
        if machine is not None and task.assigned_to != machine:
            raise Forbidden(f"task {task.short_id} ran on {task.assigned_to}; this token may only act for {machine}.")
        raise Conflict(f"task {task.short_id} is {task.status}; only a finished task's workspace is recorded.")

    async def record_usage(self, task_id: str, lease: str, usage: dict[str, Any]) -> None:
        """Keep a finished run's usage beside its result, for budgets and /metrics."""
        await self._write("record_usage", id=task_id, lease=lease, usage=json.dumps(usage),
                          cost_usd=usage.get("cost_usd"))

    async def add_message(self, task_id: str, text: str, *, interrupt: bool, by: str | None,
                          via: str | None = None) -> models.Message:
        """Queue a steering message for a running task's session."""
        task = await self.get(task_id)
        rows = await self._write("add_message", id=task.id, text=text, interrupt=interrupt, by=by, via=via,
                                 now=self.clock(),
                                 max_queued=models.MAX_QUEUED_MESSAGES)
        if rows:
            self._changed(pending=False, message=True)
            return models.Message.from_row(rows[0])
        task = await self._current(task.id)
        if task.status in models.ACTIVE:
            raise Conflict(f"task {task.short_id} already has {models.MAX_QUEUED_MESSAGES} messages waiting for its "
                           "agent; wait until it has read them.")
        raise Conflict(f"task {task.short_id} is {task.status}; only a running task can be sent a message.")

    async def take_messages(self, task_id: str, lease: str, *, machine: str | None = None) -> list[models.Message]:
        """The messages queued for the task this lease holds, each handed over once, oldest first."""
        rows = await self._write("take_messages", id=task_id, lease=lease, machine=machine, now=self.clock())
        return sorted((models.Message.from_row(row) for row in rows), key=lambda message: message.id)

    async def spent_since(self, who: str, since: float) -> float:
        """What `who`'s tasks created since `since` have cost (reported usage)."""
        return float((await self._fetch("spent_since", who=who, since=since))[0]["spent"])

    async def usage_totals(self) -> tuple[int, int, float]:
        """Input tokens, output tokens and cost of every task, for /metrics."""
        row = (await self._fetch("usage_totals"))[0]
        return int(row["input_tokens"]), int(row["output_tokens"]), float(row["cost_usd"])


def _new_task_fields(spec: NewTask) -> dict[str, Any]:
    """The insert statements' fields of a new task, with a fresh id."""
    return {"id": new_id(), "type": spec.type, "priority": spec.priority, "payload": json.dumps(spec.payload),
            "target_machine": spec.target_machine, "preferred_machine": spec.preferred_machine, "agent": spec.agent,
            "lock": spec.lock, "checkout": spec.checkout, "created_by": spec.created_by,
            "created_via": spec.created_via,
            "max_attempts": spec.max_attempts, "notes": spec.notes}


def shown_holder(holder: str) -> str:
    """A named lease's holder as others may see it: without its last `:` part, which is what lets a
    holder renew or release it (whoever reads a refusal must not be able to take the lease over)."""
    return holder.rsplit(":", 1)[0] if ":" in holder else "another holder"


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

    return SqliteStore(settings.db_path, sync=settings.sync, clock=clock, reserve=settings.disk_reserve_mb * 2**20)
