"""The one way handlers start processes: argv (a shell only when asked), its own process
group, a timeout that kills the whole tree, output tails in memory and the (capped) log on disk.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import functools
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from da.handlers.api import ProcessResult
from da.worker import orphans, output
from da.worker.redact import Redactor

# Each stream keeps its last 64 KiB in the result; the log file has the rest (up to its cap).
TAIL_BYTES = 64 * 1024
# After SIGTERM a process group gets this long to exit before SIGKILL.
KILL_GRACE = 2.0
# The pipe's own buffer size on Linux; smaller reads only add trips through the loop.
READ_CHUNK = 64 * 1024


def kill_group(process: asyncio.subprocess.Process, sig: int = signal.SIGKILL) -> None:
    """Signal the process's whole group (it leads its own session)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, sig)


async def terminate_group(process: asyncio.subprocess.Process) -> None:
    """SIGTERM the group, then SIGKILL whatever is left after a short grace."""
    kill_group(process, signal.SIGTERM)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(process.wait(), KILL_GRACE)
    kill_group(process, signal.SIGKILL)
    await process.wait()


async def _stop_despite_cancels(process: asyncio.subprocess.Process) -> None:
    """Stop and reap the group even when cancelled again meanwhile (a second Ctrl-C): a further
    cancel only ends the grace early, so no process outlives the worker's loop."""
    stopping = asyncio.ensure_future(terminate_group(process))
    while not stopping.done():
        try:
            await asyncio.shield(stopping)
        except asyncio.CancelledError:
            kill_group(process, signal.SIGKILL)


async def run_process(argv: list[str] | str, *, cwd: Path | None, env: dict[str, str], timeout: float,
                      log_path: Path, redact: Redactor, shell: bool = False,
                      on_line: Callable[[str], None] | None = None,
                      on_stdout_line: Callable[[str], None] | None = None,
                      log_max_bytes: int = output.DEFAULT_LOG_MAX_BYTES,
                      book: orphans.ProcessBook | None = None, task_id: str = "") -> ProcessResult:
    """Run to completion, timeout or cancellation; the process tree never outlives this call (nor,
    through `book`, the worker: its next start stops a group this one could not).

    `on_line` hears the latest non-empty line of output (as progress), at most once per read;
    `on_stdout_line` hears every whole line of stdout (pieces of over-long lines are skipped),
    for tools whose lines are events to parse.
    """
    started = time.monotonic()
    log_path.parent.mkdir(parents=True, exist_ok=True)
    command = ["/bin/sh", "-c", argv] if shell else argv
    assert isinstance(command, list)

    async def start(process_env: dict[str, str]) -> asyncio.subprocess.Process:
        return await asyncio.create_subprocess_exec(
            *command, cwd=cwd, env=process_env, stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, start_new_session=True)

    try:
        process = await (start(env) if book is None else book.spawn(task_id, env, start))
    except FileNotFoundError:
        program = argv if isinstance(argv, str) else argv[0]
        return ProcessResult(returncode=127, stdout="", stderr=f"{program}: command not found",
                             duration=time.monotonic() - started, log_path=str(log_path), not_found=program)
    except PermissionError as exc:
        return ProcessResult(returncode=126, stdout="", stderr=f"cannot execute: {exc}",
                             duration=time.monotonic() - started, log_path=str(log_path))

    try:
        return await _supervise(process, started=started, timeout=timeout, log_path=log_path, redact=redact,
                                on_line=on_line, on_stdout_line=on_stdout_line, log_max_bytes=log_max_bytes)
    finally:
        if book is not None:
            book.forget(process.pid)


async def _supervise(process: asyncio.subprocess.Process, *, started: float, timeout: float, log_path: Path,
                     redact: Redactor, on_line: Callable[[str], None] | None,
                     on_stdout_line: Callable[[str], None] | None, log_max_bytes: int) -> ProcessResult:
    """Collect a started process's output until it ends, times out or is cancelled; then kill its group."""
    tails = {"stdout": output.Tail(TAIL_BYTES), "stderr": output.Tail(TAIL_BYTES)}
    with output.TaskLog(log_path, log_max_bytes) as log:

        def record(name: str, text: str, newline: bool, continued: bool) -> None:
            # Redacted before it is kept anywhere, so no cut can leave part of a secret behind.
            text = redact(text)
            log.write(name, text, continued=continued)
            tails[name].add((text + "\n" if newline else text).encode())
            if on_stdout_line and name == "stdout":
                for whole in output.whole_lines(text, newline, continued):
                    on_stdout_line(whole)
            if on_line:
                text = text.rstrip()
                if line := text[text.rfind("\n") + 1:].strip():
                    on_line(line)

        async def pump(stream: asyncio.StreamReader, name: str) -> None:
            decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
            lines = output.Lines(functools.partial(record, name), redact)
            while chunk := await stream.read(READ_CHUNK):
                lines.feed(decoder.decode(chunk))
            lines.feed(decoder.decode(b"", final=True))
            lines.close()

        assert process.stdout is not None and process.stderr is not None
        pumps = asyncio.gather(pump(process.stdout, "stdout"), pump(process.stderr, "stderr"))
        # A cancelled gather stores CancelledError as its exception; nobody awaits it after a cancel.
        pumps.add_done_callback(_retrieve_outcome)
        timed_out = False
        try:
            await asyncio.wait_for(process.wait(), timeout)
        except TimeoutError:
            timed_out = True
            await terminate_group(process)
        except asyncio.CancelledError:
            await _stop_despite_cancels(process)
            pumps.cancel()
            raise
        finally:
            # A grandchild left running (`cmd &`) would hold the pipes and outlive the task.
            kill_group(process, signal.SIGKILL)
        try:
            await asyncio.wait_for(pumps, KILL_GRACE)
        except TimeoutError:
            pumps.cancel()
    return ProcessResult(
        returncode=process.returncode,
        stdout=tails["stdout"].text(),
        stderr=tails["stderr"].text(),
        stdout_cut=tails["stdout"].cut,
        stderr_cut=tails["stderr"].cut,
        timed_out=timed_out,
        timeout=timeout,
        duration=time.monotonic() - started,
        log_path=str(log_path),
    )


def _retrieve_outcome(done: asyncio.Future[Any]) -> None:
    """Mark a finished future's outcome as seen, so asyncio logs no 'exception was never retrieved'."""
    if not done.cancelled():
        done.exception()
