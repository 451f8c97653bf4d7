"""A task's thread is a conversation with its agent.

A person's message reaches the bot as a `message` event (and, when it mentions the bot, also
as an `app_mention`); Slack may deliver either again. Each message is acted on once:

- a reply in the thread of an agent_run task's card continues that agent's session on the same
  machine, in the same folder: claude and codex resume the session the last turn reported,
  other agents get the earlier turns as context. The thread is a lock: a reply that comes
  while a turn runs waits (kept in the bot's state, so a restart keeps it) and runs after, in
  order;
- a mention of the bot, or a direct message, is asked of da the way `/da` is (`answering`: a
  plain prompt is an `assign`), answered in the message's thread;
- anything else in a channel is people talking, and is left alone.

Each turn gets its card in the thread (progress edited, Cancel while it runs); when it
finishes the notifier posts the agent's answer there (the whole answer as a file when it is
too long for a message) and starts the next waiting reply.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Mapping
from typing import Any

from da import agents
from da.bot import views
from da.bot.commands import CommandLayer
from da.bot.router import AGENT_RUN
from da.bot.slack import attachments, blocks, delivery
from da.bot.slack.asked import Asked, Surface, refusal
from da.bot.slack.delivery import Poster
from da.bot.slack.state import BotState, Card, Thread, Waiting, thread_key
from da.queue import errors as queue_errors
from da.queue import models
from da.queue.client import QueueClient
from da.queue.models import Task

logger = logging.getLogger(__name__)
# A reply that is only one of these stops the agent at work in the thread.
STOP_WORDS = frozenset({"stop", "cancel", ":x:", ":octagonal_sign:"})

# Message subtypes that are a person writing (Slack adds one for edits, joins, bots...); a file
# shared with a comment counts by its comment.
PERSON_SUBTYPES = (None, "thread_broadcast", "file_share")
# A resumed turn reads its earlier turns from the agent's own session; one told the turns as
# context gets at most this many of the newest, in at most the bytes agent_run passes on (so the
# task stays far below the queue's body limit however long the answers were).
MAX_CONTEXT_TURNS = 50
CONTEXT_BYTES = agents.MAX_CONTEXT_BYTES
# A bot restarted mid-start looks for the reply's task among this many newest agent tasks,
# created at most CLOCK_SLACK seconds before it noted the start (the queue's clock may differ).
RECENT_TASKS = 100
CLOCK_SLACK = 60.0
USER_MENTION = re.compile(r"<@([UW][A-Z0-9]+)(?:\|[^>]*)?>")


def resumable(agent: str) -> bool:
    """True for agents whose CLI resumes a session by id (claude, codex)."""
    spec = agents.DEFAULT_COMMANDS.get(agent)
    return spec is not None and bool(spec.resume)


def turn_context(tasks: list[Task]) -> tuple[list[dict[str, str]], int]:
    """The earlier turns as `context` (each task's prompt and the agent's answer), the newest that fit
    in CONTEXT_BYTES, and how many older ones were left out."""
    turns: list[agents.Turn] = []
    for task in tasks[-MAX_CONTEXT_TURNS:]:
        prompt = (task.payload or {}).get("prompt")
        if isinstance(prompt, str) and prompt:
            turns.append(agents.Turn("user", prompt))
        answer = (task.result or {}).get("answer")
        if isinstance(answer, str) and answer:
            turns.append(agents.Turn("assistant", answer))
    kept, left_out = agents.fit_context(turns, CONTEXT_BYTES)
    return [{"role": turn.role, "text": turn.text} for turn in kept], left_out


def latest_session(tasks: list[Task]) -> str | None:
    """The session the newest turn that reported one is in (the worker follows it to the newest)."""
    for task in reversed(tasks):
        session = (task.result or {}).get("session_id")
        if isinstance(session, str) and agents.SESSION_ID.fullmatch(session):
            return session
    return None


class Conversations:
    """Acts on people's messages and keeps each thread's turns in order."""

    def __init__(self, layer: CommandLayer, poster: Poster, state: BotState, *,
                 allowed_users: frozenset[str], files: attachments.Downloader) -> None:
        self.layer = layer
        self.files = files
        self.client: QueueClient = layer.client
        self.poster = poster
        self.state = state
        self.allowed_users = allowed_users
        # One lock per thread: deciding "run now or wait" and starting a turn never interleave.
        self.locks: dict[str, asyncio.Lock] = {}
        # Set while replies wait that no ending turn will start (the queue was away when they came,
        # or the bot stopped meanwhile): the notifier calls `resume` once the queue answers.
        self.stalled = any(thread.waiting for thread in state.threads)

    def lock(self, key: str) -> asyncio.Lock:
        return self.locks.setdefault(key, asyncio.Lock())

    # ---- a person's message ------------------------------------------------------------

    async def heard(self, event: Mapping[str, Any], bot_user_id: str | None) -> Asked | None:
        """Act once on a message event or an app_mention (whichever Slack delivers first): a reply in a
        conversation is handled here; a mention or a DM comes back as a request for `answering`."""
        if event.get("subtype") not in PERSON_SUBTYPES or event.get("bot_id") or not event.get("user"):
            return None
        channel, ts, user = str(event.get("channel", "")), str(event.get("ts", "")), str(event["user"])
        raw = str(event.get("text") or "")
        mentioned = bot_user_id is not None and f"<@{bot_user_id}" in raw
        direct = event.get("channel_type") == "im" or channel.startswith("D")
        thread_ts = event.get("thread_ts")
        root = str(thread_ts) if thread_ts and thread_ts != ts else None
        if root is None and not (mentioned or direct):
            return None  # people talking in a channel the bot is in
        if root is not None and not (mentioned or direct) and self.thread(channel, root) is None \
                and self.state.cards.thread_of(channel, root) is None:
            return None  # a thread da has no part in
        if not self.state.threads.first_time(channel, ts):
            logger.info("message %s in %s was already acted on (Slack delivered it again)", ts, channel)
            return None
        text = blocks.unescape(USER_MENTION.sub(
            lambda m: "" if m.group(1) == bot_user_id else m.group(0), raw)).strip()
        files = attachments.of_event(event)
        if files and not text:
            text = attachments.FILES_ONLY_PROMPT if root is not None else f"assign {attachments.FILES_ONLY_PROMPT}"
        where = root or ts
        if root is not None and (self.thread(channel, root) is not None
                                 or self.state.cards.thread_of(channel, root) is not None):
            await self.reply(channel, root, user, text, ts, files)
            return None
        return Asked(user, channel, text, Surface.DM if direct else Surface.MENTION, root=where, files=tuple(files))

    def thread(self, channel: str, root: str) -> Thread | None:
        return self.state.threads.get(channel, root)

    async def refuse(self, channel: str, root: str, user: str) -> None:
        await self.say_privately(channel, root, user, refusal(user))

    def begin(self, card: Card, task: Task) -> None:
        """An agent task's card makes its thread a conversation (other tasks' threads are not)."""
        if task.type == AGENT_RUN and task.agent:
            self.state.threads.keep(Thread(card.channel, card.root, task.agent, task.target_machine or "",
                                           task.payload.get("cwd"), [task.id]))

    async def reply(self, channel: str, root: str, user: str, text: str, ts: str,
                    files: list[dict[str, Any]] | None = None) -> None:
        """A reply in a task's thread: the agent's next turn, now or after the running one. A reply with files
        is always a turn of its own (a steering message carries no files); files past the limits are refused
        in the thread at once."""
        if user not in self.allowed_users:
            await self.refuse(channel, root, user)
            return
        if not text:
            return
        shared: list[dict[str, Any]] = []
        if files:
            try:
                shared = [found.dump() for found in await self.files.checked(files)]
            except attachments.FileRefused as exc:
                await self.say(channel, root, f"<@{user}> your reply was not passed on: {blocks.escape(exc.sentence)}")
                return
        elif text.lower().strip(" .!") in STOP_WORDS:
            await self.stop(channel, root, user)
            return
        elif await self.steer(channel, root, user, text):
            return
        async with self.lock(thread_key(channel, root)):
            thread = self.thread(channel, root) or await self.adopt(channel, root)
            if thread is None:
                return
            self.state.threads.wait(thread, Waiting(user, text, ts, files=shared))
            try:
                started = await self.next_turn(thread)
            except queue_errors.QueueError as exc:
                self.stalled = True
                await self.say_privately(channel, root, user,
                                         f"The queue is not answering ({blocks.escape(exc.detail)}), so your reply "
                                         "waits here and starts when the queue answers again.")
                return
        if not started:
            running = thread.turns[-1][:models.SHORT_ID_LENGTH] if thread.turns else "?"
            await self.say_privately(channel, root, user, f"Queued: this runs when `{running}` has finished "
                                     f"({len(thread.waiting)} waiting in this thread).")

    def running(self, channel: str, root: str) -> list[str]:
        """The tasks of this thread that are not over yet, as their cards last showed them."""
        return [task_id for task_id, card in self.state.cards
                if card.channel == channel and root in (card.root, card.ts) and not card.finished
                and card.status not in models.TERMINAL]

    async def steer(self, channel: str, root: str, user: str, text: str) -> bool:
        """A reply while an agent session's turn runs is a steering message for it (delivered at the end of the
        turn); False when no session is running in the thread (the reply is the next turn)."""
        for task_id in self.running(channel, root):
            try:
                task = await self.client.get_task(task_id)
                if task.status not in (models.IN_PROGRESS, models.WAITING) or not task.progress_record:
                    continue
                await self.client.send_message(task_id, text, by=user)
            except queue_errors.QueueError as exc:
                logger.warning("steering %s from Slack failed: %s", task_id[:8], exc.detail)
                continue
            await self.say(channel, root, f"Sent to the agent at work (`{task.short_id}`): it gets "
                           "this at the end of its current turn. Say `stop` to stop it instead.")
            return True
        return False

    async def stop(self, channel: str, root: str, user: str) -> Task | None:
        """Stop the agent running in a task's thread (Slack's Stop, "stop", :x:): the queue's cancel, which
        the worker passes on as session/cancel; someone not allowed is told so privately."""
        running = self.running(channel, root)
        if not running:
            return None
        if user not in self.allowed_users:
            await self.refuse(channel, root, user)
            return None
        stopped = None
        for task_id in running:
            try:
                stopped = await self.client.cancel(task_id, by=user, notes="stopped from Slack")
            except queue_errors.QueueError as exc:
                logger.warning("stopping %s from Slack failed: %s", task_id[:8], exc.detail)
        return stopped

    async def adopt(self, channel: str, root: str) -> Thread | None:
        """The conversation of a thread whose card da posted before it was one (a `/da` card);
        None, after saying why, when the thread's task is gone or is not an agent's."""
        task_id = self.state.cards.thread_of(channel, root)
        if task_id is None:
            return None
        try:
            task = await self.client.get_task(task_id)
        except queue_errors.NotFound:
            await self.say(channel, root, f"The task of this thread (`{task_id[:8]}`) is gone from the queue, so "
                                          "there is no conversation to continue: mention @da to start a new task.")
            return None
        except queue_errors.QueueError as exc:
            again = " when the queue answers again" if delivery.transient(exc) else ""
            await self.say(channel, root, f"Nothing changed: {blocks.escape(exc.detail)}; send the reply again{again}.")
            return None
        if task.type != AGENT_RUN or not task.agent:
            await self.say(channel, root, f"`{task.short_id}` is a {blocks.escape(task.type)} task, not an agent: "
                                          "there is no one to answer here. Mention @da to start a new task.")
            return None
        thread = Thread(channel, root, task.agent, task.assigned_to or task.target_machine or "",
                        task.payload.get("cwd"), [task.id])
        self.state.threads.keep(thread)
        return thread

    async def next_turn(self, thread: Thread) -> bool:
        """Start the first waiting reply when the thread's last turn has finished; True if one started.

        A reply the queue refuses for good (too large, malformed) is dropped, saying why in the thread,
        and the next one tried; a queue that is away raises (the reply keeps waiting). Call with the
        thread's lock held.
        """
        while thread.waiting:
            try:
                return await self.start_first(thread)
            except queue_errors.QueueError as exc:
                if delivery.transient(exc):
                    raise
                why = f"the queue refused it ({blocks.escape(exc.detail)}); send it again once that is fixed."
            except attachments.FileRefused as exc:
                why = blocks.escape(exc.sentence)
            dropped = self.state.threads.drop_first(thread)
            logger.warning("the reply %s in %s was not started and is dropped: %s", dropped.ts, thread.key, why)
            await self.say(thread.channel, thread.root, f"<@{dropped.user}> your reply "
                           f"\"{blocks.escape(dropped.text[:80])}\" was not started, because {why}")
        return False

    async def start_first(self, thread: Thread) -> bool:
        """next_turn's one try: the first waiting reply's task and card, unless a turn still runs."""
        history: list[Task] = []
        for task_id in thread.turns[-MAX_CONTEXT_TURNS:]:
            try:
                history.append(await self.client.get_task(task_id))
            except queue_errors.NotFound:
                continue
        if history and history[-1].id == thread.turns[-1] and history[-1].status not in models.TERMINAL:
            return False
        waiting = thread.waiting[0]
        payload: dict[str, Any] = {"agent": thread.agent, "prompt": waiting.text}
        if link := self.poster.thread_link(thread.channel, thread.root):
            payload["thread_url"] = link
        if thread.cwd:
            payload["cwd"] = thread.cwd
        session = latest_session(history) if resumable(thread.agent) else None
        if session is not None:
            payload["resume"] = session
        elif history:
            payload["context"], left_out = turn_context(history)
            if left_out:
                payload["context_left_out"] = left_out
        machine = next((t.assigned_to for t in reversed(history) if t.assigned_to), None) or thread.machine
        task = await self.created_before(waiting) if waiting.started else None
        if task is None and waiting.files:
            payload["attachments"] = await self.files.fetch([attachments.Shared(**found) for found in waiting.files])
        if task is None:
            self.state.threads.starting(waiting)
            task = await self.client.create_task(AGENT_RUN, payload, target_machine=machine or None,
                                                 agent=thread.agent, created_by=waiting.user, notes=waiting.text[:200])
        self.state.threads.started(thread, task.id)
        await self.poster.card(views.Created(task), waiting.user, [(thread.channel, thread.root)])
        return True

    async def created_before(self, waiting: Waiting) -> Task | None:
        """The task a bot that stopped between creating a reply's task and saving it had created."""
        recent, _ = await self.client.list_tasks(type=AGENT_RUN, limit=RECENT_TASKS)
        return next((t for t in recent if t.created_by == waiting.user and t.payload.get("prompt") == waiting.text
                     and t.created_at >= waiting.started - CLOCK_SLACK), None)

    async def finished(self, task: Task) -> None:
        """A turn ended (done, failed, needs a person, cancelled): start the thread's next reply."""
        for thread in self.state.threads:
            if thread.turns and thread.turns[-1] == task.id and thread.waiting:
                async with self.lock(thread.key):
                    await self.next_turn(thread)

    async def resume(self) -> None:
        """Start the replies that stalled, in every thread whose last turn has ended; a queue still away
        raises and leaves them stalled."""
        self.stalled = False
        try:
            for thread in self.state.threads:
                if thread.waiting:
                    async with self.lock(thread.key):
                        await self.next_turn(thread)
        except queue_errors.QueueError:
            self.stalled = True
            raise

    # ---- posting in the thread ---------------------------------------------------------

    async def say(self, channel: str, root: str, text: str) -> bool:
        """A message in the thread, for everyone in it; False when Slack did not take it."""
        return await self.poster.say(channel, root, text)

    async def say_privately(self, channel: str, root: str, user: str, text: str) -> None:
        """A message only `user` sees (in a DM, where that is everyone, a plain one)."""
        await self.poster.say_privately(channel, root, user, text)
