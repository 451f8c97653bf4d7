"""Tokens kept in memory (SQLite) are forgotten the moment a revoke commits: a revoked token is refused at once,
however busy it was, and a lookup that was under way across the revoke keeps nothing stale."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from tests.support import loopback
from tests.support.server import SECRET, QueueServer

pytestmark = pytest.mark.backends("sqlite", "postgres")


async def make_token(admin: httpx.AsyncClient, **spec: str) -> dict[str, str]:
    response = await admin.post("/v1/tokens", json=spec)
    assert response.status_code == 201, response.text
    return dict(response.json())


async def test_a_busy_token_revoked_mid_stream_is_refused_from_the_revoke_on(server: QueueServer) -> None:
    async with loopback.client(base_url=server.url, headers={"x-secret-key": SECRET}) as admin:
        token = await make_token(admin, kind="client", name="busy-laptop")
        async with loopback.client(base_url=server.url, headers={"x-secret-key": token["token"]}) as laptop:
            assert (await laptop.get("/v1/tasks")).status_code == 200  # found once: kept from now on
            # Requests in flight while the revoke commits may pass or not; none sent after its answer may.
            during = [asyncio.ensure_future(laptop.get("/v1/tasks")) for _ in range(20)]
            revoked = await admin.post(f"/v1/tokens/{token['id']}/revoke")
            assert revoked.status_code == 200 and revoked.json()["revoked_at"]
            assert {(await answer).status_code for answer in during} <= {200, 401}
            after = [(await laptop.get("/v1/tasks")).status_code for _ in range(5)]
            created = await laptop.post("/v1/tasks", json={"type": "lint"})
        assert after == [401] * 5 and created.status_code == 401
        assert (await admin.get("/v1/tasks")).json()["tasks"] == []


async def test_a_revoked_worker_token_claims_nothing_and_another_token_still_works(server: QueueServer) -> None:
    async with loopback.client(base_url=server.url, headers={"x-secret-key": SECRET}) as admin:
        old = await make_token(admin, kind="worker", machine="box")
        created = (await admin.post("/v1/tasks", json={"type": "lint"})).json()
        box = {"machine": "box", "capabilities": ["lint"]}
        async with loopback.client(base_url=server.url, headers={"x-secret-key": old["token"]}) as worker:
            assert (await worker.get("/v1/whoami")).status_code == 200
            assert (await admin.post(f"/v1/tokens/{old['id']}/revoke")).status_code == 200
            refused = await worker.post("/v1/claim", json=box)
        assert refused.status_code == 401
        assert (await admin.get(f"/v1/tasks/{created['id']}")).json()["status"] == "pending"
        new = await make_token(admin, kind="worker", machine="box")
        async with loopback.client(base_url=server.url, headers={"x-secret-key": new["token"]}) as worker:
            claimed = await worker.post("/v1/claim", json=box)
        assert claimed.status_code == 200 and claimed.json()["task"]["id"] == created["id"]
