"""Terminal-only verbs that act on this machine: run an agent, smoke-test agents, ssh out."""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING

from da import agents, doctor
from da.bot.grammar import Command
from da.bot.terminal.render import table
from da.config import ConfigError
from da.queue import errors as queue_errors

if TYPE_CHECKING:
    from da.bot.terminal.session import Terminal


async def run(command: Command, terminal: Terminal) -> int:
    """Run a local verb (one the grammar declares `local`); returns the exit status."""
    return await LOCAL_VERBS[command.verb](command, terminal)


def commands_for(terminal: Terminal) -> dict[str, agents.AgentCommand]:
    try:
        return agents.load_commands(terminal.settings.config_dir)
    except ConfigError as exc:
        terminal.print(f"da: {exc} (using the built-in agent commands)")
        return dict(agents.DEFAULT_COMMANDS)


async def run_agent(agent: str, prompt: str, terminal: Terminal) -> int:
    """Run an agent CLI here and stream its answer line by line."""
    command = commands_for(terminal).get(agent)
    if command is None:
        terminal.print(f"unknown agent {agent!r}; known: {', '.join(agents.CLI_AGENTS)}.")
        return 2
    argv = command.build(prompt)
    if shutil.which(argv[0]) is None:
        terminal.print(f"{argv[0]} is not installed on this machine.")
        return 1
    process = await asyncio.create_subprocess_exec(*argv, stdin=asyncio.subprocess.DEVNULL,
                                                   stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    assert process.stdout is not None
    async for line in process.stdout:
        terminal.print(line.decode("utf-8", errors="replace").rstrip("\n"))
    return 0 if await process.wait() == 0 else 1


async def smoke_test(only: str | None, terminal: Terminal) -> int:
    """For each agent: installed, logged in, answers a one-line prompt, and how long it took."""
    commands = commands_for(terminal)
    rows = []
    worst = 0
    for agent in [only] if only else list(agents.CLI_AGENTS):
        if agent not in commands:
            rows.append((agent, "unknown", "-", "-", "-"))
            worst = max(worst, 2)
            continue
        smoke = await doctor.smoke_test(agent, commands)
        took = f"{smoke.seconds:.1f}s" if smoke.installed else "-"
        supervised = await doctor.supervision(agent, {}, cwd=Path.cwd())
        rows.append((agent, "installed" if smoke.installed else "not installed",
                     smoke.detail if smoke.installed else "-", took, supervised.detail))
        worst = max(worst, 0 if smoke.ok and supervised.ok else 1)
    terminal.print(table(("AGENT", "INSTALLED", "ANSWER", "TIME", "SUPERVISED"), rows, terminal.width))
    return worst


async def ssh(name: str, terminal: Terminal) -> int:
    """Replace this process with ssh to the machine's address from the fleet."""
    try:
        fleet = await terminal.layer.fleet()
    except queue_errors.QueueError as exc:
        terminal.print(f"cannot look up {name}: {exc.detail}")
        return 1
    machine = fleet.find(name)
    if machine is None:
        terminal.print(f"unknown machine {name!r}; known: {', '.join(fleet.names) or 'none'}.")
        return 2
    target = f"{machine.user}@{machine.address}" if machine.user else machine.address
    argv = ["ssh", "-p", str(machine.ssh_port), target]
    if shutil.which("ssh") is None:
        terminal.print("ssh is not installed on this machine.")
        return 1
    terminal.print(f"$ {' '.join(argv)}")
    os.execvp("ssh", argv)
    return 0  # not reached


# The terminal's own verbs, by name, as the command layer's table holds the shared ones.
LOCAL_VERBS: dict[str, Callable[[Command, Terminal], Awaitable[int]]] = {
    "run": lambda command, terminal: run_agent(command.words[0], command.text.split(None, 1)[1], terminal),
    "test": lambda command, terminal: smoke_test(command.words[0] if command.words else None, terminal),
    "ssh": lambda command, terminal: ssh(command.words[0], terminal),
}
