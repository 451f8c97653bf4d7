"""The three routes that wait: a claim, a held heartbeat and the event feed long-poll.

Each takes its store signal's waiter before it looks, so a change committed between the look and the
wait still wakes it, and re-checks on a timer for what no write announces (a soft preference's grace
running out, a wake-up from another replica that was lost). While the database is unavailable a
waiting long-poll ends empty instead of hanging on.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from aiohttp import web

from da.queue import auth, models
from da.queue.errors import BadRequest, DatabaseUnavailable, Unauthorized
from da.queue.http import (
    CLAIM_LATENCY,
    ROSTER,
    SETTINGS,
    STORE,
    ask_number,
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
from da.queue.signals import wait_for_any
from da.queue.store import Claim, Store

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
            handed = await hand_over(request, claimed, lease_seconds)
            return web.Response(status=204) if handed is None else json_response(handed)
        remaining = deadline - loop.time()
        if remaining <= 0 or disconnected(request):
            if token_id is None or not await store.token_revoked(token_id):
                roster.seen(spec.machine)  # a token revoked while it waited does not keep its machine online
            return web.Response(status=204)
        await store.pending_changed.wait(waiter, min(remaining, RECHECK_INTERVAL))
        parked = True
        if disconnected(request):
            return web.Response(status=204)


async def hand_over(request: web.Request, claimed: Claim, lease_seconds: float) -> dict[str, Any] | None:
    """A claim's answer (task, lease and its seconds); None, with the task handed back, when the worker hung up."""
    if disconnected(request):
        # The worker gave up waiting (shutdown, restart): nobody would run this task.
        await request.app[STORE].release(claimed.task.id, claimed.lease)
        return None
    log_transition(claimed.task)
    # Seconds left, not only a timestamp: a worker must not compare our clock with its own.
    return {"task": claimed.task.to_json(), "lease": claimed.lease,
            "lease_expires_at": models.iso(claimed.lease_expires_at), "lease_seconds": lease_seconds}


async def heartbeat(request: web.Request) -> web.Response:
    """Extend the lease, then hold the answer up to `wait` seconds, answering at once if the task is cancelled:
    a worker keeps one heartbeat in flight per task and so learns of a cancel within milliseconds."""
    body = models.require_object(await read_json(request))
    lease = lease_of(body, "progress", "extend", "wait", "messages")
    takes_messages = body.get("messages")
    if takes_messages is not None and not isinstance(takes_messages, bool):
        raise BadRequest("field 'messages' must be true or false.")
    progress = models.get_str(body, "progress", max_len=models.MAX_NOTES, text=True)
    extend = body.get("extend")
    extend = request.app[SETTINGS].lease if extend is None else models.get_number(
        body, "extend", 60.0, models.MIN_LEASE, models.MAX_LEASE)
    wait = models.get_number(body, "wait", 0.0, 0.0, models.MAX_WAIT)
    store = request.app[STORE]
    began = asyncio.get_running_loop().time()
    # Taken before the lease is extended, so no cancel committed after the extension is missed.
    waiter = store.task_cancelled.waiter()
    messaged = store.message_queued.waiter() if takes_messages else None
    task, cancel = await store.heartbeat(request.match_info["id"], lease, lease_seconds=extend, progress=progress,
                                         machine=only_machine(request))
    if task.assigned_to:
        request.app[ROSTER].seen(task.assigned_to)
    left = extend
    messages = await store.take_messages(task.id, lease) if takes_messages and not cancel else []
    if wait and not cancel and not messages:
        cancel, messages = await cancel_within(request, store, task.id, lease, waiter, began + wait, messaged)
        left = max(0.0, extend - (asyncio.get_running_loop().time() - began))
    answer = {"cancel": cancel, "status": models.CANCELLED if cancel else task.status,
              "lease_expires_at": models.iso(task.lease_expires_at), "lease_seconds": left}
    if takes_messages:
        answer["messages"] = [message.to_json() for message in messages]
    return json_response(answer)


async def cancel_within(request: web.Request, store: Store, task_id: str, lease: str,
                        waiter: asyncio.Future[None], deadline: float,
                        messaged: asyncio.Future[None] | None = None) -> tuple[bool, list[models.Message]]:
    """Whether the task is cancelled before `deadline` (loop time), and the steering messages queued for it
    by then when the worker takes them (`messaged` is their signal's waiter): the first of the two ends the
    wait. Re-reads the task whenever a cancel or a message anywhere wakes the store, and every
    CANCEL_RECHECK seconds in case a wake-up from another replica was lost."""
    loop = asyncio.get_running_loop()
    while True:
        remaining = deadline - loop.time()
        if remaining <= 0 or disconnected(request):
            return False, []
        await store.task_cancelled.wait(waiter, min(remaining, CANCEL_RECHECK), messaged)
        woken = waiter.done() or (messaged is not None and messaged.done())
        if not woken and loop.time() >= deadline:
            return False, []
        waiter = store.task_cancelled.waiter()
        if await store.cancel_requested(task_id, lease):
            return True, []
        if messaged is not None:
            messaged = store.message_queued.waiter()
            if messages := await store.take_messages(task_id, lease):
                return False, messages


async def wait_answer(request: web.Request) -> web.Response:
    """A worker waits for a person's answer to its ask: answered at once when the ask is answered or
    expires, or when the task is cancelled; else when `wait` ends with the ask still open."""
    body = models.require_object(await read_json(request))
    lease = lease_of(body, "wait")
    wait = models.get_number(body, "wait", 0.0, 0.0, models.MAX_WAIT)
    store, machine, number = request.app[STORE], only_machine(request), ask_number(request)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait
    while True:
        settled, cancelled = store.asks_settled.waiter(), store.task_cancelled.waiter()
        task = await store.held(request.match_info["id"], lease, machine)
        ask = await store.ask(task.id, number)
        remaining = deadline - loop.time()
        if ask.status != models.ASK_OPEN or task.status not in models.ACTIVE or remaining <= 0 or disconnected(
                request):
            return json_response({"ask": ask.to_json(), "cancel": task.status == models.CANCELLED,
                                  "status": task.status})
        await wait_for_any([settled, cancelled], min(remaining, CANCEL_RECHECK))


async def follow_progress(request: web.Request) -> web.Response:
    """A task's progress record, asks and status once its progress revision passes `after` or it changes
    status, waiting up to `wait` seconds (`da watch`, the bot)."""
    only_query(request, "after", "wait", "status")
    store = request.app[STORE]
    after = query_int(request, "after", -1, -1, 2**62)
    wait = query_wait(request)
    seen = request.query.get("status")
    if seen is not None and seen not in models.STATUSES:
        raise BadRequest(f"unknown status {seen[:40]!r}; use one of {', '.join(models.STATUSES)}.")
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait
    first: str | None = seen
    first_asks: list[tuple[int, str]] | None = None
    while True:
        saved, appended = store.progress_saved.waiter(), store.events_appended.waiter()
        task = await store.get(request.match_info["id"])
        first = first or task.status
        # While the task waits, an ask opened, answered or expired beside another open one changes no status:
        # its asks are news too. In any other status only the task row is read until there is news.
        asks = await store.asks(task.id) if task.status == models.WAITING else None
        states = [(ask.id, ask.status) for ask in asks] if asks is not None else None
        first_asks = states if first_asks is None else first_asks
        remaining = deadline - loop.time()
        if task.progress_rev > (after if after is not None else -1) or task.status != first or \
                states != first_asks or remaining <= 0:
            asks = asks if asks is not None else await store.asks(task.id)
            return json_response({"id": task.id, "short_id": task.short_id, "status": task.status,
                                  "progress_rev": task.progress_rev, "progress_record": task.progress_record,
                                  "progress": task.progress, "usage": task.usage,
                                  "asks": [ask.to_json() for ask in asks]})
        await store.progress_saved.wait(saved, min(remaining, RECHECK_INTERVAL), appended)


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
        if found or remaining <= 0 or disconnected(request):
            last = found[-1].id if found else after
            return json_response({"events": [event.to_json() for event in found], "last": last})
        await store.events_appended.wait(waiter, min(remaining, RECHECK_INTERVAL))
        parked = True
