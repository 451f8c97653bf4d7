"""The package layout: `queue/` must not shadow the standard library's `queue`."""

from __future__ import annotations

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
