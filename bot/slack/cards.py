"""Task cards kept true: a card is redrawn when its task's status or progress changed, and the
progress editor refreshes the cards of running tasks every few seconds within a share of
chat.update's rate limit.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable

from da.bot import views
from da.bot.slack import blocks
from da.bot.slack.delivery import Poster
from da.bot.slack.state import BotState
from da.queue import errors as queue_errors
from da.queue import models
from da.queue.client import QueueClient
from da.queue.models import Task

logger = logging.getLogger(__name__)

# chat.update is Tier 3 (about 50 a minute for the workspace): progress edits use at most this
# many a minute, leaving the rest to status changes.
PROGRESS_EDITS_PER_MINUTE = 30


class CardEditor:
    """Redraws task cards through the poster."""

    def __init__(self, client: QueueClient, poster: Poster, state: BotState, *, every: float,
                 holding: asyncio.Event) -> None:
        self.client = client
        self.poster = poster
        self.state = state
        self.every = every
        self.holding = holding
        self.progress_edits: deque[float] = deque()

    async def update(self, task: Task, *, progress_only: bool = False) -> None:
        """Redraw a task's card when its status or progress changed; a card Slack lost is forgotten."""
        card = self.state.cards.get(task.id)
        progress = task.progress or ""
        if card is None or (card.status == task.status and card.progress == progress):
            return
        if progress_only and not self.progress_budget(time.monotonic()):
            return
        text, drawn = blocks.render(views.Created(task))
        await self.poster.edit_card(task.id, card, text, drawn, task.status, progress)

    def progress_budget(self, now: float) -> bool:
        """True (and counted) while progress edits stay under their share of chat.update's limit."""
        while self.progress_edits and now - self.progress_edits[0] > 60:
            self.progress_edits.popleft()
        if len(self.progress_edits) >= PROGRESS_EDITS_PER_MINUTE:
            return False
        self.progress_edits.append(now)
        return True

    async def follow(self, ended: Callable[[Task], Awaitable[None]]) -> None:
        """Every `every` seconds, refresh the cards of tasks still running; a task that ended without
        the feed telling its card (the card came later) goes to `ended`."""
        while True:
            await asyncio.sleep(self.every)
            await self.holding.wait()
            for task_id, card in self.state.cards:
                if card.status in models.TERMINAL or card.finished:
                    continue
                try:
                    task = await self.client.get_task(task_id)
                    if task.status in models.TERMINAL:
                        await ended(task)
                        continue
                except queue_errors.QueueError as exc:
                    logger.warning("progress of %s: %s", task_id[:8], exc.detail)
                    continue
                await self.update(task, progress_only=True)
