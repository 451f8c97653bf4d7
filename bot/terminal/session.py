"""The terminal front end: `da VERB ...` once, or `da` alone for a small REPL.

Exit status: 0 ok, 1 the verb failed, 2 bad usage, 130 interrupted (Ctrl-C). Colour only on
a TTY without NO_COLOR. A question that changes something (`Confirm? [Y/n]`) is asked only on
a terminal; without one the verb needs `--yes`, so a script's closed stdin never counts as a yes.

Input is read on the main thread, never in an executor: Ctrl-C then interrupts the read itself
(at the prompt it clears the line; at a question it stops the verb with nothing changed),
instead of leaving a thread blocked on stdin that the process must wait for before it exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shlex
import shutil
import signal
import sys
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, TextIO

from da.bot import grammar, views
from da.bot.commands import Ask, CommandLayer, Emit
from da.bot.grammar import UsageError
from da.bot.settings import ClientSettings
from da.bot.terminal.render import Style, render, to_json
from da.fleet import Fleet
from da.queue import errors as queue_errors
from da.queue.client import QueueClient

HISTORY_FILE = "~/.da_history"
# The exit status of a verb stopped with Ctrl-C, as a shell reports a process ended by SIGINT.
INTERRUPTED = 130


class Interrupted(Exception):
    """Ctrl-C at a question: the verb stops before it changes anything."""


@contextlib.contextmanager
def interruptible() -> Iterator[None]:
    """Let Ctrl-C raise KeyboardInterrupt here, where asyncio's runner would only cancel the task
    (which a blocking read never notices)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


class LazySkills:
    """The `skills` verbs, loaded (with SSH and YAML) only when one runs: other verbs start faster."""

    def __init__(self, config_dir: Path, env: Mapping[str, str]) -> None:
        self.config_dir = config_dir
        self.env = env

    async def run(self, command: grammar.Command, fleet: Fleet, *, emit: Emit | None = None,
                  ask: Ask | None = None) -> views.View:
        from da.bot.terminal.skills import SkillsService

        service = SkillsService.from_config(self.config_dir, self.env)
        return await service.run(command, fleet, emit=emit, ask=ask)


def failed(view: Any) -> bool:
    return isinstance(view, views.Message) and not view.ok


class Terminal:
    """One session of the terminal client: runs commands and prints their views."""

    def __init__(self, layer: CommandLayer, settings: ClientSettings, *, out: TextIO = sys.stdout,
                 env: Mapping[str, str] | None = None, interactive: bool | None = None) -> None:
        self.layer = layer
        self.settings = settings
        self.out = out
        self.style = Style(out, env or os.environ)
        self.interactive = sys.stdin.isatty() if interactive is None else interactive

    @property
    def width(self) -> int:
        return shutil.get_terminal_size((120, 24)).columns

    def print(self, text: str) -> None:
        print(text, file=self.out, flush=True)

    async def read_line(self, question: str) -> str:
        """One line of input as typed, newline included; "" means end of input. Nothing else runs while a
        person answers, so the read blocks the loop on purpose."""
        self.out.write(question)
        self.out.flush()
        try:
            with interruptible():
                return sys.stdin.readline()
        except KeyboardInterrupt:
            raise Interrupted from None

    async def ask(self, question: str) -> str:
        return (await self.read_line(question)).rstrip("\n")

    async def execute(self, line: str | list[str]) -> int:
        """Run one command; returns the exit status a script sees."""
        try:
            command = grammar.parse(line) if isinstance(line, str) else grammar.parse_argv(line)
        except UsageError as exc:
            self.print(str(exc))
            return 2
        try:
            if grammar.VERBS[command.verb].local:
                from da.bot.terminal import local

                return await local.run(command, self)
            view = await self.layer.run(command, user=self.settings.user or None, emit=self.print, ask=self.ask)
            if isinstance(view, views.SuggestionView):
                view = await self.confirm(view, command)
            elif isinstance(view, views.BulkPreview) and view.count:
                self.print(render(view, style=self.style, width=self.width))
                if await self.yes("Confirm?", command):
                    view = await self.layer.resolve_exact(view.task_ids, view.status, user=self.settings.user)
                else:
                    view = views.Message("nothing changed.")
        except UsageError as exc:
            self.print(str(exc))
            return 2
        except Interrupted:
            # The terminal echoed ^C on the question's line: the answer starts a line of its own.
            self.print("\nnothing changed.")
            return INTERRUPTED
        if isinstance(view, views.Attach) and "ssh" in command.flags:
            return self.open_ssh(view)
        if "json" in command.flags:
            self.print(json.dumps(to_json(view), indent=2))
        else:
            self.print(render(view, style=self.style, width=self.width))
        return 1 if failed(view) else 0

    def open_ssh(self, view: views.Attach) -> int:
        """Replace this process with ssh into the task's worktree (`da attach --ssh`)."""
        if shutil.which(view.ssh_argv[0]) is None:
            self.print("ssh is not installed on this machine; run these instead:\n" + "\n".join(view.steps))
            return 1
        self.print(f"$ {shlex.join(view.ssh_argv)}")
        os.execvp(view.ssh_argv[0], list(view.ssh_argv))
        return 0  # not reached

    async def yes(self, question: str, command: grammar.Command, *, always_ask: bool = False) -> bool:
        """Ask on the terminal (Enter is yes, end of input is no); with no terminal, refuse: --yes is needed.
        `always_ask`: --yes does not answer, and only a typed yes does."""
        if "yes" in command.flags and not always_ask:
            return True
        if not self.interactive:
            fix = "add --type=run_script to run it in a shell as typed" if always_ask else "add --yes to go ahead"
            raise UsageError(f"{command.verb} asks before it changes anything and there is no terminal to ask "
                             f"on; {fix}.", command.usage())
        line = await self.read_line(f"{question} [y/N] " if always_ask else f"{question} [Y/n] ")
        answers = ("y", "yes") if always_ask else ("", "y", "yes")
        return line.endswith("\n") and line.strip().lower() in answers

    async def confirm(self, view: views.SuggestionView, command: grammar.Command) -> Any:
        self.print(render(view, style=self.style, width=self.width))
        if not await self.yes("Confirm?", command, always_ask=view.suggestion.ask):
            return views.Message("cancelled; nothing queued.")
        return await self.layer.create(view.suggestion, view.request)

    async def banner(self) -> bool:
        try:
            fleet = await self.layer.fleet()
        except queue_errors.QueueUnreachable:
            self.print(f"da: queue unreachable at {', '.join(self.settings.queue_urls)}.")
            return False
        except queue_errors.QueueError as exc:
            self.print(f"da: {exc.detail}")
            return False
        online = sum(1 for m in fleet.machines if m.online)
        self.print(f"da — queue at {self.layer.client.url}, {online} worker(s) online. "
                   "Type help, or exit to leave.")
        return True

    def repl(self, runner: asyncio.Runner) -> int:
        """The interactive loop: `da ›` prompt with history. Ctrl-C clears the line (a second one on an
        empty line leaves), Ctrl-C while a verb runs stops that verb, Ctrl-D leaves."""
        if not runner.run(self.banner()):
            return 1
        history = _enable_history()
        interrupted_empty = False
        try:
            while True:
                try:
                    with interruptible():
                        line = input("da › ")
                except EOFError:
                    self.print("")
                    return 0
                except KeyboardInterrupt:
                    # The next prompt starts on a line of its own, whatever was typed is dropped.
                    if typed_so_far():
                        self.print("")
                        interrupted_empty = False
                        continue
                    if interrupted_empty:
                        self.print("")
                        return 0
                    self.print("\n(Ctrl-C again or Ctrl-D to leave)")
                    interrupted_empty = True
                    continue
                interrupted_empty = False
                if line.strip() in ("exit", "quit"):
                    return 0
                if not line.strip():
                    continue
                try:
                    runner.run(self.execute(line))
                except KeyboardInterrupt:
                    self.print("\ninterrupted.")
        finally:
            if history:
                history()


def typed_so_far() -> str:
    """What was on the prompt's line when Ctrl-C came (readline keeps it until the next prompt)."""
    try:
        import readline
    except ImportError:
        return ""
    return readline.get_line_buffer()


def _enable_history() -> Any:
    try:
        import readline
    except ImportError:
        return None
    path = Path(HISTORY_FILE).expanduser()
    with contextlib.suppress(OSError):
        readline.read_history_file(path)
    return lambda: readline.write_history_file(path)


def main(argv: list[str], settings: ClientSettings, env: Mapping[str, str]) -> int:
    """Run one verb (argv) or the REPL (no argv) against the queue in `settings`; Ctrl-C during a
    one-shot verb ends it with 130."""
    from da.bot.router import make_router

    with asyncio.Runner() as runner:
        client = QueueClient(list(settings.queue_urls), settings.secret, rounds=1)
        layer = CommandLayer(client, router=make_router(settings.router), skills=LazySkills(settings.config_dir, env))
        terminal = Terminal(layer, settings, env=env)
        try:
            return terminal.repl(runner) if not argv else runner.run(terminal.execute(argv))
        except KeyboardInterrupt:
            return INTERRUPTED
        finally:
            runner.run(client.close())
