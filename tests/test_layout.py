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


def test_sql_ships_as_package_data() -> None:
    from da.queue import store

    assert "claim_task" in store.QUERIES
    assert [number for number, _ in store.migrations()][0] == 1


def test_json_logs_carry_each_transition(tmp_path: Path) -> None:
    import socket
    import time

    import httpx

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {"PATH": __import__("os").environ["PATH"], "SECRET_KEY": "s3cret-value-123", "LOG_FORMAT": "json",
           "QUEUE_PORT": str(port), "QUEUE_DB_PATH": str(tmp_path / "q.db"), "DA_CONFIG_DIR": str(tmp_path)}
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        process = subprocess.Popen([sys.executable, "-m", "da.cli", "serve"], env=env, cwd=tmp_path, stdout=out,
                                   stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                httpx.get(f"http://127.0.0.1:{port}/health")
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.05)
        headers = {"x-secret-key": "s3cret-value-123"}
        task = httpx.post(f"http://127.0.0.1:{port}/v1/tasks", json={"type": "lint"}, headers=headers).json()
        httpx.post(f"http://127.0.0.1:{port}/v1/tasks/{task['id']}/cancel", json={"by": "ada"}, headers=headers)
    finally:
        process.terminate()
        process.wait(10)
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    transitions = [(line["status"], line.get("by")) for line in lines if line.get("task_id") == task["id"]]
    assert transitions == [("pending", None), ("cancelled", "ada")]
    assert all({"ts", "level", "logger", "msg"} <= set(line) for line in lines)
    assert "s3cret-value-123" not in log.read_text()
