"""`/da`: the terminal's grammar in Slack, answered privately (a new task's card is posted).

Slack sends the command text with & < > escaped; it is unescaped here, once, so a prompt
reaches its task as the person typed it. The rest is `answering`'s one path.
"""

from __future__ import annotations

from typing import Any

from slack_bolt.async_app import AsyncAck, AsyncApp, AsyncBoltContext

from da.bot.slack import answering, blocks
from da.bot.slack.asked import Asked, Surface
from da.bot.slack.room import room_of


def register(app: AsyncApp) -> None:
    app.command("/da")(da_command)


async def da_command(ack: AsyncAck, command: dict[str, Any], context: AsyncBoltContext) -> None:
    """Ack at once, then answer through the one path."""
    await ack()
    room = room_of(context)
    await answering.answer(room, Asked(command.get("user_id", ""), command.get("channel_id", ""),
                                       blocks.unescape(command.get("text", "")), Surface.SLASH,
                                       reply=room.reply_to(command)))
