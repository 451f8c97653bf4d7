"""The OpenAPI 3 document of the queue's HTTP API, served at /openapi.json.

Each route's entry is written by hand in its declaration (`routes.ROUTES`), from the schemas and
helpers here, rather than generated, to avoid a framework for one page; `document` puts them
together with who may call each route.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from da.queue import models

if TYPE_CHECKING:
    from da.queue.http import Route

STR = {"type": "string"}
# Free text people send: any characters but NUL, which PostgreSQL text cannot hold.
TEXT = {"type": "string", "pattern": "^[^\\x00]*$"}
NOTES = {**TEXT, "maxLength": models.MAX_NOTES}
WHO = {**TEXT, "maxLength": models.MAX_NAME}
TOKEN = {"type": "string", "minLength": 1, "maxLength": models.MAX_NAME, "pattern": "^[0-9a-fA-F]+$"}
NULLABLE_STR = {"type": ["string", "null"]}
# The credential the queue verified, beside a `by` or `created_by` the client chose.
VIA = {"type": ["string", "null"], "description": "The credential that acted, as the queue verified it: "
       "'admin secret' or 'KIND token NAME (ID)'; null for the queue's own changes and a worker's."}
NAME = {"type": "string", "maxLength": models.MAX_NAME, "pattern": models.NAME_PATTERN.pattern}
NAMES = {"type": "array", "items": NAME}
# Optional names may also be empty, which the service treats as absent.
OPT_NAME = {"type": "string", "maxLength": models.MAX_NAME, "pattern": f"^({models.NAME_PATTERN.pattern[1:-1]})?$"}
TIME = {"type": ["string", "null"], "format": "date-time"}
STATUS = {"type": "string", "enum": list(models.STATUSES)}
ERROR = {"$ref": "#/components/schemas/Error"}
TASK = {"$ref": "#/components/schemas/Task"}
TOKEN_SCHEMA = {"$ref": "#/components/schemas/Token"}
ASK = {"$ref": "#/components/schemas/Ask"}
MESSAGE = {"$ref": "#/components/schemas/Message"}
USAGE = {"type": ["object", "null"], "properties": {
    "input_tokens": {"type": "integer", "minimum": 0, "maximum": 10**12},
    "output_tokens": {"type": "integer", "minimum": 0, "maximum": 10**12},
    "cost_usd": {"type": ["number", "null"], "minimum": 0, "maximum": 10**12}}}


def json_answer(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def error_answers(*codes: int) -> dict[str, Any]:
    text = {400: "Malformed input; the detail names the field.",
            401: "Missing, wrong or revoked credential (after many wrong ones from an address, answered slowly).",
            403: "This credential may not do that (see x-da-access); the detail says what it may do.",
            404: "No such task.", 408: "The request body did not arrive in time.",
            409: "The task's state does not allow this.", 413: "Body too large.",
            429: "too_many_guesses: after many wrong credentials from an address, a new one was not checked."}
    if 401 in codes:
        codes = (*codes, 403, 429)
    answers = {str(code): json_answer(ERROR, text[code]) for code in codes}
    # Every route that reads or writes the database may meet it unavailable (a failover under way).
    answers["503"] = {**json_answer(ERROR, "database_unavailable: the database does not answer (a failover under way); "
                                     "nothing changed, try again. too_many_connections: the credential holds "
                                     "as many connections as it may, all busy."),
                      "headers": {"Retry-After": {"schema": {"type": "integer"}, "description": "Seconds to wait."}}}
    return answers


def nullable(schema: dict[str, Any]) -> dict[str, Any]:
    kind = schema.get("type")
    if kind is None or "enum" in schema:
        return {"anyOf": [schema, {"type": "null"}]}
    kinds = kind if isinstance(kind, list) else [kind]
    return {**schema, "type": [*kinds, "null"] if "null" not in kinds else kinds}


def json_body(properties: dict[str, Any], required: list[str]) -> dict[str, Any]:
    """A JSON object body; optional fields may be null, which the service treats as absent."""
    properties = {k: v if k in required else nullable(v) for k, v in properties.items()}
    schema = {"type": "object", "properties": properties, "required": required, "additionalProperties": False}
    return {"required": bool(required), "content": {"application/json": {"schema": schema}}}


def one_of(*bodies: dict[str, Any]) -> dict[str, Any]:
    """A body that is exactly one of several shapes (a worker token has a machine, the others a name)."""
    schemas = [body["content"]["application/json"]["schema"] for body in bodies]
    return {"required": True, "content": {"application/json": {"schema": {"oneOf": schemas}}}}


def operation(summary: str, responses: dict[str, Any], *, body: dict[str, Any] | None = None,
              params: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """One route's entry; a route with a body may also time out reading it (408)."""
    entry: dict[str, Any] = {"summary": summary, "responses": responses}
    if body:
        entry["requestBody"] = body
        responses.setdefault("408", error_answers(408)["408"])
    if params:
        entry["parameters"] = params
    return entry


def query_param(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
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
PAYLOAD = {"type": "object", "properties": {"_target_machine": nullable(OPT_NAME),
                                            "lock": nullable(OPT_NAME)},
           "description": f"Free-form, nested at most {models.MAX_DEPTH} levels of objects and arrays."}
RESULT = {"type": "object",
          "description": f"Free-form, nested at most {models.MAX_DEPTH} levels of objects and arrays."}
# Workers time heartbeats by this duration, never by `lease_expires_at` against their own clock.
LEASE_LEFT = {"type": "number", "minimum": 0, "description": "Seconds left on the lease when answered."}
# What any route on one task may answer besides its success.
TASK_ERRORS = error_answers(400, 401, 404, 409)
RESOLVE_FIELDS = {"status": {"type": "string", "enum": list(models.RESOLVE_TO)},
                  "notes": NOTES, "by": WHO}


def document(version: str, routes: Iterable[Route]) -> dict[str, Any]:
    """The whole document: each route's entry, with who may call it (`x-da-access`) taken from its declaration."""
    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        entry = {**route.doc}
        if route.access is None:
            entry["security"] = []
        else:
            kinds = sorted(route.access)
            entry["x-da-access"] = kinds
            entry["description"] = "Credentials allowed: " + ", ".join(kinds) + (
                "; a worker token only as its machine and for its machine's tasks." if "worker" in kinds
                and "client" not in kinds else ".")
        paths.setdefault(route.template, {})[route.method.lower()] = entry
    task_schema = {"type": "object", "properties": {
        "id": STR, "short_id": STR, "type": STR, "status": STATUS, "priority": {"type": "integer"},
        "payload": {"type": "object"}, "target_machine": NULLABLE_STR, "preferred_machine": NULLABLE_STR,
        "agent": NULLABLE_STR, "lock": NULLABLE_STR, "checkout": NULLABLE_STR, "created_by": NULLABLE_STR,
        "created_via": VIA, "assigned_to": NULLABLE_STR,
        "attempts": {"type": "integer"}, "max_attempts": {"type": "integer"}, "lease_expires_at": TIME,
        "progress": NULLABLE_STR, "progress_record": {"type": ["object", "null"]}, "progress_rev": {"type": "integer"},
        "usage": USAGE, "result": {"type": ["object", "null"]}, "notes": NULLABLE_STR,
        "changed_by": NULLABLE_STR, "created_at": TIME, "updated_at": TIME, "started_at": TIME,
        "finished_at": TIME, "events": {"type": "array", "items": {"$ref": "#/components/schemas/Event"}},
        "asks": {"type": "array", "items": ASK}},
        "required": ["id", "type", "status"]}
    token_schema = {"type": "object", "properties": {
        "id": STR, "kind": {"type": "string", "enum": list(models.TOKEN_KINDS)}, "name": STR,
        "machine": NULLABLE_STR, "aliases": {"type": "array", "items": STR}, "created_at": TIME,
        "revoked_at": TIME}, "required": ["id", "kind", "name"]}
    event_schema = {"type": "object", "properties": {
        "id": {"type": "integer"}, "task_id": STR, "from": NULLABLE_STR, "to": STATUS, "by": NULLABLE_STR,
        "at": TIME, "note": NULLABLE_STR,
        "ask": {"type": ["integer", "null"], "description": "The ask this event opened or settled."}, "via": VIA}}
    ask_schema = {"type": "object", "properties": {
        "id": {"type": "integer"}, "task_id": STR, "kind": {"type": "string", "enum": list(models.ASK_KINDS)},
        "title": STR, "detail": STR,
        "options": {"type": "array", "items": {"type": "object", "properties": {"id": STR, "label": STR}}},
        "status": {"type": "string", "enum": list(models.ASK_STATUSES)}, "answer": NULLABLE_STR, "note": NULLABLE_STR,
        "answered_by": NULLABLE_STR, "created_at": TIME, "expires_at": TIME, "answered_at": TIME,
        "machine": NULLABLE_STR, "answered_via": VIA},
        "required": ["id", "task_id", "kind", "title", "options", "status"]}
    message_schema = {"type": "object", "properties": {
        "id": {"type": "integer"}, "task_id": STR, "text": STR, "interrupt": {"type": "boolean"},
        "created_by": NULLABLE_STR, "created_at": TIME, "delivered_at": TIME, "created_via": VIA}}
    return {
        "openapi": "3.1.0",
        "info": {"title": "da queue", "version": version},
        "paths": paths,
        "components": {
            "schemas": {"Task": task_schema, "Event": event_schema, "Token": token_schema, "Ask": ask_schema,
                        "Message": message_schema, "Error": {
                "type": "object", "properties": {"error": STR, "detail": STR}, "required": ["error", "detail"]}},
            # The admin secret (SECRET_KEY) or a scoped token, in either header.
            "securitySchemes": {"secret": {"type": "apiKey", "in": "header", "name": "x-secret-key"},
                                "bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"secret": []}, {"bearer": []}],
    }
