"""What a handler imports: its Result, the Context it runs in, NeedsHuman, payload fields, classification.

Handlers import this module (and `da.agents`, `da.queue.models`), never the worker: the worker
imports it too, so the dependency points one way and the front ends can read a handler's
declarations (TYPE, FOLDER_FIELD) without loading the worker.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from da import agents
from da.agents import AgentCommand

# Handlers return these; the queue's models are the one place statuses are spelled.
from da.queue.models import DONE as DONE
from da.queue.models import FAILED as FAILED
from da.queue.models import FOLDER_FIELDS as FOLDER_FIELDS
from da.queue.models import NEEDS_HUMAN as NEEDS_HUMAN


class NeedsHuman(Exception):
    """A person must act before this task can succeed; `action` says what to do."""

    def __init__(self, notes: str, action: str = "", result: dict | None = None) -> None:
        super().__init__(notes)
        self.notes = notes
        self.action = action
        self.result = result or {}


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


@dataclass(frozen=True)
class TurnOptions:
    """How a supervised agent turn runs: plan mode first, no questions (yolo), a budget, the ask timeout."""

    timeout: float
    plan: bool = False
    yolo: bool = False
    # None: the machine's DA_BUDGET_PER_TASK (no budget when that is unset).
    budget_usd: float | None = None
    # None: the machine's DA_ASK_TIMEOUT.
    ask_timeout: float | None = None


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

    async def supervised_turn(self, agent: str, prompt: str, *, cwd: Path | None, session_id: str | None,
                              options: TurnOptions) -> Result | None:
        """Run the agent over ACP, watched and answerable from the queue; None when it has no ACP command."""
        ...

    async def deliver(self, task_id: str, *, pr: bool, link: str | None = None) -> Result:
        """Push a finished agent task's branch from its worktree here (and with `pr` open its PR/MR, its body
        linking to `link`, the conversation the push was asked from, else the task's own)."""
        ...


# ---- payload fields: a bad payload is a person's to fix, said in one sentence -------------

# A day: longer than any build we know, short enough to catch a typo of extra zeros.
MAX_TIMEOUT = 86400.0


def text_field(payload: dict[str, Any], name: str, *, required: bool = False, default: str | None = None) -> str | None:
    """A string from the payload, or NeedsHuman naming the field."""
    value = payload.get(name)
    if value is None or value == "":
        if required:
            raise NeedsHuman(f"payload field '{name}' is required", f"resubmit the task with '{name}' set")
        return default
    if not isinstance(value, str):
        raise NeedsHuman(f"payload field '{name}' must be a string", f"resubmit the task with '{name}' as text")
    return value


def flag_field(payload: dict[str, Any], name: str) -> bool:
    """A true/false payload field (absent is false)."""
    value = payload.get(name, False)
    if not isinstance(value, bool):
        raise NeedsHuman(f"payload field '{name}' must be true or false", f"resubmit with '{name}' as a boolean")
    return value


def number_field(payload: dict[str, Any], name: str, unit: str) -> float | None:
    """A positive number from the payload (a budget in USD, seconds), or None when absent."""
    value = payload.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise NeedsHuman(f"payload field '{name}' must be a positive number of {unit}",
                         f"resubmit with '{name}' as a number")
    return float(value)


def timeout_field(payload: dict[str, Any], default: float) -> float:
    """The payload's `timeout` in seconds, else the handler's default."""
    value = payload.get("timeout")
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= MAX_TIMEOUT:
        raise NeedsHuman(f"payload field 'timeout' must be seconds between 1 and {MAX_TIMEOUT:g}",
                         "resubmit with a number of seconds")
    return float(value)


# ---- classification: done / failed / needs_human with one line of notes and an action -----
# The rules are the ones a person applies when reading a failed job: a missing tool or login
# is theirs to fix (needs_human); a real non-zero exit is a failure to read (failed).

# A 401/403 counts only as a status (after HTTP/1.1, status, code or error, or before its reason), not
# any "403" in the output: a path like /tmp/pytest-403/ or a line number is no refusal.
AUTH_REFUSED = re.compile(r"(?:\bHTTP/[\d.]+|\bstatus(?: code)?|\bcode|\berror)\W{0,3}E?(?:401|403)\b"
                          r"|\b(?:401|403)\W{0,3}(?:unauthori[sz]ed|forbidden)"
                          r"|unauthori[sz]ed|forbidden|invalid api key|invalid x-api-key", re.IGNORECASE)


def first_error_line(process: ProcessResult) -> str:
    """The line a person would read first: an error-looking line of stderr, else the last line."""
    lines = [line.strip() for line in (process.stderr or process.stdout).splitlines() if line.strip()]
    for line in lines:
        if re.search(r"error|fatal|failed|exception|traceback", line, re.IGNORECASE):
            return line[:300]
    return lines[-1][:300] if lines else ""


def classify(process: ProcessResult, *, machine: str, tool: str, agent: str | None = None) -> Result:
    """The outcome of a process run for a task."""
    details = process.to_json()
    seconds = f"{process.duration:.1f}s"
    if process.timed_out:
        return Result(NEEDS_HUMAN, f"{tool} timed out after {process.timeout:g}s on {machine}",
                      f"raise the payload's timeout (now {process.timeout:g}s) or split the task", details)
    if process.returncode == 0:
        return Result(DONE, f"{tool} finished in {seconds}", "", details)
    output = f"{process.stderr}\n{process.stdout}"
    if process.not_found:
        # Only the program the handler started is named as missing: a 127 from inside a
        # script or wrapper ("sh: run: not found") is that script's error, read below.
        return Result(NEEDS_HUMAN, f"{process.not_found} is not installed on {machine}",
                      f"install it: da skills install {machine} {process.not_found}", details)
    if agent and agents.NOT_LOGGED_IN.search(output):
        login = agents.login_hint(agent)
        return Result(NEEDS_HUMAN, f"{agent} is not logged in on {machine}",
                      f"log in on {machine}: run `{login}` there, then retry", details)
    if AUTH_REFUSED.search(output):
        return Result(NEEDS_HUMAN, f"{tool} was refused (401/403) on {machine}",
                      "check the token or API key it uses, then retry", details)
    line = first_error_line(process)
    notes = f"{tool} exited {process.returncode}" + (f": {line}" if line else "")
    return Result(FAILED, notes[:400], f"read the error: {line}" if line else f"see the log {process.log_path}",
                  details)
