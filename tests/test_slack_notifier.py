"""The notifier and the progress editor against a Slack that limits, resets, stalls and refuses:
every alert is delivered (once, or summarised), the cursor never passes an undelivered one,
the followers never die, and `da bot` stops whatever they are doing.
"""

from __future__ import annotations

import asyncio
import shutil
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from da.bot.slack.app import BotProcess
from da.bot.slack.settings import BotSettings
from da.bot.slack.state import BotState
from da.queue.client import QueueClient
from tests.support.server import QueueServer
from tests.support.slack import needs_human, seen, texts
from tests.support.slack_emulator import SlackEmulator
from tests.support.waiting import wait_until

pytestmark = pytest.mark.long


def has(slack: SlackEmulator, short_id: str) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return delivered(slack, short_id) > 0
    return check


def delivered(slack: SlackEmulator, short_id: str, channel: str = "CNOTIFY") -> int:
    """How many messages everyone in the channel sees that carry this task (summary threads included)."""
    return sum(short_id in texts(m) for m in slack.channel_messages(channel))


async def test_alerts_past_the_channel_rate_limit_are_each_delivered_once(make_bot, slack: SlackEmulator,
                                                                          queue_client: QueueClient) -> None:
    await make_bot(burst_threshold=100)
    tasks = [await needs_human(queue_client, notes=f"problem {n}") for n in range(4)]

    async def all_there() -> bool:
        return all(delivered(slack, t.short_id) for t in tasks)

    await wait_until(all_there, timeout=30)
    assert [delivered(slack, t.short_id) for t in tasks] == [1] * 4
    assert {c.error for c in slack.refused("chat.postMessage")} == {"ratelimited"}


@pytest.mark.parametrize("fault", ["reset", "500", "503", "429", "bad_json"])
async def test_a_failing_slack_call_is_retried_until_the_alert_is_delivered(make_bot, slack: SlackEmulator,
                                                                            queue_client: QueueClient,
                                                                            fault: str) -> None:
    await make_bot()
    slack.inject("chat.postMessage", fault, times=2)
    task = await needs_human(queue_client)

    async def there() -> bool:
        return delivered(slack, task.short_id) > 0

    await wait_until(there, timeout=30)
    assert delivered(slack, task.short_id) == 1


@pytest.mark.parametrize("after", [False, True])
async def test_a_stalled_post_is_retried_after_the_timeout(make_bot, slack: SlackEmulator, queue_client: QueueClient,
                                                           after: bool) -> None:
    await make_bot(slack_timeout=1.0)
    slack.inject("chat.postMessage", "stall", after=after)
    task = await needs_human(queue_client)

    # When Slack posted before it stalled, the retry posts again: at least once, never lost.
    expected = 2 if after else 1

    async def there() -> bool:
        return delivered(slack, task.short_id) >= expected

    await wait_until(there, timeout=30)
    assert delivered(slack, task.short_id) == expected


async def test_the_cursor_never_passes_an_undelivered_alert(make_bot, slack: SlackEmulator,
                                                            queue_client: QueueClient, tmp_path: Path) -> None:
    bot = await make_bot(notify_channel="GPRIVATE")
    task = await needs_human(queue_client)
    events = await queue_client.task_events(task.id)

    async def refused_twice() -> bool:
        return len(slack.refused("chat.postMessage")) >= 2

    await wait_until(refused_twice, timeout=20)
    saved = BotState.load(bot.settings.state_path)
    assert saved.last_event is not None and saved.last_event < events[-1].id
    slack.channels["GPRIVATE"].bot_member = True  # someone invites the bot

    async def there() -> bool:
        return delivered(slack, task.short_id, "GPRIVATE") == 1

    await wait_until(there, timeout=30)

    async def advanced() -> bool:
        state = BotState.load(bot.settings.state_path)
        return state.last_event is not None and state.last_event >= events[-1].id

    await wait_until(advanced, timeout=10)


async def test_a_crashing_follower_is_restarted(make_bot, slack: SlackEmulator, queue_client: QueueClient) -> None:
    bot = await make_bot()
    blocker = bot.settings.state_path.with_suffix(".tmp")
    blocker.mkdir(parents=True)  # the state can no longer be written: saving raises IsADirectoryError
    first = await needs_human(queue_client, notes="first")

    async def restarted() -> bool:
        return bot.supervisor.restarts.get("notifier", 0) >= 1

    await wait_until(restarted, timeout=20)
    blocker.rmdir()
    second = await needs_human(queue_client, notes="second")

    async def both() -> bool:
        return delivered(slack, first.short_id) >= 1 and delivered(slack, second.short_id) >= 1

    await wait_until(both, timeout=30)
    assert (delivered(slack, first.short_id), delivered(slack, second.short_id)) == (1, 1)


async def test_da_bot_stops_cleanly_in_the_middle_of_a_stalled_call(make_bot, slack: SlackEmulator,
                                                                    queue_client: QueueClient) -> None:
    bot = await make_bot(slack_timeout=60.0)
    slack.inject("chat.postMessage", "stall")
    await needs_human(queue_client)

    async def stalled() -> bool:
        return any(c.error == "fault:stall" for c in slack.calls)

    await wait_until(stalled, timeout=10)
    await asyncio.wait_for(bot.stop(), timeout=10)
    assert all(task.done() for task in bot.tasks)


async def test_da_bot_stops_cleanly_while_a_follower_backs_off(make_bot, slack: SlackEmulator,
                                                               queue_client: QueueClient) -> None:
    bot = await make_bot(notify_channel="GPRIVATE")
    await needs_human(queue_client)

    async def refused() -> bool:
        return len(slack.refused("chat.postMessage")) >= 1

    await wait_until(refused, timeout=10)
    await asyncio.wait_for(bot.stop(), timeout=10)
    assert all(task.done() for task in bot.tasks)


async def test_a_feed_that_went_backwards_is_noticed(make_bot, slack: SlackEmulator, queue: QueueServer,
                                                     queue_client: QueueClient, tmp_path: Path) -> None:
    await make_bot(feed_wait=1.0)
    first = await needs_human(queue_client, notes="before the backup")
    await wait_until(has(slack, first.short_id), timeout=20)
    database = Path(queue.settings.db_path)
    await queue.stop()
    backup = tmp_path / "backup"
    backup.mkdir()
    for path in database.parent.glob(database.name + "*"):
        shutil.copy(path, backup / path.name)
    await queue.start()
    lost = await needs_human(queue_client, notes="after the backup")
    await wait_until(has(slack, lost.short_id), timeout=20)
    await queue.stop()
    for path in database.parent.glob(database.name + "*"):
        path.unlink()
    for path in backup.iterdir():
        shutil.copy(path, database.parent / path.name)
    await queue.start()  # restored: event ids go back and will be handed out again
    fresh = await needs_human(queue_client, notes="after the restore")
    await wait_until(has(slack, fresh.short_id), timeout=30)


async def away(bot: BotProcess) -> None:
    """Stop the bot once it knows where the feed is, so it resumes from there."""

    async def placed() -> bool:
        return bot.state.last_event is not None

    await wait_until(placed, timeout=10)
    await bot.stop()


async def test_a_burst_becomes_one_summary_with_the_list_in_its_thread(make_bot, slack: SlackEmulator,
                                                                       queue_client: QueueClient) -> None:
    bot = await make_bot(burst_threshold=3)
    await away(bot)  # the burst happens while the bot is away; it finds them all at once
    failed = [await needs_human(queue_client, notes=f"exit {n}", status="failed") for n in range(12)]
    waiting = [await needs_human(queue_client, notes=f"asks {n}") for n in range(3)]
    await make_bot(burst_threshold=3)
    summary = await slack.wait_call("chat.postMessage", lambda b: "in the last" in b.get("text", ""), timeout=20)
    assert summary["channel"] == "CNOTIFY"
    assert "15 tasks" in summary["text"] and "3 need a person" in summary["text"] and "12 failed" in summary["text"]

    async def listed() -> bool:
        thread = " ".join(texts(m) for m in slack.thread("CNOTIFY", summary["ts"]))
        return all(t.short_id in thread for t in failed + waiting)

    await wait_until(listed, timeout=30)
    thread = " ".join(seen(m) for m in slack.thread("CNOTIFY", summary["ts"]))
    assert max(thread.index(t.short_id) for t in waiting) < min(thread.index(t.short_id) for t in failed)
    assert len(slack.channel_messages("CNOTIFY", top_level=True)) == 1
    await slack.click("open_review", on=summary)
    review = await slack.wait_response(lambda r: all(t.short_id in texts(r) for t in waiting))
    assert slack.message_of(review)[0].ephemeral_to == "UALLOWED"


async def test_needs_human_and_failed_go_before_done(make_bot, slack: SlackEmulator,
                                                     queue_client: QueueClient) -> None:
    bot = await make_bot(notify_done=True, burst_threshold=100)
    await away(bot)
    done = await needs_human(queue_client, notes="all good", status="done")
    failed = await needs_human(queue_client, notes="exit 1", status="failed")
    waiting = await needs_human(queue_client, notes="asks")
    await make_bot(notify_done=True, burst_threshold=100)

    async def all_three() -> bool:
        return all(delivered(slack, t.short_id) for t in (done, failed, waiting))

    await wait_until(all_three, timeout=30)
    order = [next(t.short_id for t in (done, failed, waiting) if t.short_id in texts(m))
             for m in slack.channel_messages("CNOTIFY")]
    assert order == [waiting.short_id, failed.short_id, done.short_id]


async def test_done_tasks_not_from_slack_are_quiet_unless_asked(make_bot, slack: SlackEmulator,
                                                                queue_client: QueueClient) -> None:
    bot = await make_bot()
    quiet = await needs_human(queue_client, notes="all good", status="done")
    marker = await needs_human(queue_client, notes="asks")
    await wait_until(has(slack, marker.short_id), timeout=20)
    assert delivered(slack, quiet.short_id) == 0
    await bot.stop()
    await make_bot(notify_done=True)
    loud = await needs_human(queue_client, notes="all good", status="done")
    await wait_until(has(slack, loud.short_id), timeout=20)
    env = {"SLACK_BOT_TOKEN": "xoxb-1", "SLACK_APP_TOKEN": "xapp-1", "SECRET_KEY": "s"}
    assert not BotSettings.from_env(env).notify_done
    assert BotSettings.from_env({**env, "SLACK_NOTIFY_DONE": "1"}).notify_done


async def test_progress_edits_survive_the_tier_3_limit(make_bot, slack: SlackEmulator,
                                                       queue_client: QueueClient) -> None:
    slack.tiers["chat.update"] = (2, 2.0)
    await make_bot(progress_every=0.1)
    await slack.slash("assign long job --machine=mac-mini --agent=claude --type=agent_run")
    card = await slack.wait_call("chat.postMessage", lambda b: "Cancel" in texts(b))
    task = (await queue_client.list_tasks())[0][0]
    held = await queue_client.claim("mac-mini", ["agent_run"], agents=["claude"])
    assert held is not None
    await queue_client.start(task.id, held.lease)
    for step in range(8):
        await queue_client.heartbeat(task.id, held.lease, progress=f"step {step}")
        await asyncio.sleep(0.05)
    await slack.wait_call("chat.update", lambda b: b.get("ts") == card["ts"] and "step 7" in texts(b), timeout=30)
    await queue_client.report(task.id, held.lease, "done", {"returncode": 0}, notes="finished")
    await slack.wait_call("chat.postMessage", lambda b: b.get("thread_ts") == card["ts"], timeout=30)


async def test_a_flood_of_30_needs_human_under_the_channel_limit(make_bot, slack: SlackEmulator,
                                                                 queue_client: QueueClient,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    await make_bot()
    started = time.monotonic()
    tasks = [await needs_human(queue_client, notes=f"flood {n}") for n in range(30)]

    async def all_there() -> bool:
        return all(delivered(slack, t.short_id) for t in tasks)

    await wait_until(all_there, timeout=60)
    took = time.monotonic() - started
    top = slack.channel_messages("CNOTIFY", top_level=True)
    with capsys.disabled():
        print(f"\nflood: 30 needs_human delivered in {took:.1f}s as {len(top)} top-level post(s) and "
              f"{len(slack.channel_messages('CNOTIFY')) - len(top)} thread message(s); "
              f"{len(slack.refused('chat.postMessage'))} post(s) answered 429")
    assert all(delivered(slack, t.short_id) == 1 for t in tasks)
    assert len(top) <= 8
