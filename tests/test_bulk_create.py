"""Creating many tasks in one request (a fan-out such as "run the tests on every machine"): all or none."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from da.queue import routes
from tests.support import loopback
from tests.support.server import QueueServer
from tests.support.waiting import wait_until

pytestmark = pytest.mark.backends("sqlite", "postgres")


async def count(server: QueueServer) -> int:
    return int((await server.query("SELECT count(*) FROM tasks"))[0][0])


async def test_a_list_creates_every_task_in_order_and_wakes_a_parked_claim(
        server: QueueServer, http: httpx.AsyncClient) -> None:
    parked = asyncio.ensure_future(http.post("/v1/claim", json={"machine": "box-2", "capabilities": ["test_run"],
                                                                "wait": 20}))

    async def parked_seen() -> bool:
        machines = (await http.get("/v1/machines")).json()["machines"]
        return any(machine["name"] == "box-2" for machine in machines)

    await wait_until(parked_seen)
    bodies = [{"type": "test_run", "payload": {"n": n}, "target_machine": f"box-{n}", "priority": n % 2,
               "created_by": "fan-out"} for n in range(5)]
    bodies[3].update(lock="deploy", notes="the third")
    bodies[1]["payload"]["cwd"] = "/srv/repo"  # a folder lock, held per machine
    answer = await http.post("/v1/tasks", json=bodies)
    assert answer.status_code == 201, answer.text
    created = answer.json()["tasks"]
    assert [t["payload"]["n"] for t in created] == list(range(5))
    assert [t["target_machine"] for t in created] == [f"box-{n}" for n in range(5)]
    assert {t["status"] for t in created} == {"pending"} and len({t["id"] for t in created}) == 5
    assert created[3]["lock"] == "deploy" and created[3]["notes"] == "the third"

    claim = await asyncio.wait_for(parked, 10)
    assert claim.status_code == 200 and claim.json()["task"]["id"] == created[2]["id"]

    rows = await server.query("SELECT id, created_by, lock, checkout FROM tasks ORDER BY seq")
    assert [row[0] for row in rows] == [t["id"] for t in created]
    assert [row[1] for row in rows] == ["fan-out"] * 5
    assert [(row[2], row[3]) for row in rows][1:4] == [(None, "/srv/repo"), (None, None), ("deploy", None)]
    events = await server.query("SELECT count(*) FROM events WHERE to_status = 'pending'")
    assert events[0][0] == 5
    one = await http.get(f"/v1/tasks/{created[4]['id']}")
    assert one.status_code == 200 and one.json()["payload"] == {"n": 4}


async def test_one_bad_item_is_named_and_nothing_is_created(server: QueueServer, http: httpx.AsyncClient) -> None:
    good = {"type": "lint", "payload": {}}
    cases = [
        ([good, good, {"type": "lint", "payload": "not an object"}], "task 2 of the list (counting from 0): "),
        ([good, {"payload": {}}], "task 1 of the list (counting from 0): "),
        ([good, "lint"], "task 1 of the list (counting from 0): the request body must be a JSON object"),
        ([{**good, "priority": -1}, good], "task 0 of the list (counting from 0): "),
        ([], f"a list of tasks must hold 1 to {routes.MAX_BULK} of them, got 0"),
        ([good] * (routes.MAX_BULK + 1), f"got {routes.MAX_BULK + 1}"),
    ]
    for body, said in cases:
        answer = await http.post("/v1/tasks", json=body)
        assert answer.status_code == 400, answer.text
        assert answer.json()["detail"].startswith(said) or said in answer.json()["detail"], answer.text
        assert await count(server) == 0
    assert "Nothing was created." in (await http.post("/v1/tasks", json=[good, {}])).json()["detail"]


async def test_a_bulk_create_needs_a_person_s_credential(server: QueueServer, http: httpx.AsyncClient) -> None:
    _, secret = await _token(http)
    async with loopback.client(base_url=server.url, headers={"x-secret-key": secret}) as worker:
        answer = await worker.post("/v1/tasks", json=[{"type": "lint"}])
    assert answer.status_code == 403
    assert await count(server) == 0


async def _token(http: httpx.AsyncClient) -> tuple[str, str]:
    made = (await http.post("/v1/tokens", json={"kind": "worker", "machine": "box"})).json()
    return made["id"], made["token"]
