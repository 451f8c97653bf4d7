"""The bot's state: each owner (cursor, cards, threads, confirmations) saves its change before it
returns, so a bot killed right after finds it in the file."""

from __future__ import annotations

import json
from pathlib import Path

from da.bot.slack.state import BotState, Card, Thread, Waiting
from da.queue.models import Event


def reread(path: Path) -> BotState:
    return BotState.load(path)


def test_every_owner_saves_its_change_at_once(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    state = BotState.load(path)
    state.cursor.begin_at(7)
    assert reread(path).last_event == 7
    state.cursor.told(["9@CNOTIFY"])
    assert reread(path).cursor.delivered == {"9@CNOTIFY"}
    state.cursor.advance([Event(9, "t1", "in_progress", "failed", None, 5.0, None)])
    after = reread(path).cursor
    assert (after.last_event, after.delivered, after.last_seen and after.last_seen.task_id) == (9, set(), "t1")

    card = Card("CGENERAL", "1.1", "pending", requester="UA")
    state.cards.keep("t1", card)
    state.cards.shown(card, "in_progress", "step 2")
    state.cards.finish(card)
    kept = reread(path).cards.get("t1")
    assert kept is not None and (kept.status, kept.progress, kept.finished) == ("in_progress", "step 2", True)
    assert reread(path).cards.thread_of("CGENERAL", "1.1") == "t1"

    thread = Thread("CGENERAL", "1.1", "claude", "mac-mini", None, ["t1"])
    state.threads.keep(thread)
    state.threads.wait(thread, Waiting("UA", "next", "1.2"))
    state.threads.starting(thread.waiting[0])
    saved = reread(path).threads.get("CGENERAL", "1.1")
    assert saved is not None and saved.waiting[0].text == "next" and saved.waiting[0].started > 0
    state.threads.started(thread, "t2")
    saved = reread(path).threads.get("CGENERAL", "1.1")
    assert saved is not None and (saved.turns, saved.waiting) == (["t1", "t2"], [])
    assert state.threads.first_time("CGENERAL", "1.3") and not reread(path).threads.first_time("CGENERAL", "1.3")

    token = state.confirmations.keep("done", ["t1", "t2"])
    assert reread(path).confirmations.take(token) is not None
    taken = state.confirmations.take(token)
    assert taken is not None and taken.task_ids == ["t1", "t2"]
    assert reread(path).confirmations.take(token) is None, "a used confirmation is gone from the file too"


def test_the_file_keeps_its_shape_for_a_bot_of_the_previous_version(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    BotState.load(path).cursor.begin_at(3)
    assert set(json.loads(path.read_text())) == {"last_event", "last_seen", "delivered", "cards", "bulk", "threads",
                                                 "handled"}
    path.write_text("not json")
    assert BotState.load(path).last_event is None, "a damaged file starts afresh"
