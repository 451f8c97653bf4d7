"""What the command layer returns: plain data that the Slack and terminal renderers draw."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from da.bot.router import MachineInfo, Suggestion
from da.queue.models import Task

# A preview is one line in a list; the full text is one `show` away.
PREVIEW_CHARS = 80


def machine_label(task: Task) -> str:
    """`→name` for a pending task pinned to a machine, the claimer once claimed, else `-`."""
    if task.assigned_to and task.status != "pending":
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


@dataclass(frozen=True)
class Message:
    """One sentence back to the user; `ok=False` for a failure (exit status 1)."""

    text: str
    ok: bool = True


@dataclass(frozen=True)
class Help:
    verbs: tuple[tuple[str, str], ...]
    detail: str | None = None


@dataclass(frozen=True)
class TaskList:
    """A list of tasks: `kind` is queue, review or failures (the renderers add buttons by kind)."""

    kind: str
    title: str
    tasks: tuple[Task, ...]
    empty: str


@dataclass(frozen=True)
class TaskDetail:
    task: Task
    events: tuple[Any, ...] = ()


@dataclass(frozen=True)
class FleetStatus:
    machines: tuple[MachineInfo, ...]
    queue_url: str = ""


@dataclass(frozen=True)
class Skills:
    """Declared capabilities per machine."""

    machines: tuple[MachineInfo, ...]


@dataclass(frozen=True)
class AssignRequest:
    """What the user asked for, kept with a suggestion so a confirm can create it."""

    description: str
    cwd: str | None = None
    priority: int | None = None
    created_by: str | None = None


@dataclass(frozen=True)
class SuggestionView:
    """The router's proposal awaiting Confirm/Cancel (and, in Slack, menus to change it)."""

    suggestion: Suggestion
    request: AssignRequest
    machines: tuple[str, ...] = ()
    agents: tuple[str, ...] = ()
    types: tuple[str, ...] = ()


@dataclass(frozen=True)
class Created:
    task: Task
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True)
class Resolved:
    task: Task


@dataclass(frozen=True)
class BulkPreview:
    """How many tasks `resolve all` would change, before it does."""

    count: int
    from_status: str
    status: str


@dataclass(frozen=True)
class BulkResolved:
    count: int
    from_status: str
    status: str


@dataclass(frozen=True)
class SkillRow:
    name: str
    category: str
    description: str
    installed: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class SkillsAvailable:
    """The registry, and per machine: installed, missing or unreachable."""

    rows: tuple[SkillRow, ...]
    machines: tuple[str, ...]
