"""Waiting inside the queue service: broadcast wake-ups, and waits that end on time.

A long-poll takes a `Signal.waiter()` before it checks the database, so a change committed between
its check and its wait still wakes it; `within` answers on time even when the work it waits for
(a statement on a frozen database) never ends.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any, TypeVar

T = TypeVar("T")


class Signal:
    """A broadcast wake-up: waiters take `waiter()` before checking, so no notify is missed."""

    def __init__(self) -> None:
        self._future: asyncio.Future[None] | None = None
        # Long-polls waiting on this signal right now (after their check): /metrics shows it, tests wait on it.
        self.parked = 0

    def waiter(self) -> asyncio.Future[None]:
        if self._future is None or self._future.done():
            self._future = asyncio.get_running_loop().create_future()
        return self._future

    def notify(self) -> None:
        if self._future is not None and not self._future.done():
            self._future.set_result(None)

    async def wait(self, waiter: asyncio.Future[None], timeout: float,
                   also: asyncio.Future[None] | None = None) -> None:
        """`wait_for_any` of the signal's waiter (and `also`), counted in `parked` while it waits."""
        self.parked += 1
        try:
            await wait_for_any([waiter] if also is None else [waiter, also], timeout)
        finally:
            self.parked -= 1


async def wait_for_any(waiters: list[asyncio.Future[None]], timeout: float) -> None:
    """Sleep until any of the signals fires or the timeout passes, without cancelling the shared futures.

    A callback on each shared future rather than asyncio.wait_for and shield: a woken waiter resumes two
    turns of the loop after the notify rather than four, soon enough for a claim woken by a task's creation
    to join the very batch that commits it (`groupcommit`)."""
    loop = asyncio.get_running_loop()
    woken: asyncio.Future[None] = loop.create_future()

    def wake(_: object = None) -> None:
        if not woken.done():
            woken.set_result(None)

    for waiter in waiters:
        waiter.add_done_callback(wake)
    timer = loop.call_later(timeout, wake)
    try:
        await woken
    finally:
        timer.cancel()
        for waiter in waiters:
            waiter.remove_done_callback(wake)


async def within(seconds: float, awaitable: Awaitable[T]) -> T:
    """Its result, or TimeoutError after `seconds` without waiting for it to stop.

    asyncio.wait_for waits for the cancelled work to finish; a statement on a frozen database does
    not finish, and cancelling it needs that database too. Work that overruns is left to end on its
    own (its outcome dropped), so the caller is answered on time.
    """
    work = asyncio.ensure_future(awaitable)
    try:
        done, _ = await asyncio.wait({work}, timeout=seconds)
    except asyncio.CancelledError:
        work.cancel()
        work.add_done_callback(_drop_outcome)
        raise
    if not done:
        work.add_done_callback(_drop_outcome)
        raise TimeoutError
    return work.result()


def _drop_outcome(work: asyncio.Future[Any]) -> None:
    if not work.cancelled():
        work.exception()
