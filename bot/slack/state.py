"""What the Slack bot must remember across restarts, one owner per kind, each saving itself.

- `Cursor`: how far the bot has told Slack about the event feed (and what it already told of
  the batch in hand);
- `Cards`: the cards of tasks posted in Slack, where they are and what they last showed, and the
  cards of their agents' asks;
- `Threads`: the threads that are conversations with an agent (with the replies waiting for
  their turn) and the messages already acted on (Slack delivers one message more than once);
- `Confirmations`: bulk confirmations awaiting a click.

Every change goes through its owner's methods, which write the one file atomically before
returning, so a restart resumes where it stopped: no event missed, none posted twice. Nothing
else writes the file (a structure test checks).
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from da.queue.models import Event

# Cards of finished tasks are forgotten after this many, oldest first.
MAX_CARDS = 500
# Bulk confirmations nobody clicked are forgotten after this many, oldest first.
MAX_BULK = 50
# Conversations are forgotten after this many, oldest first (a card outlives its thread's use).
MAX_THREADS = 500
# Messages acted on, remembered to recognise a redelivery: Slack retries within minutes.
MAX_HANDLED = 1000


@dataclass
class Card:
    """Where a task's card is, what it last showed, and who asked for the task."""

    channel: str
    ts: str
    status: str = ""
    progress: str = ""
    updated: float = 0.0
    requester: str = ""
    # The ts of the thread the card was posted in ("" when the card starts its own thread).
    thread: str = ""
    # The task's end was told (its alert or answer posted in the thread).
    finished: bool = False
    # The cards of the agent's asks posted in the thread: ask number (as text) -> [channel, ts], and the
    # asks whose card was redrawn settled; a restarted bot neither posts them again nor forgets to settle them.
    asks: dict[str, list[str]] = field(default_factory=dict)
    settled_asks: list[int] = field(default_factory=list)

    @property
    def root(self) -> str:
        """Where replies about this task go: the card's thread."""
        return self.thread or self.ts


@dataclass
class Waiting:
    """A reply that came while its thread's previous turn was still running."""

    user: str
    text: str
    ts: str
    # When creating its task began (0: not yet): a restart in between looks for that task first.
    started: float = 0.0
    # The files attached to the reply, as Slack describes them (downloaded when its turn starts).
    files: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class Thread:
    """A Slack thread that is a conversation with one agent on one machine, in one folder.

    `turns` are the agent_run task ids in order; a reply runs only once the last one finished,
    the ones that came meanwhile wait in `waiting`, in order.
    """

    channel: str
    root: str
    agent: str
    machine: str
    cwd: str | None = None
    turns: list[str] = field(default_factory=list)
    waiting: list[Waiting] = field(default_factory=list)

    @property
    def key(self) -> str:
        return thread_key(self.channel, self.root)


def thread_key(channel: str, ts: str) -> str:
    return f"{channel}:{ts}"


@dataclass
class Seen:
    """The last event delivered, enough to recognise it again in a restored database."""

    id: int
    task_id: str = ""
    to_status: str = ""
    at: float = 0.0

    def matches(self, event: Event) -> bool:
        return (event.id, event.task_id, event.to_status) == (self.id, self.task_id, self.to_status)


@dataclass
class BulkConfirmation:
    """A `resolve all` preview awaiting its Confirm: exactly the tasks it listed, and their new status."""

    status: str
    task_ids: list[str]


Save = Callable[[], None]


class Cursor:
    """How far the feed was told: the last event delivered, and the alerts of the batch in hand
    already delivered, as "<event id>@<channel>" (a batch goes out by urgency, not by id, and one
    event may be told in two channels)."""

    def __init__(self, save: Save, last_event: int | None, last_seen: Seen | None, delivered: set[str]) -> None:
        self._save = save
        self.last_event = last_event
        self.last_seen = last_seen
        self.delivered = delivered

    def begin_at(self, event_id: int) -> None:
        """A bot with no cursor starts from the feed's newest event."""
        self.last_event = event_id
        self._save()

    def told(self, keys: list[str]) -> None:
        """These alerts of the batch in hand reached Slack."""
        self.delivered.update(keys)
        self._save()

    def advance(self, events: list[Event]) -> None:
        """Every event of a batch is delivered: move the cursor past the newest."""
        newest = max(events, key=lambda e: e.id)
        self.last_event = newest.id
        self.last_seen = Seen(newest.id, newest.task_id, newest.to_status, newest.at)
        self.delivered = {key for key in self.delivered if int(key.partition("@")[0]) > newest.id}
        self._save()

    def rewind(self, event_id: int) -> None:
        """Start again after `event_id` (the event feed went backwards, or another bot got further)."""
        self.last_event = event_id
        self.last_seen = None
        self.delivered.clear()
        self._save()

    def dump(self) -> dict[str, Any]:
        return {"last_event": self.last_event, "last_seen": vars(self.last_seen) if self.last_seen else None,
                "delivered": sorted(self.delivered)}


class Cards:
    """The cards of tasks posted in Slack, by task id."""

    def __init__(self, save: Save, cards: dict[str, Card]) -> None:
        self._save = save
        self._cards = cards

    def get(self, task_id: str) -> Card | None:
        return self._cards.get(task_id)

    def __iter__(self) -> Iterator[tuple[str, Card]]:
        """(task id, card) pairs, a copy: the caller may change cards while it walks them."""
        return iter(list(self._cards.items()))

    def keep(self, task_id: str, card: Card) -> None:
        self._cards[task_id] = card
        if len(self._cards) > MAX_CARDS:
            self._cards = dict(list(self._cards.items())[-MAX_CARDS:])
        self._save()

    def shown(self, card: Card, status: str, progress: str) -> None:
        """The card now shows this status and progress."""
        card.status, card.progress, card.updated = status, progress, time.time()
        self._save()

    def finish(self, card: Card) -> None:
        """The task's end was told."""
        card.finished = True
        self._save()

    def asked(self, card: Card, ask_id: int, channel: str, ts: str) -> None:
        """The card of the task's ask `ask_id` is posted at (channel, ts)."""
        card.asks[str(ask_id)] = [channel, ts]
        self._save()

    def ask_settled(self, card: Card, ask_id: int) -> None:
        """The card of ask `ask_id` shows who answered it (or that it expired)."""
        card.settled_asks.append(ask_id)
        self._save()

    def thread_of(self, channel: str, root: str) -> str | None:
        """The task whose card starts (or was posted in) the thread `root`, if da made it."""
        for task_id, card in self._cards.items():
            if card.channel == channel and card.root == root:
                return task_id
        return None

    def dump(self) -> dict[str, Any]:
        return {task_id: vars(card) for task_id, card in self._cards.items()}


class Threads:
    """The conversations, by `channel:root`, and the messages already acted on."""

    def __init__(self, save: Save, threads: dict[str, Thread], handled: list[str]) -> None:
        self._save = save
        self._threads = threads
        self._handled = handled

    def get(self, channel: str, root: str) -> Thread | None:
        return self._threads.get(thread_key(channel, root))

    def __iter__(self) -> Iterator[Thread]:
        return iter(list(self._threads.values()))

    def keep(self, thread: Thread) -> None:
        self._threads[thread.key] = thread
        if len(self._threads) > MAX_THREADS:
            self._threads = dict(list(self._threads.items())[-MAX_THREADS:])
        self._save()

    def wait(self, thread: Thread, waiting: Waiting) -> None:
        """A reply joins the end of its thread's queue."""
        thread.waiting.append(waiting)
        self._save()

    def starting(self, waiting: Waiting) -> None:
        """Creating the first waiting reply's task begins now."""
        waiting.started = time.time()
        self._save()

    def started(self, thread: Thread, task_id: str) -> None:
        """The first waiting reply is the thread's newest turn."""
        thread.turns.append(task_id)
        thread.waiting.pop(0)
        self._save()

    def drop_first(self, thread: Thread) -> Waiting:
        """The first waiting reply is given up; returns it."""
        dropped = thread.waiting.pop(0)
        self._save()
        return dropped

    def first_time(self, channel: str, ts: str) -> bool:
        """True (and remembered) the first time a message is seen; a redelivery answers False."""
        key = thread_key(channel, ts)
        if key in self._handled:
            return False
        self._handled.append(key)
        del self._handled[:-MAX_HANDLED]
        self._save()
        return True

    def dump(self) -> dict[str, Any]:
        return {"threads": {key: {**vars(t), "waiting": [vars(w) for w in t.waiting]}
                            for key, t in self._threads.items()},
                "handled": list(self._handled)}


class Confirmations:
    """Bulk confirmations shown and not yet clicked, by the token their buttons carry."""

    def __init__(self, save: Save, bulk: dict[str, BulkConfirmation]) -> None:
        self._save = save
        self._bulk = bulk

    def keep(self, status: str, task_ids: list[str]) -> str:
        """Keep what a preview showed until its Confirm; the token its buttons carry."""
        token = uuid.uuid4().hex[:16]
        self.put_back(token, BulkConfirmation(status, task_ids))
        return token

    def take(self, token: str) -> BulkConfirmation | None:
        """The confirmation, gone from the open ones (None when used or cancelled already)."""
        found = self._bulk.pop(token, None)
        if found is not None:
            self._save()
        return found

    def put_back(self, token: str, confirmation: BulkConfirmation) -> None:
        self._bulk[token] = confirmation
        if len(self._bulk) > MAX_BULK:
            self._bulk = dict(list(self._bulk.items())[-MAX_BULK:])
        self._save()

    def dump(self) -> dict[str, Any]:
        return {token: vars(entry) for token, entry in self._bulk.items()}


class BotState:
    """The bot's state file and its owners."""

    def __init__(self, path: Path, data: dict[str, Any] | None = None) -> None:
        data = data or {}
        self.path = path
        seen = Seen(**data["last_seen"]) if data.get("last_seen") else None
        self.cursor = Cursor(self._write, data.get("last_event"), seen, set(data.get("delivered", [])))
        self.cards = Cards(self._write, {task_id: Card(**card) for task_id, card in data.get("cards", {}).items()})
        self.threads = Threads(self._write, {
            key: Thread(**{**entry, "waiting": [Waiting(**w) for w in entry.get("waiting", [])]})
            for key, entry in data.get("threads", {}).items()}, list(data.get("handled", [])))
        self.confirmations = Confirmations(self._write, {token: BulkConfirmation(**entry)
                                                         for token, entry in data.get("bulk", {}).items()})

    @classmethod
    def load(cls, path: Path) -> BotState:
        if not path.is_file():
            return cls(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return cls(path)
        return cls(path, data if isinstance(data, dict) else None)

    @property
    def last_event(self) -> int | None:
        return self.cursor.last_event

    def _write(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        data: dict[str, Any] = {**self.cursor.dump(), "cards": self.cards.dump(), "bulk": self.confirmations.dump(),
                                **self.threads.dump()}
        temporary = self.path.with_suffix(".tmp")
        temporary.write_text(json.dumps(data), encoding="utf-8")
        os.replace(temporary, self.path)
