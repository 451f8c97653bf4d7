"""Waiting on evidence instead of sleeping: poll a condition until it holds, or fail saying what was awaited."""

from __future__ import annotations

import asyncio
import inspect
import re
import time
from collections.abc import Callable
from typing import Any

from tests.support import loopback
from tests.support.server import SECRET


async def wait_until(condition: Callable[[], Any], timeout: float = 10.0, interval: float = 0.02) -> Any:
    """Poll a condition (a plain or an async function) until it is truthy and return its value; fail on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            name = getattr(condition, "__qualname__", repr(condition))
            raise AssertionError(f"condition {name} not met within {timeout}s")
        await asyncio.sleep(interval)


async def until_parked(url: str, route: str = "claim", count: int = 1, secret: str = SECRET,
                       timeout: float = 10.0) -> None:
    """Wait until the queue at `url` holds at least `count` long-polls of `route` parked (its /metrics says so)."""
    pattern = re.compile(rf'^da_long_polls_parked{{route="{route}"}} (\d+)$', re.MULTILINE)
    async with loopback.client(base_url=url, headers={"x-secret-key": secret}, timeout=timeout) as http:

        async def enough() -> bool:
            found = pattern.search((await http.get("/metrics")).text)
            assert found is not None, f"/metrics has no da_long_polls_parked for {route}"
            return int(found[1]) >= count

        await wait_until(enough, timeout=timeout)
