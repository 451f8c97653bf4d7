"""Fixtures of the Slack tests (loaded with `pytest_plugins`): the strict emulator, a real queue
with a two-machine fleet, and `make_bot` for the real BotProcess in socket mode against them.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from da import fleet as fleet_module
from da.bot.slack.app import BotProcess
from da.bot.slack.settings import BotSettings
from da.queue.client import QueueClient
from da.queue.models import Task
from tests.support import slack_limits
from tests.support.server import SECRET, QueueServer
from tests.support.slack_emulator import Message, SlackEmulator
from tests.support.waiting import wait_until

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
    late = [(e.kind, e.envelope_id) for e in emulator.late_acks()]
    assert not late, f"Slack would show the user an error for these envelopes (acked late or never): {late}"
    bad = [(e.kind, problem) for e, problem in emulator.bad_acks()]
    assert not bad, f"Slack would refuse or ignore these acks: {bad}"


@pytest.fixture
async def queue(make_server) -> QueueServer:
    return await make_server(fleet=FLEET)


@pytest.fixture
async def queue_client(queue: QueueServer) -> AsyncIterator[QueueClient]:
    async with QueueClient(queue.url, SECRET) as queue_client:
        yield queue_client


def bot_settings(slack: SlackEmulator, queue_url: str, state_path: Path, **overrides: Any) -> BotSettings:
    values: dict[str, Any] = {"bot_token": slack.bot_token, "app_token": slack.app_token,
                              "queue_urls": (queue_url,), "secret": SECRET, "allowed_users": frozenset({ALLOWED}),
                              "notify_channel": "CNOTIFY", "api_url": slack.api_url, "state_path": state_path,
                              "ping_interval": 1.0, "progress_every": 0.3, "slack_timeout": 5.0}
    values.update(overrides)
    return BotSettings(**values)


@pytest.fixture
async def make_bot(slack: SlackEmulator, queue: QueueServer,
                   tmp_path: Path) -> AsyncIterator[Callable[..., Awaitable[BotProcess]]]:
    running: list[BotProcess] = []

    async def factory(**overrides: Any) -> BotProcess:
        process = BotProcess(bot_settings(slack, queue.url, tmp_path / "bot-state.json", **overrides))
        await process.start()
        running.append(process)
        # A first start follows the feed from its head: what happens before its notifier has read it is history.
        await wait_until(lambda: process.state.last_event is not None or not process.holding.is_set(), timeout=20)
        return process

    yield factory
    for process in running:
        await process.stop()


@pytest.fixture
async def bot(make_bot) -> BotProcess:
    return await make_bot()


def texts(body: dict[str, Any] | Message) -> str:
    """All the text a message shows: its fallback and every block's text."""
    if isinstance(body, Message):
        return json.dumps(body.blocks) + body.text
    return json.dumps(body.get("blocks", [])) + body.get("text", "")


def seen(body: dict[str, Any] | Message) -> str:
    """The text a reader sees, entities turned back into characters."""
    blocks = body.blocks if isinstance(body, Message) else body.get("blocks", [])
    text = body.text if isinstance(body, Message) else body.get("text", "")
    return "\n".join([slack_limits.unescape(text)] + [slack_limits.unescape(o["text"])
                                                       for o in slack_limits.text_objects(blocks)])


def button_value(body: dict[str, Any], action_id: str, task_id: str | None = None) -> str:
    """The value of the `action_id` button (the one of `task_id` when a message lists several tasks)."""
    for block in body.get("blocks", []):
        for element in block.get("elements", []) or []:
            if element.get("action_id") != action_id:
                continue
            if task_id is None or json.loads(element["value"]).get("id") == task_id:
                return str(element["value"])
    raise AssertionError(f"no {action_id} button{f' for {task_id[:8]}' if task_id else ''}")


async def needs_human(queue_client: QueueClient, notes: str = "claude is not logged in on mac-mini", *,
                      stderr: str = "Error: not logged in", status: str = "needs_human",
                      created_by: str | None = None) -> Task:
    """A task that asked for a person (or failed), as a worker would report it."""
    task = await queue_client.create_task("agent_run", {"agent": "claude", "prompt": "x"}, target_machine="mac-mini",
                                    created_by=created_by)
    held = await queue_client.claim("mac-mini", ["agent_run"], agents=["claude"])
    assert held is not None and held.task.id == task.id
    await queue_client.report(task.id, held.lease, status, {"stderr": stderr}, notes=notes,
                        action="log in on mac-mini: run `claude /login` there, then retry")
    return task


async def note_form_from_review(slack: SlackEmulator, task: Task) -> dict[str, Any]:
    """`/da review`, then "Add note…" on the task's card: the modal Slack opened."""
    await slack.slash("review")
    review = await slack.wait_response(lambda r: task.short_id in texts(r))
    await slack.click("note_open", on=review, value=button_value(review, "note_open", task.id))
    await slack.wait_call("views.open", lambda b: True)
    return next(iter(slack.views.values()))


def note_values(note: str, status: str) -> dict[str, Any]:
    """What the note modal submits: the note and how to resolve."""
    return {"note": {"text": {"type": "plain_text_input", "value": note}},
            "status": {"choice": {"type": "static_select", "selected_option": {"value": status}}}}
