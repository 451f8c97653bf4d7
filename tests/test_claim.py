"""The claim contract: every rule of who may take which task, and no task taken twice."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from da.queue.client import QueueClient
from tests.support import loopback
from tests.support.processes import claim_one
from tests.support.server import SECRET
from tests.support.waiting import until_parked, wait_until

pytestmark = pytest.mark.backends("sqlite", "postgres")

MAC: dict[str, Any] = {"machine": "mac-mini", "capabilities": ["agent_run", "ios_build"], "agents": ["claude", "codex"],
       "aliases": ["mac"]}
LINUX: dict[str, Any] = {"machine": "thinkpad", "capabilities": ["agent_run", "android_build"], "agents": ["gemini"]}


async def test_sixteen_concurrent_claimers_take_each_of_500_tasks_exactly_once(client: QueueClient) -> None:
    # Created in one request: the race is between the claims.
    bodies = [{"type": "run_script", "payload": {"script": "true"}}] * 500
    answer = await client.request("POST", "/v1/tasks", json=bodies, idempotent=False)
    created = {task["id"] for task in answer.json()["tasks"]}
    taken: list[str] = []

    async def claimer(number: int) -> None:
        while True:
            claim = await client.claim(f"worker-{number}", ["run_script"])
            if claim is None:
                return
            taken.append(claim.task.id)

    await asyncio.gather(*(claimer(n) for n in range(16)))
    assert len(taken) == 500
    assert set(taken) == created


async def test_type_must_be_a_capability(client: QueueClient) -> None:
    await client.create_task("android_build", {"cwd": "/a"})
    assert await claim_one(client, **MAC) is None
    claim = await claim_one(client, **LINUX)
    assert claim is not None and claim.task.type == "android_build"


async def test_target_machine_pins_by_name_or_alias(client: QueueClient) -> None:
    by_name = await client.create_task("agent_run", {"prompt": "a"}, target_machine="mac-mini")
    by_alias = await client.create_task("agent_run", {"prompt": "b"}, target_machine="mac")
    assert await claim_one(client, **LINUX) is None
    first, second = await claim_one(client, **MAC), await claim_one(client, **MAC)
    assert {first.task.id, second.task.id} == {by_name.id, by_alias.id}


async def test_legacy_payload_target_machine_is_honoured(client: QueueClient) -> None:
    task = await client.create_task("agent_run", {"prompt": "x", "_target_machine": "thinkpad"})
    assert task.target_machine == "thinkpad"
    assert "_target_machine" not in task.payload
    assert await claim_one(client, **MAC) is None
    assert (await claim_one(client, **LINUX)).task.id == task.id


async def test_agent_must_be_one_the_worker_has(client: QueueClient) -> None:
    task = await client.create_task("agent_run", {"prompt": "x"}, agent="gemini")
    assert await claim_one(client, **MAC) is None
    assert (await claim_one(client, **LINUX)).task.id == task.id


async def test_preferred_machine_gets_first_call_then_anyone_after_the_grace(make_server) -> None:
    server = await make_server(overflow_grace=0.5)
    async with QueueClient(server.url, "test-secret-0123456789") as client:
        task = await client.create_task("agent_run", {"prompt": "x"}, preferred_machine="mac-mini")
        assert await claim_one(client, **LINUX) is None
        started = time.monotonic()
        claim = await client.claim(wait=5, **LINUX)
        assert claim is not None and claim.task.id == task.id
        assert time.monotonic() - started >= 0.3


async def test_preferred_machine_takes_it_at_once(client: QueueClient) -> None:
    task = await client.create_task("agent_run", {"prompt": "x"}, preferred_machine="mac")
    assert (await claim_one(client, **MAC)).task.id == task.id


async def test_priority_then_age(client: QueueClient) -> None:
    low = await client.create_task("run_script", {"script": "1"}, priority=1)
    old = await client.create_task("run_script", {"script": "2"}, priority=7)
    new = await client.create_task("run_script", {"script": "3"}, priority=7)
    order = [(await claim_one(client, machine="w", capabilities=["run_script"])).task.id for _ in range(3)]
    assert order == [old.id, new.id, low.id]


async def test_lock_holds_a_checkout_until_the_holder_finishes(client: QueueClient) -> None:
    first = await client.create_task("agent_run", {"prompt": "a", "cwd": "~/app"})
    second = await client.create_task("agent_run", {"prompt": "b", "cwd": "~/app"})
    other = await client.create_task("agent_run", {"prompt": "c", "cwd": "~/other"})
    held = await claim_one(client, **MAC)
    assert held.task.id == first.id
    assert (await claim_one(client, **MAC)).task.id == other.id
    assert await claim_one(client, **MAC) is None
    waiting = asyncio.create_task(client.claim(wait=10, **MAC))
    await until_parked(client.url)
    assert not waiting.done()
    await client.report(first.id, held.lease, "done", {"returncode": 0})
    claim = await asyncio.wait_for(waiting, 5)
    assert claim.task.id == second.id


async def test_cwd_lock_is_per_machine(client: QueueClient) -> None:
    await client.create_task("agent_run", {"prompt": "a", "cwd": "~/app"})
    second = await client.create_task("agent_run", {"prompt": "b", "cwd": "~/app"})
    assert await claim_one(client, **MAC) is not None
    assert (await claim_one(client, machine="thinkpad", capabilities=["agent_run"])).task.id == second.id


async def test_named_lock_is_global(client: QueueClient) -> None:
    await client.create_task("run_script", {"script": "deploy"}, lock="deploy-prod")
    await client.create_task("run_script", {"script": "deploy"}, lock="deploy-prod")
    assert await claim_one(client, machine="a", capabilities=["run_script"]) is not None
    assert await claim_one(client, machine="b", capabilities=["run_script"]) is None


async def test_waiting_claim_wakes_the_moment_a_task_is_created(client: QueueClient) -> None:
    waiting = asyncio.create_task(client.claim("w", ["run_script"], wait=30))
    await until_parked(client.url)
    assert not waiting.done()
    created_at = time.monotonic()
    task = await client.create_task("run_script", {"script": "true"})
    claim = await asyncio.wait_for(waiting, 5)
    assert claim.task.id == task.id
    assert time.monotonic() - created_at < 0.9  # well before the 1 s re-check


async def test_empty_wait_answers_no_content(client: QueueClient) -> None:
    started = time.monotonic()
    assert await client.claim("w", ["run_script"], wait=0.3) is None
    assert time.monotonic() - started >= 0.3


async def test_a_claim_whose_worker_hung_up_is_handed_back(server, client: QueueClient) -> None:
    async with loopback.client(base_url=server.url, headers={"x-secret-key": SECRET}) as worker:
        waiting = asyncio.create_task(worker.post("/v1/claim", json={"machine": "w", "capabilities": ["lint"],
                                                                    "wait": 30}, timeout=60))
        await until_parked(server.url)
        waiting.cancel()  # the worker goes away mid long-poll
    task = await client.create_task("lint", {"cwd": "/x"})

    async def settled() -> bool:
        events = await client.task_events(task.id)
        return (await client.get_task(task.id)).status == "pending" and len(events) in (1, 3)

    await wait_until(settled)
    current = await client.get_task(task.id)
    assert current.status == "pending" and current.attempts == 0 and current.assigned_to is None
    claim = await client.claim("other", ["lint"])
    assert claim is not None and claim.task.id == task.id
