"""The emulator's agent surfaces (streams, thread status, agent sessions, the Stop button) met by the
real slack_sdk client and its `chat_stream()` helper, as strictly as tests/SLACK_FACTS.md section 10 says."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler
from slack_bolt.app.async_app import AsyncApp
from slack_sdk.errors import SlackApiError
from slack_sdk.models.messages.chunk import MarkdownTextChunk, PlanUpdateChunk, TaskUpdateChunk
from slack_sdk.web.async_client import AsyncWebClient

from tests.support import slack_emulator
from tests.support.slack_emulator import TEAM, Message, SlackEmulator
from tests.support.waiting import wait_until

ASKER = "UALLOWED"


@pytest.fixture
async def web(slack: SlackEmulator) -> AsyncIterator[AsyncWebClient]:
    yield AsyncWebClient(token=slack.bot_token, base_url=slack.api_url)


async def root(slack: SlackEmulator, channel: str = "CGENERAL") -> Message:
    """A person's request: the thread a stream answers in."""
    message, _ = await slack.say("fix the flaky test", channel=channel)
    return message


async def refused(call: Any) -> str:
    with pytest.raises(SlackApiError) as caught:
        await call
    return str(caught.value.response["error"])


def recipient() -> dict[str, str]:
    return {"recipient_user_id": ASKER, "recipient_team_id": TEAM}


async def test_a_stream_grows_its_text_plan_and_tasks_then_stops_with_buttons(
        slack: SlackEmulator, web: AsyncWebClient) -> None:
    thread = await root(slack)
    started = await web.chat_startStream(channel="CGENERAL", thread_ts=thread.ts, task_display_mode="plan",
                                         chunks=[PlanUpdateChunk(title="Fixing the test"),
                                                 TaskUpdateChunk(id="p1", title="Find it", status="in_progress")],
                                         **recipient())
    ts = started["ts"]
    await web.chat_appendStream(channel="CGENERAL", ts=ts, chunks=[
        TaskUpdateChunk(id="p1", title="Find it", status="complete", details="in test_x.py"),
        MarkdownTextChunk(text="Found **it**.")])
    await web.chat_appendStream(channel="CGENERAL", ts=ts, chunks=[MarkdownTextChunk(text=" Fixed.")])
    buttons = [{"type": "actions", "elements": [{"type": "button", "text": {"type": "plain_text", "text": "Diff"},
                                                 "action_id": "diff", "value": "x"}]}]
    await web.chat_stopStream(channel="CGENERAL", ts=ts, blocks=buttons)
    stream = slack.streams[("CGENERAL", ts)]
    assert (stream.state, stream.display_mode, stream.plan_title) == ("stopped", "plan", "Fixing the test")
    assert stream.text == "Found **it**. Fixed."
    assert stream.tasks["p1"]["status"] == "complete" and stream.tasks["p1"]["details"] == "in test_x.py"
    shown = slack.messages[("CGENERAL", ts)]
    assert shown.thread_ts == thread.ts and shown.text == "Found **it**. Fixed."
    assert shown.blocks[0]["elements"][0]["action_id"] == "diff"
    assert await refused(web.chat_appendStream(channel="CGENERAL", ts=ts, markdown_text="more")) == \
        "message_not_in_streaming_state"
    assert await refused(web.chat_stopStream(channel="CGENERAL", ts=ts)) == "message_not_in_streaming_state"
    await web.chat_update(channel="CGENERAL", ts=ts, text="edited after the stream ended")


async def test_the_sdks_chat_stream_helper_buffers_and_finishes(slack: SlackEmulator, web: AsyncWebClient) -> None:
    thread = await root(slack)
    streamer = await web.chat_stream(channel="CGENERAL", thread_ts=thread.ts, buffer_size=10, **recipient())
    assert await streamer.append(markdown_text="abc") is None, "the helper buffers short text"
    await streamer.append(markdown_text="defghijklmnop")
    await streamer.append(chunks=[TaskUpdateChunk(id="t", title="run tests", status="in_progress")])
    await streamer.stop(markdown_text=" done", chunks=[TaskUpdateChunk(id="t", title="run tests", status="complete")])
    assert streamer.ts is not None
    stream = slack.streams[("CGENERAL", streamer.ts)]
    assert stream.text == "abcdefghijklmnop done" and stream.tasks["t"]["status"] == "complete"
    assert stream.state == "stopped"
    assert [c.method for c in slack.calls if c.method.startswith("chat.")][-3:] == \
        ["chat.startStream", "chat.appendStream", "chat.stopStream"]


async def test_the_helper_stopped_before_any_text_still_opens_and_closes_one_message(
        slack: SlackEmulator, web: AsyncWebClient) -> None:
    thread = await root(slack)
    streamer = await web.chat_stream(channel="CGENERAL", thread_ts=thread.ts, **recipient())
    await streamer.stop()
    assert slack.streams[("CGENERAL", streamer.ts or "")].state == "stopped"


async def test_start_refuses_what_slack_refuses(slack: SlackEmulator, web: AsyncWebClient) -> None:
    thread = await root(slack)
    assert await refused(web.chat_startStream(channel="CGENERAL", thread_ts=thread.ts, markdown_text="x",
                                              recipient_team_id=TEAM)) == "missing_recipient_user_id"
    assert await refused(web.chat_startStream(channel="CGENERAL", thread_ts=thread.ts, markdown_text="x",
                                              recipient_user_id=ASKER)) == "missing_recipient_team_id"
    assert await refused(web.chat_startStream(channel="CGENERAL", thread_ts=thread.ts, markdown_text="x",
                                              chunks=[MarkdownTextChunk(text="y")], **recipient())) == \
        "cannot_provide_both_markdown_text_and_chunks"
    assert await refused(web.chat_startStream(channel="CGENERAL", thread_ts=thread.ts, task_display_mode="grid",
                                              **recipient())) == "invalid_arguments"
    assert await refused(web.chat_startStream(channel="CGENERAL", thread_ts=thread.ts,
                                              markdown_text="x" * 12_001, **recipient())) == "msg_too_long"
    for bad in ({"type": "task_update", "id": "a", "title": "t", "status": "done"},
                {"type": "task_update", "title": "no id", "status": "pending"},
                {"type": "plan_update"}, {"type": "video"}, {"type": "markdown_text"}):
        assert await refused(web.chat_startStream(channel="CGENERAL", thread_ts=thread.ts, chunks=[bad],
                                                  **recipient())) == "invalid_chunks", bad
    assert await refused(web.chat_startStream(channel="CGENERAL", thread_ts="1.000001", markdown_text="x",
                                              **recipient())) == "thread_not_found"
    assert await refused(web.chat_startStream(channel="GPRIVATE", thread_ts=thread.ts, markdown_text="x",
                                              **recipient())) == "channel_not_found"
    assert slack.streams == {}, "nothing refused was shown"


async def test_in_a_dm_no_recipient_is_needed(slack: SlackEmulator, web: AsyncWebClient) -> None:
    dm = slack.im_of(ASKER)
    thread = await root(slack, dm)
    started = await web.chat_startStream(channel=dm, thread_ts=thread.ts, markdown_text="hello")
    assert slack.streams[(dm, started["ts"])].text == "hello"


async def test_a_stream_keeps_its_shape_and_append_needs_content(slack: SlackEmulator, web: AsyncWebClient) -> None:
    thread = await root(slack)
    ts = (await web.chat_startStream(channel="CGENERAL", thread_ts=thread.ts, markdown_text="a", **recipient()))["ts"]
    assert await refused(web.chat_appendStream(channel="CGENERAL", ts=ts)) == "invalid_arguments"
    assert await refused(web.chat_appendStream(channel="CGENERAL", ts=ts, chunks=[MarkdownTextChunk(text="b")])) == \
        "streaming_mode_mismatch"
    await web.chat_appendStream(channel="CGENERAL", ts=ts, markdown_text="b")
    assert slack.streams[("CGENERAL", ts)].text == "ab"
    chunked = (await web.chat_startStream(channel="CGENERAL", thread_ts=thread.ts, chunks=[
        MarkdownTextChunk(text="a")], **recipient()))["ts"]
    assert await refused(web.chat_appendStream(channel="CGENERAL", ts=chunked, markdown_text="b")) == \
        "streaming_mode_mismatch"
    posted = await web.chat_postMessage(channel="CGENERAL", text="not a stream")
    assert await refused(web.chat_appendStream(channel="CGENERAL", ts=posted["ts"], markdown_text="x")) == \
        "message_not_in_streaming_state"


async def test_a_streaming_message_cannot_be_edited_or_deleted_until_it_ends(
        slack: SlackEmulator, web: AsyncWebClient) -> None:
    thread = await root(slack)
    ts = (await web.chat_startStream(channel="CGENERAL", thread_ts=thread.ts, markdown_text="a", **recipient()))["ts"]
    assert await refused(web.chat_update(channel="CGENERAL", ts=ts, text="b")) == "streaming_state_conflict"
    assert await refused(web.chat_delete(channel="CGENERAL", ts=ts)) == "streaming_state_conflict"
    slack.age_response_urls(slack_emulator.STREAM_LIFETIME + 1)
    assert await refused(web.chat_appendStream(channel="CGENERAL", ts=ts, markdown_text="late")) == \
        "message_not_in_streaming_state", "Slack ends a stream left open by itself"
    await web.chat_update(channel="CGENERAL", ts=ts, text="the card takes over")
    assert slack.messages[("CGENERAL", ts)].text == "the card takes over"


async def test_streams_are_rate_limited_by_their_tiers(slack: SlackEmulator, web: AsyncWebClient) -> None:
    thread = await root(slack)
    slack.tiers["chat.startStream"] = (2, 60.0)
    for _ in range(2):
        await web.chat_startStream(channel="CGENERAL", thread_ts=thread.ts, markdown_text="a", **recipient())
    with pytest.raises(SlackApiError) as caught:
        await web.chat_startStream(channel="CGENERAL", thread_ts=thread.ts, markdown_text="a", **recipient())
    assert caught.value.response.status_code == 429 and int(caught.value.response.headers["Retry-After"]) >= 1
    assert slack_emulator.TIERS["chat.appendStream"][0] == 100 and slack_emulator.TIERS["chat.stopStream"][0] == 20


async def test_a_workspace_without_streaming_answers_unknown_method(slack: SlackEmulator, web: AsyncWebClient) -> None:
    thread = await root(slack)
    slack.unknown_methods.add("chat.startStream")
    assert await refused(web.chat_startStream(channel="CGENERAL", thread_ts=thread.ts, markdown_text="a",
                                              **recipient())) == "unknown_method"


async def test_thread_status_shows_until_the_apps_next_reply(slack: SlackEmulator, web: AsyncWebClient) -> None:
    thread = await root(slack)
    await web.assistant_threads_setStatus(channel_id="CGENERAL", thread_ts=thread.ts, status="running tests on box-07",
                                          loading_messages=["Thinking…"] * 10)
    assert slack.thread_status("CGENERAL", thread.ts) == "running tests on box-07"
    await web.chat_postMessage(channel="CGENERAL", thread_ts=thread.ts, text="here is the answer")
    assert slack.thread_status("CGENERAL", thread.ts) == "", "the app's reply clears it"
    await web.assistant_threads_setStatus(channel_id="CGENERAL", thread_ts=thread.ts, status="waiting for approval")
    slack.age_response_urls(slack_emulator.THREAD_STATUS_LIFETIME + 1)
    assert slack.thread_status("CGENERAL", thread.ts) == "", "two minutes without a message clear it"
    await web.assistant_threads_setStatus(channel_id="CGENERAL", thread_ts=thread.ts, status="again")
    await web.assistant_threads_setStatus(channel_id="CGENERAL", thread_ts=thread.ts, status="")
    assert slack.thread_status("CGENERAL", thread.ts) == "", "an empty status clears it"
    assert await refused(web.assistant_threads_setStatus(channel_id="CGENERAL", thread_ts=thread.ts, status="x",
                                                         loading_messages=["."] * 11)) == "invalid_arguments"
    assert await refused(web.assistant_threads_setStatus(channel_id="CGENERAL", thread_ts="1.000002",
                                                         status="x")) == "invalid_thread_ts"
    assert await refused(web.assistant_threads_setStatus(channel_id="GPRIVATE", thread_ts=thread.ts,
                                                         status="x")) == "channel_not_found"


async def set_session(web: AsyncWebClient, thread: Message, status: str, **extra: Any) -> Any:
    return await web.api_call("agents.sessions.setStatus", json={"channel_id": thread.channel,
                                                                 "thread_ts": thread.ts, "status": status, **extra})


async def test_agent_sessions_take_title_and_initiator_on_creation_only(slack: SlackEmulator,
                                                                        web: AsyncWebClient) -> None:
    thread = await root(slack)
    first = await set_session(web, thread, "processing", title="Fix the flaky test", initiator_user_id=ASKER)
    assert first["status"] == "processing" and first.get("warning") is None
    second = await set_session(web, thread, "active", title="Another title", initiator_user_id="UOTHER")
    session = slack.sessions[("CGENERAL", thread.ts)]
    assert (session.title, session.initiator, session.history) == ("Fix the flaky test", ASKER,
                                                                   ["processing", "active"])
    assert second["title"] == "Fix the flaky test"
    assert await refused(set_session(web, thread, "done")) == "invalid_status"
    assert await refused(set_session(web, thread, "")) == "invalid_status"
    other = await root(slack)
    assert await refused(set_session(web, other, "active", title="t" * 201)) == "invalid_arguments"
    slack.scopes.discard("assistant:write")
    assert await refused(set_session(web, thread, "active")) == "missing_scope"


async def test_without_the_stop_event_subscription_slack_warns(slack: SlackEmulator, web: AsyncWebClient) -> None:
    slack.events.discard("agent_session_stopped")
    thread = await root(slack)
    answer = await set_session(web, thread, "processing")
    assert answer["warning"] == "missing_agent_session_stopped_event_subscription"


async def test_stop_stream_moves_a_processing_session_on(slack: SlackEmulator, web: AsyncWebClient) -> None:
    thread = await root(slack)
    await set_session(web, thread, "processing")
    ts = (await web.chat_startStream(channel="CGENERAL", thread_ts=thread.ts, markdown_text="a", **recipient()))["ts"]
    await web.chat_stopStream(channel="CGENERAL", ts=ts, session_status="closed")
    assert slack.sessions[("CGENERAL", thread.ts)].status == "closed"
    assert await refused(web.chat_stopStream(channel="CGENERAL", ts="9.000009")) == "message_not_found"


async def test_the_stop_button_stops_the_threads_streams_and_tells_the_app(slack: SlackEmulator,
                                                                          web: AsyncWebClient) -> None:
    app = AsyncApp(client=web, request_verification_enabled=False)
    heard: list[dict[str, Any]] = []

    @app.event("agent_session_stopped")
    async def stopped(event: dict[str, Any]) -> None:
        heard.append(event)

    @app.event("message")
    async def ignore() -> None:
        return None

    handler = AsyncSocketModeHandler(app, slack.app_token, web_client=AsyncWebClient(
        token=slack.bot_token, base_url=slack.api_url))
    await handler.connect_async()
    try:
        await slack.connected()
        thread = await root(slack)
        await set_session(web, thread, "processing")
        ts = (await web.chat_startStream(channel="CGENERAL", thread_ts=thread.ts, markdown_text="working",
                                         **recipient()))["ts"]
        envelope = await slack.press_stop("CGENERAL", thread.ts, user=ASKER)
        assert envelope is not None
        await slack.wait_ack(envelope)
        event = await wait_until(lambda: asyncio.sleep(0, heard[0] if heard else None))
        assert event["streaming_message_ts"] == [ts] and event["thread_ts"] == thread.ts
        assert event["user"] == ASKER and "ts" not in event and event["event_ts"]
        assert await refused(web.chat_appendStream(channel="CGENERAL", ts=ts, markdown_text="more")) == \
            "stopped_by_user"
        assert slack.sessions[("CGENERAL", thread.ts)].status == "processing", "Slack leaves the status to the app"
        await set_session(web, thread, "active")
        with pytest.raises(AssertionError):
            await slack.press_stop("CGENERAL", thread.ts)
    finally:
        await handler.close_async()
