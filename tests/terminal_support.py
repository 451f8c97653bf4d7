"""Running the real `da` client as a subprocess against the test's queue service."""

from __future__ import annotations

import asyncio
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from conftest import SECRET


@dataclass
class Run:
    code: int
    out: str
    err: str


async def da(url: str, *args: str, stdin: str = "", cwd: Path | None = None, **env: str) -> Run:
    """`da ARGS` with QUEUE_URL and SECRET_KEY set; stdin feeds prompts and the REPL."""
    environment = {"PATH": os.environ["PATH"], "HOME": str(cwd or Path.cwd()), "QUEUE_URL": url,
                   "SECRET_KEY": SECRET, "USER": "tester", "NO_COLOR": "1", "COLUMNS": "160", **env}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "da.cli", *args, cwd=cwd, env=environment, stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(process.communicate(stdin.encode()), 60)
    assert process.returncode is not None
    return Run(process.returncode, out.decode(), err.decode())
