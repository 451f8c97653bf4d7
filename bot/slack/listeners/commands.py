"""`/da`: the terminal's grammar in Slack, answered ephemerally (a new task's card is posted)."""

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


async def da_command(ack: Any, command: dict[str, Any], respond: Any, context: Any) -> None:
    """Ack at once, check who may change state, run the verb and draw its view."""
    await ack()
    room = room_of(context)
    user, channel = command.get("user_id", ""), command.get("channel_id", "")
    try:
        parsed = grammar.parse(command.get("text", ""), allow_local=False)
    except UsageError as exc:
        await respond(text=f"{exc.problem}\nusage: `/da {exc.usage}`", response_type="ephemeral")
        return
    if parsed.changes_state and not room.allowed(user):
        await respond(text=room.refusal(user), response_type="ephemeral")
        return
    if parsed.verb == "skills" and parsed.words and parsed.words[0] in TERMINAL_ONLY_SKILLS:
        await respond(text=f"`skills {parsed.words[0]}` streams or asks questions: run it with `da` in a "
                      "terminal.", response_type="ephemeral")
        return
    try:
        view = await room.layer.run(parsed, user=user)
    except UsageError as exc:
        await respond(text=f"{exc.problem}\nusage: `/da {exc.usage}`", response_type="ephemeral")
        return
    if isinstance(view, views.Created):
        await room.post_card(channel, view)
        return
    if isinstance(view, views.SuggestionView):
        view = room.remember(view)
    text, drawn = blocks.render(view)
    await respond(text=text, blocks=drawn, response_type="ephemeral")
