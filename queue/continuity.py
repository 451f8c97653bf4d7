"""Time the queue did not watch: a stalled loop, a clock that jumped, a database that did not answer.

Leases are timestamps on the service's wall clock, stored in the database so every replica reads
them the same way. A lease should only run down while the queue could hear the heartbeats that
renew it. If the service was paused (SIGSTOP, a VM pause, a laptop asleep), its wall clock stepped
forward (NTP), or its database did not answer, the workers' heartbeats could not land for that long,
and the first reap afterwards would take every running task from its healthy worker.

So the reaper measures, on the monotonic clock and on the wall clock, how long it has been since
it last settled leases; whatever exceeds its own period is time nobody watched, and running leases
get it back before anything is reaped. The same check covers a database outage (reaps fail, so the
gap grows until the database answers again) and a stall (the loop did not run at all).
"""

from __future__ import annotations

import time
from collections.abc import Callable

# Lateness up to this is ordinary scheduling noise on a busy machine, not worth a write. A healthy
# worker heartbeats at a third of its lease, so leases of at least 3 s keep 2 s in hand over it.
TOLERANCE = 1.0


class Continuity:
    """How much time went by unwatched since the reaper last settled leases."""

    def __init__(self, period: float, *, clock: Callable[[], float] = time.time,
                 monotonic: Callable[[], float] = time.monotonic, tolerance: float = TOLERANCE) -> None:
        self.period = period
        self.tolerance = tolerance
        self._clock = clock
        self._monotonic = monotonic
        self._last = self.mark()

    def mark(self) -> tuple[float, float]:
        """Now, on both clocks: take it before a reap, hand it to `settled` once the reap succeeded."""
        return self._monotonic(), self._clock()

    def settled(self, mark: tuple[float, float]) -> None:
        """Leases were settled as of `mark`."""
        self._last = mark

    def unwatched(self) -> float:
        """Seconds beyond the reaper's period since leases were last settled, or 0 within the tolerance.

        The monotonic clock sees a stalled loop or an outage; the wall clock also sees a step forward
        and, on systems whose monotonic clock stops in suspend, a machine that slept. A wall clock
        stepped back only makes leases last longer, so it counts for nothing.
        """
        monotonic, wall = self.mark()
        gap = max(monotonic - self._last[0], wall - self._last[1]) - self.period
        return gap if gap > self.tolerance else 0.0
