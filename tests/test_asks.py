"""Supervised sessions in the queue: asks (first answer wins, expiry, floods), the waiting status and its lease,
progress records, steering messages and budgets, through the real HTTP app on both backends."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest

from da.queue import models
from da.queue.client import QueueClient
from tests.support import loopback
from tests.support.server import SECRET, QueueServer
from tests.support.waiting import until_parked, wait_until

pytestmark = pytest.mark.backends("sqlite", "postgres")

PERMISSION = {"kind": "permission", "title": "Run `rm -rf build`?", "detail": "rm -rf build",
              "options": [{"id": "allow", "label": "Allow once"}, {"id": "reject", "label": "Reject"}]}


async def running_task(http: httpx.AsyncClient, *, lease: float = 60.0, **task: Any) -> tuple[str, str]:
    """An agent task claimed and started by box-1; returns its id and lease."""
    body = {"type": "agent_run", "payload": {"prompt": "tidy up"}, **task}
    created = await http.post("/v1/tasks", json=body)
    assert created.status_code == 201, created.text
    claimed = await http.post("/v1/claim", json={"machine": "box-1", "capabilities": [body["type"]], "lease": lease})
    assert claimed.status_code == 200, claimed.text
    task_id, lease_token = claimed.json()["task"]["id"], claimed.json()["lease"]
    assert (await http.post(f"/v1/tasks/{task_id}/start", json={"lease": lease_token})).status_code == 200
    return task_id, lease_token


async def open_ask(http: httpx.AsyncClient, task_id: str, lease: str, **ask: Any) -> httpx.Response:
    return await http.post(f"/v1/tasks/{task_id}/asks", json={"lease": lease, **PERMISSION, **ask})


async def status_of(http: httpx.AsyncClient, task_id: str) -> str:
    return str((await http.get(f"/v1/tasks/{task_id}")).json()["status"])


async def test_an_open_ask_makes_the_task_wait_until_it_is_answered(http: httpx.AsyncClient) -> None:
    task_id, lease = await running_task(http)
    opened = await open_ask(http, task_id, lease)
    assert opened.status_code == 201, opened.text
    assert opened.json()["id"] == 1 and opened.json()["status"] == "open"
    task = (await http.get(f"/v1/tasks/{task_id}")).json()
    assert task["status"] == "waiting"
    (ask,) = task["asks"]
    assert (ask["kind"], ask["title"], ask["status"], ask["machine"]) == ("permission", "Run `rm -rf build`?", "open",
                                                                          "box-1")
    assert ask["options"] == PERMISSION["options"]
    assert models.parse_iso(ask["expires_at"]) - models.parse_iso(ask["created_at"]) == pytest.approx(900, abs=1)

    answered = await http.post(f"/v1/tasks/{task_id[:8]}/asks/1", json={"option": "allow", "by": "ann"})
    assert answered.status_code == 200, answered.text
    assert (answered.json()["status"], answered.json()["answer"], answered.json()["answered_by"]) == (
        "answered", "allow", "ann")
    task = (await http.get(f"/v1/tasks/{task_id}")).json()
    assert task["status"] == "in_progress"
    notes = [(event["ask"], event["by"], event["note"]) for event in task["events"] if event["ask"]]
    assert notes == [(1, "box-1", "ask 1 (permission): Run `rm -rf build`?"), (1, "ann", "ask 1 answered allow")]
    assert [event["to"] for event in task["events"] if not event["ask"]] == ["pending", "claimed", "in_progress",
                                                                             "waiting", "in_progress"]


async def test_the_task_waits_while_any_of_its_asks_is_open(http: httpx.AsyncClient) -> None:
    task_id, lease = await running_task(http)
    assert (await open_ask(http, task_id, lease)).json()["id"] == 1
    assert (await open_ask(http, task_id, lease, kind="question", title="Which?")).json()["id"] == 2
    assert (await http.post(f"/v1/tasks/{task_id}/asks/2", json={"option": "reject"})).status_code == 200
    assert await status_of(http, task_id) == "waiting"
    assert (await http.post(f"/v1/tasks/{task_id}/asks/1", json={"option": "allow"})).status_code == 200
    assert await status_of(http, task_id) == "in_progress"


async def test_the_first_answer_wins_and_a_later_one_says_who_answered(http: httpx.AsyncClient) -> None:
    task_id, lease = await running_task(http)
    await open_ask(http, task_id, lease)
    answers = await asyncio.gather(*(http.post(f"/v1/tasks/{task_id}/asks/1", json={"option": option, "by": who})
                                     for who, option in (("ann", "allow"), ("bob", "reject"))))
    assert sorted(answer.status_code for answer in answers) == [200, 409], [answer.text for answer in answers]
    (won,) = [answer.json() for answer in answers if answer.status_code == 200]
    (lost,) = [answer.json() for answer in answers if answer.status_code == 409]
    assert lost["detail"] == (f"ask 1 of task {task_id[:8]} was already answered {won['answer']} by "
                              f"{won['answered_by']}.")
    (ask,) = (await http.get(f"/v1/tasks/{task_id}")).json()["asks"]
    assert (ask["answer"], ask["answered_by"]) == (won["answer"], won["answered_by"])
    events = [event for event in (await http.get(f"/v1/tasks/{task_id}")).json()["events"] if event["ask"]]
    assert len(events) == 2


async def test_an_unknown_ask_is_404_and_an_unknown_option_400(http: httpx.AsyncClient) -> None:
    task_id, lease = await running_task(http)
    await open_ask(http, task_id, lease)
    missing = await http.post(f"/v1/tasks/{task_id}/asks/7", json={"option": "allow"})
    assert missing.status_code == 404
    assert missing.json()["detail"] == f"task {task_id[:8]} has no ask 7; `da show {task_id[:8]}` lists its asks."
    wrong = await http.post(f"/v1/tasks/{task_id}/asks/1", json={"option": "maybe"})
    assert wrong.status_code == 400
    assert wrong.json()["detail"] == f"ask 1 of task {task_id[:8]} has no option 'maybe'; choose one of allow, reject."
    assert await status_of(http, task_id) == "waiting"


async def test_an_unanswered_ask_expires_as_a_reject_and_cannot_be_answered(
        make_server: Callable[..., Awaitable[QueueServer]]) -> None:
    server = await make_server(ask_timeout=0.5)
    async with loopback.client(base_url=server.url, headers={"x-secret-key": SECRET}, timeout=30) as http:
        task_id, lease = await running_task(http)
        await open_ask(http, task_id, lease)

        async def expired() -> bool:
            return (await http.get(f"/v1/tasks/{task_id}")).json()["asks"][0]["status"] == "expired"

        await wait_until(expired)
        assert await status_of(http, task_id) == "in_progress"
        late = await http.post(f"/v1/tasks/{task_id}/asks/1", json={"option": "allow"})
        assert late.status_code == 409
        assert late.json()["detail"].startswith(f"ask 1 of task {task_id[:8]} expired at ")
        assert late.json()["detail"].endswith(": nobody answered in time, so the agent was told no.")
        notes = [event["note"] for event in (await http.get(f"/v1/tasks/{task_id}")).json()["events"] if event["ask"]]
        assert notes[-1] == "ask 1 expired: nobody answered in time, so it was rejected"


async def test_a_task_names_its_own_ask_timeout(http: httpx.AsyncClient) -> None:
    task_id, lease = await running_task(http, payload={"prompt": "x", "ask_timeout": 120})
    ask = (await open_ask(http, task_id, lease)).json()
    assert models.parse_iso(ask["expires_at"]) - models.parse_iso(ask["created_at"]) == pytest.approx(120, abs=1)


async def test_a_waiting_task_keeps_its_lease_while_heartbeating_and_is_reaped_when_silent(
        http: httpx.AsyncClient) -> None:
    # Heartbeats every 0.25 s carry a 2 s lease past its end; a busy machine's pause cannot outlast it.
    task_id, lease = await running_task(http, lease=2.0)
    await open_ask(http, task_id, lease)
    deadline = time.monotonic() + 3.0
    while time.monotonic() < deadline:
        beat = await http.post(f"/v1/tasks/{task_id}/heartbeat", json={"lease": lease, "extend": 2.0})
        assert beat.status_code == 200 and beat.json()["status"] == "waiting", beat.text
        await asyncio.sleep(0.25)
    assert await status_of(http, task_id) == "waiting"

    async def reaped() -> bool:
        return await status_of(http, task_id) == "needs_human"

    await wait_until(reaped)
    task = (await http.get(f"/v1/tasks/{task_id}")).json()
    assert task["notes"] == "worker box-1 was lost (lease expired) while running this task"
    assert task["asks"][0]["status"] == "open"  # left visible for whoever resolves it
    refused = await http.post(f"/v1/tasks/{task_id}/asks/1", json={"option": "allow"})
    assert refused.status_code == 409
    assert refused.json()["detail"] == f"task {task_id[:8]} is needs_human; its asks can no longer be answered."


async def test_the_worker_waiting_for_an_answer_is_woken_by_it(http: httpx.AsyncClient) -> None:
    task_id, lease = await running_task(http)
    await open_ask(http, task_id, lease)
    started = time.monotonic()
    waiting = asyncio.create_task(http.post(f"/v1/tasks/{task_id}/asks/1/wait", json={"lease": lease, "wait": 30}))
    await asyncio.sleep(0.3)
    assert not waiting.done()
    await http.post(f"/v1/tasks/{task_id}/asks/1", json={"option": "reject", "note": "not the build folder"})
    answer = (await waiting).json()
    assert time.monotonic() - started < 10
    assert (answer["ask"]["status"], answer["ask"]["answer"], answer["ask"]["note"], answer["cancel"]) == (
        "answered", "reject", "not the build folder", False)


async def test_a_cancel_ends_the_wait_for_an_answer(http: httpx.AsyncClient) -> None:
    task_id, lease = await running_task(http)
    await open_ask(http, task_id, lease)
    waiting = asyncio.create_task(http.post(f"/v1/tasks/{task_id}/asks/1/wait", json={"lease": lease, "wait": 30}))
    await asyncio.sleep(0.3)
    assert (await http.post(f"/v1/tasks/{task_id}/cancel", json={"by": "ann"})).status_code == 200
    answer = (await asyncio.wait_for(waiting, 10)).json()
    assert (answer["cancel"], answer["status"], answer["ask"]["status"]) == (True, "cancelled", "open")


async def test_a_flood_of_asks_is_bounded_and_the_worker_told(http: httpx.AsyncClient) -> None:
    task_id, lease = await running_task(http)
    for _ in range(models.MAX_OPEN_ASKS):
        assert (await open_ask(http, task_id, lease)).status_code == 201
    refused = await open_ask(http, task_id, lease)
    assert refused.status_code == 409
    assert refused.json()["detail"] == (f"task {task_id[:8]} already has {models.MAX_OPEN_ASKS} open asks, the most "
                                        "one task may have; reject this request without asking, or wait for an "
                                        "answer.")
    assert len((await http.get(f"/v1/tasks/{task_id}")).json()["asks"]) == models.MAX_OPEN_ASKS


async def test_only_the_lease_holder_asks(http: httpx.AsyncClient) -> None:
    task_id, _ = await running_task(http)
    refused = await open_ask(http, task_id, "0123abcd")
    assert refused.status_code == 409 and refused.json()["error"] == "lease_lost"
    assert (await http.get(f"/v1/tasks/{task_id}")).json()["asks"] == []


async def test_open_asks_are_listed_across_the_fleet(http: httpx.AsyncClient) -> None:
    first, first_lease = await running_task(http)
    second, second_lease = await running_task(http)
    await open_ask(http, first, first_lease)
    await open_ask(http, second, second_lease, kind="plan", title="Approve the plan?",
                   options=[{"id": "approve", "label": "Approve"}, {"id": "changes", "label": "Request changes"}])
    await http.post(f"/v1/tasks/{first}/asks/1", json={"option": "allow"})
    listed = (await http.get("/v1/asks")).json()["asks"]
    assert [(ask["task_id"], ask["id"], ask["kind"], ask["machine"]) for ask in listed] == [
        (second, 1, "plan", "box-1")]


async def test_asks_and_answers_are_in_the_feed(http: httpx.AsyncClient) -> None:
    start = (await http.get("/v1/events", params={"after": -1})).json()["last"]
    task_id, lease = await running_task(http)
    following = asyncio.create_task(http.get("/v1/events", params={"after": start + 3, "wait": 30}))
    await open_ask(http, task_id, lease)
    feed = (await asyncio.wait_for(following, 10)).json()["events"]
    assert [(event["to"], event["ask"]) for event in feed] == [("waiting", None), ("waiting", 1)]
    await http.post(f"/v1/tasks/{task_id}/asks/1", json={"option": "allow"})
    feed = (await http.get("/v1/events", params={"after": feed[-1]["id"]})).json()["events"]
    assert [(event["from"], event["to"], event["ask"]) for event in feed] == [("waiting", "in_progress", None),
                                                                               ("in_progress", "in_progress", 1)]


async def test_progress_is_replaced_capped_and_followed(http: httpx.AsyncClient) -> None:
    task_id, lease = await running_task(http)
    following = asyncio.create_task(http.get(f"/v1/tasks/{task_id}/progress",
                                             params={"after": 0, "status": "in_progress", "wait": 30}))
    await asyncio.sleep(0.2)
    assert not following.done()
    record = {"plan": [{"content": "read the code", "status": "completed"}],
              "tools": [{"id": "t1", "title": "ls", "kind": "execute", "status": "completed"}],
              "answer_tail": "done reading", "usage": {"input_tokens": 10, "output_tokens": 5, "cost_usd": 0.01}}
    saved = await http.post(f"/v1/tasks/{task_id}/progress", json={"lease": lease, "progress": record})
    assert saved.json() == {"progress_rev": 1, "status": "in_progress"}
    followed = (await asyncio.wait_for(following, 10)).json()
    assert (followed["progress_rev"], followed["progress_record"], followed["usage"]) == (
        1, record, {"input_tokens": 10, "output_tokens": 5, "cost_usd": 0.01})
    events = (await http.get(f"/v1/tasks/{task_id}")).json()["events"]

    too_big = {"answer_tail": "x" * models.MAX_PROGRESS_BYTES}
    refused = await http.post(f"/v1/tasks/{task_id}/progress", json={"lease": lease, "progress": too_big})
    assert refused.status_code == 413
    assert "more than 16384" in refused.json()["detail"]
    task = (await http.get(f"/v1/tasks/{task_id}")).json()
    assert (task["progress_rev"], task["progress_record"]) == (1, record)
    assert task["events"] == events  # progress appends no event

    status_change = asyncio.create_task(http.get(f"/v1/tasks/{task_id}/progress",
                                                 params={"after": 1, "status": "in_progress", "wait": 30}))
    await open_ask(http, task_id, lease)
    assert (await asyncio.wait_for(status_change, 10)).json()["status"] == "waiting"


async def test_waiting_for_a_status_holds_one_request_at_the_queue_until_the_task_changes(
        server: QueueServer, http: httpx.AsyncClient, client: QueueClient) -> None:
    task_id, lease = await running_task(http)
    waiting = asyncio.create_task(client.wait_for_status(task_id, models.TERMINAL, timeout=30))
    await until_parked(server.url, "progress")  # parked, not asking again and again
    record = {"answer_tail": "half way"}
    await http.post(f"/v1/tasks/{task_id}/progress", json={"lease": lease, "progress": record})
    await until_parked(server.url, "progress")  # news that is not a status: it follows on
    assert not waiting.done()
    await http.post(f"/v1/tasks/{task_id}/report", json={"lease": lease, "status": "done", "result": {}})
    progress = await asyncio.wait_for(waiting, 10)
    assert (progress.status, progress.record) == ("done", record)
    short = await client.wait_for_status(task_id, ("failed",), timeout=0.2)
    assert short.status == "done"  # not what was awaited: the caller sees the timeout in the status


async def test_messages_are_handed_to_the_worker_once(http: httpx.AsyncClient) -> None:
    task_id, lease = await running_task(http)
    for text, interrupt in (("also run the tests", False), ("stop, use the other branch", True)):
        sent = await http.post(f"/v1/tasks/{task_id}/messages", json={"text": text, "interrupt": interrupt})
        assert sent.status_code == 201, sent.text
    plain = await http.post(f"/v1/tasks/{task_id}/heartbeat", json={"lease": lease})
    assert "messages" not in plain.json()  # a worker that does not take messages leaves them queued
    beat = (await http.post(f"/v1/tasks/{task_id}/heartbeat", json={"lease": lease, "messages": True})).json()
    assert [(m["text"], m["interrupt"]) for m in beat["messages"]] == [("also run the tests", False),
                                                                       ("stop, use the other branch", True)]
    again = (await http.post(f"/v1/tasks/{task_id}/heartbeat", json={"lease": lease, "messages": True})).json()
    assert again["messages"] == []

    held = asyncio.create_task(http.post(f"/v1/tasks/{task_id}/heartbeat",
                                         json={"lease": lease, "messages": True, "wait": 30}))
    await asyncio.sleep(0.3)
    assert not held.done()
    await http.post(f"/v1/tasks/{task_id}/messages", json={"text": "one more thing"})
    answer = (await asyncio.wait_for(held, 10)).json()
    assert ([m["text"] for m in answer["messages"]], answer["cancel"]) == (["one more thing"], False)


async def test_a_message_for_a_task_that_is_not_running_is_refused(http: httpx.AsyncClient) -> None:
    created = (await http.post("/v1/tasks", json={"type": "agent_run"})).json()
    refused = await http.post(f"/v1/tasks/{created['id']}/messages", json={"text": "hello"})
    assert refused.status_code == 409
    assert refused.json()["detail"] == (f"task {created['short_id']} is pending; only a running task can be sent a "
                                        "message.")


async def test_usage_is_kept_and_the_daily_budget_refuses_new_agent_tasks(
        make_server: Callable[..., Awaitable[QueueServer]]) -> None:
    server = await make_server(budget_per_day=1.0)
    async with loopback.client(base_url=server.url, headers={"x-secret-key": SECRET}, timeout=30) as http:
        task_id, lease = await running_task(http, created_by="ann")
        usage = {"input_tokens": 1200, "output_tokens": 300, "cost_usd": 1.25}
        reported = await http.post(f"/v1/tasks/{task_id}/report", json={
            "lease": lease, "status": "done", "result": {"answer": "ok", "usage": usage}})
        assert reported.status_code == 200 and reported.json()["usage"] == usage
        assert (await http.get(f"/v1/tasks/{task_id}")).json()["usage"] == usage

        refused = await http.post("/v1/tasks", json={"type": "agent_run", "created_by": "ann"})
        assert refused.status_code == 409
        assert refused.json()["detail"] == ("ann's agent tasks cost $1.25 in the last 24 hours, at or past the daily "
                                            "budget of $1.00 (DA_BUDGET_PER_DAY); try again later or raise the "
                                            "budget.")
        assert (await http.post("/v1/tasks", json={"type": "agent_run", "created_by": "bob"})).status_code == 201
        assert (await http.post("/v1/tasks", json={"type": "lint", "created_by": "ann"})).status_code == 201
        metrics = (await http.get("/metrics")).text
        assert 'da_agent_tokens{direction="input"} 1200' in metrics
        assert "da_agent_cost_usd 1.250000" in metrics


async def test_asks_opened_at_once_each_get_their_own_number(http: httpx.AsyncClient) -> None:
    task_id, lease = await running_task(http)
    opened = await asyncio.gather(*(open_ask(http, task_id, lease, title=f"tool {n}") for n in range(8)))
    assert [response.status_code for response in opened] == [201] * 8, [response.text for response in opened]
    assert sorted(response.json()["id"] for response in opened) == list(range(1, 9))


async def test_one_of_two_asks_answered_wakes_a_progress_follower(http: httpx.AsyncClient,
                                                                  server: QueueServer) -> None:
    # The task stays `waiting` on the other ask and its progress does not move: the answer is the news.
    task_id, lease = await running_task(http)
    for _ in range(2):
        assert (await open_ask(http, task_id, lease)).status_code == 201
    rev = (await http.get(f"/v1/tasks/{task_id}")).json()["progress_rev"]
    following = asyncio.create_task(http.get(f"/v1/tasks/{task_id}/progress",
                                             params={"after": rev, "status": "waiting", "wait": 30}))
    await until_parked(server.url, "progress")
    assert (await http.post(f"/v1/tasks/{task_id}/asks/1", json={"option": "allow", "by": "ann"})).status_code == 200
    followed = (await asyncio.wait_for(following, 10)).json()
    assert followed["status"] == "waiting"
    assert [(ask["id"], ask["status"]) for ask in followed["asks"]] == [(1, "answered"), (2, "open")]
