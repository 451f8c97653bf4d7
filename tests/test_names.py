"""Names (type, machine, agent, lock, capabilities, lease) pass one pattern in full: a trailing newline is
refused with one sentence, never stored as a task no worker can claim (issue 24, bytes and names)."""

from __future__ import annotations

import httpx
import pytest


async def _stored(http: httpx.AsyncClient) -> list[dict]:
    return (await http.get("/v1/tasks")).json()["tasks"]


@pytest.mark.parametrize(("field", "where"), [("type", "body"), ("agent", "body"), ("preferred_machine", "body"),
                                              ("target_machine", "body"), ("lock", "body"), ("lock", "payload")])
async def test_a_task_name_with_a_trailing_newline_is_refused(http: httpx.AsyncClient, field: str, where: str) -> None:
    body: dict = {"type": "run_script", "payload": {"script": "true"}}
    (body if where == "body" else body["payload"])[field] = "run_script\n"
    response = await http.post("/v1/tasks", json=body)
    assert response.status_code == 400, response.text
    assert response.json()["detail"] == (f"field {field!r} may hold only letters, digits and _.:@/~+- "
                                         "(got 'run_script\\n').")
    assert await _stored(http) == []


async def test_a_claim_with_a_newline_in_a_name_is_refused(http: httpx.AsyncClient) -> None:
    await http.post("/v1/tasks", json={"type": "run_script", "payload": {"script": "true"}})
    machine = await http.post("/v1/claim", json={"machine": "box\n", "capabilities": ["run_script"]})
    assert machine.status_code == 400 and "field 'machine' may hold only" in machine.json()["detail"]
    capability = await http.post("/v1/claim", json={"machine": "box", "capabilities": ["run_script\n"]})
    assert capability.status_code == 400
    assert capability.json()["detail"] == "field 'capabilities' holds an invalid name 'run_script\\n'."
    assert [task["status"] for task in await _stored(http)] == ["pending"]


async def test_a_listing_filter_and_a_lease_name_with_a_newline_are_refused(http: httpx.AsyncClient) -> None:
    listing = await http.get("/v1/tasks", params={"type": "run_script\n"})
    assert listing.status_code == 400 and listing.json()["detail"] == "query parameter 'type' is not a valid name."
    lease = await http.post("/v1/leases/slack-bot%0A", json={"holder": "h" * 32, "ttl": 30})
    assert lease.status_code == 400 and "lease name 'slack-bot\\n' may hold only" in lease.json()["detail"]
