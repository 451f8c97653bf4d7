"""A task's thread is a conversation with its agent: the real bot in socket mode against the
strict emulator, the real queue, and a real `da worker` named mac-mini running the fake claude
(which prints a session id, keeps sessions per folder and records its argv)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from da import agents
from da.queue.client import ClaimedTask, QueueClient
from da.queue.models import Task
from tests.support.server import SECRET, QueueServer
from tests.support.slack import ALLOWED, FLEET, STRANGER, needs_human, seen, texts
from tests.support.slack_emulator import LEGACY_SCOPES, Message, SlackEmulator
from tests.support.waiting import wait_until
from tests.support.workers import WorkerProcess, wait_for_status

pytestmark = pytest.mark.long

FLAGS = "--machine=mac-mini --agent=claude --type=agent_run"


@pytest.fixture
async def worker(queue: QueueServer, tmp_path: Path, make_worker) -> WorkerProcess:
    return make_worker(queue.url, tmp_path, MACHINE_NAME="mac-mini", WORKER_AGENTS="claude,codex",
                       WORKER_CAPABILITIES="agent_run,run_script")


def calls(tmp_path: Path) -> list[dict[str, Any]]:
    """Every fake agent start and end, in order."""
    log = tmp_path / "bin" / "calls.jsonl"
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def said(task: Task) -> dict[str, Any]:
    """What the fake agent says it was asked (its answer is that, as JSON)."""
    return json.loads(task.result["answer"])  # type: ignore[index]


async def tasks_of(queue_client: QueueClient) -> list[Task]:
    """Every task, oldest first."""
    found, _ = await queue_client.list_tasks(limit=100)
    return sorted(found, key=lambda t: t.created_at)


async def card_of(slack: SlackEmulator, task: Task) -> Message:
    """The card da posted for a task."""
    async def posted() -> Message | None:
        return next((m for m in slack.messages.values() if m.by_bot_token and not m.ephemeral
                     and f"task:{task.id}:card" in json.dumps(m.blocks)), None)
    return await wait_until(posted)


async def answer_in(slack: SlackEmulator, channel: str, root: str, task: Task) -> Message:
    """The answer of `task` posted in the thread `root`."""
    async def posted() -> Message | None:
        return next((m for m in slack.thread(channel, root)
                     if "answer_head" in json.dumps(m.blocks) and task.short_id in m.text), None)
    return await wait_until(posted, timeout=20)


async def first_turn(slack: SlackEmulator, queue_client: QueueClient, prompt: str) -> tuple[Task, Message]:
    """`/da assign` a claude task on mac-mini; the finished task and its card."""
    await slack.slash(f"assign {prompt} {FLAGS}")
    task = await wait_until(lambda: _newest(queue_client))
    done = await wait_for_status(queue_client, task.id)
    assert done.status == "done", done.notes
    return done, await card_of(slack, done)


async def _newest(queue_client: QueueClient) -> Task | None:
    found = await tasks_of(queue_client)
    return found[-1] if found else None


async def test_a_reply_in_the_cards_thread_resumes_the_session_on_the_same_machine(
        bot, worker, slack: SlackEmulator, queue_client: QueueClient, tmp_path: Path) -> None:
    first, card = await first_turn(slack, queue_client, "find the flaky test")
    answer = await answer_in(slack, "CGENERAL", card.ts, first)
    assert '"prompt": "find the flaky test"' in seen(answer)
    session = first.result["session_id"]  # type: ignore[index]

    await slack.say("now fix it & <b>run</b> it", thread_ts=card.ts)
    follow = await wait_until(lambda: _newest_other(queue_client, {first.id}))
    assert follow.payload["resume"] == session and "context" not in follow.payload
    assert follow.payload["prompt"] == "now fix it & <b>run</b> it"
    assert follow.target_machine == "mac-mini" and follow.agent == "claude" and follow.created_by == ALLOWED
    follow = await wait_for_status(queue_client, follow.id)
    assert follow.status == "done", follow.notes
    assert said(follow)["argv"][-4:] == ["--resume", session, "--", "now fix it & <b>run</b> it"]
    assert [t["text"] for t in said(follow)["history"] if t["role"] == "user"] == ["find the flaky test"]
    reply_card = await card_of(slack, follow)
    assert reply_card.thread_ts == card.ts, "the turn's status line is in the same thread"
    await answer_in(slack, "CGENERAL", card.ts, follow)
    assert not [c for c in slack.refused() if c.error != "ratelimited"]


async def _newest_other(queue_client: QueueClient, known: set[str]) -> Task | None:
    return next((t for t in reversed(await tasks_of(queue_client)) if t.id not in known), None)


async def running_reply(slack: SlackEmulator, queue_client: QueueClient, hold: Path, opening: str,
                        reply: str) -> tuple[Task, Message, Task]:
    """A finished first turn, its card, and a reply's turn running until `hold` exists."""
    first, card = await first_turn(slack, queue_client, opening)
    await slack.say(f"{reply} HOLD_UNTIL={hold}", thread_ts=card.ts)
    turn = await wait_until(lambda: _newest_other(queue_client, {first.id}))
    await wait_for_status(queue_client, turn.id, ("in_progress",))
    return first, card, turn


async def test_two_quick_replies_run_one_after_the_other_in_order(
        bot, worker, slack: SlackEmulator, queue_client: QueueClient, tmp_path: Path) -> None:
    hold = tmp_path / "release-second"
    first, card, second = await running_reply(slack, queue_client, hold, "look at the parser", "second")
    await slack.say("third", thread_ts=card.ts)
    queued = await slack.wait_call("chat.postEphemeral", lambda b: "Queued" in b.get("text", ""))
    assert f"`{second.short_id}`" in queued["text"] and queued["thread_ts"] == card.ts
    assert len(await tasks_of(queue_client)) == 2, "the third waits bot-side while the second runs"

    hold.touch()
    third = await wait_until(lambda: _newest_other(queue_client, {first.id, second.id}), timeout=20)
    third = await wait_for_status(queue_client, third.id)
    second = await queue_client.get_task(second.id)
    assert second.status == third.status == "done"
    assert third.payload["prompt"] == "third" and third.payload["resume"] == first.result["session_id"]
    assert [t["text"] for t in said(third)["history"] if t["role"] == "user"] == [
        "look at the parser", f"second HOLD_UNTIL={hold}"]
    ends = [c for c in calls(tmp_path) if c["event"] in ("start", "end")]
    order = [(c["event"], c["argv"][-1]) for c in ends]
    assert order.index(("end", f"second HOLD_UNTIL={hold}")) < order.index(("start", "third"))


async def test_a_reply_that_waits_survives_a_bot_restart(
        make_bot, worker, slack: SlackEmulator, queue_client: QueueClient, tmp_path: Path) -> None:
    bot = await make_bot()
    first, card = await first_turn(slack, queue_client, "start")
    hold = tmp_path / "release"
    await slack.say(f"two HOLD_UNTIL={hold}", thread_ts=card.ts)
    second = await wait_until(lambda: _newest_other(queue_client, {first.id}))
    await slack.say("three", thread_ts=card.ts)
    await slack.wait_call("chat.postEphemeral", lambda b: "Queued" in b.get("text", ""))
    await bot.stop()
    hold.touch()
    await wait_for_status(queue_client, second.id)
    assert len(await tasks_of(queue_client)) == 2
    await make_bot()
    third = await wait_until(lambda: _newest_other(queue_client, {first.id, second.id}), timeout=20)
    assert third.payload["prompt"] == "three"


async def test_a_mention_starts_a_task_once_whatever_slack_delivers_twice(
        bot, worker, slack: SlackEmulator, queue_client: QueueClient) -> None:
    message, envelopes = await slack.say(f"@da rename the config loader {FLAGS}")
    assert sorted(e.payload["event"]["type"] for e in envelopes) == ["app_mention", "message"]
    task = await wait_until(lambda: _newest(queue_client))
    assert task.payload["prompt"] == "rename the config loader" and task.created_by == ALLOWED
    card = await card_of(slack, task)
    assert card.thread_ts == message.ts, "the card is in the mention's thread"
    for envelope in envelopes:
        await slack.wait_ack(envelope)
        await slack.redeliver(envelope)
    done = await wait_for_status(queue_client, task.id)
    await answer_in(slack, "CGENERAL", message.ts, done)
    assert [t.id for t in await tasks_of(queue_client)] == [task.id]

    await slack.say("and the tests too", thread_ts=message.ts)
    follow = await wait_until(lambda: _newest_other(queue_client, {task.id}))
    assert follow.payload["resume"] == done.result["session_id"]  # type: ignore[index]


async def test_a_direct_message_starts_a_task_answered_in_its_thread(
        bot, worker, slack: SlackEmulator, queue_client: QueueClient) -> None:
    dm = slack.im_of(ALLOWED)
    message, _ = await slack.say(f"summarise the changelog {FLAGS}", channel=dm)
    task = await wait_until(lambda: _newest(queue_client))
    done = await wait_for_status(queue_client, task.id)
    answer = await answer_in(slack, dm, message.ts, done)
    assert '"prompt": "summarise the changelog"' in seen(answer)


async def test_people_talking_in_a_channel_start_nothing(bot, slack: SlackEmulator,
                                                         queue_client: QueueClient) -> None:
    message, envelopes = await slack.say("lunch at noon? da is busy anyway")
    await slack.say("sounds good", thread_ts=message.ts)
    for envelope in envelopes:
        await slack.wait_ack(envelope)
    await slack.slash("queue")
    await slack.wait_response(lambda r: "No tasks" in texts(r))
    assert await tasks_of(queue_client) == []
    assert [m.text for m in slack.thread("CGENERAL", message.ts)] == ["sounds good"], "da said nothing there"


async def test_a_stranger_can_neither_start_nor_continue(bot, worker, slack: SlackEmulator,
                                                         queue_client: QueueClient) -> None:
    first, card = await first_turn(slack, queue_client, "check the logs")
    await slack.say("delete everything", user=STRANGER, thread_ts=card.ts)
    await slack.wait_call("chat.postEphemeral", lambda b: b["user"] == STRANGER and "SLACK_ALLOWED_USERS" in b["text"])
    await slack.say(f"@da wipe the disk {FLAGS}", user=STRANGER)
    refusals = lambda: [b for b in slack.named("chat.postEphemeral") if b["user"] == STRANGER]  # noqa: E731
    await wait_until(lambda: _true(len(refusals()) == 2))
    assert [t.id for t in await tasks_of(queue_client)] == [first.id]


async def _true(value: bool) -> bool:
    return value


async def test_a_thread_whose_task_is_not_an_agent_says_so(bot, slack: SlackEmulator,
                                                          queue_client: QueueClient) -> None:
    await slack.slash("assign echo hi --machine=mac-mini --type=run_script")
    task = await wait_until(lambda: _newest(queue_client))
    card = await card_of(slack, task)
    await slack.say("and again?", thread_ts=card.ts)
    answer = await slack.wait_call("chat.postMessage", lambda b: b.get("thread_ts") == card.ts
                                   and "not an agent" in b.get("text", ""))
    assert f"`{task.short_id}` is a run_script task" in answer["text"]
    assert [t.id for t in await tasks_of(queue_client)] == [task.id]


async def test_a_long_answer_lands_in_the_thread_as_a_file(bot, worker, slack: SlackEmulator,
                                                           queue_client: QueueClient) -> None:
    long_prompt = "explain <this> & that " * 600
    await slack.slash(f'assign "{long_prompt.strip()}" {FLAGS}')
    task = await wait_until(lambda: _newest(queue_client))
    done = await wait_for_status(queue_client, task.id)
    card = await card_of(slack, done)
    answer = await answer_in(slack, "CGENERAL", card.ts, done)
    assert "the whole answer" in seen(answer) and "file below" in seen(answer)
    shared = await slack.wait_call("files.completeUploadExternal", lambda b: True, timeout=20)
    assert shared["thread_ts"] == card.ts and shared["channel_id"] == "CGENERAL"
    uploads = {u.filename: u for u in (slack.uploads[f["id"]] for f in shared["files"])}
    whole = uploads[f"answer-{done.short_id}.md"]
    assert whole.data is not None and whole.data.decode() == done.result["answer"]  # type: ignore[index]
    log = uploads[f"log-{done.short_id}.txt"]
    assert log.data is not None and done.result["stdout"].strip() in log.data.decode()  # type: ignore[index]
    assert any(m.files for m in slack.thread("CGENERAL", card.ts))


async def test_a_short_answer_is_shown_and_the_log_lands_in_the_thread_as_a_file(
        bot, worker, slack: SlackEmulator, queue_client: QueueClient) -> None:
    first, card = await first_turn(slack, queue_client, "say hello")
    await answer_in(slack, "CGENERAL", card.ts, first)
    shared = await slack.wait_call("files.completeUploadExternal", lambda b: b.get("thread_ts") == card.ts,
                                   timeout=20)
    [log] = [slack.uploads[f["id"]] for f in shared["files"]]
    assert log.filename == f"log-{first.short_id}.txt"
    assert log.data is not None and first.result["session_id"] in log.data.decode()  # type: ignore[index]


async def test_without_files_write_the_thread_says_what_to_add(make_bot, worker, slack: SlackEmulator,
                                                              queue_client: QueueClient) -> None:
    slack.scopes.discard("files:write")
    await make_bot()
    await slack.slash(f'assign "{"long answer " * 1500}" {FLAGS}')
    task = await wait_until(lambda: _newest(queue_client))
    await wait_for_status(queue_client, task.id)
    note = await slack.wait_call("chat.postMessage", lambda b: "could not attach" in b.get("text", ""), timeout=20)
    assert "files:write" in note["text"] and f"/da show {task.short_id}" in note["text"]


async def test_a_bot_stopped_while_starting_a_reply_does_not_start_it_twice(
        make_bot, worker, slack: SlackEmulator, queue_client: QueueClient, tmp_path: Path) -> None:
    bot = await make_bot()
    first, card = await first_turn(slack, queue_client, "begin")
    await answer_in(slack, "CGENERAL", card.ts, first)
    await bot.stop()
    # As if the bot had stopped right after the queue created the reply's task, before noting it.
    state = json.loads((tmp_path / "bot-state.json").read_text())
    key = f"CGENERAL:{card.ts}"
    state["threads"][key] = {"channel": "CGENERAL", "root": card.ts, "agent": "claude", "machine": "mac-mini",
                             "cwd": None, "turns": [first.id],
                             "waiting": [{"user": ALLOWED, "text": "carry on", "ts": "1.000001",
                                          "started": time.time() - 1}]}
    (tmp_path / "bot-state.json").write_text(json.dumps(state))
    made = await queue_client.create_task("agent_run", {"agent": "claude", "prompt": "carry on",
                                                        "resume": first.result["session_id"]},  # type: ignore[index]
                                          target_machine="mac-mini", agent="claude", created_by=ALLOWED)
    await make_bot()
    await slack.say("and then this", thread_ts=card.ts)
    await card_of(slack, made)
    made = await wait_for_status(queue_client, made.id)
    last = await wait_until(lambda: _newest_other(queue_client, {first.id, made.id}), timeout=20)
    assert last.payload["prompt"] == "and then this"
    assert made.finished_at is not None and last.created_at >= made.finished_at, "it waited for the adopted turn"
    assert sorted(t.payload["prompt"] for t in await tasks_of(queue_client)) == ["and then this", "begin",
                                                                                   "carry on"]


async def test_an_agent_without_resume_gets_the_earlier_turns_as_context(
        bot, queue: QueueServer, slack: SlackEmulator, queue_client: QueueClient, tmp_path: Path, make_worker) -> None:
    make_worker(queue.url, tmp_path, MACHINE_NAME="thinkpad-x1", WORKER_AGENTS="gemini",
                WORKER_CAPABILITIES="agent_run")
    await slack.slash("assign name three colours --machine=thinkpad-x1 --agent=gemini --type=agent_run")
    first = await wait_until(lambda: _newest(queue_client))
    first = await wait_for_status(queue_client, first.id)
    assert first.status == "done", first.notes
    card = await card_of(slack, first)
    await answer_in(slack, "CGENERAL", card.ts, first)
    await slack.say("now a fourth", thread_ts=card.ts)
    follow = await wait_until(lambda: _newest_other(queue_client, {first.id}))
    assert "resume" not in follow.payload and follow.target_machine == "thinkpad-x1"
    assert follow.payload["context"] == [{"role": "user", "text": "name three colours"},
                                         {"role": "assistant", "text": first.result["answer"]}]  # type: ignore[index]
    follow = await wait_for_status(queue_client, follow.id)
    assert follow.status == "done", follow.notes
    assert "<conversation>" in said(follow)["prompt"] and "name three colours" in said(follow)["prompt"]
    await answer_in(slack, "CGENERAL", card.ts, follow)


async def test_a_running_turn_shows_its_status_line_with_cancel_in_the_thread(
        bot, worker, slack: SlackEmulator, queue_client: QueueClient, tmp_path: Path) -> None:
    hold = tmp_path / "never"
    _, card, turn = await running_reply(slack, queue_client, hold, "warm up", "long job")
    status_line = await card_of(slack, turn)
    assert status_line.thread_ts == card.ts and "Cancel" in texts(status_line)
    await slack.click("cancel_task", on=status_line)
    cancelled = await wait_for_status(queue_client, turn.id, ("cancelled",))
    assert cancelled.changed_by == ALLOWED or cancelled.status == "cancelled"
    edited = await wait_until(lambda: _true("Cancel" not in texts(slack.messages[("CGENERAL", status_line.ts)])))
    assert edited
    assert len(slack.named("chat.update")) <= 50, "status edits stay within chat.update's Tier 3"
    hold.touch()


async def test_a_workspace_without_the_new_scopes_keeps_its_slash_commands_and_says_what_to_add(
        make_bot, slack: SlackEmulator, queue_client: QueueClient, caplog: pytest.LogCaptureFixture) -> None:
    slack.scopes.clear()
    slack.scopes.update(LEGACY_SCOPES)
    bot = await make_bot()
    assert bot.missing_scopes == ["app_mentions:read", "channels:history", "groups:history", "im:history",
                                  "files:write", "files:read", "assistant:write", "reactions:read",
                                  "usergroups:read"]
    assert "the Slack app lacks app_mentions:read" in caplog.text and "reinstall" in caplog.text
    _, envelopes = await slack.say(f"@da fix it {FLAGS}")
    assert envelopes == [], "Slack delivers no event the app has no scope for"
    await slack.slash(f"assign fix it {FLAGS}")
    await slack.wait_call("chat.postMessage", lambda b: "Cancel" in texts(b))
    assert len(await tasks_of(queue_client)) == 1
    await slack.slash("status")
    answer = await slack.wait_response(lambda r: "lacks some scopes" in texts(r))
    assert "`im:history`: direct messages to the bot are not seen" in texts(answer) and "reinstall" in texts(answer)
    assert "`assistant:write`: agents at work show no agent session and no Stop button" in texts(answer)


GEMINI_FLAGS = "--machine=thinkpad-x1 --agent=gemini --type=agent_run"


async def finish(queue_client: QueueClient, task: Task, answer: str = "done", *, hold: bool = False) -> ClaimedTask:
    """Claim a gemini turn as the worker on thinkpad-x1 would, and (unless `hold`) report it done with `answer`."""
    held = await queue_client.claim("thinkpad-x1", ["agent_run"], agents=["gemini"])
    assert held is not None and held.task.id == task.id
    if not hold:
        await queue_client.report(task.id, held.lease, "done", {"answer": answer})
    return held


async def alert_in_notify_channel(slack: SlackEmulator, task: Task) -> Message:
    async def posted() -> Message | None:
        return next((m for m in slack.channel_messages("CNOTIFY") if task.short_id in m.text), None)
    return await wait_until(posted, timeout=20)


async def test_a_long_conversation_without_resume_sends_only_the_newest_turns_that_fit(
        make_bot, slack: SlackEmulator, queue_client: QueueClient, tmp_path: Path) -> None:
    bot = await make_bot()
    await slack.slash(f"assign start {GEMINI_FLAGS}")
    first = await wait_until(lambda: _newest(queue_client))
    card = await card_of(slack, first)
    await bot.stop()
    # Twenty earlier turns of 64 KiB answers: told whole, they are past the queue's 1 MiB body limit.
    earlier = []
    for number in range(20):
        earlier.append(await queue_client.create_task("agent_run", {"agent": "gemini", "prompt": f"turn {number}"},
                                                      target_machine="thinkpad-x1", agent="gemini"))
    for _ in range(21):
        held = await queue_client.claim("thinkpad-x1", ["agent_run"], agents=["gemini"])
        assert held is not None
        await queue_client.report(held.task.id, held.lease, "done",
                                  {"answer": f"answer of {held.task.short_id} " + "x" * 65000})
    state = json.loads((tmp_path / "bot-state.json").read_text())
    state["threads"][f"CGENERAL:{card.ts}"] = {"channel": "CGENERAL", "root": card.ts, "agent": "gemini",
                                                "machine": "thinkpad-x1", "cwd": None, "waiting": [],
                                                "turns": [t.id for t in earlier] + [first.id]}
    (tmp_path / "bot-state.json").write_text(json.dumps(state))
    await make_bot()

    await slack.say("and now the summary", thread_ts=card.ts)
    follow = await wait_until(lambda: _newest_other(queue_client, {first.id, *(t.id for t in earlier)}), timeout=20)
    context = follow.payload["context"]
    assert sum(len(turn["text"].encode()) for turn in context) <= agents.MAX_CONTEXT_BYTES
    assert context[-1]["role"] == "assistant" and context[-1]["text"].startswith(f"answer of {first.short_id}")
    assert follow.payload["context_left_out"] == 2 * 21 - len(context)
    assert follow.payload["prompt"] == "and now the summary"
    await card_of(slack, follow)
    stuck = await needs_human(queue_client)
    await alert_in_notify_channel(slack, stuck)


async def test_a_reply_the_queue_refuses_is_dropped_with_a_sentence_and_alerts_keep_flowing(
        make_bot, make_server, slack: SlackEmulator, tmp_path: Path) -> None:
    small = await make_server(fleet=FLEET, max_body=8192)
    async with QueueClient(small.url, SECRET) as client:
        await make_bot(queue_urls=(small.url,))
        await slack.slash(f"assign start {GEMINI_FLAGS}")
        first = await wait_until(lambda: _newest(client))
        card = await card_of(slack, first)
        await finish(client, first, "first " + "x" * 5000)
        await answer_in(slack, "CGENERAL", card.ts, await client.get_task(first.id))
        await slack.say("second", thread_ts=card.ts)
        second = await wait_until(lambda: _newest_other(client, {first.id}))
        held = await finish(client, second, hold=True)
        await slack.say("third", thread_ts=card.ts)
        await slack.wait_call("chat.postEphemeral", lambda b: "Queued" in b.get("text", ""))
        # Both answers as context are past the queue's 8 KiB body limit: the third cannot be queued.
        await client.report(second.id, held.lease, "done", {"answer": "second " + "y" * 5000})
        told = await slack.wait_call("chat.postMessage", lambda b: "was not started" in b.get("text", ""), timeout=20)
        assert told["thread_ts"] == card.ts and '"third"' in told["text"] and "larger than 8192 bytes" in told["text"]
        assert f"<@{ALLOWED}>" in told["text"]
        stuck = await needs_human(client)
        await alert_in_notify_channel(slack, stuck)
        assert [t.payload["prompt"] for t in await tasks_of(client) if t.payload["agent"] == "gemini"] == [
            "start", "second"]


async def test_a_reply_while_the_queue_is_away_waits_and_starts_when_it_is_back(
        bot, slack: SlackEmulator, queue: QueueServer, queue_client: QueueClient) -> None:
    await slack.slash(f"assign start {GEMINI_FLAGS}")
    first = await wait_until(lambda: _newest(queue_client))
    card = await card_of(slack, first)
    await finish(queue_client, first, "the first answer")
    await slack.say("look again", thread_ts=card.ts)
    second = await wait_until(lambda: _newest_other(queue_client, {first.id}))
    await finish(queue_client, second, "the second answer")
    await answer_in(slack, "CGENERAL", card.ts, await queue_client.get_task(second.id))
    await queue.stop()
    await slack.say("now fix it", thread_ts=card.ts)
    told = await slack.wait_call("chat.postEphemeral", lambda b: "not answering" in b.get("text", ""), timeout=20)
    assert told["thread_ts"] == card.ts and told["user"] == ALLOWED and "starts when the queue answers" in told["text"]
    await queue.start()
    follow = await wait_until(lambda: _newest_other(queue_client, {first.id, second.id}), timeout=40)
    assert follow.payload["prompt"] == "now fix it" and follow.created_by == ALLOWED
    assert follow.payload["context"][-1] == {"role": "assistant", "text": "the second answer"}
    status_line = await card_of(slack, follow)
    assert status_line.thread_ts == card.ts
