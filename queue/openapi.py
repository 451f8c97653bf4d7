"""The OpenAPI 3 document of the queue's HTTP API, served at /openapi.json.

Kept beside the routes by hand (a test checks that every route is documented and every
documented path is routed) rather than generated, to avoid a framework for one page.
"""

from __future__ import annotations

from typing import Any

from da.queue import auth, models

STR = {"type": "string"}
# Free text people send: any characters but NUL, which PostgreSQL text cannot hold.
TEXT = {"type": "string", "pattern": "^[^\\x00]*$"}
NOTES = {**TEXT, "maxLength": models.MAX_NOTES}
WHO = {**TEXT, "maxLength": models.MAX_NAME}
TOKEN = {"type": "string", "minLength": 1, "maxLength": models.MAX_NAME, "pattern": "^[0-9a-fA-F]+$"}
NULLABLE_STR = {"type": ["string", "null"]}
NAME = {"type": "string", "maxLength": models.MAX_NAME, "pattern": models.NAME_PATTERN.pattern}
NAMES = {"type": "array", "items": NAME}
# Optional names may also be empty, which the service treats as absent.
OPT_NAME = {"type": "string", "maxLength": models.MAX_NAME, "pattern": f"^({models.NAME_PATTERN.pattern[1:-1]})?$"}
TIME = {"type": ["string", "null"], "format": "date-time"}
STATUS = {"type": "string", "enum": list(models.STATUSES)}
ERROR = {"$ref": "#/components/schemas/Error"}
TASK = {"$ref": "#/components/schemas/Task"}
TOKEN_SCHEMA = {"$ref": "#/components/schemas/Token"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*codes: int) -> dict[str, Any]:
    text = {400: "Malformed input; the detail names the field.",
            401: "Missing, wrong or revoked credential (after many wrong ones from an address, answered slowly).",
            403: "This credential may not do that (see x-da-access); the detail says what it may do.",
            404: "No such task.", 408: "The request body did not arrive in time.",
            409: "The task's state does not allow this.", 413: "Body too large."}
    if 401 in codes:
        codes = (*codes, 403)
    answers = {str(code): _json(ERROR, text[code]) for code in codes}
    # Every route that reads or writes the database may meet it unavailable (a failover under way).
    answers["503"] = {**_json(ERROR, "database_unavailable: the database does not answer (a failover under way); "
                                     "nothing changed, try again."),
                      "headers": {"Retry-After": {"schema": {"type": "integer"}, "description": "Seconds to wait."}}}
    return answers


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    kind = schema.get("type")
    if kind is None or "enum" in schema:
        return {"anyOf": [schema, {"type": "null"}]}
    kinds = kind if isinstance(kind, list) else [kind]
    return {**schema, "type": [*kinds, "null"] if "null" not in kinds else kinds}


def _body(properties: dict[str, Any], required: list[str]) -> dict[str, Any]:
    """A JSON object body; optional fields may be null, which the service treats as absent."""
    properties = {k: v if k in required else _nullable(v) for k, v in properties.items()}
    schema = {"type": "object", "properties": properties, "required": required, "additionalProperties": False}
    return {"required": bool(required), "content": {"application/json": {"schema": schema}}}


def _one_of(*bodies: dict[str, Any]) -> dict[str, Any]:
    """A body that is exactly one of several shapes (a worker token has a machine, the others a name)."""
    schemas = [body["content"]["application/json"]["schema"] for body in bodies]
    return {"required": True, "content": {"application/json": {"schema": {"oneOf": schemas}}}}


def _op(summary: str, responses: dict[str, Any], *, body: dict[str, Any] | None = None,
        params: list[dict[str, Any]] | None = None, public: bool = False) -> dict[str, Any]:
    operation: dict[str, Any] = {"summary": summary, "responses": responses}
    if body:
        operation["requestBody"] = body
        responses.setdefault("408", _errors(408)["408"])
    if params:
        operation["parameters"] = params
    if public:
        operation["security"] = []
    return operation


def _query(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": schema, "description": description}


TASK_ID = {"name": "id", "in": "path", "required": True,
           "schema": {"type": "string", "minLength": 4, "maxLength": 36, "pattern": "^[0-9a-fA-F-]+$"},
           "description": "Full id or a unique prefix of 4 or more characters."}
LEASE_BODY = {"lease": TOKEN}
LEASE_NAME = {"name": "name", "in": "path", "required": True,
              "schema": {"type": "string", "maxLength": models.MAX_NAME, "pattern": models.LEASE_NAME_PATTERN.pattern},
              "description": "The lease's name, e.g. slack:T0123456."}
LEASE = {"type": "object", "properties": {"name": STR, "holder": STR, "acquired_at": TIME, "expires_at": TIME,
                                          "data": {"type": ["object", "null"]}}}
# The payload is free-form but for the two keys the service reads (the original tool's pin, a lock).
PAYLOAD = {"type": "object", "properties": {"_target_machine": _nullable(OPT_NAME),
                                            "lock": {"type": ["string", "null"], "maxLength": 1000}},
           "description": f"Free-form, nested at most {models.MAX_DEPTH} levels of objects and arrays."}
RESULT = {"type": "object",
          "description": f"Free-form, nested at most {models.MAX_DEPTH} levels of objects and arrays."}
# Workers time heartbeats by this duration, never by `lease_expires_at` against their own clock.
LEASE_LEFT = {"type": "number", "minimum": 0, "description": "Seconds left on the lease when answered."}
RESOLVE_FIELDS = {"status": {"type": "string", "enum": list(models.RESOLVE_TO)},
                  "notes": NOTES, "by": WHO}


def document(version: str) -> dict[str, Any]:
    """The whole document."""
    task_op = _errors(400, 401, 404, 409)
    paths = {
        "/health": {"get": _op("Health, without auth: the service commits a small write (bounded in time), so a "
                               "load balancer sees a read-only, frozen or lost database.", {"200": _json(
            {"type": "object", "properties": {"status": STR, "version": STR,
                                              "backend": {"type": "string", "enum": ["sqlite", "postgresql"]}}},
            "Up, and the database took a write."), "503": _json(
            {"type": "object", "properties": {"status": {"type": "string", "enum": ["unavailable"]}, "version": STR,
                                              "backend": STR, "error": STR, "detail": STR}},
            "The database did not take the write in time; `detail` says why.")}, public=True)},
        "/v1/tasks": {
            "post": _op("Create a task.", {"201": _json(TASK, "Created."), **_errors(400, 401, 413)},
                        body=_body({
                            "type": NAME, "payload": PAYLOAD,
                            "priority": {"type": "integer", "minimum": 0, "maximum": models.MAX_PRIORITY},
                            "target_machine": OPT_NAME, "preferred_machine": OPT_NAME, "agent": OPT_NAME,
                            "notes": NOTES, "created_by": WHO, "lock": {**TEXT, "maxLength": 1000},
                            "max_attempts": {"type": "integer", "minimum": 1,
                                             "maximum": models.MAX_ATTEMPTS_LIMIT}}, ["type"])),
            "get": _op("List tasks, newest first.", {"200": _json({"type": "object", "properties": {
                "tasks": {"type": "array", "items": TASK}, "next": {"type": ["integer", "null"]}}},
                "A page and the cursor of the next."), **_errors(400, 401)}, params=[
                _query("status", {"type": "string", "pattern": "^((" + "|".join(models.STATUSES) + ")(,("
                       + "|".join(models.STATUSES) + "))*)?$"}, "One status or several, comma-separated."),
                _query("machine", OPT_NAME, "Assigned to or pinned to this machine."),
                _query("type", OPT_NAME, "Task type."),
                _query("limit", {"type": "integer", "minimum": 1, "maximum": models.MAX_LIMIT}, "Page size."),
                _query("before", {"type": "integer", "minimum": 1, "maximum": 2**62},
                       "Cursor from the previous page.")]),
        },
        "/v1/tasks/resolve": {"post": _op("Resolve every task in one status.", {
            "200": _json({"type": "object", "properties": {"count": {"type": "integer"},
                                                           "ids": {"type": "array", "items": STR},
                                                           "dry_run": {"type": "boolean"}}}, "Changed."),
            **_errors(400, 401)}, body=_body({
                "from_status": {"type": "string", "enum": list(models.RESOLVABLE_FROM)},
                "dry_run": {"type": "boolean"}, **RESOLVE_FIELDS}, ["from_status", "status"]))},
        "/v1/tasks/{id}": {"get": _op("One task with its events.", {"200": _json(TASK, "The task."), **task_op},
                                      params=[TASK_ID])},
        "/v1/tasks/{id}/start": {"post": _op(
            "Mark a claimed task in progress; 409 lock_held when another task on the machine holds its folder "
            "(the claim then goes back to the queue, not counted).", {
                "200": _json(TASK, "Started."), **task_op},
            body=_body({**LEASE_BODY, "checkout": {
                **TEXT, "maxLength": models.MAX_PATH,
                "description": "The task's folder resolved on the worker's machine; its cwd lock moves there."}},
                ["lease"]), params=[TASK_ID])},
        "/v1/tasks/{id}/release": {"post": _op("Hand back a claimed task that has not started.", {
            "200": _json(TASK, "Pending again."), **task_op}, body=_body(LEASE_BODY, ["lease"]), params=[TASK_ID])},
        "/v1/tasks/{id}/heartbeat": {"post": _op(
            "Extend the lease; says whether to cancel. With `wait`, the answer is held that many seconds, or "
            "until the task is cancelled, whichever comes first.", {
            "200": _json({"type": "object", "properties": {"cancel": {"type": "boolean"}, "status": STATUS,
                                                           "lease_expires_at": TIME, "lease_seconds": LEASE_LEFT}},
                         "Extended."),
            **task_op}, body=_body({**LEASE_BODY, "progress": NOTES, "extend": {
                "type": "number", "minimum": models.MIN_LEASE, "maximum": models.MAX_LEASE},
                "wait": {"type": "number", "minimum": 0, "maximum": models.MAX_WAIT}}, ["lease"]),
            params=[TASK_ID])},
        "/v1/tasks/{id}/report": {"post": _op("Report the outcome; repeating it is harmless.", {
            "200": _json(TASK, "Recorded."), **task_op, **_errors(413)},
            body=_body({**LEASE_BODY, "status": {"type": "string", "enum": list(models.REPORTABLE)},
                        "result": RESULT, "notes": NOTES, "action": NOTES}, ["lease", "status"]),
            params=[TASK_ID])},
        "/v1/tasks/{id}/resolve": {"post": _op("Settle a needs_human or failed task.", {
            "200": _json(TASK, "Resolved."), **task_op}, body=_body(RESOLVE_FIELDS, ["status"]), params=[TASK_ID])},
        "/v1/tasks/{id}/cancel": {"post": _op("Cancel a task that has not finished.", {
            "200": _json(TASK, "Cancelled."), **task_op},
            body=_body({"by": WHO, "notes": NOTES}, []), params=[TASK_ID])},
        "/v1/claim": {"post": _op("Claim the best task this worker may take, waiting up to `wait` seconds.", {
            "200": _json({"type": "object", "properties": {"task": TASK, "lease": STR, "lease_expires_at": TIME,
                                                           "lease_seconds": LEASE_LEFT}}, "Claimed."),
            "204": {"description": "Nothing to claim within `wait`."}, **_errors(400, 401)},
            body=_body({"machine": NAME, "capabilities": NAMES, "agents": NAMES, "aliases": NAMES,
                        "retry_safe": NAMES,
                        "wait": {"type": "number", "minimum": 0, "maximum": models.MAX_WAIT},
                        "lease": {"type": "number", "minimum": models.MIN_LEASE, "maximum": models.MAX_LEASE}},
                       ["machine", "capabilities"]))},
        "/v1/prune": {"post": _op("Remove finished tasks older than `older_than` seconds (counts are kept).", {
            "200": _json({"type": "object", "properties": {"removed": {"type": "integer"}}}, "Removed."),
            **_errors(400, 401)},
            body=_body({"older_than": {"type": "number", "minimum": 0, "maximum": 100 * 365 * 86400}}, []))},
        "/v1/machines": {"get": _op("The fleet with liveness and counts.", {"200": _json(
            {"type": "object", "properties": {"machines": {"type": "array", "items": {"type": "object"}}}},
            "Roster."), **_errors(401)})},
        "/v1/events": {"get": _op("Transitions after an event id, long-polled.", {"200": _json(
            {"type": "object", "properties": {"events": {"type": "array", "items": {
                "$ref": "#/components/schemas/Event"}}, "last": {
                    "type": "integer", "description": "Where to resume; below `after` when the feed went backwards "
                                                      "(an older backup was restored)."}}}, "Events."),
            **_errors(400, 401)}, params=[
            _query("after", {"type": "integer", "minimum": -1, "maximum": 2**62},
                   "Last event id seen; -1 answers the newest id."),
            _query("wait", {"type": "number", "minimum": 0, "maximum": models.MAX_WAIT}, "Seconds to wait."),
            _query("limit", {"type": "integer", "minimum": 1, "maximum": 500}, "Page size.")])},
        "/v1/leases/{name}": {
            "post": _op("Take or renew a named lease for `holder` (one holder per name, e.g. one Slack bot per "
                        "workspace).", {"200": _json(LEASE, "Held until `expires_at` unless renewed."),
                                        **_errors(400, 401), "409": _json(ERROR, "Another holder has it.")},
                        body=_body({"holder": {**STR, "minLength": 1, "maxLength": models.MAX_NAME, "pattern": "\\S"},
                                    "ttl": {"type": "number", "minimum": models.MIN_NAMED_LEASE,
                                            "maximum": models.MAX_NAMED_LEASE},
                                    "data": {"type": "object",
                                             "description": f"At most {models.MAX_LEASE_DATA} bytes as JSON."}},
                                   ["holder"]),
                        params=[LEASE_NAME]),
            "delete": _op("Let go of a named lease.", {"200": _json(
                {"type": "object", "properties": {"name": STR, "released": {"type": "boolean"}}},
                "`released` is false when nobody held it."), **_errors(400, 401),
                "409": _json(ERROR, "Another holder has it.")},
                params=[LEASE_NAME, {**_query("holder", {**STR, "minLength": 1}, "Who lets go."), "required": True}]),
        },
        "/metrics": {"get": _op("Prometheus metrics.", {"200": {"description": "Text exposition.", "content": {
            "text/plain": {"schema": STR}}}, **_errors(401)})},
        "/openapi.json": {"get": _op("This document.", {"200": _json({"type": "object"}, "OpenAPI 3."),
                                                        **_errors(401)})},
        "/v1/whoami": {"get": _op("The credential of this request: its kind, name, machine and what it may do.", {
            "200": _json({"type": "object", "properties": {
                "kind": {"type": "string", "enum": [models.ADMIN, *models.TOKEN_KINDS]}, "name": STR,
                "id": NULLABLE_STR, "machine": NULLABLE_STR, "aliases": {"type": "array", "items": STR},
                "may": {"type": "array", "items": STR},
                "declared": {"type": ["object", "null"], "description": "A worker token's machine as the fleet "
                             "file on the queue host declares it."}}}, "Who you are."), **_errors(401)})},
        "/v1/tokens": {
            "get": _op("Every scoped token, revoked ones too (never their secrets).", {"200": _json(
                {"type": "object", "properties": {"tokens": {"type": "array", "items": TOKEN_SCHEMA}}}, "Tokens."),
                **_errors(401)}),
            "post": _op("Create a scoped token; the answer holds its secret, shown this once.", {
                "201": _json({"allOf": [TOKEN_SCHEMA, {"type": "object", "properties": {"token": STR},
                                                       "required": ["token"]}]}, "Created."),
                **_errors(400, 401, 409, 413)},
                body=_one_of(
                    _body({"kind": {"type": "string", "enum": [models.WORKER_TOKEN]}, "machine": NAME,
                           "aliases": NAMES, "name": NAME}, ["kind", "machine"]),
                    _body({"kind": {"type": "string", "enum": [models.CLIENT_TOKEN, models.READER_TOKEN]},
                           "name": NAME}, ["kind", "name"]))),
        },
        "/v1/tokens/{id}/revoke": {"post": _op("Revoke a token: every replica refuses it from now on.", {
            "200": _json(TOKEN_SCHEMA, "Revoked (or already was)."), **_errors(401, 404)},
            params=[{"name": "id", "in": "path", "required": True,
                     "schema": {"type": "string", "minLength": 1, "maxLength": 64, "pattern": "^[0-9a-fA-F]+$"},
                     "description": "The token's id, as `da token list` shows it."}])},
    }
    for path, operations in paths.items():
        for method, operation in operations.items():
            access = auth.ACCESS.get((method.upper(), path))
            if access is not None:
                kinds = sorted(access)
                operation["x-da-access"] = kinds
                operation["description"] = "Credentials allowed: " + ", ".join(kinds) + (
                    "; a worker token only as its machine and for its machine's tasks." if "worker" in kinds
                    and "client" not in kinds else ".")
    task_schema = {"type": "object", "properties": {
        "id": STR, "short_id": STR, "type": STR, "status": STATUS, "priority": {"type": "integer"},
        "payload": {"type": "object"}, "target_machine": NULLABLE_STR, "preferred_machine": NULLABLE_STR,
        "agent": NULLABLE_STR, "lock": NULLABLE_STR, "created_by": NULLABLE_STR, "assigned_to": NULLABLE_STR,
        "attempts": {"type": "integer"}, "max_attempts": {"type": "integer"}, "lease_expires_at": TIME,
        "progress": NULLABLE_STR, "result": {"type": ["object", "null"]}, "notes": NULLABLE_STR,
        "changed_by": NULLABLE_STR, "created_at": TIME, "updated_at": TIME, "started_at": TIME,
        "finished_at": TIME, "events": {"type": "array", "items": {"$ref": "#/components/schemas/Event"}}},
        "required": ["id", "type", "status"]}
    token_schema = {"type": "object", "properties": {
        "id": STR, "kind": {"type": "string", "enum": list(models.TOKEN_KINDS)}, "name": STR,
        "machine": NULLABLE_STR, "aliases": {"type": "array", "items": STR}, "created_at": TIME,
        "revoked_at": TIME}, "required": ["id", "kind", "name"]}
    event_schema = {"type": "object", "properties": {
        "id": {"type": "integer"}, "task_id": STR, "from": NULLABLE_STR, "to": STATUS, "by": NULLABLE_STR,
        "at": TIME, "note": NULLABLE_STR}}
    return {
        "openapi": "3.1.0",
        "info": {"title": "da queue", "version": version},
        "paths": paths,
        "components": {
            "schemas": {"Task": task_schema, "Event": event_schema, "Token": token_schema, "Error": {
                "type": "object", "properties": {"error": STR, "detail": STR}, "required": ["error", "detail"]}},
            # The admin secret (SECRET_KEY) or a scoped token, in either header.
            "securitySchemes": {"secret": {"type": "apiKey", "in": "header", "name": "x-secret-key"},
                                "bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"secret": []}, {"bearer": []}],
    }
