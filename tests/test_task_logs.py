"""Task output of any shape: long lines read in linear time, each log capped, old logs pruned."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import subprocess
import sys
import time
from pathlib import Path

from da.queue.client import QueueClient
from da.worker import output, runner
from da.worker.redact import Redactor
from tests.support.server import SECRET, QueueServer
from tests.support.workers import run_task

DAY = 86400


def python_writes(code: str) -> list[str]:
    return [sys.executable, "-c", f"import sys\n{code}"]


async def test_one_long_line_costs_linear_work(tmp_path: Path) -> None:
    # Work done is the CPU time of this process, which holds the reading loop; the child that
    # writes is another process and a busy machine does not inflate it. Reading 24 MB in one
    # line took about 40 s of CPU when each chunk re-scanned the growing line; linear reading
    # takes well under a second, so 10 s separates the two by a wide margin either way.
    size = 24_000_000
    before = time.process_time()
    result = await runner.run_process(python_writes(f"sys.stdout.write('x' * {size})"), cwd=None,
                                      env=dict(os.environ), timeout=120, log_path=tmp_path / "long.log",
                                      redact=Redactor(()))
    cpu = time.process_time() - before
    assert result.returncode == 0
    assert cpu < 10, f"reading {size} bytes in one line cost {cpu:.1f}s of CPU"
    assert result.stdout == "x" * runner.TAIL_BYTES and result.stdout_cut == size - runner.TAIL_BYTES
    assert (tmp_path / "long.log").stat().st_size <= output.DEFAULT_LOG_MAX_BYTES


async def test_secrets_split_across_reads_and_cuts_are_still_redacted(tmp_path: Path) -> None:
    secret = "QZQZQZQZQZ"
    # One 3 MB line of secrets back to back: wherever the reader splits the line or the tails
    # start, some secret is cut in two there.
    code = f"sys.stdout.write('{secret}.' * 300_000); sys.stdout.flush(); sys.stderr.write('{secret}.' * 9000)"
    log_path = tmp_path / "secrets.log"
    result = await runner.run_process(python_writes(code), cwd=None, env=dict(os.environ), timeout=60,
                                      log_path=log_path, redact=Redactor([secret]), log_max_bytes=1_000_000)
    assert result.returncode == 0 and result.stdout_cut > 0
    for text in (log_path.read_text(), result.stdout, result.stderr):
        assert "[redacted]" in text
        left = text.replace("[redacted]", "")
        assert "Q" not in left and "Z" not in left, left[:200]


async def test_each_task_log_is_capped_keeping_head_and_tail(server: QueueServer, tmp_path: Path,
                                                            client: QueueClient, make_worker) -> None:
    process = make_worker(server.url, tmp_path, DA_LOG_MAX_BYTES="100000")
    script = "echo first-line; seq 1 100000; echo last-line"
    task = await run_task(client, "run_script", {"script": script})
    assert task.status == "done", (task.notes, process.log)
    log = Path(task.result["log_path"]).read_text()
    assert len(log.encode()) <= 100000
    head, _, rest = log.partition("\n[da] ")
    note, _, tail = rest.partition("\n")
    assert head.startswith("[stdout] first-line\n[stdout] 1\n") and "[stdout] 50000\n" not in log
    assert "bytes cut here" in note and "DA_LOG_MAX_BYTES=100000" in note
    assert tail.endswith("[stdout] 100000\n[stdout] last-line\n")


async def test_bad_log_cap_is_one_line_and_exit_2(server: QueueServer, tmp_path: Path, make_worker) -> None:
    process = make_worker(server.url, tmp_path, DA_LOG_MAX_BYTES="lots")
    assert await process.wait_exit() == 2
    assert "DA_LOG_MAX_BYTES" in process.log and "Traceback" not in process.log


async def test_prune_removes_old_task_logs_on_this_machine(server: QueueServer, tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    old, fresh, other = logs / "1234abcd-run_script.log", logs / "5678abcd-lint.log", logs / "notes.txt"
    for path in (old, fresh, other):
        path.write_text("output\n")
    two_days_ago = time.time() - 2 * DAY
    for path in (old, other):
        os.utime(path, (two_days_ago, two_days_ago))
    env = {"PATH": os.environ["PATH"], "SECRET_KEY": SECRET, "QUEUE_URL": server.url, "DA_LOG_DIR": str(logs),
           "DA_CONFIG_DIR": str(tmp_path / "config")}
    # The queue serves from this event loop, so the command runs without blocking it.
    prune = await asyncio.create_subprocess_exec(sys.executable, "-m", "da.cli", "prune", "--older-than", "1d",
                                                 env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = await asyncio.wait_for(prune.communicate(), 60)
    assert prune.returncode == 0, err.decode()
    assert not old.exists() and fresh.exists() and other.exists()
    assert f"removed 1 task log file(s) older than 1d from {logs} on this machine" in out.decode()
    assert "removed 0 finished task(s) older than 1d" in out.decode()


def test_a_run_stopped_at_once_leaves_no_traceback(tmp_path: Path) -> None:
    # A second Ctrl-C on `da up` cancels a run again while it is still stopping the process, then
    # the loop ends and cancels what is left: asyncio must find nothing unread to log as a traceback.
    unretrieved: list[dict[str, object]] = []

    async def stop_twice_and_leave() -> None:
        asyncio.get_running_loop().set_exception_handler(lambda _loop, context: unretrieved.append(context))
        started = asyncio.Event()
        run = asyncio.ensure_future(runner.run_process(
            python_writes("import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
                          "print('started', flush=True)\ntime.sleep(60)"),
            cwd=None, env=dict(os.environ), timeout=60, log_path=tmp_path / "stopped.log",
            redact=Redactor(()), on_line=lambda _line: started.set()))
        await asyncio.wait_for(started.wait(), 10)
        run.cancel()
        await asyncio.sleep(0.1)
        run.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await run

    asyncio.run(stop_twice_and_leave())
    gc.collect()
    assert unretrieved == []
