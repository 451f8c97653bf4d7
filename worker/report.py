"""Turn whatever a handler returned into a report the queue accepts.

A handler may put anything in its result: NaN, bytes, objects, cycles, megabytes of text, a
status the queue does not know. Sent as it is, the report would never be accepted and the
task would end as "worker lost". Here every value becomes JSON (each change noted in the
result's `delivery_notes`), secrets are redacted at every depth, the longest strings are cut
(head and tail kept, the cut marked) until the report fits the budget, and what cannot be
made to fit is reported `failed` with the reason. Text is made storable on every database: a
NUL character (which PostgreSQL's text cannot hold, and SQLite's JSON refuses) is replaced with
U+FFFD, noted like every other change.

A report the queue still refuses as invalid is reduced step by step (`reduced`): outputs
trimmed, then only the status and the error, then `failed` with the queue's reason.
"""

from __future__ import annotations

import json
import math
import numbers
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from da.handlers.api import FAILED, Result
from da.queue import models as queue_models
from da.queue.client import ClaimedTask, QueueClient
from da.queue.models import Task
from da.worker.redact import Redactor
from da.worker.registry import Handler
from da.worker.settings import WorkerSettings

# The queue's default body limit is 1 MiB (QUEUE_MAX_BODY); a 413 halves the budget.
FIRST_BUDGET = 1024 * 1024 - 16 * 1024
# The smallest body limit the queue can be given; a failure report with its reason fits.
MIN_BUDGET = 1024
# Deeper than any result a person reads, far inside every JSON parser's recursion limit.
MAX_DEPTH = 32
# The queue refuses longer notes and actions.
MAX_TEXT = queue_models.MAX_NOTES
# JSON integers beyond 64 bits lose precision or are refused by parsers; they go as text.
INT_RANGE = (-(2**63), 2**64 - 1)
# A few notes say enough; a result with thousands of cuts should not spend its room listing them.
MAX_NOTES_LISTED = 20
# Rounds of cutting before giving up: each round corrects the estimate of the one before.
FIT_ROUNDS = 4
# Upper bound of the encoded length of a cut marker, so a cut string lands within its share.
MARKER_ROOM = 80
SURROGATE = re.compile("[\ud800-\udfff]")
NUL = "\x00"
REPLACEMENT = "\ufffd"
# A report the queue refused as invalid is sent again with its strings cut to fit this many bytes.
TRIMMED_BUDGET = 16 * 1024
# In a report reduced to its status and error, the error keeps this many characters.
ESSENTIAL_TEXT = 1000
NON_FINITE = {"nan": "NaN", "inf": "Infinity", "-inf": "-Infinity"}
STATUSES = ", ".join(queue_models.REPORTABLE[:-1]) + " or " + queue_models.REPORTABLE[-1]


@dataclass
class Delivery:
    """The fields of one report, ready to send."""

    status: str
    result: dict[str, Any]
    notes: str | None = None
    action: str | None = None
    changes: list[str] = field(default_factory=list)

    def body(self, lease: str) -> dict[str, Any]:
        """The request body as the client sends it."""
        return {"lease": lease, "status": self.status, "result": self.result,
                **({"notes": self.notes} if self.notes else {}), **({"action": self.action} if self.action else {})}

    def size(self, lease: str) -> int:
        return encoded_size(self.body(lease))


def claim_filter(settings: WorkerSettings, handlers: Mapping[str, Handler],
                 capabilities: list[str] | None = None) -> dict[str, Any]:
    """What this worker can take (`capabilities`: fewer than it declares, at its agent limit), as /v1/claim
    and a report's `claim` name it (without `wait`)."""
    retry_safe = [kind for kind, handler in handlers.items() if handler.safe_to_retry and kind in settings.capabilities]
    capabilities = list(settings.capabilities) if capabilities is None else capabilities
    return {"machine": settings.machine, "capabilities": capabilities, "agents": list(settings.agents),
            "aliases": list(settings.aliases), "retry_safe": retry_safe,
            **({"lease": settings.lease} if settings.lease is not None else {})}


async def deliver(client: QueueClient, task_id: str, lease: str, delivery: Delivery,
                  claim: dict[str, Any] | None, *, timeout: float | None = None) -> tuple[Task, ClaimedTask | None]:
    """Send the report; with `claim`, in the same request as the claim of the next task (one round trip)."""
    if claim is None:
        return await client.report(task_id, lease, delivery.status, delivery.result, notes=delivery.notes,
                                   action=delivery.action, timeout=timeout), None
    return await client.report_and_claim(task_id, lease, delivery.status, delivery.result, claim,
                                         notes=delivery.notes, action=delivery.action, timeout=timeout)


def encoded_size(value: Any) -> int:
    """Bytes on the wire, encoded the way httpx encodes a `json=` body."""
    return len(json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode())


def prepare(result: Result, *, task_type: str, lease: str, redact: Redactor, budget: int = FIRST_BUDGET) -> Delivery:
    """A report of `result` within `budget` bytes, or a `failed` one saying why it could not be."""
    try:
        return _prepare(result, task_type=task_type, lease=lease, redact=redact, budget=budget)
    except Exception as exc:  # noqa: BLE001 - handler objects can fail in any way; the task must still end
        return failure(result, task_type=task_type, redact=redact,
                       reason=f"the worker could not read the result ({type(exc).__name__}: {_as_text(exc)[:200]})",
                       action=f"make the handler {task_type} return plain values, then retry")


def _prepare(result: Result, *, task_type: str, lease: str, redact: Redactor, budget: int) -> Delivery:
    changes: list[str] = []
    cleaner = _Cleaner(redact, changes)
    status, notes = result.status, cleaner.text_field(result.notes, "notes")
    action = cleaner.text_field(result.action, "action")
    details = result.details if isinstance(result.details, dict) else {"value": result.details}
    if details is not result.details and result.details is not None:
        changes.append(f"details: a {type(result.details).__name__}, not a mapping; sent as 'value'")
    clean = cleaner.value(details, "", 0) if result.details is not None else {}
    if not isinstance(status, str) or status not in queue_models.REPORTABLE:
        clean["handler_status"] = cleaner.value(status, "status", 0)
        notes = _clip(f"handler {task_type} returned status {_shown(status, redact)}, not {STATUSES}; "
                      f"its notes: {notes or '-'}")
        action = "fix the handler to return done, failed or needs_human"
        status = FAILED
    delivery = Delivery(status, clean, notes or None, action or None, changes)
    if _fit(delivery, lease, budget):
        return delivery
    size = delivery.size(lease)
    return failure(result, task_type=task_type, redact=redact,
                   reason=f"the result was too large to deliver ({size} bytes of JSON after cutting, "
                          f"the queue takes {budget})",
                   action="make the handler return less (long output belongs in the log), then retry")


def failure(result: Result, *, task_type: str, redact: Redactor, reason: str, action: str) -> Delivery:
    """The smallest report that still says what happened: `failed`, the reason and the handler's own words."""
    cleaner = _Cleaner(redact, [])
    said = cleaner.text_field(result.notes, "notes")[:300]
    status = result.status if isinstance(result.status, str) else _shown(result.status, redact)
    status = redact(storable(SURROGATE.sub(REPLACEMENT, status)))[:80]
    notes = f"{reason}; the handler reported {status}: {said or '-'}"
    return Delivery(FAILED, {"handler_status": status, "delivery_notes": [reason]}, _clip(notes), action,
                    [reason])


def storable(text: str) -> str:
    """`text` without NUL characters, which no database text column takes."""
    return text.replace(NUL, REPLACEMENT)


def reduced(result: Result, *, task_type: str, lease: str, redact: Redactor, refusals: list[str]) -> Delivery | None:
    """The next smaller report after the queue refused the last one as invalid (`refusals` holds its
    reasons, oldest first): outputs trimmed, then only the status and the error, then `failed` with
    the queue's reason; None once even that was refused."""
    reason = f"the queue refused the result: {refusals[-1]}"
    if len(refusals) == 1:
        delivery = prepare(result, task_type=task_type, lease=lease, redact=redact, budget=TRIMMED_BUDGET)
        step = f"{reason}; outputs trimmed to {TRIMMED_BUDGET // 1024} KiB"
    elif len(refusals) == 2:
        delivery = essentials(result, task_type=task_type, redact=redact)
        step = f"{reason}; only the status and the error are kept (the worker's log has the rest)"
    elif len(refusals) == 3:
        return failure(result, task_type=task_type, redact=redact, reason=reason,
                       action=f"fix the handler {task_type} so its result is plain JSON, then retry")
    else:
        return None
    delivery.result["delivery_notes"] = [_clip(step, ESSENTIAL_TEXT), *delivery.result.get("delivery_notes", [])]
    return delivery


def essentials(result: Result, *, task_type: str, redact: Redactor) -> Delivery:
    """The handler's status, notes, action and error, each short; nothing else of the result."""
    cleaner = _Cleaner(redact, [])
    notes = cleaner.text_field(result.notes, "notes")[:ESSENTIAL_TEXT]
    action = cleaner.text_field(result.action, "action")[:ESSENTIAL_TEXT]
    error = result.details.get("error") if isinstance(result.details, dict) else None
    kept: dict[str, Any] = {"error": cleaner.text_field(error, "error")[:ESSENTIAL_TEXT]} if error else {}
    status = result.status if isinstance(result.status, str) and result.status in queue_models.REPORTABLE else FAILED
    if status != result.status:
        kept["handler_status"] = _shown(result.status, redact)
        notes = f"handler {task_type} returned status {kept['handler_status']}, not {STATUSES}; its notes: {notes}"
    return Delivery(status, kept, _clip(notes) or None, action or None)


def summary(delivery: Delivery, limit: int = 2000) -> str:
    """One line for the worker's log: the outcome a queue could not be given."""
    result = json.dumps(delivery.result, ensure_ascii=False, default=str)
    return _clip(f"status={delivery.status} notes={delivery.notes or '-'} action={delivery.action or '-'} "
                 f"result={result}", limit)


def _shown(value: Any, redact: Redactor) -> str:
    """A short, safe rendering of a value a handler should not have returned."""
    if isinstance(value, (str, int, float, type(None))) and not (isinstance(value, int) and value.bit_length() > 64):
        return redact(storable(repr(value)))[:80]
    return f"a {type(value).__name__}"


def _clip(text: str, limit: int = MAX_TEXT) -> str:
    if len(text) <= limit:
        return text
    keep = limit - 40  # room for the marker
    marker = f" [... {len(text) - keep} characters cut ...] "
    return text[:keep // 2] + marker + text[len(text) - (keep - keep // 2):]


class _Cleaner:
    """Makes values JSON-safe, noting every change in `changes`."""

    def __init__(self, redact: Redactor, changes: list[str]) -> None:
        self.redact = redact
        self.changes = changes
        self._open: set[int] = set()

    def note(self, path: str, what: str) -> None:
        self.changes.append(f"{_clip(path or 'details', 200)}: {what}")

    def text(self, value: str, path: str) -> str:
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            value = SURROGATE.sub(REPLACEMENT, value)
            self.note(path, "text held characters UTF-8 cannot carry (lone surrogates); replaced with \ufffd")
        if NUL in value:
            value = storable(value)
            self.note(path, "text held NUL characters, which the queue's database cannot store; replaced with \ufffd")
        return self.redact(value)

    def text_field(self, value: Any, path: str) -> str:
        if value is None:
            return ""
        if not isinstance(value, str):
            self.note(path, f"a {type(value).__name__}, not text; sent as its text")
            value = _as_text(value)
        text = self.text(value, path)
        if len(text) > MAX_TEXT:
            self.note(path, f"{len(text) - MAX_TEXT} characters cut (the queue takes {MAX_TEXT})")
            text = _clip(text)
        return text

    def value(self, value: Any, path: str, depth: int) -> Any:
        if isinstance(value, str):
            return self.text(value, path)
        if value is None or isinstance(value, bool):
            return value
        if not isinstance(value, (int, float)) and isinstance(value, numbers.Real):
            # numpy and friends: their numbers are numbers, not text.
            value = int(value) if isinstance(value, numbers.Integral) else float(value)
        if isinstance(value, int):
            if INT_RANGE[0] <= value <= INT_RANGE[1]:
                return value
            self.note(path, "an integer beyond 64 bits; sent as text")
            return _as_text(value)
        if isinstance(value, float):
            if math.isfinite(value):
                return value
            self.note(path, f"{NON_FINITE[repr(value)]} is not JSON; sent as null")
            return None
        if isinstance(value, (bytes, bytearray, memoryview)):
            self.note(path, "bytes; sent as UTF-8 text (invalid bytes replaced with \ufffd)")
            return self.text(bytes(value).decode("utf-8", errors="replace"), path)
        if not isinstance(value, (Mapping, list, tuple, set, frozenset)):
            self.note(path, f"a {type(value).__name__}; sent as its text")
            return self.text(_as_text(value), path)
        if depth >= MAX_DEPTH:
            self.note(path, f"nested deeper than {MAX_DEPTH} levels; cut there")
            return f"[nested deeper than {MAX_DEPTH} levels: cut]"
        if id(value) in self._open:
            self.note(path, "refers to itself; cut there")
            return "[a reference to itself: cut]"
        self._open.add(id(value))
        try:
            if isinstance(value, Mapping):
                out = {}
                for key, item in value.items():
                    if not isinstance(key, (str, int, float, bool, type(None))):
                        self.note(path, f"a {type(key).__name__} key; sent as its text")
                    name = self.text(key if isinstance(key, str) else _as_text(key), path)
                    out[name] = self.value(item, f"{path}.{name}" if path else name, depth + 1)
                return out
            if isinstance(value, (set, frozenset)):
                self.note(path, "a set; sent as a list")
            return [self.value(item, f"{path}[{index}]", depth + 1) for index, item in enumerate(value)]
        finally:
            self._open.discard(id(value))


def _as_text(value: Any) -> str:
    try:
        return str(value)
    except Exception:  # noqa: BLE001 - a handler's object may fail to print in any way
        return f"<{type(value).__name__} that cannot be shown>"


def _fit(delivery: Delivery, lease: str, budget: int) -> bool:
    """Cut the longest strings (notes and action too) until the report fits; False if it cannot.

    Every round cuts from the original strings, so a second round (the notes of the cuts
    take room too) never cuts a cut marker.
    """
    fields = {"notes": delivery.notes or "", "action": delivery.action or "",
              **{k: v for k, v in delivery.result.items() if k != "delivery_notes"}}
    leaves = _leaves(fields)
    sizes = sorted((size for *_, size in leaves), reverse=True)
    cuts: list[str] = []
    for _ in range(FIT_ROUNDS):
        for holder, key, _path, text, _size in leaves:
            holder[key] = text
        _publish(delivery, fields, cuts)
        excess = delivery.size(lease) - budget
        if excess <= 0:
            return True
        cap = _cap(sizes, excess)
        if cap is None:
            return False
        cuts = []
        for holder, key, path, text, size in leaves:
            if size > cap:
                holder[key], cut = _cut(text, cap - MARKER_ROOM)
                cuts.append(f"{path}: {cut} of {len(text)} characters cut to fit the queue's size limit")
        _publish(delivery, fields, cuts)
        if delivery.size(lease) <= budget:
            return True
    return False


def _publish(delivery: Delivery, fields: dict[str, Any], cuts: list[str]) -> None:
    """Put the (cut) fields back into the report, with the notes of every change."""
    delivery.notes, delivery.action = fields["notes"] or None, fields["action"] or None
    delivery.result.update((k, v) for k, v in fields.items() if k not in ("notes", "action"))
    changes = delivery.changes + cuts
    if changes:
        listed = changes[:MAX_NOTES_LISTED]
        if len(changes) > MAX_NOTES_LISTED:
            listed.append(f"... and {len(changes) - MAX_NOTES_LISTED} more")
        delivery.result["delivery_notes"] = listed


def _leaves(fields: dict[str, Any]) -> list[tuple[Any, Any, str, str, int]]:
    """Every string that may be cut: (holder, key, path, text, encoded size)."""
    found: list[tuple[Any, Any, str, str, int]] = []
    stack: list[tuple[Any, Any, str]] = [(fields, name, name) for name in fields]
    while stack:
        holder, key, path = stack.pop()
        value = holder[key]
        if isinstance(value, str):
            found.append((holder, key, path, value, encoded_size(value)))
        elif isinstance(value, dict):
            stack.extend((value, name, f"{path}.{name}") for name in value)
        elif isinstance(value, list):
            stack.extend((value, index, f"{path}[{index}]") for index in range(len(value)))
    return found


def _cut(text: str, room: int) -> tuple[str, int]:
    """`text` with its middle cut so that head and tail take at most `room` bytes of JSON; and how much was cut."""
    head = _longest_within(text, room // 2, from_end=False)
    tail = _longest_within(text, room - room // 2, from_end=True)
    cut = len(text) - head - tail
    return (text[:head] + f"\n[... {cut} characters cut to fit the queue's size limit ...]\n"
            + text[len(text) - tail:]), cut


def _longest_within(text: str, room: int, *, from_end: bool) -> int:
    """How many characters from one end of `text` fit in `room` bytes once JSON-encoded."""
    low, high = 0, min(len(text), room)  # every character takes at least one byte
    while low < high:
        middle = (low + high + 1) // 2
        part = text[len(text) - middle:] if from_end else text[:middle]
        if encoded_size(part) - 2 <= room:  # less the quotes
            low = middle
        else:
            high = middle - 1
    return low


def _cap(sizes: list[int], excess: int) -> int | None:
    """The largest size such that cutting every longer string to it saves `excess` bytes."""
    low, high = MARKER_ROOM + 1, (sizes[0] if sizes else 0)
    if high <= low or sum(size - low for size in sizes if size > low) < excess:
        return None
    while low < high:
        middle = (low + high + 1) // 2
        if sum(size - middle for size in sizes if size > middle) >= excess:
            low = middle
        else:
            high = middle - 1
    return low
