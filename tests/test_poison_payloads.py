"""Poison input: JSON nested too deeply to be answered back is refused at the door, and a stored row that
cannot be read (one written before the limit, or damaged) becomes a task for a person, never a 500 for the
list and never a task handed to a worker."""

from __future__ import annotations

import httpx
import pytest

from da.queue import models
from tests.support.server import QueueServer

pytestmark = pytest.mark.backends("sqlite", "postgres")


def nested_text(depth: int) -> str:
    """A JSON object `depth` levels deep, as text (json.dumps itself gives up near 1000 levels)."""
    return '{"x":' * (depth - 1) + "{}" + "}" * (depth - 1)


async def rows(server: QueueServer) -> list[tuple]:
    return (await server.query("SELECT id, status, payload, result, attempts FROM tasks ORDER BY seq")
            + await server.query("SELECT id, task_id, to_status FROM events ORDER BY id"))


@pytest.mark.parametrize("depth", [models.MAX_DEPTH + 1, 255, 1023])
async def test_a_payload_nested_beyond_the_limit_is_refused_and_changes_nothing(
        server: QueueServer, http: httpx.AsyncClient, depth: int) -> None:
    before = await rows(server)
    body = '{"type": "run_script", "payload": ' + nested_text(depth) + "}"
    response = await http.post("/v1/tasks", content=body)
    assert response.status_code == 400, response.text
    assert response.json()["detail"] == (f"field 'payload' nests more than {models.MAX_DEPTH} levels of objects "
                                         f"and arrays; flatten it to at most {models.MAX_DEPTH}.")
    assert await rows(server) == before
    assert (await http.get("/v1/tasks")).status_code == 200


async def test_a_payload_at_the_limit_is_stored_and_read_back(http: httpx.AsyncClient) -> None:
    body = '{"type": "run_script", "payload": ' + nested_text(models.MAX_DEPTH) + "}"
    created = await http.post("/v1/tasks", content=body)
    assert created.status_code == 201, created.text
    listed = await http.get("/v1/tasks")
    assert listed.status_code == 200
    assert listed.json()["tasks"][0]["payload"] == created.json()["payload"]


async def test_a_result_nested_beyond_the_limit_is_refused_and_the_lease_kept(
        server: QueueServer, http: httpx.AsyncClient) -> None:
    task = (await http.post("/v1/tasks", json={"type": "run_script", "payload": {}})).json()
    claimed = (await http.post("/v1/claim", json={"machine": "w", "capabilities": ["run_script"]})).json()
    before = await rows(server)
    body = '{"lease": "' + claimed["lease"] + '", "status": "done", "result": ' + nested_text(300) + "}"
    response = await http.post(f"/v1/tasks/{task['id']}/report", content=body)
    assert response.status_code == 400 and "field 'result' nests more than" in response.json()["detail"]
    assert await rows(server) == before
    done = await http.post(f"/v1/tasks/{task['id']}/report",
                           json={"lease": claimed["lease"], "status": "done", "result": {}})
    assert done.status_code == 200 and done.json()["status"] == "done"


async def _store_poison(server: QueueServer, http: httpx.AsyncClient, payload_text: str) -> str:
    """A pending task whose stored payload is `payload_text`, as a row from before the limit looks."""
    task = (await http.post("/v1/tasks", json={"type": "run_script", "payload": {"script": "true"}})).json()
    quoted = payload_text.replace("'", "''")
    await server.query(f"UPDATE tasks SET payload = '{quoted}' WHERE id = '{task['id']}'")
    return str(task["id"])


@pytest.mark.parametrize("stored", [nested_text(300), nested_text(1023), '{"script": "tru', "[1, 2]"],
                         ids=["300-deep", "1023-deep", "cut-short", "not-an-object"])
async def test_a_stored_payload_that_cannot_be_read_is_quarantined_not_claimed(
        server: QueueServer, http: httpx.AsyncClient, stored: str) -> None:
    poison = await _store_poison(server, http, stored)
    healthy = (await http.post("/v1/tasks", json={"type": "run_script", "payload": {"script": "echo ok"}})).json()
    # The poison task is older, so a claim reaches it first: the worker must get the healthy one.
    claim = await http.post("/v1/claim", json={"machine": "w", "capabilities": ["run_script"]})
    assert claim.status_code == 200, claim.text
    assert claim.json()["task"]["id"] == healthy["id"]
    assert (await http.post("/v1/claim", json={"machine": "w", "capabilities": ["run_script"]})).status_code == 204

    listed = await http.get("/v1/tasks")
    assert listed.status_code == 200, listed.text
    shown = next(task for task in listed.json()["tasks"] if task["id"] == poison)
    assert shown["status"] == "needs_human" and shown["attempts"] == 0 and shown["payload"] == {}
    assert shown["notes"].startswith("quarantined: the stored payload cannot be read back")
    assert shown["result"]["action"].startswith("resubmit the task with a payload that is a JSON object")
    one = await http.get(f"/v1/tasks/{poison}")
    assert one.status_code == 200
    assert [(e["to"], e["by"]) for e in one.json()["events"]][-1] == ("needs_human", "queue")
    # What was stored is kept for whoever repairs it.
    assert (await server.query(f"SELECT payload FROM tasks WHERE id = '{poison}'")) == [(stored,)]


async def test_a_poison_row_is_quarantined_by_the_first_read_that_meets_it(
        server: QueueServer, http: httpx.AsyncClient) -> None:
    poison = await _store_poison(server, http, nested_text(400))
    listed = await http.get("/v1/tasks?status=pending")
    assert listed.status_code == 200
    assert listed.json()["tasks"] == []
    review = await http.get("/v1/tasks?status=needs_human")
    assert [task["id"] for task in review.json()["tasks"]] == [poison]
    trail = (await http.get(f"/v1/tasks/{poison}")).json()["events"]
    assert [(e["from"], e["to"], e["by"]) for e in trail] == [(None, "pending", None),
                                                             ("pending", "needs_human", "queue")]
    # Once settled by a person it stays readable: resolving it failed is allowed.
    resolved = await http.post(f"/v1/tasks/{poison}/resolve", json={"status": "failed", "notes": "resubmitted"})
    assert resolved.status_code == 200 and resolved.json()["status"] == "failed"


async def test_a_finished_task_with_an_unreadable_result_still_lists(
        server: QueueServer, http: httpx.AsyncClient) -> None:
    task = (await http.post("/v1/tasks", json={"type": "run_script", "payload": {}})).json()
    claimed = (await http.post("/v1/claim", json={"machine": "w", "capabilities": ["run_script"]})).json()
    await http.post(f"/v1/tasks/{task['id']}/report", json={"lease": claimed["lease"], "status": "done"})
    await server.query(f"UPDATE tasks SET result = '{nested_text(600)}' WHERE id = '{task['id']}'")
    listed = await http.get("/v1/tasks")
    assert listed.status_code == 200, listed.text
    (shown,) = listed.json()["tasks"]
    assert shown["status"] == "done"
    assert shown["result"]["error"].startswith("the stored result cannot be read back")
