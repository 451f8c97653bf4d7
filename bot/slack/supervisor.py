"""Keeping the bot's followers (notifier, progress editor, watchdog) alive.

A follower runs forever; one that raises is logged and started again after a pause that
grows while it keeps failing, so a bug or a broken disk costs alerts a delay, never the bot.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any

logger = logging.getLogger(__name__)

# Pauses before a restart: 0.5 s, doubling to at most a minute.
RESTART_FIRST = 0.5
RESTART_MAX = 60.0
# A follower that ran this long before failing starts over from the shortest pause.
HEALTHY_RUN = 300.0
# How long `stop()` waits for the followers to finish after cancelling them.
STOP_GRACE = 5.0

Follower = Callable[[], Coroutine[Any, Any, None]]


class Supervisor:
    """Runs named followers as tasks and restarts any that fail."""

    def __init__(self) -> None:
        self.restarts: dict[str, int] = {}
        self.tasks: list[asyncio.Task[None]] = []

    def start(self, followers: dict[str, Follower]) -> None:
        self.tasks = [asyncio.create_task(self.keep(name, start), name=f"da-bot-{name}")
                      for name, start in followers.items()]

    async def keep(self, name: str, start: Follower) -> None:
        loop = asyncio.get_running_loop()
        pause = RESTART_FIRST
        while True:
            began = loop.time()
            try:
                await start()
                logger.error("%s stopped by itself; starting it again", name)
            except Exception:
                logger.exception("%s failed; starting it again in %.1fs", name, pause)
            self.restarts[name] = self.restarts.get(name, 0) + 1
            if loop.time() - began > HEALTHY_RUN:
                pause = RESTART_FIRST
            await asyncio.sleep(pause)
            pause = min(pause * 2, RESTART_MAX)

    async def stop(self) -> None:
        """Cancel every follower wherever it is (a Slack call, a backoff) and wait for them to end."""
        for task in self.tasks:
            task.cancel()
        if self.tasks:
            _, stuck = await asyncio.wait(self.tasks, timeout=STOP_GRACE)
            for task in stuck:
                logger.error("%s did not stop within %.0fs of being cancelled", task.get_name(), STOP_GRACE)
