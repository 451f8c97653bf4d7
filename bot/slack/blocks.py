"""The Slack renderer: views from the command layer drawn as Block Kit, inside Slack's limits.

Everything that comes from a task (prompts, notes, output, progress) is escaped for mrkdwn
before it is drawn, and mrkdwn is `verbatim`, so task text can never ping a channel, mention
someone or disguise a link. A message stays under Slack's total of block text: long lists
show fewer cards and say how many more there are.
"""

from __future__ import annotations

import functools
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
from da.bot.slack import ids
from da.bot.views import ago
from da.queue import models
from da.queue.models import Task

# Slack's limits: a message holds 50 blocks, a text field 3,000 characters, a button label 75
# and a button value 2,000.
MAX_BLOCKS = 50
MAX_TEXT = 3000
MAX_LABEL = 75
MAX_VALUE = 2000
# Slack refuses a message whose blocks hold more than about 12,000 characters of text
# (msg_blocks_too_long); lists stop adding cards here, leaving room for the "N more" line.
LIST_TEXT_BUDGET = 10_500
# Where the full list of each kind is, for the "N more" line.
FULL_LIST = {"review": "`da review`", "failures": "`da failures`", "queue": "`da queue`"}

STATUS_EMOJI = {models.PENDING: ":hourglass:", models.CLAIMED: ":inbox_tray:", models.IN_PROGRESS: ":gear:",
                models.DONE: ":white_check_mark:", models.FAILED: ":x:", models.NEEDS_HUMAN: ":raising_hand:",
                models.CANCELLED: ":no_entry_sign:"}
# What a person's resolve did, in the words a channel reads.
OUTCOME_WORDS = {models.DONE: "resolved as done", models.PENDING: "re-queued (retry)", models.FAILED: "marked failed"}
RESOLVE_LABELS = {models.DONE: "Done", models.PENDING: "Retry (run again)", models.FAILED: "Fail"}

Drawn = tuple[str, list[Block]]


def clip(text: str, limit: int = MAX_TEXT) -> str:
    """Cut to Slack's limit, saying how much was left out."""
    if len(text) <= limit:
        return text
    suffix = f"… {len(text) - limit} more"
    return text[: limit - len(suffix) - 1] + suffix


def escape(text: str) -> str:
    """Text from a task made inert in mrkdwn: Slack's three control characters as entities."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def unescape(text: str) -> str:
    """Slack's escaping undone (slash-command text arrives with & < > as entities)."""
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


def md(text: str) -> MarkdownTextObject:
    """mrkdwn of our own making (task text inside is already escaped); verbatim, so Slack adds no links."""
    return MarkdownTextObject(text=clip(text) or " ", verbatim=True)


def missing_scopes_note(missing: dict[str, str]) -> ContextBlock:
    """What an app installed from an older manifest cannot do yet, and how to fix it."""
    lost = "; ".join(f"`{scope}`: {effect}" for scope, effect in missing.items())
    return ContextBlock(block_id="missing_scopes", elements=[md(
        f":warning: This Slack app lacks some scopes, so {lost}. Add them under OAuth & Permissions (or paste "
        "config/slack-manifest.yaml again) and reinstall the app.")])


def button(label: str, action_id: str, value: dict[str, Any], style: str | None = None) -> ButtonElement:
    raw = json.dumps(value, separators=(",", ":"))
    if len(raw) > MAX_VALUE:
        raise ValueError(f"{action_id}'s value is {len(raw)} characters; Slack keeps {MAX_VALUE}.")
    return ButtonElement(text=PlainTextObject(text=clip(label, MAX_LABEL)), action_id=action_id, value=raw,
                         style=style)


def code(text: str, limit: int = 1500) -> str:
    text = text.replace("```", "'''")
    return f"```{escape(clip(text, limit))}```" if text.strip() else ""


def text_size(blocks: list[Block]) -> int:
    """Characters of text in the blocks, as Slack counts them against its total."""

    def size(node: Any) -> int:
        if isinstance(node, dict):
            if node.get("type") in ("plain_text", "mrkdwn"):
                return len(str(node.get("text", "")))
            return sum(size(v) for v in node.values())
        if isinstance(node, list):
            return sum(size(v) for v in node)
        return 0

    return size([b.to_dict() for b in blocks])


def task_line(task: Task) -> str:
    emoji = STATUS_EMOJI.get(task.status, "")
    agent = f" · {task.agent}" if task.agent else ""
    return (f"{emoji} `{task.short_id}` *{task.type}* on {escape(views.machine_label(task))}{escape(agent)} · "
            f"{task.status} · {ago(task.created_at)}\n{escape(views.preview(task, 150))}")


def review_card(task: Task, *, kind: str = "review", listed_in: str | None = None) -> list[Block]:
    """A needs_human (or failed) task with what to do, its output tail and the buttons.

    `listed_in` names the private list the card is drawn in, so a click can redraw that list.
    """
    result = task.result or {}
    lines = [f"{STATUS_EMOJI.get(task.status, '')} `{task.short_id}` *{task.type}* on "
             f"{escape(task.assigned_to or '-')}" + (f" · {escape(task.agent)}" if task.agent else ""),
             f"*What happened:* {escape(task.notes or result.get('error') or '-')}"]
    if result.get("action"):
        lines.append(f"*What to do:* {escape(str(result['action']))}")
    tail = views.output_tail(task)
    blocks: list[Block] = [SectionBlock(block_id=f"task:{task.id}:card", text=md("\n".join(lines)))]
    if tail:
        blocks.append(SectionBlock(block_id=f"task:{task.id}:tail", text=md(code(tail))))
    value: dict[str, Any] = {"id": task.id, **({"in": listed_in} if listed_in else {})}
    retry = ids.RESOLVE[models.PENDING]
    buttons = [button("Retry", retry, value, "primary")]
    if kind == "review":
        buttons = [button("Done", ids.RESOLVE[models.DONE], value, "primary"), button("Retry", retry, value),
                   button("Fail", ids.RESOLVE[models.FAILED], value, "danger"),
                   button("Add note…", ids.NOTE_OPEN, value)]
    blocks.append(ActionsBlock(block_id=f"task:{task.id}:actions", elements=buttons))
    return blocks


def settled_card(task: Task, outcome: str) -> list[Block]:
    """A card whose task a person settled: who did what, and the task as it is now."""
    return [SectionBlock(block_id=f"task:{task.id}:card", text=md(f"{outcome}\n{task_line(task)}"))]


def task_card(task: Task) -> list[Block]:
    """The card of an assigned task: state, latest progress, and Cancel while it runs."""
    text = task_line(task)
    if task.progress and task.status in models.ACTIVE:
        text += f"\n_progress:_ {escape(task.progress)}"
    if task.status in models.REPORTABLE and task.notes:
        text += f"\n_{escape(task.notes)}_"
    blocks: list[Block] = [SectionBlock(block_id=f"task:{task.id}:card", text=md(text))]
    if task.status not in models.TERMINAL:
        blocks.append(ActionsBlock(block_id=f"task:{task.id}:actions",
                                   elements=[button("Cancel", ids.CANCEL_TASK, {"id": task.id}, "danger")]))
    return blocks


def limited(blocks: list[Block], more: int, hint: str) -> list[Block]:
    if more:
        blocks.append(ContextBlock(elements=[md(f"… {more} more — {hint}")]))
    return blocks


def suggestion_blocks(view: views.SuggestionView, token: str) -> list[Block]:
    """The suggestion card; its block ids carry the token, since a click in an ephemeral message
    brings back only the clicked element and its block id."""
    s = view.suggestion
    agent = f" with *{escape(s.agent)}*" if s.agent else ""
    text = (f"*Suggested:* `{escape(s.type)}` on *{escape(s.machine)}*{agent}\n*Why:* {escape(s.reason)}"
            f"\n*Work:* {escape(view.request.description)}")
    blocks: list[Block] = [SectionBlock(block_id="suggestion", text=md(text))]
    for n, warning in enumerate(s.warnings):
        blocks.append(ContextBlock(block_id=f"warning:{n}", elements=[md(f":warning: {escape(warning)}")]))
    state = {"t": token}
    menus = []
    for name, options, current in (("machine", view.machines, s.machine), ("agent", view.agents, s.agent),
                                   ("type", view.types, s.type)):
        if options:
            choices = [Option(text=PlainTextObject(text=clip(o, MAX_LABEL)), value=o) for o in options[:100]]
            initial = next((c for c in choices if c.value == current), None)
            menus.append(StaticSelectElement(action_id=ids.SUGGEST_MENUS[name], placeholder=PlainTextObject(text=name),
                                             options=choices, initial_option=initial))
    if menus:
        blocks.append(ActionsBlock(block_id=f"suggest:{token}:menus", elements=menus))
    blocks.append(ActionsBlock(block_id=f"suggest:{token}:buttons", elements=[
        button("Confirm", ids.SUGGEST_CONFIRM, state, "primary"), button("Cancel", ids.SUGGEST_CANCEL, state)]))
    return blocks


def suggestion_token(block_id: str) -> str | None:
    """The token a suggestion's block id carries (`suggest:<token>:menus`)."""
    parts = block_id.split(":")
    return parts[1] if len(parts) == 3 and parts[0] == "suggest" else None


@functools.singledispatch
def render(view: views.View) -> Drawn:
    """(fallback text, blocks) for a view of the command layer."""
    raise TypeError(f"Slack has no renderer for {type(view).__name__}; add one in {__name__}.")


def section(text: str) -> Drawn:
    """One section of plain text (escaped: it may quote tasks or what was typed), clipped to Slack's limit."""
    return clip(escape(text)), [SectionBlock(text=md(escape(text)))]


@render.register
def _message(view: views.Message) -> Drawn:
    return section(view.text)


@render.register
def _help(view: views.Help) -> Drawn:
    text = view.detail or "\n".join(f"{usage}\n    {summary}" for usage, summary in view.verbs)
    return clip(escape(text)), [SectionBlock(text=md(code(text, MAX_TEXT - 60)))]


@render.register
def _task_list(view: views.TaskList) -> Drawn:
    return task_list(view)


def task_list(view: views.TaskList, *, above: list[Block] | None = None) -> Drawn:
    """A list of task cards (with buttons for review and failures), as many as fit in one message."""
    if not view.tasks:
        text, empty = section(view.empty)
        return text, [*(above or []), *empty]
    blocks: list[Block] = [*(above or []), HeaderBlock(text=PlainTextObject(text=view.title))]
    shown = 0
    for task in view.tasks:
        if view.kind == "queue":
            card: list[Block] = [SectionBlock(block_id=f"task:{task.id}:card", text=md(task_line(task)))]
        else:
            card = [*review_card(task, kind=view.kind, listed_in=view.kind),
                    DividerBlock(block_id=f"task:{task.id}:divider")]
        if shown and (len(blocks) + len(card) > MAX_BLOCKS - 1
                      or text_size(blocks) + text_size(card) > LIST_TEXT_BUDGET):
            break
        blocks += card
        shown += 1
    hint = f"{FULL_LIST.get(view.kind, '`da queue`')} in the terminal lists all"
    return f"{view.title}: {len(view.tasks)} task(s)", limited(blocks, len(view.tasks) - shown, hint)


@render.register
def _fleet_status(view: views.FleetStatus) -> Drawn:
    lines = [f"{':large_green_circle:' if m.online else ':white_circle:'} *{m.name}* · {m.active} active · "
             f"{m.done} done · {m.failed} failed · top agent {m.top_agent or '-'}" for m in view.machines]
    text = "\n".join(lines) or "No machines yet: add them to config/machines.yaml or start a worker."
    return "Fleet status", [HeaderBlock(text=PlainTextObject(text="Fleet")), SectionBlock(text=md(text))]


@render.register
def _skills(view: views.Skills) -> Drawn:
    lines = [escape(f"*{m.name}* ({', '.join(m.agents) or 'no agents'}): {', '.join(m.capabilities) or '-'}")
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
    blocks += [ContextBlock(block_id=f"warning:{n}", elements=[md(f":warning: {escape(w)}")])
               for n, w in enumerate(view.warnings)]
    return f"queued {view.task.short_id}", blocks


@render.register
def _task_diff(view: views.TaskDiff) -> Drawn:
    summary = str(((view.task.result or {}).get("workspace") or {}).get("summary", ""))
    text = f"{view.task.short_id}: {escape(summary)}"
    return clip(text), [SectionBlock(text=md(text)), SectionBlock(text=md(code(view.diff or "(no changes)")))]


@render.register
def _attach(view: views.Attach) -> Drawn:
    text = f"{view.task.short_id} works in {view.worktree} on {view.machine}; to continue by hand:"
    return clip(escape(text)), [SectionBlock(text=md(escape(text))),
                                SectionBlock(text=md(code("\n".join(view.steps))))]


@render.register
def _task_detail(view: views.TaskDetail) -> Drawn:
    task = view.task
    text = task_line(task)
    if task.notes:
        text += f"\n*Notes:* {escape(task.notes)}"
    action = (task.result or {}).get("action")
    if action:
        text += f"\n*What to do:* {escape(str(action))}"
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
    return bulk_preview(view, "")


def bulk_preview(view: views.BulkPreview, token: str) -> Drawn:
    """The confirmation of `resolve all`: the tasks it will change, and the buttons (carrying `token`)."""
    if not view.count:
        return section(f"No tasks in {view.from_status}; nothing to change.")
    text = f"{view.count} task(s) in {view.from_status} will become {view.status}."
    listed = ", ".join(f"`{task_id[:8]}`" for task_id in view.task_ids)
    value = {"t": token}
    return text, [SectionBlock(text=md(f"{text}\n{clip(listed, MAX_TEXT - len(text) - 1)}")), ActionsBlock(elements=[
        button(f"Confirm: change {view.count}", ids.BULK_CONFIRM, value, "danger"),
        button("Cancel", ids.BULK_CANCEL, value)])]


@render.register
def _bulk_resolved(view: views.BulkResolved) -> Drawn:
    skipped = f" {view.skipped} had already changed and were left alone." if view.skipped else ""
    return section(f"{view.count} task(s) moved from {view.from_status} to {view.status}.{skipped}")


def note_modal(task_id: str, short_id: str, origin: dict[str, str]) -> View:
    """The modal of the "Add note…" button: a note and how to resolve."""
    choices = [Option(text=PlainTextObject(text=label), value=value) for value, label in RESOLVE_LABELS.items()]
    return View(type="modal", callback_id=ids.NOTE_SUBMIT, title=PlainTextObject(text=f"Resolve {short_id}"),
                submit=PlainTextObject(text="Resolve"), close=PlainTextObject(text="Cancel"),
                private_metadata=json.dumps({"id": task_id, **origin}),
                blocks=[InputBlock(block_id="note", label=PlainTextObject(text="Note"),
                                   element=PlainTextInputElement(action_id="text", multiline=True, max_length=2000)),
                        InputBlock(block_id="status", label=PlainTextObject(text="Resolve as"),
                                   element=StaticSelectElement(action_id="choice", options=choices,
                                                               initial_option=choices[0]))])


# ---- the notifier's alerts ----------------------------------------------------------------

def alert(task: Task, kind: str, *, threaded: bool, mention: str = "") -> Drawn:
    """An alert about a task that reached `kind` (needs_human, failed, done): in its card's thread
    (mentioning who asked) or at the top of a channel (with a title)."""
    if kind == models.DONE:
        notes = f": {escape(task.notes)}" if task.notes else ""
        return f":white_check_mark: `{task.short_id}` {escape(task.type)} done on " \
               f"{escape(task.assigned_to or '-')}{notes}", []
    listed = "review" if kind == models.NEEDS_HUMAN else "failures"
    card = review_card(task, kind=listed)
    if threaded:
        who = f"<@{mention}> " if mention.startswith(("U", "W")) else ""
        verb = "needs you" if listed == "review" else "has failed"
        text = f"{who}`{task.short_id}` {verb}: {escape(task.notes or '')}"
        return text, [SectionBlock(block_id="mention", text=md(text)), *card]
    title = "Needs a person" if listed == "review" else "Failed"
    return (f"{title}: {task.short_id} {escape(task.notes or '')}",
            [HeaderBlock(block_id="title", text=PlainTextObject(text=title)), *card])


def alert_line(task: Task, kind: str) -> str:
    """One task of a burst, as a line of the list in the summary's thread."""
    notes = escape(views.preview(task, 120)) if kind == models.DONE else escape((task.notes or "")[:150])
    return f"{STATUS_EMOJI.get(kind, '')} `{task.short_id}` *{escape(task.type)}* on " \
           f"{escape(task.assigned_to or '-')}: {notes}"


def burst_summary(total: int, counts: dict[str, int], words: dict[str, str], minutes: int,
                  mentions: tuple[str, ...]) -> Drawn:
    """One message for a burst of alerts: how many of each kind, with Review / Failures buttons."""
    parts = [f"{n} {words[kind]}" for kind, n in counts.items() if n]
    span = "the last minute" if minutes == 1 else f"the last {minutes} minutes"
    who = " ".join(f"<@{user}>" for user in mentions)
    text = f"{total} tasks in {span}: {', '.join(parts)}." + (f" {who}" if who else "")
    buttons = [button("Review", ids.OPEN_REVIEW, {"kind": "review"}, "primary")] \
        if counts.get(models.NEEDS_HUMAN) else []
    if counts.get(models.FAILED):
        buttons.append(button("Failures", ids.OPEN_REVIEW, {"kind": "failures"}))
    drawn: list[Block] = [SectionBlock(block_id="summary", text=md(f"{text}\nThe list is in the thread."))]
    if buttons:
        drawn.append(ActionsBlock(block_id="summary_actions", elements=buttons))
    return text, drawn


def list_post(sections: list[str]) -> Drawn:
    """One post of a summary's list (sections of lines already escaped)."""
    return sections[0][:200], [SectionBlock(text=md(part)) for part in sections]
