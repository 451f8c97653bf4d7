"""The short chaos run: real queue and worker processes SIGKILLed mid-work (workers with task children
alive), a queue replica SIGSTOPped for twice the short lease, and reports holding NUL characters, lose
and repeat nothing; on SQLite (one replica) and on PostgreSQL (two, workers failing over between them)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import chaos
from tests.support import postgres

pytestmark = pytest.mark.long


async def test_kills_lose_nothing_and_run_nothing_twice(tmp_path: Path) -> None:
    figures = await chaos.run(300, queue_kills=2, worker_kills=2, replica_stops=1, folder=tmp_path, kill_gap=1.0,
                              timeout=120)
    assert figures["tasks"] == 300 and figures["replica_stops"] == 1
    assert figures["missing"] == 0 and figures["not_terminal"] == 0
    assert figures["done_twice"] == 0 and figures["unsafe_run_twice"] == 0
    assert figures["lost_without_note"] == 0
    # Workers killed with task children alive: nothing ran again beside an orphan; NUL text was stored.
    assert figures["worker_kills_with_children_alive"] >= 1 and figures["runs_overlapping_an_orphan"] == 0
    assert figures["nul_reports"] > 0 and figures["nul_reports_not_stored"] == 0
    assert figures["ok"] is True


async def test_two_postgresql_replicas_one_stopped_and_one_killed_lose_nothing(
        postgres_cluster: postgres.Cluster, tmp_path: Path) -> None:
    url = await postgres_cluster.create_database(migrated=False)
    try:
        figures = await chaos.run(200, queue_kills=1, worker_kills=1, replica_stops=1, db_url=url, folder=tmp_path,
                                  kill_gap=1.0, timeout=120)
    finally:
        await postgres_cluster.drop_database(url)
    assert figures["tasks"] == 200 and figures["backend"] == "postgresql, 2 replicas"
    assert figures["missing"] == 0 and figures["not_terminal"] == 0
    assert figures["done_twice"] == 0 and figures["unsafe_run_twice"] == 0 and figures["lost_without_note"] == 0
    assert figures["nul_reports_not_stored"] == 0 and figures["ok"] is True, figures
