"""The New task form (a modal) and the App Home tab, drawn as Block Kit within Slack's limits.

The form is what `/da assign` asks for, as fields: a multi-line prompt, then machine, agent,
type and folder, each optional (the router fills in what is left out). The Home tab shows one
person their running tasks, the ones waiting for them, recent results and the fleet, with the
same buttons as the cards in channels.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import Any

from slack_sdk.models.blocks import (
    ActionsBlock,
    Block,
    ContextBlock,
    DividerBlock,
    HeaderBlock,
    InputBlock,
    Option,
    PlainTextInputElement,
    PlainTextObject,
    SectionBlock,
    StaticSelectElement,
)
from slack_sdk.models.views import View

from da.bot import views
from da.bot.slack import asking, blocks, ids
from da.queue import models
from da.queue.models import Ask, Task

# Slack keeps 3,000 characters in a plain_text_input and 100 options in a select.
MAX_INPUT = 3000
MAX_OPTIONS = 100
# The Home tab lists this many tasks per section (it holds 100 blocks in all).
HOME_TASKS = 5
# Block ids of the form's inputs: the keys of a `response_action: errors` ack.
PROMPT, MACHINE, AGENT, TYPE, FOLDER = "prompt", "machine", "agent", "type", "folder"


def _select(block_id: str, label: str, names: tuple[str, ...]) -> InputBlock:
    options = [Option(text=PlainTextObject(text=blocks.clip(n, 75)), value=n[:150]) for n in names[:MAX_OPTIONS]]
    return InputBlock(block_id=block_id, label=PlainTextObject(text=label), optional=True,
                      hint=PlainTextObject(text="Leave it empty and da picks one."),
                      element=StaticSelectElement(action_id="choice", options=options,
                                                  placeholder=PlainTextObject(text="da picks")))


def new_task_modal(machines: tuple[str, ...], agents: tuple[str, ...], types: tuple[str, ...], *,
                   prompt: str = "", origin: dict[str, str] | None = None) -> View:
    """The New task form; `origin` (channel and thread) says where the task's card goes."""
    text_input = PlainTextInputElement(action_id="text", multiline=True, max_length=MAX_INPUT,
                                       initial_value=prompt[:MAX_INPUT] or None)
    form: list[Block] = [InputBlock(block_id=PROMPT, label=PlainTextObject(text="What should be done?"),
                                    element=text_input)]
    if machines:
        form.append(_select(MACHINE, "Machine", machines))
    if agents:
        form.append(_select(AGENT, "Agent", agents))
    if types:
        form.append(_select(TYPE, "Type", types))
    form.append(InputBlock(block_id=FOLDER, label=PlainTextObject(text="Folder"), optional=True,
                           element=PlainTextInputElement(action_id="text", max_length=1000,
                                                         placeholder=PlainTextObject(text="/path/to/the/project"))))
    return View(type="modal", callback_id=ids.NEW_TASK_SUBMIT, title=PlainTextObject(text="New task"),
                submit=PlainTextObject(text="Queue it"), close=PlainTextObject(text="Cancel"),
                private_metadata=json.dumps(origin or {}), blocks=form)


def form_values(view: dict[str, Any]) -> dict[str, str]:
    """What was filled in: prompt, machine, agent, type, folder ("" for what was left empty)."""
    state = (view.get("state") or {}).get("values") or {}
    found: dict[str, str] = {}
    for block_id in (PROMPT, MACHINE, AGENT, TYPE, FOLDER):
        element: dict[str, Any] = next(iter((state.get(block_id) or {}).values()), {}) or {}
        value = element.get("value") if "value" in element else (element.get("selected_option") or {}).get("value")
        found[block_id] = str(value or "").strip() if block_id != PROMPT else str(value or "")
    return found


def home_view(user: str, tasks: list[Task], fleet: views.FleetStatus | None, asks: Sequence[Ask] = ()) -> View:
    """One person's Home tab: the agents' asks they may answer, running, waiting for them, recent results,
    the fleet, and New task."""
    mine = [t for t in tasks if t.created_by == user]
    running = [t for t in mine if t.status in (models.PENDING, *models.ACTIVE)][:HOME_TASKS]
    waiting = [t for t in mine if t.status == models.NEEDS_HUMAN][:HOME_TASKS]
    recent = [t for t in mine if t.status in (models.DONE, models.FAILED, models.CANCELLED)][:HOME_TASKS]
    drawn: list[Block] = [ActionsBlock(block_id="home_actions", elements=[
        blocks.button("New task", ids.HOME_NEW_TASK, {}, "primary")])]
    if asks:
        drawn += [HeaderBlock(block_id="home_asks", text=PlainTextObject(text="Agents asking you"))]
        drawn += [b for ask in asks[:HOME_TASKS] for b in asking.card(ask, requester="")[1]]
    drawn += [HeaderBlock(block_id="home_running", text=PlainTextObject(text="Running"))]
    drawn += [b for t in running for b in blocks.task_card(t)] or [_empty("running", "Nothing of yours is running.")]
    drawn += [HeaderBlock(block_id="home_waiting", text=PlainTextObject(text="Waiting for you"))]
    drawn += [b for t in waiting for b in blocks.review_card(t)] or [_empty("for_you", "Nothing waits for you.")]
    drawn += [HeaderBlock(block_id="home_recent", text=PlainTextObject(text="Recent results"))]
    drawn += [SectionBlock(block_id=f"task:{t.id}:recent", text=blocks.md(blocks.task_line(t))) for t in recent] \
        or [_empty("recent", "No results yet.")]
    drawn.append(DividerBlock())
    if fleet is not None:
        drawn += blocks.render(fleet)[1]
    drawn.append(ContextBlock(block_id="home_updated",
                              elements=[blocks.md(f"Updated {time.strftime('%H:%M:%S UTC', time.gmtime())}.")]))
    return View(type="home", blocks=drawn)


def _empty(name: str, text: str) -> SectionBlock:
    return SectionBlock(block_id=f"home_{name}_empty", text=blocks.md(text))
