"""The queue's routes, each declared once (`ROUTES`): handler, who may call it, and its API document entry.

The handlers parse, call the store and answer JSON; the three that wait (claim, heartbeat, the event
feed) are in `waiting`. Who may call what (`ACCESS`) and /openapi.json are derived from `ROUTES`.
"""

from __future__ import annotations

import logging
from typing import Any

import orjson
from aiohttp import web

from da.queue import auth, metrics, models, openapi, waiting
from da.queue.auth import ADMIN_ONLY, EVERYONE, MACHINES, PEOPLE, READERS
from da.queue.errors import BadRequest, StoreError
from da.queue.http import (
    CLAIM_LATENCY,
    ROSTER,
    STORE,
    Route,
    access_table,
    json_response,
    lease_of,
    log_transition,
    only_machine,
    only_query,
    query_int,
    read_json,
)
from da.queue.models import NewTask, NewToken, Report
from da.queue.openapi import (
    ERROR,
    LEASE,
    LEASE_BODY,
    LEASE_LEFT,
    LEASE_NAME,
    NAME,
    NAMES,
    NOTES,
    NULLABLE_STR,
    OPT_NAME,
    PAYLOAD,
    RESOLVE_FIELDS,
    RESULT,
    STATUS,
    STR,
    TASK,
    TASK_ERRORS,
    TASK_ID,
    TEXT,
    TIME,
    TOKEN_SCHEMA,
    WHO,
    error_answers,
    json_answer,
    json_body,
    one_of,
    operation,
    query_param,
)
from da.version import __version__

logger = logging.getLogger(__name__)

DEFAULT_LIST_LIMIT = 50


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
        if value is not None and (len(value) > models.MAX_NAME or not models.NAME_PATTERN.fullmatch(value)):
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


async def named_lease(request: web.Request) -> web.Response:
    """POST takes or renews a named lease for `holder` (409 while another holds it); DELETE
    lets go of it (`?holder=`). A process that must run once per fleet (the Slack bot of a
    workspace) holds one, so a second copy on any machine stands by instead of running twice."""
    store, name = request.app[STORE], request.match_info["name"]
    if not models.LEASE_NAME_PATTERN.fullmatch(name) or len(name) > models.MAX_NAME:
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


async def whoami(request: web.Request) -> web.Response:
    """What the credential of this request is and may do (`da doctor` checks it)."""
    only_query(request)
    return json_response(request[auth.PRINCIPAL].to_json(ACCESS))


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
    return json_response(document(__version__))


def document(version: str) -> dict[str, Any]:
    """The API document of these routes (/openapi.json)."""
    return openapi.document(version, ROUTES)


TASK_PATH = "/v1/tasks/{id:[0-9a-fA-F-]+}"
# Who may call a route: ADMIN_ONLY, MACHINES (worker tokens, each only as its machine and for its
# machine's tasks), PEOPLE (client tokens: the Slack bot, a terminal), READERS, EVERYONE; None is
# public (no credential). A change here is a change of who may do what: tests/test_auth.py keeps the
# table it must equal.
ROUTES: list[Route] = [
    Route("GET", "/health", health, None, operation(
        "Health, without auth: the service commits a small write (bounded in time), so a load balancer sees a "
        "read-only, frozen or lost database.", {
            "200": json_answer({"type": "object", "properties": {
                "status": STR, "version": STR, "backend": {"type": "string", "enum": ["sqlite", "postgresql"]}}},
                "Up, and the database took a write."),
            "503": json_answer({"type": "object", "properties": {
                "status": {"type": "string", "enum": ["unavailable"]}, "version": STR, "backend": STR, "error": STR,
                "detail": STR}}, "The database did not take the write in time; `detail` says why.")})),
    Route("POST", "/v1/tasks", create_task, PEOPLE, operation(
        "Create a task.", {"201": json_answer(TASK, "Created."), **error_answers(400, 401, 413)},
        body=json_body({
            "type": NAME, "payload": PAYLOAD,
            "priority": {"type": "integer", "minimum": 0, "maximum": models.MAX_PRIORITY},
            "target_machine": OPT_NAME, "preferred_machine": OPT_NAME, "agent": OPT_NAME,
            "notes": NOTES, "created_by": WHO, "lock": OPT_NAME,
            "max_attempts": {"type": "integer", "minimum": 1, "maximum": models.MAX_ATTEMPTS_LIMIT}}, ["type"]))),
    Route("GET", "/v1/tasks", list_tasks, READERS, operation(
        "List tasks, newest first.", {
            "200": json_answer({"type": "object", "properties": {
                "tasks": {"type": "array", "items": TASK}, "next": {"type": ["integer", "null"]}}},
                "A page and the cursor of the next."), **error_answers(400, 401)},
        params=[
            query_param("status", {"type": "string", "pattern": "^((" + "|".join(models.STATUSES) + ")(,("
                        + "|".join(models.STATUSES) + "))*)?$"}, "One status or several, comma-separated."),
            query_param("machine", OPT_NAME, "Assigned to or pinned to this machine."),
            query_param("type", OPT_NAME, "Task type."),
            query_param("limit", {"type": "integer", "minimum": 1, "maximum": models.MAX_LIMIT}, "Page size."),
            query_param("before", {"type": "integer", "minimum": 1, "maximum": 2**62},
                        "Cursor from the previous page.")])),
    Route("POST", "/v1/tasks/resolve", resolve_many, PEOPLE, operation(
        "Resolve every task in one status.", {
            "200": json_answer({"type": "object", "properties": {
                "count": {"type": "integer"}, "ids": {"type": "array", "items": STR},
                "dry_run": {"type": "boolean"}}}, "Changed."),
            **error_answers(400, 401)},
        body=json_body({"from_status": {"type": "string", "enum": list(models.RESOLVABLE_FROM)},
                        "dry_run": {"type": "boolean"}, **RESOLVE_FIELDS}, ["from_status", "status"]))),
    Route("GET", TASK_PATH, get_task, READERS, operation(
        "One task with its events.", {"200": json_answer(TASK, "The task."), **TASK_ERRORS}, params=[TASK_ID])),
    Route("POST", f"{TASK_PATH}/start", start_task, MACHINES, operation(
        "Mark a claimed task in progress; 409 lock_held when another task on the machine holds its folder (the "
        "claim then goes back to the queue, not counted).", {"200": json_answer(TASK, "Started."), **TASK_ERRORS},
        body=json_body({**LEASE_BODY, "checkout": {
            **TEXT, "maxLength": models.MAX_PATH,
            "description": "The task's folder resolved on the worker's machine; its cwd lock moves there."}},
            ["lease"]), params=[TASK_ID])),
    Route("POST", f"{TASK_PATH}/release", release, MACHINES, operation(
        "Hand back a claimed task that has not started.", {"200": json_answer(TASK, "Pending again."), **TASK_ERRORS},
        body=json_body(LEASE_BODY, ["lease"]), params=[TASK_ID])),
    Route("POST", f"{TASK_PATH}/heartbeat", waiting.heartbeat, MACHINES, operation(
        "Extend the lease; says whether to cancel. With `wait`, the answer is held that many seconds, or until "
        "the task is cancelled, whichever comes first.", {
            "200": json_answer({"type": "object", "properties": {
                "cancel": {"type": "boolean"}, "status": STATUS, "lease_expires_at": TIME,
                "lease_seconds": LEASE_LEFT}}, "Extended."),
            **TASK_ERRORS},
        body=json_body({**LEASE_BODY, "progress": NOTES,
                        "extend": {"type": "number", "minimum": models.MIN_LEASE, "maximum": models.MAX_LEASE},
                        "wait": {"type": "number", "minimum": 0, "maximum": models.MAX_WAIT}}, ["lease"]),
        params=[TASK_ID])),
    Route("POST", f"{TASK_PATH}/report", report, MACHINES, operation(
        "Report the outcome; repeating it is harmless.", {
            "200": json_answer(TASK, "Recorded."), **TASK_ERRORS, **error_answers(413)},
        body=json_body({**LEASE_BODY, "status": {"type": "string", "enum": list(models.REPORTABLE)},
                        "result": RESULT, "notes": NOTES, "action": NOTES}, ["lease", "status"]),
        params=[TASK_ID])),
    Route("POST", f"{TASK_PATH}/resolve", resolve, PEOPLE, operation(
        "Settle a needs_human or failed task.", {"200": json_answer(TASK, "Resolved."), **TASK_ERRORS},
        body=json_body(RESOLVE_FIELDS, ["status"]), params=[TASK_ID])),
    Route("POST", f"{TASK_PATH}/cancel", cancel, PEOPLE, operation(
        "Cancel a task that has not finished.", {"200": json_answer(TASK, "Cancelled."), **TASK_ERRORS},
        body=json_body({"by": WHO, "notes": NOTES}, []), params=[TASK_ID])),
    Route("POST", "/v1/claim", waiting.claim, MACHINES, operation(
        "Claim the best task this worker may take, waiting up to `wait` seconds.", {
            "200": json_answer({"type": "object", "properties": {
                "task": TASK, "lease": STR, "lease_expires_at": TIME, "lease_seconds": LEASE_LEFT}}, "Claimed."),
            "204": {"description": "Nothing to claim within `wait`."}, **error_answers(400, 401)},
        body=json_body({"machine": NAME, "capabilities": NAMES, "agents": NAMES, "aliases": NAMES,
                        "retry_safe": NAMES,
                        "wait": {"type": "number", "minimum": 0, "maximum": models.MAX_WAIT},
                        "lease": {"type": "number", "minimum": models.MIN_LEASE, "maximum": models.MAX_LEASE}},
                       ["machine", "capabilities"]))),
    Route("POST", "/v1/prune", prune, ADMIN_ONLY, operation(
        "Remove finished tasks older than `older_than` seconds (counts are kept).", {
            "200": json_answer({"type": "object", "properties": {"removed": {"type": "integer"}}}, "Removed."),
            **error_answers(400, 401)},
        body=json_body({"older_than": {"type": "number", "minimum": 0, "maximum": 100 * 365 * 86400}}, []))),
    Route("GET", "/v1/machines", machines, READERS, operation(
        "The fleet with liveness and counts.", {
            "200": json_answer({"type": "object", "properties": {
                "machines": {"type": "array", "items": {"type": "object"}}}}, "Roster."),
            **error_answers(401)})),
    Route("GET", "/v1/events", waiting.events, READERS, operation(
        "Transitions after an event id, long-polled.", {
            "200": json_answer({"type": "object", "properties": {
                "events": {"type": "array", "items": {"$ref": "#/components/schemas/Event"}},
                "last": {"type": "integer", "description": "Where to resume; below `after` when the feed went "
                                                           "backwards (an older backup was restored)."}}}, "Events."),
            **error_answers(400, 401)},
        params=[
            query_param("after", {"type": "integer", "minimum": -1, "maximum": 2**62},
                        "Last event id seen; -1 answers the newest id."),
            query_param("wait", {"type": "number", "minimum": 0, "maximum": models.MAX_WAIT}, "Seconds to wait."),
            query_param("limit", {"type": "integer", "minimum": 1, "maximum": 500}, "Page size.")])),
    # The Slack bot holds its workspace's lease (slack:<team id>) with a client token.
    Route("POST", "/v1/leases/{name}", named_lease, PEOPLE, operation(
        "Take or renew a named lease for `holder` (one holder per name, e.g. one Slack bot per workspace).", {
            "200": json_answer(LEASE, "Held until `expires_at` unless renewed."), **error_answers(400, 401),
            "409": json_answer(ERROR, "Another holder has it.")},
        body=json_body({"holder": {**STR, "minLength": 1, "maxLength": models.MAX_NAME, "pattern": "\\S"},
                        "ttl": {"type": "number", "minimum": models.MIN_NAMED_LEASE,
                                "maximum": models.MAX_NAMED_LEASE},
                        "data": {"type": "object", "description": f"At most {models.MAX_LEASE_DATA} bytes as JSON."}},
                       ["holder"]),
        params=[LEASE_NAME])),
    Route("DELETE", "/v1/leases/{name}", named_lease, PEOPLE, operation(
        "Let go of a named lease.", {
            "200": json_answer({"type": "object", "properties": {"name": STR, "released": {"type": "boolean"}}},
                               "`released` is false when nobody held it."),
            **error_answers(400, 401), "409": json_answer(ERROR, "Another holder has it.")},
        params=[LEASE_NAME, {**query_param("holder", {**STR, "minLength": 1}, "Who lets go."), "required": True}])),
    Route("GET", "/metrics", metrics_page, READERS, operation(
        "Prometheus metrics.", {
            "200": {"description": "Text exposition.", "content": {"text/plain": {"schema": STR}}},
            **error_answers(401)})),
    Route("GET", "/openapi.json", openapi_document, EVERYONE, operation(
        "This document.", {"200": json_answer({"type": "object"}, "OpenAPI 3."), **error_answers(401)})),
    Route("GET", "/v1/whoami", whoami, EVERYONE, operation(
        "The credential of this request: its kind, name, machine and what it may do.", {
            "200": json_answer({"type": "object", "properties": {
                "kind": {"type": "string", "enum": [models.ADMIN, *models.TOKEN_KINDS]}, "name": STR,
                "id": NULLABLE_STR, "machine": NULLABLE_STR, "aliases": {"type": "array", "items": STR},
                "may": {"type": "array", "items": STR}}}, "Who you are."),
            **error_answers(401)})),
    Route("GET", "/v1/tokens", list_tokens, ADMIN_ONLY, operation(
        "Every scoped token, revoked ones too (never their secrets).", {
            "200": json_answer({"type": "object", "properties": {
                "tokens": {"type": "array", "items": TOKEN_SCHEMA}}}, "Tokens."),
            **error_answers(401)})),
    Route("POST", "/v1/tokens", create_token, ADMIN_ONLY, operation(
        "Create a scoped token; the answer holds its secret, shown this once.", {
            "201": json_answer({"allOf": [TOKEN_SCHEMA, {"type": "object", "properties": {"token": STR},
                                                         "required": ["token"]}]}, "Created."),
            **error_answers(400, 401, 409, 413)},
        body=one_of(
            json_body({"kind": {"type": "string", "enum": [models.WORKER_TOKEN]}, "machine": NAME,
                       "aliases": NAMES, "name": NAME}, ["kind", "machine"]),
            json_body({"kind": {"type": "string", "enum": [models.CLIENT_TOKEN, models.READER_TOKEN]},
                       "name": NAME}, ["kind", "name"])))),
    Route("POST", "/v1/tokens/{id:[0-9a-fA-F]+}/revoke", revoke_token, ADMIN_ONLY, operation(
        "Revoke a token: every replica refuses it from now on.", {
            "200": json_answer(TOKEN_SCHEMA, "Revoked (or already was)."), **error_answers(401, 404)},
        params=[{"name": "id", "in": "path", "required": True,
                 "schema": {"type": "string", "minLength": 1, "maxLength": 64, "pattern": "^[0-9a-fA-F]+$"},
                 "description": "The token's id, as `da token list` shows it."}])),
]
# Every route that asks for a credential, by method and path, with the kinds of credential allowed.
ACCESS = access_table(ROUTES)
# The paths that ask for no credential.
PUBLIC = frozenset(route.template for route in ROUTES if route.access is None)
