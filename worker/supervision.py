"""A supervised agent session reporting to the queue: its progress becomes the task's progress record,
its asks become asks on the task that people answer from Slack or `da approve`, and steering messages
handed over with heartbeats reach it.

`QueueReporter` is the `agent_session.Reporter` the worker gives an `AgentSession` for a task it holds;
the queue stays the only source of truth (expiry included), so the reporter only relays.
"""

from __future__ import annotations

import logging
from typing import Any

from da.queue import errors as queue_errors
from da.queue import models
from da.queue.client import QueueClient
from da.worker import agent_session

logger = logging.getLogger(__name__)

# A wait for an answer is one long-poll of this many seconds, repeated: under proxies' idle timeouts.
ANSWER_POLL = 30.0


class AskClosed(Exception):
    """The ask ended without an answer (it expired, or its task was cancelled): the session rejects it."""


class QueueReporter:
    """Relays one session's progress and asks to the queue, for the task this lease holds."""

    def __init__(self, client: QueueClient, task_id: str, lease: str, *, poll: float = ANSWER_POLL) -> None:
        self.client = client
        self.task_id = task_id
        self.lease = lease
        self.poll = poll

    async def progress(self, progress: dict[str, Any]) -> None:
        """Replace the task's progress record (the session coalesces calls to a few a second); a task that
        was cancelled or handed on keeps the record it had."""
        try:
            await self.client.save_progress(self.task_id, self.lease, progress)
        except (queue_errors.LeaseLost, queue_errors.NotFound) as exc:
            logger.info("task %s: progress not recorded: %s", self.task_id[:8], exc.detail,
                        extra={"task_id": self.task_id})

    async def ask(self, ask: agent_session.Ask) -> agent_session.Answer:
        """Open the ask on the task and wait until a person answers it; AskClosed when it expires or the task
        is cancelled, and the queue's refusal (too many open asks) as raised, which the session takes as a
        reject."""
        opened = await self.client.open_ask(self.task_id, self.lease, ask.kind, ask.title,
                                            [(option.id, option.label) for option in ask.options], detail=ask.detail)
        while True:
            waited = await self.client.wait_answer(self.task_id, self.lease, opened.id, wait=self.poll)
            if waited.ask.status == models.ASK_ANSWERED and waited.ask.answer is not None:
                return agent_session.Answer(waited.ask.answer, waited.ask.note or "", waited.ask.answered_by or "")
            if waited.ask.status == models.ASK_EXPIRED:
                raise AskClosed(f"ask {opened.id} of task {self.task_id[:8]} expired unanswered")
            if waited.cancel:
                raise AskClosed(f"task {self.task_id[:8]} was cancelled while ask {opened.id} was open")

    async def expired(self, ask: agent_session.Ask) -> None:
        """The session gave up waiting: the queue expires the ask by its own clock, so nothing to send."""
        logger.info("task %s: ask %r went unanswered", self.task_id[:8], ask.title, extra={"task_id": self.task_id})
