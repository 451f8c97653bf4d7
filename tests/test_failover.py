"""The failover drill, short: the PostgreSQL primary is SIGKILLed mid-run and its synchronous standby promoted.

Two PostgreSQL servers of its own (the session's cluster cannot lose its primary), two `da serve`
replicas on the multi-host URL and two real workers; see support/failover_drill.py. The long version
with a table of figures is bench/failover.py.
"""

from __future__ import annotations

from collections import Counter

from tests.support import failover_drill
from tests.support.postgres import need_postgres


async def test_a_promoted_standby_takes_over_without_losing_or_repeating_a_task() -> None:
    need_postgres()
    outcome = await failover_drill.run(30, task_seconds=0.1, promote_after=1.0, timeout=90)
    logs = outcome.logs

    assert outcome.ran_before_kill < 30, "every task ran before the kill; the drill proved nothing"
    assert outcome.not_done == [], logs
    assert outcome.run_twice == [] and outcome.never_run == [], logs
    assert outcome.done_twice == 0, logs
    assert outcome.fleet_resumed, logs
    # While no primary answered, both replicas said so at once instead of hanging.
    during = Counter(probe.status for probe in outcome.probes
                     if outcome.killed_at <= probe.at <= outcome.promoting_at and not probe.ok)
    assert during[failover_drill.UNAVAILABLE] > 0 and set(during) == {failover_drill.UNAVAILABLE}, during
    assert outcome.slowest_during_outage < failover_drill.ANSWER_BOUND
    # A write committed on the new primary without anyone restarting a replica.
    assert outcome.outage is not None
    assert outcome.first_write_after(outcome.promoted_at) is not None
