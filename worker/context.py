"""The context a handler runs in: its machine, the process runner and the task's progress."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from da.agents import AgentCommand
from da.handlers import api
from da.handlers.api import NeedsHuman, ProcessResult, Result
from da.worker import orphans, report, runner
from da.worker.settings import WorkerSettings

# Progress lines are shown in Slack cards; one line is enough.
MAX_PROGRESS = 300


class TaskContext:
    """Given to `handler.run(ctx, payload)`; records the last output line as progress."""

    def __init__(self, settings: WorkerSettings, task_id: str, task_type: str) -> None:
        self.settings = settings
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
