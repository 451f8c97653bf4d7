"""The queue's routes, each declared once (`ROUTES`): handler, who may call it, and its API document entry.

The handlers parse, call the store and answer JSON; the three that wait (claim, heartbeat, the event
feed) are in `waiting`. Who may call what (`ACCESS`) and /openapi.json are derived from `ROUTES`.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import orjson
from aiohttp import web

from da.queue import auth, metrics, models, openapi, waiting
from da.queue.auth import ADMIN_ONLY, EVERYONE, MACHINES, PEOPLE, READERS
from da.queue.errors import BadRequest, Conflict, StoreError, TooLarge
from da.queue.http import (
    CLAIM_LATENCY,
    ROSTER,
    SETTINGS,
    STORE,
    Route,
    access_table,
    ask_number,
    json_response,
    lease_of,
    log_transition,
    only_machine,
    only_query,
    query_int,
    read_json,
)
from da.queue.models import ClaimRequest, NewTask, NewToken, Report
from da.queue.openapi import (
    ASK,
    ERROR,
    LEASE,
    LEASE_BODY,
    LEASE_LEFT,
    LEASE_NAME,
    MESSAGE,
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
    USAGE,
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
# Tasks one bulk create may hold: a fan-out over a fleet is tens; a thousand small tasks still fit the
# default 1 MiB body limit and commit in one statement within milliseconds.
MAX_BULK = 1000
# The task type that runs an agent: DA_BUDGET_PER_DAY refuses new ones (and any task naming an agent).
AGENT_TASK_TYPE = "agent_run"
# DA_BUDGET_PER_DAY counts what a requester's tasks created in the last 24 hours cost.
BUDGET_PERIOD = 86400.0


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
    """One task from a JSON object, or several from a JSON list of them: all created or none."""
    body = await read_json(request)
    store = request.app[STORE]
    via = credential(request)
    if not isinstance(body, list):
        spec = NewTask.parse(body, via)
        await check_budget(request, spec)
        task = await store.create(spec)
        log_transition(task)
        return json_response(task.to_json(), status=201)
    if not 1 <= len(body) <= MAX_BULK:
        raise BadRequest(f"a list of tasks must hold 1 to {MAX_BULK} of them, got {len(body)}; "
                         "send the rest in another request.")
    specs = []
    for index, item in enumerate(body):
        try:
            specs.append(NewTask.parse(item, via))
        except BadRequest as exc:
            raise BadRequest(f"task {index} of the list (counting from 0): {exc.detail} Nothing was created.") from None
    for spec in specs:
        await check_budget(request, spec)
    tasks = await store.create_many(specs)
    for task in tasks:
        log_transition(task)
    return json_response({"tasks": [task.to_json() for task in tasks]}, status=201)


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
    body["asks"] = [ask.to_json() for ask in await store.asks(task.id)]
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
    """Record a worker's outcome; with `claim`, also hand it its next task (`next`) in the same answer."""
    body = models.require_object(await read_json(request))
    wanted = claim_filter(request, body.get("claim"))
    spec = Report.parse({key: value for key, value in body.items() if key != "claim"})
    store, machine = request.app[STORE], only_machine(request)
    if wanted is None:
        task = await store.report(request.match_info["id"], spec, machine=machine)
        log_transition(task)
        return json_response(task.to_json())
    settings = request.app[SETTINGS]
    request.app[ROSTER].seen(wanted.machine, wanted.capabilities, wanted.agents)
    lease_seconds = wanted.lease or settings.lease
    task, claimed = await store.report_and_claim(request.match_info["id"], spec, wanted, lease_seconds=lease_seconds,
                                                 overflow_grace=settings.overflow_grace, machine=machine)
    log_transition(task)
    handed = None if claimed is None else await waiting.hand_over(request, claimed, lease_seconds)
    return json_response({**task.to_json(), "next": handed})


def claim_filter(request: web.Request, body: Any) -> ClaimRequest | None:
    """A report's `claim` part: what /v1/claim takes but `wait`, under the same token rules; None when absent."""
    if body is None:
        return None
    body = models.require_object(body, "field 'claim'")
    if "wait" in body:
        raise BadRequest("field 'claim' takes no 'wait': a report hands over a task only if one is ready; "
                         "long-poll /v1/claim when `next` is null.")
    try:
        wanted = ClaimRequest.parse(body)
    except BadRequest as exc:
        raise BadRequest(f"in field 'claim': {exc.detail}") from None
    auth.check_claim(request[auth.PRINCIPAL], wanted)
    return wanted


def credential(request: web.Request) -> str:
    """The request's credential as the queue records it beside a `by` or `created_by` the client chose."""
    return request[auth.PRINCIPAL].label


def resolution(body: Any, *also: str) -> tuple[str, str | None, str | None]:
    body = models.require_object(body)
    models.reject_unknown(body, ("status", "by", "notes", *also))
    status = models.get_status(body, "status", models.RESOLVE_TO) or ""
    return status, models.get_str(body, "by"), models.get_str(body, "notes", max_len=models.MAX_NOTES)


async def resolve(request: web.Request) -> web.Response:
    status, by, notes = resolution(await read_json(request))
    task = await request.app[STORE].resolve(request.match_info["id"], status, by=by, notes=notes,
                                            via=credential(request))
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
    ids = await store.resolve_many(from_status, status, by=by, notes=notes, via=credential(request))
    return json_response({"count": len(ids), "ids": ids, "dry_run": False})


async def cancel(request: web.Request) -> web.Response:
    body = models.require_object(await read_json(request))
    models.reject_unknown(body, ("by", "notes"))
    by = models.get_str(body, "by")
    notes = models.get_str(body, "notes", max_len=models.MAX_NOTES)
    task = await request.app[STORE].cancel(request.match_info["id"], by=by, notes=notes, via=credential(request))
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
    parked = {"claim": store.pending_changed.parked, "events": store.events_appended.parked,
              "heartbeat": store.task_cancelled.parked, "progress": store.progress_saved.parked}
    text = metrics.render(counts, len(online), request.app[CLAIM_LATENCY], backend=store.backend, parked=parked,
                          usage=await store.usage_totals())
    return web.Response(text=text, content_type="text/plain", charset="utf-8")


async def whoami(request: web.Request) -> web.Response:
    """What the credential of this request is and may do (`da doctor` checks it); a worker token also gets its
    machine's entry in this host's fleet file, so a worker without one of its own runs what is declared here."""
    only_query(request)
    principal = request[auth.PRINCIPAL]
    body: dict[str, Any] = principal.to_json(ACCESS)
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


# ---- supervised sessions: asks, progress, steering messages, budgets --------------


async def check_budget(request: web.Request, spec: NewTask) -> None:
    """Refuse a new agent task once its requester's tasks of the last day cost DA_BUDGET_PER_DAY."""
    budget = request.app[SETTINGS].budget_per_day
    if budget is None or spec.created_by is None or (spec.agent is None and spec.type != AGENT_TASK_TYPE):
        return
    store = request.app[STORE]
    spent = await store.spent_since(spec.created_by, store.clock() - BUDGET_PERIOD)
    if spent >= budget:
        raise Conflict(f"{spec.created_by}'s agent tasks cost ${spent:.2f} in the last 24 hours, at or past the daily "
                       f"budget of ${budget:.2f} (DA_BUDGET_PER_DAY); try again later or raise the budget.")


async def open_ask(request: web.Request) -> web.Response:
    """A worker asks a person about the task it runs; the task waits until the ask is answered or expires."""
    spec = models.NewAsk.parse(await read_json(request))
    ask = await request.app[STORE].open_ask(request.match_info["id"], spec, machine=only_machine(request),
                                            default_timeout=request.app[SETTINGS].ask_timeout)
    logger.info("task %s asks (%s): %s", ask.task_id[:8], ask.kind, ask.title, extra={"task_id": ask.task_id})
    return json_response(ask.to_json(), status=201)


async def answer_ask(request: web.Request) -> web.Response:
    """A person answers an ask; the first answer wins."""
    answer = models.AskAnswer.parse(await read_json(request))
    answer = dataclasses.replace(answer, by=answer.by or request[auth.PRINCIPAL].name, via=credential(request))
    ask = await request.app[STORE].answer_ask(request.match_info["id"], ask_number(request), answer)
    logger.info("task %s ask %d answered %s by %s", ask.task_id[:8], ask.id, ask.answer, ask.answered_by,
                extra={"task_id": ask.task_id})
    return json_response(ask.to_json())


async def list_asks(request: web.Request) -> web.Response:
    """Open asks across the fleet, oldest first."""
    only_query(request, "limit")
    limit = query_int(request, "limit", models.MAX_LIMIT, 1, models.MAX_LIMIT) or models.MAX_LIMIT
    return json_response({"asks": [ask.to_json() for ask in await request.app[STORE].open_asks(limit)]})


async def record_workspace(request: web.Request) -> web.Response:
    """The worker holding a finished task's worktree keeps what a later push or PR/MR changed on the task."""
    facts = models.workspace_facts(models.require_object(await read_json(request)))
    task = await request.app[STORE].record_workspace(request.match_info["id"], facts, machine=only_machine(request))
    return json_response(task.to_json())


async def save_progress(request: web.Request) -> web.Response:
    """A worker replaces its task's progress record (size-capped); followers long-poll its revision."""
    body = models.require_object(await read_json(request))
    lease = lease_of(body, "progress")
    record = models.require_object(body.get("progress"), "field 'progress'")
    models.check_depth(record, "field 'progress'")
    size = len(orjson.dumps(record))
    if size > models.MAX_PROGRESS_BYTES:
        raise TooLarge(f"field 'progress' is {size} bytes as JSON, more than {models.MAX_PROGRESS_BYTES}; keep fewer "
                       "tool calls and answer lines.")
    task = await request.app[STORE].save_progress(request.match_info["id"], lease, record,
                                                  machine=only_machine(request))
    return json_response({"progress_rev": task.progress_rev, "status": task.status})


async def send_message(request: web.Request) -> web.Response:
    """A person steers a running session: the message is the agent's next prompt, or at once with `interrupt`."""
    body = models.require_object(await read_json(request))
    models.reject_unknown(body, ("text", "interrupt", "by"))
    text = models.present(body, "text", models.MAX_MESSAGE)
    interrupt = body.get("interrupt")
    interrupt = False if interrupt is None else interrupt
    if not isinstance(interrupt, bool):
        raise BadRequest("field 'interrupt' must be true or false.")
    by = models.get_str(body, "by") or request[auth.PRINCIPAL].name
    message = await request.app[STORE].add_message(request.match_info["id"], text, interrupt=interrupt, by=by,
                                                   via=credential(request))
    return json_response(message.to_json(), status=201)


async def openapi_document(request: web.Request) -> web.Response:
    only_query(request)
    return json_response(document(__version__))


def document(version: str) -> dict[str, Any]:
    """The API document of these routes (/openapi.json)."""
    return openapi.document(version, ROUTES)


TASK_PATH = "/v1/tasks/{id:[0-9a-fA-F-]+}"
NEW_TASK = json_body({
    "type": NAME, "payload": PAYLOAD,
    "priority": {"type": "integer", "minimum": 0, "maximum": models.MAX_PRIORITY},
    "target_machine": OPT_NAME, "preferred_machine": OPT_NAME, "agent": OPT_NAME,
    "notes": NOTES, "created_by": WHO, "lock": OPT_NAME,
    "max_attempts": {"type": "integer", "minimum": 1, "maximum": models.MAX_ATTEMPTS_LIMIT}}, ["type"])
# What a worker can take (/v1/claim, and a report's `claim`), and what it is handed.
CLAIM_FILTER = json_body({
    "machine": NAME, "capabilities": NAMES, "agents": NAMES, "aliases": NAMES, "retry_safe": NAMES,
    "lease": {"type": "number", "minimum": models.MIN_LEASE, "maximum": models.MAX_LEASE}},
    ["machine", "capabilities"])["content"]["application/json"]["schema"]
CLAIMED = {"type": "object", "properties": {"task": TASK, "lease": STR, "lease_expires_at": TIME,
                                            "lease_seconds": LEASE_LEFT}}
ASK_ID = {"name": "ask_id", "in": "path", "required": True,
          "schema": {"type": "string", "pattern": "^[0-9]{1,9}$"}, "description": "The ask's number on its task."}
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
        f"Create a task; or, given a list of 1 to {MAX_BULK} tasks, create them all in one transaction (a bad one "
        "is a 400 naming its index, and nothing is created).", {
            "201": json_answer({"oneOf": [TASK, {"type": "object", "properties": {
                "tasks": {"type": "array", "items": TASK}}, "required": ["tasks"]}]},
                "Created: the task, or `tasks` in the order given."), **error_answers(400, 401, 413)},
        body=one_of(NEW_TASK, {"content": {"application/json": {"schema": {
            "type": "array", "items": NEW_TASK["content"]["application/json"]["schema"],
            "minItems": 1, "maxItems": MAX_BULK}}}}))),
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
        "Report the outcome; repeating it is harmless. With `claim` (what /v1/claim takes, without `wait`, under "
        "the same token rules), the answer's `next` also hands over the worker's next task, or is null when none "
        "is ready, when the report was refused (nothing claimed) or was a repeat; then long-poll /v1/claim.", {
            "200": json_answer({"allOf": [TASK, {"type": "object", "properties": {"next": {
                "oneOf": [CLAIMED, {"type": "null"}], "description": "Only when `claim` was sent."}}}]}, "Recorded."),
            **TASK_ERRORS, **error_answers(413)},
        body=json_body({**LEASE_BODY, "status": {"type": "string", "enum": list(models.REPORTABLE)},
                        "result": RESULT, "notes": NOTES, "action": NOTES, "claim": {
                            **CLAIM_FILTER, "description": "Also claim the next task, as /v1/claim would."}},
                       ["lease", "status"]),
        params=[TASK_ID])),
    Route("POST", f"{TASK_PATH}/resolve", resolve, PEOPLE, operation(
        "Settle a needs_human or failed task.", {"200": json_answer(TASK, "Resolved."), **TASK_ERRORS},
        body=json_body(RESOLVE_FIELDS, ["status"]), params=[TASK_ID])),
    Route("POST", f"{TASK_PATH}/cancel", cancel, PEOPLE, operation(
        "Cancel a task that has not finished.", {"200": json_answer(TASK, "Cancelled."), **TASK_ERRORS},
        body=json_body({"by": WHO, "notes": NOTES}, []), params=[TASK_ID])),
    Route("POST", "/v1/claim", waiting.claim, MACHINES, operation(
        "Claim the best task this worker may take, waiting up to `wait` seconds.", {
            "200": json_answer(CLAIMED, "Claimed."),
            "204": {"description": "Nothing to claim within `wait`."}, **error_answers(400, 401)},
        body=json_body({**CLAIM_FILTER["properties"],
                        "wait": {"type": "number", "minimum": 0, "maximum": models.MAX_WAIT}},
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
                "may": {"type": "array", "items": STR},
                "declared": {"type": ["object", "null"], "description": "A worker token's machine as the fleet "
                             "file on the queue host declares it."}}}, "Who you are."),
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
    # Supervised agent sessions: asks (a worker opens them, people answer), progress, steering messages.
    Route("POST", f"{TASK_PATH}/asks", open_ask, MACHINES, operation(
        "A worker asks a person about the task its lease holds (a permission, a plan, a question); the task is "
        f"waiting while any ask is open. 409 past {models.MAX_OPEN_ASKS} open asks on one task: reject the request "
        "without asking.", {"201": json_answer(ASK, "Opened."), **TASK_ERRORS},
        body=json_body({**LEASE_BODY, "kind": {"type": "string", "enum": list(models.ASK_KINDS)},
                        "title": {**TEXT, "minLength": 1, "maxLength": models.MAX_ASK_TITLE},
                        "detail": {**TEXT, "maxLength": models.MAX_ASK_DETAIL},
                        "options": {"type": "array", "minItems": 1, "maxItems": models.MAX_ASK_OPTIONS,
                                    "items": {"type": "object", "additionalProperties": False,
                                              "required": ["id", "label"], "properties": {
                                                  "id": {**TEXT, "minLength": 1, "maxLength": models.MAX_NAME},
                                                  "label": {**TEXT, "minLength": 1,
                                                            "maxLength": models.MAX_ASK_TITLE}}}}},
                       ["lease", "kind", "title", "options"]), params=[TASK_ID])),
    Route("POST", f"{TASK_PATH}/asks/{{ask_id:[0-9]+}}", answer_ask, PEOPLE, operation(
        "Answer an ask with one of its options: the first answer wins; a later one, or one after it expired, is 409 "
        "saying why.", {"200": json_answer(ASK, "Answered."), **TASK_ERRORS},
        body=json_body({"option": {**TEXT, "minLength": 1, "maxLength": models.MAX_NAME},
                        "note": NOTES, "by": WHO}, ["option"]), params=[TASK_ID, ASK_ID])),
    Route("POST", f"{TASK_PATH}/asks/{{ask_id:[0-9]+}}/wait", waiting.wait_answer, MACHINES, operation(
        "A worker waits up to `wait` seconds for the answer to its ask; answered at once when it is answered, "
        "expires or the task is cancelled.", {
            "200": json_answer({"type": "object", "properties": {
                "ask": ASK, "cancel": {"type": "boolean"}, "status": STATUS}}, "The ask as it stands."),
            **TASK_ERRORS},
        body=json_body({**LEASE_BODY, "wait": {"type": "number", "minimum": 0, "maximum": models.MAX_WAIT}},
                       ["lease"]), params=[TASK_ID, ASK_ID])),
    Route("GET", "/v1/asks", list_asks, READERS, operation(
        "Open asks across the fleet, oldest first.", {
            "200": json_answer({"type": "object", "properties": {"asks": {"type": "array", "items": ASK}}},
                               "Open asks."), **error_answers(400, 401)},
        params=[query_param("limit", {"type": "integer", "minimum": 1, "maximum": models.MAX_LIMIT}, "Page size.")])),
    Route("POST", f"{TASK_PATH}/progress", save_progress, MACHINES, operation(
        f"Replace the running task's progress record (at most {models.MAX_PROGRESS_BYTES} bytes as JSON: plan, last "
        "tool calls, the answer's last lines, usage so far); its revision counts up.", {
            "200": json_answer({"type": "object", "properties": {"progress_rev": {"type": "integer"},
                                                                  "status": STATUS}}, "Saved."),
            **TASK_ERRORS, **error_answers(413)},
        body=json_body({**LEASE_BODY, "progress": {"type": "object", "properties": {"usage": USAGE}}},
                       ["lease", "progress"]), params=[TASK_ID])),
    Route("POST", f"{TASK_PATH}/workspace", record_workspace, MACHINES, operation(
        "Merge a later delivery's workspace facts (pushed, the PR/MR URL) into a finished task's result; only the "
        "machine that ran it may.", {"200": json_answer(TASK, "Recorded."), **TASK_ERRORS, **error_answers(403)},
        body=json_body({"workspace": {"type": "object"}, "workspaces": {"type": "array", "items": {"type": "object"}}},
                       ["workspace"]), params=[TASK_ID])),
    Route("GET", f"{TASK_PATH}/progress", waiting.follow_progress, READERS, operation(
        "The task's progress record, asks and status, once its revision passes `after` or its status differs from "
        "`status`, waiting up to `wait` seconds.", {
            "200": json_answer({"type": "object", "properties": {
                "id": STR, "short_id": STR, "status": STATUS, "progress_rev": {"type": "integer"},
                "progress_record": {"type": ["object", "null"]}, "progress": NULLABLE_STR, "usage": USAGE,
                "asks": {"type": "array", "items": ASK}}}, "Progress."),
            **TASK_ERRORS},
        params=[TASK_ID,
                query_param("after", {"type": "integer", "minimum": -1, "maximum": 2**62}, "Last revision seen."),
                query_param("status", STATUS, "Last status seen."),
                query_param("wait", {"type": "number", "minimum": 0, "maximum": models.MAX_WAIT},
                            "Seconds to wait.")])),
    Route("POST", f"{TASK_PATH}/messages", send_message, PEOPLE, operation(
        "Queue a steering message for the running session: its next prompt at the turn's end, or at once with "
        "`interrupt` (the turn is cancelled first).", {"201": json_answer(MESSAGE, "Queued."), **TASK_ERRORS},
        body=json_body({"text": {**TEXT, "minLength": 1, "maxLength": models.MAX_MESSAGE},
                        "interrupt": {"type": "boolean"}, "by": WHO}, ["text"]), params=[TASK_ID])),
]
# Every route that asks for a credential, by method and path, with the kinds of credential allowed.
ACCESS = access_table(ROUTES)
# The paths that ask for no credential.
PUBLIC = frozenset(route.template for route in ROUTES if route.access is None)
