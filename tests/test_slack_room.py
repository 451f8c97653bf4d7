"""Slack as the agent's control room: the real bot in socket mode against the strict emulator and a
real queue; the agent side is driven through the queue's HTTP API as a worker would (claim, start,
progress records, report), so what the thread shows is tested on its own."""

from __future__ import annotations

import copy
import dataclasses
import json
from typing import Any

import pytest

from da.bot.slack.settings import BotSettings
from da.config import ConfigError
from da.queue.client import ClaimedTask, QueueClient
from da.queue.models import Task
from tests.support.slack import ALLOWED, STRANGER
from tests.support.slack_emulator import Message, SlackEmulator, Stream
from tests.support.waiting import wait_until

FLAGS = "--machine=mac-mini --agent=claude --type=agent_run"


def record(*, plan: list[tuple[str, str]] = (), tools: list[tuple[str, str, str]] = (),  # type: ignore[assignment]
           answer: str = "", turns: int = 0, cost: float = 0.12) -> dict[str, Any]:
    """A progress record as the worker's agent session driver reports it."""
    return {"plan": [{"content": c, "status": s} for c, s in plan],
            "tools": [{"id": i, "title": t, "kind": "execute", "status": s} for i, t, s in tools],
            "answer_tail": answer, "mode": "default", "turns": turns,
            "usage": {"input_tokens": 1200, "output_tokens": 340, "cost_usd": cost}}


async def started(slack: SlackEmulator, queue_client: QueueClient,
                  prompt: str = "fix the flaky test") -> tuple[Message, Task, ClaimedTask]:
    """`@da <prompt>` in #general, its card posted, the task claimed and started by mac-mini."""
    message, _ = await slack.say(f"@da {prompt} {FLAGS}")

    async def made() -> Task | None:
        found, _ = await queue_client.list_tasks(limit=10)
        return found[0] if found else None
    task = await wait_until(made)

    async def carded() -> Message | None:
        return next((m for m in slack.thread("CGENERAL", message.ts) if f"task:{task.id}:card" in json.dumps(m.blocks)),
                    None)
    await wait_until(carded)
    held = await queue_client.claim("mac-mini", ["agent_run"], agents=["claude"])
    assert held is not None and held.task.id == task.id
    await queue_client.start(task.id, held.lease)
    return message, task, held


def streams_in(slack: SlackEmulator, root: Message) -> list[Stream]:
    return [s for s in slack.streams.values() if s.channel == root.channel and s.thread_ts == root.ts]


async def test_an_agent_at_work_streams_its_progress_in_one_message_with_a_status_line_and_a_session(
        bot, slack: SlackEmulator, queue_client: QueueClient) -> None:
    message, task, held = await started(slack, queue_client)
    await queue_client.save_progress(task.id, held.lease, record(plan=[("Find the flake", "in_progress")],
                                                                 tools=[("t1", "pytest -x tests", "in_progress")],
                                                                 answer="Looking at it"))
    stream = (await wait_until(lambda: streams_in(slack, message) or None))[0]
    assert stream.plan_title == "fix the flaky test" and stream.text == "Looking at it"
    assert {t["title"]: t["status"] for t in stream.tasks.values()} == {"Find the flake": "in_progress",
                                                                       "pytest -x tests": "in_progress"}
    await wait_until(lambda: slack.thread_status("CGENERAL", message.ts) == "running pytest -x tests on mac-mini"
                     or None)
    session = slack.sessions[("CGENERAL", message.ts)]
    assert session.status == "processing" and session.initiator == ALLOWED

    await queue_client.save_progress(task.id, held.lease, record(plan=[("Find the flake", "completed")],
                                                                 tools=[("t1", "pytest -x tests", "completed")],
                                                                 answer="Looking at it\nFound it: a race"))
    await wait_until(lambda: stream.text == "Looking at it\nFound it: a race" or None)
    assert stream.tasks and all(t["status"] == "complete" for t in stream.tasks.values())
    await wait_until(lambda: slack.thread_status("CGENERAL", message.ts) == "working on mac-mini" or None)

    await queue_client.report(task.id, held.lease, "done", {"answer": "Fixed the race"})
    await wait_until(lambda: stream.state == "stopped" or None)
    await wait_until(lambda: slack.sessions[("CGENERAL", message.ts)].status == "active" or None)
    await wait_until(lambda: slack.thread_status("CGENERAL", message.ts) == "" or None)
    assert len(streams_in(slack, message)) == 1, "one streamed message per turn, never a flood"


async def test_a_new_turn_gets_its_own_message(bot, slack: SlackEmulator, queue_client: QueueClient) -> None:
    message, task, held = await started(slack, queue_client)
    await queue_client.save_progress(task.id, held.lease, record(answer="first turn", turns=0))
    first = (await wait_until(lambda: streams_in(slack, message) or None))[0]
    await queue_client.save_progress(task.id, held.lease, record(answer="second turn", turns=1))
    await wait_until(lambda: len(streams_in(slack, message)) == 2 or None)
    assert first.state == "stopped" and first.text == "first turn"
    assert next(s for s in streams_in(slack, message) if s is not first).text == "second turn"


async def test_without_streaming_one_card_is_edited_in_place(bot, slack: SlackEmulator,
                                                             queue_client: QueueClient) -> None:
    slack.unknown_methods.update({"chat.startStream", "chat.appendStream", "chat.stopStream"})
    message, task, held = await started(slack, queue_client)
    await queue_client.save_progress(task.id, held.lease, record(plan=[("Find the flake", "in_progress")]))

    def progress_card() -> Message | None:
        return next((m for m in slack.thread("CGENERAL", message.ts) if "*Plan*" in json.dumps(m.blocks)), None)
    card = await wait_until(progress_card)
    await queue_client.save_progress(task.id, held.lease, record(plan=[("Find the flake", "completed")]))
    await wait_until(lambda: ":white_check_mark: Find the flake" in json.dumps(
        slack.messages[("CGENERAL", card.ts)].blocks) or None)
    assert not streams_in(slack, message)
    assert len([m for m in slack.thread("CGENERAL", message.ts) if "*Plan*" in json.dumps(m.blocks)]) == 1


async def test_slacks_stop_button_cancels_the_task(bot, slack: SlackEmulator, queue_client: QueueClient) -> None:
    message, task, held = await started(slack, queue_client)
    await queue_client.save_progress(task.id, held.lease, record(answer="Working"))
    await wait_until(lambda: slack.sessions.get(("CGENERAL", message.ts)) or None)
    await wait_until(lambda: slack.sessions[("CGENERAL", message.ts)].status == "processing" or None)
    await slack.press_stop("CGENERAL", message.ts)

    async def cancelled() -> Task | None:
        found = await queue_client.get_task(task.id)
        return found if found.status == "cancelled" else None
    stopped = await wait_until(cancelled)
    assert stopped.changed_by == ALLOWED
    await wait_until(lambda: slack.sessions[("CGENERAL", message.ts)].status == "closed" or None)


async def test_a_strangers_stop_is_refused_privately(bot, slack: SlackEmulator, queue_client: QueueClient) -> None:
    message, task, held = await started(slack, queue_client)
    await queue_client.save_progress(task.id, held.lease, record(answer="Working"))
    await wait_until(lambda: (slack.sessions.get(("CGENERAL", message.ts)) or None) and
                     (slack.sessions[("CGENERAL", message.ts)].status == "processing" or None))
    await slack.press_stop("CGENERAL", message.ts, user=STRANGER)
    refusal = await slack.wait_call("chat.postEphemeral", lambda b: b.get("user") == STRANGER)
    assert "SLACK_ALLOWED_USERS" in refusal["text"]
    assert (await queue_client.get_task(task.id)).status == "in_progress"


PERMISSION = [("allow", "Allow"), ("allow_always", "Always allow"), ("deny", "Deny")]


async def ask_card(slack: SlackEmulator, root: Message, title: str) -> Message:
    """The card of an agent's ask in the thread, once it is there."""
    def posted() -> Message | None:
        return next((m for m in slack.thread(root.channel, root.ts) if "ask_answer_0" in json.dumps(m.blocks)
                     and title in m.text), None)
    return await wait_until(posted)


async def test_an_ask_is_answered_from_its_card_in_the_thread_once(bot, slack: SlackEmulator,
                                                                    queue_client: QueueClient) -> None:
    message, task, held = await started(slack, queue_client)
    ask = await queue_client.open_ask(task.id, held.lease, "permission", "Run the tests", PERMISSION,
                                      detail="pytest -x <tests>\nexport GH=ghp_" + "a" * 30)
    card = await ask_card(slack, message, "Run the tests")
    shown = json.dumps(card.blocks)
    assert f"<@{ALLOWED}>" in card.text, "the requester is mentioned when an ask opens"
    assert "&lt;tests&gt;" in shown and "ghp_" not in shown and "[redacted]" in shown
    assert [e["text"]["text"] for b in card.blocks if b["type"] == "actions" for e in b["elements"]] == \
        ["Allow", "Always allow", "Deny", "With a note…"]
    await wait_until(lambda: slack.thread_status("CGENERAL", message.ts) == "waiting for your approval" or None)
    before = dataclasses.replace(card, blocks=copy.deepcopy(card.blocks))

    await slack.click("ask_answer_1", on=card, user=STRANGER)
    refused = await slack.wait_response(lambda r: "SLACK_APPROVERS" in r.get("text", ""))
    assert refused["response_type"] == "ephemeral"
    assert (await queue_client.asks(task.id))[0].status == "open"

    await slack.click("ask_answer_1", on=card)
    answered = await wait_until(lambda: next((a for a in [slack.messages[(card.channel, card.ts)]]
                                              if "Always allow" in json.dumps(a.blocks)
                                              and "ask_answer" not in json.dumps(a.blocks)), None))
    assert f"by <@{ALLOWED}> at" in json.dumps(answered.blocks)
    settled = (await queue_client.asks(task.id))[0]
    assert (settled.answer, settled.answered_by) == ("allow_always", ALLOWED) and settled.id == ask.id

    await slack.click("ask_answer_2", on=before, user=ALLOWED)
    late = await slack.wait_response(lambda r: "already answered" in r.get("text", ""))
    assert f"<@{ALLOWED}> already answered: Always allow" in late["text"]
    assert (await queue_client.asks(task.id))[0].answer == "allow_always", "the first answer wins"


async def test_an_answer_from_the_terminal_settles_the_card_and_an_approver_may_answer(
        make_bot, slack: SlackEmulator, queue_client: QueueClient) -> None:
    await make_bot(approvers=frozenset({"UOTHER"}))
    message, task, held = await started(slack, queue_client)
    await queue_client.open_ask(task.id, held.lease, "plan", "Approve the plan",
                                [("approve", "Approve"), ("request_changes", "Request changes")],
                                detail="1. find the race\n2. fix it")
    card = await ask_card(slack, message, "Approve the plan")
    await queue_client.answer_ask(task.id, 1, "approve", by="alice")
    await wait_until(lambda: "by alice" in json.dumps(slack.messages[(card.channel, card.ts)].blocks) or None)
    assert "ask_answer" not in json.dumps(slack.messages[(card.channel, card.ts)].blocks)

    await queue_client.open_ask(task.id, held.lease, "question", "Which database?",
                                [("sqlite", "SQLite"), ("postgres", "PostgreSQL")])
    second = await ask_card(slack, message, "Which database?")
    await slack.click("ask_answer_1", on=second, user="UOTHER")
    await wait_until(lambda: "by <@UOTHER>" in json.dumps(slack.messages[(second.channel, second.ts)].blocks) or None)
    assert (await queue_client.asks(task.id))[1].answer == "postgres"


async def test_request_changes_with_a_note_opens_a_modal(bot, slack: SlackEmulator, queue_client: QueueClient) -> None:
    message, task, held = await started(slack, queue_client)
    await queue_client.open_ask(task.id, held.lease, "plan", "Approve the plan",
                                [("approve", "Approve"), ("request_changes", "Request changes")])
    card = await ask_card(slack, message, "Approve the plan")
    await slack.click("ask_note", on=card)
    await slack.wait_call("views.open", lambda b: True)
    view = next(iter(slack.views.values()))
    await slack.submit(view, {"note": {"text": {"type": "plain_text_input", "value": "split it in two"}}})
    await wait_until(lambda: "split it in two" in json.dumps(slack.messages[(card.channel, card.ts)].blocks) or None)
    settled = (await queue_client.asks(task.id))[0]
    assert (settled.answer, settled.note) == ("request_changes", "split it in two")


async def test_a_reply_while_a_turn_runs_steers_the_agent_and_stop_stops_it(bot, slack: SlackEmulator,
                                                                            queue_client: QueueClient) -> None:
    message, task, held = await started(slack, queue_client)
    await queue_client.save_progress(task.id, held.lease, record(answer="Working"))
    await wait_until(lambda: streams_in(slack, message) or None)
    await slack.say("also check the docs", thread_ts=message.ts)
    beat = await queue_client.heartbeat(task.id, held.lease, messages=True, wait=5)
    assert [(m.text, m.created_by) for m in beat.messages] == [("also check the docs", ALLOWED)]
    await wait_until(lambda: next((m for m in slack.thread("CGENERAL", message.ts)
                                   if "end of its current turn" in m.text), None))
    found, _ = await queue_client.list_tasks(limit=10)
    assert [t.id for t in found] == [task.id], "a steering reply starts no new turn"

    await slack.say("stop", thread_ts=message.ts)
    beat = await queue_client.heartbeat(task.id, held.lease, wait=5)
    assert beat.cancel, "the worker hears the cancel (and sends session/cancel)"
    assert (await queue_client.get_task(task.id)).changed_by == ALLOWED


async def test_the_cards_cancel_button_stops_a_running_agent(bot, slack: SlackEmulator,
                                                             queue_client: QueueClient) -> None:
    message, task, held = await started(slack, queue_client)
    await queue_client.save_progress(task.id, held.lease, record(answer="Working"))
    await wait_until(lambda: slack.sessions.get(("CGENERAL", message.ts)) or None)
    card = next(m for m in slack.thread("CGENERAL", message.ts) if f"task:{task.id}:card" in json.dumps(m.blocks))
    await slack.click("cancel_task", on=card)
    beat = await queue_client.heartbeat(task.id, held.lease, wait=5)
    assert beat.cancel
    await wait_until(lambda: slack.sessions[("CGENERAL", message.ts)].status == "closed" or None)


async def test_an_x_reaction_on_the_request_stops_its_agent(bot, slack: SlackEmulator,
                                                             queue_client: QueueClient) -> None:
    message, task, held = await started(slack, queue_client)
    await slack.react("CGENERAL", message.ts, "thumbsup")
    await slack.react("CGENERAL", message.ts, "x", user=STRANGER)
    await slack.wait_call("chat.postEphemeral", lambda b: b.get("user") == STRANGER)
    assert not (await queue_client.heartbeat(task.id, held.lease)).cancel, "thumbs up and strangers stop nothing"
    await slack.react("CGENERAL", message.ts, "x")
    beat = await queue_client.heartbeat(task.id, held.lease, wait=5)
    assert beat.cancel


async def test_the_result_shows_the_workspace_its_diff_and_what_it_cost(bot, slack: SlackEmulator,
                                                                        queue_client: QueueClient) -> None:
    message, task, held = await started(slack, queue_client)
    await queue_client.save_progress(task.id, held.lease, record(answer="Fixed", cost=0.42))
    pr = "https://github.com/acme/app/pull/7"
    diff = "diff --git a/x.py b/x.py\n-old\n+new\n"
    await queue_client.report(task.id, held.lease, "done", {
        "answer": "Fixed the race", "diff": diff,
        "workspace": {"branch": f"da/{task.short_id}", "base": "main", "commits": ["abc123", "def456"],
                      "files_changed": 3, "insertions": 40, "deletions": 7, "pushed": True, "pr_url": pr}})

    def result() -> Message | None:
        return next((m for m in slack.thread("CGENERAL", message.ts) if "workspace" in json.dumps(m.blocks)), None)
    shown = await wait_until(result)
    text = json.dumps(shown.blocks)
    assert f"da/{task.short_id}" in text and "2 commit(s), 3 file(s), +40 -7, pushed" in text
    assert pr in text and "Open pull request" in text
    assert "1,200 in / 340 out tokens" in text and "$0.42" in text
    await slack.click("workspace_diff", on=shown)
    shared = await slack.wait_call("files.completeUploadExternal", lambda b: b.get("thread_ts") == message.ts)
    uploaded = next(f for f in slack.uploads.values() if f.filename == f"{task.short_id}.diff")
    assert uploaded.data == diff.encode() and shared["channel_id"] == "CGENERAL"


def test_slack_approvers_are_parsed_once_and_a_wrong_id_is_named() -> None:
    env = {"SLACK_BOT_TOKEN": "xoxb-1", "SLACK_APP_TOKEN": "xapp-1", "DA_TOKEN": "da_" + "t" * 40,
           "SLACK_APPROVERS": "U1, W2"}
    assert BotSettings.from_env(env).approvers == {"U1", "W2"}
    with pytest.raises(ConfigError, match="SLACK_APPROVERS has #ops"):
        BotSettings.from_env({**env, "SLACK_APPROVERS": "U1,#ops"})


async def test_app_home_shows_the_asks_i_may_answer_above_my_running_tasks(bot, slack: SlackEmulator,
                                                                            queue_client: QueueClient) -> None:
    message, task, held = await started(slack, queue_client)
    await queue_client.open_ask(task.id, held.lease, "permission", "Push to main", PERMISSION)
    await ask_card(slack, message, "Push to main")
    await slack.open_home(ALLOWED)
    await wait_until(lambda: "Push to main" in json.dumps(slack.homes.get(ALLOWED, {}).get("blocks", [])) or None)
    ids = [b.get("block_id") for b in slack.homes[ALLOWED]["blocks"]]
    assert ids.index("home_asks") < ids.index("home_running")
    await slack.open_home(STRANGER)
    await wait_until(lambda: STRANGER in slack.homes or None)
    assert "Push to main" not in json.dumps(slack.homes[STRANGER]["blocks"])

    await slack.click_view("ask_answer_0", slack.homes[ALLOWED]["id"])
    await wait_until(lambda: "Push to main" not in json.dumps(slack.homes[ALLOWED]["blocks"]) or None)
    assert (await queue_client.asks(task.id))[0].answered_by == ALLOWED
