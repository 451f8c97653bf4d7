"""The short chaos run: real queue and worker processes SIGKILLed mid-work (workers with task children
alive), and reports holding NUL characters, lose and repeat nothing."""

from __future__ import annotations

from pathlib import Path

from bench import chaos


async def test_kills_lose_nothing_and_run_nothing_twice(tmp_path: Path) -> None:
    figures = await chaos.run(300, queue_kills=2, worker_kills=2, folder=tmp_path, kill_gap=1.0, timeout=120)
    assert figures["tasks"] == 300
    assert figures["missing"] == 0 and figures["not_terminal"] == 0
    assert figures["done_twice"] == 0 and figures["unsafe_run_twice"] == 0
    assert figures["lost_without_note"] == 0
    # Workers killed with task children alive: nothing ran again beside an orphan; NUL text was stored.
    assert figures["worker_kills_with_children_alive"] >= 1 and figures["runs_overlapping_an_orphan"] == 0
    assert figures["nul_reports"] > 0 and figures["nul_reports_not_stored"] == 0
    assert figures["ok"] is True
