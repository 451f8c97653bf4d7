"""The one error handler: log the failure, tell the user in one sentence."""

from __future__ import annotations

import logging
from typing import Any

from slack_bolt.async_app import AsyncApp, AsyncBoltContext

from da.bot.slack.room import CONTEXT_KEY, Room

logger = logging.getLogger(__name__)


def register(app: AsyncApp) -> None:
    app.error(on_error)


async def on_error(error: Exception, body: dict[str, Any], context: AsyncBoltContext | None) -> None:
    logger.exception("slack listener failed: %s", error)
    room = context.get(CONTEXT_KEY) if context is not None else None
    if isinstance(room, Room) and isinstance(body, dict):
        await room.reply_to(body).send(f"Something went wrong: {type(error).__name__}; see the bot's log.")
