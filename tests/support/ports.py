"""Loopback ports for servers a test starts, stops and starts again on the same port.

A port the kernel hands out for `bind(port 0)` comes from the ephemeral range, so while a
test's server restarts, any other test process's listener or outgoing connection can land on
it, and the test then talks to a stranger (seen in CI as a 404 from another test's server).
These ports come from below that range, where the kernel never assigns one by itself, in a
band of its own for each test process so two processes never pick the same one.
"""

from __future__ import annotations

import itertools
import os
import socket

FIRST_PORT = 20000
BAND = 600
_next_in_band = itertools.count()


def _band_start() -> int:
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw")
    return FIRST_PORT + BAND * (int(worker) if worker.isdigit() else 0)


def free_port() -> int:
    """A loopback port nothing listens on now and nothing else in this run will be given."""
    start = _band_start()
    for _ in range(BAND):
        port = start + next(_next_in_band) % BAND
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free loopback port in {start}-{start + BAND - 1}")
