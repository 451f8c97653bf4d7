"""Follow the queue's event feed and tell Slack: needs_human and failed tasks get a card with
buttons in SLACK_NOTIFY_CHANNEL, done tasks a reply threaded under their assign card, and
cards of running tasks show their latest progress line.
"""

from __future__ import annotations

import asyncio
import logging
import time

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from da.bot import views
from da.bot.slack import blocks
from da.bot.slack.state import BotState
from da.queue import errors as queue_errors
from da.queue import models
from da.queue.client import QueueClient
from da.queue.models import Event, Task

logger = logging.getLogger(__name__)

# One long-poll of the feed; the queue answers at once when an event arrives.
FEED_WAIT = 30.0
NOTIFY = models.REPORTABLE
# A Slack post that keeps failing is tried this often before the event is skipped (and logged).
POST_TRIES = 3


class Notifier:
    """The feed follower and the progress editor."""

    def __init__(self, client: QueueClient, web: AsyncWebClient, state: BotState, channel: str, *,
                 progress_every: float = 10.0, wait: float = FEED_WAIT) -> None:
        self.client = client
        self.web = web
        self.state = state
        self.channel = channel
        self.progress_every = progress_every
        self.wait = wait

    async def follow(self) -> None:
        """Post every notifiable event after the last one posted, forever."""
        backoff = 1.0
        while True:
            try:
                if self.state.last_event is None:
                    _, self.state.last_event = await self.client.events(-1)
                    self.state.save()
                events, last = await self.client.events(self.state.last_event, wait=self.wait)
            except queue_errors.QueueError as exc:
                logger.warning("event feed: %s; retrying in %.0fs", exc.detail, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 30.0)
                continue
            backoff = 1.0
            if not events and last < self.state.last_event:
                logger.warning("the queue's event feed went back from %d to %d (an older backup restored?); "
                               "following it from %d", self.state.last_event, last, last)
                self.state.last_event = last
                self.state.save()
            for event in events:
                await self.deliver(event)
                self.state.last_event = event.id
                self.state.save()

    async def deliver(self, event: Event) -> None:
        for attempt in range(POST_TRIES):
            try:
                await self.handle(event)
                return
            except (SlackApiError, queue_errors.QueueError) as exc:
                logger.warning("notification for event %d failed (%s), attempt %d", event.id, exc, attempt + 1)
                await asyncio.sleep(0.5 * (attempt + 1))
        logger.error("skipped the notification for event %d after %d tries", event.id, POST_TRIES)

    async def handle(self, event: Event) -> None:
        card = self.state.cards.get(event.task_id)
        if event.to_status not in NOTIFY and card is None:
            return
        task = await self.client.get_task(event.task_id)
        if card is not None:
            await self.update_card(task)
        if event.to_status not in NOTIFY or (event.to_status != task.status and event.to_status != models.DONE):
            return
        if event.to_status == models.DONE:
            text = f":white_check_mark: `{task.short_id}` {task.type} done on {task.assigned_to or '-'}" + (
                f": {task.notes}" if task.notes else "")
            if card is not None:
                await self.web.chat_postMessage(channel=card.channel, thread_ts=card.ts, text=text)
            elif self.channel:
                await self.web.chat_postMessage(channel=self.channel, text=text)
            return
        if not self.channel:
            return
        kind = "review" if event.to_status == models.NEEDS_HUMAN else "failures"
        title = "Needs a person" if kind == "review" else "Failed"
        drawn = [blocks.HeaderBlock(text=blocks.PlainTextObject(text=title)), *blocks.review_card(task, kind=kind)]
        await self.web.chat_postMessage(channel=self.channel, text=f"{title}: {task.short_id} {task.notes or ''}",
                                        blocks=drawn)

    async def update_card(self, task: Task) -> None:
        card = self.state.cards[task.id]
        progress = task.progress or ""
        if card.status == task.status and card.progress == progress:
            return
        text, drawn = blocks.render(views.Created(task))
        await self.web.chat_update(channel=card.channel, ts=card.ts, text=text, blocks=drawn)
        card.status, card.progress, card.updated = task.status, progress, time.time()
        self.state.save()

    async def edit_progress(self) -> None:
        """Every `progress_every` seconds, refresh the cards of tasks still running."""
        while True:
            await asyncio.sleep(self.progress_every)
            for task_id, card in list(self.state.cards.items()):
                if card.status in models.TERMINAL:
                    continue
                try:
                    await self.update_card(await self.client.get_task(task_id))
                except (SlackApiError, queue_errors.QueueError) as exc:
                    logger.warning("progress edit for %s failed: %s", task_id[:8], exc)
