"""Failover drill, long version: the PostgreSQL primary dies mid-run and its synchronous standby is promoted.

Runs tests/support/failover_drill.py (a primary and a `pg_basebackup -R` standby with synchronous
replication, two `da serve` replicas on the multi-host URL, two real `da worker` processes, N
run_script tasks that append their index to a side file; SIGKILL of the primary's postmaster
once a third ran, `pg_ctl promote` of the standby two seconds later) and prints a table: the
outage as clients saw it (first failed to first successful request), the first committed write
after the promotion began against the steady-state write measured before the kill in the same
run, throughput before and after, and the checks (acknowledged tasks lost, run twice, done twice:
all must be 0). Exits 1 if a check fails. A short version runs in the tests (test_failover.py).

    python bench/failover.py                 # 200 tasks
    python bench/failover.py --tasks 60 --durable
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.support import failover_drill, postgres


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=200)
    parser.add_argument("--lease", type=float, default=10.0, help="QUEUE_LEASE of the two replicas")
    parser.add_argument("--promote-after", type=float, default=2.0, help="seconds from the kill to the promotion")
    parser.add_argument("--durable", action="store_true", help="fsync on in both PostgreSQL servers")
    args = parser.parse_args()
    if (reason := postgres.unavailable()) is not None:
        print(f"failover: {reason}", file=sys.stderr)
        return 2
    outcome = asyncio.run(failover_drill.run(args.tasks, lease=args.lease, promote_after=args.promote_after,
                                             durable=args.durable))
    rows = outcome.table()
    width = max(len(name) for name, _ in rows)
    print(f"{'figure':<{width}}  value")
    for name, value in rows:
        print(f"{name:<{width}}  {value}")
    problems = outcome.problems()
    for problem in problems:
        print(f"FAILED: {problem}", file=sys.stderr)
    if problems:
        print(outcome.logs, file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
