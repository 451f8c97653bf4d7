"""The ACP session driver reporting through the queue: a fake adapter that really speaks ACP (on PATH as
claude-agent-acp), the real queue on both backends, people answering through the HTTP API."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from da.queue.client import QueueClient
from da.worker.agent_session import AgentSession, TurnResult
from da.worker.supervision import QueueReporter
from tests.support.server import SECRET, QueueServer
from tests.support.waiting import wait_until
from tests.test_agent_session import Fake

pytestmark = pytest.mark.backends("sqlite", "postgres")


async def held_task(http: httpx.AsyncClient) -> tuple[str, str]:
    """An agent task claimed and started by box-1: its id and lease."""
    created = (await http.post("/v1/tasks", json={"type": "agent_run", "agent": "claude",
                                                  "payload": {"prompt": "x"}})).json()
    claimed = (await http.post("/v1/claim", json={"machine": "box-1", "capabilities": ["agent_run"],
                                                  "agents": ["claude"]})).json()
    await http.post(f"/v1/tasks/{created['id']}/start", json={"lease": claimed["lease"]})
    return created["id"], claimed["lease"]


@pytest.fixture
async def queue(server: QueueServer) -> AsyncIterator[QueueClient]:
    async with QueueClient(server.url, SECRET, timeout=30) as client:
        yield client


async def supervise(queue: QueueClient, fake: Fake, task_id: str, lease: str, prompt: str) -> asyncio.Task[TurnResult]:
    reporter = QueueReporter(queue, task_id, lease, poll=5.0)
    return asyncio.create_task(AgentSession(fake.request(prompt), reporter).run())


async def test_an_agents_permission_request_is_answered_from_the_queue(
        queue: QueueClient, http: httpx.AsyncClient, tmp_path: Path) -> None:
    fake = Fake(tmp_path)
    task_id, lease = await held_task(http)
    running = await supervise(queue, fake, task_id, lease, "EXECUTE")

    async def asked() -> list[dict]:
        return (await http.get(f"/v1/tasks/{task_id}")).json()["asks"]

    (ask,) = await wait_until(asked, timeout=30)
    assert (ask["kind"], ask["title"], ask["status"]) == ("permission", "Run make test", "open")
    assert [option["id"] for option in ask["options"]] == ["allow", "always", "reject"]
    assert (await http.get(f"/v1/tasks/{task_id}")).json()["status"] == "waiting"
    answered = await http.post(f"/v1/tasks/{task_id}/asks/1", json={"option": "reject", "by": "ann"})
    assert answered.status_code == 200, answered.text
    result = await asyncio.wait_for(running, 60)
    assert result.status == "done", result.reason
    assert "permission 1: reject" in result.answer
    assert (await http.get(f"/v1/tasks/{task_id}")).json()["status"] == "in_progress"
    assert [(event["title"], event["outcome"]) for event in fake.events("permission")] == [("Run make test", "reject")]


async def test_progress_reaches_the_task_while_the_agent_runs(
        queue: QueueClient, http: httpx.AsyncClient, tmp_path: Path) -> None:
    fake = Fake(tmp_path)
    task_id, lease = await held_task(http)
    session = AgentSession(fake.request("PLAN TOOLS SLOW"), QueueReporter(queue, task_id, lease))
    running = asyncio.create_task(session.run())

    async def shown() -> dict | None:
        task = (await http.get(f"/v1/tasks/{task_id}")).json()
        record = task["progress_record"] or {}
        return task if record.get("plan") and len(record.get("tools", [])) == 3 else None

    task = await wait_until(shown, timeout=30)
    assert task["progress_record"]["plan"] == [{"content": "Read the code", "status": "completed"},
                                               {"content": "Change it", "status": "in_progress"}]
    assert task["progress_rev"] >= 1
    session.cancel()
    result = await asyncio.wait_for(running, 30)
    assert result.status == "cancelled"
    assert fake.events("cancel")
