"""The Slack front end: `/da` and its buttons, on Bolt in socket mode.

Every listener acks first (Slack wants an answer within 3 s), then runs the shared command
layer and draws its view with `blocks.render_blocks`. State changes are for
SLACK_ALLOWED_USERS only; a click changes something once, and a second click on a settled
task says who settled it.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections import OrderedDict
from typing import Any

from slack_bolt.async_app import AsyncApp
from slack_sdk.web.async_client import AsyncWebClient

from da.bot import blocks, grammar, views
from da.bot.commands import CommandLayer
from da.bot.grammar import UsageError
from da.bot.router import Suggestion
from da.bot.settings import BotSettings
from da.bot.state import BotState, Card
from da.queue import errors as queue_errors

logger = logging.getLogger(__name__)

# Suggestions awaiting Confirm; old ones fall off (Slack messages outlive them anyway).
MAX_PENDING_SUGGESTIONS = 200
RESOLVE_ACTIONS = {"resolve_done": "done", "resolve_pending": "pending", "resolve_failed": "failed"}
OUTCOME_WORDS = {"done": "resolved as done", "pending": "re-queued (retry)", "failed": "marked failed"}


class SlackBot:
    """The Bolt app and the little state its buttons need."""

    def __init__(self, settings: BotSettings, layer: CommandLayer, state: BotState) -> None:
        self.settings = settings
        self.layer = layer
        self.state = state
        self.web = AsyncWebClient(token=settings.bot_token, base_url=settings.api_url)
        self.app = AsyncApp(client=self.web, request_verification_enabled=False,
                            ignoring_self_events_enabled=False)
        self.suggestions: OrderedDict[str, tuple[Suggestion, views.SuggestionView]] = OrderedDict()
        self.register()

    # ---- helpers -------------------------------------------------------------------

    def allowed(self, user: str) -> bool:
        return user in self.settings.allowed_users

    async def refused(self, body: dict[str, Any], respond: Any) -> bool:
        """True (after telling the user, ephemerally) when the clicker may not change state."""
        user = body["user"]["id"]
        if self.allowed(user):
            return False
        await respond(text=self.refusal(user), response_type="ephemeral", replace_original=False)
        return True

    def refusal(self, user: str) -> str:
        return (f"<@{user}> is not on SLACK_ALLOWED_USERS, so you can look but not change anything; "
                "ask whoever runs da to add your user id.")

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
        text, card_blocks = blocks.render_blocks(view)
        posted = await self.web.chat_postMessage(channel=channel, text=text, blocks=card_blocks)
        self.state.cards[view.task.id] = Card(posted["channel"], posted["ts"], view.task.status)
        self.state.save()

    def remember(self, view: views.SuggestionView) -> str:
        token = uuid.uuid4().hex[:16]
        self.suggestions[token] = (view.suggestion, view)
        while len(self.suggestions) > MAX_PENDING_SUGGESTIONS:
            self.suggestions.popitem(last=False)
        return token

    # ---- listeners ------------------------------------------------------------------

    def register(self) -> None:
        app = self.app
        app.command("/da")(self.on_command)
        app.action("suggest_confirm")(self.on_confirm)
        app.action("suggest_cancel")(self.on_suggest_cancel)
        for name in ("machine", "agent", "type"):
            app.action(f"suggest_{name}")(self.on_suggest_change)
        for action_id in RESOLVE_ACTIONS:
            app.action(action_id)(self.on_resolve)
        app.action("note_open")(self.on_note_open)
        app.view("note_submit")(self.on_note_submit)
        app.action("cancel_task")(self.on_cancel)
        app.action("bulk_confirm")(self.on_bulk_confirm)
        app.action("bulk_cancel")(self.on_bulk_cancel)
        app.error(self.on_error)

    async def on_command(self, ack: Any, command: dict[str, Any], respond: Any) -> None:
        await ack()
        user, channel = command.get("user_id", ""), command.get("channel_id", "")
        try:
            parsed = grammar.parse(command.get("text", ""), allow_local=False)
        except UsageError as exc:
            await respond(text=f"{exc.problem}\nusage: `/da {exc.usage}`", response_type="ephemeral")
            return
        if parsed.changes_state and not self.allowed(user):
            await respond(text=self.refusal(user), response_type="ephemeral")
            return
        if parsed.verb == "skills" and parsed.words and parsed.words[0] in ("install", "create"):
            await respond(text=f"`skills {parsed.words[0]}` streams or asks questions: run it with `da` in a "
                          "terminal.", response_type="ephemeral")
            return
        try:
            view = await self.layer.run(parsed, user=user)
        except UsageError as exc:
            await respond(text=f"{exc.problem}\nusage: `/da {exc.usage}`", response_type="ephemeral")
            return
        if isinstance(view, views.Created):
            await self.post_card(channel, view)
            return
        if isinstance(view, views.SuggestionView):
            token = self.remember(view)
            await respond(text="Suggestion", blocks=blocks.suggestion_blocks(view, token), response_type="ephemeral")
            return
        if isinstance(view, views.BulkPreview):
            await respond(**self.bulk_preview(view), response_type="ephemeral")
            return
        text, drawn = blocks.render_blocks(view)
        await respond(text=text, blocks=drawn, response_type="ephemeral")

    def bulk_preview(self, view: views.BulkPreview) -> dict[str, Any]:
        text = f"{view.count} task(s) in {view.from_status} will become {view.status}."
        if not view.count:
            return {"text": f"No tasks in {view.from_status}; nothing to change."}
        value = {"from": view.from_status, "to": view.status, "t": uuid.uuid4().hex[:12]}
        return {"text": text, "blocks": [blocks.SectionBlock(text=blocks.md(text)), blocks.ActionsBlock(
            elements=[blocks.button(f"Confirm: change {view.count}", "bulk_confirm", value, "danger"),
                      blocks.button("Cancel", "bulk_cancel", value)])]}

    async def on_confirm(self, ack: Any, body: dict[str, Any], action: dict[str, Any], respond: Any) -> None:
        await ack()
        user = body["user"]["id"]
        if await self.refused(body, respond):
            return
        token = json.loads(action["value"])["t"]
        entry = self.suggestions.pop(token, None)
        if entry is None:
            await respond(text="This suggestion was already confirmed or cancelled.", replace_original=False,
                          response_type="ephemeral")
            return
        suggestion, view = entry
        request = views.AssignRequest(view.request.description, view.request.cwd, view.request.priority, user)
        try:
            created = await self.layer.create(suggestion, request)
        except UsageError as exc:
            await respond(text=exc.problem, replace_original=True)
            return
        except queue_errors.QueueError as exc:
            self.suggestions[token] = entry
            await respond(text=self.queue_error(exc), replace_original=False, response_type="ephemeral")
            return
        if isinstance(created, views.Message):
            await respond(text=created.text, replace_original=True)
            return
        await respond(text=f"Queued `{created.task.short_id}` by <@{user}>.", replace_original=True)
        channel = (body.get("channel") or {}).get("id") or self.settings.notify_channel
        if channel:
            await self.post_card(channel, created)

    async def on_suggest_cancel(self, ack: Any, body: dict[str, Any], action: dict[str, Any], respond: Any) -> None:
        await ack()
        self.suggestions.pop(json.loads(action["value"])["t"], None)
        await respond(text="Cancelled; nothing queued.", replace_original=True)

    async def on_suggest_change(self, ack: Any, body: dict[str, Any], action: dict[str, Any], respond: Any) -> None:
        """A menu changed machine, agent or type: keep the new choice for Confirm."""
        await ack()
        state_blocks = body.get("message", {}).get("blocks", [])
        token = None
        for block in state_blocks:
            for element in block.get("elements", []) if isinstance(block, dict) else []:
                if element.get("action_id") == "suggest_confirm":
                    token = json.loads(element["value"])["t"]
        if token is None or token not in self.suggestions:
            await respond(text="This suggestion is no longer open.", replace_original=False, response_type="ephemeral")
            return
        suggestion, view = self.suggestions[token]
        field = action["action_id"].removeprefix("suggest_")
        chosen = action["selected_option"]["value"]
        changed = Suggestion(**{**vars(suggestion), field: chosen, "reason": f"{suggestion.reason}; {field} set by "
                                f"<@{body['user']['id']}>"})
        self.suggestions[token] = (changed, view)
        new_view = views.SuggestionView(changed, view.request, view.machines, view.agents, view.types)
        new_blocks = blocks.suggestion_blocks(new_view, token)
        await respond(text="Suggestion", blocks=[b.to_dict() for b in new_blocks], replace_original=True)

    async def on_resolve(self, ack: Any, body: dict[str, Any], action: dict[str, Any], respond: Any) -> None:
        await ack()
        await self.resolve(body, respond, json.loads(action["value"])["id"], RESOLVE_ACTIONS[action["action_id"]])

    async def resolve(self, body: dict[str, Any], respond: Any, task_id: str, status: str,
                      notes: str | None = None) -> None:
        user = body["user"]["id"]
        if await self.refused(body, respond):
            return
        try:
            task = await self.layer.client.resolve(task_id, status, notes=notes, by=user)
        except queue_errors.Conflict as exc:
            await respond(text=f"Nothing changed: {exc.detail}", response_type="ephemeral", replace_original=False)
            return
        except queue_errors.QueueError as exc:
            await respond(text=self.queue_error(exc), response_type="ephemeral", replace_original=False)
            return
        outcome = f":ballot_box_with_check: `{task.short_id}` {OUTCOME_WORDS[status]} by <@{user}>" + (
            f": {notes}" if notes else "")
        message_blocks = body.get("message", {}).get("blocks")
        if message_blocks is not None:
            new_blocks = blocks.replace_task(message_blocks, task.id, [blocks.outcome_block(task.id, outcome)])
            await self.replace(body, respond, outcome, new_blocks)
        else:
            await self.web.chat_postMessage(channel=body.get("origin_channel") or self.settings.notify_channel,
                                            text=outcome)

    async def on_note_open(self, ack: Any, body: dict[str, Any], action: dict[str, Any], client: Any) -> None:
        await ack()
        user = body["user"]["id"]
        task_id = json.loads(action["value"])["id"]
        container = body.get("container") or {}
        origin = {"channel": container.get("channel_id", ""), "ts": container.get("message_ts", ""),
                  "response_url": body.get("response_url", "")}
        if not self.allowed(user):
            await self.web.chat_postEphemeral(channel=origin["channel"] or self.settings.notify_channel, user=user,
                                              text=self.refusal(user))
            return
        await self.web.views_open(trigger_id=body["trigger_id"], view=blocks.note_modal(task_id, task_id[:8], origin))

    async def on_note_submit(self, ack: Any, body: dict[str, Any], view: dict[str, Any]) -> None:
        await ack()
        meta = json.loads(view.get("private_metadata") or "{}")
        values = view["state"]["values"]
        note = values["note"]["text"]["value"]
        status = values["status"]["choice"]["selected_option"]["value"]
        user = body["user"]["id"]
        channel = meta.get("channel") or self.settings.notify_channel
        if not self.allowed(user):
            return
        try:
            task = await self.layer.client.resolve(meta["id"], status, notes=note, by=user)
        except queue_errors.QueueError as exc:
            await self.web.chat_postEphemeral(channel=channel, user=user, text=f"Nothing changed: {exc.detail}")
            return
        outcome = f":ballot_box_with_check: `{task.short_id}` {OUTCOME_WORDS[status]} by <@{user}>: {note}"
        if meta.get("ts") and channel:
            history = [blocks.outcome_block(task.id, outcome).to_dict()]
            await self.web.chat_update(channel=channel, ts=meta["ts"], text=outcome, blocks=history)
        elif channel:
            await self.web.chat_postMessage(channel=channel, text=outcome)

    async def on_cancel(self, ack: Any, body: dict[str, Any], action: dict[str, Any], respond: Any) -> None:
        await ack()
        user = body["user"]["id"]
        if await self.refused(body, respond):
            return
        task_id = json.loads(action["value"])["id"]
        try:
            task = await self.layer.client.cancel(task_id, by=user)
        except queue_errors.QueueError as exc:
            await respond(text=f"Nothing changed: {exc.detail}", response_type="ephemeral", replace_original=False)
            return
        text, card = blocks.render_blocks(views.Created(task))
        card.append(blocks.ContextBlock(elements=[blocks.md(f"cancelled by <@{user}>")]))
        await self.replace(body, respond, text, card)

    async def on_bulk_confirm(self, ack: Any, body: dict[str, Any], action: dict[str, Any], respond: Any) -> None:
        await ack()
        user = body["user"]["id"]
        if await self.refused(body, respond):
            return
        value = json.loads(action["value"])
        if value["t"] in self.state.handled_bulk:
            await respond(text="Already done.", response_type="ephemeral", replace_original=False)
            return
        self.state.handled_bulk.add(value["t"])
        try:
            done = await self.layer.resolve_all(value["from"], value["to"], user=user)
        except queue_errors.QueueError as exc:
            self.state.handled_bulk.discard(value["t"])
            await respond(text=self.queue_error(exc), response_type="ephemeral", replace_original=False)
            return
        await respond(text=f"{done.count} task(s) moved from {done.from_status} to {done.status} by <@{user}>.",
                      replace_original=True)

    async def on_bulk_cancel(self, ack: Any, respond: Any) -> None:
        await ack()
        await respond(text="Cancelled; nothing changed.", replace_original=True)

    def queue_error(self, exc: queue_errors.QueueError) -> str:
        if isinstance(exc, queue_errors.QueueUnreachable):
            return f"queue unreachable at {', '.join(self.layer.client.urls)}."
        return exc.detail

    async def on_error(self, error: Exception, body: dict[str, Any]) -> None:
        """One place for failures: log them, tell the user in one sentence."""
        logger.exception("slack listener failed: %s", error)
        url = body.get("response_url") if isinstance(body, dict) else None
        if url:
            from slack_sdk.webhook.async_client import AsyncWebhookClient

            await AsyncWebhookClient(url).send(text=f"Something went wrong: {type(error).__name__}; see the bot's log.",
                                              response_type="ephemeral", replace_original=False)
