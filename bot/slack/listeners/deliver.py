"""A result's Push and Open pull request buttons: the work of a finished agent task delivered after the fact.

Each click runs the `push` verb (a `deliver` task on the machine holding the worktree, waited for, the clicker
told privately meanwhile); only
SLACK_ALLOWED_USERS may, as for every button that changes state. The outcome (pushed, the PR/MR URL, or the
one sentence saying what to install or run) goes in the task's thread for everyone, and the result is redrawn
from the queue; a refusal before anything was queued (already has a PR, nothing changed) goes to the clicker.
"""

from __future__ import annotations

import asyncio
from typing import Any

from slack_bolt.async_app import AsyncAck, AsyncApp, AsyncBoltContext

from da.bot import grammar, views
from da.bot.commands import Origin
from da.bot.slack import answer, blocks, ids
from da.bot.slack.listeners.actions import acting, value_of


def register(app: AsyncApp) -> None:
    app.action(ids.WORKSPACE_PUSH)(deliver)
    app.action(ids.WORKSPACE_OPEN_PR)(deliver)


async def deliver(ack: AsyncAck, body: dict[str, Any], action: dict[str, Any], context: AsyncBoltContext) -> None:
    acted = await acting(ack, body, context)
    if acted is None:
        return
    room, reply, user = acted
    flags = frozenset({"pr"}) if action.get("action_id") == ids.WORKSPACE_OPEN_PR else frozenset()
    task_id = str(value_of(action).get("id", ""))
    container = body.get("container") or {}
    channel = str(container.get("channel_id") or "")
    thread = str((body.get("message") or {}).get("thread_ts") or container.get("message_ts") or "") or None
    told: list[asyncio.Task[bool]] = []
    # The push verb says when it has queued the push and waits: the clicker hears it privately at once.
    view = await room.layer.run(grammar.Command("push", (task_id,), flags=flags), user=user,
                                emit=lambda line: told.append(asyncio.ensure_future(reply.send(blocks.escape(line)))),
                                origin=Origin(thread_url=room.poster.thread_link(channel, thread)))
    await asyncio.gather(*told)
    if not isinstance(view, views.Pushed) or view.task is None:
        text = view.text if isinstance(view, views.Message) else "Nothing was pushed."
        await reply.send(blocks.escape(text))
        return
    mark = ":white_check_mark:" if view.ok else ":warning:"
    if not channel or not await room.poster.say(channel, thread, f"{mark} {blocks.escape(view.text)} (<@{user}>)"):
        await reply.send(blocks.escape(view.text))
    await room.redraw(body, reply, *answer.drawn(view.task))
