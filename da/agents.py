"""The agents da knows: their names, how each CLI is started, how to log in, and the smoke test.

One module for the worker (`agent_run`), the LLM router, `da doctor --agents` and `da test`,
so a changed flag or login hint is changed once. Prompts always reach a CLI as one argv
element placed where the CLI cannot read it as an option (after `--`, or as the value of
`--prompt=`), never through a shell.
"""

from __future__ import annotations

import asyncio
import contextlib
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

# A smoke test asks for one word; a logged-in agent answers well within this.
SMOKE_TIMEOUT = 90.0
SMOKE_PROMPT = "Reply with the single word OK."

NOT_LOGGED_IN = re.compile(r"not logged in|please (?:log ?in|login|run .*login)|login required|"
                           r"authentication required|not authenticated|run `?\w+ (?:auth )?login", re.IGNORECASE)
LOGIN_HINTS = {"claude": "claude /login", "gemini": "gemini (then choose a login method)",
               "codex": "codex login", "groq": "set GROQ_API_KEY in .env"}


@dataclass(frozen=True)
class AgentCommand:
    """How one CLI agent is started: argv with one element holding `{prompt}`, and the model option."""

    argv: tuple[str, ...]
    model: tuple[str, ...] = ()

    @property
    def program(self) -> str:
        return self.argv[0]

    def build(self, prompt: str, model: str | None = None) -> list[str]:
        """The argv for one prompt; the model option goes before the prompt (and before its `--`)."""
        at = next(i for i, part in enumerate(self.argv) if PROMPT in part)
        if at > 0 and self.argv[at - 1] == "--":
            at -= 1
        extra = [part.replace(MODEL, model) for part in self.model] if model else []
        return [*self.argv[:at], *extra, *(part.replace(PROMPT, prompt) for part in self.argv[at:])]


# claude: -p is a mode flag and the prompt is positional (commander: `--` ends the options);
# gemini: the prompt is the value of --prompt (yargs takes a value starting with `-` as a flag
# unless it is joined with `=`); codex exec: the prompt is positional (clap: `--` ends options).
DEFAULT_COMMANDS: dict[str, AgentCommand] = {
    "claude": AgentCommand(("claude", "-p", "--dangerously-skip-permissions", "--", PROMPT), ("--model", MODEL)),
    "gemini": AgentCommand(("gemini", "--yolo", f"--prompt={PROMPT}"), ("--model", MODEL)),
    "codex": AgentCommand(("codex", "exec", "--full-auto", "--", PROMPT), ("--model", MODEL)),
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
        commands[str(name)] = AgentCommand(tuple(entry["command"]), tuple(entry.get("model") or ()))
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
