"""The text renderer: every view of the command layer drawn for a terminal.

One function per view type (`functools.singledispatch`); a view without one is an error,
never `str(view)`.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from collections.abc import Mapping, Sequence
from typing import Any, TextIO

from da.bot import views
from da.bot.views import ago
from da.queue import models
from da.queue.models import Task

# An ask's detail (a command, a diff) shows its last lines; `da show --json` has it all.
ASK_DETAIL_LINES = 12
STATUS_COLOURS = {models.DONE: "32", models.FAILED: "31", models.NEEDS_HUMAN: "33", models.IN_PROGRESS: "36",
                  models.WAITING: "35", models.CLAIMED: "36", models.PENDING: "37", models.CANCELLED: "90"}


# Control characters in what tasks printed, drawn as their Unicode pictures (ESC as ␛): an escape
# sequence from a task's output must not retitle the window or move the cursor.
INERT = {code: 0x2400 + code for code in range(0x20) if chr(code) not in "\n\t"} | {0x7F: 0x2421} | {
    code: 0xFFFD for code in range(0x80, 0xA0)}


def inert(value: Any) -> Any:
    """Text (or JSON of texts) from a task with its control characters made visible and harmless."""
    if isinstance(value, str):
        return value.translate(INERT)
    if isinstance(value, dict):
        return {inert(key): inert(item) for key, item in value.items()}
    if isinstance(value, list):
        return [inert(item) for item in value]
    return value


def inert_task(task: Task) -> Task:
    """The task with every text field inert, for drawing on a terminal."""
    return dataclasses.replace(task, **{field.name: inert(getattr(task, field.name))
                                        for field in dataclasses.fields(task) if field.init
                                        and isinstance(getattr(task, field.name), (str, dict, list))})


class Style:
    """ANSI colour when writing to a terminal that wants it."""

    def __init__(self, stream: TextIO | None, env: Mapping[str, str]) -> None:
        self.enabled = stream is not None and stream.isatty() and "NO_COLOR" not in env

    @classmethod
    def plain(cls) -> Style:
        return cls(None, {})

    def __call__(self, text: str, code: str) -> str:
        return f"\033[{code}m{text}\033[0m" if self.enabled and code else text

    def status(self, status: str) -> str:
        return self(status, STATUS_COLOURS.get(status, ""))


def table(headers: Sequence[str], rows: Sequence[Sequence[str]], width: int, style: Style | None = None,
          colour_column: int | None = None) -> str:
    """Aligned columns; the last column is cut to fit the terminal width."""
    widths = [max(len(str(h)), *(len(str(r[i])) for r in rows)) if rows else len(str(h))
              for i, h in enumerate(headers)]
    fixed = sum(widths[:-1]) + 2 * (len(widths) - 1)
    widths[-1] = max(10, min(widths[-1], width - fixed))
    lines = []
    for index, row in enumerate([headers, *rows]):
        cells = []
        for column, (cell, size) in enumerate(zip(row, widths, strict=True)):
            text = str(cell)
            if column == len(widths) - 1 and len(text) > size:
                text = text[: size - 1] + "…"
            padded = text.ljust(size) if column < len(widths) - 1 else text
            if style and index and column == colour_column:
                padded = style.status(text) + " " * (size - len(text))
            cells.append(padded)
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def to_json(view: Any) -> Any:
    """A view as JSON for scripts (`--json`)."""
    if isinstance(view, Task):
        return view.to_json()
    if dataclasses.is_dataclass(view) and not isinstance(view, type):
        return {f.name: to_json(getattr(view, f.name)) for f in dataclasses.fields(view)}
    if isinstance(view, (list, tuple)):
        return [to_json(item) for item in view]
    if isinstance(view, dict):
        return {key: to_json(value) for key, value in view.items()}
    return view


@functools.singledispatch
def render(view: views.View, *, style: Style, width: int) -> str:
    """Draw a view as text."""
    raise TypeError(f"the terminal has no renderer for {type(view).__name__}; add one in {__name__}.")


@render.register
def _message(view: views.Message, *, style: Style, width: int) -> str:
    return view.text


@render.register
def _help(view: views.Help, *, style: Style, width: int) -> str:
    if view.detail:
        return view.detail
    return "commands:\n" + "\n".join(f"  {usage}\n      {summary}" for usage, summary in view.verbs)


@render.register
def _task_list(view: views.TaskList, *, style: Style, width: int) -> str:
    if not view.tasks:
        return view.empty
    view = dataclasses.replace(view, tasks=tuple(inert_task(t) for t in view.tasks))
    rows = [(t.short_id, t.status, t.type, views.machine_label(t), t.agent or "-", ago(t.created_at),
             views.preview(t) if view.kind == "queue" else (t.notes or views.preview(t)))
            for t in view.tasks]
    text = table(("ID", "STATUS", "TYPE", "MACHINE", "AGENT", "CREATED", "WHAT"), rows, width, style, 1)
    if view.kind in ("review", "failures"):
        actions = [f"  {t.short_id}: {(t.result or {}).get('action')}" for t in view.tasks
                   if (t.result or {}).get("action")]
        if actions:
            text += "\n\nwhat to do:\n" + "\n".join(actions)
        text += f"\n\nresolve with: da resolve <id> {'|'.join(models.RESOLVE_TO)}"
    return text


@render.register
def _task_detail(view: views.TaskDetail, *, style: Style, width: int) -> str:
    task = inert_task(view.task)
    result = task.result or {}
    lines = [f"{task.short_id}  {style.status(task.status)}  {task.type}  on {views.machine_label(task)}"
             f"  agent {task.agent or '-'}  attempts {task.attempts}/{task.max_attempts}",
             f"id: {task.id}", f"created {ago(task.created_at)} by {task.created_by or '-'}"
             + (f" (via {task.created_via})" if task.created_via else "")]
    if task.notes:
        lines.append(f"notes: {task.notes}")
    if view.waiting:
        lines.append(f"waiting: {view.waiting}")
    if result.get("action"):
        lines.append(f"action: {result['action']}")
    if task.progress and task.status in models.ACTIVE and not task.progress_record:
        lines.append(f"progress: {task.progress}")
    if task.progress_record or task.usage:
        lines += ["progress:", *views.progress_lines(task.progress_record, task.usage)]
    lines.append("payload: " + json.dumps(task.payload))
    if result.get("session_id"):
        lines.append(f"session: {result['session_id']} (a follow-up can resume it)")
    if result.get("answer"):
        lines += ["--- answer ---", str(result["answer"]).rstrip()]
        if result.get("answer_truncated"):
            lines.append(f"({result['answer_truncated']})")
    for ask in view.asks:
        options = ", ".join(f"{option.id} ({option.label})" for option in ask.options)
        settled = (f"answered {ask.answer} by {ask.answered_by}" + (f": {ask.note}" if ask.note else "")
                   if ask.status == models.ASK_ANSWERED else ask.status)
        lines.append(f"ask {ask.id} ({ask.kind}, {settled}, {ago(ask.created_at)}): {ask.title}")
        if ask.detail:
            lines += ["    " + line for line in ask.detail.rstrip().splitlines()[-ASK_DETAIL_LINES:]]
        if ask.status == models.ASK_OPEN:
            lines.append(f"    options: {options}; answer with da approve|deny {task.short_id} {ask.id} or "
                         f"da answer {task.short_id} <option>")
    for stream in ("stdout", "stderr"):
        if result.get(stream):
            lines += [f"--- {stream} ---", str(result[stream]).rstrip()]
    if result.get("log_path"):
        lines.append(f"full log: {result['log_path']} on {task.assigned_to or '?'}")
    if isinstance(result.get("workspace"), dict):
        space = result["workspace"]
        lines.append(f"workspace: {space.get('summary', '')}; {space.get('path', '')} on {task.assigned_to or '?'}"
                     + (f"; {space['pr_url']}" if space.get("pr_url") else "") + f" (da diff {task.short_id})")
    for event in view.events:
        lines.append(f"  {ago(event.at)}: {event.from_status or '-'} → {event.to_status} by {event.by or '-'}"
                     + (f" via {inert(event.via)}" if event.via else "")
                     + (f" ({inert(event.note)})" if event.note else ""))
    return "\n".join(lines)


# Colours of a unified diff's lines, by how they start (the first match wins).
DIFF_COLOURS = (("+++", "1"), ("---", "1"), ("diff ", "1"), ("@@", "36"), ("+", "32"), ("-", "31"))


@render.register
def _task_diff(view: views.TaskDiff, *, style: Style, width: int) -> str:
    space = (view.task.result or {}).get("workspace") or {}
    lines = [f"{view.task.short_id}: {space.get('summary', '')}"]
    for line in view.diff.splitlines():
        colour = next((code for start, code in DIFF_COLOURS if line.startswith(start)), "")
        lines.append(style(line, colour))
    if view.truncated:
        lines.append(f"(diff cut: {view.truncated})")
    return "\n".join(lines)


@render.register
def _ask_list(view: views.AskList, *, style: Style, width: int) -> str:
    if not view.asks:
        return view.text
    rows = [(ask.task_id[:8], str(ask.id), ask.opened_by or "-", ask.kind, ago(ask.created_at), ask.title)
            for ask in view.asks]
    return table(("TASK", "ASK", "MACHINE", "KIND", "AGE", "TITLE"), rows, width)


@render.register
def _attach(view: views.Attach, *, style: Style, width: int) -> str:
    return "\n".join([f"{view.task.short_id} works in {view.worktree} on {view.machine}; to continue by hand:",
                      *(f"  {step}" for step in view.steps)])


@render.register
def _fleet_status(view: views.FleetStatus, *, style: Style, width: int) -> str:
    if not view.machines:
        return "No machines yet: add them to config/machines.yaml or start a worker."
    # An online worker's own offer (what it polled with) is what it takes; else the fleet file's.
    rows = [(m.name, "online" if m.online else "offline", ", ".join(m.runs_agents) or "-", str(m.active),
             str(m.done), str(m.failed), m.top_agent or "-") for m in view.machines]
    return table(("MACHINE", "STATE", "AGENTS", "ACTIVE", "DONE", "FAILED", "TOP AGENT"), rows, width)


@render.register
def _skills(view: views.Skills, *, style: Style, width: int) -> str:
    if not view.machines:
        return "No machines yet."
    rows = [(m.name, ", ".join(m.agents) or "-", ", ".join(m.capabilities) or "-") for m in view.machines]
    return table(("MACHINE", "AGENTS", "CAPABILITIES"), rows, width)


@render.register
def _suggestion(view: views.SuggestionView, *, style: Style, width: int) -> str:
    s = view.suggestion
    lines = [f"suggested: {s.type} on {s.machine}" + (f" with {s.agent}" if s.agent else ""), f"why: {s.reason}"]
    return "\n".join(lines + [f"warning: {w}" for w in s.warnings])


@render.register
def _created(view: views.Created, *, style: Style, width: int) -> str:
    task = view.task
    lines = [f"queued {task.short_id}: {task.type} on {views.machine_label(task)}"
             + (f" with {task.agent}" if task.agent else "")]
    return "\n".join(lines + [f"warning: {w}" for w in view.warnings])


@render.register
def _resolved(view: views.Resolved, *, style: Style, width: int) -> str:
    return f"{view.task.short_id} is now {view.task.status}"


@render.register
def _bulk_preview(view: views.BulkPreview, *, style: Style, width: int) -> str:
    ids = " ".join(task_id[:8] for task_id in view.task_ids)
    return f"{view.count} task(s) in {view.from_status} would become {view.status}." + (f"\n{ids}" if ids else "")


@render.register
def _bulk_resolved(view: views.BulkResolved, *, style: Style, width: int) -> str:
    skipped = f" {view.skipped} had already changed and were left alone." if view.skipped else ""
    return f"{view.count} task(s) moved from {view.from_status} to {view.status}.{skipped}"


@render.register
def _skills_available(view: views.SkillsAvailable, *, style: Style, width: int) -> str:
    if not view.rows:
        return "No skills in config/skills.yaml."
    rows = [(r.name, r.category, *(r.installed.get(m, "-") for m in view.machines), r.description)
            for r in view.rows]
    return table(("SKILL", "CATEGORY", *view.machines, "DESCRIPTION"), rows, width)
