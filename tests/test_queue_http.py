"""The HTTP surface: auth on every route, one error shape, and bad input that changes nothing."""

from __future__ import annotations

import json
import re

import httpx
import pytest

from da.queue import routes
from tests.support import loopback
from tests.support.processes import served_routes as routed
from tests.support.server import SECRET, QueueServer

SAMPLE_ID = "00000000-0000-0000-0000-000000000000"
pytestmark = pytest.mark.backends("sqlite", "postgres")


def test_openapi_documents_exactly_the_routes() -> None:
    doc = routes.document("x")
    documented = {(method.upper(), path) for path, ops in doc["paths"].items() for method in ops}
    assert documented == routed()
    assert len(documented) == len(routes.ROUTES) == 31


async def test_health_is_public(server: QueueServer) -> None:
    async with loopback.client() as anonymous:
        response = await anonymous.get(f"{server.url}/health")
    assert response.status_code == 200 and response.json()["status"] == "ok"


@pytest.mark.parametrize("headers", [{}, {"x-secret-key": "wrong"}, {"Authorization": "Bearer wrong"},
                                     {"Authorization": f"Basic {SECRET}"}])
async def test_every_other_route_refuses_a_missing_or_wrong_secret(server: QueueServer, headers) -> None:
    async with loopback.client(headers=headers) as anonymous:
        for method, path in routed() - {("GET", "/health")}:
            response = await anonymous.request(method, server.url + path.replace("{id}", SAMPLE_ID), json={})
            assert response.status_code == 401, (method, path)
            assert response.json()["error"] == "unauthorized"


async def test_bearer_token_is_accepted(server: QueueServer) -> None:
    async with loopback.client(headers={"Authorization": f"Bearer {SECRET}"}) as bearer:
        assert (await bearer.get(f"{server.url}/v1/tasks")).status_code == 200


async def snapshot(server: QueueServer) -> list[tuple]:
    tasks = await server.query("SELECT * FROM tasks ORDER BY seq")
    return tasks + await server.query("SELECT * FROM events ORDER BY id")


BAD_BODIES = [
    ("POST", "/v1/tasks", b"{not json", "not valid JSON"),
    ("POST", "/v1/tasks", b"[1, 2]", "must be a JSON object"),
    ("POST", "/v1/tasks", b"\xff\xfe", "not UTF-8"),
    ("POST", "/v1/tasks", b"[" * 100000 + b"]" * 100000, "nests too deeply"),
    ("POST", "/v1/tasks", json.dumps({}).encode(), "'type' is required"),
    ("POST", "/v1/tasks", json.dumps({"type": 5}).encode(), "'type' must be a string"),
    ("POST", "/v1/tasks", json.dumps({"type": "a b"}).encode(), "'type' may hold only"),
    ("POST", "/v1/tasks", json.dumps({"type": "x", "priority": 11}).encode(), "between 0 and 10"),
    ("POST", "/v1/tasks", json.dumps({"type": "x", "priority": "high"}).encode(), "whole number"),
    ("POST", "/v1/tasks", json.dumps({"type": "x", "payload": []}).encode(), "'payload' must be a JSON object"),
    ("POST", "/v1/tasks", json.dumps({"type": "x", "colour": "red"}).encode(), "unknown field 'colour'"),
    ("POST", "/v1/tasks", json.dumps({"type": "x", "notes": "a\u0000b"}).encode(), "must not contain NUL"),
    ("POST", "/v1/tasks", json.dumps({"type": "x", "target_machine": "'; DROP TABLE tasks;--"}).encode(),
     "may hold only"),
    ("POST", "/v1/claim", json.dumps({"machine": "w"}).encode(), "'capabilities' is required"),
    ("POST", "/v1/claim", json.dumps({"machine": "w", "capabilities": "run"}).encode(), "list of strings"),
    ("POST", "/v1/claim", json.dumps({"machine": "w", "capabilities": [], "wait": 600}).encode(), "between 0"),
    ("POST", "/v1/tasks/{id}/start", json.dumps({}).encode(), "'lease' is required"),
    ("POST", "/v1/tasks/{id}/heartbeat", json.dumps({"lease": 3}).encode(), "'lease' must be a string"),
    ("POST", "/v1/tasks/{id}/report", json.dumps({"lease": "x", "status": "great"}).encode(),
     "'status' must be one of done, failed, needs_human"),
    ("POST", "/v1/tasks/{id}/report", json.dumps({"lease": "x", "status": "done", "result": 7}).encode(),
     "'result' must be a JSON object"),
    ("POST", "/v1/tasks/{id}/resolve", json.dumps({"status": "claimed"}).encode(), "must be one of done"),
    ("POST", "/v1/tasks/resolve", json.dumps({"from_status": "done", "status": "pending"}).encode(),
     "'from_status' must be one of needs_human, failed"),
    ("POST", "/v1/tasks/{id}/cancel", json.dumps({"by": ["x"]}).encode(), "'by' must be a string"),
    ("GET", "/v1/tasks?status=lost", b"", "unknown status 'lost'"),
    ("GET", "/v1/tasks?limit=abc", b"", "'limit' must be a whole number"),
    ("GET", "/v1/tasks?machine=a%27%20OR%201=1", b"", "'machine' is not a valid name"),
    ("GET", "/v1/events?after=-2", b"", "'after' must be between"),
    ("GET", "/v1/events?wait=forever", b"", "'wait' must be a number"),
]


@pytest.mark.parametrize(("method", "path", "body", "message"), BAD_BODIES,
                         ids=[f"{m} {p} {msg}" for m, p, _, msg in BAD_BODIES])
async def test_bad_input_gets_a_clear_400_and_changes_nothing(server: QueueServer, http: httpx.AsyncClient,
                                                              method, path, body, message) -> None:
    created = await http.post("/v1/tasks", json={"type": "run_script", "payload": {"script": "true"}})
    path = path.replace("{id}", created.json()["id"])
    before = await snapshot(server)
    response = await http.request(method, path, content=body)
    assert response.status_code == 400, response.text
    assert message in response.json()["detail"]
    assert response.json()["error"] == "bad_request"
    assert await snapshot(server) == before
    assert (await http.get("/health")).status_code == 200


async def test_oversize_body_is_413_and_changes_nothing(server: QueueServer, http: httpx.AsyncClient) -> None:
    before = await snapshot(server)
    body = json.dumps({"type": "x", "payload": {"blob": "a" * (2 * 1024 * 1024)}})
    response = await http.post("/v1/tasks", content=body)
    assert response.status_code == 413
    assert "larger than" in response.json()["detail"]
    assert await snapshot(server) == before


async def test_unknown_route_and_method_use_the_error_shape(http: httpx.AsyncClient) -> None:
    missing = await http.get("/v2/nothing")
    assert missing.status_code == 404 and missing.json()["error"] == "not_found"
    wrong_method = await http.delete("/v1/tasks")
    assert wrong_method.status_code == 405 and "DELETE" in wrong_method.json()["detail"]


async def test_a_malformed_task_id_is_404_naming_the_route(http: httpx.AsyncClient) -> None:
    response = await http.get("/v1/tasks/zz'--")
    assert response.status_code == 404 and response.json()["detail"].startswith("no route /v1/tasks/zz'--")


async def test_unknown_task_is_404(http: httpx.AsyncClient) -> None:
    response = await http.post(f"/v1/tasks/{SAMPLE_ID}/report", json={"lease": "x", "status": "done"})
    assert response.status_code == 404 and response.json()["error"] == "not_found"


async def test_metrics_show_tasks_by_status_and_claim_latency(http: httpx.AsyncClient) -> None:
    await http.post("/v1/tasks", json={"type": "lint"})
    await http.post("/v1/claim", json={"machine": "w", "capabilities": ["nothing"]})
    text = (await http.get("/metrics")).text
    assert 'da_tasks{status="pending",type="lint"} 1' in text
    assert re.search(r"^da_claim_seconds_count 1$", text, re.MULTILINE)
    assert "da_machines_online 1" in text
