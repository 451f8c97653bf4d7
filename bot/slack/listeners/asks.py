"""An agent's asks answered from their cards: an option's button, or "With a note…" and its modal.

Only the person who started the task and SLACK_APPROVERS may answer; others are refused privately.
The queue keeps the first answer from anywhere (Slack, terminal, API): the card is redrawn with who
answered, and a late click is told who was first.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from slack_bolt.async_app import AsyncAck, AsyncApp, AsyncBoltContext
from slack_sdk.web.async_client import AsyncWebClient

from da.bot.slack import answer as answer_drawing
from da.bot.slack import asking, delivery, ids
from da.bot.slack.delivery import Reply
from da.bot.slack.listeners.actions import value_of
from da.bot.slack.room import Room, room_of
from da.queue import errors as queue_errors


def register(app: AsyncApp) -> None:
    for action_id in ids.ASK_ANSWERS:
        app.action(action_id)(answer_ask)
    app.action(ids.ASK_NOTE)(open_ask_note)
    app.view(ids.ASK_NOTE_SUBMIT)(submit_ask_note)
    app.action(ids.WORKSPACE_DIFF)(post_diff)
    app.action(ids.OPEN_PULL_REQUEST)(open_pull_request)


async def post_diff(ack: AsyncAck, body: dict[str, Any], action: dict[str, Any], context: AsyncBoltContext) -> None:
    """The Diff button of a result: the agent's diff as a file in the thread."""
    await ack()
    room = room_of(context)
    reply = room.reply_to(body)
    task_id = str(value_of(action).get("id", ""))
    try:
        task = await room.layer.client.get_task(task_id)
    except queue_errors.QueueError as exc:
        await reply.send(f"No diff: {room.queue_error(exc)}")
        return
    if not answer_drawing.diff_of(task):
        await reply.send(f"Task {task.short_id} left no diff.")
        return
    container = body.get("container") or {}
    channel = str(container.get("channel_id") or "")
    thread = str((body.get("message") or {}).get("thread_ts") or container.get("message_ts") or "")
    await room.poster.attach(channel, thread or None, answer_drawing.diff_file(task), task.short_id)


async def open_pull_request(ack: AsyncAck) -> None:
    """A link button: Slack opens the pull request; the click only needs its ack."""
    await ack()


def refusal(room: Room, task_id: str) -> str:
    card = room.state.cards.get(task_id)
    who = f"<@{card.requester}>" if card is not None and card.requester else "whoever started the task"
    return f"Only {who} and SLACK_APPROVERS may answer this agent; ask whoever runs da to add you to SLACK_APPROVERS."


async def answer_ask(ack: AsyncAck, body: dict[str, Any], action: dict[str, Any], context: AsyncBoltContext) -> None:
    await ack()
    room = room_of(context)
    chosen = value_of(action)
    await answer(room, body, room.reply_to(body), body["user"]["id"], chosen, note=None)


async def answer(room: Room, clicked: Mapping[str, Any], reply: Reply, user: str, chosen: Mapping[str, Any], *,
                 note: str | None) -> None:
    """Answer an ask once: the card redrawn for everyone, or the clicker told why not."""
    task_id, ask_id, option = str(chosen.get("task", "")), int(chosen.get("ask", 0) or 0), str(chosen.get("option"))
    if not await room.may_answer(user, task_id):
        await reply.send(refusal(room, task_id))
        return
    client = room.layer.client
    try:
        ask = await client.answer_ask(task_id, ask_id, option, note=note, by=user)
    except queue_errors.Conflict:
        found = next((a for a in await client.asks(task_id) if a.id == ask_id), None)
        if found is None:
            await reply.send("That ask is gone.")
            return
        await reply.send(asking.answered_line(found))
        await room.redraw(clicked, reply, *asking.settled(found))
        return
    except queue_errors.QueueError as exc:
        await reply.send(f"Nothing changed: {room.queue_error(exc)}")
        return
    await room.redraw(clicked, reply, *asking.settled(ask))


async def open_ask_note(ack: AsyncAck, body: dict[str, Any], action: dict[str, Any], client: AsyncWebClient,
                        context: AsyncBoltContext) -> None:
    await ack()
    room = room_of(context)
    reply = room.reply_to(body)
    user = body["user"]["id"]
    chosen = value_of(action)
    task_id, ask_id = str(chosen.get("task", "")), int(chosen.get("ask", 0) or 0)
    if not await room.may_answer(user, task_id):
        await reply.send(refusal(room, task_id))
        return
    try:
        ask = next((a for a in await room.layer.client.asks(task_id) if a.id == ask_id), None)
    except queue_errors.QueueError as exc:
        await reply.send(f"Nothing changed: {room.queue_error(exc)}")
        return
    option = asking.refusal_option(ask) if ask is not None else None
    if ask is None or option is None:
        await reply.send("That ask is gone.")
        return
    if ask.status != "open":
        await reply.send(asking.answered_line(ask))
        return
    container = body.get("container") or {}
    origin = {"channel": str(container.get("channel_id") or ""), "ts": str(container.get("message_ts") or ""),
              "url": str(body.get("response_url") or "")}
    try:
        await client.views_open(trigger_id=body["trigger_id"], view=asking.note_modal(ask, option, origin))
    except delivery.FAILURES as exc:
        await reply.send(f"Slack would not open the note form ({delivery.problem(exc)}); click it again.")


async def submit_ask_note(ack: AsyncAck, body: dict[str, Any], view: dict[str, Any],
                          context: AsyncBoltContext) -> None:
    room = room_of(context)
    user = body["user"]["id"]
    meta = json.loads(view.get("private_metadata") or "{}")
    if not await room.may_answer(user, str(meta.get("task", ""))):
        await ack(response_action="errors", errors={"note": refusal(room, str(meta.get("task", "")))})
        return
    await ack()
    note = view["state"]["values"]["note"]["text"]["value"]
    channel = meta.get("channel") or room.settings.notify_channel
    reply = room.poster.reply_to(user, url=meta.get("url") or None, channel=channel)
    origin = {"container": {"channel_id": channel, "message_ts": meta.get("ts", ""),
                            "is_ephemeral": not meta.get("ts")}}
    await answer(room, origin, reply, user, meta, note=note)
