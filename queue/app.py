"""The HTTP face of the queue: parse, call the store, answer JSON.

Domain errors raised anywhere below become `{"error": code, "detail": sentence}` in one
middleware; every route but /health needs the admin secret or a token allowed there (`auth`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import orjson
from aiohttp import web
from aiohttp.typedefs import Middleware

from da import fleet as fleet_module
from da.queue import auth, connections, metrics, models, openapi
from da.queue import store as store_module
from da.queue.errors import BadRequest, NotFound, QueueError, RequestTimeout, TooLarge
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
# A bulk page of the event feed.
EVENTS_PAGE = 500
DEFAULT_LIST_LIMIT = 50

SETTINGS = web.AppKey("settings", QueueSettings)
STORE: web.AppKey[Store] = web.AppKey("store")
ROSTER = web.AppKey("roster", Roster)
CLAIM_LATENCY = web.AppKey("claim_latency", metrics.Histogram)

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
    only_query(request)
    return json_response({"status": "ok", "version": __version__, "backend": request.app[STORE].backend})


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
    while True:
        waiter = store.pending_changed.waiter()
        started = time.perf_counter()
        claimed = await store.claim(spec, lease_seconds=lease_seconds, overflow_grace=settings.overflow_grace)
        request.app[CLAIM_LATENCY].observe(time.perf_counter() - started)
        if claimed is not None:
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
        if disconnected(request):
            return web.Response(status=204)


def disconnected(request: web.Request) -> bool:
    transport = request.transport
    return transport is None or transport.is_closing()


def only_machine(request: web.Request) -> str | None:
    """The machine a worker token limits this request to (None: the admin may act on any task)."""
    return request[auth.PRINCIPAL].only_machine


def lease_of(body: Any, *also: str) -> str:
    body = models.require_object(body)
    models.reject_unknown(body, ("lease", *also))
    return models.get_str(body, "lease", required=True) or ""


async def start_task(request: web.Request) -> web.Response:
    body = await read_json(request)
    task = await request.app[STORE].start(request.match_info["id"], lease_of(body), machine=only_machine(request))
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
    body = models.require_object(await read_json(request))
    progress = models.get_str(body, "progress", max_len=models.MAX_NOTES)
    extend = body.get("extend")
    extend = request.app[SETTINGS].lease if extend is None else models.get_number(
        body, "extend", 60.0, models.MIN_LEASE, models.MAX_LEASE)
    task, cancel = await request.app[STORE].heartbeat(request.match_info["id"], lease_of(body, "progress", "extend"),
                                                      lease_seconds=extend, progress=progress,
                                                      machine=only_machine(request))
    if task.assigned_to:
        request.app[ROSTER].seen(task.assigned_to)
    return json_response({"cancel": cancel, "status": task.status,
                          "lease_expires_at": models.iso(task.lease_expires_at), "lease_seconds": extend})


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
    while True:
        waiter = store.events_appended.waiter()
        found = await store.events_after(after, limit)
        remaining = deadline - asyncio.get_running_loop().time()
        if found or remaining <= 0:
            last = found[-1].id if found else after
            return json_response({"events": [event.to_json() for event in found], "last": last})
        await wait_for_signal(waiter, min(remaining, RECHECK_INTERVAL))


async def metrics_page(request: web.Request) -> web.Response:
    only_query(request)
    store = request.app[STORE]
    counts = await store.status_counts()
    online = request.app[ROSTER].online(await store.sightings())
    text = metrics.render(counts, len(online), request.app[CLAIM_LATENCY], backend=store.backend)
    return web.Response(text=text, content_type="text/plain", charset="utf-8")


# ---- scoped tokens (the admin's) ----------------------------------------------------------


async def whoami(request: web.Request) -> web.Response:
    """What the credential of this request is and may do (`da doctor` checks it)."""
    only_query(request)
    return json_response(request[auth.PRINCIPAL].to_json())


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
    web.get("/metrics", metrics_page),
    web.get("/openapi.json", openapi_document),
    web.get("/v1/whoami", whoami),
    web.get("/v1/tokens", list_tokens),
    web.post("/v1/tokens", create_token),
    web.post("/v1/tokens/{id:[0-9a-fA-F]+}/revoke", revoke_token),
]


async def reaper(app: web.Application) -> None:
    """Settle expired leases every `reap_interval` seconds for as long as the app runs."""
    store, interval = app[STORE], app[SETTINGS].reap_interval
    while True:
        try:
            for task in await store.reap():
                logger.warning("task %s (%s) lost its worker: now %s", task.short_id, task.type, task.status,
                               extra={"task_id": task.id, "type": task.type, "status": task.status, "by": "reaper"})
        except QueueError as exc:
            logger.error("reaper: %s", exc.detail)
        await asyncio.sleep(interval)


async def share_liveness(app: web.Application) -> None:
    """Hand the store the machines this replica saw, every `SHARE_INTERVAL` seconds."""
    store, roster = app[STORE], app[ROSTER]
    while True:
        await asyncio.sleep(SHARE_INTERVAL)
        try:
            await roster.share(store)
        except QueueError as exc:
            logger.error("sharing machine liveness: %s", exc.detail)


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
