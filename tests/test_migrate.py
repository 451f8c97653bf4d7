"""`da migrate --to URL`: a queue moves from its SQLite file to an empty PostgreSQL database, whole."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from da.queue.client import QueueClient
from tests.support import postgres
from tests.support.ports import free_port
from tests.support.processes import run_da
from tests.support.server import SECRET, QueueServer


@pytest.fixture
async def empty_database(postgres_cluster: postgres.Cluster) -> AsyncIterator[str]:
    """A new database with nothing in it, not even the schema."""
    url = await postgres_cluster.create_database(migrated=False)
    yield url
    await postgres_cluster.drop_database(url)


async def fill(client: QueueClient) -> dict[str, dict[str, Any]]:
    """Pruned history, then one task in every status, with every optional field set somewhere."""
    for status in ("done", "done", "failed"):
        task = await client.create_task("agent_run", {"prompt": "old"}, agent="claude")
        held = await client.claim("mac-mini", ["agent_run"], agents=["claude"])
        assert held is not None and held.task.id == task.id
        await client.start(task.id, held.lease)
        await client.report(task.id, held.lease, status, {"returncode": 0 if status == "done" else 1})
    assert await client.prune(0) == 3

    pinned = await client.create_task("lint", {"cwd": "/repo", "_target_machine": "thinkpad"}, priority=9,
                                      preferred_machine="thinkpad", notes="first", created_by="ana",
                                      max_attempts=5, lock="deploy")
    await client.create_task("run_script", {"script": "echo waiting"})
    cancelled = await client.create_task("run_script", {"script": "true"})
    await client.cancel(cancelled.id, by="ana", notes="not needed")
    for status in ("claimed", "in_progress", "done", "failed", "needs_human"):
        task = await client.create_task("test_run", {"cwd": f"/repo/{status}"})
        held = await client.claim("mac-mini", ["test_run"], retry_safe=["test_run"], lease=600)
        assert held is not None and held.task.id == task.id
        if status == "claimed":
            continue
        await client.start(task.id, held.lease)
        await client.heartbeat(task.id, held.lease, progress=f"step of {status}")
        if status == "in_progress":
            # A supervised session's asks (one answered, one still open) and a steering message.
            asked = await client.open_ask(task.id, held.lease, "permission", "Run the tests?",
                                          [("allow", "Allow"), ("reject", "Reject")], detail="pytest -q")
            await client.answer_ask(task.id, asked.id, "allow", note="go ahead", by="ana")
            await client.open_ask(task.id, held.lease, "question", "Which branch?", [("main", "main")])
            await client.send_message(task.id, "lint it too", interrupt=True, by="ana")
        if status != "in_progress":
            await client.report(task.id, held.lease, status, {"returncode": 0, "stdout": f"ünïcode {status}"},
                                notes=f"{status} after 1.0s", action="look at it" if status == "needs_human" else None)
    tasks, _ = await client.list_tasks(limit=100)
    assert {t.status for t in tasks} == {"pending", "claimed", "waiting", "done", "failed", "needs_human",
                                         "cancelled"} and pinned.id in {t.id for t in tasks}
    return {t.id: await _full(client, t.id) for t in tasks}


async def _full(client: QueueClient, task_id: str) -> dict[str, Any]:
    body = (await client.request("GET", f"/v1/tasks/{task_id}")).json()
    assert isinstance(body, dict)
    return body


def rows(path: Path, sql: str) -> list[tuple[Any, ...]]:
    with sqlite3.connect(path) as db:
        return [tuple(row) for row in db.execute(sql)]


async def pg_rows(url: str, sql: str) -> list[tuple[Any, ...]]:
    db = await asyncpg.connect(url)
    try:
        return [tuple(row) for row in await db.fetch(sql)]
    finally:
        await db.close()


async def test_migrate_moves_every_task_event_and_count_and_the_queue_carries_on(
        empty_database: str, make_server: Callable[..., Awaitable[QueueServer]], tmp_path: Path) -> None:
    server = await make_server()
    path = server.settings.db_path
    async with QueueClient(server.url, SECRET) as client:
        before = await fill(client)
        roster_before = {m["name"]: m for m in await client.machines()}
        _, worker_token = await client.create_token("worker", machine="thinkpad")
    await server.stop()
    events_before = rows(path, "SELECT * FROM events ORDER BY id")
    last_event = events_before[-1][0]

    code, out = await run_da("migrate", "--to", empty_database, cwd=tmp_path, QUEUE_DB_PATH=str(path),
                             QUEUE_PORT=str(free_port()))
    assert code == 0, out
    assert out.splitlines()[0] == f"copied {path} into {empty_database}:"
    assert (f"  tasks          {len(before)} (cancelled 1, claimed 1, done 1, failed 1, needs_human 1, "
            "pending 2, waiting 1)") in out
    assert f"  events         {len(events_before)} (ids up to {last_event}; new events start after it)" in out
    assert "  pruned counts  2 row(s) covering 3 pruned task(s)" in out
    assert ("checked: the PostgreSQL database holds the same tasks, events, pruned counts, tokens, asks and "
            "messages.") in out
    assert f"next: set QUEUE_DB_URL to the URL you gave --to ({empty_database}) in the .env" in out
    assert "  tokens         1 (revoked ones too" in out

    # Every column of every row, ids and order kept.
    assert await pg_rows(empty_database, "SELECT * FROM events ORDER BY id") == events_before
    assert await pg_rows(empty_database, "SELECT * FROM pruned_counts ORDER BY 1, 2, 3") == rows(
        path, "SELECT * FROM pruned_counts ORDER BY 1, 2, 3")
    lite_tasks = rows(path, "SELECT * FROM tasks ORDER BY seq")
    pg_tasks = await pg_rows(empty_database, "SELECT * FROM tasks ORDER BY seq")
    assert [tuple(int(v) if isinstance(v, bool) else v for v in row) for row in pg_tasks] == lite_tasks
    assert "  asks           2 (1 open)" in out and "  messages       1 (1 not delivered yet)" in out
    lite_asks = rows(path, "SELECT * FROM asks ORDER BY task_id, id")
    assert len(lite_asks) == 2 and await pg_rows(empty_database, "SELECT * FROM asks ORDER BY task_id, id") == lite_asks
    lite_messages = rows(path, "SELECT * FROM messages ORDER BY seq")
    pg_messages = await pg_rows(empty_database, "SELECT * FROM messages ORDER BY seq")
    assert len(lite_messages) == 1 and [tuple(int(v) if isinstance(v, bool) else v for v in row)
                                        for row in pg_messages] == lite_messages

    moved = await make_server(db_url=empty_database)
    async with QueueClient(moved.url, SECRET) as client:
        assert (await client.health())["backend"] == "postgresql"
        for task_id, body in before.items():
            after = await _full(client, task_id)
            if body["status"] in ("claimed", "waiting"):
                # A restart gives running tasks a fresh lease; nothing else may differ.
                after.pop("lease_expires_at")
                body = {k: v for k, v in body.items() if k != "lease_expires_at"}
            assert after == body
        await client.claim("mac-mini", ["none"])  # the roster lists machines it has seen
        assert {m["name"]: (m["done"], m["failed"]) for m in await client.machines()} == {
            name: (m["done"], m["failed"]) for name, m in roster_before.items()}
        # The feed goes on from the last copied id; new ids come after it, never again below it.
        _, now = await client.events(-1)
        assert now == last_event
        held = await client.claim("thinkpad", ["lint", "run_script"])
        assert held is not None and held.task.priority == 9 and held.task.target_machine == "thinkpad"
        assert (await client.claim("thinkpad", ["lint", "run_script"])).task.payload == {"script": "echo waiting"}
        fresh = await client.create_task("lint", {"cwd": "/new"})
        events, _ = await client.events(last_event)
        assert events[0].id > last_event and events[-1].task_id == fresh.id
        listed, _ = await client.list_tasks(limit=1)
        assert listed[0].id == fresh.id  # newest first: its seq follows the copied ones
        waiting = next(task_id for task_id, body in before.items() if body["status"] == "waiting")
        assert [(a.id, a.status) for a in await client.asks(waiting)] == [(1, "answered"), (2, "open")]
        steer = await client.send_message(waiting, "and the docs", by="ana")
        assert steer.id > lite_messages[-1][0]  # numbered after the copied ones
    async with QueueClient(moved.url, worker_token) as worker:
        assert (await worker.whoami())["machine"] == "thinkpad", "the fleet's tokens moved too"


async def test_migrate_refuses_a_database_that_holds_tasks(empty_database: str,
                                                           make_server: Callable[..., Awaitable[QueueServer]],
                                                           tmp_path: Path) -> None:
    server = await make_server()
    async with QueueClient(server.url, SECRET) as client:
        await client.create_task("lint", {"cwd": "/x"})
    await server.stop()
    env = {"QUEUE_DB_PATH": str(server.settings.db_path), "QUEUE_PORT": str(free_port())}
    assert (await run_da("migrate", "--to", empty_database, cwd=tmp_path, **env))[0] == 0
    before = await pg_rows(empty_database, "SELECT id, status FROM tasks")
    code, out = await run_da("migrate", "--to", empty_database, cwd=tmp_path, **env)
    assert code == 1
    assert out.strip() == (f"da: the PostgreSQL database {empty_database} already holds 1 task(s), 1 event(s) "
                           "and 0 token(s); da migrate only fills an empty database (create one with createdb).")
    assert await pg_rows(empty_database, "SELECT id, status FROM tasks") == before


async def test_migrate_refuses_while_the_sqlite_service_answers(empty_database: str, server: QueueServer,
                                                                tmp_path: Path) -> None:
    code, out = await run_da("migrate", "--to", empty_database, cwd=tmp_path,
                             QUEUE_DB_PATH=str(server.settings.db_path), QUEUE_HOST="127.0.0.1",
                             QUEUE_PORT=str(server.port))
    assert code == 1
    assert out.strip() == (f"da: a queue service answers on 127.0.0.1:{server.port}; stop it before migrating, so no "
                           "task changes while it is copied.")
    assert await pg_rows(empty_database, "SELECT tablename FROM pg_tables WHERE schemaname = 'public'") == []


async def test_migrate_names_what_is_wrong_in_one_line(tmp_path: Path) -> None:
    code, out = await run_da("migrate", "--to", "postgresql://da@127.0.0.1:1/da", cwd=tmp_path,
                             QUEUE_DB_PATH=str(tmp_path / "missing.db"), QUEUE_PORT=str(free_port()))
    assert code == 1 and out.strip() == (f"da: no queue database at {tmp_path / 'missing.db'}; set QUEUE_DB_PATH to "
                                         "the file `da serve` used.")
    code, out = await run_da("migrate", "--to", "sqlite:///x.db", cwd=tmp_path)
    assert code == 2 and out.startswith("da: --to='sqlite:///x.db' is not a PostgreSQL URL")
    code, out = await run_da("migrate", cwd=tmp_path)
    assert code == 2 and "the following arguments are required: --to" in out
