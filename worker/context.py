"""The context a handler runs in: its machine, the process runner and the task's progress."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

from da.agents import AgentCommand
from da.handlers import api
from da.handlers.api import NeedsHuman, ProcessResult, Result, TurnOptions
from da.queue import models
from da.queue.client import QueueClient
from da.worker import agent_session, later, orphans, report, runner, supervision
from da.worker.settings import WorkerSettings

# Progress lines are shown in Slack cards; one line is enough.
MAX_PROGRESS = 300


class TaskContext:
    """Given to `handler.run(ctx, payload)`; records the last output line as progress."""

    def __init__(self, settings: WorkerSettings, task_id: str, task_type: str, *,
                 client: QueueClient | None = None, lease: str = "") -> None:
        self.settings = settings
        self.client = client
        self.lease = lease
        # The supervised agent session running now: the heartbeat hands it steering messages and cancels it.
        self.session: agent_session.AgentSession | None = None
        # Set when a session starts, so a heartbeat held without messages is sent again asking for them.
        self.session_started = asyncio.Event()
        self.machine = settings.machine
        self.agents = settings.agents
        self.task_id = task_id
        self.task_type = task_type
        self.progress: str | None = None
        self.runs = 0

    def _note_line(self, line: str) -> None:
        # Sent with every heartbeat: a NUL would make the queue's database refuse it.
        self.progress = report.storable(line[:MAX_PROGRESS])

    def state_file(self, name: str) -> Path:
        """A file a handler keeps between tasks on this machine (beside the task logs)."""
        return self.settings.log_dir / name

    def classify(self, process: ProcessResult, tool: str, agent: str | None = None) -> Result:
        """done / failed / needs_human for a finished process, with notes and an action."""
        return api.classify(process, machine=self.machine, tool=tool, agent=agent)

    def setting(self, key: str, default: str = "") -> str:
        """A value a handler may need (GROQ_API_KEY, GROQ_BASE_URL ...), read once at start."""
        return self.settings.extra.get(key) or default

    def agent_command(self, agent: str) -> AgentCommand | None:
        return self.settings.agent_commands.get(agent)

    async def supervised_turn(self, agent: str, prompt: str, *, cwd: Path | None, session_id: str | None,
                              options: TurnOptions) -> Result | None:
        """Run the agent over ACP with its progress and asks on the task; None when it has no ACP command
        (or this context has no queue to report to), so the handler runs it headless."""
        command = agent_session.acp_command(agent, self.settings.acp_commands,
                                            path=self.settings.process_env.get("PATH"), own_cli=False)
        if command is None or self.client is None:
            return None
        settings = self.settings
        budget = options.budget_usd if options.budget_usd is not None else settings.budget_per_task
        policy = agent_session.Policy(settings.policy.allow, settings.policy.ask, settings.policy.refuse,
                                      yolo=options.yolo)
        request = agent_session.TurnRequest(
            command=command, cwd=cwd or Path.cwd(), prompt=prompt, session_id=session_id, plan=options.plan,
            policy=policy, ask_timeout=options.ask_timeout or settings.ask_timeout, budget_usd=budget,
            timeout=options.timeout, env=settings.process_env, redact=settings.redactor,
            book=orphans.ProcessBook.of(settings.log_dir, self.machine), task_id=self.task_id)
        self.session = agent_session.AgentSession(request, supervision.QueueReporter(self.client, self.task_id,
                                                                                     self.lease))
        self.session_started.set()
        try:
            turn = await self.session.run()
        finally:
            self.session = None
            self.session_started.clear()
        return turn_result(agent, turn, yolo=options.yolo, budget=budget)

    async def deliver(self, task_id: str, *, pr: bool, link: str | None = None) -> Result:
        """Push a finished agent task's branch from its worktree on this machine (with `pr`, open its PR/MR) and
        keep what changed on that task (`worker/later.py`)."""
        if self.client is None:
            raise NeedsHuman("this worker has no queue to read the task from", "run it from a `da worker`")
        return await later.deliver(self.client, self.settings.workspaces, task_id, machine=self.machine, pr=pr,
                                   link=link)

    def check_cwd(self, cwd: str | None, field_name: str = "cwd") -> Path | None:
        """The payload's folder with ~ expanded; a missing one is a needs_human, not a traceback."""
        if cwd is None or cwd == "":
            return None
        if not isinstance(cwd, str):
            raise NeedsHuman(f"payload field '{field_name}' must be a path string", "fix the payload and resubmit")
        if "\x00" in cwd:
            raise NeedsHuman(f"payload field '{field_name}' contains a NUL byte", "fix the path and resubmit")
        path = Path(cwd).expanduser()
        if not path.is_dir():
            raise NeedsHuman(f"{field_name} {cwd} does not exist on {self.machine}",
                             f"create or clone it on {self.machine}, or fix the path, then retry")
        return path

    async def run(self, argv: list[str] | str, *, cwd: Path | str | None = None, timeout: float,
                  env: dict[str, str] | None = None, shell: bool = False,
                  watch: Callable[[str], str | None] | None = None) -> ProcessResult:
        """Run a process for this task; its full log goes to the worker's log folder.

        `watch` sees each output line as it comes and returns the progress text to show for it
        (None keeps the last), for tools whose lines are events rather than prose.
        """
        self.runs += 1
        suffix = f"-{self.runs}" if self.runs > 1 else ""
        log_path = (self.settings.log_dir / f"{self.task_id[:8]}-{self.task_type}{suffix}.log").resolve()
        process_env = dict(self.settings.process_env)
        process_env.update(env or {})
        return await runner.run_process(argv, cwd=Path(cwd) if cwd else None, env=process_env, timeout=timeout,
                                        log_path=log_path, redact=self.settings.redactor, shell=shell,
                                        on_line=self._note_line if watch is None else None,
                                        on_stdout_line=None if watch is None else self._watched(watch),
                                        log_max_bytes=self.settings.log_max_bytes,
                                        book=orphans.ProcessBook.of(self.settings.log_dir, self.machine),
                                        task_id=self.task_id)

    def _watched(self, watch: Callable[[str], str | None]) -> Callable[[str], None]:
        def note(line: str) -> None:
            shown = watch(line)
            if shown:
                self._note_line(shown)
        return note


def turn_result(agent: str, turn: agent_session.TurnResult, *, yolo: bool, budget: float | None) -> Result:
    """A supervised turn as the task's result: the answer, session, usage and how it ran."""
    details = turn.to_details()
    if yolo:
        details["supervised"] = False
        details["supervision_notes"] = [*turn.notes, "ran with --yolo: no tool call was asked about"]
    if turn.status == models.DONE:
        cost = turn.usage.cost_usd
        spent = f", ${cost:.2f}" if cost is not None else ""
        return Result(models.DONE, f"{agent} answered (supervised{' with --yolo' if yolo else ''}{spent})", "",
                      details)
    if turn.status == models.NEEDS_HUMAN and budget is not None:
        return Result(models.NEEDS_HUMAN, turn.reason[:400], f"raise the task's budget (now ${budget:.2f}) and "
                      "send a follow-up to go on", details)
    if turn.status == models.CANCELLED:
        return Result(models.CANCELLED, turn.reason[:400], "", details)
    return Result(turn.status, turn.reason[:400] or f"{agent} stopped", "read the result's stderr and the "
                  "answer so far", details)
