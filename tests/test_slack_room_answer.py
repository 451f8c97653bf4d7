"""The agent's answer shows in one place in its thread: the stream that showed it as it came, with the
result (workspace, cost) posted after it; a thread without a stream gets the answer in the post."""

from __future__ import annotations

import json

from da.queue.client import QueueClient
from tests.support.slack_emulator import Message, SlackEmulator
from tests.support.waiting import wait_until
from tests.test_slack_room import record, started, streams_in


def shown_in_blocks(slack: SlackEmulator, root: Message, words: str) -> int:
    """How many messages of the thread show `words` in their blocks (what a reader sees)."""
    return sum(words in json.dumps(m.blocks) for m in slack.thread(root.channel, root.ts))


async def result_post(slack: SlackEmulator, root: Message, short_id: str) -> Message:
    def posted() -> Message | None:
        return next((m for m in slack.thread(root.channel, root.ts) if "answer_head" in json.dumps(m.blocks)
                     and short_id in json.dumps(m.blocks)), None)
    return await wait_until(posted)


async def test_a_streamed_answer_is_not_posted_again(bot, slack: SlackEmulator, queue_client: QueueClient) -> None:
    message, task, held = await started(slack, queue_client)
    await queue_client.save_progress(task.id, held.lease, record(answer="Looking at the race", cost=0.3))
    stream = (await wait_until(lambda: streams_in(slack, message) or None))[0]
    await wait_until(lambda: stream.text == "Looking at the race" or None)
    await queue_client.report(task.id, held.lease, "done", {"answer": "Looking at the race\nFixed it in conftest.py"})

    posted = await result_post(slack, message, task.short_id)
    await wait_until(lambda: stream.state == "stopped" or None)
    assert stream.text == "Looking at the race\nFixed it in conftest.py", "the stream ends with the whole answer"
    assert "Fixed it in conftest.py" not in json.dumps(posted.blocks), "the answer post does not repeat it"
    assert shown_in_blocks(slack, message, "Fixed it in conftest.py") == 0
    assert "answered above" in json.dumps(posted.blocks) and "$0.30" in json.dumps(posted.blocks)
    assert not slack.named("files.completeUploadExternal"), "nothing to attach: the stream showed it all"


async def test_without_a_stream_the_answer_is_in_its_post_and_not_on_the_progress_card(
        bot, slack: SlackEmulator, queue_client: QueueClient) -> None:
    slack.unknown_methods.update({"chat.startStream", "chat.appendStream", "chat.stopStream"})
    message, task, held = await started(slack, queue_client)
    await queue_client.save_progress(task.id, held.lease, record(plan=[("Find it", "in_progress")],
                                                                 answer="Looking at the race"))
    await wait_until(lambda: shown_in_blocks(slack, message, "Looking at the race") == 1 or None)
    await queue_client.report(task.id, held.lease, "done", {"answer": "Looking at the race\nFixed it"})

    posted = await result_post(slack, message, task.short_id)
    assert "Fixed it" in json.dumps(posted.blocks)
    await wait_until(lambda: shown_in_blocks(slack, message, "Looking at the race") == 1 or None)
    assert not streams_in(slack, message)
