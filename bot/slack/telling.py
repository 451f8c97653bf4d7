"""What to say about the event feed, decided without Slack: data in, decisions out.

The notifier reads the feed and the tasks, asks this module what to tell where, then hands the
drawing to the block builders and the posting to the poster. Everything here is pure (the
time is passed in), so each rule is unit-tested on its own (tests/test_slack_telling.py).

- needs_human and failed go to the notify channel, and to the card's thread of a task assigned
  from Slack, mentioning who asked;
- done goes under the task's card; without a card only with SLACK_NOTIFY_DONE=1;
- each event is told once per place, only while it is the task's status (done is always told);
- most urgent first: a person is waiting, then something broke, then good news;
- more than `threshold` alerts for one channel within BURST_WINDOW become one summary;
- an agent at work: its thread follows its progress (`LiveDecision`), one message per turn, a status
  line saying what it does, its agent session `processing` while it runs and `active`/`closed` after.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, replace

from da.bot.slack.progress import RUNNING, Progress
from da.bot.slack.state import Card
from da.queue import models
from da.queue.models import Event, Task

# More alerts than this for one channel within BURST_WINDOW seconds become one summary.
BURST_THRESHOLD = 5
BURST_WINDOW = 60.0
# Most urgent first: a person is waiting, then something broke, then good news.
ORDER = {models.NEEDS_HUMAN: 0, models.FAILED: 1, models.DONE: 2}
# How a summary counts them ("3 need a person, 12 failed"): the other status names read as words.
KIND_WORDS = {models.NEEDS_HUMAN: "need a person", models.FAILED: models.FAILED, models.DONE: models.DONE}
# A summary's list goes in its thread, this many characters of lines per section, four sections a post.
LIST_SECTION_CHARS = 2800
LIST_SECTIONS_PER_POST = 4


@dataclass(frozen=True)
class Alert:
    """One message to post about one event: where, and whom it mentions."""

    event: Event
    task: Task
    channel: str
    thread_ts: str | None = None
    mention: str = ""

    @property
    def kind(self) -> str:
        return self.event.to_status

    @property
    def key(self) -> str:
        return delivery_key(self.event, self.channel)

    def moved(self, channel: str) -> Alert:
        """The same alert at the top of another channel (its own place refused it)."""
        return replace(self, channel=channel, thread_ts=None)


def delivery_key(event: Event, channel: str) -> str:
    """What the state records once an event's alert reached a channel (one event may go to two)."""
    return f"{event.id}@{channel}"


def alerts_for(events: list[Event], tasks: dict[str, Task], card_of: Callable[[str], Card | None], *,
               notify_channel: str, notify_done: bool, delivered: set[str]) -> list[Alert]:
    """The alerts the events call for, in feed order, leaving out those already delivered."""
    alerts: list[Alert] = []
    told: set[tuple[str, str]] = set()
    for event in events:
        task = tasks.get(event.task_id)
        to = event.to_status
        if task is None or to not in models.REPORTABLE:
            continue
        if (to != task.status and to != models.DONE) or (task.id, to) in told:
            continue
        told.add((task.id, to))
        card = card_of(task.id)
        if to == models.DONE:
            if card is not None:
                alerts.append(Alert(event, task, card.channel, card.root))
            elif notify_done and notify_channel:
                alerts.append(Alert(event, task, notify_channel))
            continue
        if notify_channel:
            alerts.append(Alert(event, task, notify_channel))
        if card is not None:
            alerts.append(Alert(event, task, card.channel, card.root, card.requester or task.created_by or ""))
    return [a for a in alerts if a.key not in delivered]


def by_channel(alerts: list[Alert]) -> dict[str, list[Alert]]:
    """Alerts grouped by channel, each group most urgent first, then in feed order."""
    grouped: dict[str, list[Alert]] = {}
    for alert in sorted(alerts, key=lambda a: (ORDER[a.kind], a.event.id)):
        grouped.setdefault(alert.channel, []).append(alert)
    return grouped


class BurstMeter:
    """Posts per channel within the burst window: past the threshold a group becomes a summary."""

    def __init__(self, threshold: int = BURST_THRESHOLD, window: float = BURST_WINDOW) -> None:
        self.threshold = threshold
        self.window = window
        self.posted: dict[str, deque[float]] = {}

    def bursting(self, channel: str, count: int, now: float) -> bool:
        """True when posting `count` more alerts in `channel` at `now` would pass the threshold."""
        recent = self.posted.setdefault(channel, deque())
        while recent and now - recent[0] > self.window:
            recent.popleft()
        return count > 1 and len(recent) + count > self.threshold

    def record(self, channel: str, now: float) -> None:
        self.posted.setdefault(channel, deque()).append(now)


@dataclass(frozen=True)
class Summary:
    """What a burst's summary says: the counts by kind, over how long, and whom it mentions."""

    total: int
    counts: dict[str, int]
    minutes: int
    mentions: tuple[str, ...]


def summarise(group: list[Alert], now: float) -> Summary:
    counts = {kind: sum(a.kind == kind for a in group) for kind in ORDER}
    oldest = min(a.event.at for a in group)
    mentions = tuple(dict.fromkeys(a.mention for a in group if a.mention.startswith(("U", "W"))))
    return Summary(len(group), counts, max(1, math.ceil((now - oldest) / 60)), mentions)


def list_posts(lines: list[str]) -> list[list[str]]:
    """Lines packed into sections of at most LIST_SECTION_CHARS, LIST_SECTIONS_PER_POST per post."""
    sections: list[str] = []
    for line in lines:
        line = line if len(line) <= LIST_SECTION_CHARS else line[: LIST_SECTION_CHARS - 1] + "…"
        if sections and len(sections[-1]) + 1 + len(line) <= LIST_SECTION_CHARS:
            sections[-1] += "\n" + line
        else:
            sections.append(line)
    return [sections[i:i + LIST_SECTIONS_PER_POST] for i in range(0, len(sections), LIST_SECTIONS_PER_POST)]


# ---- an agent at work in its thread ---------------------------------------------------------

# The longest step title quoted in the thread's status line.
STATUS_STEP_CHARS = 60
WAITING_LINE = "waiting for your approval"


@dataclass(frozen=True)
class LiveDecision:
    """What the thread of a running agent should show after a progress update."""

    # Open a new progress message (the first update, or a new turn); close the old one first.
    start: bool
    # Something changed that the open message does not show yet.
    show: bool
    # The thread's status line ("" clears it).
    status_line: str


def followed(task: Task, card: Card | None) -> bool:
    """Whether a task's thread follows its progress: it has a card that is not finished and it is not over."""
    return card is not None and not card.finished and task.status not in models.TERMINAL


def status_line(status: str, progress: Progress, machine: str | None, open_asks: int) -> str:
    """The line under the thread: waiting for a person, else the running step and where it runs."""
    if open_asks or status == models.WAITING:
        return WAITING_LINE
    where = f" on {machine}" if machine else ""
    running = next((step.title for step in reversed(progress.steps) if step.status == RUNNING), "")
    if running:
        step = running if len(running) <= STATUS_STEP_CHARS else running[:STATUS_STEP_CHARS - 1] + "…"
        return f"running {step}{where}"
    return f"working{where}"


def live_decision(shown: Progress | None, now: Progress, status: str, machine: str | None,
                  open_asks: int) -> LiveDecision:
    """From what the thread shows (`shown`, None before the first message) to the task's progress `now`."""
    start = shown is None or now.turns > shown.turns
    return LiveDecision(start=start, show=start or now != shown,
                        status_line=status_line(status, now, machine, open_asks))


def session_after(status: str) -> str:
    """The agent session once the task ended: still open to replies when it answered or asked for a
    person, closed when it failed or was cancelled."""
    return "active" if status in (models.DONE, models.NEEDS_HUMAN) else "closed"
