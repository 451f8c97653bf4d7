"""The Slack renderer: views from the command layer drawn as Block Kit, inside Slack's limits.

Every block id that belongs to a task starts with `task:<id>:`, so a click can replace just
that task's card in a message that lists several.
"""

from __future__ import annotations

import functools
import json
import uuid
from typing import Any

from slack_sdk.models.blocks import (
    ActionsBlock,
    Block,
    ButtonElement,
    ContextBlock,
    DividerBlock,
    HeaderBlock,
    InputBlock,
    MarkdownTextObject,
    Option,
    PlainTextInputElement,
    PlainTextObject,
    SectionBlock,
    StaticSelectElement,
)
from slack_sdk.models.views import View

from da.bot import views
from da.bot.views import ago
from da.queue import models
from da.queue.models import Task

# Slack's limits: a message holds 50 blocks, a text field 3,000 characters, a button label 75
# and a button value 2,000.
MAX_BLOCKS = 50
MAX_TEXT = 3000
MAX_LABEL = 75
MAX_VALUE = 2000
# Room left for the "… N more" line and a header.
CARD_BLOCKS = 4

STATUS_EMOJI = {models.PENDING: ":hourglass:", models.CLAIMED: ":inbox_tray:", models.IN_PROGRESS: ":gear:",
                models.DONE: ":white_check_mark:", models.FAILED: ":x:", models.NEEDS_HUMAN: ":raising_hand:",
                models.CANCELLED: ":no_entry_sign:"}
# What a person's resolve did, in the words a channel reads.
OUTCOME_WORDS = {models.DONE: "resolved as done", models.PENDING: "re-queued (retry)", models.FAILED: "marked failed"}
RESOLVE_ACTIONS = {f"resolve_{status}": status for status in models.RESOLVE_TO}
RESOLVE_LABELS = {models.DONE: "Done", models.PENDING: "Retry (run again)", models.FAILED: "Fail"}

Drawn = tuple[str, list[Block]]


def clip(text: str, limit: int = MAX_TEXT) -> str:
    """Cut to Slack's limit, saying how much was left out."""
    if len(text) <= limit:
        return text
    suffix = f"… {len(text) - limit} more"
    return text[: limit - len(suffix) - 1] + suffix


def md(text: str) -> MarkdownTextObject:
    return MarkdownTextObject(text=clip(text) or " ")


def button(label: str, action_id: str, value: dict[str, Any] | str, style: str | None = None) -> ButtonElement:
    raw = value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))
    return ButtonElement(text=PlainTextObject(text=clip(label, MAX_LABEL)), action_id=action_id,
                         value=raw[:MAX_VALUE], style=style)


def code(text: str, limit: int = 1500) -> str:
    text = text.replace("```", "'''")
    return f"```{clip(text, limit)}```" if text.strip() else ""


def task_line(task: Task) -> str:
    emoji = STATUS_EMOJI.get(task.status, "")
    agent = f" · {task.agent}" if task.agent else ""
    return (f"{emoji} `{task.short_id}` *{task.type}* on {views.machine_label(task)}{agent} · {task.status}"
            f" · {ago(task.created_at)}\n{views.preview(task, 150)}")


def review_card(task: Task, *, kind: str = "review") -> list[Block]:
    """A needs_human (or failed) task with what to do, its output tail and the buttons."""
    result = task.result or {}
    lines = [f"{STATUS_EMOJI.get(task.status, '')} `{task.short_id}` *{task.type}* on {task.assigned_to or '-'}"
             + (f" · {task.agent}" if task.agent else ""),
             f"*What happened:* {task.notes or result.get('error') or '-'}"]
    if result.get("action"):
        lines.append(f"*What to do:* {result['action']}")
    tail = views.output_tail(task)
    blocks: list[Block] = [SectionBlock(block_id=f"task:{task.id}:card", text=md("\n".join(lines)))]
    if tail:
        blocks.append(SectionBlock(block_id=f"task:{task.id}:tail", text=md(code(tail))))
    value = {"id": task.id}
    retry = f"resolve_{models.PENDING}"
    buttons = [button("Retry", retry, value, "primary")]
    if kind == "review":
        buttons = [button("Done", f"resolve_{models.DONE}", value, "primary"), button("Retry", retry, value),
                   button("Fail", f"resolve_{models.FAILED}", value, "danger"), button("Add note…", "note_open", value)]
    blocks.append(ActionsBlock(block_id=f"task:{task.id}:actions", elements=buttons))
    return blocks


def task_card(task: Task) -> list[Block]:
    """The card of an assigned task: state, latest progress, and Cancel while it runs."""
    text = task_line(task)
    if task.progress and task.status in models.ACTIVE:
        text += f"\n_progress:_ {task.progress}"
    if task.status in models.REPORTABLE and task.notes:
        text += f"\n_{task.notes}_"
    blocks: list[Block] = [SectionBlock(block_id=f"task:{task.id}:card", text=md(text))]
    if task.status not in models.TERMINAL:
        blocks.append(ActionsBlock(block_id=f"task:{task.id}:actions",
                                   elements=[button("Cancel", "cancel_task", {"id": task.id}, "danger")]))
    return blocks


def limited(blocks: list[Block], more: int, hint: str) -> list[Block]:
    if more:
        blocks.append(ContextBlock(elements=[md(f"… {more} more; {hint}")]))
    return blocks[:MAX_BLOCKS]


def suggestion_blocks(view: views.SuggestionView, token: str) -> list[Block]:
    s = view.suggestion
    text = (f"*Suggested:* `{s.type}` on *{s.machine}*" + (f" with *{s.agent}*" if s.agent else "")
            + f"\n*Why:* {s.reason}\n*Work:* {view.request.description}")
    blocks: list[Block] = [SectionBlock(block_id="suggestion", text=md(text))]
    for warning in s.warnings:
        blocks.append(ContextBlock(elements=[md(f":warning: {warning}")]))
    state = {"t": token}
    menus = []
    for name, options, current in (("machine", view.machines, s.machine), ("agent", view.agents, s.agent),
                                   ("type", view.types, s.type)):
        if options:
            choices = [Option(text=PlainTextObject(text=clip(o, MAX_LABEL)), value=o) for o in options[:100]]
            initial = next((c for c in choices if c.value == current), None)
            menus.append(StaticSelectElement(action_id=f"suggest_{name}", placeholder=PlainTextObject(text=name),
                                             options=choices, initial_option=initial))
    if menus:
        blocks.append(ActionsBlock(block_id="suggest_menus", elements=menus))
    blocks.append(ActionsBlock(block_id="suggest_buttons", elements=[
        button("Confirm", "suggest_confirm", state, "primary"), button("Cancel", "suggest_cancel", state)]))
    return blocks


@functools.singledispatch
def render(view: views.View) -> Drawn:
    """(fallback text, blocks) for a view of the command layer."""
    raise TypeError(f"Slack has no renderer for {type(view).__name__}; add one in {__name__}.")


def section(text: str) -> Drawn:
    """One section of text, clipped to Slack's limit (fallback text included)."""
    return clip(text), [SectionBlock(text=md(text))]


@render.register
def _message(view: views.Message) -> Drawn:
    return section(view.text)


@render.register
def _help(view: views.Help) -> Drawn:
    text = view.detail or "\n".join(f"{usage}\n    {summary}" for usage, summary in view.verbs)
    return clip(text), [SectionBlock(text=md("```" + clip(text, MAX_TEXT - 6) + "```"))]


@render.register
def _task_list(view: views.TaskList) -> Drawn:
    if not view.tasks:
        return section(view.empty)
    room = (MAX_BLOCKS - 2) // (CARD_BLOCKS if view.kind != "queue" else 1)
    shown, more = view.tasks[:room], max(0, len(view.tasks) - room)
    blocks: list[Block] = [HeaderBlock(text=PlainTextObject(text=view.title))]
    for task in shown:
        if view.kind == "queue":
            blocks.append(SectionBlock(block_id=f"task:{task.id}:card", text=md(task_line(task))))
        else:
            blocks += [*review_card(task, kind=view.kind), DividerBlock()]
    return f"{view.title}: {len(view.tasks)} task(s)", limited(blocks, more, "see `da queue` for all")


@render.register
def _fleet_status(view: views.FleetStatus) -> Drawn:
    lines = [f"{':large_green_circle:' if m.online else ':white_circle:'} *{m.name}* · {m.active} active · "
             f"{m.done} done · {m.failed} failed · top agent {m.top_agent or '-'}" for m in view.machines]
    text = "\n".join(lines) or "No machines yet: add them to config/machines.yaml or start a worker."
    return "Fleet status", [HeaderBlock(text=PlainTextObject(text="Fleet")), SectionBlock(text=md(text))]


@render.register
def _skills(view: views.Skills) -> Drawn:
    lines = [f"*{m.name}* ({', '.join(m.agents) or 'no agents'}): {', '.join(m.capabilities) or '-'}"
             for m in view.machines]
    return "Skills", [SectionBlock(text=md("\n".join(lines) or "No machines yet."))]


@render.register
def _skills_available(view: views.SkillsAvailable) -> Drawn:
    lines = [f"*{r.name}* ({r.category}): " + ", ".join(f"{m} {r.installed.get(m, '-')}" for m in view.machines)
             for r in view.rows]
    return section("\n".join(lines) or "No skills in config/skills.yaml.")


@render.register
def _created(view: views.Created) -> Drawn:
    blocks = task_card(view.task)
    blocks += [ContextBlock(elements=[md(f":warning: {w}")]) for w in view.warnings]
    return f"queued {view.task.short_id}", blocks


@render.register
def _task_detail(view: views.TaskDetail) -> Drawn:
    task = view.task
    text = task_line(task)
    if task.notes:
        text += f"\n*Notes:* {task.notes}"
    action = (task.result or {}).get("action")
    if action:
        text += f"\n*What to do:* {action}"
    blocks: list[Block] = [SectionBlock(block_id=f"task:{task.id}:card", text=md(text))]
    tail = views.output_tail(task, 20)
    if tail:
        blocks.append(SectionBlock(text=md(code(tail))))
    return task.short_id, blocks


@render.register
def _resolved(view: views.Resolved) -> Drawn:
    return section(f"`{view.task.short_id}` is now {view.task.status}.")


@render.register
def _suggestion(view: views.SuggestionView) -> Drawn:
    return "Suggestion", suggestion_blocks(view, view.token)


@render.register
def _bulk_preview(view: views.BulkPreview) -> Drawn:
    if not view.count:
        return section(f"No tasks in {view.from_status}; nothing to change.")
    text = f"{view.count} task(s) in {view.from_status} will become {view.status}."
    value = {"from": view.from_status, "to": view.status, "t": uuid.uuid4().hex[:12]}
    return text, [SectionBlock(text=md(text)), ActionsBlock(elements=[
        button(f"Confirm: change {view.count}", "bulk_confirm", value, "danger"),
        button("Cancel", "bulk_cancel", value)])]


@render.register
def _bulk_resolved(view: views.BulkResolved) -> Drawn:
    return section(f"{view.count} task(s) moved from {view.from_status} to {view.status}.")


def note_modal(task_id: str, short_id: str, origin: dict[str, str]) -> View:
    """The modal of the "Add note…" button: a note and how to resolve."""
    choices = [Option(text=PlainTextObject(text=label), value=value) for value, label in RESOLVE_LABELS.items()]
    return View(type="modal", callback_id="note_submit", title=PlainTextObject(text=f"Resolve {short_id}"),
                submit=PlainTextObject(text="Resolve"), close=PlainTextObject(text="Cancel"),
                private_metadata=json.dumps({"id": task_id, **origin}),
                blocks=[InputBlock(block_id="note", label=PlainTextObject(text="Note"),
                                   element=PlainTextInputElement(action_id="text", multiline=True, max_length=2000)),
                        InputBlock(block_id="status", label=PlainTextObject(text="Resolve as"),
                                   element=StaticSelectElement(action_id="choice", options=choices,
                                                               initial_option=choices[0]))])


def outcome_block(task_id: str, text: str) -> SectionBlock:
    return SectionBlock(block_id=f"task:{task_id}:card", text=md(text))


def replace_task(blocks: list[dict[str, Any]], task_id: str, replacement: list[Block]) -> list[dict[str, Any]]:
    """A message's blocks with one task's card (all its blocks) replaced by `replacement`."""
    prefix = f"task:{task_id}:"
    out: list[dict[str, Any]] = []
    inserted = False
    for block in blocks:
        if str(block.get("block_id", "")).startswith(prefix):
            if not inserted:
                out += [b.to_dict() for b in replacement]
                inserted = True
            continue
        out.append(block)
    if not inserted:
        out += [b.to_dict() for b in replacement]
    return out
