"""What every route of the queue shares: the app's state, the one middleware, JSON in and out.

Domain errors raised anywhere below a route become `{"error": code, "detail": sentence}` in one
middleware; every route but the public ones (/health) needs the admin secret or a token allowed there
(`auth`). A route is declared once (`Route`): its handler, who may call it and its API document entry.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web
from aiohttp.typedefs import Middleware

from da.queue import auth, metrics, models
from da.queue.errors import (
    BadRequest,
    ClientGone,
    DatabaseUnavailable,
    NotFound,
    QueueError,
    RequestTimeout,
    TooLarge,
    TooManyConnections,
)
from da.queue.roster import Roster
from da.queue.settings import QueueSettings
from da.queue.store import Store

logger = logging.getLogger(__name__)
# One line per transition, structured (task_id, type, status, machine, by) for LOG_FORMAT=json.
transitions = logging.getLogger("da.queue.transitions")

# Seconds a client is told to wait after a 503 for an unavailable database (a failover takes a few).
RETRY_AFTER = 1

SETTINGS = web.AppKey("settings", QueueSettings)
STORE: web.AppKey[Store] = web.AppKey("store")
ROSTER = web.AppKey("roster", Roster)
CLAIM_LATENCY = web.AppKey("claim_latency", metrics.Histogram)
# Set when the service shuts down: parked long-polls (claims, feeds, heartbeats) answer at once.
CLOSING = web.AppKey("closing", asyncio.Event)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
# A typed path segment, `{id:[0-9a-fA-F-]+}`, as documents and the access table name it: `{id}`.
_TYPED_SEGMENT = re.compile(r"\{(\w+):[^}]+\}")


@dataclass(frozen=True)
class Route:
    """One route, declared once: the handler, who may call it, and its entry in /openapi.json."""

    method: str
    # As aiohttp matches it; a typed segment (`{id:[0-9a-fA-F-]+}`) limits what it may hold.
    path: str
    handler: Handler
    # The kinds of credential allowed (`auth`); None: public, asked for no credential.
    access: frozenset[str] | None
    # The OpenAPI operation; `openapi.document` adds what `access` says.
    doc: dict[str, Any]

    @property
    def template(self) -> str:
        """The path as the document and the access table name it (aiohttp's canonical form)."""
        return _TYPED_SEGMENT.sub(r"{\1}", self.path)

    def definition(self) -> web.RouteDef:
        """What aiohttp's router takes (a GET also answers HEAD)."""
        return web.route(self.method, self.path, self.handler)


def access_table(routes: Iterable[Route]) -> dict[tuple[str, str], frozenset[str]]:
    """Who may call each route that asks for a credential, by method and path."""
    return {(route.method, route.template): route.access for route in routes if route.access is not None}


def log_transition(task: Any, by: str | None = None) -> None:
    if transitions.isEnabledFor(logging.INFO):
        transitions.info("task %s %s is %s", task.short_id, task.type, task.status,
                         extra={"task_id": task.id, "type": task.type, "status": task.status,
                                "machine": task.assigned_to or task.target_machine, "by": by or task.changed_by})


def json_response(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json")


def error_response(error: QueueError) -> web.Response:
    return json_response({"error": error.code, "detail": error.detail}, status=error.status)


def middleware(gate: auth.Gate, public: frozenset[str]) -> Middleware:
    """Admit the request (credential and route, see `auth`) and turn every error into the one JSON shape.

    One middleware rather than two: it runs on every request, and each layer costs a
    coroutine frame on the hot path. `public` holds the paths that ask for no credential. While it
    runs, the connection is busy (`connections.ConnectionGuard.handling`): no timeout cuts it.
    """

    @web.middleware
    async def handle(request: web.Request, handler: Handler) -> web.StreamResponse:
        with gate.guard.handling(request.protocol):
            try:
                if request.path not in public:
                    request[auth.PRINCIPAL] = await gate.admit(request, request.app[STORE])
                return await handler(request)
            except DatabaseUnavailable as exc:
                # No primary answers: say so at once. The store logged the outage once, not per request.
                response = error_response(exc)
                response.headers["Retry-After"] = str(RETRY_AFTER)
                return response
            except QueueError as exc:
                if exc.status >= 500 and not isinstance(exc, TooManyConnections):
                    logger.error("%s %s failed: %s", request.method, auth.loggable_path(request), exc.detail)
                response = error_response(exc)
                if exc.retry_after:
                    response.headers["Retry-After"] = str(exc.retry_after)
                return response
            except web.HTTPRequestEntityTooLarge:
                limit = request.app[SETTINGS].max_body
                return error_response(TooLarge(f"the request body is larger than {limit} bytes; send less."))
            except web.HTTPException as exc:
                if exc.status == 404:
                    return error_response(NotFound(f"no route {request.path}; see /openapi.json."))
                code = exc.reason.lower().replace(" ", "_")
                detail = f"{exc.reason} for {request.method} {request.path}."
                response = json_response({"error": code, "detail": detail}, status=exc.status)
                if "Allow" in exc.headers:
                    response.headers["Allow"] = exc.headers["Allow"]
                return response
            except Exception:
                logger.exception("%s %s crashed", request.method, auth.loggable_path(request))
                return json_response({"error": "internal", "detail": "the queue hit an internal error; see its log."},
                                     status=500)

    return handle


async def read_json(request: web.Request) -> Any:
    """The body as JSON, or one sentence saying what is wrong with it (also when it arrives too slowly)."""
    limit = request.app[SETTINGS].body_timeout
    try:
        if request.content.is_eof():
            raw = await request.read()  # all of it has arrived: nothing to wait for, so no timer to set
        else:
            async with asyncio.timeout(limit):
                raw = await request.read()
    except TimeoutError:
        logger.warning("%s %s from %s: the body did not arrive within %g s (slow client)", request.method,
                       auth.loggable_path(request), request.remote, limit)
        raise RequestTimeout(f"the request body did not arrive within {limit:g} s; send it all at once.") from None
    except ConnectionError:
        # Routine: a worker cancelling a heartbeat, a client killed mid-send. Nobody is left to answer.
        logger.info("%s %s from %s: the client went away before its body arrived (%d of %s bytes)", request.method,
                    auth.loggable_path(request), request.remote, request.content.total_bytes,
                    request.content_length if request.content_length is not None else "?")
        raise ClientGone() from None
    if not raw:
        return {}
    try:
        return orjson.loads(raw)  # it refuses text that is not UTF-8, which is then told apart below
    except orjson.JSONDecodeError as exc:
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError:
            raise BadRequest("the request body is not UTF-8 text; send JSON.") from None
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


def lease_of(body: Any, *also: str) -> str:
    """The `lease` a worker's request proves itself with, refusing fields other than `also`."""
    body = models.require_object(body)
    models.reject_unknown(body, ("lease", *also))
    return models.get_str(body, "lease", required=True) or ""


def ask_number(request: web.Request) -> int:
    """The `{ask_id}` of the path: asks are numbered 1, 2, ... per task."""
    raw = request.match_info["ask_id"]
    if not raw.isdigit() or len(raw) > 9:
        raise BadRequest(f"{raw[:40]!r} is not an ask number; `da show` lists a task's asks as 1, 2, ...")
    return int(raw)


def only_machine(request: web.Request) -> str | None:
    """The machine a worker token limits this request to (None: the admin may act on any task)."""
    return request[auth.PRINCIPAL].only_machine


def disconnected(request: web.Request) -> bool:
    """The client went away, or the service is shutting down: a waiting answer ends now."""
    transport = request.transport
    return transport is None or transport.is_closing() or request.app[CLOSING].is_set()
