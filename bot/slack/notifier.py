"""Follow the queue's event feed and tell Slack.

The notifier's one job is the feed: read it in batches, look up the tasks, ask `telling` what
to say where (pure decisions), draw it with the block builders and hand it to the poster
(`delivery.Poster`); the cards' edits are `cards.CardEditor`'s.

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
import time
from collections.abc import Awaitable, Callable

from slack_sdk.errors import SlackApiError
from slack_sdk.models.blocks import Block

from da.bot.slack import answer, blocks, delivery, telling
from da.bot.slack.cards import CardEditor
from da.bot.slack.conversations import Conversations
from da.bot.slack.delivery import Poster
from da.bot.slack.state import BotState
from da.bot.slack.telling import Alert
from da.queue import errors as queue_errors
from da.queue import models
from da.queue.client import QueueClient
from da.queue.models import Event, Task

logger = logging.getLogger(__name__)

# One long-poll of the feed; the queue answers at once when an event arrives.
FEED_WAIT = 30.0
# After the first event of a batch, wait this long for the rest of a burst to arrive.
BATCH_LINGER = 0.5
# How far back to look for the restore point of a feed that went backwards.
REWIND_WINDOW = 2000


def drawn(alert: Alert, *, above: bool = False) -> blocks.Drawn:
    """An alert as Slack shows it: a done agent's answer in its thread (its result only, when the thread's
    stream showed the answer `above`), else the alert card."""
    if alert.kind == models.DONE and alert.thread_ts and answer.text(alert.task):
        return answer.drawn(alert.task, above=above)
    return blocks.alert(alert.task, alert.kind, threaded=bool(alert.thread_ts), mention=alert.mention)


class Notifier:
    """The feed follower; its card editor is the progress editor."""

    def __init__(self, client: QueueClient, poster: Poster, state: BotState, channel: str, *,
                 progress_every: float = 10.0, wait: float = FEED_WAIT, notify_done: bool = False,
                 burst_threshold: int = telling.BURST_THRESHOLD, holding: asyncio.Event | None = None,
                 conversations: Conversations | None = None,
                 homes: Callable[[list[Task]], Awaitable[None]] | None = None,
                 shown_live: Callable[[str], Awaitable[bool]] | None = None) -> None:
        self.client = client
        self.poster = poster
        self.state = state
        self.channel = channel
        self.wait = wait
        self.notify_done = notify_done
        self.meter = telling.BurstMeter(burst_threshold)
        self.verify_feed = True
        # Set while this bot holds its workspace's lease; nothing is posted without it.
        self.holding = holding or asyncio.Event()
        if holding is None:
            self.holding.set()
        # Set while no batch is being delivered.
        self.settled = asyncio.Event()
        self.settled.set()
        # Threads that are conversations: a finished turn starts the next waiting reply.
        self.conversations = conversations
        # Redraws the Home tab of people whose tasks changed.
        self.homes = homes
        # Whether a task's stream ended showing its whole answer (the progress follower knows).
        self.shown_live = shown_live
        # A batch and a late card's catch-up never tell the same end twice.
        self.delivering = asyncio.Lock()
        self.cards = CardEditor(client, poster, state, every=progress_every, holding=self.holding)

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

    async def edit_progress(self) -> None:
        """The progress editor: the cards of running tasks refreshed, late ends told."""
        await self.cards.follow(self.deliver_late)

    async def settle(self, timeout: float) -> None:
        """Wait (up to `timeout`) for the batch being delivered to finish, so a bot that stops does not
        cut a post Slack has taken before its cursor is saved (the next bot would post it again).
        Clear `holding` first so no new batch starts."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.settled.wait(), timeout)

    async def next_batch(self) -> list[Event]:
        """The next events, a burst gathered into one batch; waits for the queue when it is away."""
        pause = delivery.RETRY_FIRST
        cursor = self.state.cursor
        while True:
            try:
                if cursor.last_event is None:
                    cursor.begin_at((await self.client.events(-1))[1])
                if self.verify_feed:
                    await self.check_feed()
                    self.verify_feed = False
                if self.conversations is not None and self.conversations.stalled:
                    await self.conversations.resume()
                events, _ = await self.client.events(cursor.last_event or 0, wait=self.wait)
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
                pause = min(pause * 2, delivery.RETRY_MAX)

    async def check_feed(self) -> None:
        """Notice a feed that went backwards (a restored database hands out old event ids again)
        and resume from the restore point instead of waiting forever for ids it already had."""
        seen, last = self.state.cursor.last_seen, self.state.cursor.last_event
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
        self.state.cursor.rewind(resume)

    async def restore_point(self, head: int) -> int:
        """The newest event of the restored feed that is older than the last one delivered."""
        seen = self.state.cursor.last_seen
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
                await self.cards.update(task)
                if task.status in models.TERMINAL and not card.finished:
                    self.state.cards.finish(card)
        for channel, group in telling.by_channel(self.alerts_for(events, tasks)).items():
            if self.meter.bursting(channel, len(group), time.monotonic()):
                await self.summarise(channel, group)
                self.state.cursor.told([telling.delivery_key(a.event, channel) for a in group])
                continue
            for alert in group:
                await self.post(alert)
                self.state.cursor.told([alert.key])
        for task in tasks.values():
            if task.status in models.TERMINAL:
                await self.next_reply(task)
        if self.homes is not None:
            await self.homes(list(tasks.values()))
        self.state.cursor.advance(events)

    def alerts_for(self, events: list[Event], tasks: dict[str, Task]) -> list[Alert]:
        return telling.alerts_for(events, tasks, self.state.cards.get, notify_channel=self.channel,
                                  notify_done=self.notify_done, delivered=self.state.cursor.delivered)

    async def next_reply(self, task: Task) -> None:
        if self.conversations is not None:
            try:
                await delivery.until(f"the reply waiting for {task.short_id}",
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
            await self.cards.update(task)
            if ending:
                for alert in self.alerts_for(ending[-1:], {task.id: task}):
                    if alert.thread_ts:
                        await self.post(alert)
            self.state.cards.finish(card)
            await self.next_reply(task)

    async def tasks_of(self, events: list[Event]) -> dict[str, Task]:
        """The tasks the events are about, as they are now (a deleted one is left out)."""
        tasks: dict[str, Task] = {}
        for task_id in dict.fromkeys(e.task_id for e in events):
            try:
                task = await delivery.until(f"reading task {task_id[:8]}",
                                            functools.partial(self.client.get_task, task_id))
            except queue_errors.QueueError as exc:
                logger.error("task %s is left out of the alerts: the queue refused to read it (%s)", task_id[:8],
                             exc.detail)
                continue
            if task is not None:
                tasks[task_id] = task
        return tasks

    # ---- posting ----------------------------------------------------------------------

    async def post(self, alert: Alert) -> None:
        """Post one alert until Slack takes it: as drawn, else as plain text, else in the notify channel."""
        above = (alert.kind == models.DONE and bool(alert.thread_ts) and bool(answer.text(alert.task))
                 and self.shown_live is not None and await self.shown_live(alert.task.id))
        text, shown = drawn(alert, above=above)
        elsewhere = None
        if self.channel and (alert.thread_ts or alert.channel != self.channel):
            elsewhere = (self.channel, *drawn(alert.moved(self.channel)))
        what = f"the {alert.kind} alert for {alert.task.short_id}"

        async def attempt() -> str:
            return await self.poster.post_or_plain(alert.channel, text, shown, thread_ts=alert.thread_ts,
                                                   elsewhere=elsewhere, what=what)

        landed = await delivery.until(what, attempt)
        self.meter.record(landed, time.monotonic())
        if alert.thread_ts and landed == alert.channel and alert.kind == models.DONE and answer.text(alert.task):
            await self.poster.attach(alert.channel, alert.thread_ts, answer.files(alert.task, above=above),
                                     alert.task.short_id)

    async def summarise(self, channel: str, group: list[Alert]) -> None:
        """One summary for a burst, with Review buttons, and the list in its thread."""
        summary = telling.summarise(group, time.time())
        text, shown = blocks.burst_summary(summary.total, summary.counts, telling.KIND_WORDS, summary.minutes,
                                           summary.mentions)
        posted = {"channel": channel, "ts": ""}

        async def attempt() -> None:
            try:
                posted["channel"], posted["ts"] = await self.poster.post(posted["channel"], text, shown)
            except SlackApiError as exc:
                why = delivery.problem(exc)
                if why in delivery.PLACE_ERRORS and self.channel and posted["channel"] != self.channel:
                    logger.warning("cannot post in %s (%s); the summary goes to %s instead", posted["channel"], why,
                                   self.channel)
                    posted["channel"] = self.channel
                raise

        await delivery.until(f"the summary of {len(group)} alerts", attempt)
        self.meter.record(posted["channel"], time.monotonic())
        for sections in telling.list_posts([blocks.alert_line(a.task, a.kind) for a in group]):
            list_text, list_blocks = blocks.list_post(sections)

            async def listed(list_text: str = list_text, list_blocks: list[Block] = list_blocks) -> None:
                await self.poster.post(posted["channel"], list_text, list_blocks, thread_ts=posted["ts"])

            await delivery.until("the list of a summary", listed)
