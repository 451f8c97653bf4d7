"""The HTTP face of the queue: parse, call the store, answer JSON.

Domain errors raised anywhere below become `{"error": code, "detail": sentence}` in one
middleware; every route but /health needs the admin secret or a token allowed there (`auth`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import orjson
from aiohttp import web
from aiohttp.typedefs import Middleware

from da import fleet as fleet_module
from da.queue import auth, connections, metrics, models, openapi
from da.queue import store as store_module
from da.queue.continuity import Continuity
from da.queue.errors import (
    BadRequest,
    DatabaseUnavailable,
    NotFound,
    QueueError,
    RequestTimeout,
    StoreError,
    TooLarge,
    Unauthorized,
)
from da.queue.models import ClaimRequest, NewTask, NewToken, Report
from da.queue.roster import SHARE_INTERVAL, Roster
from da.queue.settings import QueueSettings
from da.queue.store import Store
from da.version import __version__

logger = logging.getLogger(__name__)
# One line per transition, structured (task_id, type, status, machine, by) for LOG_FORMAT=json.
transitions = logging.getLogger("da.queue.transitions")

# A waiting claim or event follower re-checks at least this often, for tasks that become
# claimable with no write (a soft preference's overflow grace running out) and for a wake-up
# from another replica that was lost.
RECHECK_INTERVAL = 1.0
# A held heartbeat re-reads its task at least this often, in case the wake-up for a cancel made on
# another replica was lost; normally that wake-up arrives within milliseconds.
CANCEL_RECHECK = 5.0
# A bulk page of the event feed.
EVENTS_PAGE = 500
# Seconds a client is told to wait after a 503 for an unavailable database (a failover takes a few).
RETRY_AFTER = 1
DEFAULT_LIST_LIMIT = 50

SETTINGS = web.AppKey("settings", QueueSettings)
STORE: web.AppKey[Store] = web.AppKey("store")
ROSTER = web.AppKey("roster", Roster)
CLAIM_LATENCY = web.AppKey("claim_latency", metrics.Histogram)
# Set when the service shuts down: parked long-polls (claims, feeds, heartbeats) answer at once.
CLOSING = web.AppKey("closing", asyncio.Event)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def log_transition(task: Any, by: str | None = None) -> None:
    if transitions.isEnabledFor(logging.INFO):
        transitions.info("task %s %s is %s", task.short_id, task.type, task.status,
                         extra={"task_id": task.id, "type": task.type, "status": task.status,
                                "machine": task.assigned_to or task.target_machine, "by": by or task.changed_by})


def json_response(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json")


def error_response(error: QueueError) -> web.Response:
    return json_response({"error": error.code, "detail": error.detail}, status=error.status)


def middleware(gate: auth.Gate) -> Middleware:
    """Admit the request (credential and route, see `auth`) and turn every error into the one JSON shape.

    One middleware rather than two: it runs on every request, and each layer costs a
    coroutine frame on the hot path.
    """

    @web.middleware
    async def handle(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            if request.path == "/health":
                # Public, so it proves nothing about the connection: its next request is watched afresh.
                with gate.guard.deciding(request.protocol):
                    return await handler(request)
            request[auth.PRINCIPAL] = await gate.admit(request, request.app[STORE])
            return await handler(request)
        except DatabaseUnavailable as exc:
            # No primary answers: say so at once. The store logged the outage once, not per request.
            response = error_response(exc)
            response.headers["Retry-After"] = str(RETRY_AFTER)
            return response
        except QueueError as exc:
            if exc.status >= 500:
                logger.error("%s %s failed: %s", request.method, request.path, exc.detail)
            return error_response(exc)
        except web.HTTPRequestEntityTooLarge:
            limit = request.app[SETTINGS].max_body
            return error_response(TooLarge(f"the request body is larger than {limit} bytes; send less."))
        except web.HTTPException as exc:
            if exc.status == 404:
                return error_response(NotFound(f"no route {request.path}; see /openapi.json."))
            code = exc.reason.lower().replace(" ", "_")
            response = json_response({"error": code, "detail": f"{exc.reason} for {request.method} {request.path}."},
                                     status=exc.status)
            if "Allow" in exc.headers:
                response.headers["Allow"] = exc.headers["Allow"]
            return response
        except Exception:
            logger.exception("%s %s crashed", request.method, request.path)
            return json_response({"error": "internal", "detail": "the queue hit an internal error; see its log."},
                                 status=500)

    return handle


async def read_json(request: web.Request) -> Any:
    """The body as JSON, or one sentence saying what is wrong with it (also when it arrives too slowly)."""
    limit = request.app[SETTINGS].body_timeout
    try:
        async with asyncio.timeout(limit):
            raw = await request.read()
    except TimeoutError:
        logger.warning("%s %s from %s: the body did not arrive within %g s (slow client)", request.method,
                       request.path, request.remote, limit)
        raise RequestTimeout(f"the request body did not arrive within {limit:g} s; send it all at once.") from None
    if not raw:
        return {}
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        raise BadRequest("the request body is not UTF-8 text; send JSON.") from None
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        if "depth" in str(exc) or "recursion" in str(exc):
            raise BadRequest("the request body nests too deeply; flatten it.") from None
        raise BadRequest(f"the request body is not valid JSON ({exc.msg} at position {exc.pos}).") from None


def only_query(request: web.Request, *allowed: str) -> None:
    """Refuse query parameters the route does not take, naming the first."""
    unknown = sorted(set(request.query) - set(allowed))
    if unknown:
        known = ", ".join(allowed) or "none"
        raise BadRequest(f"unknown query parameter {unknown[0][:40]!r}; this route takes {known}.")


def query_int(request: web.Request, key: str, default: int | None, low: int, high: int) -> int | None:
    raw = request.query.get(key)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise BadRequest(f"query parameter {key!r} must be a whole number, got {raw[:40]!r}.") from None
    if not low <= value <= high:
        raise BadRequest(f"query parameter {key!r} must be between {low} and {high}, got {value}.")
    return value


def query_wait(request: web.Request) -> float:
    raw = request.query.get("wait", "0")
    try:
        wait = float(raw)
    except ValueError:
        raise BadRequest(f"query parameter 'wait' must be a number of seconds, got {raw[:40]!r}.") from None
    if not 0 <= wait <= models.MAX_WAIT:
        raise BadRequest(f"query parameter 'wait' must be between 0 and {models.MAX_WAIT:g} seconds.")
    return wait


async def wait_for_signal(waiter: asyncio.Future[None], timeout: float) -> None:
    """Sleep until the signal fires or the timeout passes, without cancelling the shared future."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(asyncio.shield(waiter), timeout)


# ---- routes ---------------------------------------------------------------------------


async def health(request: web.Request) -> web.Response:
    """ok only when the database commits a write in time, so a load balancer can take a replica out."""
    only_query(request)
    store = request.app[STORE]
    body = {"status": "ok", "version": __version__, "backend": store.backend}
    try:
        await store.check_writable()
    except StoreError as exc:
        body.update(status="unavailable", error=exc.code, detail=exc.detail)
        return json_response(body, status=503)
    return json_response(body)


async def create_task(request: web.Request) -> web.Response:
    spec = NewTask.parse(await read_json(request))
    task = await request.app[STORE].create(spec)
    log_transition(task)
    return json_response(task.to_json(), status=201)


async def list_tasks(request: web.Request) -> web.Response:
    only_query(request, "status", "machine", "type", "limit", "before")
    statuses = tuple(s for s in request.query.get("status", "").split(",") if s)
    for status in statuses:
        if status not in models.STATUSES:
            raise BadRequest(f"unknown status {status[:40]!r}; use one of {', '.join(models.STATUSES)}.")
    task_type = request.query.get("type") or None
    machine = request.query.get("machine") or None
    for key, value in (("type", task_type), ("machine", machine)):
        if value is not None and (len(value) > models.MAX_NAME or not models.NAME_PATTERN.match(value)):
            raise BadRequest(f"query parameter {key!r} is not a valid name.")
    limit = query_int(request, "limit", DEFAULT_LIST_LIMIT, 1, models.MAX_LIMIT) or DEFAULT_LIST_LIMIT
    before = query_int(request, "before", None, 1, 2**62)
    tasks, cursor = await request.app[STORE].list_tasks(statuses=statuses, task_type=task_type, machine=machine,
                                                        before=before, limit=limit)
    return json_response({"tasks": [t.to_json() for t in tasks], "next": cursor})


async def get_task(request: web.Request) -> web.Response:
    only_query(request)
    store = request.app[STORE]
    task = await store.get(request.match_info["id"])
    body = task.to_json()
    body["events"] = [event.to_json() for event in await store.events(task.id)]
    return json_response(body)


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
            if token_id is None or not await store.token_revoked(token_id):
                roster.seen(spec.machine)  # a token revoked while it waited does not keep its machine online
            return web.Response(status=204)
        await wait_for_signal(waiter, min(remaining, RECHECK_INTERVAL))
        parked = True
        if disconnected(request):
            return web.Response(status=204)


def disconnected(request: web.Request) -> bool:
    """The client went away, or the service is shutting down: a waiting answer ends now."""
    transport = request.transport
    return transport is None or transport.is_closing() or request.app[CLOSING].is_set()


async def closing(app: web.Application) -> None:
    """on_shutdown: wake every parked long-poll so it answers before the server waits for handlers."""
    app[CLOSING].set()
    store = app[STORE]
    for signal in (store.pending_changed, store.events_appended, store.task_cancelled):
        signal.notify()


def only_machine(request: web.Request) -> str | None:
    """The machine a worker token limits this request to (None: the admin may act on any task)."""
    return request[auth.PRINCIPAL].only_machine


def lease_of(body: Any, *also: str) -> str:
    body = models.require_object(body)
    models.reject_unknown(body, ("lease", *also))
    return models.get_str(body, "lease", required=True) or ""


async def start_task(request: web.Request) -> web.Response:
    body = await read_json(request)
    lease = lease_of(body, "checkout")
    checkout = models.get_str(body, "checkout", max_len=models.MAX_PATH)
    task = await request.app[STORE].start(request.match_info["id"], lease, checkout=checkout,
                                          machine=only_machine(request))
    log_transition(task)
    return json_response(task.to_json())


async def release(request: web.Request) -> web.Response:
    """A worker hands back a claim it will not start (it is shutting down)."""
    body = await read_json(request)
    task = await request.app[STORE].release(request.match_info["id"], lease_of(body),
                                            machine=only_machine(request))
    log_transition(task)
    return json_response(task.to_json())


async def heartbeat(request: web.Request) -> web.Response:
    """Extend the lease, then hold the answer up to `wait` seconds, answering at once if the task is cancelled:
    a worker keeps one heartbeat in flight per task and so learns of a cancel within milliseconds."""
    body = models.require_object(await read_json(request))
    lease = lease_of(body, "progress", "extend", "wait")
    progress = models.get_str(body, "progress", max_len=models.MAX_NOTES)
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


async def report(request: web.Request) -> web.Response:
    spec = Report.parse(await read_json(request))
    task = await request.app[STORE].report(request.match_info["id"], spec, machine=only_machine(request))
    log_transition(task)
    return json_response(task.to_json())


def resolution(body: Any, *also: str) -> tuple[str, str | None, str | None]:
    body = models.require_object(body)
    models.reject_unknown(body, ("status", "by", "notes", *also))
    status = models.get_status(body, "status", models.RESOLVE_TO) or ""
    return status, models.get_str(body, "by"), models.get_str(body, "notes", max_len=models.MAX_NOTES)


async def resolve(request: web.Request) -> web.Response:
    status, by, notes = resolution(await read_json(request))
    task = await request.app[STORE].resolve(request.match_info["id"], status, by=by, notes=notes)
    log_transition(task, by)
    return json_response(task.to_json())


async def resolve_many(request: web.Request) -> web.Response:
    body = models.require_object(await read_json(request))
    from_status = models.get_status(body, "from_status", models.RESOLVABLE_FROM) or ""
    status, by, notes = resolution(body, "from_status", "dry_run")
    dry_run = body.get("dry_run")
    dry_run = False if dry_run is None else dry_run
    if not isinstance(dry_run, bool):
        raise BadRequest("field 'dry_run' must be true or false.")
    store = request.app[STORE]
    if dry_run:
        return json_response({"count": await store.count(from_status), "ids": [], "dry_run": True})
    ids = await store.resolve_many(from_status, status, by=by, notes=notes)
    return json_response({"count": len(ids), "ids": ids, "dry_run": False})


async def cancel(request: web.Request) -> web.Response:
    body = models.require_object(await read_json(request))
    models.reject_unknown(body, ("by", "notes"))
    by = models.get_str(body, "by")
    notes = models.get_str(body, "notes", max_len=models.MAX_NOTES)
    task = await request.app[STORE].cancel(request.match_info["id"], by=by, notes=notes)
    log_transition(task, by)
    return json_response(task.to_json())


async def prune(request: web.Request) -> web.Response:
    """Remove finished tasks older than `older_than` seconds, keeping per-machine counts."""
    body = models.require_object(await read_json(request))
    models.reject_unknown(body, ("older_than",))
    older_than = models.get_number(body, "older_than", 30 * 86400.0, 0.0, 100 * 365 * 86400.0)
    removed = await request.app[STORE].prune(older_than)
    logger.info("pruned %d finished task(s) older than %.0f s", removed, older_than)
    return json_response({"removed": removed})


async def machines(request: web.Request) -> web.Response:
    only_query(request)
    store = request.app[STORE]
    counts = await store.machine_counts()
    return json_response({"machines": request.app[ROSTER].snapshot(counts, await store.sightings())})


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
        await wait_for_signal(waiter, min(remaining, RECHECK_INTERVAL))
        parked = True


async def named_lease(request: web.Request) -> web.Response:
    """POST takes or renews a named lease for `holder` (409 while another holds it); DELETE
    lets go of it (`?holder=`). A process that must run once per fleet (the Slack bot of a
    workspace) holds one, so a second copy on any machine stands by instead of running twice."""
    store, name = request.app[STORE], request.match_info["name"]
    if not models.LEASE_NAME_PATTERN.match(name) or len(name) > models.MAX_NAME:
        raise BadRequest(f"lease name {name[:40]!r} may hold only letters, digits and _.:@~+- (at most "
                         f"{models.MAX_NAME} characters), starting with a letter or digit.")
    if request.method == "DELETE":
        only_query(request, "holder")
        holder = request.query.get("holder", "")
        if not holder:
            raise BadRequest("query parameter 'holder' is required: who is letting go of the lease.")
        released = await store.release_lease(name, holder)
        return json_response({"name": name, "released": released})
    only_query(request)
    body = models.require_object(await read_json(request))
    models.reject_unknown(body, ("holder", "ttl", "data"))
    holder = models.get_str(body, "holder", required=True, max_len=models.MAX_NAME) or ""
    ttl = models.get_number(body, "ttl", 60.0, models.MIN_NAMED_LEASE, models.MAX_NAMED_LEASE)
    data = body.get("data")
    if data is not None:
        models.require_object(data, "field 'data'")
        if len(orjson.dumps(data)) > models.MAX_LEASE_DATA:
            raise BadRequest(f"field 'data' is larger than {models.MAX_LEASE_DATA} bytes as JSON.")
    return json_response((await store.acquire_lease(name, holder, ttl, data)).to_json())


async def metrics_page(request: web.Request) -> web.Response:
    only_query(request)
    store = request.app[STORE]
    counts = await store.status_counts()
    online = request.app[ROSTER].online(await store.sightings())
    text = metrics.render(counts, len(online), request.app[CLAIM_LATENCY], backend=store.backend)
    return web.Response(text=text, content_type="text/plain", charset="utf-8")


# ---- scoped tokens (the admin's) ----------------------------------------------------------


async def whoami(request: web.Request) -> web.Response:
    """What the credential of this request is and may do (`da doctor` checks it); a worker token also gets its
    machine's entry in this host's fleet file, so a worker without one of its own runs what is declared here."""
    only_query(request)
    principal = request[auth.PRINCIPAL]
    body: dict[str, Any] = principal.to_json()
    machine = request.app[ROSTER].fleet.find(principal.only_machine) if principal.only_machine else None
    body["declared"] = machine.to_json() if machine else None
    return json_response(body)


async def list_tokens(request: web.Request) -> web.Response:
    only_query(request)
    return json_response({"tokens": [token.to_json() for token in await request.app[STORE].tokens()]})


async def create_token(request: web.Request) -> web.Response:
    """A new token; its secret is in this answer and nowhere else, ever."""
    spec = NewToken.parse(await read_json(request))
    secret, digest, token_id = auth.mint(spec.kind)
    token = await request.app[STORE].add_token(spec, token_id=token_id, digest=digest)
    logger.info("created %s token %s (%s)", token.kind, token.id, token.name)
    return json_response({**token.to_json(), "token": secret}, status=201)


async def revoke_token(request: web.Request) -> web.Response:
    only_query(request)
    token = await request.app[STORE].revoke_token(request.match_info["id"].lower())
    logger.info("revoked %s token %s (%s)", token.kind, token.id, token.name)
    if token.machine:
        request.app[ROSTER].forget(token.machine)  # its worker is refused from now on: not online either
    return json_response(token.to_json())


async def openapi_document(request: web.Request) -> web.Response:
    only_query(request)
    return json_response(openapi.document(__version__))


ROUTES = [
    web.get("/health", health),
    web.post("/v1/tasks", create_task),
    web.get("/v1/tasks", list_tasks),
    web.post("/v1/tasks/resolve", resolve_many),
    web.get("/v1/tasks/{id:[0-9a-fA-F-]+}", get_task),
    web.post("/v1/tasks/{id:[0-9a-fA-F-]+}/start", start_task),
    web.post("/v1/tasks/{id:[0-9a-fA-F-]+}/release", release),
    web.post("/v1/tasks/{id:[0-9a-fA-F-]+}/heartbeat", heartbeat),
    web.post("/v1/tasks/{id:[0-9a-fA-F-]+}/report", report),
    web.post("/v1/tasks/{id:[0-9a-fA-F-]+}/resolve", resolve),
    web.post("/v1/tasks/{id:[0-9a-fA-F-]+}/cancel", cancel),
    web.post("/v1/claim", claim),
    web.post("/v1/prune", prune),
    web.get("/v1/machines", machines),
    web.get("/v1/events", events),
    web.post("/v1/leases/{name}", named_lease),
    web.delete("/v1/leases/{name}", named_lease),
    web.get("/metrics", metrics_page),
    web.get("/openapi.json", openapi_document),
    web.get("/v1/whoami", whoami),
    web.get("/v1/tokens", list_tokens),
    web.post("/v1/tokens", create_token),
    web.post("/v1/tokens/{id:[0-9a-fA-F]+}/revoke", revoke_token),
]


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


def bind(host: str, port: int) -> list[socket.socket]:
    """Listening sockets for host:port (every address it names, as aiohttp's own site would), taken
    before the app starts: a port that is in use fails here, before the store has opened the
    database or renewed a lease. Pass them to `web.run_app(sock=...)` or `web.SockSite`."""
    sockets: list[socket.socket] = []
    try:
        for family, kind, proto, _, address in dict.fromkeys(
                socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)):
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(address)
            # Listening at once holds the port; connections that arrive before the app is ready wait.
            sock.listen(socket.SOMAXCONN)
    except OSError:
        for sock in sockets:
            sock.close()
        raise
    return sockets


def make_app(settings: QueueSettings, fleet: fleet_module.Fleet | None = None) -> web.Application:
    """Build the queue service; the store opens and the reaper starts with the app."""
    if not settings.secret:
        raise ValueError("the queue service needs a secret")
    guard = connections.ConnectionGuard(header_timeout=settings.header_timeout,
                                        max_unauthenticated=settings.max_unauthenticated)
    app = web.Application(middlewares=[middleware(auth.Gate(settings.secret, lease=settings.lease, guard=guard))],
                          client_max_size=settings.max_body)
    app[SETTINGS] = settings
    app[ROSTER] = Roster(fleet or fleet_module.Fleet())
    app[CLAIM_LATENCY] = metrics.Histogram("da_claim_seconds", "Time to run one claim statement.")
    app[STORE] = store_module.create_store(settings)
    app[connections.GUARD] = guard
    app[CLOSING] = asyncio.Event()
    app.on_shutdown.append(closing)
    app.add_routes(ROUTES)

    async def store_ctx(app: web.Application) -> AsyncIterator[None]:
        store = app[STORE]
        await store.open()
        extended = await store.extend_leases(settings.lease)
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

    app.cleanup_ctx.append(store_ctx)
    app.cleanup_ctx.append(connections.watching)
    return app
