"""The package layout: `queue/` must not shadow the standard library's `queue`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_stdlib_queue_still_imports_from_the_repo_root() -> None:
    result = subprocess.run([sys.executable, "-c", "import queue, aiosqlite; print(queue.__file__)"],
                            cwd=ROOT, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    assert not result.stdout.strip().startswith(str(ROOT / "queue"))


def test_sql_ships_as_package_data_for_both_dialects() -> None:
    from da.queue import pgdatabase, sqlite

    for statements in (sqlite.STATEMENTS, pgdatabase.STATEMENTS):
        assert "claim_task" in statements.queries
        assert next(number for number, _ in statements.migrations()) == 1
    # Both dialects name the same verbs; PostgreSQL adds its feed horizon, liveness and migration bookkeeping,
    # and SQLite its reads for `da migrate --to` (the copy into PostgreSQL).
    assert set(sqlite.STATEMENTS.queries) - set(pgdatabase.STATEMENTS.queries) == {
        "last_event", "export_tasks", "export_events", "export_pruned_counts", "export_tokens"}


def test_json_logs_carry_each_transition(tmp_path: Path) -> None:
    import httpx

    from tests_support import start_serve

    process, url, log = start_serve(tmp_path, SECRET_KEY="s3cret-value-123", LOG_FORMAT="json")
    try:
        headers = {"x-secret-key": "s3cret-value-123"}
        task = httpx.post(f"{url}/v1/tasks", json={"type": "lint"}, headers=headers).json()
        httpx.post(f"{url}/v1/tasks/{task['id']}/cancel", json={"by": "ada"}, headers=headers)
    finally:
        process.terminate()
        process.wait(10)
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    transitions = [(line["status"], line.get("by")) for line in lines if line.get("task_id") == task["id"]]
    assert transitions == [("pending", None), ("cancelled", "ada")]
    assert all({"ts", "level", "logger", "msg"} <= set(line) for line in lines)
    assert "s3cret-value-123" not in log.read_text()
