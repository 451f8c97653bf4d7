"""The one error handler: log the failure, tell the user in one sentence."""

from __future__ import annotations

import logging
from typing import Any

from slack_bolt.async_app import AsyncApp

logger = logging.getLogger(__name__)


def register(app: AsyncApp) -> None:
    app.error(on_error)


async def on_error(error: Exception, body: dict[str, Any]) -> None:
    logger.exception("slack listener failed: %s", error)
    url = body.get("response_url") if isinstance(body, dict) else None
    if url:
        from slack_sdk.webhook.async_client import AsyncWebhookClient

        await AsyncWebhookClient(url).send(text=f"Something went wrong: {type(error).__name__}; see the bot's log.",
                                          response_type="ephemeral", replace_original=False)
