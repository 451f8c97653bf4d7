"""What the command layer returns: plain data that the Slack and terminal renderers draw.

Every view is a `View`; each front end registers one renderer per view type, and a test
proves none is missing.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from da.bot.router import Suggestion
from da.fleet import Machine
from da.queue.models import ASK_OPEN, PENDING, Ask, Task

# A preview is one line in a list; the full text is one `show` away.
PREVIEW_CHARS = 80


def ago(timestamp: float | None, now: float | None = None) -> str:
    """A relative time people read at a glance: 5s, 3m, 2h, 4d."""
    if not timestamp:
        return "-"
    seconds = max(0, int((now or time.time()) - timestamp))
    for size, unit in ((86400, "d"), (3600, "h"), (60, "m")):
        if seconds >= size:
            return f"{seconds // size}{unit} ago"
    return f"{seconds}s ago"


def machine_label(task: Task) -> str:
    """`→name` for a pending task pinned to a machine, the claimer once claimed, else `-`."""
    if task.assigned_to and task.status != PENDING:
        return task.assigned_to
    if task.target_machine:
        return f"→{task.target_machine}"
    if task.preferred_machine:
        return f"→{task.preferred_machine}?"
    return "-"


def preview(task: Task, limit: int = PREVIEW_CHARS) -> str:
    """The prompt, script or notes of a task, on one line."""
    payload = task.payload or {}
    text = next((payload[k] for k in ("prompt", "script", "description", "command") if isinstance(payload.get(k), str)),
                None) or task.notes or payload.get("cwd") or payload.get("repo_path") or ""
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def output_tail(task: Task, lines: int = 8) -> str:
    """The last lines of stderr (else stdout) of a finished task."""
    result = task.result or {}
    text = result.get("stderr") or result.get("stdout") or result.get("traceback") or ""
    return "\n".join(str(text).rstrip().splitlines()[-lines:])


class View:
    """What a verb answers; the renderers dispatch on its type."""


@dataclass(frozen=True)
class Message(View):
    """One sentence back to the user; `ok=False` for a failure (exit status 1)."""

    text: str
    ok: bool = True


@dataclass(frozen=True)
class Help(View):
    verbs: tuple[tuple[str, str], ...]
    detail: str | None = None


@dataclass(frozen=True)
class TaskList(View):
    """A list of tasks: `kind` is queue, review or failures (the renderers add buttons by kind)."""

    kind: str
    title: str
    tasks: tuple[Task, ...]
    empty: str


@dataclass(frozen=True)
class TaskDetail(View):
    task: Task
    events: tuple[Any, ...] = ()
    # For a pending task no online worker would take: why (router.unclaimable).
    waiting: str | None = None
    # The task's asks (a supervised agent's questions), oldest first.
    asks: tuple[Ask, ...] = ()


@dataclass(frozen=True)
class TaskDiff(View):
    """An agent task's diff against its base, as its worker stored it in the result."""

    task: Task
    diff: str
    truncated: str = ""


@dataclass(frozen=True)
class Attach(View):
    """How a person continues an agent task by hand where its worktree is: commands, and ssh's argv."""

    task: Task
    machine: str
    worktree: str
    steps: tuple[str, ...]
    ssh_argv: tuple[str, ...]


@dataclass(frozen=True)
class FleetStatus(View):
    machines: tuple[Machine, ...]
    queue_url: str = ""


@dataclass(frozen=True)
class Skills(View):
    """Declared capabilities per machine."""

    machines: tuple[Machine, ...]


@dataclass(frozen=True)
class AssignRequest:
    """What the user asked for, kept with a suggestion so a confirm can create it."""

    description: str
    cwd: str | None = None
    priority: int | None = None
    created_by: str | None = None
    wait_for_machine: bool = False
    # Workspace delivery for an agent task: the branch to cut from, push it, open a PR/MR.
    base: str | None = None
    push: bool = False
    pr: bool = False
    # Every repository of a task on several (`--repo` given more than once); the first is `cwd`.
    repos: tuple[str, ...] = ()


@dataclass(frozen=True)
class SuggestionView(View):
    """The router's proposal awaiting Confirm/Cancel (and, in Slack, menus to change it)."""

    suggestion: Suggestion
    request: AssignRequest
    machines: tuple[str, ...] = ()
    agents: tuple[str, ...] = ()
    types: tuple[str, ...] = ()
    # The handle a front end keeps the suggestion under until Confirm (Slack's buttons carry it).
    token: str = ""


@dataclass(frozen=True)
class Created(View):
    task: Task
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True)
class Resolved(View):
    task: Task


@dataclass(frozen=True)
class BulkPreview(View):
    """The tasks `resolve all` would change, before it does; a confirm acts on exactly these."""

    count: int
    from_status: str
    status: str
    task_ids: tuple[str, ...] = ()


@dataclass(frozen=True)
class BulkResolved(View):
    count: int
    from_status: str
    status: str
    # Tasks of the preview that someone else settled first.
    skipped: int = 0


@dataclass(frozen=True)
class SkillRow:
    name: str
    category: str
    description: str
    installed: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class SkillsAvailable(View):
    """The registry, and per machine: installed, missing or unreachable."""

    rows: tuple[SkillRow, ...]
    machines: tuple[str, ...]


# ---- supervised agent sessions -----------------------------------------------------


@dataclass(frozen=True)
class AskList(Message):
    """Open asks across the fleet; `text` is the plain summary a front end without a table shows."""

    asks: tuple[Ask, ...] = ()


@dataclass(frozen=True)
class Pushed(Message):
    """What `push` did, in one sentence: the finished task as the queue now has it (pushed, PR/MR URL) and the
    deliver task that ran (or waits) on the machine holding its worktree."""

    task: Task | None = None
    job: Task | None = None


def asks_summary(asks: tuple[Ask, ...] | list[Ask]) -> str:
    """The open asks in one plain sentence each (task, ask, machine, kind, title)."""
    if not asks:
        return "No agent is waiting for an answer."
    return "\n".join(f"{ask.task_id[:8]} ask {ask.id} on {ask.opened_by or '-'} ({ask.kind}): {ask.title}"
                     for ask in asks)


def answered(ask: Ask) -> str:
    """One sentence saying how an ask was answered."""
    label = next((option.label for option in ask.options if option.id == ask.answer), ask.answer)
    note = f" ({ask.note})" if ask.note else ""
    return f"task {ask.task_id[:8]} ask {ask.id} answered {label}{note} by {ask.answered_by or '-'}."


def open_asks(asks: tuple[Ask, ...] | list[Ask]) -> list[Ask]:
    return [ask for ask in asks if ask.status == ASK_OPEN]


def progress_lines(record: dict[str, Any] | None, usage: dict[str, Any] | None = None,
                   asks: tuple[Ask, ...] | list[Ask] = ()) -> list[str]:
    """A supervised session's progress as plain lines: plan, recent tool calls, the answer's tail, usage, asks."""
    lines: list[str] = []
    record = record or {}
    for entry in record.get("plan") or ():
        if isinstance(entry, dict):
            lines.append(f"  [{PLAN_MARKS.get(str(entry.get('status')), ' ')}] {entry.get('content', '')}")
    for tool in record.get("tools") or ():
        if isinstance(tool, dict):
            lines.append(f"  {tool.get('status') or '-'}: {tool.get('title') or tool.get('kind') or '?'}")
    tail = record.get("answer_tail")
    if isinstance(tail, str) and tail.strip():
        lines += ["  | " + line for line in tail.rstrip().splitlines()[-PROGRESS_TAIL:]]
    if summary := usage_summary(usage or record.get("usage")):
        lines.append(f"  usage: {summary}")
    lines += [f"  waiting: ask {ask.id} ({ask.kind}) {ask.title} — options "
              + ", ".join(option.id for option in ask.options) for ask in open_asks(asks)]
    return lines


def usage_summary(usage: Any) -> str:
    """Tokens and cost on one line, or empty when nothing was reported."""
    if not isinstance(usage, dict) or not any(usage.get(key) for key in ("input_tokens", "output_tokens", "cost_usd")):
        return ""
    cost = usage.get("cost_usd")
    return (f"{usage.get('input_tokens') or 0} in / {usage.get('output_tokens') or 0} out tokens"
            + (f", ${cost:.4f}" if isinstance(cost, (int, float)) else ""))


# How a plan entry's status shows in a list.
PLAN_MARKS = {"completed": "x", "in_progress": ">", "pending": " "}
# The answer's last lines `da watch` and `da show` print.
PROGRESS_TAIL = 5
