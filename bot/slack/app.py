"""`da bot`: the Slack app in socket mode, its notifier, and a watchdog that rebuilds the
socket-mode client when it stops answering pings (the aiohttp client can wedge in a
"Session is closed" loop). The followers (notifier, progress editor, watchdog, lease keeper)
run under a supervisor that restarts any that fails.

One bot per workspace, enforced: Slack gives each event to one random connection and two
notifiers would post every alert twice, so the bot holds the queue's named lease
`slack:<team id>` while it runs. A second `da bot` against the same queue, on any machine,
stands by and takes over (from the first one's event cursor) when that one stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
import time
from collections.abc import Awaitable, Callable
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
from da.bot.slack.supervisor import Follower, Supervisor
from da.bot.slack.watching import Watcher
from da.config import ConfigError
from da.queue import errors as queue_errors
from da.queue.client import QueueClient

logger = logging.getLogger(__name__)

# The watchdog rebuilds the client after this many ping periods without a live session.
SILENT_PERIODS = 3
# Closing the socket-mode client waits at most this long (it can hang on a dead connection).
CLOSE_TIMEOUT = 5.0


# What each scope added since the first manifest gives (what is lost without it); an app made from an
# older manifest lacks them.
CONVERSATION_SCOPES = {
    "app_mentions:read": "`@da ...` in a channel starts nothing",
    "channels:history": "replies in a card's thread in public channels are not seen",
    "groups:history": "replies in private channels are not seen",
    "im:history": "direct messages to the bot are not seen",
    "files:write": "long answers cannot be attached as files",
    "files:read": "files attached to a request or a thread reply do not reach the task",
    "assistant:write": "agents at work show no agent session and no Stop button in their thread",
    "reactions:read": "an :x: reaction on a running agent's thread does not stop it",
    "usergroups:read": "members of a user group in SLACK_APPROVERS cannot answer agents' asks",
}


def missing_scopes(headers: Any) -> list[str]:
    """The conversation scopes a Web API answer's `X-OAuth-Scopes` header does not list (none when
    the header is absent: nothing to judge by)."""
    found = next((str(v) for k, v in dict(headers or {}).items() if k.lower() == "x-oauth-scopes"), None)
    if found is None:
        return []
    granted = {scope.strip() for scope in found.split(",")}
    return [scope for scope in CONVERSATION_SCOPES if scope not in granted]


class WorkspaceTaken(Exception):
    """Another da bot holds this Slack workspace's lease."""


def build_app(room: Room) -> AsyncApp:
    """The Bolt app: the Room in every request's context, then every listener kind registered."""
    app = AsyncApp(client=room.web, request_verification_enabled=False)

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
        self.handler: AsyncSocketModeHandler | None = None
        self.supervisor = Supervisor()
        self.rebuilds = 0
        self.missing_scopes: list[str] = []
        # Who this bot is to the lease: the machine, the process and this start.
        # 128 secret bits: whoever can guess the holder can release the lease and take the workspace over.
        self.holder = f"{socket.gethostname()[:40]}:{os.getpid()}:{secrets.token_hex(16)}"
        self.lease_name = ""
        self.lease_until = 0.0
        # Set while this bot holds the workspace lease: only then does the notifier post.
        self.holding = asyncio.Event()
        self.lease_lost = asyncio.Event()
        self.connected = False
        self.standing_by = False
        self.watcher = Watcher(self.client, self.room.poster, self.state, holding=self.holding)
        self.notifier = Notifier(self.client, self.room.poster, self.state, settings.notify_channel,
                                 progress_every=settings.progress_every, wait=settings.feed_wait,
                                 notify_done=settings.notify_done, burst_threshold=settings.burst_threshold,
                                 holding=self.holding, conversations=self.room.conversations,
                                 homes=self.room.refresh_homes, shown_live=self.watcher.shown_live)

    @property
    def tasks(self) -> list[asyncio.Task[None]]:
        return self.supervisor.tasks

    async def check_tokens(self) -> str:
        """Fail at start, in one line, when Slack refuses the bot token; the workspace's team id."""
        try:
            identity = await self.room.web.auth_test()
        except SlackApiError as exc:
            raise ConfigError(f"Slack refused SLACK_BOT_TOKEN ({exc.response.get('error', 'error')}); "
                              "copy the Bot User OAuth Token again.") from exc
        self.room.poster.team_url = str(identity.get("url") or "")
        self.missing_scopes = missing_scopes(identity.headers)
        self.room.missing_scopes = {scope: CONVERSATION_SCOPES[scope] for scope in self.missing_scopes}
        if self.missing_scopes:
            logger.warning("the Slack app lacks %s; slash commands work, but %s. Add them under OAuth & Permissions "
                           "(or paste config/slack-manifest.yaml again) and reinstall the app.",
                           ", ".join(self.missing_scopes),
                           "; ".join(CONVERSATION_SCOPES[s] for s in self.missing_scopes))
        return str(identity.get("team_id") or "workspace")

    async def claim_workspace(self) -> None:
        """Take or renew the workspace's lease (WorkspaceTaken while another bot holds it), and carry
        on from the event cursor the last holder left with it when that is further than ours."""
        try:
            self.lease_until, data = await self.client.acquire_lease(self.lease_name, self.holder,
                                                                     self.settings.lease_ttl, self.lease_data())
        except queue_errors.Conflict as exc:
            raise WorkspaceTaken(f"another da bot runs for this Slack workspace ({exc.detail})") from exc
        cursor = (data or {}).get("cursor")
        if isinstance(cursor, int) and (self.state.last_event is None or cursor > self.state.last_event):
            logger.info("carrying on from event %d, where the previous bot of this workspace stopped", cursor)
            self.state.cursor.rewind(cursor)
        self.holding.set()

    def lease_data(self) -> dict[str, int] | None:
        return None if self.state.last_event is None else {"cursor": self.state.last_event}

    async def keep_lease(self) -> None:
        """Renew the lease at a third of its term (or take it once the queue answers again). Alerts
        pause before the lease can run out unrenewed; another bot taking it over sends this one back
        to standing by."""
        ttl = self.settings.lease_ttl
        while True:
            await asyncio.sleep(ttl / 3)
            try:
                await self.claim_workspace()
            except WorkspaceTaken as exc:
                logger.error("%s: it took over; this one stands by", exc)
                self.holding.clear()
                self.lease_lost.set()
                await asyncio.Event().wait()
            except queue_errors.QueueError as exc:
                if self.holding.is_set() and time.time() >= self.lease_until - ttl / 3:
                    logger.error("could not renew the workspace lease before it ran out (%s); alerts pause until "
                                 "it is held again, so two bots never post at once", exc.detail)
                    self.holding.clear()
                else:
                    logger.warning("could not renew the workspace lease (%s); trying again", exc.detail)

    async def connect(self) -> None:
        self.handler = AsyncSocketModeHandler(self.app, self.settings.app_token, web_client=self.room.web,
                                              ping_interval=self.settings.ping_interval)
        await self.handler.connect_async()

    async def start(self) -> None:
        """Check the token, take the workspace (or raise WorkspaceTaken), connect, start the followers.

        With the queue away the bot still connects, to answer commands with a plain sentence; its
        alerts wait until it holds the lease.
        """
        self.watcher.team = await self.check_tokens()
        self.lease_name = f"slack:{self.watcher.team}"
        self.lease_lost.clear()
        try:
            await self.claim_workspace()
        except queue_errors.QueueError as exc:
            logger.warning("cannot reach the queue to take the workspace lease (%s); answering commands, alerts "
                           "wait until the lease is held", exc.detail)
        await self.connect()
        self.connected = True
        self.supervisor.start(self.followers())

    def followers(self) -> dict[str, Follower]:
        """What runs beside the listeners for as long as the bot does (add new followers here)."""
        return {"notifier": self.notifier.follow, "progress editor": self.notifier.edit_progress,
                "progress follower": self.watcher.follow, "watchdog": self.watchdog,
                "lease keeper": self.keep_lease}

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

    async def disconnect(self) -> None:
        """Stop whatever the followers are doing (a stalled Slack call, a backoff), leave Slack and
        let go of the workspace."""
        held = self.holding.is_set()
        self.holding.clear()
        # Posts Slack is taking finish first (one budget for both): a post cut after Slack took it is posted
        # again by the next bot.
        closing_by = asyncio.get_running_loop().time() + CLOSE_TIMEOUT
        await self.notifier.settle(CLOSE_TIMEOUT)
        await self.room.poster.settle(closing_by - asyncio.get_running_loop().time())
        await self.supervisor.stop()
        if self.handler is not None:
            try:
                await asyncio.wait_for(self.handler.close_async(), CLOSE_TIMEOUT)
            except (TimeoutError, OSError) as exc:
                logger.warning("closing the socket-mode connection failed: %r", exc)
            self.handler = None
        if held:
            try:
                await self.client.acquire_lease(self.lease_name, self.holder, self.settings.lease_ttl,
                                                self.lease_data())
                await self.client.release_lease(self.lease_name, self.holder)
            except queue_errors.QueueError as exc:
                logger.warning("could not hand the workspace lease back (%s); it runs out by itself", exc.detail)
        self.connected = False

    async def stop(self) -> None:
        await self.disconnect()
        await self.client.close()

    async def run(self, ready: asyncio.Event | None = None) -> None:
        """Run until cancelled: stand by while another bot has the workspace, take over when it stops,
        step back if the workspace is lost. `ready` is set once connected or standing by."""
        told = False
        try:
            while True:
                try:
                    await self.start()
                except WorkspaceTaken as exc:
                    self.standing_by = True
                    if not told:
                        logger.warning("%s; this one stands by and takes over when that one stops", exc)
                        told = True
                    if ready is not None:
                        ready.set()
                    await asyncio.sleep(self.settings.lease_ttl / 3)
                    continue
                told = self.standing_by = False
                logger.info("connected to Slack as the bot of workspace lease %s", self.lease_name)
                if ready is not None:
                    ready.set()
                await self.lease_lost.wait()
                await self.disconnect()
        finally:
            await self.stop()
