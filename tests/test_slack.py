"""The real Bolt app in socket mode against a local Slack emulator, with a real queue behind."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from da.queue.client import QueueClient
from tests.support.server import SECRET, QueueServer
from tests.support.slack import (
    ALLOWED,
    STRANGER,
    button_value,
    needs_human,
    note_form_from_review,
    note_values,
    seen,
    texts,
)
from tests.support.slack_emulator import SlackEmulator
from tests.support.waiting import wait_until


async def test_status_answers_within_three_seconds(bot, slack: SlackEmulator) -> None:
    envelope = await slack.slash("status")
    assert await slack.wait_ack(envelope) < 3.0
    response = await slack.wait_response(lambda r: "mac-mini" in texts(r))
    assert response["response_type"] == "ephemeral" and "thinkpad-x1" in texts(response)
    assert "lacks some scopes" not in texts(response), "the manifest's scopes are all granted"


async def test_malformed_commands_answer_with_the_usage_line(bot, slack: SlackEmulator) -> None:
    await slack.slash("assign")
    response = await slack.wait_response(lambda r: "usage:" in r.get("text", ""))
    assert "&lt;description&gt;" in response["text"]  # a bare <description> would be read as a link
    assert seen(response) == ("assign needs a description of the work.\nusage: `/da assign <description> "
                                "[--machine=X] [--agent=Y] [--type=Z] [--cwd=PATH] [--priority=N] [--repo=PATH ...] "
                                "[--base=BRANCH] [--yes] [--wait-for-machine] [--push] [--pr]`")
    await slack.slash("frobnicate now")
    assert (await slack.wait_response(lambda r: "frobnicate" in r.get("text", "")))["text"].startswith(
        "unknown command 'frobnicate'")
    await slack.slash("run claude hi")
    assert "unknown command 'run'" in (await slack.wait_response(lambda r: "'run'" in r.get("text", "")))["text"]


async def test_assign_with_all_flags_posts_a_task_card(bot, slack: SlackEmulator, queue_client: QueueClient) -> None:
    await slack.slash("assign fix the flaky login --machine=mac-mini --agent=claude --type=agent_run")
    card = await slack.wait_call("chat.postMessage", lambda b: "agent_run" in texts(b))
    assert card["channel"] == "CGENERAL" and "Cancel" in texts(card)
    tasks, _ = await queue_client.list_tasks()
    assert len(tasks) == 1 and tasks[0].created_by == ALLOWED and tasks[0].target_machine == "mac-mini"
    assert tasks[0].payload == {"agent": "claude", "prompt": "fix the flaky login"}


async def test_a_refused_user_may_read_but_not_change(bot, slack: SlackEmulator, queue_client: QueueClient) -> None:
    await slack.slash("assign x --machine=mac-mini --agent=claude --type=agent_run", user=STRANGER)
    refusal = await slack.wait_response(lambda r: "SLACK_ALLOWED_USERS" in r.get("text", ""))
    assert refusal["response_type"] == "ephemeral" and f"<@{STRANGER}>" in refusal["text"]
    assert (await queue_client.list_tasks())[0] == []
    await slack.slash("queue", user=STRANGER)
    assert (await slack.wait_response(lambda r: r.get("text") == "No tasks."))["response_type"] == "ephemeral"


async def test_suggestion_confirm_creates_once(bot, slack: SlackEmulator, queue_client: QueueClient) -> None:
    await slack.slash("assign android release build --cwd=/src/app")
    suggestion = await slack.wait_response(lambda r: "Suggested" in texts(r))
    assert "`android_build` on *thinkpad-x1*" in texts(suggestion)
    await slack.click("suggest_confirm", on=suggestion)
    await slack.wait_response(lambda r: r.get("text", "").startswith("Queued"))
    # A double click: the second comes from the suggestion as the user still saw it.
    await slack.click("suggest_confirm", on=suggestion)
    await slack.wait_response(lambda r: "already confirmed" in r.get("text", ""))
    tasks, _ = await queue_client.list_tasks()
    assert [(t.type, t.target_machine, t.payload["cwd"]) for t in tasks] == [
        ("android_build", "thinkpad-x1", "/src/app")]


async def test_menus_change_the_suggestion_before_confirming(bot, slack: SlackEmulator,
                                                             queue_client: QueueClient) -> None:
    await slack.slash("assign refactor the auth module")
    suggestion = await slack.wait_response(lambda r: "Suggested" in texts(r))
    assert "on *mac-mini* with *claude*" in texts(suggestion)
    await slack.click("suggest_machine", on=suggestion, selected="thinkpad-x1")
    changed = await slack.wait_response(lambda r: r.get("replace_original") and "*thinkpad-x1*" in texts(r))
    await slack.click("suggest_agent", on=changed, selected="gemini")
    changed = await slack.wait_response(lambda r: r.get("replace_original") and "*gemini*" in texts(r))
    await slack.click("suggest_confirm", on=changed)
    await slack.wait_response(lambda r: r.get("text", "").startswith("Queued"))
    tasks, _ = await queue_client.list_tasks()
    assert (tasks[0].target_machine, tasks[0].agent, tasks[0].type) == ("thinkpad-x1", "gemini", "agent_run")


async def test_review_buttons_resolve_once_and_say_who(bot, slack: SlackEmulator, queue_client: QueueClient) -> None:
    task = await needs_human(queue_client)
    other = await needs_human(queue_client, notes="widget missing")
    await slack.slash("review")
    review = await slack.wait_response(lambda r: task.short_id in texts(r) and other.short_id in texts(r))
    assert "claude /login" in texts(review) and "not logged in" in texts(review)
    assert slack.message_of(review)[0].ephemeral
    public_before = len(slack.channel_messages("CGENERAL"))
    await slack.click("resolve_done", on=review, value=button_value(review, "resolve_done", task.id))
    replaced = await slack.wait_response(lambda r: r.get("replace_original") and "resolved as done" in texts(r))
    assert f"<@{ALLOWED}>" in texts(replaced)
    # The list is rebuilt from the queue: the settled task has no buttons left, the other keeps its own.
    assert button_value(replaced, "resolve_done", other.id)
    with pytest.raises(AssertionError):
        button_value(replaced, "resolve_done", task.id)
    assert (await queue_client.get_task(task.id)).status == "done"
    assert len(slack.channel_messages("CGENERAL")) == public_before
    await slack.click("resolve_failed", on=review, value=button_value(review, "resolve_failed", task.id))
    again = await slack.wait_response(lambda r: r.get("text", "").startswith("Nothing changed"))
    assert f"set by {ALLOWED}" in again["text"]
    assert (await queue_client.get_task(task.id)).status == "done"


async def test_note_modal_resolves_with_the_note(bot, slack: SlackEmulator, queue_client: QueueClient) -> None:
    task = await needs_human(queue_client)
    alert = await slack.wait_call("chat.postMessage", lambda b: b["channel"] == "CNOTIFY" and task.short_id in texts(b))
    await slack.click("note_open", on=alert)
    opened = await slack.wait_call("views.open", lambda b: True)
    assert opened["view"]["callback_id"] == "note_submit"
    view = next(iter(slack.views.values()))
    await slack.submit(view, note_values("logged in by hand", "pending"))
    await slack.wait_call("chat.update", lambda b: b.get("ts") == alert["ts"] and "re-queued" in texts(b))
    settled = await queue_client.get_task(task.id)
    assert settled.status == "pending" and settled.notes == "logged in by hand"


async def test_note_modal_from_the_private_review_list_answers_in_place(bot, slack: SlackEmulator,
                                                                       queue_client: QueueClient) -> None:
    task = await needs_human(queue_client)
    view = await note_form_from_review(slack, task)
    await slack.submit(view, note_values("fixed the token", "done"))
    replaced = await slack.wait_response(lambda r: r.get("replace_original") and "fixed the token" in texts(r))
    assert "resolved as done" in texts(replaced)
    assert slack.message_of(replaced)[0].ephemeral
    assert (await queue_client.get_task(task.id)).notes == "fixed the token"
    assert not slack.refused("chat.update")


async def test_notifications_follow_the_feed_and_thread_done_under_the_card(bot, slack: SlackEmulator,
                                                                            queue_client: QueueClient) -> None:
    await slack.slash("assign ship it --machine=mac-mini --agent=claude --type=agent_run")
    card = await slack.wait_call("chat.postMessage", lambda b: "Cancel" in texts(b))
    card_ts = card["ts"]
    task = (await queue_client.list_tasks())[0][0]
    held = await queue_client.claim("mac-mini", ["agent_run"], agents=["claude"])
    assert held is not None
    await queue_client.start(task.id, held.lease)
    await queue_client.heartbeat(task.id, held.lease, progress="editing auth.py")
    await slack.wait_call("chat.update", lambda b: b.get("ts") == card_ts and "editing auth.py" in texts(b))
    await queue_client.report(task.id, held.lease, "done", {"returncode": 0}, notes="claude finished in 3.0s")
    reply = await slack.wait_call("chat.postMessage", lambda b: b.get("thread_ts") == card_ts)
    assert task.short_id in reply["text"] and "claude finished" in reply["text"]
    failing = await needs_human(queue_client, notes="widget missing")
    alert = await slack.wait_call("chat.postMessage", lambda b: b.get("channel") == "CNOTIFY" and
                                  failing.short_id in texts(b))
    assert "resolve_done" in texts(alert) and "widget missing" in texts(alert)


async def test_restart_mid_feed_misses_nothing_and_repeats_nothing(make_bot, slack: SlackEmulator,
                                                                   queue_client: QueueClient) -> None:
    first = await make_bot()
    before = await needs_human(queue_client, notes="before the restart")
    await slack.wait_call("chat.postMessage", lambda b: before.short_id in texts(b))
    await first.stop()
    during = await needs_human(queue_client, notes="while the bot was down")
    await make_bot()
    await slack.wait_call("chat.postMessage", lambda b: during.short_id in texts(b))
    after = await needs_human(queue_client, notes="after the restart")
    await slack.wait_call("chat.postMessage", lambda b: after.short_id in texts(b))
    posts = [b for b in slack.named("chat.postMessage") if b.get("channel") == "CNOTIFY"]
    for task in (before, during, after):
        assert sum(task.short_id in texts(p) for p in posts) == 1


async def test_a_bot_stopped_while_slack_takes_a_post_does_not_post_it_again(make_bot, slack: SlackEmulator,
                                                                            queue_client: QueueClient) -> None:
    first = await make_bot()
    slack.inject("chat.postMessage", "slow", after=True)
    task = await needs_human(queue_client, notes="posted as the bot stops")
    await slack.wait_call("chat.postMessage", lambda b: task.short_id in texts(b))
    await first.stop()  # while Slack's answer to that post is still on its way
    await make_bot()
    later = await needs_human(queue_client, notes="after the restart")
    await slack.wait_call("chat.postMessage", lambda b: later.short_id in texts(b))
    posts = [b for b in slack.named("chat.postMessage") if b.get("channel") == "CNOTIFY"]
    assert sum(task.short_id in texts(p) for p in posts) == 1


async def test_reconnects_after_a_dropped_socket_and_a_disconnect_notice(bot, slack: SlackEmulator) -> None:
    await slack.connected(1)
    await slack.drop()
    await slack.connected(2)
    envelope = await slack.slash("help")
    assert await slack.wait_ack(envelope, timeout=10) < 3.0
    await slack.disconnect_message()
    await slack.connected(3)
    envelope = await slack.slash("status")
    await slack.wait_ack(envelope, timeout=10)
    await slack.wait_response(lambda r: "mac-mini" in texts(r))


async def test_a_queue_that_is_down_gets_a_plain_answer(make_bot, slack: SlackEmulator) -> None:
    await make_bot(queue_urls=("http://127.0.0.1:9",))
    envelope = await slack.slash("queue")
    assert await slack.wait_ack(envelope) < 3.0
    response = await slack.wait_response(lambda r: "unreachable" in r.get("text", ""))
    assert response["text"] == "queue unreachable at http://127.0.0.1:9."


async def test_bulk_resolve_shows_the_tasks_then_confirms_once(bot, slack: SlackEmulator,
                                                               queue_client: QueueClient) -> None:
    tasks = [await needs_human(queue_client) for _ in range(3)]
    await slack.slash("resolve all done")
    preview = await slack.wait_response(lambda r: "3 task(s) in needs_human will become done" in r.get("text", ""))
    assert all(t.short_id in texts(preview) for t in tasks)
    assert [(await queue_client.get_task(t.id)).status for t in tasks] == ["needs_human"] * 3
    await slack.click("bulk_confirm", on=preview)
    await slack.wait_response(lambda r: r.get("text", "").startswith("3 task(s) moved"))
    await slack.click("bulk_confirm", on=preview)
    await slack.wait_response(lambda r: "no longer open" in r.get("text", ""))
    assert [(await queue_client.get_task(t.id)).status for t in tasks] == ["done"] * 3


async def test_cancel_button_stops_a_running_task(bot, slack: SlackEmulator, queue_client: QueueClient) -> None:
    await slack.slash("assign long job --machine=mac-mini --agent=claude --type=agent_run")
    card = await slack.wait_call("chat.postMessage", lambda b: "Cancel" in texts(b))
    task = (await queue_client.list_tasks())[0][0]
    await slack.click("cancel_task", on=card)
    await slack.wait_call("chat.update", lambda b: b.get("ts") == card["ts"] and "cancelled by" in texts(b))
    assert (await queue_client.get_task(task.id)).status == "cancelled"


async def test_long_lists_stay_inside_slacks_limits(bot, slack: SlackEmulator, queue_client: QueueClient) -> None:
    for _ in range(20):
        await needs_human(queue_client, notes="n" * 3900, stderr="boom\n" * 3000)
    await slack.slash("review")
    review = await slack.wait_response(lambda r: "`da review` in the terminal lists all" in texts(r))
    shown = sum('"resolve_done"' in json.dumps(block) for block in review["blocks"])
    assert 1 <= shown < 20 and f"{20 - shown} more" in texts(review)
    assert not [a for a in slack.response_attempts if a[1] != 200]


async def test_a_refused_bot_token_is_one_line_at_start(make_bot, slack: SlackEmulator) -> None:
    from da.config import ConfigError

    slack.refuse_auth = True
    with pytest.raises(ConfigError, match=r"Slack refused SLACK_BOT_TOKEN \(invalid_auth\)"):
        await make_bot()


async def test_watchdog_rebuilds_a_wedged_client(bot, slack: SlackEmulator) -> None:
    await slack.connected(1)
    assert bot.handler is not None
    wedged = bot.handler.client

    async def never_connected() -> bool:
        return False

    wedged.is_connected = never_connected  # the SDK's "Session is closed" loop looks like this from outside

    async def rebuilt() -> bool:
        return bot.rebuilds == 1 and bot.handler is not None and bot.handler.client is not wedged

    await wait_until(rebuilt, timeout=15)
    await slack.connected(2)
    envelope = await slack.slash("status")
    assert await slack.wait_ack(envelope) < 3.0


async def test_secrets_never_reach_slack(bot, slack: SlackEmulator, queue: QueueServer, queue_client: QueueClient,
                                         tmp_path: Path) -> None:
    from tests.support.workers import WorkerProcess, wait_for_status

    leak = tmp_path / "leak.txt"
    leak.write_text(f"{SECRET}\n{slack.bot_token}\n{slack.app_token}\n")
    worker = WorkerProcess(queue.url, tmp_path / "w", SLACK_BOT_TOKEN=slack.bot_token,
                           SLACK_APP_TOKEN=slack.app_token)
    worker.start()
    try:
        task = await queue_client.create_task("run_script", {"script": f"cat {leak}; cat {leak} >&2; exit 3"})
        await wait_for_status(queue_client, task.id)
    finally:
        worker.kill()
    await slack.wait_call("chat.postMessage", lambda b: task.short_id in texts(b))
    envelopes = [await slack.slash("review"), await slack.slash("failures"), await slack.slash(f"show {task.short_id}")]
    await slack.wait_response(lambda r: r.get("text", "").startswith("Failed"))
    shown = await slack.wait_response(lambda r: "[redacted]" in texts(r) and r.get("text") == task.short_id)
    for envelope in envelopes:
        await slack.wait_ack(envelope)
    assert task.short_id in texts(shown)
    everything = json.dumps([c.args for c in slack.calls]) + json.dumps(slack.responses)
    for secret in (SECRET, slack.bot_token, slack.app_token):
        assert secret not in everything
