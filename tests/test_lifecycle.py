"""A task's life through the real service: claim, start, heartbeat, report, reap, resolve, cancel."""

from __future__ import annotations

import asyncio
import functools
from typing import Any

import httpx
import pytest

from da.queue import errors
from da.queue.client import QueueClient
from tests.support.server import SECRET, QueueServer
from tests.support.waiting import until_parked, wait_until

# Leases that run out within a test, yet outlast a claim-to-start gap on a busy machine.
SHORT_LEASE = 1.0

pytestmark = pytest.mark.backends("sqlite", "postgres")

RUNNER: dict[str, Any] = {"machine": "mac-mini", "capabilities": ["agent_run", "run_script", "git_pull"],
                          "agents": ["claude"]}


async def claim(client: QueueClient, **extra):
    return await client.claim(RUNNER["machine"], RUNNER["capabilities"], agents=RUNNER["agents"], **extra)


async def test_full_lifecycle_is_recorded_in_the_event_trail(client: QueueClient) -> None:
    task = await client.create_task("agent_run", {"agent": "claude", "prompt": "fix it"}, created_by="U1",
                                    agent="claude", notes="from slack")
    held = await claim(client)
    assert held.task.id == task.id and held.task.status == "claimed" and held.task.attempts == 1
    started = await client.start(task.id, held.lease)
    assert started.status == "in_progress" and started.started_at is not None
    beat = await client.heartbeat(task.id, held.lease, progress="step 2 of 3")
    assert beat.cancel is False
    assert (await client.get_task(task.short_id)).progress == "step 2 of 3"
    done = await client.report(task.id, held.lease, "done", {"returncode": 0, "stdout": "ok"}, notes="fixed")
    assert done.status == "done" and done.result == {"returncode": 0, "stdout": "ok"} and done.finished_at
    trail = [(e.from_status, e.to_status, e.by) for e in await client.task_events(task.id)]
    assert trail == [(None, "pending", "U1"), ("pending", "claimed", "mac-mini"),
                     ("claimed", "in_progress", "mac-mini"), ("in_progress", "done", "mac-mini")]


async def test_repeating_a_report_is_harmless(client: QueueClient) -> None:
    task = await client.create_task("run_script", {"script": "true"})
    held = await claim(client)
    first = await client.report(task.id, held.lease, "failed", {"returncode": 1}, action="read the log")
    again = await client.report(task.id, held.lease, "failed", {"returncode": 1}, action="read the log")
    assert first == again
    assert first.result["action"] == "read the log"
    assert len(await client.task_events(task.id)) == 3


async def test_report_with_a_lost_lease_is_refused_and_changes_nothing(make_server) -> None:
    server = await make_server(lease=SHORT_LEASE)
    async with QueueClient(server.url, SECRET) as client:
        task = await client.create_task("run_script", {"script": "true"})
        held = await client.claim("w", ["run_script"], retry_safe=["run_script"])
        await client.start(task.id, held.lease)
        await wait_until(lambda: _status_is(client, task.id, "pending"))
        with pytest.raises(errors.LeaseLost):
            await client.report(task.id, held.lease, "done", {"returncode": 0})
        with pytest.raises(errors.LeaseLost):
            await client.heartbeat(task.id, held.lease)
        after = await client.get_task(task.id)
        assert after.status == "pending" and after.result is None


async def _status_is(client: QueueClient, task_id: str, status: str) -> bool:
    return (await client.get_task(task_id)).status == status


async def test_expired_lease_of_retry_safe_type_goes_back_to_pending(make_server) -> None:
    server = await make_server(lease=SHORT_LEASE)
    async with QueueClient(server.url, SECRET) as client:
        task = await client.create_task("git_pull", {"repo_path": "/r"}, max_attempts=2)
        for attempt in (1, 2):
            held = await client.claim("w", ["git_pull"], retry_safe=["git_pull"])
            assert held.task.id == task.id and held.task.attempts == attempt
            await client.start(task.id, held.lease)
            expected = "needs_human" if attempt == 2 else "pending"
            await wait_until(functools.partial(_status_is, client, task.id, expected))
        final = await client.get_task(task.id)
        assert "lost" in final.notes and final.result["error"] == "worker lost"


async def test_expired_lease_of_unsafe_type_needs_a_human(make_server) -> None:
    server = await make_server(lease=SHORT_LEASE)
    async with QueueClient(server.url, SECRET) as client:
        task = await client.create_task("agent_run", {"prompt": "x"})
        held = await client.claim("mac-mini", ["agent_run"], retry_safe=["git_pull"])
        await client.start(task.id, held.lease)
        await wait_until(lambda: _status_is(client, task.id, "needs_human"))
        final = await client.get_task(task.id)
        assert final.notes == "worker mac-mini was lost (lease expired) while running this task"
        assert "check whether it ran on mac-mini" in final.result["action"]
        events = await client.task_events(task.id)
        assert events[-1].by == "reaper"


async def test_a_claim_that_never_started_is_requeued_whatever_its_type(make_server) -> None:
    server = await make_server(lease=SHORT_LEASE)
    async with QueueClient(server.url, SECRET) as client:
        task = await client.create_task("agent_run", {"prompt": "x"})
        await client.claim("mac-mini", ["agent_run"])
        await wait_until(lambda: _status_is(client, task.id, "pending"))


async def test_heartbeats_keep_a_lease_alive(make_server) -> None:
    # Beats a fifth of a lease apart for two leases: only a pause of a whole lease on a busy machine loses it.
    server = await make_server(lease=1.5)
    async with QueueClient(server.url, SECRET) as client:
        task = await client.create_task("agent_run", {"prompt": "x"})
        held = await client.claim("mac-mini", ["agent_run"])
        await client.start(task.id, held.lease)
        for _ in range(10):
            await client.heartbeat(task.id, held.lease, progress="working")
            await asyncio.sleep(0.3)
        assert (await client.get_task(task.id)).status == "in_progress"


async def test_cancel_pending_and_running(client: QueueClient) -> None:
    pending = await client.create_task("run_script", {"script": "a"})
    running = await client.create_task("run_script", {"script": "b"})
    assert (await client.cancel(pending.id, by="U1")).status == "cancelled"
    held = await claim(client)
    assert held.task.id == running.id
    await client.start(running.id, held.lease)
    await client.cancel(running.short_id, by="U2", notes="wrong repo")
    beat = await client.heartbeat(running.id, held.lease)
    assert beat.cancel is True and beat.status == "cancelled"
    with pytest.raises(errors.LeaseLost):
        await client.report(running.id, held.lease, "failed", {"returncode": -15})
    with pytest.raises(errors.Conflict, match="already cancelled"):
        await client.cancel(running.id)


async def test_resolve_needs_human_and_a_second_resolve_names_who(client: QueueClient) -> None:
    task = await client.create_task("agent_run", {"prompt": "x"})
    held = await claim(client)
    await client.report(task.id, held.lease, "needs_human", {"error": "not logged in"}, notes="claude login")
    resolved = await client.resolve(task.short_id, "done", by="U1", notes="logged in by hand")
    assert resolved.status == "done" and resolved.changed_by == "U1"
    with pytest.raises(errors.Conflict, match="by U1"):
        await client.resolve(task.id, "failed", by="U2")
    assert (await client.get_task(task.id)).status == "done"


async def test_resolve_pending_requeues_the_same_payload(client: QueueClient) -> None:
    task = await client.create_task("run_script", {"script": "make"})
    held = await claim(client)
    await client.report(task.id, held.lease, "failed", {"returncode": 2})
    again = await client.resolve(task.id, "pending", by="U1")
    assert again.status == "pending" and again.attempts == 0 and again.assigned_to is None
    rerun = await claim(client)
    assert rerun.task.id == task.id and rerun.task.payload == {"script": "make"}


async def test_bulk_resolve_counts_first_then_changes(client: QueueClient) -> None:
    ids = []
    for n in range(3):
        task = await client.create_task("run_script", {"script": str(n)})
        held = await claim(client)
        await client.report(task.id, held.lease, "needs_human", {})
        ids.append(task.id)
    preview = await client.resolve_many("needs_human", "done", dry_run=True)
    assert preview["count"] == 3
    assert all(t.status == "needs_human" for t in [await client.get_task(i) for i in ids])
    done = await client.resolve_many("needs_human", "done", by="U1")
    assert sorted(done["ids"]) == sorted(ids)
    assert all(t.status == "done" for t in [await client.get_task(i) for i in ids])


async def test_short_id_prefixes(client: QueueClient) -> None:
    task = await client.create_task("run_script", {"script": "x"})
    assert (await client.get_task(task.id[:4])).id == task.id
    assert (await client.get_task(task.short_id.upper())).id == task.id
    with pytest.raises(errors.NotFound):
        await client.get_task("ffffffff" if not task.id.startswith("ffff") else "00000000")
    with pytest.raises(errors.BadRequest, match="at least 4"):
        await client.get_task("abc")


async def test_ambiguous_prefix_is_409(server: QueueServer, http: httpx.AsyncClient) -> None:
    for _ in range(2):
        await http.post("/v1/tasks", json={"type": "run_script"})
    # Force two ids to share a prefix; random uuids rarely do.
    await server.query("UPDATE tasks SET id = 'abcd' || substr(id, 5) WHERE seq IN (1, 2)")
    response = await http.get("/v1/tasks/abcd")
    assert response.status_code == 409 and "ambiguous" in response.json()["detail"]
    full_id = (await http.get("/v1/tasks")).json()["tasks"][0]["id"]
    assert (await http.get("/v1/tasks/abcd" + full_id[4:])).status_code == 200


async def test_listing_is_newest_first_with_a_cursor_and_filters(client: QueueClient) -> None:
    made = [await client.create_task("run_script" if n % 2 else "lint", {"n": n}) for n in range(5)]
    page, cursor = await client.list_tasks(limit=2)
    assert [t.id for t in page] == [made[4].id, made[3].id]
    rest, end = await client.list_tasks(limit=10, before=cursor)
    assert [t.id for t in rest] == [made[2].id, made[1].id, made[0].id] and end is None
    lints, _ = await client.list_tasks(type="lint")
    assert {t.id for t in lints} == {made[0].id, made[2].id, made[4].id}
    held = await client.claim("thinkpad", ["lint"])
    mine, _ = await client.list_tasks(machine="thinkpad", status="claimed,in_progress")
    assert [t.id for t in mine] == [held.task.id]


async def test_restart_keeps_every_task(server: QueueServer, client: QueueClient) -> None:
    made = {(await client.create_task("run_script", {"n": n})).id for n in range(20)}
    held = await client.claim("w", ["run_script"])
    await server.restart()
    listed, _ = await client.list_tasks(limit=100)
    assert {t.id for t in listed} == made
    await client.start(held.task.id, held.lease)
    assert (await client.report(held.task.id, held.lease, "done", {})).status == "done"


async def test_event_feed_long_polls_and_resumes_by_id(client: QueueClient) -> None:
    _, last = await client.events(0)
    waiting = asyncio.create_task(client.events(last, wait=10))
    await until_parked(client.url, "events")
    assert not waiting.done()
    task = await client.create_task("run_script", {})
    events, newest = await asyncio.wait_for(waiting, 5)
    assert [(e.task_id, e.to_status) for e in events] == [(task.id, "pending")]
    held = await client.claim("w", ["run_script"])
    await client.report(task.id, held.lease, "done", {})
    later, _ = await client.events(newest)
    assert [e.to_status for e in later] == ["claimed", "done"]


async def test_machines_roster_merges_aliases_and_counts(make_server) -> None:
    from da import fleet

    roster = fleet.parse_fleet({"machines": {
        "mac-mini": {"capabilities": ["agent_run"], "agents": ["claude"], "aliases": ["mac"]},
        "thinkpad": {"capabilities": ["android_build"]}}}, "test")
    server = await make_server(fleet=roster)
    async with QueueClient(server.url, SECRET) as client:
        for _ in range(2):
            task = await client.create_task("agent_run", {"prompt": "x"}, agent="claude")
            held = await client.claim("mac", ["agent_run"], agents=["claude"])
            await client.report(task.id, held.lease, "done", {})
        machines = {m["name"]: m for m in await client.machines()}
        assert machines["mac-mini"]["online"] is True
        assert machines["mac-mini"]["done"] == 2 and machines["mac-mini"]["top_agent"] == "claude"
        assert machines["thinkpad"]["online"] is False and machines["thinkpad"]["last_seen"] is None


async def test_release_hands_back_an_unstarted_claim_once(client: QueueClient) -> None:
    task = await client.create_task("run_script", {"script": "x"})
    held = await claim(client)
    released = await client.release(task.id, held.lease)
    assert released.status == "pending" and released.attempts == 0 and released.assigned_to is None
    assert (await client.release(task.id, held.lease)).status == "pending"
    again = await claim(client)
    await client.start(task.id, again.lease)
    with pytest.raises(errors.LeaseLost, match="only a claimed task that has not started"):
        await client.release(task.id, again.lease)


async def test_event_ids_are_never_reused_even_after_pruning_the_newest(client: QueueClient) -> None:
    task = await client.create_task("run_script", {"script": "x"})
    held = await claim(client)
    await client.report(task.id, held.lease, "done", {})
    _, newest = await client.events(-1)
    assert await client.prune(0) == 1
    later = await client.create_task("run_script", {"script": "y"})
    events, _ = await client.events(newest)
    assert [(e.task_id, e.to_status) for e in events] == [(later.id, "pending")]
    assert events[0].id > newest


async def test_a_follower_ahead_of_a_feed_that_went_backwards_is_told_where_it_stands(
        server: QueueServer, client: QueueClient) -> None:
    for n in range(3):
        await client.create_task("run_script", {"script": str(n)})
    _, newest = await client.events(-1)
    # What putting back an older backup does (service stopped): the newest events are gone, their ids free again.
    await server.stop()
    await server.query(f"DELETE FROM events WHERE id > {newest - 2}")
    if server.settings.db_url:
        await server.query(f"SELECT setval('event_ids', {newest - 2})")
    await server.start()
    events, last = await client.events(newest, wait=10)
    assert (events, last) == ([], newest - 2)
    later = await client.create_task("run_script", {"script": "after the restore"})
    events, _ = await client.events(last)
    assert [(e.task_id, e.to_status) for e in events] == [(later.id, "pending")]


async def test_a_nul_in_a_cwd_is_kept_for_the_handler_to_judge(client: QueueClient) -> None:
    task = await client.create_task("lint", {"cwd": "/tmp\x00/etc"})
    assert task.payload == {"cwd": "/tmp\x00/etc"} and task.checkout == "/tmp\\x00/etc"
    held = await client.claim("w", ["lint"])
    assert held is not None and held.task.id == task.id
