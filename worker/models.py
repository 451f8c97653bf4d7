"""What handlers return and receive: the Result of a task and the context it runs in."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

# Handlers return these; the queue's models are the one place statuses are spelled.
from da.queue.models import DONE as DONE
from da.queue.models import FAILED as FAILED
from da.queue.models import NEEDS_HUMAN as NEEDS_HUMAN

if TYPE_CHECKING:
    from da.agents import AgentCommand


@dataclass
class Result:
    """A handler's outcome: status, what happened (notes), what to do (action), and details."""

    status: str
    notes: str = ""
    action: str = ""
    details: dict[str, Any] = field(default_factory=dict)


@dataclass
class ProcessResult:
    """A finished subprocess: exit code, output tails, and where the full log is."""

    returncode: int | None
    stdout: str
    stderr: str
    stdout_cut: int = 0
    stderr_cut: int = 0
    timed_out: bool = False
    timeout: float = 0.0
    duration: float = 0.0
    log_path: str = ""
    not_found: str = ""

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"returncode": self.returncode, "stdout": self.stdout, "stderr": self.stderr,
                                "duration": round(self.duration, 3), "log_path": self.log_path}
        if self.stdout_cut:
            data["stdout_truncated"] = f"first {self.stdout_cut} bytes cut; full output in {self.log_path}"
        if self.stderr_cut:
            data["stderr_truncated"] = f"first {self.stderr_cut} bytes cut; full output in {self.log_path}"
        if self.timed_out:
            data["timed_out"] = True
        return data


class Context(Protocol):
    """What a handler may use: the machine it runs on, its settings and the process runner."""

    machine: str
    agents: tuple[str, ...]
    task_id: str

    async def run(self, argv: list[str] | str, *, cwd: Path | str | None = None, timeout: float,
                  env: dict[str, str] | None = None, shell: bool = False,
                  watch: Callable[[str], str | None] | None = None) -> ProcessResult: ...

    def state_file(self, name: str) -> Path: ...

    def check_cwd(self, cwd: str | None, field_name: str = "cwd") -> Path | None: ...

    def agent_command(self, agent: str) -> AgentCommand | None: ...

    def setting(self, key: str, default: str = "") -> str: ...

    def classify(self, process: ProcessResult, tool: str, agent: str | None = None) -> Result: ...


# ---- payload fields: a bad payload is a person's to fix, said in one sentence -------------

# A day: longer than any build we know, short enough to catch a typo of extra zeros.
MAX_TIMEOUT = 86400.0


def text_field(payload: dict[str, Any], name: str, *, required: bool = False, default: str | None = None) -> str | None:
    """A string from the payload, or NeedsHuman naming the field."""
    from da.worker.errors import NeedsHuman

    value = payload.get(name)
    if value is None or value == "":
        if required:
            raise NeedsHuman(f"payload field '{name}' is required", f"resubmit the task with '{name}' set")
        return default
    if not isinstance(value, str):
        raise NeedsHuman(f"payload field '{name}' must be a string", f"resubmit the task with '{name}' as text")
    return value


def timeout_field(payload: dict[str, Any], default: float) -> float:
    """The payload's `timeout` in seconds, else the handler's default."""
    from da.worker.errors import NeedsHuman

    value = payload.get("timeout")
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= MAX_TIMEOUT:
        raise NeedsHuman(f"payload field 'timeout' must be seconds between 1 and {MAX_TIMEOUT:g}",
                         "resubmit with a number of seconds")
    return float(value)
