"""A NUL in what a task printed is stored as a visible mark with a note, on both backends: the report is
answered, the outcome kept, never a 503 for ever (PostgreSQL) nor a refusal (SQLite) (issue 24)."""

from __future__ import annotations

import pytest

from da.queue.client import QueueClient

pytestmark = pytest.mark.backends("sqlite", "postgres")


async def test_a_report_and_a_heartbeat_with_nul_are_kept_with_a_note(client: QueueClient) -> None:
    task = await client.create_task("run_script", {"script": "printf 'a\\0b'"})
    held = await client.claim("box", ["run_script"])
    assert held is not None
    await client.start(task.id, held.lease)
    await client.heartbeat(task.id, held.lease, progress="step\x00one")
    assert (await client.get_task(task.id)).progress == "step\u2400one"
    await client.report(task.id, held.lease, "failed", {"stdout": "a\x00b", "lines": ["\x00"], "k\x00": 1},
                        notes="exit 1: a\x00b", action="look\x00")
    stored = await client.get_task(task.id)
    assert stored.status == "failed"
    assert stored.result == {"stdout": "a\u2400b", "lines": ["\u2400"], "k\u2400": 1, "action": "look\u2400"}
    assert stored.notes == "exit 1: a\u2400b (NUL characters in the outcome are shown as \u2400)"
