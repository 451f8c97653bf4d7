"""Modal submissions: the "Add note…" modal resolves a task with the note.

A view submission has no response_url; the modal carries the click's own (and the message's
ts when it was a channel message), so the answer lands where the click came from.
"""

from __future__ import annotations

import json
from typing import Any

from slack_bolt.async_app import AsyncAck, AsyncApp, AsyncBoltContext

from da.bot.slack import ids
from da.bot.slack.listeners.actions import resolve
from da.bot.slack.room import room_of


def register(app: AsyncApp) -> None:
    app.view(ids.NOTE_SUBMIT)(submit_note)


async def submit_note(ack: AsyncAck, body: dict[str, Any], view: dict[str, Any], context: AsyncBoltContext) -> None:
    room = room_of(context)
    user = body["user"]["id"]
    if not room.allowed(user):
        await ack(response_action="errors", errors={"note": room.refusal(user)})
        return
    await ack()
    meta = json.loads(view.get("private_metadata") or "{}")
    values = view["state"]["values"]
    note = values["note"]["text"]["value"]
    status = values["status"]["choice"]["selected_option"]["value"]
    channel = meta.get("channel") or room.settings.notify_channel
    reply = room.poster.reply_to(user, url=meta.get("url") or None, channel=channel)
    # The clicked message, as `redraw` expects it: a channel message by its ts, else ephemeral.
    origin = {"container": {"channel_id": channel, "message_ts": meta.get("ts", ""),
                            "is_ephemeral": not meta.get("ts")}}
    await resolve(room, origin, reply, meta["id"], status, listed_in=meta.get("in") or None, user=user, notes=note)
