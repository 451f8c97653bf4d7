"""Named leases: one holder per name across every process and machine that shares the queue."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest

from da.queue import errors
from da.queue.settings import QueueSettings
from da.queue.store import create_store

pytestmark = pytest.mark.backends("sqlite", "postgres")


async def test_a_lease_has_one_holder_until_it_lets_go(http: httpx.AsyncClient) -> None:
    first = await http.post("/v1/leases/slack:T1", json={"holder": "mac-mini:41", "ttl": 30})
    assert first.status_code == 200 and first.json()["holder"] == "mac-mini:41"
    refused = await http.post("/v1/leases/slack:T1", json={"holder": "thinkpad:7", "ttl": 30})
    assert refused.status_code == 409
    assert refused.json()["detail"].startswith("lease 'slack:T1' is held by mac-mini for ")
    renewed = await http.post("/v1/leases/slack:T1", json={"holder": "mac-mini:41", "ttl": 60})
    assert renewed.status_code == 200 and renewed.json()["acquired_at"] == first.json()["acquired_at"]
    assert renewed.json()["expires_at"] > first.json()["expires_at"]
    wrong = await http.delete("/v1/leases/slack:T1", params={"holder": "thinkpad:7"})
    assert wrong.status_code == 409 and "held by mac-mini, not thinkpad:7" in wrong.json()["detail"]
    released = await http.delete("/v1/leases/slack:T1", params={"holder": "mac-mini:41"})
    assert released.json() == {"name": "slack:T1", "released": True}
    again = await http.delete("/v1/leases/slack:T1", params={"holder": "mac-mini:41"})
    assert again.json() == {"name": "slack:T1", "released": False}
    taken = await http.post("/v1/leases/slack:T1", json={"holder": "thinkpad:7"})
    assert taken.status_code == 200 and taken.json()["holder"] == "thinkpad:7"


@pytest.mark.parametrize(("body", "problem"), [
    ({"ttl": 30}, "field 'holder' is required."),
    ({"holder": "x", "ttl": 1}, "'ttl'"),
    ({"holder": "x", "colour": "red"}, "unknown field 'colour'"),
    ({"holder": "x", "data": {"note": "n" * 3000}}, "field 'data' is larger than 2000 bytes"),
    ({"holder": "x", "data": [1]}, "field 'data' must be a JSON object."),
    ([], "must be a JSON object"),
])
async def test_bad_lease_requests_get_one_sentence(http: httpx.AsyncClient, body: object, problem: str) -> None:
    response = await http.post("/v1/leases/slack:T1", json=body)
    assert response.status_code == 400 and problem in response.json()["detail"]
    missing = await http.delete("/v1/leases/slack:T1")
    assert missing.status_code == 400 and "'holder' is required" in missing.json()["detail"]


async def test_an_expired_lease_goes_to_the_next_holder_and_racers_get_one(tmp_path: Path, backend: str,
                                                                           new_database) -> None:
    now = [1000.0]
    url = await new_database() if backend == "postgres" else ""
    store = create_store(QueueSettings(secret="s", db_path=tmp_path / "q.db", db_url=url), clock=lambda: now[0])
    await store.open()
    try:
        held = await store.acquire_lease("slack:T1", "a", 30, {"cursor": 7})
        assert held.expires_at == 1030.0 and held.data == {"cursor": 7}
        now[0] = 1029.0
        with pytest.raises(errors.Conflict):
            await store.acquire_lease("slack:T1", "b", 30)
        now[0] = 1030.0
        taken = await store.acquire_lease("slack:T1", "b", 30)
        assert (taken.holder, taken.acquired_at, taken.data) == ("b", 1030.0, {"cursor": 7})
        assert await store.release_lease("slack:T1", "b")
        handed = await store.acquire_lease("slack:T1", "c", 30)
        assert (handed.holder, handed.data) == ("c", {"cursor": 7})
        now[0] = 2000.0
        results = await asyncio.gather(*(store.acquire_lease("slack:T2", f"racer{n}", 30) for n in range(8)),
                                       return_exceptions=True)
        winners = [r for r in results if not isinstance(r, BaseException)]
        assert len(winners) == 1 and all(isinstance(r, errors.Conflict) for r in results if r not in winners)
    finally:
        await store.close()
