"""The Slack renderer: views from the command layer drawn as Block Kit, inside Slack's limits.

Every block id that belongs to a task starts with `task:<id>:`, so a click can replace just
that task's card in a message that lists several.
"""

from __future__ import annotations

import json
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
from da.bot.terminal import ago, render
from da.bot.terminal import Style
from da.queue.models import Task

# Slack's limits: a message holds 50 blocks, a text field 3,000 characters, a button label 75
# and a button value 2,000.
MAX_BLOCKS = 50
MAX_TEXT = 3000
MAX_LABEL = 75
MAX_VALUE = 2000
# Room left for the "… N more" line and a header.
CARD_BLOCKS = 4

STATUS_EMOJI = {"pending": ":hourglass:", "claimed": ":inbox_tray:", "in_progress": ":gear:",
                "done": ":white_check_mark:",
                "failed": ":x:", "needs_human": ":raising_hand:", "cancelled": ":no_entry_sign:"}


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
    buttons = [button("Retry", "resolve_pending", value, "primary")]
    if kind == "review":
        buttons = [button("Done", "resolve_done", value, "primary"), button("Retry", "resolve_pending", value),
                   button("Fail", "resolve_failed", value, "danger"), button("Add note…", "note_open", value)]
    blocks.append(ActionsBlock(block_id=f"task:{task.id}:actions", elements=buttons))
    return blocks


def task_card(task: Task) -> list[Block]:
    """The card of an assigned task: state, latest progress, and Cancel while it runs."""
    text = task_line(task)
    if task.progress and task.status in ("claimed", "in_progress"):
        text += f"\n_progress:_ {task.progress}"
    if task.status in ("done", "failed", "needs_human") and task.notes:
        text += f"\n_{task.notes}_"
    blocks: list[Block] = [SectionBlock(block_id=f"task:{task.id}:card", text=md(text))]
    if task.status in ("pending", "claimed", "in_progress"):
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


def render_blocks(view: Any) -> tuple[str, list[Block]]:
    """(fallback text, blocks) for any view of the command layer."""
    if isinstance(view, views.TaskList):
        if not view.tasks:
            return view.empty, [SectionBlock(text=md(view.empty))]
        room = (MAX_BLOCKS - 2) // (CARD_BLOCKS if view.kind != "queue" else 1)
        shown, more = view.tasks[:room], max(0, len(view.tasks) - room)
        blocks: list[Block] = [HeaderBlock(text=PlainTextObject(text=view.title))]
        for task in shown:
            if view.kind == "queue":
                blocks.append(SectionBlock(block_id=f"task:{task.id}:card", text=md(task_line(task))))
            else:
                blocks += review_card(task, kind=view.kind) + [DividerBlock()]
        return f"{view.title}: {len(view.tasks)} task(s)", limited(blocks, more, "see `da queue` for all")
    if isinstance(view, views.FleetStatus):
        lines = [f"{':large_green_circle:' if m.online else ':white_circle:'} *{m.name}* · {m.active} active · "
                 f"{m.done} done · {m.failed} failed · top agent {m.top_agent or '-'}" for m in view.machines]
        text = "\n".join(lines) or "No machines yet: add them to config/machines.yaml or start a worker."
        return "Fleet status", [HeaderBlock(text=PlainTextObject(text="Fleet")), SectionBlock(text=md(text))]
    if isinstance(view, views.Skills):
        lines = [f"*{m.name}* ({', '.join(m.agents) or 'no agents'}): {', '.join(m.capabilities) or '-'}"
                 for m in view.machines]
        return "Skills", [SectionBlock(text=md("\n".join(lines) or "No machines yet."))]
    if isinstance(view, views.Created):
        blocks = task_card(view.task)
        blocks += [ContextBlock(elements=[md(f":warning: {w}")]) for w in view.warnings]
        return f"queued {view.task.short_id}", blocks
    if isinstance(view, views.TaskDetail):
        task = view.task
        text = task_line(task)
        if task.notes:
            text += f"\n*Notes:* {task.notes}"
        if (task.result or {}).get("action"):
            text += f"\n*What to do:* {task.result['action']}"  # type: ignore[index]
        blocks = [SectionBlock(block_id=f"task:{task.id}:card", text=md(text))]
        tail = views.output_tail(task, 20)
        if tail:
            blocks.append(SectionBlock(text=md(code(tail))))
        return task.short_id, blocks
    text = render(view, style=Style.plain(), width=100)
    if isinstance(view, views.Help):
        text = "```" + clip(text, MAX_TEXT - 6) + "```"
    return clip(text, MAX_TEXT), [SectionBlock(text=md(text))]


def note_modal(task_id: str, short_id: str, origin: dict[str, str]) -> View:
    """The modal of the "Add note…" button: a note and how to resolve."""
    choices = [Option(text=PlainTextObject(text=label), value=value)
               for value, label in (("done", "Done"), ("pending", "Retry (run again)"), ("failed", "Fail"))]
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
