"""An agent's progress in its Slack thread: the pure drawing (stream chunks, the fallback card) and the
poster's streams, card edits, thread status and agent session status against the strict emulator."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from da.bot.slack import delivery, progress
from da.bot.slack.delivery import Poster
from da.bot.slack.progress import Progress, Step
from da.bot.slack.state import BotState
from tests.support import slack_limits
from tests.support.slack_emulator import TEAM, Message, SlackEmulator, chunk_errors
from tests.support.waiting import wait_until

ASKER = "UALLOWED"
TITLE = "Fix the flaky test"


def record(*, plan: list[tuple[str, str]] = (), tools: list[tuple[str, str, str]] = (),  # type: ignore[assignment]
           answer: str = "", cost: float | None = None) -> dict[str, Any]:
    """A progress record as the agent session driver reports it."""
    return {"plan": [{"content": c, "status": s} for c, s in plan],
            "tools": [{"id": i, "title": t, "kind": "execute", "status": s} for i, t, s in tools],
            "answer_tail": answer, "mode": "default",
            "usage": {"input_tokens": 1200, "output_tokens": 340, "cost_usd": cost},
            "context": {"used": 1, "size": 2}, "turns": 1, "supervised": True}


def test_a_record_reads_leniently_and_maps_acp_statuses_to_slacks() -> None:
    read = Progress.of(record(plan=[("Find it", "completed"), ("Fix it", "in_progress"), ("Test", "pending")],
                              tools=[("t1", "pytest -x", "failed"), ("t2", "", "weird")], cost=0.5))
    assert [s.status for s in read.plan] == ["complete", "in_progress", "pending"]
    assert [(s.id, s.title, s.status) for s in read.tools] == [("tool-t1", "pytest -x", "error"),
                                                               ("tool-t2", "execute", "in_progress")]
    assert (read.input_tokens, read.output_tokens, read.cost_usd) == (1200, 340, 0.5)
    assert Progress.of(None) == Progress() == Progress.of({"plan": "nonsense", "tools": [1, None], "usage": 3})


def test_chunks_carry_only_what_changed() -> None:
    first = Progress.of(record(plan=[("Find it", "in_progress")], answer="Looking"))
    drawn = progress.chunks(None, first, title=TITLE)
    assert drawn == [{"type": "plan_update", "title": TITLE},
                     {"type": "task_update", "id": "plan-0", "title": "Find it", "status": "in_progress"},
                     {"type": "markdown_text", "text": "Looking"}]
    second = Progress.of(record(plan=[("Find it", "completed"), ("Fix it", "pending")],
                                tools=[("t1", "grep flaky", "in_progress")], answer="Looking\nFound it"))
    assert progress.chunks(first, second, title=TITLE) == [
        {"type": "task_update", "id": "plan-0", "title": "Find it", "status": "complete"},
        {"type": "task_update", "id": "plan-1", "title": "Fix it", "status": "pending"},
        {"type": "task_update", "id": "tool-t1", "title": "grep flaky", "status": "in_progress"},
        {"type": "markdown_text", "text": "\nFound it"}]
    assert progress.chunks(second, second, title=TITLE) == []
    finished = progress.finishing(second, second, title=TITLE)
    assert {c["id"]: c["status"] for c in finished} == {"plan-1": "complete", "tool-t1": "complete"}
    assert chunk_errors(drawn) == chunk_errors(finished) == [], "the emulator takes them as Slack would"


def test_the_answer_delta_follows_a_sliding_tail() -> None:
    assert progress.answer_delta("", "abc") == "abc"
    assert progress.answer_delta("line 1\nline 2", "line 2\nline 3") == "\nline 3"
    assert progress.answer_delta("abc", "abc") == ""
    assert progress.answer_delta("old", "entirely new") == "entirely new"


def test_agent_text_cannot_ping_and_long_text_is_split_within_slacks_limits() -> None:
    loud = Progress(plan=(Step("plan-0", "tell <!channel> " + "x" * 400, "pending"),),
                    answer_tail="<@U123> <!here> " + "y" * 13_000)
    drawn = progress.chunks(None, loud, title="<!everyone>")
    texts = [c.get("text") or c.get("title") for c in drawn]
    assert not any(slack_limits.PING.search(t) for t in texts)
    assert all(len(c["title"]) <= progress.MAX_TITLE for c in drawn if "title" in c)
    assert [len(c["text"]) for c in drawn if c["type"] == "markdown_text"] == [12_000, 1018]
    assert chunk_errors(drawn) == []


def test_the_fallback_card_fits_a_message_and_escapes_task_text() -> None:
    busy = Progress.of(record(plan=[(f"step {n} <b>", "completed" if n < 3 else "pending") for n in range(30)],
                              tools=[(f"t{n}", f"run {n}", "completed") for n in range(10)] + [
                                  ("t10", "pytest -x", "in_progress")],
                              answer="z" * 9000, cost=1.25))
    text, drawn = progress.card(busy, title=TITLE)
    body = [b.to_dict() for b in drawn]
    assert slack_limits.block_errors(body) == [] and slack_limits.total_text(body) <= slack_limits.MAX_BLOCKS_TEXT
    shown = str(body)
    assert "&lt;b&gt;" in shown and "<b>" not in shown
    assert "run 0" not in shown and "run 6" in shown and "pytest -x" in shown, "the latest tool calls"
    assert "$1.25" in shown and "1,200 in / 340 out tokens" in shown
    assert text == f"{TITLE}: pytest -x"


# ---- the poster against the emulator -------------------------------------------------------


@pytest.fixture
async def poster(slack: SlackEmulator, tmp_path: Path) -> AsyncIterator[Poster]:
    web = delivery.web_client(slack.bot_token, slack.api_url, timeout=5)
    yield Poster(web, BotState(tmp_path / "state.json"), notify_channel="CNOTIFY", timeout=5)


async def request(slack: SlackEmulator, channel: str = "CGENERAL") -> Message:
    message, _ = await slack.say("fix the flaky test", channel=channel)
    return message


async def a_turn(poster: Poster, thread: Message) -> tuple[delivery.Live, Progress]:
    first = Progress.of(record(plan=[("Find it", "in_progress")], answer="Looking"))
    live = await poster.start_live(thread.channel, thread.ts, progress.chunks(None, first, title=TITLE),
                                   progress.card(first, title=TITLE), user=ASKER, team=TEAM)
    assert live is not None
    return live, first


async def test_progress_streams_in_one_message_and_ends_with_its_buttons(slack: SlackEmulator,
                                                                          poster: Poster) -> None:
    thread = await request(slack)
    live, first = await a_turn(poster, thread)
    assert live.streaming
    second = Progress.of(record(plan=[("Find it", "completed")], tools=[("t1", "pytest -x", "in_progress")],
                                answer="Looking\nFound it"))
    assert await poster.append_live(live, progress.chunks(first, second, title=TITLE), progress.card(second,
                                                                                                      title=TITLE))
    buttons = [{"type": "actions", "elements": [{"type": "button", "action_id": "diff", "value": "x",
                                                 "text": {"type": "plain_text", "text": "Diff"}}]}]
    assert await poster.stop_live(live, progress.finishing(second, second, title=TITLE),
                                  progress.card(second, title=TITLE), buttons)  # type: ignore[arg-type]
    stream = slack.streams[("CGENERAL", live.ts)]
    assert stream.state == "stopped" and stream.text == "Looking\nFound it" and stream.plan_title == TITLE
    assert {t["id"]: t["status"] for t in stream.tasks.values()} == {"plan-0": "complete", "tool-t1": "complete"}
    assert slack.messages[("CGENERAL", live.ts)].blocks[0]["elements"][0]["action_id"] == "diff"
    assert len(slack.thread("CGENERAL", thread.ts)) == 1, "one message per turn, never a flood"


async def test_in_a_dm_the_stream_names_no_recipient(slack: SlackEmulator, poster: Poster) -> None:
    thread = await request(slack, slack.im_of(ASKER))
    live, _ = await a_turn(poster, thread)
    assert live.streaming and "recipient_user_id" not in slack.named("chat.startStream")[0]


async def test_without_streaming_one_card_is_edited_at_most_once_a_second(slack: SlackEmulator,
                                                                          poster: Poster) -> None:
    slack.unknown_methods.update({"chat.startStream", "chat.appendStream", "chat.stopStream"})
    thread = await request(slack)
    live, before = await a_turn(poster, thread)
    assert not live.streaming
    began = time.monotonic()
    for n in range(6):
        now = Progress.of(record(plan=[("Find it", "in_progress")], tools=[(f"t{n}", f"step {n}", "in_progress")]))
        assert await poster.append_live(live, progress.chunks(before, now, title=TITLE),
                                        progress.card(now, title=TITLE))
        before = now
    card = slack.messages[("CGENERAL", live.ts)]
    await wait_until(lambda: _true("step 5" in str(card.blocks)), timeout=5)
    edits = slack.named("chat.update")
    assert 1 <= len(edits) <= int(time.monotonic() - began) + 2, "edits are spaced a second apart"
    final = Progress.of(record(plan=[("Find it", "completed")], answer="All green"))
    assert await poster.stop_live(live, [], progress.card(final, title=TITLE))
    assert "All green" in str(card.blocks)
    assert len(slack.thread("CGENERAL", thread.ts)) == 1
    assert not slack.refused("chat.update"), "no edit went over the rate limit"


async def _true(value: bool) -> bool:
    return value


async def test_a_stream_slack_ended_is_edited_as_a_card_afterwards(slack: SlackEmulator, poster: Poster) -> None:
    thread = await request(slack)
    live, first = await a_turn(poster, thread)
    slack.age_response_urls(600)
    later = Progress.of(record(plan=[("Find it", "completed")], answer="Looking, still"))
    assert await poster.append_live(live, progress.chunks(first, later, title=TITLE), progress.card(later,
                                                                                                    title=TITLE))
    assert not live.streaming
    assert "Looking, still" in str(slack.messages[("CGENERAL", live.ts)].blocks)


async def test_after_stop_the_poster_says_so_and_shows_the_end_as_an_edit(slack: SlackEmulator,
                                                                          poster: Poster) -> None:
    thread = await request(slack)
    assert await poster.session_status("CGENERAL", thread.ts, "processing", title=TITLE, initiator=ASKER)
    live, first = await a_turn(poster, thread)
    await slack.press_stop("CGENERAL", thread.ts)
    more = Progress.of(record(plan=[("Find it", "completed")], answer="Looking more"))
    assert not await poster.append_live(live, progress.chunks(first, more, title=TITLE),
                                        progress.card(more, title=TITLE))
    assert live.stopped_by_user
    assert await poster.stop_live(live, [], progress.card(more, title="Stopped"))
    assert "Stopped" in str(slack.messages[("CGENERAL", live.ts)].blocks)
    assert await poster.session_status("CGENERAL", thread.ts, "active")
    assert slack.sessions[("CGENERAL", thread.ts)].history == ["processing", "active"]


async def test_thread_and_session_status_are_best_effort(slack: SlackEmulator, poster: Poster,
                                                         caplog: pytest.LogCaptureFixture) -> None:
    thread = await request(slack)
    assert await poster.thread_status("CGENERAL", thread.ts, "running tests on box-07", ["Thinking…"] * 12)
    assert slack.thread_status("CGENERAL", thread.ts) == "running tests on box-07"
    assert not await poster.session_status("CGENERAL", thread.ts, "busy")
    slack.events.discard("agent_session_stopped")
    assert await poster.session_status("CGENERAL", thread.ts, "processing")
    assert "missing_agent_session_stopped_event_subscription" in caplog.text
    slack.unknown_methods.add("assistant.threads.setStatus")
    assert not await poster.thread_status("CGENERAL", thread.ts, "x")


async def test_a_place_that_refuses_shows_nothing(slack: SlackEmulator, poster: Poster) -> None:
    assert await poster.start_live("GPRIVATE", "1.000001", [], ("t", []), user=ASKER, team=TEAM) is None


async def test_a_rate_limit_or_a_5xx_on_the_stream_is_retried_not_lost(slack: SlackEmulator, poster: Poster) -> None:
    thread = await request(slack)
    slack.inject("chat.startStream", "503")
    live, first = await a_turn(poster, thread)
    assert live.streaming
    slack.inject("chat.appendStream", "429")
    later = Progress.of(record(plan=[("Find it", "completed")], answer="Looking\nthere"))
    assert await poster.append_live(live, progress.chunks(first, later, title=TITLE), progress.card(later,
                                                                                                    title=TITLE))
    stream = slack.streams[("CGENERAL", live.ts)]
    assert stream.text == "Looking\nthere" and stream.tasks["plan-0"]["status"] == "complete"
    assert len(slack.streams) == 1 and [c.error for c in slack.calls if c.method == "chat.appendStream"] == \
        ["fault:429", None]
