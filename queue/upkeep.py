"""What the queue does on its own while it serves: settle expired leases and asks nobody answered in
time, give back time it could not watch, and share machine liveness with other replicas.

`running` is the app's cleanup context for all of it: it opens the store, renews the leases of tasks
that ran while the service was down, starts the chores, and stops them and the store in turn.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from aiohttp import web

from da.queue.continuity import Continuity
from da.queue.errors import DatabaseUnavailable, QueueError
from da.queue.http import ROSTER, SETTINGS, STORE
from da.queue.roster import SHARE_INTERVAL
from da.queue.store import Store

logger = logging.getLogger(__name__)


async def running(app: web.Application) -> AsyncIterator[None]:
    """Open the store and run the chores for as long as the app runs."""
    store = app[STORE]
    await store.open()
    extended = await store.extend_leases(app[SETTINGS].lease)
    if extended:
        logger.info("gave %d running task(s) a fresh lease after the restart", extended)
    chores = [asyncio.create_task(reaper(app)), asyncio.create_task(share_liveness(app))]
    yield
    for chore in chores:
        chore.cancel()
    for chore in chores:
        with contextlib.suppress(asyncio.CancelledError):
            await chore
    with contextlib.suppress(QueueError):
        await app[ROSTER].share(store)
    await store.close()


async def reaper(app: web.Application) -> None:
    """Settle expired leases every `reap_interval` seconds for as long as the app runs.

    Time the service did not watch (a stall, a clock step, a database outage; see `continuity`)
    is given back to running leases first, so a pause never reads as every worker lost.
    """
    store, interval = app[STORE], app[SETTINGS].reap_interval
    watch = Continuity(interval, clock=store.clock)
    while True:
        mark = watch.mark()
        try:
            if await give_back_unwatched_time(store, watch):
                watch.settled(mark)
            for task in await store.reap():
                logger.warning("task %s (%s) lost its worker: now %s", task.short_id, task.type, task.status,
                               extra={"task_id": task.id, "type": task.type, "status": task.status, "by": "reaper"})
            for ask in await store.expire_asks():
                logger.info("task %s ask %d expired unanswered (a reject)", ask.task_id[:8], ask.id,
                            extra={"task_id": ask.task_id})
            watch.settled(mark)
        except DatabaseUnavailable:
            pass  # the store logged the outage; the gap it leaves is given back once it ends
        except QueueError as exc:
            logger.error("reaper: %s", exc.detail)
        except Exception:
            # A reaper that stopped would leave lost tasks claimed for ever: log and go on.
            logger.exception("reaper: unexpected error; trying again in %g s", interval)
        await asyncio.sleep(interval)


async def give_back_unwatched_time(store: Store, watch: Continuity) -> bool:
    """Add the time this replica did not watch to every running lease (less what another replica
    watched); False when there was nothing to give back."""
    seconds = watch.unwatched()
    if seconds <= 0:
        return False
    shifted = await store.shift_leases(seconds, period=watch.period, tolerance=watch.tolerance)
    if shifted:
        logger.warning("the queue could not watch leases for %.1f s (paused, clock stepped or database unavailable); "
                       "gave %d running task(s) that time back (less any another replica watched)", seconds, shifted)
    else:
        logger.info("this replica did not watch leases for %.1f s; another one did, or no task was running", seconds)
    return True


async def share_liveness(app: web.Application) -> None:
    """Hand the store the machines this replica saw, every `SHARE_INTERVAL` seconds."""
    store, roster = app[STORE], app[ROSTER]
    while True:
        await asyncio.sleep(SHARE_INTERVAL)
        try:
            await roster.share(store)
        except DatabaseUnavailable:
            pass  # the store logged the outage
        except QueueError as exc:
            logger.error("sharing machine liveness: %s", exc.detail)
