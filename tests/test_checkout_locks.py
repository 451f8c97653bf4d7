"""Checkout locks are on the folder, not on how a task spelled it: `dir`, `dir/`, `x/../dir`, `~/dir` and a
symlink to it are one lock, taken on the path the worker resolved on its own machine."""

from __future__ import annotations

import itertools
from pathlib import Path

import httpx
import pytest

from da.queue.client import QueueClient
from tests.support.server import SECRET, QueueServer
from tests.support.workers import WorkerProcess, wait_for_status

pytestmark = pytest.mark.backends("sqlite", "postgres")


async def _claim(http: httpx.AsyncClient, machine: str = "box") -> dict | None:
    response = await http.post("/v1/claim", json={"machine": machine, "capabilities": ["run_script"]})
    assert response.status_code in (200, 204), response.text
    return response.json() if response.status_code == 200 else None


async def test_a_start_on_a_folder_another_task_holds_is_refused_and_handed_back(http: httpx.AsyncClient) -> None:
    first = (await http.post("/v1/tasks", json={"type": "run_script", "payload": {"cwd": "/srv/app"}})).json()
    second = (await http.post("/v1/tasks", json={"type": "run_script", "payload": {"cwd": "/srv/app/"}})).json()
    # Spelled differently, so the queue cannot know they are one folder: both are claimed.
    a, b = await _claim(http), await _claim(http)
    assert a is not None and b is not None and {a["task"]["id"], b["task"]["id"]} == {first["id"], second["id"]}

    started = await http.post(f"/v1/tasks/{a['task']['id']}/start", json={"lease": a["lease"], "checkout": "/srv/app"})
    assert started.status_code == 200 and started.json()["checkout"] == "/srv/app"
    refused = await http.post(f"/v1/tasks/{b['task']['id']}/start", json={"lease": b["lease"], "checkout": "/srv/app"})
    assert refused.status_code == 409 and refused.json()["error"] == "lock_held", refused.text
    assert refused.json()["detail"] == (f"the folder /srv/app is in use on box by task {a['task']['short_id']}; "
                                        f"task {b['task']['short_id']} went back to the queue until it is free.")
    back = (await http.get(f"/v1/tasks/{b['task']['id']}")).json()
    assert back["status"] == "pending" and back["attempts"] == 0 and back["checkout"] == "/srv/app"
    assert back["events"][-1]["note"] == f"waiting for the folder /srv/app on box, held by task {a['task']['short_id']}"

    # While the holder runs, the machine passes over it; another machine may take it (the lock is per machine).
    assert await _claim(http) is None
    report = await http.post(f"/v1/tasks/{a['task']['id']}/report", json={"lease": a["lease"], "status": "done"})
    assert report.status_code == 200
    again = await _claim(http)
    assert again is not None and again["task"]["id"] == b["task"]["id"] and again["task"]["attempts"] == 1
    restarted = await http.post(f"/v1/tasks/{b['task']['id']}/start",
                                json={"lease": again["lease"], "checkout": "/srv/app"})
    assert restarted.status_code == 200


async def test_a_resolved_folder_is_one_lock_per_machine_not_per_fleet(http: httpx.AsyncClient) -> None:
    for cwd in ("~/app", "/home/me/app"):
        await http.post("/v1/tasks", json={"type": "run_script", "payload": {"cwd": cwd}})
    a, b = await _claim(http, "box"), await _claim(http, "other")
    assert a is not None and b is not None
    for held in (a, b):
        started = await http.post(f"/v1/tasks/{held['task']['id']}/start",
                                  json={"lease": held["lease"], "checkout": "/home/me/app"})
        assert started.status_code == 200, started.text


async def test_a_named_lock_is_not_moved_by_the_folder(http: httpx.AsyncClient) -> None:
    task = (await http.post("/v1/tasks", json={"type": "run_script", "lock": "deploy",
                                               "payload": {"cwd": "/srv/app/"}})).json()
    assert (task["lock"], task["checkout"]) == ("deploy", "/srv/app/")
    held = await _claim(http)
    assert held is not None
    started = await http.post(f"/v1/tasks/{task['id']}/start", json={"lease": held["lease"], "checkout": "/srv/app"})
    assert started.status_code == 200 and (started.json()["lock"], started.json()["checkout"]) == ("deploy", "/srv/app")


async def test_a_named_lock_adds_to_the_checkout_lock_never_replaces_it(http: httpx.AsyncClient) -> None:
    named = [(await http.post("/v1/tasks", json={"type": "run_script", "lock": f"agent-{n}",
                                                 "payload": {"cwd": "/srv/app"}})).json() for n in range(3)]
    plain = (await http.post("/v1/tasks", json={"type": "run_script", "payload": {"cwd": "/srv/app"}})).json()
    first = await _claim(http)
    assert first is not None and first["task"]["id"] == named[0]["id"]
    # Each names a lock of its own, but all work in one checkout: the machine takes one at a time.
    assert await _claim(http) is None
    # The checkout lock is per machine: another machine may take the next one, and its named lock still counts.
    other = await _claim(http, "other")
    assert other is not None and other["task"]["id"] == named[1]["id"]
    await http.post(f"/v1/tasks/{first['task']['id']}/report", json={"lease": first["lease"], "status": "done"})
    again = await _claim(http)
    assert again is not None and again["task"]["id"] == named[2]["id"]
    assert await _claim(http) is None, "the plain task waits for the same checkout"

    # Spelled differently, the start (which resolves the folder) refuses it and hands it back.
    later = (await http.post("/v1/tasks", json={"type": "run_script", "lock": "agent-9",
                                                "payload": {"cwd": "/srv/./app"}})).json()
    spelled = await _claim(http)
    assert spelled is not None and spelled["task"]["id"] == later["id"]
    await http.post(f"/v1/tasks/{again['task']['id']}/start", json={"lease": again["lease"], "checkout": "/srv/app"})
    refused = await http.post(f"/v1/tasks/{later['id']}/start",
                              json={"lease": spelled["lease"], "checkout": "/srv/app"})
    assert refused.status_code == 409 and refused.json()["error"] == "lock_held", refused.text
    back = (await http.get(f"/v1/tasks/{later['id']}")).json()
    assert (back["status"], back["lock"], back["checkout"]) == ("pending", "agent-9", "/srv/app")
    assert plain["checkout"] == "/srv/app" and plain["lock"] is None


async def test_a_named_lock_still_holds_across_machines_with_different_checkouts(http: httpx.AsyncClient) -> None:
    for n in range(2):
        await http.post("/v1/tasks", json={"type": "run_script", "lock": "deploy", "payload": {"cwd": f"/srv/{n}"}})
    assert await _claim(http, "box") is not None
    assert await _claim(http, "other") is None


async def test_every_spelling_of_one_checkout_runs_one_at_a_time_on_real_workers(
        server: QueueServer, tmp_path: Path) -> None:
    home = tmp_path / "home"
    checkout = home / "repo"
    (home / "x").mkdir(parents=True)
    checkout.mkdir()
    (home / "link").symlink_to(checkout, target_is_directory=True)
    spellings = [str(checkout), f"{checkout}/", str(home / "x" / ".." / "repo"), "~/repo", str(home / "link"),
                 "repo"]
    overlaps = tmp_path / "overlaps.txt"
    # `mkdir` is atomic: a second task inside the checkout at the same moment finds .busy already there.
    script = f"mkdir .busy || echo overlap >> {overlaps}; sleep 0.3; rmdir .busy"
    workers = [WorkerProcess(server.url, tmp_path / f"w{n}", HOME=str(home), MAX_CONCURRENT="6",
                             WORKER_CAPABILITIES="run_script", WORKER_AGENTS="") for n in range(2)]
    for worker in workers:
        worker.cwd = home  # where the relative spelling "repo" points
        worker.start()
    try:
        async with QueueClient(server.url, SECRET) as client:
            tasks = [await client.create_task("run_script", {"script": script, "cwd": cwd}) for cwd in spellings]
            finished = [await wait_for_status(client, task.id, timeout=60) for task in tasks]
    finally:
        for worker in workers:
            worker.kill()
    assert [task.status for task in finished] == ["done"] * len(spellings), [t.notes for t in finished]
    assert not overlaps.exists(), overlaps.read_text()
    assert {task.checkout for task in finished} == {str(checkout.resolve())}
    assert [task.attempts for task in finished] == [1] * len(spellings)
    spans = sorted((task.started_at or 0, task.finished_at or 0) for task in finished)
    assert all(end <= next_start for (_, end), (next_start, _) in itertools.pairwise(spans)), spans


async def test_tasks_naming_their_own_locks_in_one_checkout_run_one_at_a_time_on_a_real_worker(
        server: QueueServer, tmp_path: Path) -> None:
    checkout = tmp_path / "repo"
    checkout.mkdir()
    overlaps = tmp_path / "overlaps.txt"
    script = f"mkdir .busy || echo overlap >> {overlaps}; sleep 0.3; rmdir .busy"
    worker = WorkerProcess(server.url, tmp_path / "w", MAX_CONCURRENT="3", WORKER_CAPABILITIES="run_script",
                           WORKER_AGENTS="")
    worker.start()
    try:
        async with QueueClient(server.url, SECRET) as client:
            tasks = [await client.create_task("run_script", {"script": script, "cwd": str(checkout)},
                                              lock=f"agent-{n}") for n in range(3)]
            finished = [await wait_for_status(client, task.id, timeout=60) for task in tasks]
    finally:
        worker.kill()
    assert [task.status for task in finished] == ["done"] * 3, [t.notes for t in finished]
    assert not overlaps.exists(), overlaps.read_text()
    assert [(task.lock, task.checkout) for task in finished] == [(f"agent-{n}", str(checkout)) for n in range(3)]


async def test_an_older_database_keeps_its_checkout_locks_as_checkouts(tmp_path: Path) -> None:
    import sqlite3

    from da.queue import sqlite as sqlite_store

    path = tmp_path / "old.db"
    with sqlite3.connect(path) as db:
        for number, script in sqlite_store.STATEMENTS.migrations():
            if number <= 8:
                db.executescript(script)
        db.execute("PRAGMA user_version=8")
        for n, (lock, per_machine, status) in enumerate([("/srv/app", 1, "in_progress"), ("deploy", 0, "pending")]):
            db.execute("INSERT INTO tasks (id, type, status, priority, payload, lock, lock_per_machine, assigned_to, "
                       "max_attempts, created_at, updated_at) VALUES (?, 'lint', ?, 5, '{}', ?, ?, 'box', 3, 0, 0)",
                       (f"0000000{n}-aaaa", status, lock, per_machine))
    store = sqlite_store.SqliteStore(path)
    await store.open()
    try:
        running, pending = await store.get("00000000-aaaa"), await store.get("00000001-aaaa")
    finally:
        await store.close()
    assert (running.lock, running.checkout) == (None, "/srv/app")
    assert (pending.lock, pending.checkout) == ("deploy", None)
