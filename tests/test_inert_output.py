"""Task output shown on a terminal is inert: `da show` and `da failures` draw escape sequences from a
task (window title, cursor moves) as visible pictures, never send them (issue 24, bytes and names)."""

from __future__ import annotations

from pathlib import Path

from da.queue.client import QueueClient
from tests.support.server import QueueServer
from tests.support.terminal import da

HOSTILE = "\x1b]0;pwned\x07\x1b[2J\x1b[H\rgone\x9b"


async def test_show_and_failures_draw_escape_sequences_inert(server: QueueServer, client: QueueClient,
                                                             tmp_path: Path) -> None:
    task = await client.create_task("run_script", {"script": "true"})
    held = await client.claim("box", ["run_script"])
    assert held is not None
    await client.start(task.id, held.lease)
    await client.report(task.id, held.lease, "failed", {"stdout": HOSTILE, "action": f"fix {HOSTILE}"},
                        notes=f"exit 1: {HOSTILE}")
    for args in (("show", task.short_id), ("failures",)):
        run = await da(server.url, *args, cwd=tmp_path)
        assert run.code == 0, run.err
        assert "\x1b" not in run.out and "\x07" not in run.out and "\r" not in run.out and "\x9b" not in run.out
        assert "␛]0;pwned␇" in run.out, run.out
