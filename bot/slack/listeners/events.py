"""People's messages: `message` events (channels, private channels, DMs) and `app_mention`.

Bolt acks events before the listener runs. One mention arrives as both events, and Slack
delivers an event again when an ack is late; the conversations module acts on each message
once, whichever comes first.
"""

from __future__ import annotations

from typing import Any

from slack_bolt.async_app import AsyncApp

from da.bot.slack.room import room_of


def register(app: AsyncApp) -> None:
    app.event("message")(on_message)
    app.event("app_mention")(on_message)


async def on_message(event: dict[str, Any], context: Any) -> None:
    await room_of(context).conversations.heard(event, context.get("bot_user_id"))
