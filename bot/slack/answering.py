"""The one path from a request to its answer, for `/da`, a mention, a DM and the New task form:
parse, check permission, run, render, post.

Only where the answer goes differs by surface (an `Outlet`): `/da` answers privately through
its response_url and posts a new task's card in the channel (else the notify channel); a
mention or a DM answers in the message's thread, where the card of a new task starts the
conversation with its agent; the form answers in the thread of the message it was opened from
(else in the person's DM, saying why).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Protocol

from slack_sdk.models.blocks import Block

from da.bot import grammar, views
from da.bot.commands import Origin
from da.bot.grammar import UsageError
from da.bot.slack import attachments, blocks
from da.bot.slack.asked import Asked, Surface
from da.bot.slack.room import Room

# Verbs that stream output or ask questions: they need a terminal.
TERMINAL_ONLY_SKILLS = ("install", "create")
# A mention or a DM that says nothing.
NOTHING_SAID = "Tell me what to do: `@da fix the flaky login test`, or `@da help` for the commands."


class Outlet(Protocol):
    """Where a surface's answers go."""

    async def say(self, text: str, drawn: list[Block] | None = None) -> None:
        """The answer, for the asker (and whoever shares the thread)."""

    async def privately(self, text: str) -> None:
        """A refusal, for the asker alone."""

    async def card(self, view: views.Created) -> None:
        """A new task's card."""


async def answer(room: Room, asked: Asked) -> None:
    """Parse, check permission, run, render and post the answer to one request."""
    outlet = outlet_for(room, asked)
    command = await parse(asked, outlet)
    if command is None:
        return
    if command.changes_state and not room.allowed(asked.user):
        await outlet.privately(room.refusal(asked.user))
        return
    if command.verb == "skills" and command.words and command.words[0] in TERMINAL_ONLY_SKILLS:
        await outlet.say(f"`skills {blocks.escape(command.words[0])}` streams or asks questions: run it with `da` "
                         "in a terminal.")
        return
    brought: tuple[dict[str, Any], ...] = ()
    if asked.files:
        if command.verb != "assign":
            await outlet.say("Files go with a new task: attach them to the request itself, e.g. "
                             "`@da summarise this log`.")
            return
        try:
            brought = tuple(await room.files.fetch(await room.files.checked(asked.files)))
        except attachments.FileRefused as exc:
            await outlet.say(f"<@{asked.user}> nothing was started: {blocks.escape(exc.sentence)}")
            return
    try:
        origin = Origin(brought, room.poster.thread_link(asked.channel, asked.root))
        view = await room.layer.run(command, user=asked.user, origin=origin)
    except UsageError as exc:
        await outlet.say(usage_answer(exc, asked.surface))
        return
    if isinstance(view, views.Created):
        await outlet.card(view)
        return
    text, drawn = draw(room, view)
    await outlet.say(text, drawn)


async def parse(asked: Asked, outlet: Outlet) -> grammar.Command | None:
    """The command asked for (None after saying what is wrong). In a mention or a DM a plain prompt is
    an `assign`, and an assign there or in the form is queued at once (no suggestion to confirm)."""
    if isinstance(asked.said, grammar.Command):
        return asked.said
    text = asked.said
    conversational = asked.surface in (Surface.MENTION, Surface.DM)
    if conversational:
        if not text:
            await outlet.say(NOTHING_SAID)
            return None
        if text.split(maxsplit=1)[0].lower() not in grammar.VERBS:
            text = f"assign {text}"
    try:
        command = grammar.parse(text, allow_local=False)
    except UsageError as exc:
        await outlet.say(usage_answer(exc, asked.surface))
        return None
    if conversational and command.verb == "assign":
        command = dataclasses.replace(command, flags=command.flags | {"yes"})
    return command


def draw(room: Room, view: views.View) -> blocks.Drawn:
    """The view as Block Kit, with what its buttons need kept for their click."""
    if isinstance(view, views.SuggestionView):
        view = room.remember(view)
    if isinstance(view, views.BulkPreview):
        token = room.state.confirmations.keep(view.status, list(view.task_ids)) if view.count else ""
        return blocks.bulk_preview(view, token)
    text, drawn = blocks.render(view)
    if isinstance(view, views.FleetStatus) and room.missing_scopes:
        drawn = [*drawn, blocks.missing_scopes_note(room.missing_scopes)]
    return text, drawn


def usage_answer(exc: UsageError, surface: Surface) -> str:
    """The problem and the verb's usage line; both may quote what was typed, so both are escaped."""
    prefix = "@da" if surface in (Surface.MENTION, Surface.DM) else "/da"
    return f"{blocks.escape(exc.problem)}\nusage: `{prefix} {blocks.escape(exc.usage)}`"


def outlet_for(room: Room, asked: Asked) -> Outlet:
    if asked.surface is Surface.SLASH:
        return SlashOutlet(room, asked)
    if asked.surface is Surface.FORM:
        return FormOutlet(room, asked)
    return ThreadOutlet(room, asked)


class SlashOutlet:
    """`/da`: answers through the command's response_url; a card in the channel, else the notify channel."""

    def __init__(self, room: Room, asked: Asked) -> None:
        self.room = room
        self.asked = asked
        self.reply = asked.reply or room.poster.reply_to(asked.user, url=None, channel=asked.channel)

    async def say(self, text: str, drawn: list[Block] | None = None) -> None:
        await self.reply.send(text, drawn)

    async def privately(self, text: str) -> None:
        await self.reply.send(text)

    async def card(self, view: views.Created) -> None:
        where = await channel_card(self.room, view, self.asked.user, self.asked.channel)
        if where:
            await self.reply.send(where)


async def channel_card(room: Room, view: views.Created, requester: str, channel: str) -> str:
    """Post a task's card in `channel`, else the notify channel. Returns what to tell the requester: ""
    when the card is where they asked, else where it is or why it could not be posted (queued either way)."""
    card, refused = await room.poster.card(view, requester, [(channel, None), (room.settings.notify_channel, None)])
    short = f"`{view.task.short_id}`"
    if card is None:
        return (f"Queued {short}, but I could not post its card ({', '.join(refused) or 'no channel'}); "
                f"`/da show {view.task.short_id}` shows how it is doing.")
    if card.channel != channel and refused:
        return (f"Queued {short}. I cannot post in this channel ({refused[0]}; `/invite @da` to let me), so its "
                f"card is in <#{card.channel}>.")
    return ""


class ThreadOutlet:
    """A mention or a DM: answers in the message's thread; a new task's card there starts the conversation."""

    def __init__(self, room: Room, asked: Asked) -> None:
        self.room = room
        self.asked = asked
        self.root = asked.root

    async def say(self, text: str, drawn: list[Block] | None = None) -> None:
        await self.room.poster.say(self.asked.channel, self.root, text, drawn)

    async def privately(self, text: str) -> None:
        await self.room.poster.say_privately(self.asked.channel, self.root, self.asked.user, text)

    async def card(self, view: views.Created) -> None:
        card, _ = await self.room.poster.card(view, self.asked.user, [(self.asked.channel, self.root)])
        if card is not None:
            self.room.conversations.begin(card, view.task)


class FormOutlet(ThreadOutlet):
    """The New task form: answers in the thread it was opened from, else (no thread, or da cannot post
    there) in the person's DM."""

    async def say(self, text: str, drawn: list[Block] | None = None) -> None:
        if not self.root or not await self.room.poster.say(self.asked.channel, self.root, text, drawn):
            await self.room.poster.tell(self.asked.user, text)

    async def privately(self, text: str) -> None:
        await self.room.poster.tell(self.asked.user, text)

    async def card(self, view: views.Created) -> None:
        poster, user = self.room.poster, self.asked.user
        card, _ = await poster.card(view, user, [(self.asked.channel, self.root)])
        if card is None and self.root:
            await poster.tell(user, f"da cannot post in the conversation that message is in (it is not a member "
                                    f"there), so the card of `{view.task.short_id}` is here and its thread is the "
                                    "conversation with the agent.")
            card, _ = await poster.card(view, user, [(user, None)])
        if card is not None:
            self.room.conversations.begin(card, view.task)
