"""What a real workspace does to the bot, against the strict emulator with a real queue behind:
escaped command text, clicks in ephemeral answers, channels the bot cannot post in, expired
response URLs, text that would ping people, and confirmations that must act on what they showed.
"""

from __future__ import annotations

import json

import pytest

from da.bot import grammar
from da.bot.commands import CommandLayer
from da.queue.client import QueueClient
from tests.support import slack_limits
from tests.support.slack import ALLOWED, button_value, needs_human, note_form_from_review, note_values, seen, texts
from tests.support.slack_emulator import SlackEmulator

FLAGS = "--machine=mac-mini --agent=claude --type=agent_run"


async def test_prompts_reach_the_task_as_people_type_them(bot, slack: SlackEmulator, queue_client: QueueClient) -> None:
    asked = await needs_human(queue_client)
    typed = 'fix the user’s login page & don\'t break <b>bold</b> "now"\nthen run the tests'
    await slack.slash(f"assign {typed} {FLAGS}")
    card = await slack.wait_call("chat.postMessage", lambda b: "Cancel" in texts(b))
    tasks, _ = await queue_client.list_tasks(status="pending")
    assert tasks[0].payload["prompt"] == typed
    assert "fix the user’s login page & don't break <b>bold</b>" in seen(card)
    await slack.slash(f"resolve {asked.short_id} done —notes=“it’s fixed & <done>”")
    answer = await slack.wait_response(lambda r: "is now done" in r.get("text", ""))
    assert answer["text"] == f"`{asked.short_id}` is now done."
    assert (await queue_client.get_task(asked.id)).notes == "it’s fixed & <done>"


async def test_buttons_in_a_private_failures_list_answer_privately(bot, slack: SlackEmulator,
                                                                   queue_client: QueueClient) -> None:
    failed = await needs_human(queue_client, notes="exit 2", status="failed")
    other = await needs_human(queue_client, notes="exit 3", status="failed")
    await slack.wait_call("chat.postMessage", lambda b: other.short_id in texts(b))
    await slack.slash("failures")
    listed = await slack.wait_response(lambda r: failed.short_id in texts(r) and other.short_id in texts(r))
    posted_before = len(slack.named("chat.postMessage"))
    await slack.click("resolve_pending", on=listed, value=button_value(listed, "resolve_pending", failed.id))
    replaced = await slack.wait_response(lambda r: r.get("replace_original") and "re-queued" in texts(r))
    assert slack.message_of(replaced)[0].ephemeral
    assert button_value(replaced, "resolve_pending", other.id)
    assert (await queue_client.get_task(failed.id)).status == "pending"
    assert len(slack.named("chat.postMessage")) == posted_before
    assert not [c for c in slack.refused() if c.error != "ratelimited"]


async def test_a_stranger_clicking_a_private_list_changes_nothing(bot, slack: SlackEmulator,
                                                                  queue_client: QueueClient) -> None:
    task = await needs_human(queue_client)
    await slack.slash("review", user="USTRANGER")
    listed = await slack.wait_response(lambda r: task.short_id in texts(r))
    await slack.click("resolve_done", on=listed, user="USTRANGER")
    refusal = await slack.wait_response(lambda r: "SLACK_ALLOWED_USERS" in r.get("text", ""))
    assert refusal.get("response_type") == "ephemeral"
    assert (await queue_client.get_task(task.id)).status == "needs_human"


@pytest.mark.parametrize("channel", ["GPRIVATE", "DUSER"])
async def test_a_task_assigned_where_the_bot_cannot_post_is_reported_queued(bot, slack: SlackEmulator,
                                                                            queue_client: QueueClient,
                                                                            channel: str) -> None:
    await slack.slash(f"assign ship the release {FLAGS}", channel=channel)
    answer = await slack.wait_response(lambda r: r.get("text", "").startswith("Queued"))
    task = (await queue_client.list_tasks())[0][0]
    assert f"`{task.short_id}`" in answer["text"] and "<#CNOTIFY>" in answer["text"]
    assert "/invite @da" in answer["text"]
    card = await slack.wait_call("chat.postMessage", lambda b: b["channel"] == "CNOTIFY" and "Cancel" in texts(b))
    assert task.short_id in texts(card)
    assert [c.error for c in slack.refused("chat.postMessage")] == ["channel_not_found"]


async def test_a_confirmed_suggestion_where_the_bot_cannot_post_is_reported_queued(bot, slack: SlackEmulator,
                                                                                   queue_client: QueueClient) -> None:
    await slack.slash("assign refactor the auth module", channel="GPRIVATE")
    suggestion = await slack.wait_response(lambda r: "Suggested" in texts(r))
    await slack.click("suggest_confirm", on=suggestion)
    queued = await slack.wait_response(lambda r: r.get("replace_original") and "Queued" in r.get("text", ""))
    task = (await queue_client.list_tasks())[0][0]
    assert f"`{task.short_id}`" in queued["text"] and "<#CNOTIFY>" in queued["text"]


async def test_a_card_slack_never_answered_for_still_says_queued(make_bot, slack: SlackEmulator,
                                                                 queue_client: QueueClient) -> None:
    await make_bot(slack_timeout=1.0, notify_channel="")
    slack.inject("chat.postMessage", "stall", times=3)
    await slack.slash(f"assign ship the release {FLAGS}")
    answer = await slack.wait_response(lambda r: r.get("text", "").startswith("Queued"), timeout=20)
    task = (await queue_client.list_tasks())[0][0]
    assert f"`{task.short_id}`" in answer["text"] and "could not post its card" in answer["text"]
    assert "went wrong" not in json.dumps(slack.responses)


async def test_an_expired_response_url_falls_back_to_a_private_message(bot, slack: SlackEmulator,
                                                                       queue_client: QueueClient) -> None:
    task = await needs_human(queue_client)
    view = await note_form_from_review(slack, task)
    slack.age_response_urls(31 * 60)  # the modal stayed open over lunch
    await slack.submit(view, note_values("done by hand", "done"))
    private = await slack.wait_call("chat.postEphemeral", lambda b: "done by hand" in texts(b))
    assert private["user"] == ALLOWED and private["channel"] == "CGENERAL"
    assert [a[1:] for a in slack.response_attempts if a[1] != 200] == [(404, "expired_url")]
    assert (await queue_client.get_task(task.id)).status == "done"


async def test_task_text_never_pings_anyone(bot, slack: SlackEmulator, queue_client: QueueClient) -> None:
    hostile = "<!channel> <!here|here> <@U999|boss> <!subteam^S1> see <http://evil.example|the docs> @here & co"
    await slack.slash(f"assign {hostile} {FLAGS}")
    card = await slack.wait_call("chat.postMessage", lambda b: "Cancel" in texts(b))
    task = (await queue_client.list_tasks())[0][0]
    held = await queue_client.claim("mac-mini", ["agent_run"], agents=["claude"])
    assert held is not None
    await queue_client.report(task.id, held.lease, "needs_human", {"stderr": hostile, "error": hostile}, notes=hostile,
                        action=hostile)
    await slack.wait_call("chat.postMessage", lambda b: b.get("thread_ts") == card["ts"])
    await slack.wait_call("chat.postMessage", lambda b: b["channel"] == "CNOTIFY" and task.short_id in texts(b))
    for verb in ("review", f"show {task.short_id}", "queue"):
        envelope = await slack.slash(verb)
        await slack.wait_ack(envelope)
    await slack.wait_response(lambda r: r.get("text", "").startswith("Queue"))
    await slack.wait_response(lambda r: r.get("text") == task.short_id)
    shown = [m for m in slack.messages.values()]
    assert len(shown) >= 6
    for message in shown:
        assert set(slack_limits.pings(message.text, message.blocks)) <= {f"@{ALLOWED}"}, texts(message)
        assert slack_limits.links(message.text, message.blocks) == [], texts(message)
    assert "<!channel> <!here|here> <@U999|boss>" in seen(card)


async def test_the_requester_is_mentioned_in_the_thread_when_needed(bot, slack: SlackEmulator,
                                                                    queue_client: QueueClient) -> None:
    await slack.slash(f"assign ship the release {FLAGS}")
    card = await slack.wait_call("chat.postMessage", lambda b: "Cancel" in texts(b))
    task = (await queue_client.list_tasks())[0][0]
    held = await queue_client.claim("mac-mini", ["agent_run"], agents=["claude"])
    assert held is not None
    await queue_client.report(task.id, held.lease, "needs_human", {}, notes="needs a 2FA code",
                        action="type the code on mac-mini")
    reply = await slack.wait_call("chat.postMessage", lambda b: b.get("thread_ts") == card["ts"])
    assert set(slack_limits.pings(reply["text"], reply.get("blocks", []))) == {f"@{ALLOWED}"}
    assert "needs a 2FA code" in seen(reply)
    await slack.click("resolve_done", on=reply)
    await slack.wait_call("chat.update", lambda b: b.get("ts") == reply["ts"] and "resolved as done" in texts(b))


async def test_bulk_resolve_acts_on_exactly_the_tasks_it_showed(bot, slack: SlackEmulator,
                                                                queue_client: QueueClient) -> None:
    shown = [await needs_human(queue_client) for _ in range(3)]
    await slack.slash("resolve all done")
    preview = await slack.wait_response(lambda r: "3 task(s) in needs_human will become done" in r.get("text", ""))
    later = [await needs_human(queue_client, notes="arrived after the preview") for _ in range(2)]
    await slack.click("bulk_confirm", on=preview)
    await slack.wait_response(lambda r: r.get("text", "").startswith("3 task(s) moved"))
    assert [(await queue_client.get_task(t.id)).status for t in shown] == ["done"] * 3
    assert [(await queue_client.get_task(t.id)).status for t in later] == ["needs_human"] * 2


async def test_the_terminal_confirms_the_same_tasks_it_previewed(queue_client: QueueClient) -> None:
    shown = [await needs_human(queue_client) for _ in range(2)]
    layer = CommandLayer(queue_client)
    preview = await layer.run(grammar.parse("resolve all pending"))
    later = await needs_human(queue_client)
    done = await layer.resolve_exact(preview.task_ids, preview.status, user="tester")
    assert (done.count, done.skipped) == (2, 0)
    assert [(await queue_client.get_task(t.id)).status for t in shown] == ["pending"] * 2
    assert (await queue_client.get_task(later.id)).status == "needs_human"


async def test_a_note_form_submitted_by_someone_not_allowed_shows_the_refusal_in_the_form(
        bot, slack: SlackEmulator, queue_client: QueueClient) -> None:
    task = await needs_human(queue_client)
    view = await note_form_from_review(slack, task)
    envelope = await slack.submit(view, note_values("sneaky", "done"), user="USTRANGER")
    await slack.wait_ack(envelope)
    assert envelope.ack_payload["response_action"] == "errors"
    assert "SLACK_ALLOWED_USERS" in envelope.ack_payload["errors"]["note"]
    assert (await queue_client.get_task(task.id)).status == "needs_human"
