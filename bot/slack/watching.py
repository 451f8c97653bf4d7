"""Agents at work shown live in their threads.

The watcher follows the progress long-poll (`GET /v1/tasks/{id}/progress`) of every task whose card
is in a thread and not finished; `telling.live_decision` says what the thread should show, the
`progress` drawing turns it into stream chunks or a card, and the poster shows it: one streamed
message per turn (a card edited in place where streaming is missing), the thread's status line, and
the agent session (`processing` while it runs, `active` or `closed` after).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from dataclasses import dataclass

from da.bot.slack import answer, asking, telling
from da.bot.slack import progress as drawing
from da.bot.slack.delivery import FAILURES, Live, Poster, problem
from da.bot.slack.progress import Progress
from da.bot.slack.state import BotState, Card
from da.queue import errors as queue_errors
from da.queue import models
from da.queue.client import QueueClient
from da.queue.models import Ask

logger = logging.getLogger(__name__)

# One long-poll of a task's progress; the queue answers at once when it changes.
PROGRESS_WAIT = 25.0
# How often the cards are looked over for tasks to start following.
SCAN_EVERY = 0.5
# The pause after the queue refused or could not be reached.
RETRY_PAUSE = 1.0
# How long the answer's post waits for the thread's stream to end (it tells whether the stream showed it).
END_WAIT = 10.0


@dataclass
class Thread:
    """What one task's thread shows of it now."""

    task_id: str
    card: Card
    title: str
    shown: Progress | None = None
    live: Live | None = None
    line: str = ""
    processing: bool = False
    runs_on: str | None = None
    # The answer text the open stream shows so far.
    streamed: str = ""


class Watcher:
    """Follows the progress of every running task that has a card, one asyncio task each."""

    def __init__(self, client: QueueClient, poster: Poster, state: BotState, *, holding: asyncio.Event,
                 wait: float = PROGRESS_WAIT, scan: float = SCAN_EVERY) -> None:
        self.client = client
        self.poster = poster
        self.state = state
        self.holding = holding
        self.wait = wait
        self.scan = scan
        # The workspace's team id, for a stream's recipient (set once the token is checked).
        self.team = ""
        self.following: dict[str, asyncio.Task[bool]] = {}
        # The threads being followed, by task id, and the tasks followed to their end (or gone).
        self.threads: dict[str, Thread] = {}
        self.over: set[str] = set()
        # Tasks whose stream ended showing the whole final answer: their answer post does not repeat it.
        self.answered_live: set[str] = set()

    async def follow(self) -> None:
        """Start following each task that got a card, forever."""
        try:
            while True:
                await self.holding.wait()
                for task_id, card in self.state.cards:
                    if card.finished or card.status in models.TERMINAL or task_id in self.following \
                            or task_id in self.over:
                        continue
                    self.following[task_id] = asyncio.create_task(self.watch(task_id, card),
                                                                  name=f"da-bot-progress-{task_id[:8]}")
                for task_id, running in list(self.following.items()):
                    if running.done():
                        del self.following[task_id]
                        failed = None if running.cancelled() else running.exception()
                        if failed is not None:
                            logger.error("following the progress of %s failed (%r); following it again", task_id[:8],
                                         failed)
                        elif not running.cancelled() and running.result():
                            self.over.add(task_id)
                await asyncio.sleep(self.scan)
        finally:
            for running in self.following.values():
                running.cancel()
            self.following.clear()

    async def watch(self, task_id: str, card: Card) -> bool:
        """Follow one task's progress until it ends, showing each change in its thread; True once there is
        nothing more to follow (it ended, or is gone), False when the queue could not say."""
        try:
            task = await self.client.get_task(task_id)
        except queue_errors.NotFound:
            return True
        except queue_errors.QueueError as exc:
            logger.warning("following the progress of %s: %s", task_id[:8], exc.detail)
            await asyncio.sleep(RETRY_PAUSE)
            return False
        if not telling.followed(task, card):
            return True
        thread = Thread(task_id, card, str(task.payload.get("prompt") or task.type))
        self.threads[task_id] = thread
        after, status = -1, None
        try:
            while True:
                try:
                    page = await self.client.follow_progress(task_id, after=after, status=status, wait=self.wait)
                except queue_errors.NotFound:
                    return True
                except queue_errors.QueueError as exc:
                    logger.warning("following the progress of %s: %s", task_id[:8], exc.detail)
                    await asyncio.sleep(RETRY_PAUSE)
                    continue
                after, status = page.progress_rev, page.status
                await self.holding.wait()
                now = Progress.of(page.record)
                open_asks = sum(1 for ask in page.asks if ask.status == models.ASK_OPEN)
                await self.show_asks(thread, page.asks)
                if page.status in models.TERMINAL:
                    await self.end(thread, now, page.status)
                    return True
                thread.runs_on = thread.runs_on or task.assigned_to or await self.machine(task_id)
                await self.show(thread, now, page.status, thread.runs_on, open_asks, drawn=bool(page.record))
        finally:
            self.threads.pop(task_id, None)

    async def machine(self, task_id: str) -> str | None:
        with contextlib.suppress(queue_errors.QueueError):
            return (await self.client.get_task(task_id)).assigned_to
        return None

    async def show(self, thread: Thread, now: Progress, status: str, machine: str | None, open_asks: int, *,
                   drawn: bool) -> None:
        """One progress update in the thread: a new message for a new turn, else the open one grown; the
        status line (also before the agent reported anything, while an ask waits)."""
        decision = telling.live_decision(thread.shown, now, status, machine, open_asks)
        card = thread.card
        if not drawn:
            if open_asks and decision.status_line != thread.line and await self.poster.thread_status(
                    card.channel, card.root, decision.status_line):
                thread.line = decision.status_line
            return
        if not thread.processing:
            thread.processing = await self.poster.session_status(card.channel, card.root, "processing",
                                                                 title=thread.title, initiator=card.requester or None)
        if decision.start:
            if thread.live is not None and thread.shown is not None:
                await self.poster.stop_live(thread.live, drawing.finishing(thread.shown, thread.shown,
                                                                           title=thread.title),
                                            drawing.card(thread.shown, title=thread.title))
            first = drawing.chunks(None, now, title=thread.title)
            thread.live = await self.poster.start_live(card.channel, card.root, first,
                                                       drawing.card(now, title=thread.title),
                                                       user=card.requester, team=self.team)
            thread.shown = now if thread.live is not None else None
            thread.streamed = drawing.streamed_text(first)
        elif decision.show and thread.live is not None:
            more = drawing.chunks(thread.shown, now, title=thread.title)
            shown = await self.poster.append_live(thread.live, more, drawing.card(now, title=thread.title))
            if shown:
                thread.shown = now
                thread.streamed += drawing.streamed_text(more)
        if decision.status_line != thread.line and await self.poster.thread_status(card.channel, card.root,
                                                                                   decision.status_line):
            thread.line = decision.status_line

    async def rest_of_answer(self, thread: Thread) -> str | None:
        """What the stream has yet to show of the final answer; None when the stream cannot show it whole
        (it missed a part, or the queue did not say)."""
        try:
            final = drawing.inert(answer.text(await self.client.get_task(thread.task_id)))
        except queue_errors.QueueError as exc:
            logger.warning("reading the answer of %s: %s", thread.task_id[:8], exc.detail)
            return None
        if not final or not final.startswith(thread.streamed):
            return None
        return final[len(thread.streamed):]

    async def shown_live(self, task_id: str) -> bool:
        """Whether the task's stream showed its whole answer, once the stream ended (waits up to END_WAIT
        for a stream still being followed)."""
        following = self.following.get(task_id)
        if following is not None and not following.done():
            await asyncio.wait({following}, timeout=END_WAIT)
        if task_id in self.answered_live:
            self.answered_live.discard(task_id)
            return True
        return False

    async def show_asks(self, thread: Thread, asks: tuple[Ask, ...]) -> None:
        """A card for each new ask (mentioning the requester), and each card of an ask that is over redrawn
        with who answered, or that it expired."""
        card = thread.card
        for ask in asks:
            posted = card.asks.get(str(ask.id))
            if ask.status == models.ASK_OPEN and posted is None:
                text, drawn = asking.card(ask, requester=card.requester)
                try:
                    where, ts = await self.poster.post(card.channel, text, drawn, thread_ts=card.root)
                    self.state.cards.asked(card, ask.id, where, ts)
                except FAILURES as exc:
                    logger.warning("posting ask %d of %s failed (%s)", ask.id, thread.task_id[:8], problem(exc))
            elif ask.status != models.ASK_OPEN and posted is not None and ask.id not in card.settled_asks:
                channel, ts = posted
                text, drawn = asking.settled(ask)
                try:
                    await self.poster.update(channel, ts, text, drawn)
                    self.state.cards.ask_settled(card, ask.id)
                except FAILURES as exc:
                    logger.warning("redrawing ask %d of %s failed (%s)", ask.id, thread.task_id[:8], problem(exc))

    async def end(self, thread: Thread, now: Progress, status: str) -> None:
        """The task ended: its message finished with every step settled (a stream with the rest of the
        final answer, a card without the answer, which its post shows), the status line cleared, the
        session left `active` or `closed`."""
        card = thread.card
        after = telling.session_after(status)
        if thread.live is not None:
            shown = thread.shown if now == Progress() and thread.shown is not None else now
            rest = await self.rest_of_answer(thread) if status == models.DONE and thread.live.streaming else None
            drawn_card = drawing.card(dataclasses.replace(shown, answer_tail="") if status == models.DONE else shown,
                                      title=thread.title)
            streaming = thread.live.streaming
            ended = await self.poster.stop_live(thread.live, drawing.finishing(thread.shown, shown, title=thread.title,
                                                                               rest=rest),
                                                drawn_card, session_status=after if streaming else None)
            if ended and rest is not None and thread.live.streaming and not thread.live.stopped_by_user:
                self.answered_live.add(thread.task_id)
        if thread.line:
            await self.poster.thread_status(card.channel, card.root, "")
        if thread.processing:
            await self.poster.session_status(card.channel, card.root, after)
