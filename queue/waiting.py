"""The three routes that wait: a claim, a held heartbeat and the event feed long-poll.

Each takes its store signal's waiter before it looks, so a change committed between the look and the
wait still wakes it, and re-checks on a timer for what no write announces (a soft preference's grace
running out, a wake-up from another replica that was lost). While the database is unavailable a
waiting long-poll ends empty instead of hanging on.
"""

from __future__ import annotations

import asyncio
import time

from aiohttp import web

from da.queue import auth, models
from da.queue.errors import DatabaseUnavailable, Unauthorized
from da.queue.http import (
    CLAIM_LATENCY,
    ROSTER,
    SETTINGS,
    STORE,
    disconnected,
    json_response,
    lease_of,
    log_transition,
    only_machine,
    only_query,
    query_int,
    query_wait,
    read_json,
)
from da.queue.models import ClaimRequest
from da.queue.signals import wait_for_signal
from da.queue.store import Store

# A waiting claim or event follower re-checks at least this often, for tasks that become
# claimable with no write (a soft preference's overflow grace running out) and for a wake-up
# from another replica that was lost.
RECHECK_INTERVAL = 1.0
# A held heartbeat re-reads its task at least this often, in case the wake-up for a cancel made on
# another replica was lost; normally that wake-up arrives within milliseconds.
CANCEL_RECHECK = 5.0
# A bulk page of the event feed.
EVENTS_PAGE = 500


async def claim(request: web.Request) -> web.Response:
    """Long-poll for a task: answer at once if one is claimable, else wait until one is or `wait` ends."""
    spec = ClaimRequest.parse(await read_json(request))
    auth.check_claim(request[auth.PRINCIPAL], spec)
    settings, store, roster = request.app[SETTINGS], request.app[STORE], request.app[ROSTER]
    roster.seen(spec.machine, spec.capabilities, spec.agents)
    lease_seconds = spec.lease or settings.lease
    loop = asyncio.get_running_loop()
    deadline = loop.time() + spec.wait
    parked = False
    token_id = request[auth.PRINCIPAL].token_id
    while True:
        waiter = store.pending_changed.waiter()
        started = time.perf_counter()
        try:
            claimed = await store.claim(spec, lease_seconds=lease_seconds, overflow_grace=settings.overflow_grace)
        except DatabaseUnavailable:
            if parked:
                return web.Response(status=204)  # a waiting long-poll ends empty rather than hang on
            raise
        request.app[CLAIM_LATENCY].observe(time.perf_counter() - started)
        if claimed is not None:
            if token_id is not None and await store.token_revoked(token_id):
                # Revoked while this claim waited: the token may take nothing more.
                await store.release(claimed.task.id, claimed.lease)
                raise Unauthorized("this token was revoked while its claim was under way; ask for a new one "
                                   "(`da token create`).")
            if disconnected(request):
                # The worker gave up waiting (shutdown, restart): nobody would run this task.
                await store.release(claimed.task.id, claimed.lease)
                return web.Response(status=204)
            log_transition(claimed.task)
            # Seconds left, not only a timestamp: a worker must not compare our clock with its own.
            return json_response({"task": claimed.task.to_json(), "lease": claimed.lease,
                                  "lease_expires_at": models.iso(claimed.lease_expires_at),
                                  "lease_seconds": lease_seconds})
        remaining = deadline - loop.time()
        if remaining <= 0 or disconnected(request):
            roster.seen(spec.machine)
            return web.Response(status=204)
        await wait_for_signal(waiter, min(remaining, RECHECK_INTERVAL))
        parked = True
        if disconnected(request):
            return web.Response(status=204)


async def heartbeat(request: web.Request) -> web.Response:
    """Extend the lease, then hold the answer up to `wait` seconds, answering at once if the task is cancelled:
    a worker keeps one heartbeat in flight per task and so learns of a cancel within milliseconds."""
    body = models.require_object(await read_json(request))
    lease = lease_of(body, "progress", "extend", "wait")
    progress = models.get_str(body, "progress", max_len=models.MAX_NOTES, text=True)
    extend = body.get("extend")
    extend = request.app[SETTINGS].lease if extend is None else models.get_number(
        body, "extend", 60.0, models.MIN_LEASE, models.MAX_LEASE)
    wait = models.get_number(body, "wait", 0.0, 0.0, models.MAX_WAIT)
    store = request.app[STORE]
    began = asyncio.get_running_loop().time()
    # Taken before the lease is extended, so no cancel committed after the extension is missed.
    waiter = store.task_cancelled.waiter()
    task, cancel = await store.heartbeat(request.match_info["id"], lease, lease_seconds=extend, progress=progress,
                                         machine=only_machine(request))
    if task.assigned_to:
        request.app[ROSTER].seen(task.assigned_to)
    left = extend
    if wait and not cancel:
        cancel = await cancel_within(request, store, task.id, lease, waiter, began + wait)
        left = max(0.0, extend - (asyncio.get_running_loop().time() - began))
    return json_response({"cancel": cancel, "status": models.CANCELLED if cancel else task.status,
                          "lease_expires_at": models.iso(task.lease_expires_at), "lease_seconds": left})


async def cancel_within(request: web.Request, store: Store, task_id: str, lease: str,
                        waiter: asyncio.Future[None], deadline: float) -> bool:
    """Whether the task is cancelled before `deadline` (loop time); re-reads it whenever a cancel anywhere
    wakes the store, and every CANCEL_RECHECK seconds in case a wake-up from another replica was lost."""
    loop = asyncio.get_running_loop()
    while True:
        remaining = deadline - loop.time()
        if remaining <= 0 or disconnected(request):
            return False
        await wait_for_signal(waiter, min(remaining, CANCEL_RECHECK))
        if not waiter.done() and loop.time() >= deadline:
            return False
        waiter = store.task_cancelled.waiter()
        if await store.cancel_requested(task_id, lease):
            return True


async def events(request: web.Request) -> web.Response:
    """The transition feed after an event id; waits up to `wait` seconds for the next one."""
    only_query(request, "after", "wait", "limit")
    store = request.app[STORE]
    after = query_int(request, "after", 0, -1, 2**62) or 0
    if after == -1:
        # A new follower starts from now rather than replaying the whole history.
        return json_response({"events": [], "last": await store.last_event_id()})
    limit = query_int(request, "limit", EVENTS_PAGE, 1, EVENTS_PAGE) or EVENTS_PAGE
    wait = query_wait(request)
    deadline = asyncio.get_running_loop().time() + wait
    checked_behind = parked = False
    while True:
        waiter = store.events_appended.waiter()
        try:
            found = await store.events_after(after, limit)
        except DatabaseUnavailable:
            if not parked:
                raise
            return json_response({"events": [], "last": after})  # a waiting long-poll ends empty
        if not found and not checked_behind:
            checked_behind = True
            newest = await store.last_event_id()
            if newest < after:
                # The feed went backwards (an older backup was restored): say where it stands, at once,
                # rather than leave the follower waiting for ids it has already seen.
                return json_response({"events": [], "last": newest})
        remaining = deadline - asyncio.get_running_loop().time()
        if found or remaining <= 0:
            last = found[-1].id if found else after
            return json_response({"events": [event.to_json() for event in found], "last": last})
        await wait_for_signal(waiter, min(remaining, RECHECK_INTERVAL))
        parked = True
