"""The store below the HTTP layer: the SQLite group-commit engine keeps going whatever a batch hits."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from da.queue.errors import StoreError
from da.queue.models import NewTask
from da.queue.sqlite import SqliteStore

# SQLite integers stop at 2**63; binding a larger one raises OverflowError, not a sqlite3 error.
TOO_BIG = 2**70


async def test_a_statement_sqlite_cannot_bind_fails_alone_and_later_writes_go_on(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "q.db")
    await store.open()
    try:
        with pytest.raises(StoreError, match="too large"):
            await asyncio.wait_for(store.create(NewTask(type="lint", payload={}, priority=TOO_BIG)), 5)
        # In one batch with good writes: only the bad one fails, the others commit.
        results = await asyncio.wait_for(asyncio.gather(
            *(store.create(NewTask(type="lint", payload={"n": n})) for n in range(5)),
            store.create(NewTask(type="lint", payload={}, max_attempts=TOO_BIG)),
            return_exceptions=True), 5)
        assert [type(r).__name__ for r in results] == ["Task"] * 5 + ["StoreError"]
        tasks, _ = await asyncio.wait_for(store.list_tasks(limit=10), 5)
        assert sorted(t.payload.get("n", -1) for t in tasks) == [0, 1, 2, 3, 4]
    finally:
        await asyncio.wait_for(store.close(), 5)


async def test_closing_commits_what_is_queued(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "q.db")
    await store.open()
    writes = [asyncio.create_task(store.create(NewTask(type="lint", payload={"n": n}))) for n in range(20)]
    await asyncio.sleep(0)
    await store.close()
    assert all(w.done() and w.exception() is None for w in writes)
    again = SqliteStore(tmp_path / "q.db")
    await again.open()
    try:
        assert len((await again.list_tasks(limit=50))[0]) == 20
        with pytest.raises(StoreError, match="not open"):
            await store.create(NewTask(type="lint", payload={}))
    finally:
        await again.close()
