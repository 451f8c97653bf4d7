"""Getting a message to Slack when every call can fail.

The Web client retries what Slack says to retry (HTTP 429 after `Retry-After`, 500/503,
connection resets) with the SDK's own handlers. `response_url` posts get the same handlers
but never raise on an HTTP error, so `Reply` checks each answer and, when Slack refuses it,
falls back to a form Slack accepts: the text without blocks, then a private message.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any

import aiohttp
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.async_handler import AsyncRetryHandler
from slack_sdk.http_retry.builtin_async_handlers import (
    AsyncConnectionErrorRetryHandler,
    AsyncRateLimitErrorRetryHandler,
    AsyncServerErrorRetryHandler,
)
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.webhook.async_client import AsyncWebhookClient

from da.queue import errors as queue_errors

logger = logging.getLogger(__name__)

# The SDK counts one attempt budget across its handlers: four retries of any kind per call,
# then the caller's own loop (the notifier's backoff) takes over.
SDK_RETRIES = 4
# What a failed call raises: Slack's refusal, or the network's.
FAILURES = (SlackApiError, aiohttp.ClientError, asyncio.TimeoutError, ConnectionError)
# Refusals about the message itself: the same text without blocks may pass.
CONTENT_ERRORS = frozenset({"invalid_blocks", "invalid_blocks_format", "msg_blocks_too_long", "msg_too_long",
                            "no_text", "too_many_attachments"})
# Refusals about where the message was going: try another place (or wait for someone to fix it).
PLACE_ERRORS = frozenset({"channel_not_found", "not_in_channel", "is_archived", "thread_not_found",
                          "cannot_reply_to_message", "message_not_found", "cant_update_message",
                          "user_not_in_channel", "restricted_action", "restricted_action_read_only_channel",
                          "restricted_action_thread_only_channel", "team_access_not_granted"})
# A fallback plain text stays well inside every text limit.
PLAIN_LIMIT = 3000


def retry_handlers() -> list[AsyncRetryHandler]:
    return [AsyncConnectionErrorRetryHandler(max_retry_count=SDK_RETRIES),
            AsyncRateLimitErrorRetryHandler(max_retry_count=SDK_RETRIES),
            AsyncServerErrorRetryHandler(max_retry_count=SDK_RETRIES)]


def web_client(token: str, base_url: str, timeout: float) -> AsyncWebClient:
    """The bot's Web client: `timeout` per try, Slack's retryable failures retried."""
    return AsyncWebClient(token=token, base_url=base_url, timeout=int(max(1, timeout)),
                          retry_handlers=retry_handlers())


def problem(exc: BaseException) -> str:
    """Slack's error code for a refusal, else what went wrong on the way (`timeout`, `connection`)."""
    if isinstance(exc, SlackApiError):
        response = exc.response
        data = getattr(response, "data", None)
        if isinstance(data, Mapping) and data.get("error"):
            return str(data["error"])
        status = getattr(response, "status_code", 0)
        return f"http_{status}" if status else "bad_response"
    if isinstance(exc, asyncio.TimeoutError):
        return "timeout"
    return "connection"


def retry_after(exc: BaseException) -> float:
    """Seconds Slack asked us to wait (Retry-After on a 429), else 0."""
    if isinstance(exc, SlackApiError):
        headers = getattr(exc.response, "headers", None) or {}
        value = headers.get("Retry-After") or headers.get("retry-after")
        if value:
            try:
                return float(value)
            except ValueError:
                return 0.0
    return 0.0


def transient(exc: queue_errors.QueueError) -> bool:
    """True for a queue failure that passes by itself (queue or database away, a 5xx, a slow body), worth
    retrying; the others (too large, malformed, refused) answer the same however often they are sent."""
    return isinstance(exc, (queue_errors.QueueUnreachable, queue_errors.StoreError, queue_errors.RequestTimeout)) \
        or exc.status >= 500


def clip(text: str, limit: int = PLAIN_LIMIT) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


async def post_response(url: str, message: dict[str, Any], timeout: float) -> str | None:
    """Post to a response_url; None when Slack took it, else why not ("404 expired_url", "timeout")."""
    webhook = AsyncWebhookClient(url, timeout=int(max(1, timeout)), retry_handlers=retry_handlers())
    try:
        response = await webhook.send_dict(message)
    except (TimeoutError, aiohttp.ClientError, ConnectionError) as exc:
        return problem(exc)
    if response.status_code == 200:
        return None
    return f"{response.status_code} {str(response.body).strip()[:100]}"


class Reply:
    """Answers to the person behind one request: through its response_url, else privately."""

    def __init__(self, web: AsyncWebClient, *, url: str | None, channel: str | None, user: str,
                 timeout: float) -> None:
        self.web = web
        self.url = url
        self.channel = channel
        self.user = user
        self.timeout = timeout

    @classmethod
    def to(cls, body: Mapping[str, Any], web: AsyncWebClient, timeout: float) -> Reply:
        """The reply for a slash command or a click (their payloads name user and channel differently)."""
        user = body.get("user_id") or (body.get("user") or {}).get("id", "")
        channel = body.get("channel_id") or (body.get("channel") or {}).get("id") \
            or (body.get("container") or {}).get("channel_id")
        return cls(web, url=body.get("response_url"), channel=channel, user=user, timeout=timeout)

    async def send(self, text: str, blocks: list[Any] | None = None, *, replace: bool = False) -> bool:
        """Show `text` (and blocks) to the user, replacing the clicked message when `replace`.

        True when Slack showed something; every refusal is logged.
        """
        drawn = [b if isinstance(b, dict) else b.to_dict() for b in blocks or []]
        message: dict[str, Any] = {"text": text, "response_type": "ephemeral", "replace_original": replace}
        if drawn:
            message["blocks"] = drawn
        why = "no response_url"
        if self.url:
            why = await post_response(self.url, message, self.timeout) or ""
            if not why:
                return True
            logger.warning("Slack refused an answer to %s through response_url (%s)", self.user, why)
            if drawn and why.startswith("400"):
                plain = {"text": clip(text), "response_type": "ephemeral", "replace_original": replace}
                if await post_response(self.url, plain, self.timeout) is None:
                    return True
        return await self.privately(text, drawn, why)

    async def privately(self, text: str, blocks: list[dict[str, Any]], why: str) -> bool:
        """The fallback: an ephemeral message by chat.postEphemeral, with blocks and then without."""
        if not self.channel or not self.user:
            logger.error("could not answer %s (%s) and have no channel to write in: %s", self.user, why,
                         clip(text, 200))
            return False
        for with_blocks in ([blocks] if blocks else []) + [None]:
            try:
                await self.web.chat_postEphemeral(channel=self.channel, user=self.user, text=clip(text),
                                                  blocks=with_blocks)
                return True
            except FAILURES as exc:
                logger.warning("chat.postEphemeral to %s in %s failed (%s)", self.user, self.channel, problem(exc))
        logger.error("could not answer %s in %s (%s): %s", self.user, self.channel, why, clip(text, 200))
        return False
