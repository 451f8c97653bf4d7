"""Buttons and menus: confirm or change a suggestion, resolve, add a note, cancel, bulk resolve,
open the review list from a burst summary.

A click in an ephemeral answer carries no `message`, only the clicked element (its `value`
and `block_id`) and a response_url; so every button keeps what it needs in its value or
block id, each answer is rebuilt from the queue, and a private click is answered privately.
Each click changes something once; a second click on a settled task says who settled it.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Mapping
from typing import Any

from slack_bolt.async_app import AsyncAck, AsyncApp, AsyncBoltContext
from slack_sdk.models.blocks import Block, ContextBlock
from slack_sdk.web.async_client import AsyncWebClient

from da.bot import grammar, views
from da.bot.grammar import UsageError
from da.bot.slack import answering, blocks, delivery, ids
from da.bot.slack.delivery import Reply
from da.bot.slack.room import Room, room_of
from da.queue import errors as queue_errors
from da.queue.models import Task

logger = logging.getLogger(__name__)
# The private lists a card can be drawn in, redrawn after a click.
LISTS = ("review", "failures")
# Which field each suggestion menu changes, and the status each resolve button sets, by action id.
MENU_FIELDS = {action_id: name for name, action_id in ids.SUGGEST_MENUS.items()}
RESOLVE_STATUS = {action_id: status for status, action_id in ids.RESOLVE.items()}


def register(app: AsyncApp) -> None:
    app.action(ids.SUGGEST_CONFIRM)(confirm_suggestion)
    app.action(ids.SUGGEST_CANCEL)(cancel_suggestion)
    for action_id in MENU_FIELDS:
        app.action(action_id)(change_suggestion)
    for action_id in RESOLVE_STATUS:
        app.action(action_id)(resolve_task)
    app.action(ids.NOTE_OPEN)(open_note)
    app.action(ids.CANCEL_TASK)(cancel_task)
    app.action(ids.BULK_CONFIRM)(confirm_bulk)
    app.action(ids.BULK_CANCEL)(cancel_bulk)
    app.action(ids.OPEN_REVIEW)(open_review)


async def acting(ack: AsyncAck, body: dict[str, Any], context: AsyncBoltContext) -> tuple[Room, Reply, str] | None:
    """Ack the click; the room, a reply to the clicker and who they are, or None (after telling
    them why) when they may not change state."""
    await ack()
    room = room_of(context)
    reply = room.reply_to(body)
    user = body["user"]["id"]
    return None if await room.refused(user, reply) else (room, reply, user)


def value_of(action: Mapping[str, Any]) -> dict[str, Any]:
    try:
        value = json.loads(action.get("value") or "{}")
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


async def confirm_suggestion(ack: AsyncAck, body: dict[str, Any], action: dict[str, Any],
                             context: AsyncBoltContext) -> None:
    acted = await acting(ack, body, context)
    if acted is None:
        return
    room, reply, user = acted
    token = value_of(action).get("t", "")
    entry = room.suggestions.pop(token, None)
    if entry is None:
        await reply.send("This suggestion was already confirmed or cancelled.")
        return
    suggestion, view = entry
    request = dataclasses.replace(view.request, created_by=user)
    try:
        created = await room.layer.create(suggestion, request)
    except UsageError as exc:
        await reply.send(blocks.escape(exc.problem), replace=True)
        return
    except queue_errors.QueueError as exc:
        room.suggestions[token] = entry
        await reply.send(room.queue_error(exc))
        return
    if isinstance(created, views.Message):
        await reply.send(blocks.escape(created.text), replace=True)
        return
    where = await answering.channel_card(room, created, user, reply.channel or "")
    await reply.send(where or f"Queued `{created.task.short_id}` by <@{user}>.", replace=True)


async def cancel_suggestion(ack: AsyncAck, body: dict[str, Any], action: dict[str, Any],
                            context: AsyncBoltContext) -> None:
    await ack()
    room = room_of(context)
    room.suggestions.pop(value_of(action).get("t", ""), None)
    await room.reply_to(body).send("Cancelled; nothing queued.", replace=True)


async def change_suggestion(ack: AsyncAck, body: dict[str, Any], action: dict[str, Any],
                            context: AsyncBoltContext) -> None:
    """A menu changed machine, agent or type: keep the new choice for Confirm and redraw."""
    await ack()
    room = room_of(context)
    reply = room.reply_to(body)
    token = blocks.suggestion_token(action.get("block_id", ""))
    if token is None or token not in room.suggestions:
        await reply.send("This suggestion is no longer open; run `/da assign` again.")
        return
    suggestion, view = room.suggestions[token]
    field = MENU_FIELDS[action["action_id"]]
    chosen = (action.get("selected_option") or {}).get("value")
    if not chosen:
        return
    changed = dataclasses.replace(suggestion, **{field: chosen}, reason=f"{suggestion.reason}; {field} chosen by hand")
    new_view = dataclasses.replace(view, suggestion=changed)
    room.suggestions[token] = (changed, new_view)
    text, drawn = blocks.render(new_view)
    await reply.send(text, drawn, replace=True)


async def resolve_task(ack: AsyncAck, body: dict[str, Any], action: dict[str, Any],
                       context: AsyncBoltContext) -> None:
    acted = await acting(ack, body, context)
    if acted is None:
        return
    room, reply, user = acted
    value = value_of(action)
    await resolve(room, body, reply, value.get("id", ""), RESOLVE_STATUS[action["action_id"]],
                  listed_in=value.get("in"), user=user)


async def resolve(room: Room, body: Mapping[str, Any], reply: Reply, task_id: str, status: str, *,
                  listed_in: str | None, user: str, notes: str | None = None) -> None:
    """Resolve from a card, then redraw where the click came from with who did what."""
    try:
        task = await room.layer.client.resolve(task_id, status, notes=notes, by=user)
    except queue_errors.Conflict as exc:
        await reply.send(f"Nothing changed: {blocks.escape(exc.detail)}")
        return
    except queue_errors.QueueError as exc:
        await reply.send(room.queue_error(exc))
        return
    outcome = f":ballot_box_with_check: `{task.short_id}` {blocks.OUTCOME_WORDS[status]} by <@{user}>" + (
        f": {blocks.escape(notes)}" if notes else "")
    text, drawn = await settled_view(room, task, outcome, listed_in)
    await room.redraw(body, reply, text, drawn)


async def settled_view(room: Room, task: Task, outcome: str, listed_in: str | None) -> tuple[str, list[Block]]:
    """The private list a card was in, rebuilt from the queue under the outcome; else the card settled."""
    if listed_in in LISTS:
        try:
            listing = await room.layer.run(grammar.parse(listed_in))
        except UsageError:
            listing = None
        if isinstance(listing, views.TaskList):
            _, drawn = blocks.task_list(listing, above=[ContextBlock(block_id="outcome",
                                                                     elements=[blocks.md(outcome)])])
            return outcome, drawn
    return outcome, blocks.settled_card(task, outcome)


async def open_note(ack: AsyncAck, body: dict[str, Any], action: dict[str, Any], client: AsyncWebClient,
                    context: AsyncBoltContext) -> None:
    """Open the note modal; it remembers where the click came from, to answer there after Submit."""
    acted = await acting(ack, body, context)
    if acted is None:
        return
    _, reply, _ = acted
    value = value_of(action)
    container = body.get("container") or {}
    origin = {"channel": container.get("channel_id", ""), "url": body.get("response_url", ""),
              "in": value.get("in") or ""}
    if not container.get("is_ephemeral"):
        origin["ts"] = container.get("message_ts", "")
    task_id = value.get("id", "")
    try:
        await client.views_open(trigger_id=body["trigger_id"], view=blocks.note_modal(task_id, task_id[:8], origin))
    except delivery.FAILURES as exc:
        logger.warning("views.open for a note failed (%s)", delivery.problem(exc))
        await reply.send(f"Slack would not open the note form ({delivery.problem(exc)}); click Add note… again.")


async def cancel_task(ack: AsyncAck, body: dict[str, Any], action: dict[str, Any],
                      context: AsyncBoltContext) -> None:
    acted = await acting(ack, body, context)
    if acted is None:
        return
    room, reply, user = acted
    try:
        task = await room.layer.client.cancel(value_of(action).get("id", ""), by=user)
    except queue_errors.QueueError as exc:
        await reply.send(f"Nothing changed: {room.queue_error(exc)}")
        return
    text, card = blocks.render(views.Created(task))
    card.append(ContextBlock(block_id="outcome", elements=[blocks.md(f"cancelled by <@{user}>")]))
    await room.redraw(body, reply, text, card)


async def confirm_bulk(ack: AsyncAck, body: dict[str, Any], action: dict[str, Any],
                       context: AsyncBoltContext) -> None:
    """Resolve exactly the tasks the confirmation listed, once."""
    acted = await acting(ack, body, context)
    if acted is None:
        return
    room, reply, user = acted
    token = value_of(action).get("t", "")
    pending = room.state.confirmations.take(token)
    if pending is None:
        await reply.send("This confirmation is no longer open (it was used or cancelled); run "
                         "`/da resolve all` again to see what it would change now.")
        return
    try:
        done = await room.layer.resolve_exact(pending.task_ids, pending.status, user=user)
    except queue_errors.QueueError as exc:
        room.state.confirmations.put_back(token, pending)  # nothing or part was done; Confirm again finishes the rest
        await reply.send(room.queue_error(exc))
        return
    text, _ = blocks.render(done)
    await reply.send(f"{text} (by <@{user}>)", replace=True)


async def cancel_bulk(ack: AsyncAck, body: dict[str, Any], action: dict[str, Any],
                      context: AsyncBoltContext) -> None:
    await ack()
    room = room_of(context)
    room.state.confirmations.take(value_of(action).get("t", ""))
    await room.reply_to(body).send("Cancelled; nothing changed.", replace=True)


async def open_review(ack: AsyncAck, body: dict[str, Any], action: dict[str, Any],
                      context: AsyncBoltContext) -> None:
    """The Review button of a burst summary: the list, privately, for the clicker."""
    await ack()
    room = room_of(context)
    kind = value_of(action).get("kind")
    view = await room.layer.run(grammar.parse(kind if kind in LISTS else "review"))
    text, drawn = blocks.render(view)
    await room.reply_to(body).send(text, drawn)
