"""What every Slack listener shares: settings, the command layer, the bot's state, the Web
client and the suggestions awaiting Confirm, with the helpers that use them.

The app puts the one Room into each request's context (`room_of(context)`), so listeners
stay plain functions registered the way bolt-python's app template registers them.
"""

from __future__ import annotations

import uuid
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

from slack_sdk.web.async_client import AsyncWebClient

from da.bot import views
from da.bot.commands import CommandLayer
from da.bot.router import Suggestion
from da.bot.slack import blocks
from da.bot.slack.settings import BotSettings
from da.bot.slack.state import BotState, Card
from da.queue import errors as queue_errors

# Suggestions awaiting Confirm; old ones fall off (Slack messages outlive them anyway).
MAX_PENDING_SUGGESTIONS = 200
CONTEXT_KEY = "da_room"


class Room:
    """The bot's shared state and the helpers its listeners use."""

    def __init__(self, settings: BotSettings, layer: CommandLayer, state: BotState) -> None:
        self.settings = settings
        self.layer = layer
        self.state = state
        self.web = AsyncWebClient(token=settings.bot_token, base_url=settings.api_url)
        self.suggestions: OrderedDict[str, tuple[Suggestion, views.SuggestionView]] = OrderedDict()

    def allowed(self, user: str) -> bool:
        return user in self.settings.allowed_users

    def refusal(self, user: str) -> str:
        return (f"<@{user}> is not on SLACK_ALLOWED_USERS, so you can look but not change anything; "
                "ask whoever runs da to add your user id.")

    async def refused(self, body: dict[str, Any], respond: Any) -> bool:
        """True (after telling the user, ephemerally) when the clicker may not change state."""
        user = body["user"]["id"]
        if self.allowed(user):
            return False
        await respond(text=self.refusal(user), response_type="ephemeral", replace_original=False)
        return True

    def queue_error(self, exc: queue_errors.QueueError) -> str:
        if isinstance(exc, queue_errors.QueueUnreachable):
            return f"queue unreachable at {', '.join(self.layer.client.urls)}."
        return exc.detail

    async def replace(self, body: dict[str, Any], respond: Any, text: str, new_blocks: list[Any]) -> None:
        """Replace the clicked message: chat.update for a channel message, else its response_url."""
        container = body.get("container") or {}
        as_dicts = [b if isinstance(b, dict) else b.to_dict() for b in new_blocks]
        if container.get("message_ts") and container.get("channel_id") and not container.get("is_ephemeral"):
            await self.web.chat_update(channel=container["channel_id"], ts=container["message_ts"], text=text,
                                       blocks=as_dicts)
        else:
            await respond(text=text, blocks=as_dicts, replace_original=True)

    async def post_card(self, channel: str, view: views.Created) -> None:
        """Post an assigned task's card and remember it for progress edits and threading."""
        text, card_blocks = blocks.render(view)
        posted = await self.web.chat_postMessage(channel=channel, text=text, blocks=card_blocks)
        self.state.cards[view.task.id] = Card(posted["channel"], posted["ts"], view.task.status)
        self.state.save()

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
