"""The terminal's verbs for supervised agents (asks, approve, deny, answer, say, watch, show) as the real `da`
client against a real queue, with the worker's side played over HTTP."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from tests.support import loopback
from tests.support.server import SECRET, QueueServer
from tests.support.terminal import da

PERMISSION = {"kind": "permission", "title": "Run `make deploy`?", "detail": "make deploy",
              "options": [{"id": "allow_once", "label": "Allow once"}, {"id": "allow_always", "label": "Allow always"},
                          {"id": "reject_once", "label": "Reject"}]}
PLAN = {"kind": "plan", "title": "Approve the plan?", "detail": "1. read\n2. fix",
        "options": [{"id": "approve", "label": "Approve"}, {"id": "changes", "label": "Request changes"}]}


@pytest.fixture
async def http(server: QueueServer) -> AsyncIterator[httpx.AsyncClient]:
    async with loopback.client(base_url=server.url, headers={"x-secret-key": SECRET}, timeout=30) as client:
        yield client


async def running(http: httpx.AsyncClient) -> tuple[str, str]:
    created = (await http.post("/v1/tasks", json={"type": "agent_run", "agent": "claude",
                                                  "payload": {"prompt": "ship it"}})).json()
    claimed = (await http.post("/v1/claim", json={"machine": "box-1", "capabilities": ["agent_run"],
                                                  "agents": ["claude"]})).json()
    assert claimed["task"]["id"] == created["id"]
    await http.post(f"/v1/tasks/{created['id']}/start", json={"lease": claimed["lease"]})
    return created["id"], claimed["lease"]


async def test_asks_lists_open_asks_and_approve_answers_the_oldest(server: QueueServer, http: httpx.AsyncClient,
                                                                   tmp_path: Path) -> None:
    empty = await da(server.url, "asks", cwd=tmp_path)
    assert (empty.code, empty.out.strip()) == (0, "No agent is waiting for an answer.")
    task_id, lease = await running(http)
    await http.post(f"/v1/tasks/{task_id}/asks", json={"lease": lease, **PERMISSION})
    listed = await da(server.url, "asks", cwd=tmp_path)
    header, row = listed.out.strip().splitlines()
    assert header.split() == ["TASK", "ASK", "MACHINE", "KIND", "AGE", "TITLE"]
    assert row.split()[:4] == [task_id[:8], "1", "box-1", "permission"] and row.endswith("Run `make deploy`?")

    shown = await da(server.url, "show", task_id[:8], cwd=tmp_path)
    assert "waiting" in shown.out.splitlines()[0]
    assert "ask 1 (permission, open, " in shown.out and "    make deploy" in shown.out
    assert "options: allow_once (Allow once), allow_always (Allow always), reject_once (Reject)" in shown.out

    approved = await da(server.url, "approve", task_id[:8], cwd=tmp_path)
    assert (approved.code, approved.out.strip()) == (0, f"task {task_id[:8]} ask 1 answered Allow once by tester.")
    task = (await http.get(f"/v1/tasks/{task_id}")).json()
    assert (task["status"], task["asks"][0]["answer"]) == ("in_progress", "allow_once")

    again = await da(server.url, "deny", task_id[:8], "1", cwd=tmp_path)
    assert (again.code, again.out.strip()) == (1, f"ask 1 of task {task_id[:8]} was already answered allow_once by "
                                                  "tester.")
    nothing = await da(server.url, "approve", task_id[:8], cwd=tmp_path)
    assert (nothing.code, nothing.out.strip()) == (1, f"task {task_id[:8]} has no open ask.")


async def test_deny_sends_a_plan_back_with_notes_and_answer_picks_an_option(
        server: QueueServer, http: httpx.AsyncClient, tmp_path: Path) -> None:
    task_id, lease = await running(http)
    await http.post(f"/v1/tasks/{task_id}/asks", json={"lease": lease, **PLAN})
    denied = await da(server.url, "deny", task_id[:8], "--notes=keep the old API", cwd=tmp_path)
    assert (denied.code, denied.out.strip()) == (0, f"task {task_id[:8]} ask 1 answered Request changes (keep the "
                                                    "old API) by tester.")
    await http.post(f"/v1/tasks/{task_id}/asks", json={"lease": lease, **PERMISSION})
    unknown = await da(server.url, "answer", task_id[:8], "maybe", cwd=tmp_path)
    assert (unknown.code, unknown.out.strip()) == (1, f"no open ask of task {task_id[:8]} has the option 'maybe'; its "
                                                      "ask 2 takes one of allow_once, allow_always, reject_once.")
    answered = await da(server.url, "answer", task_id[:8], "allow_always", cwd=tmp_path)
    assert (answered.code, answered.out.strip()) == (0, f"task {task_id[:8]} ask 2 answered Allow always by tester.")
    asks = (await http.get(f"/v1/tasks/{task_id}")).json()["asks"]
    assert [(ask["answer"], ask["note"]) for ask in asks] == [("changes", "keep the old API"), ("allow_always", None)]


async def test_say_queues_a_message_for_the_running_agent(server: QueueServer, http: httpx.AsyncClient,
                                                          tmp_path: Path) -> None:
    task_id, lease = await running(http)
    said = await da(server.url, "say", task_id[:8], "use the staging database", "--interrupt", cwd=tmp_path)
    assert (said.code, said.out.strip()) == (0, f"task {task_id[:8]} will get your message now, interrupting its "
                                                "turn.")
    beat = (await http.post(f"/v1/tasks/{task_id}/heartbeat", json={"lease": lease, "messages": True})).json()
    assert [(m["text"], m["interrupt"], m["created_by"]) for m in beat["messages"]] == [
        ("use the staging database", True, "tester")]


async def test_watch_follows_progress_until_the_task_ends(server: QueueServer, http: httpx.AsyncClient,
                                                          tmp_path: Path) -> None:
    task_id, lease = await running(http)
    watching = asyncio.create_task(da(server.url, "watch", task_id[:8], cwd=tmp_path))
    record = {"plan": [{"content": "read the code", "status": "completed"},
                       {"content": "fix the bug", "status": "in_progress"}],
              "tools": [{"id": "t1", "title": "pytest -q", "kind": "execute", "status": "in_progress"}],
              "answer_tail": "Found it: an off-by-one.", "usage": {"input_tokens": 900, "output_tokens": 120,
                                                                     "cost_usd": 0.0123}}
    # Whether watch starts before or after these, it prints the record and ends with the task.
    await http.post(f"/v1/tasks/{task_id}/progress", json={"lease": lease, "progress": record})
    await http.post(f"/v1/tasks/{task_id}/report", json={"lease": lease, "status": "done",
                                                         "result": {"answer": "fixed", "usage": record["usage"]}})
    run = await asyncio.wait_for(watching, 60)
    assert run.code == 0, run.out + run.err
    for line in ("  [x] read the code", "  [>] fix the bug", "  in_progress: pytest -q", "  | Found it: an off-by-one.",
                 "  usage: 900 in / 120 out tokens, $0.0123"):
        assert line in run.out.splitlines(), run.out
    assert f"{task_id[:8]}  done" in run.out
