"""The terminal front end: `da VERB ...` once, or `da` alone for a small REPL.

Exit status: 0 ok, 1 the verb failed, 2 bad usage. Colour only on a TTY without NO_COLOR.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import shutil
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TextIO

from da.bot import grammar, views
from da.bot.commands import CommandLayer
from da.bot.grammar import UsageError
from da.bot.router import MachineInfo, make_router
from da.bot.settings import ClientSettings
from da.queue import errors as queue_errors
from da.queue.client import QueueClient
from da.queue.models import Task

STATUS_COLOURS = {"done": "32", "failed": "31", "needs_human": "33", "in_progress": "36", "claimed": "36",
                  "pending": "37", "cancelled": "90"}
HISTORY_FILE = "~/.da_history"


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


def ago(timestamp: float | None, now: float | None = None) -> str:
    """A relative time people read at a glance: 5s, 3m, 2h, 4d."""
    if not timestamp:
        return "-"
    seconds = max(0, int((now or time.time()) - timestamp))
    for size, unit in ((86400, "d"), (3600, "h"), (60, "m")):
        if seconds >= size:
            return f"{seconds // size}{unit} ago"
    return f"{seconds}s ago"


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


def render(view: Any, *, style: Style, width: int) -> str:
    """Draw a view as text."""
    if isinstance(view, views.Message):
        return view.text
    if isinstance(view, views.Help):
        if view.detail:
            return view.detail
        return "commands:\n" + "\n".join(f"  {usage}\n      {summary}" for usage, summary in view.verbs)
    if isinstance(view, views.TaskList):
        if not view.tasks:
            return view.empty
        rows = [(t.short_id, t.status, t.type, views.machine_label(t), t.agent or "-", ago(t.created_at),
                 views.preview(t) if view.kind == "queue" else (t.notes or views.preview(t)))
                for t in view.tasks]
        text = table(("ID", "STATUS", "TYPE", "MACHINE", "AGENT", "CREATED", "WHAT"), rows, width, style, 1)
        if view.kind in ("review", "failures"):
            actions = [f"  {t.short_id}: {(t.result or {}).get('action')}" for t in view.tasks
                       if (t.result or {}).get("action")]
            if actions:
                text += "\n\nwhat to do:\n" + "\n".join(actions)
            text += "\n\nresolve with: da resolve <id> done|pending|failed"
        return text
    if isinstance(view, views.TaskDetail):
        task = view.task
        result = task.result or {}
        lines = [f"{task.short_id}  {style.status(task.status)}  {task.type}  on {views.machine_label(task)}"
                 f"  agent {task.agent or '-'}  attempts {task.attempts}/{task.max_attempts}",
                 f"id: {task.id}", f"created {ago(task.created_at)} by {task.created_by or '-'}"]
        if task.notes:
            lines.append(f"notes: {task.notes}")
        if result.get("action"):
            lines.append(f"action: {result['action']}")
        if task.progress and task.status in ("claimed", "in_progress"):
            lines.append(f"progress: {task.progress}")
        lines.append("payload: " + json.dumps(task.payload))
        for stream in ("stdout", "stderr"):
            if result.get(stream):
                lines += [f"--- {stream} ---", str(result[stream]).rstrip()]
        if result.get("log_path"):
            lines.append(f"full log: {result['log_path']} on {task.assigned_to or '?'}")
        for event in view.events:
            lines.append(f"  {ago(event.at)}: {event.from_status or '-'} → {event.to_status} by {event.by or '-'}"
                         + (f" ({event.note})" if event.note else ""))
        return "\n".join(lines)
    if isinstance(view, views.FleetStatus):
        if not view.machines:
            return "No machines yet: add them to config/machines.yaml or start a worker."
        rows = [(m.name, "online" if m.online else "offline", str(m.active), str(m.done), str(m.failed),
                 m.top_agent or "-") for m in view.machines]
        return table(("MACHINE", "STATE", "ACTIVE", "DONE", "FAILED", "TOP AGENT"), rows, width)
    if isinstance(view, views.Skills):
        if not view.machines:
            return "No machines yet."
        rows = [(m.name, ", ".join(m.agents) or "-", ", ".join(m.capabilities) or "-") for m in view.machines]
        return table(("MACHINE", "AGENTS", "CAPABILITIES"), rows, width)
    if isinstance(view, views.SuggestionView):
        s = view.suggestion
        lines = [f"suggested: {s.type} on {s.machine}" + (f" with {s.agent}" if s.agent else ""),
                 f"why: {s.reason}"]
        lines += [f"warning: {w}" for w in s.warnings]
        return "\n".join(lines)
    if isinstance(view, views.Created):
        task = view.task
        lines = [f"queued {task.short_id}: {task.type} on {views.machine_label(task)}"
                 + (f" with {task.agent}" if task.agent else "")]
        return "\n".join(lines + [f"warning: {w}" for w in view.warnings])
    if isinstance(view, views.Resolved):
        return f"{view.task.short_id} is now {view.task.status}"
    if isinstance(view, views.BulkPreview):
        return f"{view.count} task(s) in {view.from_status} would become {view.status}."
    if isinstance(view, views.BulkResolved):
        return f"{view.count} task(s) moved from {view.from_status} to {view.status}."
    if isinstance(view, views.SkillsAvailable):
        if not view.rows:
            return "No skills in config/skills.yaml."
        rows = [(r.name, r.category, *(r.installed.get(m, "-") for m in view.machines), r.description)
                for r in view.rows]
        return table(("SKILL", "CATEGORY", *view.machines, "DESCRIPTION"), rows, width)
    return str(view)


def failed(view: Any) -> bool:
    return isinstance(view, views.Message) and not view.ok


class Terminal:
    """One session of the terminal client: runs commands and prints their views."""

    def __init__(self, layer: CommandLayer, settings: ClientSettings, *, out: TextIO = sys.stdout,
                 env: Mapping[str, str] | None = None) -> None:
        self.layer = layer
        self.settings = settings
        self.out = out
        self.style = Style(out, env or os.environ)

    @property
    def width(self) -> int:
        return shutil.get_terminal_size((120, 24)).columns

    def print(self, text: str) -> None:
        print(text, file=self.out, flush=True)

    async def ask(self, question: str) -> str:
        self.out.write(question)
        self.out.flush()
        line = await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
        return line.rstrip("\n")

    async def execute(self, line: str | list[str]) -> int:
        """Run one command; returns the exit status a script sees."""
        try:
            command = grammar.parse(line) if isinstance(line, str) else _parse_argv(line)
        except UsageError as exc:
            self.print(str(exc))
            return 2
        try:
            if grammar.VERBS[command.verb].local:
                from da.bot import local

                return await local.run(command, self)
            view = await self.layer.run(command, user=self.settings.user or None, emit=self.print, ask=self.ask)
            if isinstance(view, views.SuggestionView):
                view = await self.confirm(view, "yes" in command.flags)
            elif isinstance(view, views.BulkPreview) and view.count:
                self.print(render(view, style=self.style, width=self.width))
                if await self.yes("Confirm?"):
                    view = await self.layer.resolve_all(view.from_status, view.status, user=self.settings.user)
                else:
                    view = views.Message("nothing changed.")
        except UsageError as exc:
            self.print(str(exc))
            return 2
        if "json" in command.flags:
            self.print(json.dumps(to_json(view), indent=2))
        else:
            self.print(render(view, style=self.style, width=self.width))
        return 1 if failed(view) else 0

    async def yes(self, question: str) -> bool:
        answer = (await self.ask(f"{question} [Y/n] ")).strip().lower()
        return answer in ("", "y", "yes")

    async def confirm(self, view: views.SuggestionView, assume_yes: bool) -> Any:
        self.print(render(view, style=self.style, width=self.width))
        if not assume_yes and not await self.yes("Confirm?"):
            return views.Message("cancelled; nothing queued.")
        return await self.layer.create(view.suggestion, view.request)

    async def banner(self) -> bool:
        try:
            machines = [MachineInfo.from_json(m) for m in await self.layer.client.machines()]
        except queue_errors.QueueUnreachable:
            self.print(f"da: queue unreachable at {', '.join(self.settings.queue_urls)}.")
            return False
        except queue_errors.QueueError as exc:
            self.print(f"da: {exc.detail}")
            return False
        online = sum(1 for m in machines if m.online)
        self.print(f"da — queue at {self.layer.client.url}, {online} worker(s) online. "
                   "Type help, or exit to leave.")
        return True

    async def repl(self) -> int:
        """The interactive loop: `da ›` prompt with history."""
        if not await self.banner():
            return 1
        history = _enable_history()
        loop = asyncio.get_running_loop()
        try:
            while True:
                try:
                    line = await loop.run_in_executor(None, input, "da › ")
                except EOFError:
                    self.print("")
                    return 0
                if line.strip() in ("exit", "quit"):
                    return 0
                if line.strip():
                    await self.execute(line)
        finally:
            if history:
                history()


def _parse_argv(argv: list[str]) -> grammar.Command:
    """argv from the shell is already split: re-quote it so the grammar sees the same words."""
    import shlex

    return grammar.parse(" ".join(shlex.quote(arg) for arg in argv))


def _enable_history() -> Any:
    try:
        import readline
    except ImportError:
        return None
    path = Path(HISTORY_FILE).expanduser()
    try:
        readline.read_history_file(path)
    except OSError:
        pass
    return lambda: readline.write_history_file(path)


async def main_async(argv: list[str], settings: ClientSettings, env: Mapping[str, str]) -> int:
    client = QueueClient(list(settings.queue_urls), settings.secret, rounds=1)
    from da.bot import skills as skills_module

    layer = CommandLayer(client, router=make_router(settings.router),
                         skills=skills_module.SkillsService.from_config(settings.config_dir, env))
    terminal = Terminal(layer, settings, env=env)
    try:
        return await (terminal.repl() if not argv else terminal.execute(argv))
    finally:
        await client.close()
