"""The shared backend: a PostgreSQL database behind any number of `da serve` replicas.

Everything one replica knows that another must know lives in the database: tasks, leases, locks
(a unique index, see the schema), events and machine liveness. Wake-ups cross replicas with
LISTEN/NOTIFY (`PgDatabase`), so a claim parked on one replica wakes when another creates work.

The event feed. Event ids come from a sequence, and sequence values commit out of order: a
transaction may take id 10, another id 11 and commit first. A follower that read "after 9" at that
moment would get 11, resume after 11 and lose 10 for good. So the feed only hands out ids up to a
*horizon* it has proven final: it reads the highest id handed out so far (V), then the set of
transactions running now (R). Any transaction holding an id up to V took it before that read, so it
is in R or already finished; once every member of R has finished, no id up to V can still appear,
and V is the horizon. Writers pay nothing for this; a reader waits at most for the transactions
that were in flight (milliseconds), and falls back to the last proven horizon if one lingers.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from typing import Any

from da.queue.errors import StoreError
from da.queue.models import Event, Row
from da.queue.pgdatabase import PgDatabase
from da.queue.store import PROBE_TIMEOUT, Sighting, Store, new_token

# How long a feed read waits for in-flight writers before answering from the last proven horizon.
HORIZON_WAIT = 0.25
# A new follower ("start from now") waits longer: answering an unproven id could skip an event.
START_WAIT = 5.0
# Polling for in-flight writers to finish starts fast (they take about a millisecond) and backs off.
FIRST_POLL = 0.0005
MAX_POLL = 0.02
PENDING, EVENTS, CANCELLED = "p", "e", "c"
# An ask answered or expired, a progress record saved, a steering message queued.
SETTLED, PROGRESS, MESSAGE = "a", "r", "m"


class PostgresStore(Store):
    """Tasks and events in a PostgreSQL database shared with other replicas."""

    backend = "postgresql"

    def __init__(self, url: str, *, clock: Callable[[], float] = time.time) -> None:
        super().__init__(clock=clock)
        self._replica = new_token()
        self.db = PgDatabase(url, replica=self._replica, on_wake=self._woken, on_availability=self._availability)
        self._horizon = 0

    async def open(self) -> None:
        await self.db.open()

    async def close(self) -> None:
        await self.db.close()

    async def schema_version(self) -> int:
        return int((await self._fetch("schema_version"))[0]["version"])

    # Lists go to asyncpg as they are: it sends them as arrays, which the statements read with ANY().

    async def _fetch(self, name: str, **params: Any) -> list[Row]:
        return list(await self.db.fetch(name, params))

    async def _write(self, name: str, **params: Any) -> list[Row]:
        return list(await self.db.fetch(name, params))

    async def _write_together(self, names: list[str], **params: Any) -> list[Row]:
        return list(await self.db.fetch_together(names, params))

    async def _write_chain(self, steps: list[tuple[str, dict[str, Any]]]) -> list[list[Row]]:
        return [list(rows) for rows in await self.db.fetch_chain(steps)]

    def _claimable(self, types: Sequence[str], pins: Sequence[str], agents: Sequence[str]) -> dict[str, Any]:
        # Every (type, pin, agent) key of the tasks_claim index the worker may take.
        return {"keys": [f"{kind} {pin} {agent}" for kind in types for pin in pins for agent in agents]}

    def _changed(self, *, pending: bool, cancelled: bool = False, settled: bool = False, progress: bool = False,
                 message: bool = False) -> None:
        super()._changed(pending=pending, cancelled=cancelled, settled=settled, progress=progress, message=message)
        kinds = ((PENDING if pending else "") + ("" if progress and not settled else EVENTS)
                 + (CANCELLED if cancelled else "") + (SETTLED if settled else "") + (PROGRESS if progress else "")
                 + (MESSAGE if message else ""))
        self.db.wake_others(kinds)

    def _woken(self, kinds: str) -> None:
        """Another replica committed a change."""
        if PENDING in kinds:
            self.pending_changed.notify()
        if EVENTS in kinds:
            self.events_appended.notify()
        if CANCELLED in kinds:
            self.task_cancelled.notify()
        if SETTLED in kinds:
            self.asks_settled.notify()
        if PROGRESS in kinds:
            self.progress_saved.notify()
        if MESSAGE in kinds:
            self.message_queued.notify()

    def _availability(self, available: bool) -> None:
        """The database was lost or came back: parked long-polls re-check now (and answer empty while it is down)."""
        # /health answers for the database as it is now, not with a probe from before the change.
        self._probe = None
        self._woken(PENDING + EVENTS)

    async def _probe_once(self) -> None:
        await self.db.write_probe(self._replica, self.clock(), PROBE_TIMEOUT)

    # ---- the event feed ------------------------------------------------------------

    async def _advance_horizon(self, patience: float) -> bool:
        """Move the horizon up to every id handed out so far, if the writers in flight finish within
        `patience` seconds (see the module docstring); False when one did not."""
        handed_out = int((await self._fetch("event_ids_handed_out"))[0]["id"])
        if handed_out <= self._horizon:
            return True
        running = list((await self._fetch("running_writers"))[0]["xids"])
        loop = asyncio.get_running_loop()
        deadline = loop.time() + patience
        pause = FIRST_POLL
        while running:
            if loop.time() >= deadline:
                return False
            await asyncio.sleep(pause)
            pause = min(pause * 2, MAX_POLL)
            running = list((await self._fetch("still_running", xids=running))[0]["xids"])
        self._horizon = max(self._horizon, handed_out)
        return True

    async def events_after(self, after: int, limit: int = 500) -> list[Event]:
        await self._advance_horizon(HORIZON_WAIT)
        if self._horizon <= after:
            return []
        rows = await self._fetch("events_after", after=after, horizon=self._horizon, limit=limit)
        return [Event.from_row(row) for row in rows]

    async def last_event_id(self) -> int:
        if not await self._advance_horizon(START_WAIT) and self._horizon == 0:
            # Answering 0 would replay the whole history to a follower that asked to start from now.
            raise StoreError("a database transaction has been open for seconds, so where the event feed "
                             "stands is not settled yet; try again.")
        return self._horizon

    # ---- machine liveness ----------------------------------------------------------

    async def record_sightings(self, sightings: Sequence[Sighting]) -> None:
        if not sightings:
            return
        await self._write("record_sightings", names=[s.name for s in sightings], seen_at=[s.at for s in sightings],
                          capabilities=[",".join(s.capabilities) for s in sightings],
                          agents=[",".join(s.agents) for s in sightings])

    async def sightings(self) -> list[Sighting]:
        return [Sighting(row["name"], row["seen_at"], tuple(row["capabilities"]), tuple(row["agents"]))
                for row in await self._fetch("sightings")]


    # ---- da migrate ----------------------------------------------------------------

    async def column_types(self, table: str) -> dict[str, str]:
        """Each column of `table` and its type."""
        return {row["name"]: row["type"] for row in await self._fetch("table_columns", table=table)}

    async def census(self) -> tuple[Row, list[Row]]:
        """What a copy must agree on with its source: counts and id sums, and tasks per status."""
        return (await self._fetch("transfer_counts"))[0], await self._fetch("transfer_statuses")


def dump_command(url: str, destination: str) -> list[str]:
    """The pg_dump command that backs up this database while the replicas run."""
    return ["pg_dump", "--format=custom", f"--file={destination}", f"--dbname={url}"]


def restore_command(url: str, backup: str) -> list[str]:
    """The pg_restore command that puts such a backup back (replicas stopped)."""
    return ["pg_restore", "--clean", "--if-exists", "--single-transaction", f"--dbname={url}", backup]
