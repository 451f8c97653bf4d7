"""Modal submissions: the "Add note…" modal resolves a task with the note."""

from __future__ import annotations

import json
from typing import Any

from slack_bolt.async_app import AsyncApp

from da.bot.slack import blocks
from da.bot.slack.room import room_of
from da.queue import errors as queue_errors


def register(app: AsyncApp) -> None:
    app.view("note_submit")(submit_note)


async def submit_note(ack: Any, body: dict[str, Any], view: dict[str, Any], context: Any) -> None:
    await ack()
    room = room_of(context)
    meta = json.loads(view.get("private_metadata") or "{}")
    values = view["state"]["values"]
    note = values["note"]["text"]["value"]
    status = values["status"]["choice"]["selected_option"]["value"]
    user = body["user"]["id"]
    channel = meta.get("channel") or room.settings.notify_channel
    if not room.allowed(user):
        return
    try:
        task = await room.layer.client.resolve(meta["id"], status, notes=note, by=user)
    except queue_errors.QueueError as exc:
        await room.web.chat_postEphemeral(channel=channel, user=user, text=f"Nothing changed: {exc.detail}")
        return
    outcome = f":ballot_box_with_check: `{task.short_id}` {blocks.OUTCOME_WORDS[status]} by <@{user}>: {note}"
    if meta.get("ts") and channel:
        history = [blocks.outcome_block(task.id, outcome).to_dict()]
        await room.web.chat_update(channel=channel, ts=meta["ts"], text=outcome, blocks=history)
    elif channel:
        await room.web.chat_postMessage(channel=channel, text=outcome)
