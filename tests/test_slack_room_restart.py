"""A restarted bot finds the ask cards it already posted (they are in its state file): no card is posted
twice, a card of an ask that opened while it was down is posted, and an old card is still settled."""

from __future__ import annotations

import json

from da.queue.client import QueueClient
from tests.support.slack_emulator import Message, SlackEmulator
from tests.support.waiting import wait_until
from tests.test_slack_room import PERMISSION, ask_card, started


def cards_of(slack: SlackEmulator, root: Message, title: str) -> list[Message]:
    return [m for m in slack.thread(root.channel, root.ts) if title in m.text]


async def test_a_restarted_bot_posts_each_ask_card_once_and_still_settles_the_old_ones(
        make_bot, slack: SlackEmulator, queue_client: QueueClient) -> None:
    first = await make_bot()
    message, task, held = await started(slack, queue_client)
    # Three: a post refused by the one-a-second rule uses one up.
    slack.inject("chat.postMessage", "slow", after=True, times=3)
    await queue_client.open_ask(task.id, held.lease, "permission", "Run the tests", PERMISSION)
    old = await ask_card(slack, message, "Run the tests")
    await first.stop()  # while Slack's answer to the card's post is still on its way

    await queue_client.open_ask(task.id, held.lease, "permission", "Push the branch", PERMISSION)
    await make_bot()
    await ask_card(slack, message, "Push the branch")
    await queue_client.answer_ask(task.id, 1, "allow", by="alice")
    await queue_client.answer_ask(task.id, 2, "deny", by="alice")
    await wait_until(lambda: "by alice" in json.dumps(slack.messages[(old.channel, old.ts)].blocks) or None)
    assert len(cards_of(slack, message, "Run the tests")) == 1, "the restarted bot did not post the card again"
    assert len(cards_of(slack, message, "Push the branch")) == 1
