"""People's messages: `message` events (channels, private channels, DMs) and `app_mention`.

Bolt acks events before the listener runs. One mention arrives as both events, and Slack
delivers an event again when an ack is late; the conversations module acts on each message
once, whichever comes first, and hands a mention or a DM to `answering`'s one path.
"""

from __future__ import annotations

from typing import Any

from slack_bolt.async_app import AsyncApp, AsyncBoltContext

from da.bot.slack import answering
from da.bot.slack.room import room_of

# Reactions that stop the agent at work in the message's thread.
STOP_REACTIONS = frozenset({"x", "octagonal_sign"})


def register(app: AsyncApp) -> None:
    app.event("message")(on_message)
    app.event("app_mention")(on_message)
    app.event("agent_session_stopped")(on_session_stopped)
    app.event("reaction_added")(on_reaction)


async def on_message(event: dict[str, Any], context: AsyncBoltContext) -> None:
    room = room_of(context)
    asked = await room.conversations.heard(event, context.get("bot_user_id"))
    if asked is not None:
        await answering.answer(room, asked)


async def on_session_stopped(event: dict[str, Any], context: AsyncBoltContext) -> None:
    """Slack's own Stop button on a running agent: its task is cancelled gently (the answer so far kept)."""
    await room_of(context).stop_thread(str(event.get("channel") or ""), str(event.get("thread_ts") or ""),
                                       str(event.get("user") or ""))


async def on_reaction(event: dict[str, Any], context: AsyncBoltContext) -> None:
    """:x: on a running agent's request or card stops it, as "stop" in its thread does; other reactions are
    people's."""
    item = event.get("item") or {}
    if event.get("reaction") in STOP_REACTIONS and item.get("type") == "message":
        await room_of(context).stop_thread(str(item.get("channel") or ""), str(item.get("ts") or ""),
                                           str(event.get("user") or ""))
