"""SLACK_APPROVERS may name user groups (S…): their members, as Slack lists them (usergroups.users.list),
may answer an agent's asks; the list is asked once for a burst of clicks, and anyone else is refused."""

from __future__ import annotations

import json

from da.bot.slack.settings import BotSettings
from da.queue.client import QueueClient
from tests.support.slack import STRANGER
from tests.support.slack_emulator import SlackEmulator
from tests.support.waiting import wait_until
from tests.test_slack_room import PERMISSION, ask_card, started


def test_slack_approvers_take_user_group_ids() -> None:
    env = {"SLACK_BOT_TOKEN": "xoxb-1", "SLACK_APP_TOKEN": "xapp-1", "DA_TOKEN": "da_" + "t" * 40,
           "SLACK_APPROVERS": "U1, SOPS"}
    assert BotSettings.from_env(env).approvers == {"U1", "SOPS"}


async def test_a_member_of_an_approver_group_may_answer_and_a_stranger_may_not(
        make_bot, slack: SlackEmulator, queue_client: QueueClient) -> None:
    slack.usergroups["SOPS"] = ["UOTHER"]
    await make_bot(approvers=frozenset({"SOPS"}))
    message, task, held = await started(slack, queue_client)
    await queue_client.open_ask(task.id, held.lease, "permission", "Deploy to staging", PERMISSION)
    card = await ask_card(slack, message, "Deploy to staging")

    await slack.click("ask_answer_0", on=card, user=STRANGER)
    refused = await slack.wait_response(lambda r: "SLACK_APPROVERS" in r.get("text", ""))
    assert refused["response_type"] == "ephemeral"
    assert (await queue_client.asks(task.id))[0].status == "open"

    await slack.click("ask_answer_0", on=card, user="UOTHER")
    await wait_until(lambda: "by <@UOTHER>" in json.dumps(slack.messages[(card.channel, card.ts)].blocks) or None)
    assert (await queue_client.asks(task.id))[0].answered_by == "UOTHER"
    assert len(slack.named("usergroups.users.list")) == 1, "the group's members are kept for a while"


async def test_without_usergroups_read_a_group_member_is_refused_and_the_bot_goes_on(
        make_bot, slack: SlackEmulator, queue_client: QueueClient) -> None:
    slack.usergroups["SOPS"] = ["UOTHER"]
    slack.scopes.discard("usergroups:read")
    await make_bot(approvers=frozenset({"SOPS"}))
    message, task, held = await started(slack, queue_client)
    await queue_client.open_ask(task.id, held.lease, "permission", "Deploy to staging", PERMISSION)
    card = await ask_card(slack, message, "Deploy to staging")
    await slack.click("ask_answer_0", on=card, user="UOTHER")
    await slack.wait_response(lambda r: "SLACK_APPROVERS" in r.get("text", ""))
    assert [c.error for c in slack.refused("usergroups.users.list")] == ["missing_scope"]
    await slack.click("ask_answer_0", on=card)
    await wait_until(lambda: "by <@UALLOWED>" in json.dumps(slack.messages[(card.channel, card.ts)].blocks) or None)
