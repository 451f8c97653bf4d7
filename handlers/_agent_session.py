"""Reading what an agent CLI said (its answer, its session) and which session a resumed one became.

Internals of `agent_run`: the front ends and the worker never need them.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass
class Reply:
    """What an agent said in one run: its final answer, the session to resume, an error it reported."""

    answer: str = ""
    session_id: str | None = None
    error: str = ""


# Lines some CLI versions print on stdout before the answer (gemini: its login and tool cache).
STARTUP_NOISE = re.compile(r"Loaded cached credentials\.|File .+ has been cached")


def _json_object(line: str) -> dict[str, Any] | None:
    if not line.startswith("{"):
        return None
    try:
        value = json.loads(line)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _first_line(text: str) -> str | None:
    return next((line.strip() for line in text.splitlines() if line.strip()), None)


class ReplyReader:
    """Reads an agent's output line by line while it runs, for the answer, session and progress.

    Claude Code with `--output-format json` ends with one result object (`result`, `session_id`,
    `is_error`); `codex exec --json` prints JSONL events (`thread.started` names the thread, the
    last completed `agent_message` item is the answer, tool calls are items too). Anything else is
    plain text and the answer is stdout. Reading as lines stream keeps the session id even when the
    stored stdout tail has lost the first lines of a long run.
    """

    def __init__(self) -> None:
        self.reply = Reply()
        self.structured = False

    def feed(self, line: str) -> str | None:
        """Take one output line; returns the progress text it is worth showing, or None."""
        event = _json_object(line)
        kind = event.get("type") if event else None
        if event is None or not isinstance(kind, str):
            return line
        if kind == "result" and "session_id" in event:
            return self._claude_result(event)
        if kind == "thread.started" or kind.startswith(("turn.", "item.")) or kind == "error":
            return self._codex_event(kind, event)
        return line

    def _claude_result(self, event: dict[str, Any]) -> str | None:
        self.structured = True
        if isinstance(event.get("session_id"), str) and event["session_id"]:
            self.reply.session_id = event["session_id"]
        result = event.get("result")
        self.reply.answer = result if isinstance(result, str) else ""
        if event.get("is_error") or str(event.get("subtype", "success")) != "success":
            self.reply.error = _first_line(self.reply.answer) or str(event.get("subtype") or "error")
        return _first_line(self.reply.answer)

    def _codex_event(self, kind: str, event: dict[str, Any]) -> str | None:
        self.structured = True
        if kind == "thread.started":
            if isinstance(event.get("thread_id"), str) and event["thread_id"]:
                self.reply.session_id = event["thread_id"]
            return None
        if kind in ("turn.failed", "error"):
            error = event.get("error") if kind == "turn.failed" else event
            message = error.get("message") if isinstance(error, dict) else None
            self.reply.error = str(message or kind)
            return self.reply.error
        item = event.get("item")
        if not isinstance(item, dict):
            return None
        text = item["text"] if isinstance(item.get("text"), str) else ""
        if item.get("type") == "agent_message" and kind == "item.completed":
            self.reply.answer = text
        if item.get("type") == "command_execution" and kind == "item.started":
            return f"running {item.get('command')}"
        return _first_line(text) if item.get("type") in ("agent_message", "reasoning") else None

    def finish(self, stdout: str) -> Reply:
        """The reply; for a plain-text agent the answer is its stdout after any startup noise.

        Lines the run did not show as they came (a caller without a watch) are read from stdout.
        """
        if not self.structured:
            for line in stdout.splitlines():
                self.feed(line.strip())
        if not self.structured:
            lines = stdout.strip().splitlines()
            while lines and STARTUP_NOISE.fullmatch(lines[0].strip()):
                lines.pop(0)
            self.reply.answer = "\n".join(lines).strip()
        return self.reply


# A map this size covers months of threads; the oldest entries are dropped first.
MAX_BOOK_ENTRIES = 2000


class SessionBook:
    """Which session each resumed session became on this machine, kept in a small JSON file.

    Some Claude Code versions (reported for 1.0.x and 2.0.x; any with `--fork-session`) answer
    `--resume <id>` under a new id that holds the whole conversation, while the old id keeps only
    the turns up to it. A thread's next reply may be queued before the previous one has reported
    its new id, so the worker follows the chain to the newest session before resuming.
    """

    def __init__(self, path: Path) -> None:
        self.path = path

    def _load(self) -> dict[str, str]:
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}
        return {k: v for k, v in data.items() if isinstance(v, str)} if isinstance(data, dict) else {}

    def newest(self, agent: str, session: str) -> str:
        """The latest session the given one led to (itself when it was never resumed under a new id)."""
        book, seen = self._load(), {session}
        while (following := book.get(f"{agent}:{session}")) and following not in seen:
            seen.add(following)
            session = following
        return session

    def record(self, agent: str, resumed: str, reported: str | None) -> None:
        """Note that resuming `resumed` went on under `reported`."""
        if not reported or reported == resumed:
            return
        book = self._load()
        book.pop(f"{agent}:{resumed}", None)
        book[f"{agent}:{resumed}"] = reported
        while len(book) > MAX_BOOK_ENTRIES:
            book.pop(next(iter(book)))
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.path.with_suffix(f".{os.getpid()}.tmp")
        temporary.write_text(json.dumps(book))
        temporary.replace(self.path)
