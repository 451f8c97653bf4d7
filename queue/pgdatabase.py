"""Every connection the PostgreSQL store holds, and every driver error it can raise, in one place.

A pool runs the statements; one more connection (the bus) carries wake-ups between replicas:
it LISTENs for them and sends this replica's. Statements are named blocks of
`queue/sql/postgres/queries.sql` with `:name` placeholders, compiled once to asyncpg's `$n`.
Driver errors become the queue's own errors here and nowhere else.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import asyncpg

from da.queue.errors import DatabaseUnavailable, LockRace, StoreError
from da.queue.settings import redact_url
from da.queue.signals import within
from da.queue.statements import COMMENT, PLACEHOLDER, Statements, migrated, placeholders

logger = logging.getLogger(__name__)

STATEMENTS = Statements("da.queue.sql.postgres")
# The feed's horizon reads transaction snapshots with pg_current_snapshot(), new in 13.
MIN_SERVER = 13
CHANNEL = "da_queue"
# Connections per replica. Long-polls hold none while they wait, so a handful serve a fleet;
# ten leaves room for a burst of reports without queueing in the pool.
POOL_SIZE = 10
# A statement that takes longer than this is a stuck database, not a slow one.
COMMAND_TIMEOUT = 30.0
# One attempt to reach a primary (every host of a multi-host URL): a dead host refuses at once, but
# an unreachable one would hold the caller for asyncpg's default of 60 s.
CONNECT_TIMEOUT = 5.0
# While no primary answers, look for one this often: soon at first (a promotion takes seconds),
# then at most every RECONNECT_MAX seconds.
RECONNECT_FIRST = 0.1
RECONNECT_MAX = 1.0
# Proving a primary is back (a fresh connection commits the probe row) may take this long.
RECOVERY_TIMEOUT = CONNECT_TIMEOUT + 2.0
# Replicas starting at once on an empty database take this advisory lock to migrate one at a time.
MIGRATION_LOCK = int.from_bytes(b"da-queue", "big") & (2**63 - 1)
SESSION = {
    "application_name": "da-queue",
    # Our statements are small; JIT would only add compile time.
    "jit": "off",
    # Plan each prepared statement once per connection: re-planning the claim took longer than
    # running it (1.6 ms against 1.2), and its generic plan is the same index scan at any size.
    "plan_cache_mode": "force_generic_plan",
}
# Wake-ups are hints (a waiter re-checks every second anyway), so the bus does not wait for a
# disk flush to send one. Its name tells replicas how many of them share the database.
BUS_NAME = "da-queue-bus"
BUS_SESSION = {**SESSION, "application_name": BUS_NAME, "synchronous_commit": "off"}
# How often a replica counts the others. A wake-up costs the database a transaction, so a lone
# replica sends none; a replica that joins is noticed within this many seconds (until then the
# others' waiters still re-check every second).
PEER_CHECK = 2.0
HELLO = "h"
# SQLSTATE classes that mean the server cannot serve us now (connection exception, insufficient
# resources, operator intervention such as a shutdown or a standby), not that a statement is wrong.
UNAVAILABLE_CLASSES = ("08", "53", "57")
# read_only_sql_transaction: we reached a standby or a read-only database, so no primary is answering.
READ_ONLY = "25006"


def compile_statement(sql: str) -> tuple[str, tuple[str, ...]]:
    """`:name` placeholders to `$n`, with the parameter names in order."""
    names = placeholders(sql)
    sql = COMMENT.sub("", sql)
    return PLACEHOLDER.sub(lambda match: f"${names.index(match.group(1)) + 1}", sql).strip(), names


# Unique indexes two concurrent writers may both reach for: the loser is told to try again (LockRace). A lock or
# a checkout held by a running task; an ask's number on its task (two asks of one task opened at once read one max).
RACED_CONSTRAINTS = ("tasks_held_lock", "tasks_held_checkout", "asks_pkey")
COMPILED = {name: compile_statement(sql) for name, sql in STATEMENTS.queries.items()}


def translate(exc: BaseException, url: str) -> StoreError:
    """The queue's error for a driver error: DatabaseUnavailable when no primary is answering."""
    if isinstance(exc, asyncpg.UniqueViolationError) and exc.constraint_name in RACED_CONSTRAINTS:
        return LockRace()
    sqlstate = (exc.sqlstate or "") if isinstance(exc, asyncpg.PostgresError) else ""
    if isinstance(exc, asyncpg.PostgresError) and sqlstate[:2] not in UNAVAILABLE_CLASSES and sqlstate != READ_ONLY:
        return StoreError(f"database error: {exc}")
    return DatabaseUnavailable(f"the queue database at {redact_url(url)} is not answering ({describe(exc)}); "
                               "if this request was a change, it may or may not have been applied.")


def describe(exc: BaseException) -> str:
    """A driver error in a few words, for the 503's sentence and the log."""
    if isinstance(exc, asyncpg.TargetServerAttributeNotMatched):
        return "no host takes writes: a standby, or a primary not yet promoted"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


# What the driver raises: a statement the server refused, a connection that failed, or no host of a
# multi-host URL that is a primary. InternalClientError is a connection left mid-protocol when its
# backend was terminated (seen after pg_terminate_backend): a broken connection, like the others.
DRIVER_ERRORS = (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError,
                 asyncpg.InternalClientError, asyncpg.TargetServerAttributeNotMatched)


async def _keep_session(connection: asyncpg.Connection) -> None:
    """Pool connections go back as they are: our statements leave no session state behind (the
    migration lock is released in a finally), and asyncpg's default reset costs a round trip
    per statement."""


class PgDatabase:
    """The pool, the bus and the migrations of one PostgreSQL database, riding through failovers.

    When a statement finds no primary (the host died, a standby answers, the connection broke),
    the database is marked unavailable: every statement fails at once with DatabaseUnavailable
    (the HTTP layer's 503) instead of waiting on a dead host, and a supervisor looks for a
    primary with backoff (with a multi-host URL, whichever host was promoted). Once a fresh
    connection commits the probe row, idle pool connections are replaced, the bus reconnects and
    statements run again. `on_availability` hears both moments.
    """

    def __init__(self, url: str, *, replica: str, on_wake: Callable[[str], None],
                 on_availability: Callable[[bool], None] | None = None) -> None:
        self.url = url
        self._replica = replica
        self._on_wake = on_wake
        self._on_availability = on_availability or (lambda available: None)
        self._pool: asyncpg.Pool | None = None
        self._bus: asyncpg.Connection | None = None
        self._outgoing: set[str] = set()
        self._has_outgoing = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        # Until the first count, assume there are others: a missed wake-up costs more than a spare one.
        self.peers = True
        self.available = True
        self._why = ""
        self._down_since = 0.0
        # Set when the supervisor should act: the database was lost, or the bus connection broke.
        self._trouble = asyncio.Event()

    async def open(self) -> None:
        """Connect, migrate the schema forward (one replica at a time) and start listening."""
        try:
            # No floor of idle connections: asyncpg would keep reconnecting one through an outage on its
            # own (logging a traceback a second); the supervisor below does that, once.
            self._pool = await asyncpg.create_pool(self.url, min_size=0, max_size=POOL_SIZE, reset=_keep_session,
                                                   timeout=CONNECT_TIMEOUT, command_timeout=COMMAND_TIMEOUT,
                                                   server_settings=SESSION)
            await self._migrate()
            await self._open_bus()
            # Replicas already running learn of this one at once rather than at their next count.
            assert self._bus is not None
            await self._bus.execute(*self._bind("notify", {"channel": CHANNEL, "payload": f"{self._replica} {HELLO}"}))
        except DRIVER_ERRORS as exc:
            await self.close()
            raise StoreError(f"cannot open the queue database {redact_url(self.url)}: {exc}") from exc
        except StoreError:
            await self.close()
            raise
        self._tasks = [asyncio.create_task(self._send_wakeups()), asyncio.create_task(self._count_peers()),
                       asyncio.create_task(self._supervise())]

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        if self._bus is not None:
            bus, self._bus = self._bus, None
            with contextlib.suppress(*DRIVER_ERRORS):
                await bus.close(timeout=5)
        if self._pool is not None:
            pool, self._pool = self._pool, None
            try:
                await asyncio.wait_for(pool.close(), 10)
            except DRIVER_ERRORS:
                # A dead host cannot take a polite goodbye; drop the connections instead.
                pool.terminate()

    async def _open_bus(self) -> None:
        """The LISTEN connection; when it breaks, the supervisor opens a new one."""
        bus = await asyncpg.connect(self.url, timeout=CONNECT_TIMEOUT, command_timeout=COMMAND_TIMEOUT,
                                    server_settings=BUS_SESSION)
        await bus.add_listener(CHANNEL, self._received)
        bus.add_termination_listener(self._bus_lost)
        old, self._bus = self._bus, bus
        if old is not None:
            old.terminate()

    def _bus_lost(self, connection: object) -> None:
        if connection is self._bus:
            self._trouble.set()

    async def _migrate(self) -> None:
        assert self._pool is not None
        async with self._pool.acquire() as db:
            if db.get_server_version().major < MIN_SERVER:
                raise StoreError(f"PostgreSQL {db.get_server_version().major} is too old; da needs "
                                 f"{MIN_SERVER} or newer (for pg_current_snapshot).")
            await db.execute(*self._bind("migration_lock", {"key": MIGRATION_LOCK}))
            try:
                await db.execute(STATEMENTS["create_schema_table"])
                version = reached = await db.fetchval(STATEMENTS["schema_version"])
                for number, script in STATEMENTS.migrations():
                    if number > version:
                        logger.debug("migrating queue database %s to schema %d", redact_url(self.url), number)
                        async with db.transaction():
                            await db.execute(script)
                            await db.execute(*self._bind("set_schema_version", {"version": number}))
                        reached = number
                if reached != version:
                    logger.info(migrated(redact_url(self.url), version, reached))
            finally:
                await db.execute(*self._bind("migration_unlock", {"key": MIGRATION_LOCK}))

    @staticmethod
    def _bind(name: str, params: dict[str, Any]) -> tuple[Any, ...]:
        sql, names = COMPILED[name]
        return (sql, *(params[key] for key in names))

    def _require(self) -> asyncpg.Pool:
        if self._pool is None:
            raise StoreError("the queue database is not open.")
        if not self.available:
            raise DatabaseUnavailable(f"the queue database at {redact_url(self.url)} is not answering ({self._why}); "
                                      "this request changed nothing, try again shortly.")
        return self._pool

    def _failed(self, exc: BaseException) -> StoreError:
        """The queue's error for a driver error; one that means no primary answers starts an outage."""
        error = translate(exc, self.url)
        if isinstance(error, DatabaseUnavailable):
            self._lost(describe(exc))
        return error

    async def fetch(self, name: str, params: dict[str, Any]) -> list[asyncpg.Record]:
        """One statement in its own transaction; returns after it committed."""
        pool = self._require()
        try:
            return list(await pool.fetch(*self._bind(name, params)))
        except DRIVER_ERRORS as exc:
            raise self._failed(exc) from exc

    async def fetch_together(self, names: list[str], params: dict[str, Any]) -> list[asyncpg.Record]:
        """Several statements in one transaction; returns the rows of the last."""
        pool = self._require()
        try:
            async with pool.acquire() as db, db.transaction():
                rows: list[asyncpg.Record] = []
                for name in names:
                    rows = list(await db.fetch(*self._bind(name, params)))
                return rows
        except DRIVER_ERRORS as exc:
            raise self._failed(exc) from exc

    async def fetch_chain(self, steps: list[tuple[str, dict[str, Any]]]) -> list[list[asyncpg.Record]]:
        """Statements with their own parameters in one transaction, each only if the one before it returned
        rows; the rows of each (empty for those not run)."""
        pool = self._require()
        try:
            async with pool.acquire() as db, db.transaction():
                outcome: list[list[asyncpg.Record]] = []
                for name, params in steps:
                    outcome.append(list(await db.fetch(*self._bind(name, params))) if not outcome or outcome[-1]
                                   else [])
                return outcome
        except DRIVER_ERRORS as exc:
            raise self._failed(exc) from exc

    async def load(self, tables: Sequence[tuple[str, Sequence[str], Iterable[tuple[Any, ...]]]], *,
                   refuse: Callable[[asyncpg.Record], str | None]) -> None:
        """Copy rows into the tables in one transaction, with the transition triggers off (`da migrate`).

        The tables are locked first and `refuse` reads their counts under that lock: a reason it
        returns aborts the copy, so nothing written meanwhile can be overwritten or mixed in.
        """
        pool = self._require()
        try:
            async with pool.acquire() as db, db.transaction():
                await db.execute(STATEMENTS["transfer_lock"])
                reason = refuse(await db.fetchrow(STATEMENTS["transfer_counts"]))
                if reason:
                    raise StoreError(reason)
                await db.execute(STATEMENTS["transfer_quiet"])
                for table, columns, records in tables:
                    await db.copy_records_to_table(table, columns=list(columns), records=records)
                await db.execute(STATEMENTS["transfer_loud"])
                await db.fetch(STATEMENTS["transfer_sequences"])
        except DRIVER_ERRORS as exc:
            raise self._failed(exc) from exc

    # ---- outages -------------------------------------------------------------------

    def lost(self, reason: str) -> DatabaseUnavailable:
        """Declare the database unavailable for `reason` (e.g. a write probe that did not commit in time)."""
        self._lost(reason)
        return DatabaseUnavailable(f"the queue database at {redact_url(self.url)} is not answering ({reason}); "
                                   "try again shortly.")

    def _lost(self, reason: str) -> None:
        if not self.available:
            return
        self.available = False
        self._why = reason
        self._down_since = asyncio.get_running_loop().time()
        logger.warning("lost the queue database %s (%s); answering 503 until a primary answers",
                       redact_url(self.url), reason)
        self._trouble.set()
        self._on_availability(False)

    async def _supervise(self) -> None:
        """Whenever the database was lost or the bus broke: find a primary (with backoff) and come back."""
        loop = asyncio.get_running_loop()
        while True:
            await self._trouble.wait()
            self._trouble.clear()
            pause = RECONNECT_FIRST
            while True:
                try:
                    await within(RECOVERY_TIMEOUT, self._reconnect())
                    break
                except TimeoutError:
                    if self.available:
                        self.lost(f"no primary answered within {RECOVERY_TIMEOUT:g} s")
                except (*DRIVER_ERRORS, StoreError) as exc:
                    if self.available:
                        # The bus broke and no new connection can be made: the database is gone too.
                        self._failed(exc)
                    logger.debug("no primary yet (%s); next try in %.1f s", exc, pause)
                await asyncio.sleep(pause)
                pause = min(pause * 2, RECONNECT_MAX)
            if not self.available:
                self.available = True
                logger.warning("the queue database %s answers again after %.1f s without a primary",
                               redact_url(self.url), loop.time() - self._down_since)
                self._on_availability(True)

    async def _reconnect(self) -> None:
        """Prove a primary takes writes on a fresh connection, then renew the pool and the bus."""
        assert self._pool is not None
        if not self.available:
            # Idle connections may point at the host that died; replace them all on their next use.
            await self._pool.expire_connections()
            await self._pool.execute(*self._bind("probe", {"writer": self._replica, "now": time.time()}))
        if self._bus is None or self._bus.is_closed():
            await self._open_bus()

    async def write_probe(self, writer: str, now: float, timeout: float) -> None:
        """Commit the probe row within `timeout` seconds; a database that cannot is declared lost."""
        pool = self._require()
        try:
            await within(timeout, pool.execute(*self._bind("probe", {"writer": writer, "now": now})))
        except TimeoutError:
            raise self.lost(f"a write did not commit within {timeout:g} s") from None
        except DRIVER_ERRORS as exc:
            raise self._failed(exc) from exc

    # ---- wake-ups between replicas -------------------------------------------------

    def wake_others(self, kinds: str) -> None:
        """Tell the other replicas what changed; sends coalesce while one is on its way."""
        if self.peers:
            self._outgoing.update(kinds)
            self._has_outgoing.set()

    async def _count_peers(self) -> None:
        while True:
            try:
                rows = await self.fetch("count_replicas", {"bus_name": BUS_NAME})
                self.peers = rows[0]["n"] != 1
            except StoreError:
                self.peers = True
            await asyncio.sleep(PEER_CHECK)

    async def _send_wakeups(self) -> None:
        while True:
            await self._has_outgoing.wait()
            self._has_outgoing.clear()
            kinds, self._outgoing = "".join(sorted(self._outgoing)), set()
            try:
                if self._bus is not None and not self._bus.is_closed():
                    await self._bus.execute(*self._bind("notify", {"channel": CHANNEL,
                                                                   "payload": f"{self._replica} {kinds}"}))
            except DRIVER_ERRORS as exc:
                # Other replicas still re-check every second; a lost wake-up only costs latency.
                logger.warning("could not wake the other replicas: %s", exc)

    def _received(self, connection: object, pid: int, channel: str, payload: object) -> None:
        sender, _, kinds = str(payload).partition(" ")
        if sender == self._replica:
            return
        if HELLO in kinds:
            self.peers = True
        self._on_wake(kinds)


# `da doctor` gives up on a database that does not answer within this many seconds.
PROBE_TIMEOUT = 5.0


async def probe(url: str) -> str:
    """Connect once, without migrating, and say which server and schema answer; StoreError if none."""
    try:
        db = await asyncpg.connect(url, timeout=PROBE_TIMEOUT, command_timeout=PROBE_TIMEOUT,
                                   server_settings=SESSION)
    except DRIVER_ERRORS as exc:
        raise translate(exc, url) from exc
    try:
        version = await db.fetchval(STATEMENTS["server_version"])
        migrated = await db.fetchval(STATEMENTS["schema_table_exists"])
        schema = await db.fetchval(STATEMENTS["schema_version"]) if migrated else 0
    except DRIVER_ERRORS as exc:
        raise translate(exc, url) from exc
    finally:
        await db.close()
    latest = STATEMENTS.latest()
    if schema > latest:
        raise StoreError(f"the database is at schema {schema}, newer than this da knows ({latest}); upgrade da.")
    state = "not migrated yet (the first `da serve` does it)" if schema == 0 else (
        f"schema {schema}" + ("" if schema == latest else f", `da serve` migrates it to {latest}"))
    return f"PostgreSQL {version}, {state}"
