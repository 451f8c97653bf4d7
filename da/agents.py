"""The agents da knows: their names, how each CLI is started, how to log in, and conversation context.

One module for the worker (`agent_run`), the LLM router, `da doctor --agents` and `da test`,
so a changed flag or login hint is changed once. Prompts always reach a CLI as one argv
element placed where the CLI cannot read it as an option (after `--`, or as the value of
`--prompt=`), never through a shell. It imports neither the worker nor the handlers: they
import it (reading an agent's answer and session is `agent_run`'s, in `da.handlers`).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import signal
from collections.abc import Mapping, Sequence
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
DIR = "{dir}"
# What claude and codex print as a session id (UUIDs) or accept as a thread name; never starts
# with `-`, so it cannot be read as an option.
SESSION_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")

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
    # One more folder the agent may read and edit (a task on several repositories), repeated per folder.
    add_dir: tuple[str, ...] = ()

    @property
    def program(self) -> str:
        return self.argv[0]

    def build(self, prompt: str, model: str | None = None, *, session: str | None = None,
              structured: bool = False, add_dirs: Sequence[str] = ()) -> list[str]:
        """The argv for one prompt; the extra options go before the prompt (and before its `--`).

        `structured` asks for the machine-readable output the worker reads; a person running the
        agent in a terminal gets its usual text.
        """
        at = next(i for i, part in enumerate(self.argv) if PROMPT in part)
        if at > 0 and self.argv[at - 1] == "--":
            at -= 1
        extra = list(self.output) if structured else []
        extra += [part.replace(MODEL, model) for part in self.model] if model else []
        if self.add_dir:
            extra += [part.replace(DIR, folder) for folder in add_dirs for part in self.add_dir]
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
# exec, so it comes after exec's own options and before the `--`. More folders for the agent:
# claude `--add-dir DIR`, gemini `--include-directories DIR`, codex exec `--add-dir DIR` (0.71+),
# each repeated per folder.
DEFAULT_COMMANDS: dict[str, AgentCommand] = {
    "claude": AgentCommand(("claude", "-p", "--dangerously-skip-permissions", "--", PROMPT), ("--model", MODEL),
                           ("--resume", SESSION), ("--output-format", "json"), ("--add-dir", DIR)),
    "gemini": AgentCommand(("gemini", "--yolo", f"--prompt={PROMPT}"), ("--model", MODEL),
                           add_dir=(f"--include-directories={DIR}",)),
    "codex": AgentCommand(("codex", "exec", "--full-auto", "--", PROMPT), ("--model", MODEL),
                          ("resume", SESSION), ("--json",), ("--add-dir", DIR)),
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
        if "add_dir" in entry and not (_argv(entry["add_dir"]) and sum(DIR in p for p in entry["add_dir"]) == 1):
            raise ConfigError(f"{path}: agents.{name}.add_dir must be a list of strings with one \"{{dir}}\" "
                              "element, like [--add-dir, \"{dir}\"].")
        commands[str(name)] = AgentCommand(tuple(entry["command"]), tuple(entry.get("model") or ()),
                                           tuple(entry.get("resume") or ()), tuple(entry.get("output") or ()),
                                           tuple(entry.get("add_dir") or ()))
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
