"""The command layer: one implementation of every verb for both front ends.

It turns a parsed Command into calls on the queue client and returns plain data (views);
Slack and the terminal only draw what it returns.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from da.bot import grammar, views
from da.bot.grammar import Command, UsageError
from da.bot.router import (
    AGENT_RUN,
    RUN_SCRIPT,
    Router,
    RulesRouter,
    Suggestion,
    known_agents,
    known_types,
    name_errors,
    unclaimable,
    validate,
)
from da.fleet import Fleet
from da.queue import errors as queue_errors
from da.queue import models
from da.queue.client import QueueClient
from da.queue.models import Task

LIST_LIMIT = 20

Emit = Callable[[str], None]
Ask = Callable[[str], Awaitable[str]]


class SkillsRunner(Protocol):
    """The `skills` sub-verbs (the terminal runs them over SSH)."""

    async def run(self, command: Command, fleet: Fleet, *, emit: Emit | None = None,
                  ask: Ask | None = None) -> views.View: ...


def build_payload(task_type: str, description: str, agent: str | None, cwd: str | None) -> dict[str, Any]:
    """The payload a handler expects, from a description and the assign flags.

    A type whose handler names a folder field gets --cwd there, asked for up front rather
    than queued to come back as needs_human.
    """
    from da import handlers

    folder = handlers.folder_fields().get(task_type)
    if folder:
        if not cwd:
            raise UsageError(f"type {task_type} needs the project folder: add --cwd=PATH.",
                             grammar.VERBS["assign"].usage)
        return {folder: cwd, "description": description}
    payload: dict[str, Any]
    if task_type == AGENT_RUN:
        payload = {"agent": agent, "prompt": description}
    elif task_type == RUN_SCRIPT:
        payload = {"script": description}
    else:
        payload = {"description": description}
    if cwd:
        payload["cwd"] = cwd
    return payload


class CommandLayer:
    """Every verb, over one queue client."""

    def __init__(self, client: QueueClient, *, router: Router | None = None,
                 skills: SkillsRunner | None = None) -> None:
        self.client = client
        self.router = router or RulesRouter()
        self.skills = skills

    async def run(self, command: Command, *, user: str | None = None, emit: Emit | None = None,
                  ask: Ask | None = None) -> Any:
        """Run a verb; a queue that does not answer becomes one plain sentence."""
        handler = getattr(self, f"verb_{command.verb}", None)
        if handler is None:
            return views.Message(f"{command.verb} runs only in the terminal client.", ok=False)
        try:
            return await handler(command, user=user, emit=emit, ask=ask)
        except queue_errors.QueueUnreachable:
            return views.Message(f"queue unreachable at {', '.join(self.client.urls)}.", ok=False)
        except queue_errors.QueueError as exc:
            return views.Message(exc.detail, ok=False)

    async def fleet(self) -> Fleet:
        return Fleet.from_json(await self.client.machines())

    # ---- read verbs ------------------------------------------------------------------

    async def verb_help(self, command: Command, **_: Any) -> views.Help:
        entries = tuple((verb.usage, verb.summary) for verb in grammar.VERBS.values())
        if command.words:
            verb = grammar.VERBS.get(command.words[0])
            if verb is None:
                raise UsageError(f"unknown command {command.words[0]!r}.", "help [verb]")
            return views.Help(entries, detail=f"{verb.usage}\n{verb.summary}")
        return views.Help(entries)

    async def verb_queue(self, command: Command, **_: Any) -> views.TaskList:
        status = command.options.get("status")
        limit = int(command.options.get("limit", LIST_LIMIT))
        tasks = await self.tasks(status, max(1, min(limit, models.MAX_LIMIT)))
        title = f"Queue ({status})" if status else "Queue"
        return views.TaskList("queue", title, tasks, "No tasks" + (f" with status {status}." if status else "."))

    async def verb_review(self, command: Command, **_: Any) -> views.TaskList:
        tasks = await self.tasks(models.NEEDS_HUMAN)
        return views.TaskList("review", "Needs a person", tasks, "Nothing needs a person.")

    async def verb_failures(self, command: Command, **_: Any) -> views.TaskList:
        return views.TaskList("failures", "Failed", await self.tasks(models.FAILED), "No failed tasks.")

    async def tasks(self, status: str | None, limit: int = LIST_LIMIT) -> tuple[Task, ...]:
        """The newest tasks (of one status), one page."""
        found, _cursor = await self.client.list_tasks(status=status, limit=limit)
        return tuple(found)

    async def verb_show(self, command: Command, **_: Any) -> views.TaskDetail:
        task, events = await self.client.task_with_events(command.words[0])
        waiting = None
        if task.status == models.PENDING:
            waiting = unclaimable(await self.fleet(), task.type, task.agent, task.target_machine)
        return views.TaskDetail(task, tuple(events), waiting)

    async def verb_status(self, command: Command, **_: Any) -> views.FleetStatus:
        return views.FleetStatus((await self.fleet()).machines, self.client.url)

    async def verb_skills(self, command: Command, *, emit: Emit | None = None, ask: Ask | None = None,
                          **_: Any) -> Any:
        if not command.words:
            return views.Skills((await self.fleet()).machines)
        if self.skills is None:
            return views.Message("skills commands need the skills registry (config/skills.yaml).", ok=False)
        return await self.skills.run(command, await self.fleet(), emit=emit, ask=ask)

    # ---- verbs that change state ------------------------------------------------------

    async def verb_assign(self, command: Command, *, user: str | None = None, **_: Any) -> Any:
        """With machine, agent and type all given: validate and queue. Else: a suggestion to confirm."""
        options = command.options
        request = views.AssignRequest(command.text, options.get("cwd"),
                                      int(options["priority"]) if "priority" in options else None, user,
                                      "wait_for_machine" in command.flags)
        fleet = await self.fleet()
        machine, agent, task_type = options.get("machine"), options.get("agent"), options.get("type")
        unknown = name_errors(fleet, task_type, machine, agent)
        if unknown:
            return views.Message(" ".join(unknown), ok=False)
        if machine and task_type and (agent or task_type != AGENT_RUN):
            return await self.create(Suggestion(task_type, machine, agent, "as given", "given"), request, fleet)
        suggestion = await self.router.suggest(request.description, fleet, machine=machine, agent=agent,
                                               task_type=task_type)
        if not suggestion.machine:
            return views.Message(f"No machine can take this: {'; '.join(suggestion.warnings)}.", ok=False)
        if "yes" in command.flags and not suggestion.ask:
            return await self.create(suggestion, request, fleet)
        return views.SuggestionView(suggestion, request, fleet.names, known_agents(fleet), known_types(fleet))

    async def create(self, suggestion: Suggestion, request: views.AssignRequest,
                     fleet: Fleet | None = None) -> views.Created | views.Message:
        """Validate a (confirmed) assignment and queue it pinned to its machine."""
        fleet = fleet or await self.fleet()
        verdict = validate(fleet, suggestion.type, suggestion.machine, suggestion.agent,
                           wait_for_machine=request.wait_for_machine)
        if not verdict.ok:
            return views.Message(" ".join(verdict.errors), ok=False)
        payload = build_payload(suggestion.type, request.description, suggestion.agent, request.cwd)
        machine = fleet.find(suggestion.machine)
        task = await self.client.create_task(
            suggestion.type, payload, target_machine=machine.name if machine else suggestion.machine,
            agent=suggestion.agent if suggestion.type == AGENT_RUN else None, created_by=request.created_by,
            priority=request.priority, notes=request.description[:200])
        return views.Created(task, verdict.warnings + suggestion.warnings)

    async def verb_resolve(self, command: Command, *, user: str | None = None, **_: Any) -> Any:
        target = command.words[0]
        status = command.words[1] if len(command.words) > 1 else models.DONE
        notes = command.options.get("notes")
        if target == "all":
            ids = tuple(task.id for task in await self.all_tasks(models.NEEDS_HUMAN))
            preview = views.BulkPreview(len(ids), models.NEEDS_HUMAN, status, ids)
            if "yes" not in command.flags:
                return preview
            return await self.resolve_exact(ids, status, user=user, notes=notes)
        task = await self.client.resolve(target, status, notes=notes, by=user)
        return views.Resolved(task)

    async def all_tasks(self, status: str) -> list[Task]:
        """Every task in `status`, page by page (newest first)."""
        found: list[Task] = []
        before: int | None = None
        while True:
            page, before = await self.client.list_tasks(status=status, limit=models.MAX_LIMIT, before=before)
            found += page
            if not page or before is None:
                return found

    async def resolve_exact(self, task_ids: tuple[str, ...] | list[str], status: str, *, user: str | None,
                            notes: str | None = None) -> views.BulkResolved:
        """Resolve exactly the tasks a preview listed; any that someone settled meanwhile are left alone."""
        moved = skipped = 0
        for task_id in task_ids:
            try:
                await self.client.resolve(task_id, status, notes=notes, by=user)
            except (queue_errors.Conflict, queue_errors.NotFound):
                skipped += 1
                continue
            moved += 1
        return views.BulkResolved(moved, models.NEEDS_HUMAN, status, skipped)

    async def verb_cancel(self, command: Command, *, user: str | None = None, **_: Any) -> views.TaskDetail:
        task = await self.client.cancel(command.words[0], by=user, notes=command.options.get("notes"))
        return views.TaskDetail(task)
