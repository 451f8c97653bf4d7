"""The notifier's decisions, without Slack: which alerts the feed calls for, where, in what order,
when a burst becomes a summary, and how a summary's list is cut into posts."""

from __future__ import annotations

import uuid

from da.bot.slack import telling
from da.bot.slack.progress import Progress, Step
from da.bot.slack.state import Card
from da.queue import models
from da.queue.models import Event, Task

NOTIFY = "CNOTIFY"


def task(status: str, *, created_by: str | None = None) -> Task:
    return Task(id=uuid.uuid4().hex, type="agent_run", status=status, created_by=created_by)


def event(n: int, of: Task, to: str | None = None, at: float = 1000.0) -> Event:
    return Event(n, of.id, models.IN_PROGRESS, to or of.status, None, at, None)


Decided = list[tuple[str, str, str | None, str]]


def decide(events: list[Event], tasks: list[Task], cards: dict[str, Card] | None = None, *,
           notify_done: bool = False, delivered: frozenset[str] = frozenset()) -> Decided:
    """(short id, channel, thread, mention) of each alert the events call for."""
    found = telling.alerts_for(events, {t.id: t for t in tasks}, (cards or {}).get, notify_channel=NOTIFY,
                               notify_done=notify_done, delivered=set(delivered))
    return [(a.task.short_id, a.channel, a.thread_ts, a.mention) for a in found]


def test_a_task_needing_a_person_goes_to_the_notify_channel_and_mentions_its_requester_in_its_thread() -> None:
    stuck = task(models.NEEDS_HUMAN, created_by="UASKER")
    card = Card("CGENERAL", "1.1", requester="UREQ")
    assert decide([event(1, stuck)], [stuck], {stuck.id: card}) == [
        (stuck.short_id, NOTIFY, None, ""), (stuck.short_id, "CGENERAL", "1.1", "UREQ")]
    assert decide([event(1, stuck)], [stuck], {stuck.id: Card("CGENERAL", "1.1", thread="0.5")})[1] == \
        (stuck.short_id, "CGENERAL", "0.5", "UASKER"), "a card posted in a thread answers in that thread"


def test_done_goes_under_its_card_and_elsewhere_only_when_asked() -> None:
    done = task(models.DONE)
    assert decide([event(1, done)], [done]) == []
    assert decide([event(1, done)], [done], notify_done=True) == [(done.short_id, NOTIFY, None, "")]
    assert decide([event(1, done)], [done], {done.id: Card("CGENERAL", "1.1")}, notify_done=True) == [
        (done.short_id, "CGENERAL", "1.1", "")]


def test_an_event_is_told_only_while_it_is_the_tasks_status_once_per_place() -> None:
    retried = task(models.PENDING)
    assert decide([event(1, retried, models.FAILED)], [retried]) == [], "it was retried since: nothing to tell"
    failed = task(models.FAILED)
    twice = [event(1, failed), event(2, failed)]
    assert decide(twice, [failed]) == [(failed.short_id, NOTIFY, None, "")]
    assert decide(twice, [failed], delivered=frozenset({f"1@{NOTIFY}"})) == [], "already delivered before a restart"
    running = task(models.IN_PROGRESS)
    assert decide([event(3, running)], [running]) == [], "only needs_human, failed and done are told"
    assert decide([event(4, failed)], []) == [], "a task deleted since is left out"


def test_alerts_go_out_most_urgent_first_per_channel() -> None:
    done, failed, stuck = task(models.DONE), task(models.FAILED), task(models.NEEDS_HUMAN)
    events = [event(1, done), event(2, failed), event(3, stuck)]
    alerts = telling.alerts_for(events, {t.id: t for t in (done, failed, stuck)}, lambda _: None, notify_channel=NOTIFY,
                                notify_done=True, delivered=set())
    grouped = telling.by_channel(alerts)
    assert list(grouped) == [NOTIFY]
    assert [a.kind for a in grouped[NOTIFY]] == [models.NEEDS_HUMAN, models.FAILED, models.DONE]


def test_a_burst_past_the_threshold_within_the_window_becomes_a_summary() -> None:
    meter = telling.BurstMeter(threshold=5, window=60.0)
    assert not meter.bursting("C", 1, now=0.0), "a single alert is always posted"
    assert not meter.bursting("C", 5, now=0.0)
    assert meter.bursting("C", 6, now=0.0)
    for n in range(4):
        meter.record("C", now=float(n))
    assert meter.bursting("C", 2, now=10.0)
    assert not meter.bursting("D", 2, now=10.0), "each channel counts its own"
    assert not meter.bursting("C", 2, now=70.0), "posts older than the window no longer count"


def test_a_summary_counts_kinds_minutes_and_mentions_each_person_once() -> None:
    stuck, failed = task(models.NEEDS_HUMAN), task(models.FAILED)
    group = [telling.Alert(event(1, stuck, at=100.0), stuck, NOTIFY, mention="UA"),
             telling.Alert(event(2, failed, at=130.0), failed, NOTIFY, mention="UA"),
             telling.Alert(event(3, failed, at=150.0), failed, NOTIFY, mention="not-a-user")]
    summary = telling.summarise(group, now=100.0 + 125)
    assert summary == telling.Summary(3, {models.NEEDS_HUMAN: 1, models.FAILED: 2, models.DONE: 0}, 3, ("UA",))


def test_a_long_list_is_cut_into_sections_and_posts() -> None:
    lines = [f"line {n} " + "x" * 990 for n in range(20)]
    posts = telling.list_posts(lines)
    assert all(len(section) <= telling.LIST_SECTION_CHARS for post in posts for section in post)
    assert all(len(post) <= telling.LIST_SECTIONS_PER_POST for post in posts)
    assert "\n".join(section for post in posts for section in post).split("\n") == lines
    assert len(telling.list_posts(["y" * 5000])[0][0]) == telling.LIST_SECTION_CHARS


def test_the_status_line_says_what_runs_where_and_when_a_person_is_awaited() -> None:
    running = Progress(tools=(Step("tool-1", "pytest -x", "complete"), Step("tool-2", "make lint", "in_progress")))
    assert telling.status_line(models.IN_PROGRESS, running, "box-07", 0) == "running make lint on box-07"
    assert telling.status_line(models.IN_PROGRESS, Progress(), None, 0) == "working"
    assert telling.status_line(models.WAITING, running, "box-07", 0) == telling.WAITING_LINE
    assert telling.status_line(models.IN_PROGRESS, running, "box-07", 1) == "waiting for your approval"
    long = Progress(tools=(Step("t", "x" * 200, "in_progress"),))
    assert len(telling.status_line(models.IN_PROGRESS, long, "m", 0)) < 80


def test_a_thread_opens_one_message_per_turn_and_shows_only_changes() -> None:
    first = Progress(answer_tail="a")
    assert telling.live_decision(None, first, models.IN_PROGRESS, "m", 0).start
    same = telling.live_decision(first, first, models.IN_PROGRESS, "m", 0)
    assert not same.start and not same.show
    grown = telling.live_decision(first, Progress(answer_tail="ab"), models.IN_PROGRESS, "m", 0)
    assert grown.show and not grown.start
    assert telling.live_decision(first, Progress(answer_tail="x", turns=1), models.IN_PROGRESS, "m", 0).start


def test_a_session_stays_open_after_an_answer_and_closes_after_a_cancel_or_failure() -> None:
    assert telling.session_after(models.DONE) == telling.session_after(models.NEEDS_HUMAN) == "active"
    assert telling.session_after(models.CANCELLED) == telling.session_after(models.FAILED) == "closed"
    card = Card("C", "1")
    assert telling.followed(task(models.IN_PROGRESS), card)
    assert not telling.followed(task(models.DONE), card) and not telling.followed(task(models.IN_PROGRESS), None)
