"""A report that also claims the worker's next task: one request where two were, with the same guarantees.

Through the real HTTP app on both backends, and a real `da worker` behind a loopback recorder that
notes which requests it sent.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from aiohttp import ClientSession, web
from aiohttp.test_utils import TestServer

from da.queue.client import QueueClient
from tests.support import loopback
from tests.support.server import QueueServer
from tests.support.waiting import wait_until
from tests.support.workers import WorkerProcess, wait_for_status

pytestmark = pytest.mark.backends("sqlite", "postgres")

BOX = {"machine": "test-box", "capabilities": ["lint"]}


async def claimed(http: httpx.AsyncClient) -> dict[str, Any]:
    response = await http.post("/v1/claim", json=BOX)
    assert response.status_code == 200, response.text
    return response.json()


async def stored(server: QueueServer, task_id: str) -> tuple[Any, ...]:
    (row,) = await server.query(f"SELECT status, assigned_to, lease FROM tasks WHERE id = '{task_id}'")
    return tuple(row)


async def test_a_report_hands_over_the_next_task_and_a_repeat_claims_nothing(
        server: QueueServer, http: httpx.AsyncClient, client: QueueClient) -> None:
    first = await client.create_task("lint", {"n": 1})
    second = await client.create_task("lint", {"n": 2})
    held = await claimed(http)
    assert held["task"]["id"] == first.id
    report = {"lease": held["lease"], "status": "done", "result": {"ok": True}, "claim": BOX}

    answer = await http.post(f"/v1/tasks/{first.id}/report", json=report)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["status"] == "done" and body["next"]["task"]["id"] == second.id
    assert body["next"]["lease_seconds"] > 0
    assert await stored(server, second.id) == ("claimed", "test-box", body["next"]["lease"])

    third = await client.create_task("lint", {"n": 3})
    again = await http.post(f"/v1/tasks/{first.id}/report", json=report)
    assert again.status_code == 200 and again.json()["status"] == "done"
    assert again.json()["next"] is None  # the report was a repeat: nothing more is claimed
    assert (await stored(server, third.id))[0] == "pending"

    # Without `claim` the answer is the task as before, with no `next` at all.
    plain = await http.post(f"/v1/tasks/{first.id}/report", json={k: v for k, v in report.items() if k != "claim"})
    assert plain.status_code == 200 and "next" not in plain.json()


async def test_nothing_ready_answers_next_null_and_the_report_stands(
        server: QueueServer, http: httpx.AsyncClient, client: QueueClient) -> None:
    only = await client.create_task("lint", {})
    other = await client.create_task("npm_build", {})  # not something this worker takes
    held = await claimed(http)
    answer = await http.post(f"/v1/tasks/{only.id}/report",
                             json={"lease": held["lease"], "status": "failed", "claim": BOX})
    assert answer.status_code == 200 and answer.json()["next"] is None
    assert (await stored(server, only.id))[0] == "failed"
    assert (await stored(server, other.id))[0] == "pending"


async def test_a_refused_report_or_claim_part_claims_nothing_and_changes_nothing(
        server: QueueServer, http: httpx.AsyncClient, client: QueueClient) -> None:
    first = await client.create_task("lint", {})
    waiting = await client.create_task("lint", {})
    held = await claimed(http)
    url = f"/v1/tasks/{first.id}/report"

    wrong_lease = await http.post(url, json={"lease": "not-the-lease", "status": "done", "claim": BOX})
    assert wrong_lease.status_code == 409, wrong_lease.text
    with_wait = await http.post(url, json={"lease": held["lease"], "status": "done", "claim": {**BOX, "wait": 5}})
    assert with_wait.status_code == 400 and "takes no 'wait'" in with_wait.json()["detail"]
    bad_claim = await http.post(url, json={"lease": held["lease"], "status": "done", "claim": {"machine": "x"}})
    assert bad_claim.status_code == 400
    assert bad_claim.json()["detail"].startswith("in field 'claim': ") and "capabilities" in bad_claim.json()["detail"]
    not_object = await http.post(url, json={"lease": held["lease"], "status": "done", "claim": ["lint"]})
    assert not_object.status_code == 400 and "field 'claim' must be a JSON object" in not_object.json()["detail"]

    assert await stored(server, first.id) == ("claimed", "test-box", held["lease"])
    assert (await stored(server, waiting.id))[0] == "pending"


async def test_a_worker_token_claims_in_a_report_only_as_its_own_machine(
        server: QueueServer, http: httpx.AsyncClient, client: QueueClient) -> None:
    _, secret = await client.create_token("worker", machine="test-box", aliases=["tb"])
    first = await client.create_task("lint", {})
    waiting = await client.create_task("lint", {})
    async with loopback.client(base_url=server.url, headers={"x-secret-key": secret}) as worker:
        held = await claimed(worker)
        url = f"/v1/tasks/{first.id}/report"
        as_other = await worker.post(url, json={"lease": held["lease"], "status": "done",
                                                "claim": {**BOX, "machine": "other-box"}})
        assert as_other.status_code == 403 and "may not claim as other-box" in as_other.json()["detail"]
        foreign_alias = await worker.post(url, json={"lease": held["lease"], "status": "done",
                                                     "claim": {**BOX, "aliases": ["gpu"]}})
        assert foreign_alias.status_code == 403 and "alias 'gpu'" in foreign_alias.json()["detail"]
        assert await stored(server, first.id) == ("claimed", "test-box", held["lease"])
        assert (await stored(server, waiting.id))[0] == "pending"

        own = await worker.post(url, json={"lease": held["lease"], "status": "done",
                                           "claim": {**BOX, "aliases": ["tb"]}})
        assert own.status_code == 200 and own.json()["next"]["task"]["id"] == waiting.id
    assert (await stored(server, waiting.id))[:2] == ("claimed", "test-box")


class Recorder:
    """A loopback HTTP hop in front of the queue that notes each request's path, status and whether it
    carried a `claim`: what a worker sent, seen from outside the worker."""

    def __init__(self, target: str) -> None:
        self.target = target
        self.seen: list[tuple[str, int, bool]] = []

    async def forward(self, request: web.Request) -> web.Response:
        body = await request.read()
        headers = {k: v for k, v in request.headers.items() if k.lower() not in ("host", "content-length")}
        async with self.session.request(request.method, self.target + request.path_qs, data=body,
                                        headers=headers) as answer:
            payload = await answer.read()
            carried = False
            if body:
                sent = orjson.loads(body)
                carried = isinstance(sent, dict) and sent.get("claim") is not None
            self.seen.append((request.path, answer.status, carried))
            return web.Response(body=payload, status=answer.status, content_type=answer.content_type)

    async def __aenter__(self) -> TestServer:
        self.session = ClientSession()
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.forward)
        self.server = TestServer(app, host="127.0.0.1")
        await self.server.start_server()
        return self.server

    async def __aexit__(self, *exc: object) -> None:
        await self.server.close()
        await self.session.close()


@pytest.fixture
async def recorder(server: QueueServer) -> AsyncIterator[Recorder]:
    recording = Recorder(server.url)
    async with recording:
        yield recording


async def test_a_worker_takes_its_next_task_with_each_report(
        server: QueueServer, client: QueueClient, recorder: Recorder, tmp_path: Path) -> None:
    tasks = [await client.create_task("run_script", {"script": f"echo {n}"}) for n in range(3)]
    worker = WorkerProcess(f"http://127.0.0.1:{recorder.server.port}", tmp_path, MAX_CONCURRENT="1").start()
    try:
        for task in tasks:
            assert (await wait_for_status(client, task.id)).status == "done"
        # The last report found nothing ready, so the worker went back to long-polling /v1/claim.
        await wait_until(lambda: _async([p for p, s, _ in recorder.seen[-1:]] == ["/v1/claim"]))
    finally:
        worker.kill()
    claims_answered = [s for p, s, _ in recorder.seen if p == "/v1/claim" and s == 200]
    reports = [(s, carried) for p, s, carried in recorder.seen if p.endswith("/report")]
    assert claims_answered == [200], recorder.seen  # only the first task came from /v1/claim
    assert reports == [(200, True)] * 3, recorder.seen
    for task in tasks[1:]:
        events = await client.task_events(task.id)
        assert [e.to_status for e in events][:3] == ["pending", "claimed", "in_progress"]


async def _async(value: bool) -> bool:
    return value
