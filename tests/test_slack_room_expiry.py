"""An ask nobody answered in time: its card in the thread says it expired, and a click on it is told so
(a queue whose asks last three seconds; the rest as in tests/test_slack_room.py)."""

from __future__ import annotations

import copy
import dataclasses
import json

import pytest

from da.queue.client import QueueClient
from tests.support.server import QueueServer
from tests.support.slack import FLEET
from tests.support.slack_emulator import SlackEmulator
from tests.support.waiting import wait_until
from tests.test_slack_room import PERMISSION, ask_card, started


@pytest.fixture
async def queue(make_server) -> QueueServer:
    return await make_server(fleet=FLEET, ask_timeout=3.0)


async def test_an_expired_asks_card_says_so_and_a_click_is_told(bot, slack: SlackEmulator,
                                                                 queue_client: QueueClient) -> None:
    message, task, held = await started(slack, queue_client)
    await queue_client.open_ask(task.id, held.lease, "permission", "Delete the build folder", PERMISSION)
    card = await ask_card(slack, message, "Delete the build folder")
    before = dataclasses.replace(card, blocks=copy.deepcopy(card.blocks))
    await wait_until(lambda: "Expired" in json.dumps(slack.messages[(card.channel, card.ts)].blocks) or None)
    assert "ask_answer" not in json.dumps(slack.messages[(card.channel, card.ts)].blocks)
    await slack.click("ask_answer_0", on=before)
    told = await slack.wait_response(lambda r: "expired" in r.get("text", ""))
    assert told["response_type"] == "ephemeral"
    assert (await queue_client.asks(task.id))[0].status == "expired"
