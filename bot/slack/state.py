"""What the Slack bot must remember across restarts: how far it has told Slack about the event
feed, the cards of tasks assigned from Slack, bulk confirmations awaiting a click, the threads
that are conversations with an agent (with the replies waiting for their turn) and the messages
already acted on (Slack delivers one message more than once). Written
atomically after every delivery, so a restart resumes where it stopped: no event missed, none
posted twice.
"""

from __future__ import annotations

import json
import os
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


@dataclass
class BotState:
    path: Path
    last_event: int | None = None
    last_seen: Seen | None = None
    # Alerts of events after `last_event` already delivered, as "<event id>@<channel>" (a batch
    # is delivered by urgency, not by id, and one event may be told in two channels).
    delivered: set[str] = field(default_factory=set)
    cards: dict[str, Card] = field(default_factory=dict)
    # Bulk confirmations shown and not yet clicked, by the token their buttons carry.
    bulk: dict[str, BulkConfirmation] = field(default_factory=dict)
    threads: dict[str, Thread] = field(default_factory=dict)
    # "<channel>:<ts>" of the people's messages already acted on, oldest first.
    handled: list[str] = field(default_factory=list)

    @classmethod
    def load(cls, path: Path) -> BotState:
        if not path.is_file():
            return cls(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return cls(path)
        cards = {task_id: Card(**card) for task_id, card in data.get("cards", {}).items()}
        seen = Seen(**data["last_seen"]) if data.get("last_seen") else None
        bulk = {token: BulkConfirmation(**entry) for token, entry in data.get("bulk", {}).items()}
        threads = {key: Thread(**{**entry, "waiting": [Waiting(**w) for w in entry.get("waiting", [])]})
                   for key, entry in data.get("threads", {}).items()}
        return cls(path, data.get("last_event"), seen, set(data.get("delivered", [])), cards, bulk, threads,
                   list(data.get("handled", [])))

    def first_time(self, channel: str, ts: str) -> bool:
        """True (and remembered) the first time a message is seen; a redelivery answers False."""
        key = thread_key(channel, ts)
        if key in self.handled:
            return False
        self.handled.append(key)
        self.save()
        return True

    def thread_of_card(self, channel: str, root: str) -> str | None:
        """The task whose card starts (or was posted in) the thread `root`, if da made it."""
        for task_id, card in self.cards.items():
            if card.channel == channel and card.root == root:
                return task_id
        return None

    def advance(self, events: list[Event]) -> None:
        """Every event of a batch is delivered: move the cursor past the newest."""
        newest = max(events, key=lambda e: e.id)
        self.last_event = newest.id
        self.last_seen = Seen(newest.id, newest.task_id, newest.to_status, newest.at)
        self.delivered = {key for key in self.delivered if int(key.partition("@")[0]) > newest.id}
        self.save()

    def rewind(self, event_id: int) -> None:
        """Start again after `event_id` (the event feed went backwards)."""
        self.last_event = event_id
        self.last_seen = None
        self.delivered.clear()
        self.save()

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if len(self.cards) > MAX_CARDS:
            self.cards = dict(list(self.cards.items())[-MAX_CARDS:])
        if len(self.bulk) > MAX_BULK:
            self.bulk = dict(list(self.bulk.items())[-MAX_BULK:])
        if len(self.threads) > MAX_THREADS:
            self.threads = dict(list(self.threads.items())[-MAX_THREADS:])
        del self.handled[:-MAX_HANDLED]
        data: dict[str, Any] = {"last_event": self.last_event,
                                "last_seen": vars(self.last_seen) if self.last_seen else None,
                                "delivered": sorted(self.delivered),
                                "cards": {task_id: vars(card) for task_id, card in self.cards.items()},
                                "bulk": {token: vars(entry) for token, entry in self.bulk.items()},
                                "threads": {key: {**vars(t), "waiting": [vars(w) for w in t.waiting]}
                                            for key, t in self.threads.items()},
                                "handled": self.handled}
        temporary = self.path.with_suffix(".tmp")
        temporary.write_text(json.dumps(data), encoding="utf-8")
        os.replace(temporary, self.path)
