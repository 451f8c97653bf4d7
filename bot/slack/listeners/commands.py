"""`/da`: the terminal's grammar in Slack, answered ephemerally (a new task's card is posted).

Slack sends the command text with & < > escaped; it is unescaped here, once, so a prompt
reaches its task as the person typed it.
"""

from __future__ import annotations

from typing import Any

from slack_bolt.async_app import AsyncApp

from da.bot import grammar, views
from da.bot.grammar import UsageError
from da.bot.slack import blocks
from da.bot.slack.room import room_of

# Verbs that stream output or ask questions: they need a terminal.
TERMINAL_ONLY_SKILLS = ("install", "create")


def register(app: AsyncApp) -> None:
    app.command("/da")(da_command)


async def da_command(ack: Any, command: dict[str, Any], context: Any) -> None:
    """Ack at once, check who may change state, run the verb and draw its view."""
    await ack()
    room = room_of(context)
    reply = room.reply_to(command)
    user, channel = command.get("user_id", ""), command.get("channel_id", "")
    try:
        parsed = grammar.parse(blocks.unescape(command.get("text", "")), allow_local=False)
    except UsageError as exc:
        await reply.send(usage_answer(exc))
        return
    if parsed.changes_state and await room.refused(user, reply):
        return
    if parsed.verb == "skills" and parsed.words and parsed.words[0] in TERMINAL_ONLY_SKILLS:
        await reply.send(f"`skills {blocks.escape(parsed.words[0])}` streams or asks questions: run it with `da` "
                         "in a terminal.")
        return
    try:
        view = await room.layer.run(parsed, user=user)
    except UsageError as exc:
        await reply.send(usage_answer(exc))
        return
    if isinstance(view, views.Created):
        where = await room.post_card(channel, view, user)
        if where:
            await reply.send(where)
        return
    if isinstance(view, views.SuggestionView):
        view = room.remember(view)
    if isinstance(view, views.BulkPreview):
        text, drawn = blocks.bulk_preview(view, room.remember_bulk(view) if view.count else "")
    else:
        text, drawn = blocks.render(view)
    if isinstance(view, views.FleetStatus) and room.missing_scopes:
        drawn = [*drawn, blocks.missing_scopes_note(room.missing_scopes)]
    await reply.send(text, drawn)


def usage_answer(exc: UsageError) -> str:
    """The problem and the verb's usage line; both may quote what was typed, so both are escaped."""
    return f"{blocks.escape(exc.problem)}\nusage: `/da {blocks.escape(exc.usage)}`"
