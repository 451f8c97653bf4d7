"""`da bot`: the Slack app in socket mode, its notifier, and a watchdog that rebuilds the
socket-mode client when it stops answering pings (the aiohttp client can wedge in a
"Session is closed" loop). Run one bot per workspace: Slack gives each event to one
random connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler
from slack_bolt.async_app import AsyncApp
from slack_sdk.errors import SlackApiError

from da.bot.commands import CommandLayer
from da.bot.router import make_router
from da.bot.slack import listeners
from da.bot.slack.notifier import Notifier
from da.bot.slack.room import CONTEXT_KEY, Room
from da.bot.slack.settings import BotSettings
from da.bot.slack.state import BotState
from da.config import ConfigError
from da.queue.client import QueueClient

logger = logging.getLogger(__name__)

# The watchdog rebuilds the client after this many ping periods without a live session.
SILENT_PERIODS = 3


def build_app(room: Room) -> AsyncApp:
    """The Bolt app: the Room in every request's context, then every listener kind registered."""
    app = AsyncApp(client=room.web, request_verification_enabled=False, ignoring_self_events_enabled=False)

    async def with_room(context: Any, next: Callable[[], Awaitable[None]]) -> None:
        context[CONTEXT_KEY] = room
        await next()

    app.use(with_room)
    listeners.register(app)
    return app


class BotProcess:
    """Everything `da bot` runs; `start()` and `stop()` for tests, `run()` for the process."""

    def __init__(self, settings: BotSettings) -> None:
        self.settings = settings
        self.client = QueueClient(list(settings.queue_urls), settings.secret, rounds=1)
        self.state = BotState.load(settings.state_path)
        self.room = Room(settings, CommandLayer(self.client, router=make_router(settings.router)), self.state)
        self.app = build_app(self.room)
        self.notifier = Notifier(self.client, self.room.web, self.state, settings.notify_channel,
                                 progress_every=settings.progress_every)
        self.handler: AsyncSocketModeHandler | None = None
        self.tasks: list[asyncio.Task[None]] = []
        self.rebuilds = 0

    async def check_tokens(self) -> None:
        """Fail at start, in one line, when Slack refuses the bot token."""
        try:
            await self.room.web.auth_test()
        except SlackApiError as exc:
            raise ConfigError(f"Slack refused SLACK_BOT_TOKEN ({exc.response.get('error', 'error')}); "
                              "copy the Bot User OAuth Token again.") from exc

    async def connect(self) -> None:
        self.handler = AsyncSocketModeHandler(self.app, self.settings.app_token, web_client=self.room.web,
                                              ping_interval=self.settings.ping_interval)
        await self.handler.connect_async()

    async def start(self) -> None:
        await self.check_tokens()
        await self.connect()
        self.tasks = [asyncio.create_task(follower) for follower in self.followers()]

    def followers(self) -> list[Coroutine[Any, Any, None]]:
        """What runs beside the listeners for as long as the bot does (add new followers here)."""
        return [self.notifier.follow(), self.notifier.edit_progress(), self.watchdog()]

    async def watchdog(self) -> None:
        silent = 0
        while True:
            await asyncio.sleep(self.settings.ping_interval)
            connected = self.handler is not None and await self.handler.client.is_connected()
            silent = 0 if connected else silent + 1
            if silent >= SILENT_PERIODS:
                logger.warning("socket mode silent for %d ping periods; rebuilding the client", silent)
                if self.handler is not None:
                    with contextlib.suppress(Exception):
                        await self.handler.close_async()
                await self.connect()
                self.rebuilds += 1
                silent = 0

    async def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
        for task in self.tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self.handler is not None:
            await self.handler.close_async()
        await self.client.close()

    async def run(self) -> None:
        await self.start()
        try:
            await asyncio.Event().wait()
        finally:
            await self.stop()
