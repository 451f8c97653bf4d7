"""Running the real `da` client as a subprocess against the test's queue service."""

from __future__ import annotations

import asyncio
import os
import pty
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
