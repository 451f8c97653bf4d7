"""The real Bolt app in socket mode against a local Slack emulator, with a real queue behind."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from conftest import SECRET, QueueServer, wait_until
from da import fleet as fleet_module
from da.bot.slack.app import BotProcess
from da.bot.slack.settings import BotSettings
from da.bot.slack.state import BotState
from da.queue.client import QueueClient
from slack_emulator import SlackEmulator

FLEET = fleet_module.parse_fleet({"machines": {
    "mac-mini": {"os": "macos", "capabilities": ["ios_build", "agent_run", "run_script"], "agents": ["claude"]},
    "thinkpad-x1": {"os": "linux", "capabilities": ["android_build", "agent_run", "lint"], "agents": ["gemini"]},
}}, "test")
ALLOWED, STRANGER = "UALLOWED", "USTRANGER"


@pytest.fixture
async def slack() -> AsyncIterator[SlackEmulator]:
    emulator = SlackEmulator()
    await emulator.start()
    yield emulator
    await emulator.stop()


@pytest.fixture
async def queue(make_server) -> QueueServer:
    return await make_server(fleet=FLEET)


@pytest.fixture
async def client(queue: QueueServer) -> AsyncIterator[QueueClient]:
    async with QueueClient(queue.url, SECRET) as queue_client:
        yield queue_client


@pytest.fixture
async def make_bot(slack: SlackEmulator, queue: QueueServer,
                   tmp_path: Path) -> AsyncIterator[Callable[..., Awaitable[BotProcess]]]:
    running: list[BotProcess] = []

    async def factory(**overrides: Any) -> BotProcess:
        values: dict[str, Any] = {"bot_token": slack.bot_token, "app_token": slack.app_token,
                                  "queue_urls": (queue.url,), "secret": SECRET, "allowed_users": frozenset({ALLOWED}),
                                  "notify_channel": "CNOTIFY", "api_url": slack.api_url,
                                  "state_path": tmp_path / "bot-state.json", "ping_interval": 1.0,
                                  "progress_every": 0.3}
        values.update(overrides)
        process = BotProcess(BotSettings(**values))
        await process.start()
        running.append(process)
        return process

    yield factory
    for process in running:
        await process.stop()


@pytest.fixture
async def bot(make_bot) -> BotProcess:
    return await make_bot()


def texts(body: dict[str, Any]) -> str:
    """All the text a message shows: its fallback and every block's text."""
    return json.dumps(body.get("blocks", [])) + body.get("text", "")


def button_value(body: dict[str, Any], action_id: str) -> str:
    for block in body.get("blocks", []):
        for element in block.get("elements", []) or []:
            if element.get("action_id") == action_id:
                return element["value"]
    raise AssertionError(f"no {action_id} button in {body}")


async def test_status_answers_within_three_seconds(bot, slack: SlackEmulator) -> None:
    envelope = await slack.slash("status")
    assert await slack.wait_ack(envelope) < 3.0
    response = await slack.wait_response(lambda r: "mac-mini" in texts(r))
    assert response["response_type"] == "ephemeral" and "thinkpad-x1" in texts(response)


async def test_malformed_commands_answer_with_the_usage_line(bot, slack: SlackEmulator) -> None:
    await slack.slash("assign")
    response = await slack.wait_response(lambda r: "usage:" in r.get("text", ""))
    assert response["text"] == ("assign needs a description of the work.\nusage: `/da assign <description> "
                                "[--machine=X] [--agent=Y] [--type=Z] [--cwd=PATH] [--priority=N] [--yes] "
                                "[--wait-for-machine]`")
    await slack.slash("frobnicate now")
    assert (await slack.wait_response(lambda r: "frobnicate" in r.get("text", "")))["text"].startswith(
        "unknown command 'frobnicate'")
    await slack.slash("run claude hi")
    assert "unknown command 'run'" in (await slack.wait_response(lambda r: "'run'" in r.get("text", "")))["text"]


async def test_assign_with_all_flags_posts_a_task_card(bot, slack: SlackEmulator, client: QueueClient) -> None:
    await slack.slash("assign fix the flaky login --machine=mac-mini --agent=claude --type=agent_run")
    card = await slack.wait_call("chat.postMessage", lambda b: "agent_run" in texts(b))
    assert card["channel"] == "CGENERAL" and "Cancel" in texts(card)
    tasks, _ = await client.list_tasks()
    assert len(tasks) == 1 and tasks[0].created_by == ALLOWED and tasks[0].target_machine == "mac-mini"
    assert tasks[0].payload == {"agent": "claude", "prompt": "fix the flaky login"}


async def test_a_refused_user_may_read_but_not_change(bot, slack: SlackEmulator, client: QueueClient) -> None:
    await slack.slash("assign x --machine=mac-mini --agent=claude --type=agent_run", user=STRANGER)
    refusal = await slack.wait_response(lambda r: "SLACK_ALLOWED_USERS" in r.get("text", ""))
    assert refusal["response_type"] == "ephemeral" and f"<@{STRANGER}>" in refusal["text"]
    assert (await client.list_tasks())[0] == []
    await slack.slash("queue", user=STRANGER)
    assert (await slack.wait_response(lambda r: r.get("text") == "No tasks."))["response_type"] == "ephemeral"


async def test_suggestion_confirm_creates_once(bot, slack: SlackEmulator, client: QueueClient) -> None:
    await slack.slash("assign android release build --cwd=/src/app")
    suggestion = await slack.wait_response(lambda r: "Suggested" in texts(r))
    assert "`android_build` on *thinkpad-x1*" in texts(suggestion)
    value = button_value(suggestion, "suggest_confirm")
    first = await slack.click("suggest_confirm", value, message=suggestion)
    await slack.wait_response(lambda r: r.get("text", "").startswith("Queued"))
    redelivered = await slack.click("suggest_confirm", value, message=suggestion, envelope_id=first.envelope_id)
    await slack.wait_ack(redelivered)
    await slack.wait_response(lambda r: "already confirmed" in r.get("text", ""))
    tasks, _ = await client.list_tasks()
    assert [(t.type, t.target_machine, t.payload["cwd"]) for t in tasks] == [
        ("android_build", "thinkpad-x1", "/src/app")]


async def test_menus_change_the_suggestion_before_confirming(bot, slack: SlackEmulator, client: QueueClient) -> None:
    await slack.slash("assign refactor the auth module")
    suggestion = await slack.wait_response(lambda r: "Suggested" in texts(r))
    assert "on *mac-mini* with *claude*" in texts(suggestion)
    await slack.click("suggest_machine", "", message=suggestion, selected="thinkpad-x1")
    changed = await slack.wait_response(lambda r: r.get("replace_original") and "*thinkpad-x1*" in texts(r))
    await slack.click("suggest_agent", "", message=changed, selected="gemini")
    changed = await slack.wait_response(lambda r: r.get("replace_original") and "*gemini*" in texts(r))
    await slack.click("suggest_confirm", button_value(changed, "suggest_confirm"), message=changed)
    await slack.wait_response(lambda r: r.get("text", "").startswith("Queued"))
    tasks, _ = await client.list_tasks()
    assert (tasks[0].target_machine, tasks[0].agent, tasks[0].type) == ("thinkpad-x1", "gemini", "agent_run")


async def needs_human(client: QueueClient, notes: str = "claude is not logged in on mac-mini") -> Any:
    task = await client.create_task("agent_run", {"agent": "claude", "prompt": "x"}, target_machine="mac-mini")
    held = await client.claim("mac-mini", ["agent_run"], agents=["claude"])
    await client.report(task.id, held.lease, "needs_human", {"stderr": "Error: not logged in"}, notes=notes,
                        action="log in on mac-mini: run `claude /login` there, then retry")
    return task


async def test_review_buttons_resolve_once_and_say_who(bot, slack: SlackEmulator, client: QueueClient) -> None:
    task = await needs_human(client)
    await slack.slash("review")
    review = await slack.wait_response(lambda r: task.short_id in texts(r) and "Retry" in texts(r))
    assert "claude /login" in texts(review) and "not logged in" in texts(review)
    value = button_value(review, "resolve_done")
    await slack.click("resolve_done", value, message=review)
    replaced = await slack.wait_response(lambda r: r.get("replace_original") and "resolved as done" in r["text"])
    assert f"<@{ALLOWED}>" in replaced["text"] and "resolve_done" not in texts(replaced)
    assert (await client.get_task(task.id)).status == "done"
    await slack.click("resolve_failed", value, message=review, user=ALLOWED)
    again = await slack.wait_response(lambda r: r.get("text", "").startswith("Nothing changed"))
    assert f"set by {ALLOWED}" in again["text"]
    assert (await client.get_task(task.id)).status == "done"


async def test_note_modal_resolves_with_the_note(bot, slack: SlackEmulator, client: QueueClient) -> None:
    task = await needs_human(client)
    await slack.click("note_open", json.dumps({"id": task.id}), ts="111.222")
    opened = await slack.wait_call("views.open", lambda b: True)
    view = opened["view"]
    assert view["callback_id"] == "note_submit"
    await slack.submit("note_submit", view["private_metadata"], {
        "note": {"text": {"type": "plain_text_input", "value": "logged in by hand"}},
        "status": {"choice": {"type": "static_select", "selected_option": {"value": "pending"}}}})
    await slack.wait_call("chat.update", lambda b: "re-queued" in b.get("text", ""))
    settled = await client.get_task(task.id)
    assert settled.status == "pending" and settled.notes == "logged in by hand"


async def test_notifications_follow_the_feed_and_thread_done_under_the_card(bot, slack: SlackEmulator,
                                                                            client: QueueClient) -> None:
    await slack.slash("assign ship it --machine=mac-mini --agent=claude --type=agent_run")
    card = await slack.wait_call("chat.postMessage", lambda b: "Cancel" in texts(b))
    card_ts = card["ts"]
    task = (await client.list_tasks())[0][0]
    held = await client.claim("mac-mini", ["agent_run"], agents=["claude"])
    await client.start(task.id, held.lease)
    await client.heartbeat(task.id, held.lease, progress="editing auth.py")
    await slack.wait_call("chat.update", lambda b: b.get("ts") == card_ts and "editing auth.py" in texts(b))
    await client.report(task.id, held.lease, "done", {"returncode": 0}, notes="claude finished in 3.0s")
    reply = await slack.wait_call("chat.postMessage", lambda b: b.get("thread_ts") == card_ts)
    assert task.short_id in reply["text"] and "claude finished" in reply["text"]
    failing = await needs_human(client, notes="widget missing")
    alert = await slack.wait_call("chat.postMessage", lambda b: b.get("channel") == "CNOTIFY" and
                                  failing.short_id in texts(b))
    assert "resolve_done" in texts(alert) and "widget missing" in texts(alert)


async def test_restart_mid_feed_misses_nothing_and_repeats_nothing(make_bot, slack: SlackEmulator,
                                                                   client: QueueClient) -> None:
    first = await make_bot()
    before = await needs_human(client, notes="before the restart")
    await slack.wait_call("chat.postMessage", lambda b: before.short_id in texts(b))
    await first.stop()
    during = await needs_human(client, notes="while the bot was down")
    await make_bot()
    await slack.wait_call("chat.postMessage", lambda b: during.short_id in texts(b))
    after = await needs_human(client, notes="after the restart")
    await slack.wait_call("chat.postMessage", lambda b: after.short_id in texts(b))
    posts = [b for b in slack.named("chat.postMessage") if b.get("channel") == "CNOTIFY"]
    for task in (before, during, after):
        assert sum(task.short_id in texts(p) for p in posts) == 1


async def test_the_notifier_follows_a_feed_that_went_backwards(make_bot, slack: SlackEmulator, client: QueueClient,
                                                              tmp_path: Path) -> None:
    # Saved against a newer copy of the queue than the one now running (an older backup was restored).
    BotState(tmp_path / "bot-state.json", last_event=1000).save()
    await make_bot()
    task = await needs_human(client, notes="after the restore")
    await slack.wait_call("chat.postMessage", lambda b: task.short_id in texts(b))
    assert (BotState.load(tmp_path / "bot-state.json").last_event or 0) < 1000


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


async def test_bulk_resolve_shows_the_count_then_confirms(bot, slack: SlackEmulator, client: QueueClient) -> None:
    tasks = [await needs_human(client) for _ in range(3)]
    await slack.slash("resolve all done")
    preview = await slack.wait_response(lambda r: "3 task(s) in needs_human will become done" in r.get("text", ""))
    assert [(await client.get_task(t.id)).status for t in tasks] == ["needs_human"] * 3
    value = button_value(preview, "bulk_confirm")
    first = await slack.click("bulk_confirm", value, message=preview)
    await slack.wait_response(lambda r: r.get("text", "").startswith("3 task(s) moved"))
    await slack.click("bulk_confirm", value, message=preview, envelope_id=first.envelope_id)
    await slack.wait_response(lambda r: r.get("text") == "Already done.")
    assert [(await client.get_task(t.id)).status for t in tasks] == ["done"] * 3


async def test_cancel_button_stops_a_running_task(bot, slack: SlackEmulator, client: QueueClient) -> None:
    await slack.slash("assign long job --machine=mac-mini --agent=claude --type=agent_run")
    card = await slack.wait_call("chat.postMessage", lambda b: "Cancel" in texts(b))
    task = (await client.list_tasks())[0][0]
    ts = card["ts"]
    await slack.click("cancel_task", button_value(card, "cancel_task"), message=card, ts=ts)
    await slack.wait_call("chat.update", lambda b: b.get("ts") == ts and "cancelled by" in texts(b))
    assert (await client.get_task(task.id)).status == "cancelled"


async def test_long_lists_stay_inside_slacks_limits(bot, slack: SlackEmulator, client: QueueClient) -> None:
    for _ in range(20):
        task = await client.create_task("agent_run", {"agent": "claude", "prompt": "x"})
        held = await client.claim("mac-mini", ["agent_run"], agents=["claude"])
        await client.report(task.id, held.lease, "needs_human", {"stderr": "boom\n" * 3000}, notes="n" * 3900,
                            action="a" * 3900)
    await slack.slash("review")
    review = await slack.wait_response(lambda r: "more; see" in texts(r))
    assert len(review["blocks"]) <= 50
    for block in review["blocks"]:
        text = (block.get("text") or {}).get("text", "")
        assert len(text) <= 3000
        for element in block.get("elements", []) or []:
            assert len(element.get("value", "")) <= 2000


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


async def test_secrets_never_reach_slack(bot, slack: SlackEmulator, queue: QueueServer, client: QueueClient,
                                         tmp_path: Path) -> None:
    from worker_support import WorkerProcess, wait_for_status

    leak = tmp_path / "leak.txt"
    leak.write_text(f"{SECRET}\n{slack.bot_token}\n{slack.app_token}\n")
    worker = WorkerProcess(queue.url, tmp_path / "w", SLACK_BOT_TOKEN=slack.bot_token,
                           SLACK_APP_TOKEN=slack.app_token)
    worker.start()
    try:
        task = await client.create_task("run_script", {"script": f"cat {leak}; cat {leak} >&2; exit 3"})
        await wait_for_status(client, task.id)
    finally:
        worker.kill()
    await slack.wait_call("chat.postMessage", lambda b: task.short_id in texts(b))
    await slack.slash("review")
    await slack.slash("failures")
    await slack.wait_response(lambda r: task.short_id in texts(r))
    await slack.slash(f"show {task.short_id}")
    shown = await slack.wait_response(lambda r: "[redacted]" in texts(r))
    assert task.short_id in texts(shown)
    everything = json.dumps(slack.calls) + json.dumps(slack.responses)
    for secret in (SECRET, slack.bot_token, slack.app_token):
        assert secret not in everything
