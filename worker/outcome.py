"""Turn a finished process into done / failed / needs_human with one line of notes and an action.

The rules are the ones a person applies when reading a failed job: a missing tool or login
is theirs to fix (needs_human); a real non-zero exit is a failure to read (failed).
"""

from __future__ import annotations

import re

from da.worker.models import DONE, FAILED, NEEDS_HUMAN, ProcessResult, Result

NOT_FOUND = re.compile(r"command not found|not found: |No such file or directory.*(?:exec|spawn)|"
                       r"is not recognized as an internal", re.IGNORECASE)
NOT_LOGGED_IN = re.compile(r"not logged in|please (?:log ?in|login|run .*login)|login required|"
                           r"authentication required|not authenticated|run `?\w+ (?:auth )?login", re.IGNORECASE)
AUTH_REFUSED = re.compile(r"\b(?:401|403)\b|unauthori[sz]ed|forbidden|invalid api key|invalid x-api-key",
                          re.IGNORECASE)

LOGIN_COMMANDS = {"claude": "claude /login", "gemini": "gemini (then choose a login method)",
                  "codex": "codex login", "groq": "set GROQ_API_KEY in .env"}


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
    if process.not_found or process.returncode == 127 or NOT_FOUND.search(process.stderr):
        missing = process.not_found or tool
        return Result(NEEDS_HUMAN, f"{missing} is not installed on {machine}",
                      f"install it: da skills install {machine} {missing}", details)
    if agent and NOT_LOGGED_IN.search(output):
        login = LOGIN_COMMANDS.get(agent, f"{agent} login")
        return Result(NEEDS_HUMAN, f"{agent} is not logged in on {machine}",
                      f"log in on {machine}: run `{login}` there, then retry", details)
    if AUTH_REFUSED.search(output):
        return Result(NEEDS_HUMAN, f"{tool} was refused (401/403) on {machine}",
                      "check the token or API key it uses, then retry", details)
    line = first_error_line(process)
    notes = f"{tool} exited {process.returncode}" + (f": {line}" if line else "")
    return Result(FAILED, notes[:400], f"read the error: {line}" if line else f"see the log {process.log_path}",
                  details)
