"""Turn a finished process into done / failed / needs_human with one line of notes and an action.

The rules are the ones a person applies when reading a failed job: a missing tool or login
is theirs to fix (needs_human); a real non-zero exit is a failure to read (failed).
"""

from __future__ import annotations

import re

from da import agents
from da.queue.models import DONE, FAILED, NEEDS_HUMAN
from da.worker.models import ProcessResult, Result

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
