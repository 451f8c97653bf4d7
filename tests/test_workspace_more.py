"""Workspaces, continued: claims woken when a start moves a lock, several repositories, attach, and the
machine's delivery defaults. Real git, a real queue and real worker processes, as in test_workspace.py."""

from __future__ import annotations

import pytest
from test_workspace import Lab, agent_starts, lab, workspace_worker

from conftest import QueueServer, wait_until
from da.queue import waiting
from da.queue.client import QueueClient

__all__ = ["lab"]


async def test_a_second_agent_task_on_one_repository_starts_at_once_not_one_long_poll_later(
        lab: Lab, server: QueueServer, client: QueueClient, monkeypatch: pytest.MonkeyPatch) -> None:
    # The second claim waits (a long-poll of 30 s) while the first task's lock is on the user's folder; the
    # first task's start moves that lock onto its worktree and must wake the waiting claim. The queue's
    # once-a-second recheck (a net for wake-ups lost between replicas) is put out of reach so only the
    # wake-up can start the second task in time.
    monkeypatch.setattr(waiting, "RECHECK_INTERVAL", 60.0)
    release = lab.tmp / "release"
    worker = workspace_worker(lab, server.url, WORKER_POLL_WAIT="30")
    try:
        for name in ("one", "two"):
            await client.create_task("agent_run", {"agent": "claude", "prompt": f"{name} HOLD_UNTIL={release}",
                                                   "cwd": str(lab.user)})

        async def both_running() -> bool:
            return len(agent_starts(lab)) == 2

        await wait_until(both_running, timeout=12)
    finally:
        release.write_text("go")
        worker.kill()
