"""Buttons and menus: confirm or change a suggestion, resolve, add a note, cancel, bulk resolve.

Each click changes something once; a second click on a settled task says who settled it.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from slack_bolt.async_app import AsyncApp

from da.bot import views
from da.bot.grammar import UsageError
from da.bot.slack import blocks
from da.bot.slack.room import Room, room_of
from da.queue import errors as queue_errors

SUGGESTION_MENUS = ("machine", "agent", "type")


def register(app: AsyncApp) -> None:
    app.action("suggest_confirm")(confirm_suggestion)
    app.action("suggest_cancel")(cancel_suggestion)
    for name in SUGGESTION_MENUS:
        app.action(f"suggest_{name}")(change_suggestion)
    for action_id in blocks.RESOLVE_ACTIONS:
        app.action(action_id)(resolve_task)
    app.action("note_open")(open_note)
    app.action("cancel_task")(cancel_task)
    app.action("bulk_confirm")(confirm_bulk)
    app.action("bulk_cancel")(cancel_bulk)


async def acting_room(ack: Any, body: dict[str, Any], respond: Any, context: Any) -> Room | None:
    """Ack the click; the Room when the clicker may change state, else None (after telling them why)."""
    await ack()
    room = room_of(context)
    return None if await room.refused(body, respond) else room


async def confirm_suggestion(ack: Any, body: dict[str, Any], action: dict[str, Any], respond: Any,
                             context: Any) -> None:
    room = await acting_room(ack, body, respond, context)
    if room is None:
        return
    user = body["user"]["id"]
    token = json.loads(action["value"])["t"]
    entry = room.suggestions.pop(token, None)
    if entry is None:
        await respond(text="This suggestion was already confirmed or cancelled.", replace_original=False,
                      response_type="ephemeral")
        return
    suggestion, view = entry
    request = dataclasses.replace(view.request, created_by=user)
    try:
        created = await room.layer.create(suggestion, request)
    except UsageError as exc:
        await respond(text=exc.problem, replace_original=True)
        return
    except queue_errors.QueueError as exc:
        room.suggestions[token] = entry
        await respond(text=room.queue_error(exc), replace_original=False, response_type="ephemeral")
        return
    if isinstance(created, views.Message):
        await respond(text=created.text, replace_original=True)
        return
    await respond(text=f"Queued `{created.task.short_id}` by <@{user}>.", replace_original=True)
    channel = (body.get("channel") or {}).get("id") or room.settings.notify_channel
    if channel:
        await room.post_card(channel, created)


async def cancel_suggestion(ack: Any, action: dict[str, Any], respond: Any, context: Any) -> None:
    await ack()
    room_of(context).suggestions.pop(json.loads(action["value"])["t"], None)
    await respond(text="Cancelled; nothing queued.", replace_original=True)


async def change_suggestion(ack: Any, body: dict[str, Any], action: dict[str, Any], respond: Any,
                            context: Any) -> None:
    """A menu changed machine, agent or type: keep the new choice for Confirm."""
    await ack()
    room = room_of(context)
    token = None
    for block in body.get("message", {}).get("blocks", []):
        for element in block.get("elements", []) if isinstance(block, dict) else []:
            if element.get("action_id") == "suggest_confirm":
                token = json.loads(element["value"])["t"]
    if token is None or token not in room.suggestions:
        await respond(text="This suggestion is no longer open.", replace_original=False, response_type="ephemeral")
        return
    suggestion, view = room.suggestions[token]
    field = action["action_id"].removeprefix("suggest_")
    changed = dataclasses.replace(suggestion, **{field: action["selected_option"]["value"]},
                                  reason=f"{suggestion.reason}; {field} set by <@{body['user']['id']}>")
    new_view = dataclasses.replace(view, suggestion=changed)
    room.suggestions[token] = (changed, new_view)
    text, drawn = blocks.render(new_view)
    await respond(text=text, blocks=[b.to_dict() for b in drawn], replace_original=True)


async def resolve_task(ack: Any, body: dict[str, Any], action: dict[str, Any], respond: Any, context: Any) -> None:
    room = await acting_room(ack, body, respond, context)
    if room is None:
        return
    await resolve(room, body, respond, json.loads(action["value"])["id"], blocks.RESOLVE_ACTIONS[action["action_id"]])


async def resolve(room: Room, body: dict[str, Any], respond: Any, task_id: str, status: str) -> None:
    """Resolve from a card and replace that card with who did what."""
    user = body["user"]["id"]
    try:
        task = await room.layer.client.resolve(task_id, status, by=user)
    except queue_errors.Conflict as exc:
        await respond(text=f"Nothing changed: {exc.detail}", response_type="ephemeral", replace_original=False)
        return
    except queue_errors.QueueError as exc:
        await respond(text=room.queue_error(exc), response_type="ephemeral", replace_original=False)
        return
    outcome = f":ballot_box_with_check: `{task.short_id}` {blocks.OUTCOME_WORDS[status]} by <@{user}>"
    message_blocks = body.get("message", {}).get("blocks")
    if message_blocks is not None:
        new_blocks = blocks.replace_task(message_blocks, task.id, [blocks.outcome_block(task.id, outcome)])
        await room.replace(body, respond, outcome, new_blocks)
    else:
        await room.web.chat_postMessage(channel=body.get("origin_channel") or room.settings.notify_channel,
                                        text=outcome)


async def open_note(ack: Any, body: dict[str, Any], action: dict[str, Any], context: Any) -> None:
    await ack()
    room = room_of(context)
    user = body["user"]["id"]
    task_id = json.loads(action["value"])["id"]
    container = body.get("container") or {}
    origin = {"channel": container.get("channel_id", ""), "ts": container.get("message_ts", ""),
              "response_url": body.get("response_url", "")}
    if not room.allowed(user):
        await room.web.chat_postEphemeral(channel=origin["channel"] or room.settings.notify_channel, user=user,
                                          text=room.refusal(user))
        return
    await room.web.views_open(trigger_id=body["trigger_id"], view=blocks.note_modal(task_id, task_id[:8], origin))


async def cancel_task(ack: Any, body: dict[str, Any], action: dict[str, Any], respond: Any, context: Any) -> None:
    room = await acting_room(ack, body, respond, context)
    if room is None:
        return
    user = body["user"]["id"]
    try:
        task = await room.layer.client.cancel(json.loads(action["value"])["id"], by=user)
    except queue_errors.QueueError as exc:
        await respond(text=f"Nothing changed: {exc.detail}", response_type="ephemeral", replace_original=False)
        return
    text, card = blocks.render(views.Created(task))
    card.append(blocks.ContextBlock(elements=[blocks.md(f"cancelled by <@{user}>")]))
    await room.replace(body, respond, text, card)


async def confirm_bulk(ack: Any, body: dict[str, Any], action: dict[str, Any], respond: Any, context: Any) -> None:
    room = await acting_room(ack, body, respond, context)
    if room is None:
        return
    user = body["user"]["id"]
    value = json.loads(action["value"])
    if value["t"] in room.state.handled_bulk:
        await respond(text="Already done.", response_type="ephemeral", replace_original=False)
        return
    room.state.handled_bulk.add(value["t"])
    try:
        done = await room.layer.resolve_all(value["from"], value["to"], user=user)
    except queue_errors.QueueError as exc:
        room.state.handled_bulk.discard(value["t"])
        await respond(text=room.queue_error(exc), response_type="ephemeral", replace_original=False)
        return
    await respond(text=f"{done.count} task(s) moved from {done.from_status} to {done.status} by <@{user}>.",
                  replace_original=True)


async def cancel_bulk(ack: Any, respond: Any) -> None:
    await ack()
    await respond(text="Cancelled; nothing changed.", replace_original=True)
