"""Slow down secret guessing: an address with too many wrong secrets is refused for a while."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

# A misconfigured worker retries with backoff and stays far below this; a guesser does not.
MAX_FAILURES = 20
WINDOW = 60.0
LOCKOUT = 60.0
# Bounds memory under a flood from many addresses.
MAX_TRACKED = 10_000


@dataclass
class Lockout:
    """Failures per address within WINDOW; MAX_FAILURES of them lock it out for LOCKOUT seconds."""

    max_failures: int = MAX_FAILURES
    window: float = WINDOW
    lockout: float = LOCKOUT
    clock: Callable[[], float] = time.monotonic
    failures: dict[str, deque[float]] = field(default_factory=dict)
    locked_until: dict[str, float] = field(default_factory=dict)

    def remaining(self, address: str) -> float:
        """Seconds this address is still locked out (0 when it is not)."""
        until = self.locked_until.get(address)
        if until is None:
            return 0.0
        left = until - self.clock()
        if left <= 0:
            del self.locked_until[address]
            return 0.0
        return left

    def failed(self, address: str) -> bool:
        """Record a wrong secret; True when this one locks the address out."""
        now = self.clock()
        if len(self.failures) >= MAX_TRACKED and address not in self.failures:
            self.failures.pop(next(iter(self.failures)))
        recent = self.failures.setdefault(address, deque())
        recent.append(now)
        while recent and now - recent[0] > self.window:
            recent.popleft()
        if len(recent) >= self.max_failures:
            self.locked_until[address] = now + self.lockout
            recent.clear()
            return True
        return False

    def succeeded(self, address: str) -> None:
        self.failures.pop(address, None)
