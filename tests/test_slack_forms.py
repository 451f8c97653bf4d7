"""The New task form (global and message shortcuts) and the App Home tab, through the real bot
against the strict emulator and the real queue."""

from __future__ import annotations

import json
from typing import Any

from da.queue.client import QueueClient
from da.queue.models import Task
from tests.support.slack import ALLOWED, STRANGER, texts
from tests.support.slack_emulator import SlackEmulator
from tests.support.waiting import wait_until


def filled(prompt: str, machine: str = "", agent: str = "", task_type: str = "", folder: str = "") -> dict[str, Any]:
    """The form's state as Slack submits it: only what was filled in."""
    values: dict[str, Any] = {"prompt": {"text": {"type": "plain_text_input", "value": prompt}}}
    for block_id, value in (("machine", machine), ("agent", agent), ("type", task_type)):
        if value:
            values[block_id] = {"choice": {"type": "static_select", "selected_option": {"value": value}}}
    if folder:
        values["folder"] = {"text": {"type": "plain_text_input", "value": folder}}
    return values


async def opened_form(slack: SlackEmulator, count: int = 1) -> dict[str, Any]:
    """The `count`th New task form the bot opened, as Slack stored it."""
    async def opened() -> dict[str, Any] | None:
        forms = [v for v in slack.views.values() if v.get("callback_id") == "new_task_submit"]
        return forms[count - 1] if len(forms) >= count else None
    return await wait_until(opened)


async def only_task(queue_client: QueueClient) -> Task | None:
    found, _ = await queue_client.list_tasks()
    return found[0] if len(found) == 1 else None


async def test_the_global_shortcut_opens_the_form_and_queues_the_task_with_its_card_in_my_dm(
        bot, slack: SlackEmulator, queue_client: QueueClient) -> None:
    await slack.global_shortcut("da_new_task")
    form = await opened_form(slack)
    choices = {b["block_id"]: [o["value"] for o in b["element"].get("options", [])] for b in form["blocks"]}
    assert choices["machine"] == ["mac-mini", "thinkpad-x1"] and "claude" in choices["agent"]
    submitted = await slack.submit(form, filled("fix the login page\nand its test", "mac-mini", "claude",
                                                "agent_run", "/srv/app"))
    await slack.wait_ack(submitted)
    assert submitted.ack_payload in (None, {})
    task = await wait_until(lambda: only_task(queue_client))
    assert task.payload == {"agent": "claude", "prompt": "fix the login page\nand its test", "cwd": "/srv/app"}
    assert task.target_machine == "mac-mini" and task.created_by == ALLOWED
    card = await slack.wait_call("chat.postMessage", lambda b: "Cancel" in texts(b))
    assert card["channel"] == ALLOWED and slack.channel_messages(slack.im_of(ALLOWED))


async def test_mistakes_show_next_to_their_field_and_queue_nothing(bot, slack: SlackEmulator,
                                                                  queue_client: QueueClient) -> None:
    await slack.global_shortcut("da_new_task")
    form = await opened_form(slack)
    wrong = await slack.submit(form, filled("build it", "thinkpad-x1", "claude", "agent_run"))
    await slack.wait_ack(wrong)
    assert wrong.ack_payload["response_action"] == "errors"  # type: ignore[index]
    assert "does not list agent claude" in wrong.ack_payload["errors"]["machine"]  # type: ignore[index]
    blank = await slack.submit(form, filled("   "))
    await slack.wait_ack(blank)
    assert blank.ack_payload["errors"] == {"prompt": "Say what should be done."}  # type: ignore[index]
    refused = await slack.submit(form, filled("wipe it", "mac-mini"), user=STRANGER)
    await slack.wait_ack(refused)
    assert "SLACK_ALLOWED_USERS" in refused.ack_payload["errors"]["prompt"]  # type: ignore[index]
    assert (await queue_client.list_tasks())[0] == []


async def test_send_to_agent_prefills_the_message_and_its_link_and_answers_in_its_thread(
        bot, slack: SlackEmulator, queue_client: QueueClient) -> None:
    message, _ = await slack.say("the export <csv> & pdf buttons are broken", user="UOTHER")
    await slack.message_shortcut("da_send_to_agent", message)
    form = await opened_form(slack)
    prompt = form["blocks"][0]["element"]["initial_value"]
    assert prompt.startswith("the export <csv> & pdf buttons are broken")
    assert f"archives/CGENERAL/p{message.ts.replace('.', '')}" in prompt
    submitted = await slack.submit(form, filled(prompt, "mac-mini", "claude", "agent_run"))
    await slack.wait_ack(submitted)
    task = await wait_until(lambda: only_task(queue_client))
    assert task.payload["prompt"] == prompt
    card = await slack.wait_call("chat.postMessage", lambda b: "Cancel" in texts(b))
    assert card["channel"] == "CGENERAL" and card["thread_ts"] == message.ts


async def test_app_home_lists_my_tasks_and_follows_them(bot, slack: SlackEmulator,
                                                        queue_client: QueueClient) -> None:
    mine = await queue_client.create_task("agent_run", {"agent": "claude", "prompt": "tidy the docs"},
                                          target_machine="mac-mini", agent="claude", created_by=ALLOWED)
    theirs = await queue_client.create_task("agent_run", {"agent": "claude", "prompt": "secret plans"},
                                            target_machine="mac-mini", agent="claude", created_by="UOTHER")
    await slack.open_home(ALLOWED)
    await wait_until(lambda: _true(ALLOWED in slack.homes))
    home = json.dumps(slack.homes[ALLOWED]["blocks"])
    assert mine.short_id in home and theirs.short_id not in home and "mac-mini" in home
    value = json.dumps({"id": mine.id}, separators=(",", ":"))
    await slack.click_view("cancel_task", slack.homes[ALLOWED]["id"], value)

    async def cancelled_shown() -> bool:
        blocks = slack.homes[ALLOWED]["blocks"]
        recent = json.dumps(blocks[[b.get("block_id") for b in blocks].index("home_recent"):])
        return mine.short_id in recent and "cancelled" in recent

    await wait_until(cancelled_shown)
    assert (await queue_client.get_task(mine.id)).status == "cancelled"
    await slack.click_view("home_new_task", slack.homes[ALLOWED]["id"])
    await opened_form(slack)
    assert len(slack.named("views.publish")) >= 2, "the Home tab was redrawn after the cancel"


async def _true(value: bool) -> bool:
    return value


async def test_send_to_agent_from_a_conversation_da_is_not_in_puts_the_card_in_my_dm_saying_why(
        bot, slack: SlackEmulator, queue_client: QueueClient) -> None:
    message, _ = await slack.say("please fix the export", user="UOTHER", channel="DUSER")
    await slack.message_shortcut("da_send_to_agent", message)
    form = await opened_form(slack)
    prompt = form["blocks"][0]["element"]["initial_value"]
    submitted = await slack.submit(form, filled(prompt, "mac-mini", "claude", "agent_run"))
    await slack.wait_ack(submitted)
    task = await wait_until(lambda: only_task(queue_client))
    card = await slack.wait_call("chat.postMessage", lambda b: "Cancel" in texts(b) and b["channel"] == ALLOWED)
    assert "thread_ts" not in card or card["thread_ts"] is None
    assert [c.error for c in slack.refused("chat.postMessage") if c.args.get("channel") == "DUSER"] == [
        "channel_not_found"]
    dm = slack.channel_messages(slack.im_of(ALLOWED))
    assert any("cannot post in the conversation that message is in" in m.text and task.short_id in m.text for m in dm)
    assert any(f"task:{task.id}:card" in json.dumps(m.blocks) for m in dm), "the card is in my DM"
