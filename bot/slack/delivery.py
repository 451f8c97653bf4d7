"""The one poster: every message the bot shows in Slack goes through here, when every call can fail.

Only this module calls `chat.postMessage`, `chat.update`, `chat.postEphemeral`, the files upload
and the streaming methods (a structure test fails if another module of `da.bot.slack` does), so
retries, fallbacks and remembering what was posted live in one place:

- retries: the Web client retries what Slack says to retry (HTTP 429 after `Retry-After`,
  500/503, connection resets) with the SDK's own handlers; `until` keeps trying a delivery that
  must happen (an alert) with backoff, forever;
- fallbacks: a refused message is sent again as plain text (`CONTENT_ERRORS`); a place that
  refuses (`PLACE_ERRORS`) passes the message to the next place (the notify channel, or the
  person's DM with a sentence saying why); `response_url` posts get the SDK's handlers but never
  raise on an HTTP error, so `Reply` checks each answer and falls back to the text without
  blocks, then a private message;
- persistence: a task's card, once Slack took it, is kept in the bot's state (`Poster.card`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.async_handler import AsyncRetryHandler
from slack_sdk.http_retry.builtin_async_handlers import (
    AsyncConnectionErrorRetryHandler,
    AsyncRateLimitErrorRetryHandler,
    AsyncServerErrorRetryHandler,
)
from slack_sdk.models.blocks import Block, SectionBlock
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.webhook.async_client import AsyncWebhookClient

from da.bot import views
from da.bot.slack import blocks as drawing
from da.bot.slack.state import BotState, Card
from da.queue import errors as queue_errors
from da.queue import models

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
# Tries of one delivery that must happen: 0.5 s, doubling to 30 s between them (longer if Slack asks), forever.
RETRY_FIRST = 0.5
RETRY_MAX = 30.0
# A card Slack no longer has: stop editing it.
GONE = frozenset({"message_not_found", "cant_update_message", "channel_not_found"})
# A workspace, token or SDK without streamed messages: show progress as one card edited in place.
NO_STREAMING = frozenset({"unknown_method", "not_allowed", "not_allowed_token_type", "not_enabled",
                          "feature_not_enabled", "channel_type_not_supported", "method_not_supported_for_channel_type",
                          "invalid_stream_arguments", "no_sdk_support"})
# A stream that takes no more: it ended (Slack ends one left open after minutes) or is not ours.
STREAM_ENDED = frozenset({"message_not_in_streaming_state", "message_not_owned_by_app"})
# Someone pressed Stop on the streamed message (or the agent session's native Stop).
STOPPED_BY_USER = "stopped_by_user"
# chat.update is Tier 3 (50+ a minute for the workspace): one edit a second per progress card at most.
EDIT_INTERVAL = 1.0
# Slack's name for the agent session method; slack_sdk 3.48 has no wrapper for it.
SESSION_STATUS_METHOD = "agents.sessions.setStatus"


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


def dicts(drawn: Sequence[Block | dict[str, Any]] | None) -> list[dict[str, Any]] | None:
    """Blocks as Slack's JSON (None for none)."""
    return [b if isinstance(b, dict) else b.to_dict() for b in drawn] if drawn else None


async def until(what: str, attempt: Callable[[], Awaitable[Any]]) -> Any:
    """Run `attempt` until it succeeds: Slack failures and a queue that is away are retried, honouring
    Retry-After; a queue error that would answer the same again (too large, refused) is raised.

    A task that no longer exists answers None.
    """
    pause = RETRY_FIRST
    while True:
        try:
            return await attempt()
        except queue_errors.NotFound:
            return None
        except queue_errors.QueueError as exc:
            if not transient(exc):
                raise
            why = exc.detail
            wait = pause
        except FAILURES as exc:
            why = problem(exc)
            wait = max(pause, retry_after(exc))
        log = logger.error if why in PLACE_ERRORS else logger.warning
        log("%s was not delivered (%s); trying again in %.1fs", what, why, wait)
        await asyncio.sleep(wait)
        pause = min(pause * 2, RETRY_MAX)


@dataclass
class Live:
    """One turn's progress message in a thread: a Slack stream where the workspace has streaming, else a
    card edited in place (at most one edit a second); its own methods change it."""

    channel: str
    thread_ts: str
    ts: str
    streaming: bool
    stopped_by_user: bool = False
    ended: bool = False
    last_edit: float = 0.0
    waiting: tuple[str, list[Block]] | None = None
    edit_later: asyncio.Task[None] | None = field(default=None, repr=False)

    def as_card(self) -> None:
        """The stream ended before the turn did: its message is edited from now on."""
        self.streaming = False

    def stopped(self) -> None:
        self.stopped_by_user = True
        self.ended = True

    def finished(self) -> None:
        self.ended = True
        self.waiting = None
        if self.edit_later is not None and self.edit_later is not asyncio.current_task():
            self.edit_later.cancel()
        self.edit_later = None

    def edited(self, now: float) -> None:
        self.last_edit = now
        self.waiting = None

    def wait(self, drawn: tuple[str, list[Block]], later: asyncio.Task[None] | None) -> None:
        self.waiting = drawn
        if later is not None:
            self.edit_later = later


class Poster:
    """Every post, edit, private message and upload of the bot, with its retries and fallbacks."""

    def __init__(self, web: AsyncWebClient, state: BotState, *, notify_channel: str, timeout: float) -> None:
        self.web = web
        self.state = state
        self.notify_channel = notify_channel
        self.timeout = timeout
        # The workspace's address (auth.test's `url`), known once the bot has checked its token.
        self.team_url = ""
        self._posting = 0
        self._none_posting = asyncio.Event()
        self._none_posting.set()

    def thread_link(self, channel: str, ts: str | None) -> str | None:
        """A link to a thread's first message, for a pull request's body to point back to the conversation."""
        if not self.team_url or not channel or not ts:
            return None
        return f"{self.team_url.rstrip('/')}/archives/{channel}/p{ts.replace('.', '')}"

    def reply(self, body: Mapping[str, Any]) -> Reply:
        """Answers to the person behind a slash command or a click."""
        return Reply.to(body, self.web, self.timeout)

    def reply_to(self, user: str, *, url: str | None, channel: str | None) -> Reply:
        return Reply(self.web, url=url, channel=channel, user=user, timeout=self.timeout)

    # ---- one call each (raising FAILURES) ----------------------------------------------

    async def post(self, channel: str, text: str, drawn: Sequence[Block | dict[str, Any]] | None = None, *,
                   thread_ts: str | None = None) -> tuple[str, str]:
        """chat.postMessage; (channel, ts) of the message Slack stored."""
        self._posting += 1
        self._none_posting.clear()
        try:
            posted = await self.web.chat_postMessage(channel=channel, thread_ts=thread_ts, text=text,
                                                     blocks=dicts(drawn))
        finally:
            self._posting -= 1
            if not self._posting:
                self._none_posting.set()
        return str(posted["channel"]), str(posted["ts"])

    async def settle(self, timeout: float) -> None:
        """Wait (up to `timeout`) until no post is on its way. A follower cancelled while Slack takes its
        post never records where it landed, and the next bot posts it again; one cancelled right after
        this returns has recorded it (the recording follows the post's answer without a pause)."""
        deadline = asyncio.get_running_loop().time() + timeout
        while self._posting:
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._none_posting.wait(), left)

    async def update(self, channel: str, ts: str, text: str, drawn: Sequence[Block | dict[str, Any]]) -> None:
        """chat.update of a message the bot posted."""
        await self.web.chat_update(channel=channel, ts=ts, text=text, blocks=dicts(drawn))

    # ---- with fallbacks ----------------------------------------------------------------

    async def post_or_plain(self, channel: str, text: str, drawn: Sequence[Block] | None, *,
                            thread_ts: str | None = None, elsewhere: tuple[str, str, list[Block]] | None = None,
                            what: str = "a message") -> str:
        """Post once Slack takes it: as drawn, else (content refused) as plain text, else (place refused)
        as `elsewhere` (channel, text, blocks) when given; raises what Slack or the network raised.
        Returns the channel it landed in."""
        try:
            await self.post(channel, text, drawn, thread_ts=thread_ts)
            return channel
        except SlackApiError as exc:
            why = problem(exc)
            if why in CONTENT_ERRORS and drawn:
                logger.warning("Slack refused %s (%s); posting it as text", what, why)
                await self.post(channel, clip(text), thread_ts=thread_ts)
                return channel
            if why in PLACE_ERRORS and elsewhere is not None:
                other, other_text, other_blocks = elsewhere
                logger.warning("cannot post in %s (%s); %s goes to %s instead", channel, why, what, other)
                await self.post(other, other_text, other_blocks)
                return other
            raise

    async def card(self, view: views.Created, requester: str,
                   places: Sequence[tuple[str, str | None]]) -> tuple[Card | None, list[str]]:
        """Post a task's card in the first of `places` (channel, thread) that takes it and keep it in the
        state; the card (None when none took it) and why each refused. A refusal about the card itself
        or the network stops there: another place would not help."""
        text, drawn = drawing.render(view)
        refused: list[str] = []
        for channel, root in dict.fromkeys(p for p in places if p[0]):
            try:
                where, ts = await self.post(channel, text, drawn, thread_ts=root)
            except FAILURES as exc:
                why = problem(exc)
                logger.warning("posting the card of %s in %s failed (%s)", view.task.short_id, channel, why)
                refused.append(why)
                if why not in PLACE_ERRORS:
                    break
                continue
            card = Card(where, ts, view.task.status, requester=requester, thread=root or "")
            self.state.cards.keep(view.task.id, card)
            return card, refused
        return None, refused

    async def edit_card(self, task_id: str, card: Card, text: str, drawn: list[Block], status: str,
                        progress: str) -> None:
        """Show a card's new state; a card Slack lost is marked so nothing edits it again, another
        failure waits for the next round."""
        try:
            await self.update(card.channel, card.ts, text, drawn)
        except FAILURES as exc:
            why = problem(exc)
            if why in GONE:
                logger.warning("the card of %s is gone (%s); no more edits", task_id[:8], why)
                self.state.cards.shown(card, models.CANCELLED, card.progress)
                return
            logger.warning("editing the card of %s failed (%s); the next round tries again", task_id[:8], why)
            return
        self.state.cards.shown(card, status, progress)

    async def redraw(self, body: Mapping[str, Any], reply: Reply, text: str, drawn: list[Block]) -> bool:
        """Show the new state of a clicked channel message (chat.update), else through the click's
        response_url (an ephemeral message, or an update Slack refused). False when it was not a
        channel message the bot could edit and the caller should answer another way."""
        container = body.get("container") or {}
        if container.get("message_ts") and container.get("channel_id") and not container.get("is_ephemeral"):
            try:
                await self.update(container["channel_id"], container["message_ts"], text, drawn)
                return True
            except FAILURES as exc:
                logger.warning("chat.update of the clicked message failed (%s); answering through response_url",
                               problem(exc))
        return await reply.send(text, drawn, replace=True)

    async def say(self, channel: str, root: str | None, text: str, drawn: Sequence[Block] | None = None) -> bool:
        """A message in the thread `root` (None: the channel), for everyone in it; False when Slack did not take it."""
        try:
            await self.post(channel, text, drawn or [SectionBlock(text=drawing.md(text))], thread_ts=root)
        except FAILURES as exc:
            logger.warning("answering in the thread %s of %s failed (%s)", root, channel, problem(exc))
            return False
        return True

    async def say_privately(self, channel: str, root: str | None, user: str, text: str,
                            drawn: Sequence[Block] | None = None) -> bool:
        """A message only `user` sees (in a DM, where that is everyone, a plain one)."""
        if channel.startswith("D"):
            return await self.say(channel, root, text, drawn)
        try:
            await self.web.chat_postEphemeral(channel=channel, user=user, thread_ts=root, text=clip(text),
                                              blocks=dicts(drawn))
            return True
        except FAILURES as exc:
            logger.warning("answering %s privately in %s failed (%s)", user, channel, problem(exc))
            return False

    async def tell(self, user: str, text: str, drawn: Sequence[Block] | None = None) -> bool:
        """A message in the person's DM with the bot."""
        try:
            await self.post(user, text, drawn)
            return True
        except FAILURES as exc:
            logger.warning("telling %s failed (%s): %s", user, problem(exc), text[:200])
            return False

    async def attach(self, channel: str, thread_ts: str | None, uploads: list[dict[str, str]], short_id: str) -> None:
        """Files in a thread (files_upload_v2); a refusal is said there, not retried forever (the SDK
        already retried what Slack asks to retry)."""
        if not uploads:
            return
        try:
            await self.web.files_upload_v2(channel=channel, thread_ts=thread_ts, file_uploads=uploads)
        except FAILURES as exc:
            why = problem(exc)
            logger.warning("uploading the answer and log of %s failed (%s)", short_id, why)
            hint = " (add the files:write scope to the Slack app and reinstall it)" if why == "missing_scope" else ""
            await self.say(channel, thread_ts, f"I could not attach the answer and log files: {why}{hint}. "
                                               f"`/da show {short_id}` has it.")

    # ---- an agent at work: streams, thread status, agent sessions ------------------------

    async def start_live(self, channel: str, thread_ts: str, chunks: list[dict[str, Any]],
                         card: tuple[str, list[Block]], *, user: str, team: str,
                         display_mode: str = "plan") -> Live | None:
        """Open a turn's progress message in the thread: a stream (chunks), else the card; None when Slack
        took neither (logged)."""
        recipient = {} if channel.startswith("D") else {"recipient_user_id": user, "recipient_team_id": team}
        try:
            start = getattr(self.web, "chat_startStream", None)
            if start is None:
                raise _NoStreaming()
            started = await start(channel=channel, thread_ts=thread_ts, chunks=chunks,
                                  task_display_mode=display_mode, **recipient)
            return Live(str(started["channel"]), thread_ts, str(started["ts"]), streaming=True)
        except (*FAILURES, _NoStreaming) as exc:
            why = "no_sdk_support" if isinstance(exc, _NoStreaming) else problem(exc)
            if why in PLACE_ERRORS:
                logger.warning("cannot show progress in the thread %s of %s (%s)", thread_ts, channel, why)
                return None
            log = logger.info if why in NO_STREAMING else logger.warning
            log("streaming progress in %s failed (%s); showing it as a card edited in place", channel, why)
        text, drawn = card
        try:
            where, ts = await self.post(channel, text, drawn, thread_ts=thread_ts)
        except FAILURES as exc:
            logger.warning("posting the progress card in %s failed (%s)", channel, problem(exc))
            return None
        return Live(where, thread_ts, ts, streaming=False, last_edit=time.monotonic())

    async def append_live(self, live: Live, chunks: list[dict[str, Any]], card: tuple[str, list[Block]]) -> bool:
        """Show more progress; True when Slack took it (or a card edit is due within a second), False when
        it did not (the caller keeps the chunks for the next try) or someone pressed Stop (`live.stopped_by_user`)."""
        if live.ended:
            return False
        if live.streaming:
            if not chunks:
                return True
            try:
                await self.web.chat_appendStream(channel=live.channel, ts=live.ts, chunks=chunks)
                return True
            except FAILURES as exc:
                why = problem(exc)
                if why == STOPPED_BY_USER:
                    live.stopped()
                    return False
                if why not in STREAM_ENDED:
                    logger.warning("appending progress to %s failed (%s); the next update tries again", live.ts, why)
                    return False
                logger.info("the progress stream %s ended (%s); editing it as a card from now on", live.ts, why)
                live.as_card()
        return await self._edit_live(live, card)

    async def _edit_live(self, live: Live, card: tuple[str, list[Block]]) -> bool:
        now = time.monotonic()
        due = live.last_edit + EDIT_INTERVAL - now
        if due > 0:
            later = None
            if live.edit_later is None or live.edit_later.done():
                later = asyncio.create_task(self._edit_when_due(live, due))
            live.wait(card, later)
            return True
        return await self._update_live(live, card)

    async def _edit_when_due(self, live: Live, due: float) -> None:
        await asyncio.sleep(due)
        if live.waiting is not None and not live.ended:
            await self._update_live(live, live.waiting)

    async def _update_live(self, live: Live, card: tuple[str, list[Block]]) -> bool:
        text, drawn = card
        try:
            await self.update(live.channel, live.ts, text, drawn)
        except FAILURES as exc:
            why = problem(exc)
            if why in GONE:
                logger.warning("the progress card %s is gone (%s); no more edits", live.ts, why)
                live.finished()
            else:
                logger.warning("editing the progress card %s failed (%s)", live.ts, why)
            return False
        live.edited(time.monotonic())
        return True

    async def stop_live(self, live: Live, chunks: list[dict[str, Any]], card: tuple[str, list[Block]],
                        drawn: Sequence[Block] | None = None, *, session_status: str | None = None) -> bool:
        """End the turn's message: the last chunks and `drawn` (result buttons) at its bottom; a card gets its
        final state at once. True when Slack showed the end."""
        if live.streaming and not live.stopped_by_user:
            try:
                await self.web.chat_stopStream(channel=live.channel, ts=live.ts, chunks=chunks, blocks=dicts(drawn),
                                               session_status=session_status)
                live.finished()
                return True
            except FAILURES as exc:
                why = problem(exc)
                if why == STOPPED_BY_USER:
                    live.stopped()
                elif why not in STREAM_ENDED:
                    logger.warning("ending the progress stream %s failed (%s); showing the end as an edit",
                                   live.ts, why)
                live.as_card()
        live.finished()
        text, card_blocks = card
        due = live.last_edit + EDIT_INTERVAL - time.monotonic()
        if due > 0:
            await asyncio.sleep(due)
        return await self._update_live(live, (text, [*card_blocks, *(drawn or [])]))

    async def thread_status(self, channel: str, thread_ts: str, status: str,
                            loading: Sequence[str] | None = None) -> bool:
        """The status line under the thread ("" clears it); False when Slack did not take it (logged)."""
        try:
            await self.web.assistant_threads_setStatus(channel_id=channel, thread_ts=thread_ts, status=status,
                                                       loading_messages=list(loading)[:10] if loading else None)
            return True
        except FAILURES as exc:
            logger.info("the thread status in %s was not set (%s)", channel, problem(exc))
            return False

    async def session_status(self, channel: str, thread_ts: str, status: str, *, title: str | None = None,
                             initiator: str | None = None) -> bool:
        """The thread's agent session status (`processing` shows Slack's Stop button); title and initiator
        count only when it creates the session. False when Slack did not take it (logged)."""
        body: dict[str, Any] = {"channel_id": channel, "thread_ts": thread_ts, "status": status}
        if title:
            body["title"] = clip(title, 200)
        if initiator:
            body["initiator_user_id"] = initiator
        try:
            answer = await self.web.api_call(SESSION_STATUS_METHOD, json=body)
        except FAILURES as exc:
            logger.info("the agent session in %s was not set to %s (%s)", channel, status, problem(exc))
            return False
        if answer.get("warning"):
            logger.warning("Slack warns about the agent session: %s (subscribe the app to agent_session_stopped "
                           "so people can press Stop)", answer["warning"])
        return True


class _NoStreaming(Exception):
    """The installed slack_sdk has no streaming methods."""
