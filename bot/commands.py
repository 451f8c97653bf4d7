"""The command layer: one implementation of every verb for both front ends.

It turns a parsed Command into calls on the queue client and returns plain data (views);
Slack and the terminal only draw what it returns.
"""

from __future__ import annotations

import shlex
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from da import agents, handlers
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
from da.fleet import Fleet, Machine
from da.handlers import deliver as deliver_handler
from da.queue import errors as queue_errors
from da.queue import models
from da.queue.client import QueueClient
from da.queue.models import Task

LIST_LIMIT = 20

Emit = Callable[[str], None]
Ask = Callable[[str], Awaitable[str]]


@dataclass(frozen=True)
class Origin:
    """What a front end brings beside the words: files attached to the request, and the link to the
    conversation it came from (a pull request's body links back to it)."""

    attachments: tuple[dict[str, Any], ...] = ()
    thread_url: str | None = None

    def payload_fields(self) -> dict[str, Any]:
        """The agent task's payload fields that carry it."""
        fields: dict[str, Any] = {"attachments": list(self.attachments)} if self.attachments else {}
        if self.thread_url:
            fields["thread_url"] = self.thread_url
        return fields


@dataclass(frozen=True)
class Call:
    """One run of a verb: the parsed command, who asked, and how to talk back while it runs."""

    command: Command
    user: str | None = None
    emit: Emit | None = None
    ask: Ask | None = None
    origin: Origin = Origin()


VerbFunction = Callable[["CommandLayer", Call], Awaitable[views.View]]
F = TypeVar("F", bound=VerbFunction)
# Every verb the command layer runs, by name: filled by @verb, read by CommandLayer.run.
VERB_FUNCTIONS: dict[str, VerbFunction] = {}


def verb(name: str) -> Callable[[F], F]:
    """Make a function the one that runs `name`, a verb the grammar declares (and not a terminal-only one)."""
    declared = grammar.VERBS.get(name)
    if declared is None:
        raise ValueError(f"{name!r} is not a verb: declare it in grammar.VERBS first.")
    if declared.local:
        raise ValueError(f"{name!r} runs only in the terminal client: its function goes in terminal/local.py.")

    def register(function: F) -> F:
        if name in VERB_FUNCTIONS:
            raise ValueError(f"verb {name!r} has two functions.")
        VERB_FUNCTIONS[name] = function
        return function
    return register


class SkillsRunner(Protocol):
    """The `skills` sub-verbs (the terminal runs them over SSH)."""

    async def run(self, command: Command, fleet: Fleet, *, emit: Emit | None = None,
                  ask: Ask | None = None) -> views.View: ...


def build_payload(task_type: str, description: str, agent: str | None, cwd: str | None) -> dict[str, Any]:
    """The payload a handler expects, from a description and the assign flags.

    A type whose handler names a folder field gets --cwd there, asked for up front rather
    than queued to come back as needs_human.
    """
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
                  ask: Ask | None = None, origin: Origin = Origin()) -> views.View:
        """Run a verb; a queue that does not answer becomes one plain sentence."""
        function = VERB_FUNCTIONS.get(command.verb)
        if function is None:
            return views.Message(f"{command.verb} runs only in the terminal client.", ok=False)
        try:
            return await function(self, Call(command, user, emit, ask, origin))
        except queue_errors.QueueUnreachable:
            return views.Message(f"queue unreachable at {', '.join(self.client.urls)}.", ok=False)
        except queue_errors.QueueError as exc:
            return views.Message(exc.detail, ok=False)

    async def fleet(self) -> Fleet:
        return Fleet.from_json(await self.client.machines())

    # ---- read verbs ------------------------------------------------------------------

    @verb("help")
    async def help(self, call: Call) -> views.Help:
        entries = tuple((declared.usage, declared.summary) for declared in grammar.VERBS.values())
        if call.command.words:
            declared = grammar.VERBS.get(call.command.words[0].lower())
            if declared is None:
                raise UsageError(f"unknown command {call.command.words[0]!r}.", call.command.usage())
            return views.Help(entries, detail=declared.help)
        return views.Help(entries)

    @verb("queue")
    async def queue(self, call: Call) -> views.TaskList:
        status = call.command.options.get("status")
        limit = int(call.command.options.get("limit", LIST_LIMIT))
        tasks = await self.tasks(status, max(1, min(limit, models.MAX_LIMIT)))
        title = f"Queue ({status})" if status else "Queue"
        return views.TaskList("queue", title, tasks, "No tasks" + (f" with status {status}." if status else "."))

    @verb("review")
    async def review(self, call: Call) -> views.TaskList:
        tasks = await self.tasks(models.NEEDS_HUMAN)
        return views.TaskList("review", "Needs a person", tasks, "Nothing needs a person.")

    @verb("failures")
    async def failures(self, call: Call) -> views.TaskList:
        return views.TaskList("failures", "Failed", await self.tasks(models.FAILED), "No failed tasks.")

    async def tasks(self, status: str | None, limit: int = LIST_LIMIT) -> tuple[Task, ...]:
        """The newest tasks (of one status), one page."""
        found, _cursor = await self.client.list_tasks(status=status, limit=limit)
        return tuple(found)

    @verb("show")
    async def show(self, call: Call) -> views.TaskDetail:
        task, events, asks = await self.client.task_details(call.command.words[0])
        waiting = None
        if task.status == models.PENDING:
            waiting = unclaimable(await self.fleet(), task.type, task.agent, task.target_machine)
        return views.TaskDetail(task, tuple(events), waiting, tuple(asks))

    @verb("diff")
    async def diff(self, call: Call) -> views.TaskDiff | views.Message:
        task = await self.client.get_task(call.command.words[0])
        result = task.result or {}
        if "workspace" not in result:
            return views.Message(f"task {task.short_id} has no workspace diff (it is {task.status}; only a finished "
                                 "agent task on a git repository has one).", ok=False)
        return views.TaskDiff(task, str(result.get("diff") or ""), str(result.get("diff_truncated") or ""))

    @verb("attach")
    async def attach(self, call: Call) -> views.Attach | views.Message:
        task = await self.client.get_task(call.command.words[0])
        space = (task.result or {}).get("workspace") or {}
        if not space.get("path") or not task.assigned_to:
            return views.Message(f"task {task.short_id} has no worktree to attach to (it is {task.status}; only an "
                                 "agent task on a git repository that has run has one).", ok=False)
        machine = (await self.fleet()).find(task.assigned_to) or Machine(task.assigned_to)
        steps, ssh_argv = attach_commands(machine, str(space["path"]), str(task.payload.get("agent") or ""),
                                          (task.result or {}).get("session_id"))
        return views.Attach(task, machine.name, str(space["path"]), steps, ssh_argv)

    @verb("push")
    async def push(self, call: Call) -> views.Pushed | views.Message:
        """Queue a `deliver` task on the machine holding the finished task's worktree and wait for its outcome."""
        task = await self.client.get_task(call.command.words[0])
        pr = "pr" in call.command.flags
        refusal = push_refusal(task, pr=pr)
        if refusal is not None:
            return refusal
        machine = str(task.assigned_to)
        space = (task.result or {}).get("workspace") or {}
        job = await self.client.create_task(
            deliver_handler.TYPE, {"task": task.id, "pr": pr, "cwd": str(space.get("path") or ""),
                                   **call.origin.payload_fields()},
            target_machine=machine, created_by=call.user, priority=PUSH_PRIORITY,
            notes=f"push task {task.short_id}" + (" and open its pull/merge request" if pr else ""))
        known = (await self.fleet()).find(machine)
        if known is None or not known.online:
            return views.Pushed(f"{machine}, which holds the worktree of task {task.short_id}, is offline: the push "
                                f"waits in the queue as task {job.short_id} and runs when its worker is back "
                                f"(`da show {job.short_id}` says how it went).", False, task, job)
        if call.emit is not None:
            call.emit(f"pushing {space.get('branch') or task.short_id} on {machine} (task {job.short_id})…")
        if (await self.client.wait_for_status(job.id, models.TERMINAL, PUSH_WAIT)).status not in models.TERMINAL:
            return views.Pushed(f"the push of task {task.short_id} is still running on {machine} as task "
                                f"{job.short_id}; `da show {job.short_id}` says how it went.", False, task, job)
        job, task = await self.client.get_task(job.id), await self.client.get_task(task.id)
        return views.Pushed(pushed_sentence(task, job), job.status == models.DONE, task, job)

    @verb("status")
    async def status(self, call: Call) -> views.FleetStatus:
        return views.FleetStatus((await self.fleet()).machines, self.client.url)

    @verb("skills")
    async def skills_verb(self, call: Call) -> views.View:
        if not call.command.words:
            return views.Skills((await self.fleet()).machines)
        if self.skills is None:
            return views.Message("skills commands need the skills registry (config/skills.yaml).", ok=False)
        return await self.skills.run(call.command, await self.fleet(), emit=call.emit, ask=call.ask)

    # ---- verbs that change state ------------------------------------------------------

    @verb("assign")
    async def assign(self, call: Call) -> views.View:
        """With machine, agent and type all given: validate and queue. Else: a suggestion to confirm."""
        command, options = call.command, call.command.options
        request = views.AssignRequest(command.text, options.get("cwd") or options.get("repo"),
                                      int(options["priority"]) if "priority" in options else None, call.user,
                                      "wait_for_machine" in command.flags, options.get("base"),
                                      "push" in command.flags, "pr" in command.flags, command.values("repo"))
        fleet = await self.fleet()
        machine, agent, task_type = options.get("machine"), options.get("agent"), options.get("type")
        unknown = name_errors(fleet, task_type, machine, agent)
        if unknown:
            return views.Message(" ".join(unknown), ok=False)
        if machine and task_type and (agent or task_type != AGENT_RUN):
            return await self.create(Suggestion(task_type, machine, agent, "as given", "given"), request, fleet,
                                     origin=call.origin)
        suggestion = await self.router.suggest(request.description, fleet, machine=machine, agent=agent,
                                               task_type=task_type)
        if not suggestion.machine:
            return views.Message(f"No machine can take this: {'; '.join(suggestion.warnings)}.", ok=False)
        if "yes" in command.flags and not suggestion.ask:
            return await self.create(suggestion, request, fleet, origin=call.origin)
        return views.SuggestionView(suggestion, request, fleet.names, known_agents(fleet), known_types(fleet))

    async def create(self, suggestion: Suggestion, request: views.AssignRequest, fleet: Fleet | None = None, *,
                     origin: Origin = Origin()) -> views.Created | views.Message:
        """Validate a (confirmed) assignment and queue it pinned to its machine."""
        fleet = fleet or await self.fleet()
        verdict = validate(fleet, suggestion.type, suggestion.machine, suggestion.agent,
                           wait_for_machine=request.wait_for_machine)
        if not verdict.ok:
            return views.Message(" ".join(verdict.errors), ok=False)
        payload = build_payload(suggestion.type, request.description, suggestion.agent, request.cwd)
        if suggestion.type == AGENT_RUN:
            payload.update({key: value for key, value in (("base", request.base), ("push", request.push),
                                                          ("pr", request.pr)) if value})
            if len(request.repos) > 1:
                payload["repos"] = list(request.repos)
            payload.update(origin.payload_fields())
        machine = fleet.find(suggestion.machine)
        task = await self.client.create_task(
            suggestion.type, payload, target_machine=machine.name if machine else suggestion.machine,
            agent=suggestion.agent if suggestion.type == AGENT_RUN else None, created_by=request.created_by,
            priority=request.priority, notes=request.description[:200])
        return views.Created(task, verdict.warnings + suggestion.warnings)

    @verb("resolve")
    async def resolve(self, call: Call) -> views.View:
        command, user = call.command, call.user
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

    @verb("cancel")
    async def cancel(self, call: Call) -> views.TaskDetail:
        command = call.command
        task = await self.client.cancel(command.words[0], by=call.user, notes=command.options.get("notes"))
        return views.TaskDetail(task)

    # ---- supervised agent sessions ------------------------------------------------------

    @verb("asks")
    async def asks(self, call: Call) -> views.AskList:
        found = tuple(await self.client.open_asks())
        return views.AskList(views.asks_summary(found), asks=found)

    @verb("approve")
    async def approve(self, call: Call) -> views.Message:
        return await self.decide(call, APPROVING, "approve")

    @verb("deny")
    async def deny(self, call: Call) -> views.Message:
        return await self.decide(call, DENYING, "deny")

    async def decide(self, call: Call, words: tuple[str, ...], what: str) -> views.Message:
        """Answer an ask (the named one, else the task's oldest open one) with its option that approves or
        denies: the first option whose id or label starts with one of `words`."""
        command = call.command
        ask = await self.open_ask(command.words[0], command.words[1] if len(command.words) > 1 else None)
        option = next((option for word in words for option in ask.options
                       if option.id.lower().startswith(word) or option.label.lower().startswith(word)), None)
        if option is None:
            choices = ", ".join(option.id for option in ask.options)
            return views.Message(f"ask {ask.id} of task {ask.task_id[:8]} has no option to {what}; answer it with "
                                 f"`da answer {ask.task_id[:8]} <option>`, one of {choices}.", ok=False)
        answer = await self.client.answer_ask(ask.task_id, ask.id, option.id, note=command.options.get("notes"),
                                              by=call.user)
        return views.Message(views.answered(answer))

    @verb("answer")
    async def answer(self, call: Call) -> views.Message:
        command = call.command
        choice = command.words[1]
        asks = views.open_asks(await self.client.asks(command.words[0]))
        ask = next((ask for ask in asks if any(choice in (option.id, option.label) for option in ask.options)), None)
        if ask is None:
            if not asks:
                return views.Message(f"task {command.words[0]} has no open ask.", ok=False)
            choices = ", ".join(option.id for option in asks[0].options)
            return views.Message(f"no open ask of task {command.words[0]} has the option {choice!r}; its ask "
                                 f"{asks[0].id} takes one of {choices}.", ok=False)
        option = next(option for option in ask.options if choice in (option.id, option.label))
        answer = await self.client.answer_ask(ask.task_id, ask.id, option.id, note=command.options.get("notes"),
                                              by=call.user)
        return views.Message(views.answered(answer))

    async def open_ask(self, task_id: str, number: str | None) -> models.Ask:
        """The ask a verb names, else the task's oldest open one; a UsageError says what is there instead."""
        asks = await self.client.asks(task_id)
        if number is not None:
            if not number.isdigit():
                raise UsageError(f"{number!r} is not an ask number; `da show {task_id}` lists them as 1, 2, ...",
                                 grammar.VERBS["approve"].usage)
            found = next((ask for ask in asks if ask.id == int(number)), None)
            if found is None:
                raise queue_errors.NotFound(f"task {task_id} has no ask {number}; `da show {task_id}` lists its asks.")
            return found
        waiting = views.open_asks(asks)
        if not waiting:
            raise queue_errors.Conflict(f"task {task_id} has no open ask.")
        return waiting[0]

    @verb("watch")
    async def watch(self, call: Call) -> views.TaskDetail:
        """Follow the task's progress, emitting what changed, until it ends; then show it."""
        task_id = call.command.words[0]
        rev, status = -1, None
        while True:
            progress = await self.client.follow_progress(task_id, after=rev, status=status, wait=WATCH_WAIT)
            if call.emit is not None and (progress.progress_rev != rev or progress.status != status):
                call.emit(f"{progress.task_id[:8]} {progress.status}"
                          + (f": {progress.line}" if progress.line and not progress.record else ""))
                for line in views.progress_lines(progress.record, progress.usage, progress.asks):
                    call.emit(line)
            rev, status = progress.progress_rev, progress.status
            if status in models.TERMINAL:
                task, events, asks = await self.client.task_details(progress.task_id)
                return views.TaskDetail(task, tuple(events), asks=tuple(asks))

    @verb("say")
    async def say(self, call: Call) -> views.Message:
        command = call.command
        text = command.text.split(None, 1)[1]
        interrupt = "interrupt" in command.flags
        message = await self.client.send_message(command.words[0], text, interrupt=interrupt, by=call.user)
        when = "now, interrupting its turn" if interrupt else "at the end of its current turn"
        return views.Message(f"task {message.task_id[:8]} will get your message {when}.")


# Words that start an approving or a denying option (ACP's allow_once/reject_once, a plan's approve/changes).
APPROVING = ("allow", "approve", "yes", "accept")
DENYING = ("reject", "deny", "no", "changes", "decline")
# `da watch` long-polls the task's progress this long at a time.
WATCH_WAIT = 30.0

# A person waits on a push: it goes before routine work queued on that machine.
PUSH_PRIORITY = 8
# How long `push` waits for the machine to push and open the PR/MR before saying where to look later.
PUSH_WAIT = 600.0


def push_refusal(task: Task, *, pr: bool) -> views.Message | None:
    """Why a finished task's work cannot be pushed (or needs no push), in one sentence; None when it can."""
    result = task.result or {}
    space = result.get("workspace")
    if task.status not in models.TERMINAL:
        return views.Message(f"task {task.short_id} is still {task.status}; push it once it has finished "
                             f"(`da watch {task.short_id}`).", ok=False)
    if not isinstance(space, dict) or not space.get("path") or not task.assigned_to:
        return views.Message(f"task {task.short_id} has no worktree to push (it is {task.status}; only an agent "
                             "task that ran on a git repository has one).", ok=False)
    if space.get("changed") is False:
        return views.Message(f"task {task.short_id} changed nothing on {space.get('branch')}; there is nothing to "
                             "push.", ok=False)
    if pr and space.get("pr_url"):
        return views.Message(f"task {task.short_id} already has its pull request: {space['pr_url']}")
    return None


def pushed_sentence(task: Task, job: Task) -> str:
    """The outcome of a deliver task, as one sentence (with what to do when it did not push)."""
    result = job.result or {}
    if job.status == models.DONE:
        return f"task {task.short_id}: {job.notes or 'pushed'}."
    action = result.get("action")
    return (f"task {task.short_id} was not pushed: {job.notes or job.status}"
            + (f"; {action}." if action else "."))


def attach_commands(machine: Machine, worktree: str, agent: str,
                    session: Any) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(the lines a person types, ssh's argv doing the same): ssh to the machine, cd to the worktree, and
    resume the agent's session (interactively) when the agent can."""
    target = f"{machine.user}@{machine.address}" if machine.user else machine.address
    login = ["ssh", *(["-p", str(machine.ssh_port)] if machine.ssh_port != 22 else []), target]
    spec = agents.DEFAULT_COMMANDS.get(agent)
    resume: list[str] = []
    if spec is not None:
        resume = [spec.program]
        if isinstance(session, str) and agents.SESSION_ID.fullmatch(session) and spec.resume:
            resume += [part.replace(agents.SESSION, session) for part in spec.resume]
    steps = [shlex.join(login), f"cd {shlex.quote(worktree)}", *([shlex.join(resume)] if resume else [])]
    remote = " && ".join(steps[1:] + ([] if resume else ["exec $SHELL -l"]))
    return tuple(steps), (login[0], "-t", *login[1:], remote)
