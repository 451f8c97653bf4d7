"""Below the disk reserve (QUEUE_DISK_RESERVE_MB) the SQLite queue refuses every write with a 503 that says
what to free, keeps answering reads, and changes nothing it stores."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

from tests.support import loopback
from tests.support.processes import start_serve
from tests.support.server import SECRET

HEADERS = {"x-secret-key": SECRET}


def stored(path: Path) -> list[tuple[object, ...]]:
    with sqlite3.connect(path) as db:
        return [*db.execute("SELECT id, status, lease, updated_at FROM tasks ORDER BY seq"),
                *db.execute("SELECT id, task_id, to_status FROM events ORDER BY id")]


async def test_writes_below_the_reserve_answer_503_and_change_nothing_while_reads_work(tmp_path: Path) -> None:
    process, url, _ = start_serve(tmp_path, SECRET_KEY=SECRET, LOG_LEVEL="WARNING")
    try:
        async with loopback.client(base_url=url, headers=HEADERS) as http:
            waiting = (await http.post("/v1/tasks", json={"type": "lint"})).json()
            running = (await http.post("/v1/tasks", json={"type": "test_run"})).json()
            held = (await http.post("/v1/claim", json={"machine": "box", "capabilities": ["test_run"]})).json()
            assert (await http.post(f"/v1/tasks/{running['id']}/start", json={"lease": held["lease"]})).is_success
    finally:
        process.terminate()
        process.wait(10)
    before = stored(tmp_path / "q.db")

    free_mb = shutil.disk_usage(tmp_path).free // 2**20
    process, url, log = start_serve(tmp_path, SECRET_KEY=SECRET, LOG_LEVEL="WARNING",
                                    QUEUE_DISK_RESERVE_MB=str(free_mb + 10_000))
    try:
        async with loopback.client(base_url=url, headers=HEADERS) as http:
            writes = [
                await http.post("/v1/tasks", json={"type": "lint"}),
                await http.post("/v1/tasks", json=[{"type": "lint"}, {"type": "lint"}]),
                await http.post("/v1/claim", json={"machine": "box", "capabilities": ["lint"]}),
                await http.post(f"/v1/tasks/{running['id']}/heartbeat", json={"lease": held["lease"]}),
                await http.post(f"/v1/tasks/{running['id']}/report", json={"lease": held["lease"], "status": "done"}),
                await http.post(f"/v1/tasks/{waiting['id']}/cancel", json={}),
            ]
            reads = [await http.get(f"/v1/tasks/{waiting['id']}"), await http.get("/v1/tasks"),
                     await http.get("/v1/events", params={"after": 0})]
    finally:
        process.terminate()
        process.wait(10)
    assert [w.status_code for w in writes] == [503] * len(writes), [w.text for w in writes]
    detail = writes[0].json()["detail"]
    assert detail.startswith("only ") and f" MB free on the disk of {tmp_path / 'q.db'} " in detail
    assert f"(below the reserve of {free_mb + 10_000} MB, QUEUE_DISK_RESERVE_MB)" in detail
    assert "free space on that disk" in detail and detail.endswith("nothing was changed.")
    assert all(w.headers.get("Retry-After") for w in writes)
    assert [r.status_code for r in reads] == [200] * len(reads)
    assert reads[0].json()["status"] == "pending"
    assert stored(tmp_path / "q.db") == before
    assert "ERROR" not in log.read_text()
