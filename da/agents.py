"""The agents da knows: their names, how each CLI is started, how to log in, and the smoke test.

One module for the worker (`agent_run`), the LLM router, `da doctor --agents` and `da test`,
so a changed flag or login hint is changed once. Prompts always reach a CLI as one argv
element placed where the CLI cannot read it as an option (after `--`, or as the value of
`--prompt=`), never through a shell. It also reads what an agent printed: its answer and the
session a follow-up can resume.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from da import config
from da.config import ConfigError

AGENTS_FILE = "agents.yaml"
# Agents started as a CLI on the machine; groq is an HTTP API that agent_run calls itself.
CLI_AGENTS = ("claude", "gemini", "codex")
KNOWN_AGENTS = (*CLI_AGENTS, "groq")
PROMPT = "{prompt}"
MODEL = "{model}"
SESSION = "{session}"
# What claude and codex print as a session id (UUIDs) or accept as a thread name; never starts
# with `-`, so it cannot be read as an option.
SESSION_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")

# A smoke test asks for one word; a logged-in agent answers well within this.
SMOKE_TIMEOUT = 90.0
SMOKE_PROMPT = "Reply with the single word OK."

NOT_LOGGED_IN = re.compile(r"not logged in|please (?:log ?in|login|run .*login)|login required|"
                           r"authentication required|not authenticated|run `?\w+ (?:auth )?login", re.IGNORECASE)
LOGIN_HINTS = {"claude": "claude /login", "gemini": "gemini (then choose a login method)",
               "codex": "codex login", "groq": "set GROQ_API_KEY in .env"}


@dataclass(frozen=True)
class AgentCommand:
    """How one CLI agent is started: argv with one element holding `{prompt}`, the model option,
    the options that make it print machine-readable output (answer and session id), and the
    arguments that resume a session (empty when the agent cannot)."""

    argv: tuple[str, ...]
    model: tuple[str, ...] = ()
    resume: tuple[str, ...] = ()
    output: tuple[str, ...] = ()

    @property
    def program(self) -> str:
        return self.argv[0]

    def build(self, prompt: str, model: str | None = None, *, session: str | None = None,
              structured: bool = False) -> list[str]:
        """The argv for one prompt; the extra options go before the prompt (and before its `--`).

        `structured` asks for the machine-readable output the worker reads; a person running the
        agent in a terminal gets its usual text.
        """
        at = next(i for i, part in enumerate(self.argv) if PROMPT in part)
        if at > 0 and self.argv[at - 1] == "--":
            at -= 1
        extra = list(self.output) if structured else []
        extra += [part.replace(MODEL, model) for part in self.model] if model else []
        if session is not None:
            if not self.resume:
                raise ValueError(f"{self.program} is configured without a resume form")
            extra += [part.replace(SESSION, session) for part in self.resume]
        return [*self.argv[:at], *extra, *(part.replace(PROMPT, prompt) for part in self.argv[at:])]


# claude: -p is a mode flag and the prompt is positional (commander: `--` ends the options);
# `--output-format json` prints one result object with the answer and the session id.
# gemini: the prompt is the value of --prompt (yargs takes a value starting with `-` as a flag
# unless it is joined with `=`). codex exec: the prompt is positional (clap: `--` ends options);
# `--json` prints JSONL events, the first naming the thread; `resume <id>` is a subcommand of
# exec, so it comes after exec's own options and before the `--`.
DEFAULT_COMMANDS: dict[str, AgentCommand] = {
    "claude": AgentCommand(("claude", "-p", "--dangerously-skip-permissions", "--", PROMPT), ("--model", MODEL),
                           ("--resume", SESSION), ("--output-format", "json")),
    "gemini": AgentCommand(("gemini", "--yolo", f"--prompt={PROMPT}"), ("--model", MODEL)),
    "codex": AgentCommand(("codex", "exec", "--full-auto", "--", PROMPT), ("--model", MODEL),
                          ("resume", SESSION), ("--json",)),
}
# One-shot questions (the LLM router) get no flag that lets the agent act without asking:
# the question carries text a person typed, and it runs on the bot's machine.
ASK_COMMANDS: dict[str, AgentCommand] = {
    "claude": AgentCommand(("claude", "-p", "--", PROMPT)),
    "gemini": AgentCommand(("gemini", f"--prompt={PROMPT}")),
    "codex": AgentCommand(("codex", "exec", "--", PROMPT)),
}


def login_hint(agent: str) -> str:
    """The command that logs this agent in, for an action line."""
    return LOGIN_HINTS.get(agent, f"{agent} login")


def _argv(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(item, str) for item in value)


def load_commands(config_dir: Path) -> dict[str, AgentCommand]:
    """The defaults, overridden per agent by `config/agents.yaml` when present."""
    commands = dict(DEFAULT_COMMANDS)
    path = config_dir / AGENTS_FILE
    if not path.is_file():
        return commands
    data = config.read_yaml(path) or {}
    agents = data.get("agents") if isinstance(data, dict) else None
    if not isinstance(agents, dict):
        raise ConfigError(f"{path}: expected `agents:` mapping names to {{command: [...], model: [...]}}.")
    for name, entry in agents.items():
        if not isinstance(entry, dict) or not _argv(entry.get("command")):
            raise ConfigError(f"{path}: agents.{name}.command must be a list of strings with a {{prompt}} element.")
        if sum(PROMPT in part for part in entry["command"]) != 1:
            raise ConfigError(f"{path}: agents.{name}.command needs exactly one \"{{prompt}}\" element "
                              "(put \"--\" before it so a prompt is never read as an option).")
        if "model" in entry and not _argv(entry["model"]):
            raise ConfigError(f"{path}: agents.{name}.model must be a list of strings like [--model, \"{{model}}\"].")
        if "resume" in entry and not (_argv(entry["resume"]) and sum(SESSION in p for p in entry["resume"]) == 1):
            raise ConfigError(f"{path}: agents.{name}.resume must be a list of strings with one \"{{session}}\" "
                              "element, like [--resume, \"{session}\"].")
        if "output" in entry and not _argv(entry["output"]):
            raise ConfigError(f"{path}: agents.{name}.output must be a list of strings like [--output-format, json].")
        commands[str(name)] = AgentCommand(tuple(entry["command"]), tuple(entry.get("model") or ()),
                                           tuple(entry.get("resume") or ()), tuple(entry.get("output") or ()))
    return commands


def local_agents(env: Mapping[str, str]) -> list[str]:
    """The agents this machine can run as it is: CLIs on PATH, groq with a key."""
    found = [agent for agent in CLI_AGENTS if shutil.which(agent)]
    return found + (["groq"] if env.get("GROQ_API_KEY") else [])


async def run_once(argv: list[str], timeout: float) -> tuple[int | None, str, str] | None:
    """Run a CLI to completion: (returncode, stdout, stderr), or None when the timeout passed.

    The CLI leads its own process group and the whole group is killed on timeout: agent CLIs
    are often wrapper scripts whose children would otherwise keep the pipes (and us) waiting.
    """
    process = await asyncio.create_subprocess_exec(*argv, stdin=asyncio.subprocess.DEVNULL,
                                                   stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
                                                   start_new_session=True)
    try:
        out, err = await asyncio.wait_for(process.communicate(), timeout)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
        await process.wait()
        return None
    return process.returncode, out.decode(errors="replace"), err.decode(errors="replace")


@dataclass(frozen=True)
class Smoke:
    """What one smoke test found: installed, answering, what it said (or what is wrong) and how fast."""

    agent: str
    installed: bool
    ok: bool
    detail: str
    seconds: float = 0.0
    action: str = ""


async def smoke_test(agent: str, commands: Mapping[str, AgentCommand], *,
                     timeout: float = SMOKE_TIMEOUT) -> Smoke:
    """Ask the agent a one-line prompt: proves it is installed, logged in and answering."""
    from da.queue.models import DONE
    from da.worker import outcome
    from da.worker.models import ProcessResult

    command = commands.get(agent)
    if command is None:
        return Smoke(agent, False, False, f"unknown agent; known: {', '.join(commands)}")
    argv = command.build(SMOKE_PROMPT)
    if shutil.which(argv[0]) is None:
        return Smoke(agent, False, False, "not installed", action=f"install {agent} on this machine")
    started = time.monotonic()
    finished = await run_once(argv, timeout)
    if finished is None:
        return Smoke(agent, True, False, f"no answer within {timeout:g}s", timeout, "run it by hand")
    took = time.monotonic() - started
    returncode, answer, errors = finished
    result = outcome.classify(ProcessResult(returncode, answer, errors, duration=took),
                              machine="this machine", tool=argv[0], agent=agent)
    if result.status != DONE:
        return Smoke(agent, True, False, result.notes, took, result.action)
    return Smoke(agent, True, True, " ".join(answer.split())[:40] or "(empty answer)", took)


# ---- what an agent said ------------------------------------------------------------------

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


# ---- conversations -----------------------------------------------------------------------

ROLES = ("user", "assistant")
# Linux refuses a single argv element over 128 KiB (MAX_ARG_STRLEN), and the prompt is one.
MAX_PROMPT_BYTES = 120 * 1024
# Earlier turns sent ahead of a prompt take at most this much; the oldest are left out first.
MAX_CONTEXT_BYTES = 64 * 1024


@dataclass(frozen=True)
class Turn:
    """One earlier message of a conversation."""

    role: str
    text: str


def fit_context(turns: list[Turn], budget: int) -> tuple[list[Turn], int]:
    """The newest turns that fit in `budget` bytes (the newest one cut to fit), and how many were left out."""
    kept: list[Turn] = []
    used = 0
    for turn in reversed(turns):
        size = len(turn.text.encode()) + 40
        if used + size > budget:
            room = budget - used - 40
            if not kept and room > 0:
                kept.append(Turn(turn.role, turn.text.encode()[:room].decode(errors="ignore") + " [...]"))
            break
        kept.append(turn)
        used += size
    return kept[::-1], len(turns) - len(kept)


def with_context(prompt: str, turns: list[Turn], left_out: int = 0) -> str:
    """The prompt with earlier turns ahead of it, delimited so the agent reads them as history."""
    if not turns:
        return prompt
    skipped = f" ({left_out} earlier turns left out)" if left_out else ""
    history = "\n".join(f'<turn role="{turn.role}">\n{turn.text}\n</turn>' for turn in turns)
    return (f"The conversation so far, oldest first{skipped}:\n<conversation>\n{history}\n</conversation>\n\n"
            f"Continue it. The new message:\n{prompt}")


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
