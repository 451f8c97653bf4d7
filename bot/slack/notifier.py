"""Follow the queue's event feed and tell Slack.

- needs_human and failed tasks get a card with buttons in SLACK_NOTIFY_CHANNEL; a task
  assigned from Slack also gets a reply in its card's thread that mentions who asked;
- done tasks get a reply under their card; those not started from Slack are posted only
  with SLACK_NOTIFY_DONE=1;
- cards of running tasks show their latest progress line (the progress editor).

Every alert is delivered or the cursor does not move: a Slack failure (rate limit, 5xx,
reset, timeout) is retried honouring Retry-After, a refused card falls back to plain text,
a thread or channel that is gone falls back to the notify channel. A burst (more than
`burst_threshold` alerts for one channel within a minute) becomes one summary per channel
with a Review button and the list in its thread; needs_human and failed go before done.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from slack_sdk.errors import SlackApiError
from slack_sdk.models.blocks import ActionsBlock, Block, HeaderBlock, PlainTextObject, SectionBlock
from slack_sdk.web.async_client import AsyncWebClient

from da.bot import views
from da.bot.slack import answer, blocks, delivery
from da.bot.slack.blocks import escape
from da.bot.slack.conversations import Conversations
from da.bot.slack.state import BotState
from da.queue import errors as queue_errors
from da.queue import models
from da.queue.client import QueueClient
from da.queue.models import Event, Task

logger = logging.getLogger(__name__)

# One long-poll of the feed; the queue answers at once when an event arrives.
FEED_WAIT = 30.0
# After the first event of a batch, wait this long for the rest of a burst to arrive.
BATCH_LINGER = 0.5
# More alerts than this for one channel within BURST_WINDOW seconds become one summary.
BURST_THRESHOLD = 5
BURST_WINDOW = 60.0
# Tries of one delivery: 0.5 s, doubling to 30 s between them (longer if Slack asks), forever.
RETRY_FIRST = 0.5
RETRY_MAX = 30.0
# chat.update is Tier 3 (about 50 a minute for the workspace): progress edits use at most this
# many a minute, leaving the rest to status changes.
PROGRESS_EDITS_PER_MINUTE = 30
# A summary's list goes in its thread, this many characters of lines per section, four sections a post.
LIST_SECTION_CHARS = 2800
LIST_SECTIONS_PER_POST = 4
# How far back to look for the restore point of a feed that went backwards.
REWIND_WINDOW = 2000
# Most urgent first: a person is waiting, then something broke, then good news.
ORDER = {models.NEEDS_HUMAN: 0, models.FAILED: 1, models.DONE: 2}
# How a summary counts them ("3 need a person, 12 failed"): the other status names read as words.
KIND_WORDS = {models.NEEDS_HUMAN: "need a person", models.FAILED: models.FAILED, models.DONE: models.DONE}


@dataclass
class Alert:
    """One message to post about one event: where, and whether it mentions the requester."""

    event: Event
    task: Task
    channel: str
    thread_ts: str | None = None
    mention: str = ""

    @property
    def kind(self) -> str:
        return self.event.to_status


class Notifier:
    """The feed follower and the progress editor."""

    def __init__(self, client: QueueClient, web: AsyncWebClient, state: BotState, channel: str, *,
                 progress_every: float = 10.0, wait: float = FEED_WAIT, notify_done: bool = False,
                 burst_threshold: int = BURST_THRESHOLD, holding: asyncio.Event | None = None,
                 conversations: Conversations | None = None,
                 homes: Callable[[list[Task]], Awaitable[None]] | None = None) -> None:
        self.client = client
        self.web = web
        self.state = state
        self.channel = channel
        self.progress_every = progress_every
        self.wait = wait
        self.notify_done = notify_done
        self.burst_threshold = burst_threshold
        self.posted: dict[str, deque[float]] = {}
        self.progress_edits: deque[float] = deque()
        self.verify_feed = True
        # Set while this bot holds its workspace's lease; nothing is posted without it.
        self.holding = holding or asyncio.Event()
        # Set while no batch is being delivered.
        self.settled = asyncio.Event()
        self.settled.set()
        if holding is None:
            self.holding.set()
        # Threads that are conversations: a finished turn starts the next waiting reply.
        self.conversations = conversations
        # Redraws the Home tab of people whose tasks changed.
        self.homes = homes
        # A batch and a late card's catch-up never tell the same end twice.
        self.delivering = asyncio.Lock()

    # ---- the feed ---------------------------------------------------------------------

    async def follow(self) -> None:
        """Deliver every notifiable event after the last one delivered, forever."""
        while True:
            await self.holding.wait()
            events = await self.next_batch()
            await self.holding.wait()
            if events:
                self.settled.clear()
                try:
                    await self.deliver_batch(events)
                finally:
                    self.settled.set()

    async def settle(self, timeout: float) -> None:
        """Wait (up to `timeout`) for the batch being delivered to finish, so a bot that stops does not
        cut a post Slack has taken before its cursor is saved (the next bot would post it again).
        Clear `holding` first so no new batch starts."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.settled.wait(), timeout)

    async def next_batch(self) -> list[Event]:
        """The next events, a burst gathered into one batch; waits for the queue when it is away."""
        pause = RETRY_FIRST
        while True:
            try:
                if self.state.last_event is None:
                    _, self.state.last_event = await self.client.events(-1)
                    self.state.save()
                if self.verify_feed:
                    await self.check_feed()
                    self.verify_feed = False
                if self.conversations is not None and self.conversations.stalled:
                    await self.conversations.resume()
                events, _ = await self.client.events(self.state.last_event, wait=self.wait)
                if not events:
                    self.verify_feed = True
                    continue
                await asyncio.sleep(BATCH_LINGER)
                more, _ = await self.client.events(events[-1].id)
                return events + more
            except queue_errors.QueueError as exc:
                logger.warning("event feed: %s; trying again in %.1fs", exc.detail, pause)
                self.verify_feed = True
                await asyncio.sleep(pause)
                pause = min(pause * 2, RETRY_MAX)

    async def check_feed(self) -> None:
        """Notice a feed that went backwards (a restored database hands out old event ids again)
        and resume from the restore point instead of waiting forever for ids it already had."""
        seen, last = self.state.last_seen, self.state.last_event
        if last is None or last < 1:
            return
        found, _ = await self.client.events(last - 1, limit=1)
        if found and found[0].id == last:
            if seen is None or seen.matches(found[0]):
                return
        else:
            head = (await self.client.events(-1))[1]
            if head >= last:
                return  # that event was pruned; the feed itself is fine
        head = (await self.client.events(-1))[1]
        resume = await self.restore_point(head)
        logger.warning("the event feed went backwards (the bot had reached event %d, the queue's newest is %d): "
                       "was its database restored? Resuming after event %d.", last, head, resume)
        self.state.rewind(resume)

    async def restore_point(self, head: int) -> int:
        """The newest event of the restored feed that is older than the last one delivered."""
        seen = self.state.last_seen
        if seen is None:
            return head
        point = after = max(0, head - REWIND_WINDOW)
        while after < head:
            page, _ = await self.client.events(after)
            if not page:
                break
            for event in page:
                if event.at <= seen.at:
                    point = event.id
            after = page[-1].id
        return point

    async def deliver_batch(self, events: list[Event]) -> None:
        """Cards first, then the alerts by urgency; the cursor moves once all are delivered."""
        async with self.delivering:
            await self._deliver_batch(events)

    async def _deliver_batch(self, events: list[Event]) -> None:
        tasks = await self.tasks_of(events)
        for task in tasks.values():
            card = self.state.cards.get(task.id)
            if card is not None:
                await self.update_card(task)
                card.finished = card.finished or task.status in models.TERMINAL
        alerts = sorted(self.alerts_for(events, tasks), key=lambda a: (ORDER[a.kind], a.event.id))
        by_channel: dict[str, list[Alert]] = {}
        for alert in alerts:
            by_channel.setdefault(alert.channel, []).append(alert)
        for channel, group in by_channel.items():
            if self.bursting(channel, len(group)):
                await self.summarise(channel, group)
                self.state.delivered.update(delivery_key(a.event, channel) for a in group)
                self.state.save()
                continue
            for alert in group:
                await self.post(alert)
                self.state.delivered.add(delivery_key(alert.event, channel))
                self.state.save()
        for task in tasks.values():
            if task.status in models.TERMINAL:
                await self.next_reply(task)
        if self.homes is not None:
            await self.homes(list(tasks.values()))
        self.state.advance(events)

    async def next_reply(self, task: Task) -> None:
        if self.conversations is not None:
            try:
                await self.until(f"the reply waiting for {task.short_id}",
                                 functools.partial(self.conversations.finished, task))
            except queue_errors.QueueError as exc:
                logger.error("the reply waiting for %s was not started: %s", task.short_id, exc.detail)

    async def deliver_late(self, task: Task) -> None:
        """Tell the end of a task whose card was posted after the feed had passed that end (the
        worker was faster than the card): its alert or answer in the thread, then the next reply."""
        async with self.delivering:
            card = self.state.cards.get(task.id)
            if card is None or card.finished:
                return
            events = await self.client.task_events(task.id)
            ending = [e for e in events if e.to_status == task.status]
            await self.update_card(task)
            if ending:
                for alert in self.alerts_for(ending[-1:], {task.id: task}):
                    if alert.thread_ts:
                        await self.post(alert)
            card.finished = True
            self.state.save()
            await self.next_reply(task)

    async def tasks_of(self, events: list[Event]) -> dict[str, Task]:
        """The tasks the events are about, as they are now (a deleted one is left out)."""
        tasks: dict[str, Task] = {}
        for task_id in dict.fromkeys(e.task_id for e in events):
            try:
                task = await self.until(f"reading task {task_id[:8]}",
                                        functools.partial(self.client.get_task, task_id))
            except queue_errors.QueueError as exc:
                logger.error("task %s is left out of the alerts: the queue refused to read it (%s)", task_id[:8],
                             exc.detail)
                continue
            if task is not None:
                tasks[task_id] = task
        return tasks

    def alerts_for(self, events: list[Event], tasks: dict[str, Task]) -> list[Alert]:
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
            card = self.state.cards.get(task.id)
            if to == models.DONE:
                if card is not None:
                    alerts.append(Alert(event, task, card.channel, card.root))
                elif self.notify_done and self.channel:
                    alerts.append(Alert(event, task, self.channel))
                continue
            if self.channel:
                alerts.append(Alert(event, task, self.channel))
            if card is not None:
                alerts.append(Alert(event, task, card.channel, card.root, card.requester or task.created_by or ""))
        return [a for a in alerts if delivery_key(a.event, a.channel) not in self.state.delivered]

    # ---- posting ----------------------------------------------------------------------

    def bursting(self, channel: str, count: int) -> bool:
        """True when posting `count` more alerts in `channel` would pass the burst threshold."""
        recent = self.posted.setdefault(channel, deque())
        while recent and time.monotonic() - recent[0] > BURST_WINDOW:
            recent.popleft()
        return count > 1 and len(recent) + count > self.burst_threshold

    def record_post(self, channel: str) -> None:
        self.posted.setdefault(channel, deque()).append(time.monotonic())

    async def post(self, alert: Alert) -> None:
        """Post one alert until Slack takes it: as drawn, else as plain text, else in the notify channel."""
        text, drawn = self.draw(alert)

        async def attempt() -> None:
            try:
                await self.web.chat_postMessage(channel=alert.channel, thread_ts=alert.thread_ts, text=text,
                                                blocks=[b.to_dict() for b in drawn] if drawn else None)
            except SlackApiError as exc:
                why = delivery.problem(exc)
                if why in delivery.CONTENT_ERRORS:
                    logger.warning("Slack refused the alert for %s (%s); posting it as text", alert.task.short_id, why)
                    await self.web.chat_postMessage(channel=alert.channel, thread_ts=alert.thread_ts,
                                                    text=delivery.clip(text))
                    return
                if why in delivery.PLACE_ERRORS and self.channel and (alert.thread_ts or alert.channel != self.channel):
                    logger.warning("cannot post in %s (%s); the alert for %s goes to %s instead", alert.channel, why,
                                   alert.task.short_id, self.channel)
                    alert.channel, alert.thread_ts = self.channel, None
                    text_and_blocks = self.draw(alert)
                    await self.web.chat_postMessage(channel=alert.channel, text=text_and_blocks[0],
                                                    blocks=[b.to_dict() for b in text_and_blocks[1]])
                    return
                raise

        await self.until(f"the {alert.kind} alert for {alert.task.short_id}", attempt)
        self.record_post(alert.channel)
        if alert.thread_ts and alert.kind == models.DONE and answer.text(alert.task):
            await self.attach_files(alert)

    async def attach_files(self, alert: Alert) -> None:
        """The whole answer (when the message could not show it) and the log as files in the thread
        (files_upload_v2); a refusal is said, not retried forever (the SDK already retried what
        Slack asks to retry)."""
        task = alert.task
        uploads = answer.files(task)
        if not uploads:
            return
        try:
            await self.web.files_upload_v2(channel=alert.channel, thread_ts=alert.thread_ts, file_uploads=uploads)
        except delivery.FAILURES as exc:
            why = delivery.problem(exc)
            logger.warning("uploading the answer and log of %s failed (%s)", task.short_id, why)
            hint = " (add the files:write scope to the Slack app and reinstall it)" if why == "missing_scope" else ""
            with contextlib.suppress(*delivery.FAILURES):
                await self.web.chat_postMessage(channel=alert.channel, thread_ts=alert.thread_ts,
                                                text=f"I could not attach the answer and log files: {why}{hint}. "
                                                     f"`/da show {task.short_id}` has it.")

    def draw(self, alert: Alert) -> tuple[str, list[Block]]:
        task = alert.task
        mention = f"<@{alert.mention}> " if alert.mention.startswith(("U", "W")) else ""
        if alert.kind == models.DONE and alert.thread_ts and answer.text(task):
            return answer.drawn(task)
        if alert.kind == models.DONE:
            notes = f": {escape(task.notes)}" if task.notes else ""
            text = f":white_check_mark: `{task.short_id}` {escape(task.type)} done on {escape(task.assigned_to or '-')}"
            return text + notes, []
        kind = "review" if alert.kind == models.NEEDS_HUMAN else "failures"
        title = "Needs a person" if kind == "review" else "Failed"
        card = blocks.review_card(task, kind=kind)
        if alert.thread_ts:
            verb = "needs you" if kind == "review" else "has failed"
            text = f"{mention}`{task.short_id}` {verb}: {escape(task.notes or '')}"
            return text, [SectionBlock(block_id="mention", text=blocks.md(text)), *card]
        return (f"{title}: {task.short_id} {escape(task.notes or '')}",
                [HeaderBlock(block_id="title", text=PlainTextObject(text=title)), *card])

    async def summarise(self, channel: str, group: list[Alert]) -> None:
        """One summary for a burst, with Review buttons, and the list in its thread."""
        counts = {kind: sum(a.kind == kind for a in group) for kind in ORDER}
        parts = [f"{n} {KIND_WORDS[kind]}" for kind, n in counts.items() if n]
        oldest = min(a.event.at for a in group)
        minutes = max(1, math.ceil((time.time() - oldest) / 60))
        span = "the last minute" if minutes == 1 else f"the last {minutes} minutes"
        mentions = " ".join(dict.fromkeys(f"<@{a.mention}>" for a in group if a.mention.startswith(("U", "W"))))
        text = f"{len(group)} tasks in {span}: {', '.join(parts)}." + (f" {mentions}" if mentions else "")
        buttons = [blocks.button("Review", "open_review", {"kind": "review"}, "primary")] \
            if counts[models.NEEDS_HUMAN] else []
        if counts[models.FAILED]:
            buttons.append(blocks.button("Failures", "open_review", {"kind": "failures"}))
        drawn: list[Block] = [SectionBlock(block_id="summary", text=blocks.md(f"{text}\nThe list is in the thread."))]
        if buttons:
            drawn.append(ActionsBlock(block_id="summary_actions", elements=buttons))
        posted: dict[str, Any] = {"channel": channel}

        async def summary() -> None:
            try:
                response = await self.web.chat_postMessage(channel=posted["channel"], text=text,
                                                           blocks=[b.to_dict() for b in drawn])
            except SlackApiError as exc:
                why = delivery.problem(exc)
                if why in delivery.PLACE_ERRORS and self.channel and posted["channel"] != self.channel:
                    logger.warning("cannot post in %s (%s); the summary goes to %s instead", posted["channel"], why,
                                   self.channel)
                    posted["channel"] = self.channel
                raise
            posted["ts"] = response["ts"]

        await self.until(f"the summary of {len(group)} alerts", summary)
        self.record_post(posted["channel"])
        for chunk in list_posts([self.list_line(a) for a in group]):

            async def listed(chunk: list[str] = chunk) -> None:
                await self.web.chat_postMessage(channel=posted["channel"], thread_ts=posted["ts"], text=chunk[0][:200],
                                                blocks=[SectionBlock(text=blocks.md(part)).to_dict() for part in chunk])

            await self.until("the list of a summary", listed)

    def list_line(self, alert: Alert) -> str:
        task = alert.task
        emoji = blocks.STATUS_EMOJI.get(alert.kind, "")
        notes = escape(views.preview(task, 120)) if alert.kind == models.DONE else escape((task.notes or "")[:150])
        return f"{emoji} `{task.short_id}` *{escape(task.type)}* on {escape(task.assigned_to or '-')}: {notes}"

    async def until(self, what: str, attempt: Callable[[], Awaitable[Any]]) -> Any:
        """Run `attempt` until it succeeds: Slack failures and a queue that is away are retried, honouring
        Retry-After; a queue error that would answer the same again (too large, refused) is raised.

        A task that no longer exists answers None.
        """
        pause = RETRY_FIRST
        while True:
            try:
                return await attempt()
            except queue_errors.NotFound:
                return None
            except queue_errors.QueueError as exc:
                if not delivery.transient(exc):
                    raise
                why = exc.detail
                wait = pause
            except delivery.FAILURES as exc:
                why = delivery.problem(exc)
                wait = max(pause, delivery.retry_after(exc))
            log = logger.error if why in delivery.PLACE_ERRORS else logger.warning
            log("%s was not delivered (%s); trying again in %.1fs", what, why, wait)
            await asyncio.sleep(wait)
            pause = min(pause * 2, RETRY_MAX)

    # ---- cards ------------------------------------------------------------------------

    async def update_card(self, task: Task, *, progress_only: bool = False) -> None:
        """Redraw a task's card when its status or progress changed; a card Slack lost is forgotten."""
        card = self.state.cards.get(task.id)
        progress = task.progress or ""
        if card is None or (card.status == task.status and card.progress == progress):
            return
        if progress_only and not self.progress_budget():
            return
        text, drawn = blocks.render(views.Created(task))
        try:
            await self.web.chat_update(channel=card.channel, ts=card.ts, text=text, blocks=[b.to_dict() for b in drawn])
        except delivery.FAILURES as exc:
            why = delivery.problem(exc)
            if why in ("message_not_found", "cant_update_message", "channel_not_found"):
                logger.warning("the card of %s is gone (%s); no more edits", task.short_id, why)
                card.status = models.CANCELLED
                self.state.save()
                return
            logger.warning("editing the card of %s failed (%s); the next round tries again", task.short_id, why)
            return
        card.status, card.progress, card.updated = task.status, progress, time.time()
        self.state.save()

    def progress_budget(self) -> bool:
        """True (and counted) while progress edits stay under their share of chat.update's limit."""
        now = time.monotonic()
        while self.progress_edits and now - self.progress_edits[0] > 60:
            self.progress_edits.popleft()
        if len(self.progress_edits) >= PROGRESS_EDITS_PER_MINUTE:
            return False
        self.progress_edits.append(now)
        return True

    async def edit_progress(self) -> None:
        """Every `progress_every` seconds, refresh the cards of tasks still running."""
        while True:
            await asyncio.sleep(self.progress_every)
            await self.holding.wait()
            for task_id, card in list(self.state.cards.items()):
                if card.status in models.TERMINAL or card.finished:
                    continue
                try:
                    task = await self.client.get_task(task_id)
                    if task.status in models.TERMINAL:
                        await self.deliver_late(task)
                        continue
                except queue_errors.QueueError as exc:
                    logger.warning("progress of %s: %s", task_id[:8], exc.detail)
                    continue
                await self.update_card(task, progress_only=True)


def delivery_key(event: Event, channel: str) -> str:
    """What the state records once an event's alert reached a channel (one event may go to two)."""
    return f"{event.id}@{channel}"


def list_posts(lines: list[str]) -> list[list[str]]:
    """Lines packed into sections of at most LIST_SECTION_CHARS, LIST_SECTIONS_PER_POST per post."""
    sections: list[str] = []
    for line in lines:
        line = delivery.clip(line, LIST_SECTION_CHARS)
        if sections and len(sections[-1]) + 1 + len(line) <= LIST_SECTION_CHARS:
            sections[-1] += "\n" + line
        else:
            sections.append(line)
    return [sections[i:i + LIST_SECTIONS_PER_POST] for i in range(0, len(sections), LIST_SECTIONS_PER_POST)]
