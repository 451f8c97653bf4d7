"""The New task form and the App Home tab.

The form opens from the global shortcut, from the message shortcut (its prompt pre-filled with
the message and a link to it, its card then in that message's thread) and from the Home tab's
button. Its submission is checked before the ack, so a mistake shows next to its field in
the form; the task's card goes where the form came from (the user's DM for the global
shortcut, or when da cannot post where the message is), and an agent task's thread is a
conversation like any other.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from slack_bolt.async_app import AsyncAck, AsyncApp, AsyncBoltContext
from slack_sdk.web.async_client import AsyncWebClient

from da.bot import grammar
from da.bot.router import AGENT_RUN, known_agents, known_types, name_errors, validate
from da.bot.slack import answering, blocks, delivery, forms, ids
from da.bot.slack.asked import Asked, Surface
from da.bot.slack.room import Room, room_of
from da.queue import errors as queue_errors

logger = logging.getLogger(__name__)


def register(app: AsyncApp) -> None:
    app.global_shortcut(ids.GLOBAL_SHORTCUT)(new_task_shortcut)
    app.message_shortcut(ids.MESSAGE_SHORTCUT)(send_to_agent)
    app.action(ids.HOME_NEW_TASK)(new_task_shortcut)
    app.view(ids.NEW_TASK_SUBMIT)(submit_new_task)
    app.event("app_home_opened")(home_opened)


async def open_form(room: Room, trigger_id: str, user: str, *, prompt: str = "",
                    origin: dict[str, str] | None = None) -> None:
    """Open the New task form with the fleet's names in its selects (a fleet out of reach leaves them out)."""
    try:
        fleet = await room.layer.fleet()
        names, agents_known, types = fleet.names, known_agents(fleet), known_types(fleet)
    except queue_errors.QueueError as exc:
        logger.warning("the New task form opens without the fleet's names: %s", exc.detail)
        names, agents_known, types = (), (), ()
    view = forms.new_task_modal(tuple(names), agents_known, types, prompt=prompt, origin=origin)
    try:
        await room.web.views_open(trigger_id=trigger_id, view=view.to_dict())
    except delivery.FAILURES as exc:
        logger.warning("opening the New task form for %s failed (%s)", user, delivery.problem(exc))


async def new_task_shortcut(ack: AsyncAck, body: dict[str, Any], context: AsyncBoltContext) -> None:
    await ack()
    await open_form(room_of(context), body["trigger_id"], body["user"]["id"])


async def send_to_agent(ack: AsyncAck, body: dict[str, Any], client: AsyncWebClient,
                        context: AsyncBoltContext) -> None:
    """The message shortcut: the form with the message's text and its link as the prompt."""
    await ack()
    room = room_of(context)
    message = body.get("message") or {}
    channel = (body.get("channel") or {}).get("id", "")
    ts = str(message.get("ts") or body.get("message_ts") or "")
    prompt = blocks.unescape(str(message.get("text") or ""))
    try:
        link = await client.chat_getPermalink(channel=channel, message_ts=ts)
        prompt += f"\n\n(from {link['permalink']})"
    except delivery.FAILURES as exc:
        logger.info("no permalink for the message sent to an agent (%s)", delivery.problem(exc))
    root = str(message.get("thread_ts") or ts)
    await open_form(room, body["trigger_id"], body["user"]["id"], prompt=prompt,
                    origin={"channel": channel, "root": root})


def form_errors(values: dict[str, str], fleet: Any) -> dict[str, str]:
    """Each field's mistake, keyed by its input block, as the form shows them."""
    errors: dict[str, str] = {}
    if not values[forms.PROMPT].strip():
        errors[forms.PROMPT] = "Say what should be done."
    for field, found in ((forms.MACHINE, name_errors(fleet, None, values[forms.MACHINE] or None, None)),
                         (forms.AGENT, name_errors(fleet, None, None, values[forms.AGENT] or None)),
                         (forms.TYPE, name_errors(fleet, values[forms.TYPE] or None, None, None))):
        if found:
            errors[field] = " ".join(found)
    if not errors and values[forms.MACHINE] and values[forms.TYPE]:
        verdict = validate(fleet, values[forms.TYPE], values[forms.MACHINE], values[forms.AGENT] or None)
        if not verdict.ok:
            errors[forms.MACHINE] = " ".join(verdict.errors)
    if values[forms.TYPE] and values[forms.TYPE] != AGENT_RUN and values[forms.AGENT]:
        errors[forms.AGENT] = f"an agent goes with type {AGENT_RUN} only; leave it empty for {values[forms.TYPE]}."
    return {field: blocks.clip(text, 2000) for field, text in errors.items()}


async def submit_new_task(ack: AsyncAck, body: dict[str, Any], view: dict[str, Any],
                          context: AsyncBoltContext) -> None:
    """Check the form (mistakes shown in it), then queue the task and post its card."""
    room = room_of(context)
    user = body["user"]["id"]
    if not room.allowed(user):
        await ack(response_action="errors", errors={forms.PROMPT: room.refusal(user)})
        return
    values = forms.form_values(view)
    try:
        fleet = await room.layer.fleet()
    except queue_errors.QueueError as exc:
        await ack(response_action="errors", errors={forms.PROMPT: f"Nothing queued: {exc.detail}"})
        return
    errors = form_errors(values, fleet)
    if errors:
        await ack(response_action="errors", errors=errors)
        return
    await ack()
    origin = json.loads(view.get("private_metadata") or "{}")
    options = {key: values[field] for key, field in (("machine", forms.MACHINE), ("agent", forms.AGENT),
                                                     ("type", forms.TYPE), ("cwd", forms.FOLDER)) if values[field]}
    command = grammar.Command("assign", tuple(values[forms.PROMPT].split()), options, frozenset({"yes"}),
                              values[forms.PROMPT])
    await answering.answer(room, Asked(user, origin.get("channel") or user, command, Surface.FORM,
                                       root=origin.get("root") or None))


async def home_opened(event: dict[str, Any], context: AsyncBoltContext) -> None:
    if event.get("tab") == "home":
        await room_of(context).publish_home(str(event.get("user", "")))
