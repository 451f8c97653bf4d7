"""The task model and the parsing of every request body into typed values.

Validation lives here so the HTTP layer stays thin and every entry point (HTTP, client,
bot) answers bad input with the same one-sentence error.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import re
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from da.queue.errors import BadRequest

PENDING = "pending"
CLAIMED = "claimed"
IN_PROGRESS = "in_progress"
DONE = "done"
FAILED = "failed"
NEEDS_HUMAN = "needs_human"
CANCELLED = "cancelled"
# Running, but waiting for a person to answer an ask: the lease is kept alive by the worker.
WAITING = "waiting"

STATUSES = (PENDING, CLAIMED, IN_PROGRESS, WAITING, DONE, FAILED, NEEDS_HUMAN, CANCELLED)
ACTIVE = (CLAIMED, IN_PROGRESS, WAITING)
TERMINAL = (DONE, FAILED, NEEDS_HUMAN, CANCELLED)
REPORTABLE = (DONE, FAILED, NEEDS_HUMAN)
RESOLVABLE_FROM = (NEEDS_HUMAN, FAILED)
RESOLVE_TO = (DONE, FAILED, PENDING)

# A short id is the first 8 hex chars of the uuid; 4 is the shortest prefix we look up.
SHORT_ID_LENGTH = 8
MIN_PREFIX = 4
# Names (types, machines, agents) are identifiers people type; 100 chars is generous.
MAX_NAME = 100
# Notes are one line for people; 4000 leaves room for a pasted error.
MAX_NOTES = 4000
MAX_PRIORITY = 10
DEFAULT_PRIORITY = 5
DEFAULT_MAX_ATTEMPTS = 3
# Enough for a flaky worker, few enough that a poison task reaches a human quickly.
MAX_ATTEMPTS_LIMIT = 20
# A long-poll longer than a minute outlives most proxies' idle timeouts.
MAX_WAIT = 60.0
MAX_LEASE = 3600.0
MIN_LEASE = 1.0
MAX_LIMIT = 500
# A named lease lasts 5 s to an hour; its holder renews it well before it runs out.
MIN_NAMED_LEASE = 5.0
MAX_NAMED_LEASE = 3600.0
# What a holder keeps with a named lease (a cursor, a note) stays small.
MAX_LEASE_DATA = 2000
# A folder path as an operating system allows it (PATH_MAX on Linux).
MAX_PATH = 4096
# The payload fields that may name a task's folder, in the order the checkout lock reads them; a
# handler's FOLDER_FIELD must be one (the worker's registry refuses another), or its task gets no lock.
FOLDER_FIELDS = ("cwd", "repo_path")
# Payloads and results nest at most this many levels of objects and arrays. Real ones use two or
# three; the JSON encoder that answers every request stops at 255, and a stored task it cannot
# encode would break every listing that includes it.
MAX_DEPTH = 64

# Names (type, machine, agent, lock, capability, token) and lease names are checked with fullmatch
# everywhere: `$` alone lets a trailing newline through, and `run_script\n` would never be claimed.
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:@/~+-]*$")
# A lease's name is one URL path segment: a name without the slash.
LEASE_NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:@~+-]*$")
ID_PREFIX_PATTERN = re.compile(r"^[0-9a-fA-F-]+$")
# What a NUL in a task's output is stored as (PostgreSQL cannot store NUL; SQLite's text functions stop at it).
NUL_MARK = "\u2400"
NUL_NOTE = "NUL characters in the outcome are shown as \u2400"


def iso(timestamp: float | None) -> str | None:
    """Epoch seconds as an ISO 8601 UTC string, the form every API answer uses."""
    if timestamp is None:
        return None
    seconds = int(timestamp // 1)
    return f"{_iso_seconds(seconds)}.{int((timestamp - seconds) * 1000):03d}Z"


@functools.lru_cache(maxsize=4096)
def _iso_seconds(seconds: int) -> str:
    # Every answer formats several timestamps, mostly of the same few seconds.
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))


def parse_iso(value: str | None) -> float | None:
    """The inverse of `iso`, for clients."""
    if not value:
        return None
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


class Row(Protocol):
    """A result row as either driver returns it (sqlite3.Row, asyncpg.Record)."""

    def keys(self) -> Iterable[str]: ...

    def __getitem__(self, key: str) -> Any: ...

    def __iter__(self) -> Iterator[Any]: ...


@dataclass(frozen=True)
class Task:
    """A unit of work and where it stands."""

    id: str
    type: str
    status: str
    priority: int = DEFAULT_PRIORITY
    payload: dict[str, Any] = field(default_factory=dict)
    target_machine: str | None = None
    preferred_machine: str | None = None
    agent: str | None = None
    # A named lock, held once in the fleet; the checkout (the task's folder) is held once per machine
    # whether or not the task names a lock.
    lock: str | None = None
    checkout: str | None = None
    # Who the creator said it was, and the credential the queue verified ('client token NAME (ID)').
    created_by: str | None = None
    created_via: str | None = None
    assigned_to: str | None = None
    attempts: int = 0
    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    lease_expires_at: float | None = None
    progress: str | None = None
    # A supervised session's bounded progress record (plan, last tool calls, answer tail), replaced
    # whole each time; progress_rev counts the replacements.
    progress_record: dict[str, Any] | None = None
    progress_rev: int = 0
    # Tokens and cost the agent reported: {input_tokens, output_tokens, cost_usd}.
    usage: dict[str, Any] | None = None
    result: dict[str, Any] | None = None
    notes: str | None = None
    changed_by: str | None = None
    created_at: float = 0.0
    updated_at: float = 0.0
    started_at: float | None = None
    finished_at: float | None = None
    lease: str | None = field(default=None, repr=False)
    # Why the stored payload could not be read back (the task is then quarantined), else None.
    unreadable: str | None = field(default=None, repr=False)

    @property
    def short_id(self) -> str:
        return self.id[:SHORT_ID_LENGTH]

    @classmethod
    def from_row(cls, row: Row) -> Task:
        """The task a row holds; a payload or result that cannot be read back is replaced, and says so."""
        values = tuple(row)
        data: dict[str, Any] = {name: values[index] for name, index in _task_columns(tuple(row.keys()))}
        payload, unreadable = stored_object(data["payload"])
        data["payload"] = {} if unreadable else payload
        if data["result"]:
            result, problem = stored_object(data["result"])
            data["result"] = result if problem is None else {
                "error": f"the stored result cannot be read back: {problem}",
                "action": "the outcome is lost; check the task's log on the machine that ran it"}
        for name in ("progress_record", "usage"):
            data[name] = stored_object(data[name])[0] or None if data[name] else None
        data["unreadable"] = unreadable
        # Every field is in `data`, so it is set at once: the frozen dataclass's __init__ sets 30 fields one by
        # one through object.__setattr__, which took 4 of a request's microseconds per task.
        task = object.__new__(cls)
        task.__dict__.update(data)
        return task

    def to_json(self) -> dict[str, Any]:
        """The public form: times as ISO strings, and no lease token (only the claimer gets it)."""
        fields = self.__dict__
        data: dict[str, Any] = {"id": self.id, "short_id": self.id[:SHORT_ID_LENGTH]}
        data.update({name: fields[name] for name in PUBLIC_FIELDS})
        for name in TIME_FIELDS:
            data[name] = iso(data[name])
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Task:
        """Rebuild a task from an API answer (clients use this)."""
        values: dict[str, Any] = {name: data.get(name) for name in PUBLIC_FIELDS if name in data}
        for name in TIME_FIELDS:
            values[name] = parse_iso(data.get(name))
        values["created_at"] = values["created_at"] or 0.0
        values["updated_at"] = values["updated_at"] or 0.0
        return cls(id=data["id"], **values)


TASK_FIELDS = tuple(name for name in Task.__dataclass_fields__ if name != "unreadable")
TIME_FIELDS = ("lease_expires_at", "created_at", "updated_at", "started_at", "finished_at")
PUBLIC_FIELDS = tuple(name for name in TASK_FIELDS if name not in ("id", "lease"))


@functools.lru_cache(maxsize=64)
def _task_columns(columns: tuple[str, ...]) -> tuple[tuple[str, int], ...]:
    """Each task field and its position among a row's columns (the statements return a few layouts)."""
    return tuple((name, columns.index(name)) for name in TASK_FIELDS)


def nesting_depth(value: Any, limit: int = MAX_DEPTH) -> int:
    """Levels of objects and arrays in `value` (a scalar is 0), counted no further than `limit` + 1.

    Level by level rather than recursively, so a value nested thousands deep costs no stack.
    """
    depth = 0
    level = [value] if isinstance(value, (dict, list)) else []
    while level and depth <= limit:
        depth += 1
        below: list[Any] = []
        for item in level:
            below.extend(child for child in (item.values() if isinstance(item, dict) else item)
                         if isinstance(child, (dict, list)))
        level = below
    return depth


def check_depth(value: Any, what: str) -> None:
    """Refuse JSON nested deeper than MAX_DEPTH, which could be stored but never answered back."""
    if nesting_depth(value) > MAX_DEPTH:
        raise BadRequest(f"{what} nests more than {MAX_DEPTH} levels of objects and arrays; flatten it to at "
                         f"most {MAX_DEPTH}.")


def stored_object(text: str) -> tuple[dict[str, Any], str | None]:
    """A stored payload or result as an object, or why it cannot be read back (rows written before
    the depth limit, or damaged by hand)."""
    try:
        value = json.loads(text)
    except RecursionError:
        return {}, f"it nests more than {MAX_DEPTH} levels of objects and arrays"
    except ValueError as exc:
        return {}, f"it is not valid JSON ({exc})"
    if not isinstance(value, dict):
        return {}, "it is not a JSON object"
    # Every level opens a bracket, so only text with more brackets than the limit needs counting.
    if text.count("{") + text.count("[") > MAX_DEPTH and nesting_depth(value) > MAX_DEPTH:
        return {}, f"it nests more than {MAX_DEPTH} levels of objects and arrays"
    return value, None


@dataclass(frozen=True)
class Event:
    """One transition of one task: the audit trail and the bot's notification feed."""

    id: int
    task_id: str
    from_status: str | None
    to_status: str
    by: str | None
    at: float
    note: str | None
    # The ask this event opened or settled; None for a transition.
    ask: int | None = None
    # The credential of a person's change (beside `by`, which the client chose); None for the queue's and a worker's.
    via: str | None = None

    @classmethod
    def from_row(cls, row: Row) -> Event:
        return cls(row["id"], row["task_id"], row["from_status"], row["to_status"], row["by"], row["at"], row["note"],
                   row["ask_id"], row["via"])

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "task_id": self.task_id,
            "from": self.from_status,
            "to": self.to_status,
            "by": self.by,
            "at": iso(self.at),
            "note": self.note,
            "ask": self.ask,
            "via": self.via,
        }


@dataclass(frozen=True)
class NamedLease:
    """Who holds a named lease, since when, and until when unless renewed."""

    name: str
    holder: str
    acquired_at: float
    expires_at: float
    data: dict[str, Any] | None = None

    @classmethod
    def from_row(cls, row: Row) -> NamedLease:
        data = json.loads(row["data"]) if row["data"] else None
        return cls(row["name"], row["holder"], row["acquired_at"], row["expires_at"], data)

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "holder": self.holder, "acquired_at": iso(self.acquired_at),
                "expires_at": iso(self.expires_at), "data": self.data}


# The kinds of scoped token `da token create` makes; the admin secret (SECRET_KEY) is the fourth
# credential and is never stored.
ADMIN = "admin"
CLIENT_TOKEN = "client"
READER_TOKEN = "reader"
WORKER_TOKEN = "worker"
TOKEN_KINDS = (CLIENT_TOKEN, READER_TOKEN, WORKER_TOKEN)


@dataclass(frozen=True)
class Token:
    """A scoped credential as stored: who holds it and what binds it, never the secret itself."""

    id: str
    kind: str
    name: str
    machine: str | None = None
    aliases: tuple[str, ...] = ()
    created_at: float = 0.0
    revoked_at: float | None = None

    @classmethod
    def from_row(cls, row: Row) -> Token:
        # Aliases are names, which hold no commas, so both backends store them as one text column.
        return cls(row["id"], row["kind"], row["name"], row["machine"],
                   tuple(alias for alias in row["aliases"].split(",") if alias), row["created_at"], row["revoked_at"])

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "kind": self.kind, "name": self.name, "machine": self.machine,
                "aliases": list(self.aliases), "created_at": iso(self.created_at), "revoked_at": iso(self.revoked_at)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Token:
        return cls(data["id"], data["kind"], data["name"], data.get("machine"), tuple(data.get("aliases") or ()),
                   parse_iso(data.get("created_at")) or 0.0, parse_iso(data.get("revoked_at")))


# ---- request parsing -------------------------------------------------------------


def require_object(body: Any, what: str = "the request body") -> dict[str, Any]:
    """A JSON object, or a 400 that says so."""
    if not isinstance(body, dict):
        raise BadRequest(f"{what} must be a JSON object.")
    return body


def reject_unknown(body: dict[str, Any], allowed: tuple[str, ...]) -> None:
    unknown = sorted(set(body) - set(allowed))
    if unknown:
        raise BadRequest(f"unknown field {unknown[0]!r}; allowed fields are {', '.join(allowed)}.")


def storable(value: Any) -> tuple[Any, bool]:
    """Text from a task with every NUL (which PostgreSQL text and jsonb cannot hold) as NUL_MARK; True if any was."""
    if isinstance(value, str):
        return (value.replace("\x00", NUL_MARK), True) if "\x00" in value else (value, False)
    if isinstance(value, dict):
        pairs = [(storable(k), storable(v)) for k, v in value.items()]
        return ({k: v for (k, _), (v, _) in pairs}, any(a or b for (_, a), (_, b) in pairs))
    if isinstance(value, list):
        items = [storable(item) for item in value]
        return [item for item, _ in items], any(changed for _, changed in items)
    return value, False


def workspace_facts(body: dict[str, Any]) -> dict[str, Any]:
    """A later delivery's facts for a finished task's result: `workspace` (an object) and, for a task on
    several repositories, `workspaces` (a list of objects); NULs replaced as in results."""
    reject_unknown(body, ("workspace", "workspaces"))
    facts: dict[str, Any] = {"workspace": require_object(body.get("workspace"), "field 'workspace'")}
    if body.get("workspaces") is not None:
        many = body["workspaces"]
        if not isinstance(many, list) or not all(isinstance(item, dict) for item in many):
            raise BadRequest("field 'workspaces' must be a list of objects.")
        facts["workspaces"] = many
    check_depth(facts, "the workspace facts")
    cleaned, _ = storable(facts)
    return dict(cleaned)


def get_str(body: dict[str, Any], key: str, *, required: bool = False, max_len: int = MAX_NAME,
            name: bool = False, text: bool = False) -> str | None:
    """A string field, checked for type, length and (for names) characters; `text` from a task keeps NULs as marks."""
    value = body.get(key)
    if value is None:
        if required:
            raise BadRequest(f"field {key!r} is required.")
        return None
    if not isinstance(value, str):
        raise BadRequest(f"field {key!r} must be a string.")
    if required and not value.strip():
        raise BadRequest(f"field {key!r} must not be empty.")
    if len(value) > max_len:
        raise BadRequest(f"field {key!r} is longer than {max_len} characters.")
    if text:
        value = storable(value)[0]
    if "\x00" in value:
        # PostgreSQL text cannot hold NUL; refusing it everywhere keeps the backends alike.
        raise BadRequest(f"field {key!r} must not contain NUL characters.")
    if name and value and not NAME_PATTERN.fullmatch(value):
        raise BadRequest(f"field {key!r} may hold only letters, digits and _.:@/~+- (got {value[:40]!r}).")
    return value or None


def get_int(body: dict[str, Any], key: str, default: int, low: int, high: int) -> int:
    """An integer field within bounds."""
    value = body.get(key, default)
    if value is None:
        return default
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise BadRequest(f"field {key!r} must be a whole number between {low} and {high}.")
    if not low <= value <= high:
        raise BadRequest(f"field {key!r} must be between {low} and {high}, got {value}.")
    return value


def get_number(body: dict[str, Any], key: str, default: float, low: float, high: float) -> float:
    """A number of seconds within bounds."""
    value = body.get(key, default)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise BadRequest(f"field {key!r} must be a number of seconds between {low:g} and {high:g}.")
    if not low <= value <= high:
        raise BadRequest(f"field {key!r} must be between {low:g} and {high:g}, got {value:g}.")
    return float(value)


def get_names(body: dict[str, Any], key: str, *, required: bool = False) -> tuple[str, ...]:
    """A list of names (capabilities, agents, aliases)."""
    value = body.get(key)
    if value is None:
        if required:
            raise BadRequest(f"field {key!r} is required (a list of names).")
        return ()
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise BadRequest(f"field {key!r} must be a list of strings.")
    for item in value:
        if not NAME_PATTERN.fullmatch(item) or len(item) > MAX_NAME:
            raise BadRequest(f"field {key!r} holds an invalid name {item[:40]!r}.")
    return tuple(value)


def get_status(body: dict[str, Any], key: str, allowed: tuple[str, ...], *, required: bool = True) -> str | None:
    """A status field restricted to the transitions the route allows."""
    value = get_str(body, key, required=required)
    if value is not None and value not in allowed:
        raise BadRequest(f"field {key!r} must be one of {', '.join(allowed)}, got {value[:40]!r}.")
    return value


def checkout_of(payload: dict[str, Any]) -> str | None:
    """The folder a task works in (the first of FOLDER_FIELDS set): its checkout lock, once per machine."""
    folder = next((value for value in map(payload.get, FOLDER_FIELDS) if value), None)
    return folder if isinstance(folder, str) and folder else None


@dataclass(frozen=True)
class NewTask:
    """A task as submitted, before the store gives it an id."""

    type: str
    payload: dict[str, Any]
    priority: int = DEFAULT_PRIORITY
    target_machine: str | None = None
    preferred_machine: str | None = None
    agent: str | None = None
    lock: str | None = None
    checkout: str | None = None
    notes: str | None = None
    created_by: str | None = None
    # Set by the queue from the request's credential, never from the body.
    created_via: str | None = None
    max_attempts: int = DEFAULT_MAX_ATTEMPTS

    FIELDS = ("type", "payload", "priority", "target_machine", "preferred_machine", "agent", "notes",
              "created_by", "max_attempts", "lock")

    @classmethod
    def parse(cls, body: Any, via: str | None = None) -> NewTask:
        """Validate a POST /v1/tasks body; `via` is the credential the queue verified (`created_via`).

        `_target_machine` in the payload (the original tool's pin) becomes `target_machine`;
        a task with a `cwd` locks that checkout on its machine, and a `lock` it names is held too.
        """
        body = require_object(body)
        reject_unknown(body, cls.FIELDS)
        payload = body.get("payload")
        payload = {} if payload is None else dict(require_object(payload, "field 'payload'"))
        check_depth(payload, "field 'payload'")
        legacy_target = payload.pop("_target_machine", None)
        if legacy_target is not None and not isinstance(legacy_target, str):
            raise BadRequest("payload key '_target_machine' must be a machine name.")
        target = get_str(body, "target_machine", name=True) or legacy_target or None
        if target is not None:
            get_str({"target_machine": target}, "target_machine", name=True)
        lock = get_str(body, "lock", name=True) or get_str(payload, "lock", name=True)
        cwd = checkout_of(payload)
        # The payload is the handler's to judge (a NUL in cwd is its needs_human); the lock key only
        # has to be text every backend can store.
        checkout = cwd.replace("\x00", "\\x00") if cwd else None
        return cls(
            type=get_str(body, "type", required=True, name=True) or "",
            payload=payload,
            priority=get_int(body, "priority", DEFAULT_PRIORITY, 0, MAX_PRIORITY),
            target_machine=target,
            preferred_machine=get_str(body, "preferred_machine", name=True),
            agent=get_str(body, "agent", name=True),
            lock=lock,
            checkout=checkout,
            notes=get_str(body, "notes", max_len=MAX_NOTES),
            created_by=get_str(body, "created_by"),
            created_via=via,
            max_attempts=get_int(body, "max_attempts", DEFAULT_MAX_ATTEMPTS, 1, MAX_ATTEMPTS_LIMIT),
        )


@dataclass(frozen=True)
class ClaimRequest:
    """What a worker can take: its names, capabilities, agents and retry-safe types."""

    machine: str
    capabilities: tuple[str, ...]
    agents: tuple[str, ...] = ()
    aliases: tuple[str, ...] = ()
    retry_safe: tuple[str, ...] = ()
    wait: float = 0.0
    lease: float | None = None

    @classmethod
    def parse(cls, body: Any) -> ClaimRequest:
        body = require_object(body)
        reject_unknown(body, ("machine", "capabilities", "agents", "aliases", "retry_safe", "wait", "lease"))
        lease = body.get("lease")
        return cls(
            machine=get_str(body, "machine", required=True, name=True) or "",
            capabilities=get_names(body, "capabilities", required=True),
            agents=get_names(body, "agents"),
            aliases=get_names(body, "aliases"),
            retry_safe=get_names(body, "retry_safe"),
            wait=get_number(body, "wait", 0.0, 0.0, MAX_WAIT),
            lease=None if lease is None else get_number(body, "lease", 60.0, MIN_LEASE, MAX_LEASE),
        )


@dataclass(frozen=True)
class Report:
    """A worker's outcome for a task it holds the lease of."""

    lease: str
    status: str
    result: dict[str, Any]
    notes: str | None = None
    action: str | None = None

    @classmethod
    def parse(cls, body: Any) -> Report:
        body = require_object(body)
        reject_unknown(body, ("lease", "status", "result", "notes", "action"))
        result = body.get("result")
        result = {} if result is None else result
        check_depth(result, "field 'result'")
        # A task's output may hold NUL: kept (as a mark) rather than refused, so the outcome is never lost.
        (result, notes, action), replaced = storable([require_object(result, "field 'result'"), body.get("notes"),
                                                      body.get("action")])
        notes = get_str({"notes": notes}, "notes", max_len=MAX_NOTES)
        if replaced:
            notes = f"{notes} ({NUL_NOTE})" if notes else NUL_NOTE
        return cls(
            lease=get_str(body, "lease", required=True) or "",
            status=get_status(body, "status", REPORTABLE) or "",
            result=dict(result),
            notes=notes,
            action=get_str({"action": action}, "action", max_len=MAX_NOTES),
        )


@dataclass(frozen=True)
class NewToken:
    """A token as requested: a worker token is bound to a machine and its aliases, the others to nothing."""

    kind: str
    name: str
    machine: str | None = None
    aliases: tuple[str, ...] = ()

    @classmethod
    def parse(cls, body: Any) -> NewToken:
        body = require_object(body)
        reject_unknown(body, ("kind", "name", "machine", "aliases"))
        kind = get_status(body, "kind", TOKEN_KINDS) or ""
        machine = get_str(body, "machine", name=True)
        aliases = get_names(body, "aliases")
        if kind == WORKER_TOKEN and machine is None:
            raise BadRequest("field 'machine' is required for a worker token (the machine it may claim for).")
        if kind != WORKER_TOKEN and (machine or aliases):
            raise BadRequest("only a worker token has a 'machine' and 'aliases'; leave them out.")
        name = get_str(body, "name", required=kind != WORKER_TOKEN, name=True) or machine or ""
        return cls(kind, name, machine, aliases)


# ---- supervised sessions: asks, progress, steering messages, usage --------------

ASK_KINDS = ("permission", "plan", "question")
ASK_OPEN, ASK_ANSWERED, ASK_EXPIRED = "open", "answered", "expired"
ASK_STATUSES = (ASK_OPEN, ASK_ANSWERED, ASK_EXPIRED)
# An ask's title is one line on a card; its detail a command, a diff or a question (the agent's log has the rest).
MAX_ASK_TITLE = 200
MAX_ASK_DETAIL = 8000
MAX_ASK_OPTIONS = 20
# Open asks one task may have at once: a permission-request flood is refused past this, and the worker told.
MAX_OPEN_ASKS = 20
# A person's time to answer, when a task names its own (`ask_timeout` in the payload).
MIN_ASK_TIMEOUT = 10.0
MAX_ASK_TIMEOUT = 7 * 86400.0
# The progress record is replaced each time: a few KiB carry a plan, ten tool calls and the answer's tail.
MAX_PROGRESS_BYTES = 16 * 1024
# A steering message is a prompt a person types.
MAX_MESSAGE = 16 * 1024
# Messages waiting for one task at once; more means nobody is reading them.
MAX_QUEUED_MESSAGES = 50


@dataclass(frozen=True)
class AskOption:
    """One answer a person may pick."""

    id: str
    label: str


@dataclass(frozen=True)
class Ask:
    """A question a running agent put to a person: a permission, a plan to approve, or its own question."""

    task_id: str
    id: int
    kind: str
    title: str
    detail: str
    options: tuple[AskOption, ...]
    status: str
    answer: str | None
    note: str | None
    answered_by: str | None
    created_at: float
    expires_at: float
    answered_at: float | None = None
    opened_by: str | None = None
    answered_via: str | None = None

    @classmethod
    def from_row(cls, row: Row) -> Ask:
        options = tuple(AskOption(str(o.get("id")), str(o.get("label"))) for o in json.loads(row["options"])
                        if isinstance(o, dict))
        return cls(row["task_id"], int(row["id"]), row["kind"], row["title"], row["detail"], options, row["status"],
                   row["answer"], row["note"], row["answered_by"], row["created_at"], row["expires_at"],
                   row["answered_at"], row["opened_by"], row["answered_via"])

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "task_id": self.task_id, "kind": self.kind, "title": self.title, "detail": self.detail,
                "options": [{"id": o.id, "label": o.label} for o in self.options], "status": self.status,
                "answer": self.answer, "note": self.note, "answered_by": self.answered_by,
                "created_at": iso(self.created_at), "expires_at": iso(self.expires_at),
                "answered_at": iso(self.answered_at), "machine": self.opened_by, "answered_via": self.answered_via}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Ask:
        return cls(data["task_id"], int(data["id"]), data["kind"], data["title"], data.get("detail") or "",
                   tuple(AskOption(o["id"], o["label"]) for o in data.get("options") or ()), data["status"],
                   data.get("answer"), data.get("note"), data.get("answered_by"),
                   parse_iso(data.get("created_at")) or 0.0, parse_iso(data.get("expires_at")) or 0.0,
                   parse_iso(data.get("answered_at")), data.get("machine"), data.get("answered_via"))


@dataclass(frozen=True)
class NewAsk:
    """An ask as a worker opens it for the task it runs."""

    lease: str
    kind: str
    title: str
    detail: str
    options: tuple[AskOption, ...]

    @classmethod
    def parse(cls, body: Any) -> NewAsk:
        body = require_object(body)
        reject_unknown(body, ("lease", "kind", "title", "detail", "options"))
        options = body.get("options")
        if not isinstance(options, list) or not 1 <= len(options) <= MAX_ASK_OPTIONS:
            raise BadRequest(f"field 'options' must be a list of 1 to {MAX_ASK_OPTIONS} objects with an id and a "
                             "label.")
        parsed = []
        for option in options:
            option = require_object(option, "each of 'options'")
            reject_unknown(option, ("id", "label"))
            parsed.append(AskOption(present(option, "id"), present(option, "label", MAX_ASK_TITLE)))
        return cls(lease=get_str(body, "lease", required=True) or "",
                   kind=get_status(body, "kind", ASK_KINDS) or "",
                   title=present(body, "title", MAX_ASK_TITLE),
                   detail=get_str(body, "detail", max_len=MAX_ASK_DETAIL) or "",
                   options=tuple(parsed))


@dataclass(frozen=True)
class AskAnswer:
    """A person's answer: one of the ask's options, and a note (a plan's requested changes, a reason)."""

    option: str
    note: str | None = None
    by: str | None = None
    # The answering credential, set by the queue.
    via: str | None = None

    @classmethod
    def parse(cls, body: Any) -> AskAnswer:
        body = require_object(body)
        reject_unknown(body, ("option", "note", "by"))
        return cls(present(body, "option"), get_str(body, "note", max_len=MAX_NOTES), get_str(body, "by"))


def present(body: dict[str, Any], key: str, max_len: int = MAX_NAME) -> str:
    """A required text field an agent or a person wrote: any characters (but NUL), at least one."""
    value = get_str(body, key, max_len=max_len)
    if not value:
        raise BadRequest(f"field {key!r} is required.")
    return value


def ask_timeout_of(payload: dict[str, Any], default: float) -> float:
    """The seconds a person has to answer this task's asks: its payload's `ask_timeout`, else `default`."""
    value = payload.get("ask_timeout")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return min(max(float(value), MIN_ASK_TIMEOUT), MAX_ASK_TIMEOUT)
    return default


@dataclass(frozen=True)
class Message:
    """A steering message for a running session: the next prompt, or at once with `interrupt`."""

    id: int
    task_id: str
    text: str
    interrupt: bool
    created_by: str | None
    created_at: float
    delivered_at: float | None = None
    created_via: str | None = None

    @classmethod
    def from_row(cls, row: Row) -> Message:
        return cls(int(row["seq"]), row["task_id"], row["text"], bool(row["interrupt"]), row["created_by"],
                   row["created_at"], row["delivered_at"], row["created_via"])

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "task_id": self.task_id, "text": self.text, "interrupt": self.interrupt,
                "created_by": self.created_by, "created_at": iso(self.created_at),
                "delivered_at": iso(self.delivered_at), "created_via": self.created_via}


USAGE_FIELDS = ("input_tokens", "output_tokens", "cost_usd")


def usage_of(value: Any, what: str = "field 'usage'") -> dict[str, Any] | None:
    """Usage as the agent reported it, {input_tokens, output_tokens, cost_usd}; None when absent."""
    if value is None:
        return None
    value = require_object(value, what)
    usage: dict[str, Any] = {}
    for key in USAGE_FIELDS:
        number = value.get(key)
        if number is None:
            usage[key] = None if key == "cost_usd" else 0
            continue
        if isinstance(number, bool) or not isinstance(number, (int, float)) or number < 0 or number > 1e12:
            raise BadRequest(f"{what} key {key!r} must be a number from 0 up, got {str(number)[:40]!r}.")
        usage[key] = float(number) if key == "cost_usd" else int(number)
    return usage
