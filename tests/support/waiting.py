"""Waiting on evidence instead of sleeping: poll a condition until it holds, or fail saying what was awaited."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Callable
from typing import Any


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
