"""An async client for the queue's HTTP API, used by the worker, the bot and the terminal.

It fails over across a list of queue URLs and retries requests that never reached a server.
A request that may have reached one is retried only where the route is idempotent, so a
lost answer never creates a task twice.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

import httpx

from da import config
from da.queue import errors
from da.queue.errors import QueueError, QueueUnreachable
from da.queue.models import ID_PREFIX_PATTERN, MAX_WAIT, Ask, Event, Message, Task, Token, parse_iso
from da.queue.settings import DEFAULT_LEASE

logger = logging.getLogger(__name__)

# Per request; a claim or event long-poll adds its own wait on top.
DEFAULT_TIMEOUT = 10.0
# Each URL is tried this many rounds before giving up, with doubling pauses between rounds.
DEFAULT_ROUNDS = 3
FIRST_BACKOFF = 0.2

_CONFLICTS: dict[str, type[QueueError]] = {"lease_lost": errors.LeaseLost, "lock_held": errors.LockHeld}
_BY_STATUS: dict[int, type[QueueError]] = {
    400: errors.BadRequest, 401: errors.Unauthorized, 403: errors.Forbidden, 404: errors.NotFound,
    408: errors.RequestTimeout, 413: errors.TooLarge,
    # A body the queue understood but holds invalid: the same request would be refused again, like a 400.
    422: errors.BadRequest,
}


@dataclass(frozen=True)
class ClaimedTask:
    """A task this worker now holds, with the lease that proves it."""

    task: Task
    lease: str
    lease_expires_at: float
    # Seconds left on the lease as the queue answered: the only lease figure a worker should time by.
    lease_seconds: float


@dataclass(frozen=True)
class Heartbeat:
    cancel: bool
    status: str
    lease_seconds: float | None = None
    # Steering messages handed over with this answer (only when the heartbeat asked for them).
    messages: tuple[Message, ...] = ()


@dataclass(frozen=True)
class AskWait:
    """Where an ask stands after a worker waited for it, and whether its task was cancelled meanwhile."""

    ask: Ask
    cancel: bool
    status: str


@dataclass(frozen=True)
class Progress:
    """A task's progress as `da watch` follows it: record, revision, status, asks and usage."""

    task_id: str
    status: str
    progress_rev: int
    record: dict[str, Any] | None
    line: str | None
    usage: dict[str, Any] | None
    asks: tuple[Ask, ...]


def task_path(task_id: str) -> str:
    """The route of one task; an id that is not hex cannot name one, so it is not sent at all."""
    if not ID_PREFIX_PATTERN.fullmatch(task_id):
        raise errors.NotFound(f"no task with id {task_id[:40]!r}; ids are hex, like the ones `queue` lists.")
    return f"/v1/tasks/{task_id}"


def error_from(response: httpx.Response) -> QueueError:
    """The domain error an error response stands for, with the server's sentence."""
    try:
        body = response.json()
        code, detail = body.get("error", ""), body.get("detail") or response.text
    except ValueError:
        code, detail = "", response.text[:200] or response.reason_phrase
    if response.status_code == 409:
        cls: type[QueueError] = _CONFLICTS.get(code, errors.Conflict)
    elif response.status_code == 503 and code == errors.DatabaseUnavailable.code:
        cls = errors.DatabaseUnavailable
    else:
        cls = _BY_STATUS.get(response.status_code, QueueError)
    error = cls(detail)
    if cls is QueueError:
        error.status = response.status_code
    return error


class QueueClient:
    """One logical queue behind one or more URLs."""

    def __init__(self, urls: str | list[str], secret: str, *, timeout: float = DEFAULT_TIMEOUT,
                 rounds: int = DEFAULT_ROUNDS, transport: httpx.AsyncBaseTransport | None = None) -> None:
        if isinstance(urls, str):
            urls = [u.strip() for u in urls.split(",") if u.strip()]
        if not urls:
            raise ValueError(f"no queue URL given; set QUEUE_URL, e.g. {config.DEFAULT_QUEUE_URL}")
        self.urls = [u.rstrip("/") for u in urls]
        self.rounds = rounds
        self._current = 0
        # Loading the CA bundle costs ~0.1 s per process; plain-http queues (the loopback and
        # Tailscale default) never use it, and an https URL always gets full verification.
        verify = any(url.startswith("https://") for url in self.urls)
        self._http = httpx.AsyncClient(timeout=timeout, headers={"x-secret-key": secret}, transport=transport,
                                       verify=verify)

    @property
    def url(self) -> str:
        """The URL that answered last."""
        return self.urls[self._current]

    async def close(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> QueueClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def request(self, method: str, path: str, *, json: Any = None, params: dict[str, Any] | None = None,
                      idempotent: bool = True, timeout: float | None = None) -> httpx.Response:
        """Send to the current URL, failing over to the others on connection errors."""
        extra: dict[str, Any] = {} if timeout is None else {"timeout": timeout}
        delay = FIRST_BACKOFF
        last_error: Exception | None = None
        unavailable: errors.DatabaseUnavailable | None = None
        for round_number in range(self.rounds):
            first = self._current
            for offset in range(len(self.urls)):
                index = (first + offset) % len(self.urls)
                try:
                    response = await self._http.request(method, self.urls[index] + path, json=json,
                                                        params=params, **extra)
                except httpx.ConnectError as exc:
                    last_error = exc
                    self._passed(index)
                    continue
                except (httpx.TransportError, httpx.TimeoutException) as exc:
                    # A replica that hangs (paused, overloaded) is not asked first again: the next
                    # request, and this one's retry, go to the next URL.
                    self._passed(index)
                    if not idempotent:
                        raise QueueUnreachable(f"queue at {self.urls[index]} did not answer ({type(exc).__name__})"
                                               "; the request may or may not have been applied.") from exc
                    last_error = exc
                    continue
                self._current = index
                if response.status_code >= 400:
                    error = error_from(response)
                    if isinstance(error, errors.DatabaseUnavailable) and idempotent:
                        # That replica lost the database; another may still reach it (or a new primary).
                        unavailable = error
                        continue
                    raise error
                return response
            if round_number + 1 < self.rounds:
                await asyncio.sleep(delay)
                delay *= 2
        if unavailable is not None:
            raise unavailable
        raise QueueUnreachable(f"queue unreachable at {', '.join(self.urls)} ({type(last_error).__name__}).")

    def _passed(self, index: int) -> None:
        """The URL at `index` did not answer: the next request starts at the one after it."""
        if index == self._current:
            self._current = (index + 1) % len(self.urls)

    # ---- API ---------------------------------------------------------------------

    async def health(self) -> dict[str, Any]:
        return (await self.request("GET", "/health")).json()

    async def create_task(self, type: str, payload: dict[str, Any] | None = None, **fields: Any) -> Task:
        """Create a task; not retried once sent, so it is never created twice."""
        body = {"type": type, "payload": payload or {}, **{k: v for k, v in fields.items() if v is not None}}
        response = await self.request("POST", "/v1/tasks", json=body, idempotent=False)
        return Task.from_json(response.json())

    async def list_tasks(self, *, status: str | None = None, machine: str | None = None, type: str | None = None,
                         limit: int | None = None, before: int | None = None) -> tuple[list[Task], int | None]:
        params = {k: v for k, v in {"status": status, "machine": machine, "type": type, "limit": limit,
                                    "before": before}.items() if v is not None}
        body = (await self.request("GET", "/v1/tasks", params=params)).json()
        return [Task.from_json(t) for t in body["tasks"]], body["next"]

    async def get_task(self, task_id: str) -> Task:
        return Task.from_json((await self.request("GET", task_path(task_id))).json())

    async def task_events(self, task_id: str) -> list[Event]:
        return (await self.task_with_events(task_id))[1]

    async def task_details(self, task_id: str) -> tuple[Task, list[Event], list[Ask]]:
        """A task with its events and asks."""
        body = (await self.request("GET", task_path(task_id))).json()
        return (Task.from_json(body), [_event(e) for e in body.get("events", [])],
                [Ask.from_json(a) for a in body.get("asks", [])])

    async def task_with_events(self, task_id: str) -> tuple[Task, list[Event]]:
        """A task and its transitions, in one request."""
        body = (await self.request("GET", task_path(task_id))).json()
        return Task.from_json(body), [_event(e) for e in body.get("events", [])]

    async def claim(self, machine: str, capabilities: list[str], *, agents: list[str] | None = None,
                    aliases: list[str] | None = None, retry_safe: list[str] | None = None, wait: float = 0.0,
                    lease: float | None = None, timeout: float = DEFAULT_TIMEOUT) -> ClaimedTask | None:
        """Wait up to `wait` seconds for a task; None when there was nothing to take. A URL that has not
        answered `timeout` seconds after the wait is given up for the next one."""
        body: dict[str, Any] = {"machine": machine, "capabilities": capabilities, "agents": agents or [],
                                "aliases": aliases or [], "retry_safe": retry_safe or [], "wait": wait}
        if lease is not None:
            body["lease"] = lease
        response = await self.request("POST", "/v1/claim", json=body, idempotent=False, timeout=timeout + wait)
        if response.status_code == 204:
            return None
        return _claimed(response.json(), lease)

    async def start(self, task_id: str, lease: str, *, checkout: str | None = None,
                    timeout: float | None = None) -> Task:
        """Record the start; `checkout` is the task's folder resolved on this machine (its lock's key)."""
        body = {"lease": lease, **({"checkout": checkout} if checkout else {})}
        return Task.from_json((await self.request("POST", f"/v1/tasks/{task_id}/start", json=body,
                                                  timeout=timeout)).json())

    async def release(self, task_id: str, lease: str, *, timeout: float | None = None) -> Task:
        """Hand back a claim this worker will not start."""
        return Task.from_json((await self.request("POST", f"/v1/tasks/{task_id}/release",
                                                  json={"lease": lease}, timeout=timeout)).json())

    async def heartbeat(self, task_id: str, lease: str, progress: str | None = None, *,
                        lease_seconds: float | None = None, wait: float = 0.0, messages: bool = False,
                        timeout: float | None = None) -> Heartbeat:
        """Extend the lease (by `lease_seconds`, else the queue's default) and report progress; the
        answer comes after `wait` seconds, or as soon as the task is cancelled (or, with `messages`, as
        soon as a steering message is queued for it: they come with the answer, each once). Each URL gets
        `timeout` seconds in all (the wait included; by default the wait plus DEFAULT_TIMEOUT) before the next."""
        body: dict[str, Any] = {"lease": lease, **({"progress": progress} if progress else {})}
        if messages:
            body["messages"] = True
        if lease_seconds is not None:
            body["extend"] = lease_seconds
        if wait:
            body["wait"] = wait
        data = (await self.request("POST", f"/v1/tasks/{task_id}/heartbeat", json=body,
                                   timeout=DEFAULT_TIMEOUT + wait if timeout is None else timeout)).json()
        seconds = data.get("lease_seconds")
        return Heartbeat(bool(data["cancel"]), data["status"], None if seconds is None else float(seconds),
                         tuple(_message(m) for m in data.get("messages") or ()))

    async def report(self, task_id: str, lease: str, status: str, result: dict[str, Any], *,
                     notes: str | None = None, action: str | None = None, timeout: float | None = None) -> Task:
        """Report an outcome; safe to repeat until it is acknowledged."""
        body = {"lease": lease, "status": status, "result": result,
                **({"notes": notes} if notes else {}), **({"action": action} if action else {})}
        return Task.from_json((await self.request("POST", f"/v1/tasks/{task_id}/report", json=body,
                                                  timeout=timeout)).json())

    async def report_and_claim(self, task_id: str, lease: str, status: str, result: dict[str, Any],
                               claim: dict[str, Any], *, notes: str | None = None,
                               action: str | None = None,
                               timeout: float | None = None) -> tuple[Task, ClaimedTask | None]:
        """Report an outcome and claim the next task (`claim`: /v1/claim's fields without `wait`) in one
        request; safe to repeat until acknowledged (a repeat claims nothing). None: nothing was ready."""
        body = {"lease": lease, "status": status, "result": result, "claim": claim,
                **({"notes": notes} if notes else {}), **({"action": action} if action else {})}
        data = (await self.request("POST", f"/v1/tasks/{task_id}/report", json=body, timeout=timeout)).json()
        handed = data.pop("next", None)
        return Task.from_json(data), None if handed is None else _claimed(handed, claim.get("lease"))

    async def resolve(self, task_id: str, status: str, *, notes: str | None = None, by: str | None = None) -> Task:
        body = {"status": status, **({"notes": notes} if notes else {}), **({"by": by} if by else {})}
        return Task.from_json((await self.request("POST", task_path(task_id) + "/resolve", json=body)).json())

    async def resolve_many(self, from_status: str, status: str, *, notes: str | None = None, by: str | None = None,
                           dry_run: bool = False) -> dict[str, Any]:
        body = {"from_status": from_status, "status": status, "dry_run": dry_run,
                **({"notes": notes} if notes else {}), **({"by": by} if by else {})}
        return (await self.request("POST", "/v1/tasks/resolve", json=body)).json()

    async def cancel(self, task_id: str, *, by: str | None = None, notes: str | None = None) -> Task:
        body = {**({"by": by} if by else {}), **({"notes": notes} if notes else {})}
        return Task.from_json((await self.request("POST", task_path(task_id) + "/cancel", json=body)).json())

    async def prune(self, older_than: float) -> int:
        """Remove finished tasks older than `older_than` seconds; returns how many."""
        return (await self.request("POST", "/v1/prune", json={"older_than": older_than})).json()["removed"]

    async def machines(self) -> list[dict[str, Any]]:
        return (await self.request("GET", "/v1/machines")).json()["machines"]

    async def events(self, after: int = 0, *, wait: float = 0.0, limit: int | None = None) -> tuple[list[Event], int]:
        """Events after `after`, waiting up to `wait` seconds for the first; returns them and the last id."""
        params: dict[str, Any] = {"after": after, "wait": wait}
        if limit:
            params["limit"] = limit
        body = (await self.request("GET", "/v1/events", params=params, timeout=DEFAULT_TIMEOUT + wait)).json()
        return [_event(e) for e in body["events"]], body["last"]

    async def acquire_lease(self, name: str, holder: str, ttl: float,
                            data: dict[str, Any] | None = None) -> tuple[float, dict[str, Any] | None]:
        """Take or renew a named lease, keeping `data` with it; returns when it expires and the data it
        holds (a previous holder's, when this one did not send any). Conflict while another holder has it."""
        body = (await self.request("POST", f"/v1/leases/{name}", json={"holder": holder, "ttl": ttl, "data": data})
                ).json()
        return parse_iso(body["expires_at"]) or 0.0, body.get("data")

    async def release_lease(self, name: str, holder: str) -> bool:
        """Let go of a named lease; False when nobody held it."""
        return bool((await self.request("DELETE", f"/v1/leases/{name}", params={"holder": holder})).json()["released"])

    async def whoami(self) -> dict[str, Any]:
        """What this client's credential is (admin, or a token's kind, name and machine) and may do."""
        return (await self.request("GET", "/v1/whoami")).json()

    async def create_token(self, kind: str, *, name: str | None = None, machine: str | None = None,
                           aliases: list[str] | None = None) -> tuple[Token, str]:
        """A new scoped token and its secret (shown this once); needs the admin secret."""
        body = {"kind": kind, **{k: v for k, v in {"name": name, "machine": machine, "aliases": aliases}.items() if v}}
        data = (await self.request("POST", "/v1/tokens", json=body, idempotent=False)).json()
        return Token.from_json(data), data["token"]

    async def tokens(self) -> list[Token]:
        return [Token.from_json(t) for t in (await self.request("GET", "/v1/tokens")).json()["tokens"]]

    async def revoke_token(self, token_id: str) -> Token:
        return Token.from_json((await self.request("POST", f"/v1/tokens/{token_id}/revoke")).json())

    # ---- supervised sessions --------------------------------------------------------

    async def open_ask(self, task_id: str, lease: str, kind: str, title: str, options: list[tuple[str, str]], *,
                       detail: str = "") -> Ask:
        """Ask a person about the task this lease holds; Conflict when it already has too many open asks."""
        body = {"lease": lease, "kind": kind, "title": title, "detail": detail,
                "options": [{"id": option_id, "label": label} for option_id, label in options]}
        return Ask.from_json((await self.request("POST", task_path(task_id) + "/asks", json=body)).json())

    async def wait_answer(self, task_id: str, lease: str, ask_id: int, *, wait: float) -> AskWait:
        """Wait up to `wait` seconds for a person's answer (or the ask's expiry, or a cancel)."""
        data = (await self.request("POST", f"{task_path(task_id)}/asks/{ask_id}/wait",
                                   json={"lease": lease, "wait": wait}, timeout=DEFAULT_TIMEOUT + wait)).json()
        return AskWait(Ask.from_json(data["ask"]), bool(data["cancel"]), data["status"])

    async def answer_ask(self, task_id: str, ask_id: int, option: str, *, note: str | None = None,
                         by: str | None = None) -> Ask:
        """Answer an ask; Conflict when someone answered first (it says who) or it expired."""
        body = {"option": option, **({"note": note} if note else {}), **({"by": by} if by else {})}
        return Ask.from_json((await self.request("POST", f"{task_path(task_id)}/asks/{ask_id}", json=body)).json())

    async def asks(self, task_id: str) -> list[Ask]:
        """A task's asks, oldest first."""
        return [Ask.from_json(a) for a in (await self.request("GET", task_path(task_id))).json().get("asks", [])]

    async def open_asks(self) -> list[Ask]:
        """Open asks across the fleet, oldest first."""
        return [Ask.from_json(a) for a in (await self.request("GET", "/v1/asks")).json()["asks"]]

    async def save_progress(self, task_id: str, lease: str, record: dict[str, Any]) -> int:
        """Replace the task's progress record; returns its new revision."""
        data = (await self.request("POST", task_path(task_id) + "/progress",
                                   json={"lease": lease, "progress": record})).json()
        return int(data["progress_rev"])

    async def record_workspace(self, task_id: str, facts: dict[str, Any]) -> Task:
        """Keep a later delivery's workspace facts (`workspace`, `workspaces`) on the finished task."""
        return Task.from_json((await self.request("POST", task_path(task_id) + "/workspace", json=facts)).json())

    async def follow_progress(self, task_id: str, *, after: int = -1, status: str | None = None,
                              wait: float = 0.0) -> Progress:
        """The task's progress once its revision passes `after` or its status is no longer `status`."""
        params: dict[str, Any] = {"after": after, "wait": wait, **({"status": status} if status else {})}
        data = (await self.request("GET", task_path(task_id) + "/progress", params=params,
                                   timeout=DEFAULT_TIMEOUT + wait)).json()
        return Progress(data["id"], data["status"], int(data["progress_rev"]), data.get("progress_record"),
                        data.get("progress"), data.get("usage"), tuple(Ask.from_json(a) for a in data["asks"]))

    async def wait_for_status(self, task_id: str, statuses: Collection[str], timeout: float) -> Progress:
        """Follow the task until its status is one of `statuses` or `timeout` passes, each request held by the
        queue until the task changes; the last progress seen, whose status says which it was."""
        deadline = asyncio.get_running_loop().time() + timeout
        progress = await self.follow_progress(task_id)
        while progress.status not in statuses:
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                break
            progress = await self.follow_progress(task_id, after=progress.progress_rev, status=progress.status,
                                                  wait=min(left, MAX_WAIT))
        return progress

    async def send_message(self, task_id: str, text: str, *, interrupt: bool = False, by: str | None = None) -> Message:
        """Queue a steering message for the task's running session."""
        body = {"text": text, "interrupt": interrupt, **({"by": by} if by else {})}
        return _message((await self.request("POST", task_path(task_id) + "/messages", json=body)).json())


def _message(data: dict[str, Any]) -> Message:
    return Message(int(data["id"]), data["task_id"], data["text"], bool(data["interrupt"]), data.get("created_by"),
                   parse_iso(data.get("created_at")) or 0.0, parse_iso(data.get("delivered_at")),
                   data.get("created_via"))


def _claimed(data: dict[str, Any], lease: float | None) -> ClaimedTask:
    """A claim's answer; a queue older than `lease_seconds` granted what was asked, else its default lease."""
    seconds = data.get("lease_seconds", lease or DEFAULT_LEASE)
    return ClaimedTask(Task.from_json(data["task"]), data["lease"], parse_iso(data["lease_expires_at"]) or 0.0,
                       float(seconds))


def _event(data: dict[str, Any]) -> Event:
    return Event(data["id"], data["task_id"], data["from"], data["to"], data["by"], parse_iso(data["at"]) or 0.0,
                 data["note"], data.get("ask"), data.get("via"))
