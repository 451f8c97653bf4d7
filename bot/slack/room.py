"""What every Slack listener shares: settings, the command layer, the bot's state, the Web
client and its poster, and the suggestions awaiting Confirm, with the helpers that use them.

The app puts the one Room into each request's context (`room_of(context)`), so listeners
stay plain functions registered the way bolt-python's app template registers them.
"""

from __future__ import annotations

import logging
import uuid
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any

from slack_sdk.models.blocks import Block

from da.bot import grammar, views
from da.bot.commands import CommandLayer
from da.bot.router import Suggestion
from da.bot.slack import asked, attachments, blocks, delivery, forms
from da.bot.slack.approvers import Approvers
from da.bot.slack.conversations import Conversations
from da.bot.slack.delivery import Reply
from da.bot.slack.settings import BotSettings
from da.bot.slack.state import BotState
from da.queue import errors as queue_errors
from da.queue.models import Task

logger = logging.getLogger(__name__)

# Suggestions awaiting Confirm; old ones fall off (Slack messages outlive them anyway).
MAX_PENDING_SUGGESTIONS = 200
CONTEXT_KEY = "da_room"
# A Home tab is drawn from this many newest tasks.
HOME_SCAN = 200


class Room:
    """The bot's shared state and the helpers its listeners use."""

    def __init__(self, settings: BotSettings, layer: CommandLayer, state: BotState) -> None:
        self.settings = settings
        self.layer = layer
        self.state = state
        self.web = delivery.web_client(settings.bot_token, settings.api_url, settings.slack_timeout)
        self.poster = delivery.Poster(self.web, state, notify_channel=settings.notify_channel,
                                      timeout=settings.slack_timeout)
        self.suggestions: OrderedDict[str, tuple[Suggestion, views.SuggestionView]] = OrderedDict()
        # People who opened the Home tab since the bot started: their Home follows their tasks.
        self.home_users: set[str] = set()
        self.approvers = Approvers(settings.approvers, self.web)
        self.files = attachments.Downloader(self.web, settings.bot_token, api_url=settings.api_url,
                                            timeout=settings.slack_timeout, limits=settings.files)
        self.conversations = Conversations(layer, self.poster, state, allowed_users=settings.allowed_users,
                                           files=self.files)
        # Scopes the installed app lacks, and what each would give (shown with `/da status`).
        self.missing_scopes: dict[str, str] = {}

    def reply_to(self, body: Mapping[str, Any]) -> Reply:
        return self.poster.reply(body)

    def allowed(self, user: str) -> bool:
        return user in self.settings.allowed_users

    def refusal(self, user: str) -> str:
        return asked.refusal(user)

    async def refused(self, user: str, reply: Reply) -> bool:
        """True (after telling the user, privately) when they may not change state."""
        if self.allowed(user):
            return False
        await reply.send(self.refusal(user))
        return True

    def queue_error(self, exc: queue_errors.QueueError) -> str:
        """The queue's refusal as mrkdwn (it may quote what was typed)."""
        if isinstance(exc, queue_errors.QueueUnreachable):
            return blocks.escape(f"queue unreachable at {', '.join(self.layer.client.urls)}.")
        return blocks.escape(exc.detail)

    async def redraw(self, body: Mapping[str, Any], reply: Reply, text: str, drawn: list[Block]) -> None:
        """Show the new state of the clicked message: the Home tab redrawn, a channel message edited,
        else (an ephemeral one, or an edit Slack refused) through the click's response_url."""
        container = body.get("container") or {}
        if container.get("type") == "view" and (body.get("view") or {}).get("type") == "home":
            await self.publish_home(reply.user)
            return
        await self.poster.redraw(body, reply, text, drawn)

    async def may_answer(self, user: str, task_id: str, tasks: Sequence[Task] = ()) -> bool:
        """Who may answer an agent's ask: whoever started the task, and SLACK_APPROVERS (users and groups)."""
        card = self.state.cards.get(task_id)
        if (card is not None and card.requester == user) or any(t.id == task_id and t.created_by == user
                                                                 for t in tasks):
            return True
        return await self.approvers.include(user)

    async def stop_thread(self, channel: str, root: str, user: str) -> Task | None:
        """Slack's Stop in a task's thread: its running agent stopped (see `Conversations.stop`)."""
        return await self.conversations.stop(channel, root, user)

    async def publish_home(self, user: str) -> None:
        """Draw `user`'s Home tab as it is now (views.publish); a failure is logged, the next change retries."""
        self.home_users.add(user)
        try:
            tasks, _ = await self.layer.client.list_tasks(limit=HOME_SCAN)
            fleet = await self.layer.run(grammar.Command("status"))
            asks = [ask for ask in await self.layer.client.open_asks()
                    if await self.may_answer(user, ask.task_id, tasks)]
        except queue_errors.QueueError as exc:
            logger.warning("the Home tab of %s was not refreshed: %s", user, exc.detail)
            return
        view = forms.home_view(user, tasks, fleet if isinstance(fleet, views.FleetStatus) else None, asks)
        try:
            await self.web.views_publish(user_id=user, view=view.to_dict())
        except delivery.FAILURES as exc:
            logger.warning("publishing the Home tab of %s failed (%s)", user, delivery.problem(exc))

    async def refresh_homes(self, tasks: list[Task]) -> None:
        """Redraw the Home tab of each person (who opened it) whose tasks changed."""
        for user in sorted({t.created_by for t in tasks if t.created_by} & self.home_users):
            await self.publish_home(user)

    def remember(self, view: views.SuggestionView) -> views.SuggestionView:
        """Keep a suggestion until Confirm; the returned view carries the token its buttons send back."""
        token = uuid.uuid4().hex[:16]
        kept = views.SuggestionView(view.suggestion, view.request, view.machines, view.agents, view.types, token)
        self.suggestions[token] = (view.suggestion, kept)
        while len(self.suggestions) > MAX_PENDING_SUGGESTIONS:
            self.suggestions.popitem(last=False)
        return kept


def room_of(context: Mapping[str, Any]) -> Room:
    """The Room the app put into this request's context."""
    room = context[CONTEXT_KEY]
    assert isinstance(room, Room)
    return room
