"""How a worker times a task's lease: when to heartbeat, how long to wait for each queue URL, and
when the lease must be taken as lost.

Timed only by durations on this machine's monotonic clock and the seconds left the queue
answers with, counted from when the lease was last renewed: never from the queue's timestamps
(any skew between the clocks would count), and never counting time spent retrying as lease.
"""

from __future__ import annotations

from dataclasses import dataclass

from da.queue import client as queue_client
from da.queue import models as queue_models

# Heartbeats never come faster than this, whatever lease the queue grants.
MIN_HEARTBEAT = 0.2
# The least a queue URL is given past a held heartbeat's wait to answer, however short the lease.
MIN_MARGIN = 0.3


def heartbeat_interval(lease_seconds: float) -> float:
    """A third of the lease, and never longer than the queue will hold a heartbeat (its `wait`
    limit): a long lease beats more often than it must rather than have every beat refused."""
    return min(max(MIN_HEARTBEAT, lease_seconds / 3), queue_models.MAX_WAIT)


def request_timeout(lease_seconds: float | None) -> float:
    """How long one queue URL may take to answer a plain request before the next URL is asked: a
    third of the lease at most, so a hung replica leaves time to reach another before it runs out."""
    if lease_seconds is None:
        return queue_client.DEFAULT_TIMEOUT
    return min(queue_client.DEFAULT_TIMEOUT, max(MIN_MARGIN, lease_seconds / 3))


@dataclass
class LeaseClock:
    """One task's lease as this worker knows it: its length and when it runs out (loop time)."""

    length: float
    expires: float

    @classmethod
    def granted(cls, length: float, now: float, seconds_left: float) -> LeaseClock:
        return cls(length, now + seconds_left)

    def wait(self) -> float:
        """How long the queue should hold the next heartbeat: a third of the lease, whatever retries cost."""
        return heartbeat_interval(self.length)

    def attempt_timeout(self, now: float, wait: float) -> float:
        """Time for one URL to answer a heartbeat held `wait` seconds: half of what the lease leaves
        past the wait, so a URL that hangs still leaves time to renew through the next one."""
        margin = (self.expires - now - wait) / 2
        return wait + min(queue_client.DEFAULT_TIMEOUT, max(MIN_MARGIN, margin))

    def renewed(self, sent: float, answered: float, seconds_left: float, wait: float) -> None:
        """A heartbeat sent at `sent` was answered at `answered` with `seconds_left` on the lease.

        The queue held it at most `wait`: whatever else it took was spent reaching the queue (a
        retry, a URL that hung), not lease granted.
        """
        self.length = seconds_left + min(max(0.0, answered - sent), wait)
        self.expires = answered + seconds_left

    def expired(self, now: float) -> bool:
        return now >= self.expires
