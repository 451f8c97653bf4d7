"""One bot per workspace, enforced through the queue: a second `da bot` (on this machine or
another) refuses to connect and stands by, then takes over from where the first one stopped."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import pytest

from da.bot.slack.app import BotProcess, WorkspaceTaken
from da.queue.client import QueueClient
from tests.support.server import QueueServer
from tests.support.slack import bot_settings, needs_human, texts
from tests.support.slack_emulator import SlackEmulator
from tests.support.waiting import wait_until

pytestmark = pytest.mark.long


def posts_of(slack: SlackEmulator, short_id: str) -> int:
    return sum(short_id in texts(m) for m in slack.channel_messages("CNOTIFY"))


async def test_a_second_bot_stands_by_and_takes_over(make_bot, slack: SlackEmulator, queue: QueueServer,
                                                      queue_client: QueueClient, tmp_path: Path) -> None:
    first = await make_bot(lease_ttl=6.0)
    # Another machine: its own state file, the same queue and workspace.
    second = BotProcess(bot_settings(slack, queue.url, tmp_path / "other-machine" / "state.json", lease_ttl=6.0))
    with pytest.raises(WorkspaceTaken, match=r"another da bot runs for this Slack workspace \(lease 'slack:T1' "
                                             r"is held by "):
        await second.start()
    assert slack.connections == 1
    ready = asyncio.Event()
    standby = asyncio.create_task(second.run(ready))
    try:
        await asyncio.wait_for(ready.wait(), 10)
        assert second.standing_by and not second.connected and slack.connections == 1
        before = await needs_human(queue_client, notes="while both run")

        async def posted_before() -> bool:
            return posts_of(slack, before.short_id) > 0

        await wait_until(posted_before, timeout=20)
        await first.stop()
        during = await needs_human(queue_client, notes="between the two")

        async def taken_over() -> bool:
            return second.connected

        await wait_until(taken_over, timeout=20)
        after = await needs_human(queue_client, notes="after the handover")

        async def posted_after() -> bool:
            return posts_of(slack, during.short_id) > 0 and posts_of(slack, after.short_id) > 0

        await wait_until(posted_after, timeout=20)
        assert [posts_of(slack, t.short_id) for t in (before, during, after)] == [1, 1, 1]
    finally:
        standby.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await standby
    assert not second.connected


async def test_a_bot_that_loses_the_workspace_steps_back(slack: SlackEmulator, queue: QueueServer,
                                                          queue_client: QueueClient, tmp_path: Path) -> None:
    bot = BotProcess(bot_settings(slack, queue.url, tmp_path / "state.json", lease_ttl=6.0))
    ready = asyncio.Event()
    running = asyncio.create_task(bot.run(ready))
    try:
        await asyncio.wait_for(ready.wait(), 10)
        assert bot.connected
        # The lease ran out while this bot was cut off from the queue, and another bot took it.
        await queue_client.release_lease(bot.lease_name, bot.holder)
        await queue_client.acquire_lease(bot.lease_name, "elsewhere:1", 60)

        async def stepped_back() -> bool:
            return bot.standing_by

        await wait_until(stepped_back, timeout=15)
        # Standing by: no notifier, no Slack connection, so it cannot post what the other bot posts.
        assert not bot.holding.is_set() and all(task.done() for task in bot.tasks)
        assert bot.handler is None
    finally:
        running.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await running
