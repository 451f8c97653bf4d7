"""Running the real `da` client as a subprocess against the test's queue service."""

from __future__ import annotations

import asyncio
import os
import pty
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from tests.support.server import SECRET

# Typed at the start of a line on a terminal, this is end of input (Ctrl-D).
END_OF_INPUT = "\x04"


@dataclass
class Run:
    code: int
    out: str
    err: str


async def da(url: str, *args: str, stdin: str = "", cwd: Path | None = None, tty: bool = False, **env: str) -> Run:
    """`da ARGS` with QUEUE_URL and SECRET_KEY set; stdin feeds prompts and the REPL.

    With `tty`, stdin is a real terminal (a pty) with `stdin` typed into it, as a person
    answering `Confirm?` would; otherwise it is a pipe, as in a script.
    """
    environment = {"PATH": os.environ["PATH"], "HOME": str(cwd or Path.cwd()), "QUEUE_URL": url,
                   "SECRET_KEY": SECRET, "USER": "tester", "NO_COLOR": "1", "COLUMNS": "160", **env}
    terminal, typed = pty.openpty() if tty else (None, None)
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "da.cli", *args, cwd=cwd, env=environment,
        stdin=typed if typed is not None else asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        if terminal is not None and typed is not None:
            os.close(typed)
            os.write(terminal, stdin.encode())
            out, err = await asyncio.wait_for(process.communicate(), 60)
        else:
            out, err = await asyncio.wait_for(process.communicate(stdin.encode()), 60)
    finally:
        if terminal is not None:
            os.close(terminal)
    assert process.returncode is not None
    return Run(process.returncode, out.decode(), err.decode())


# A real `da` on a real terminal, typed into as a person would. Ctrl-C typed on a terminal is turned
# into SIGINT by the terminal itself, for the process that owns it: so the child makes the pty its
# controlling terminal (`os.login_tty`) before it becomes `da`.
CTRL_C = "\x03"
# The child takes the pty as its controlling terminal, then becomes `python -m da.cli ARGS`.
LAUNCHER = ("import os, sys; os.login_tty(0); "
            "os.execv(sys.executable, [sys.executable, '-m', 'da.cli', *sys.argv[1:]])")


class PtyTerminal:
    """`da ARGS` on a pty; `output` is everything it has shown, as the terminal shows it."""

    def __init__(self, *args: str, cwd: Path, env: dict[str, str]) -> None:
        self.master, slave = pty.openpty()
        self.process = subprocess.Popen([sys.executable, "-c", LAUNCHER, *args], cwd=cwd, env=env, stdin=slave,
                                        stdout=slave, stderr=slave)
        os.close(slave)
        os.set_blocking(self.master, False)
        self.output = ""

    def type(self, keys: str) -> None:
        os.write(self.master, keys.encode())

    def _read(self) -> bool:
        try:
            data = os.read(self.master, 65536)
        except BlockingIOError:
            return True
        except OSError:  # EIO: the child closed the terminal
            return False
        self.output += data.decode(errors="replace")
        return bool(data)

    async def expect(self, text: str, *, after: int = 0, timeout: float = 20) -> int:
        """Wait until `text` is shown after position `after`; returns where the text ends."""
        deadline = asyncio.get_running_loop().time() + timeout
        while (found := self.output.find(text, after)) < 0:
            if not self._read() and self.process.poll() is not None:
                raise AssertionError(f"da exited ({self.process.returncode}) before showing {text!r}:\n{self.output}")
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"{text!r} not shown within {timeout}s:\n{self.output}")
            await asyncio.sleep(0.02)
        return found + len(text)

    async def exit_code(self, timeout: float = 20) -> int:
        """Wait for the process to end (reading what it shows meanwhile); its exit status."""
        deadline = asyncio.get_running_loop().time() + timeout
        while self.process.poll() is None:
            self._read()
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"da still runs after {timeout}s:\n{self.output}")
            await asyncio.sleep(0.02)
        while self._read() and self.process.poll() is None:
            pass
        self._read()
        return self.process.returncode

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        os.close(self.master)
