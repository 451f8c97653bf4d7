"""Terminal-only verbs that act on this machine: run an agent, smoke-test agents, ssh out."""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from typing import TYPE_CHECKING

from da.bot.grammar import Command
from da.bot.router import MachineInfo
from da.queue import errors as queue_errors
from da.worker import outcome
from da.worker.models import ProcessResult
from da.worker.settings import DEFAULT_AGENT_COMMANDS, load_agent_commands

if TYPE_CHECKING:
    from da.bot.terminal import Terminal

CLI_AGENTS = ("claude", "gemini", "codex")
# A smoke test asks for one word; a logged-in agent answers well within this.
SMOKE_TIMEOUT = 90.0
SMOKE_PROMPT = "Reply with the single word OK."


def agent_argv(agent: str, prompt: str, commands: dict[str, dict[str, list[str]]]) -> list[str] | None:
    spec = commands.get(agent)
    if spec is None:
        return None
    return [prompt if part == "{prompt}" else part for part in spec["command"]]


async def run(command: Command, terminal: Terminal) -> int:
    if command.verb == "run":
        return await run_agent(command.words[0], " ".join(command.words[1:]), terminal)
    if command.verb == "test":
        return await smoke_test(command.words[0] if command.words else None, terminal)
    return await ssh(command.words[0], terminal)


def commands_for(terminal: Terminal) -> dict[str, dict[str, list[str]]]:
    try:
        return load_agent_commands(terminal.settings.config_dir)
    except Exception:  # noqa: BLE001 - a broken agents.yaml falls back to the defaults here
        return dict(DEFAULT_AGENT_COMMANDS)


async def run_agent(agent: str, prompt: str, terminal: Terminal) -> int:
    """Run an agent CLI here and stream its answer line by line."""
    argv = agent_argv(agent, prompt, commands_for(terminal))
    if argv is None:
        terminal.print(f"unknown agent {agent!r}; known: {', '.join(CLI_AGENTS)}.")
        return 2
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
    agents = [only] if only else list(CLI_AGENTS)
    rows = []
    worst = 0
    for agent in agents:
        argv = agent_argv(agent, SMOKE_PROMPT, commands)
        if argv is None:
            rows.append((agent, "unknown", "-", "-"))
            worst = max(worst, 2)
            continue
        if shutil.which(argv[0]) is None:
            rows.append((agent, "not installed", "-", "-"))
            worst = max(worst, 1)
            continue
        started = time.monotonic()
        process = await asyncio.create_subprocess_exec(*argv, stdin=asyncio.subprocess.DEVNULL,
                                                       stdout=asyncio.subprocess.PIPE,
                                                       stderr=asyncio.subprocess.PIPE)
        try:
            out, err = await asyncio.wait_for(process.communicate(), SMOKE_TIMEOUT)
        except TimeoutError:
            process.kill()
            await process.wait()
            rows.append((agent, "installed", f"no answer in {SMOKE_TIMEOUT:g}s", f"{SMOKE_TIMEOUT:.1f}s"))
            worst = max(worst, 1)
            continue
        took = time.monotonic() - started
        result = outcome.classify(ProcessResult(process.returncode, out.decode(errors="replace"),
                                                err.decode(errors="replace"), duration=took),
                                  machine="this machine", tool=argv[0], agent=agent)
        answer = " ".join(out.decode(errors="replace").split())[:40] if result.status == "done" else result.notes
        rows.append((agent, "installed", answer or "(empty answer)", f"{took:.1f}s"))
        worst = max(worst, 0 if result.status == "done" else 1)
    from da.bot.terminal import table

    terminal.print(table(("AGENT", "INSTALLED", "ANSWER", "TIME"), rows, terminal.width))
    return worst


async def ssh(name: str, terminal: Terminal) -> int:
    """Replace this process with ssh to the machine's address from the fleet."""
    try:
        machines = [MachineInfo.from_json(m) for m in await terminal.layer.client.machines()]
    except queue_errors.QueueError as exc:
        terminal.print(f"cannot look up {name}: {exc.detail}")
        return 1
    machine = next((m for m in machines if name == m.name or name in m.aliases), None)
    if machine is None:
        terminal.print(f"unknown machine {name!r}; known: {', '.join(m.name for m in machines) or 'none'}.")
        return 2
    target = f"{machine.user}@{machine.address or machine.name}" if machine.user else machine.address or machine.name
    argv = ["ssh", "-p", str(machine.ssh_port), target]
    if shutil.which("ssh") is None:
        terminal.print("ssh is not installed on this machine.")
        return 1
    terminal.print(f"$ {' '.join(argv)}")
    os.execvp("ssh", argv)
    return 0  # not reached
