"""One path for every request: `/da`, a mention, a DM and the New task form are parsed, checked,
run, drawn and posted by the same function (`answering.answer`), so the same verb gets the same
answer wherever it was asked. The real bot in socket mode against the strict emulator and a real
queue."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from da.bot.slack import ids
from da.queue.client import QueueClient
from tests.support import slack_limits
from tests.support.slack import ALLOWED, STRANGER, needs_human, seen
from tests.support.slack_emulator import Message, SlackEmulator
from tests.support.waiting import wait_until

Ask = Callable[[str], Awaitable[str]]


def shown(body: dict[str, Any] | Message) -> str:
    """What a reader sees: the blocks, or the text when there are none (then it is the message)."""
    blocks = body.blocks if isinstance(body, Message) else body.get("blocks", [])
    text = body.text if isinstance(body, Message) else body.get("text", "")
    return "\n".join(slack_limits.unescape(o["text"]) for o in slack_limits.text_objects(blocks)) if blocks \
        else slack_limits.unescape(text)


def asking(slack: SlackEmulator, user: str = ALLOWED) -> dict[str, Ask]:
    """For each surface, a function that asks `text` there and returns the answer as its reader sees it."""

    async def slash(text: str) -> str:
        before = len(slack.responses)
        await slack.slash(text, user=user)
        return shown(await slack.wait_response(lambda r: slack.responses.index(r) >= before))

    async def in_thread(text: str, channel: str) -> str:
        message, _ = await slack.say(text, user=user, channel=channel)

        async def answered() -> Message | None:
            return next((m for m in slack.messages.values() if m.channel == channel and m.thread_ts == message.ts
                         and m.by_bot_token and m.ephemeral_to in (None, user) and not m.deleted), None)

        return shown(await wait_until(answered))

    async def mention(text: str) -> str:
        return await in_thread(f"@da {text}", "CGENERAL")

    async def direct(text: str) -> str:
        return await in_thread(text, slack.im_of(user))

    return {"slash": slash, "mention": mention, "dm": direct}


@pytest.mark.parametrize("verb", ["status", "skills install mac-mini xcode", "show 12345678", "resolve"])
async def test_the_same_verb_gets_the_same_answer_on_every_surface(make_bot, slack: SlackEmulator, verb: str) -> None:
    slack.scopes.discard("files:write")  # so `status` adds what the app lacks, wherever it is asked
    await make_bot()
    # A usage line names the surface's own way to ask (`/da ...`, `@da ...`); the rest is the same.
    answers = {surface: (await ask(verb)).replace("`@da ", "`/da ") for surface, ask in asking(slack).items()}
    assert len(set(answers.values())) == 1, answers
    expected = {"status": "lacks some scopes", "skills install mac-mini xcode": "run it with `da` in a terminal",
                "show 12345678": "12345678", "resolve": "usage:"}[verb]
    assert expected in answers["slash"]


async def test_a_stranger_is_refused_the_same_way_on_every_surface(bot, slack: SlackEmulator,
                                                                  queue_client: QueueClient) -> None:
    task = await needs_human(queue_client)
    refusals = []
    for surface, ask in asking(slack, STRANGER).items():
        if surface == "dm":
            continue  # a stranger's DM would be answered in the DM itself: checked by the text below
        refusals.append(await ask(f"resolve {task.short_id} done"))
    assert len(set(refusals)) == 1 and "SLACK_ALLOWED_USERS" in refusals[0], refusals
    assert (await queue_client.get_task(task.id)).status == "needs_human"


async def test_a_mentions_resolve_all_confirm_resolves_exactly_what_it_listed(bot, slack: SlackEmulator,
                                                                             queue_client: QueueClient) -> None:
    tasks = [await needs_human(queue_client) for _ in range(2)]
    message, _ = await slack.say("@da resolve all done")

    async def preview() -> Message | None:
        return next((m for m in slack.thread("CGENERAL", message.ts)
                     if "2 task(s) in needs_human will become done" in m.text), None)

    shown = await wait_until(preview)
    drawn = await slack.wait_call("chat.postMessage", lambda b: "will become done" in b.get("text", ""))
    later = await needs_human(queue_client)  # not in the preview: Confirm leaves it alone
    await slack.click(ids.BULK_CONFIRM, on=drawn)

    async def confirmed() -> bool:
        return shown.text.startswith("2 task(s) moved from needs_human to done")

    await wait_until(confirmed)
    assert [(await queue_client.get_task(t.id)).status for t in tasks] == ["done", "done"]
    assert (await queue_client.get_task(later.id)).status == "needs_human"
    await slack.click(ids.BULK_CONFIRM, on=drawn)  # a second click, on the preview as first drawn
    await slack.wait_response(lambda r: "no longer open" in r.get("text", ""))


async def test_an_assign_from_a_mention_a_dm_and_the_form_posts_the_same_card(bot, slack: SlackEmulator,
                                                                             queue_client: QueueClient) -> None:
    flags = "--machine=mac-mini --agent=claude --type=agent_run"
    await slack.say(f"@da tidy the readme {flags}")
    await slack.say(f"tidy the readme {flags}", channel=slack.im_of(ALLOWED))
    await slack.global_shortcut(ids.GLOBAL_SHORTCUT)

    async def opened() -> dict[str, Any] | None:
        return next((v for v in slack.views.values() if v.get("callback_id") == ids.NEW_TASK_SUBMIT), None)

    await slack.submit(await wait_until(opened), {
        "prompt": {"text": {"type": "plain_text_input", "value": "tidy the readme"}},
        "machine": {"choice": {"type": "static_select", "selected_option": {"value": "mac-mini"}}},
        "agent": {"choice": {"type": "static_select", "selected_option": {"value": "claude"}}},
        "type": {"choice": {"type": "static_select", "selected_option": {"value": "agent_run"}}}})

    async def three() -> list[Message] | None:
        cards = [m for m in slack.messages.values() if m.by_bot_token and "Cancel" in str(m.blocks)]
        return cards if len(cards) == 3 else None

    cards = await wait_until(three)
    found, _ = await queue_client.list_tasks(limit=10)
    assert sorted(t.payload["prompt"] for t in found) == ["tidy the readme"] * 3
    assert all(t.created_by == ALLOWED and t.target_machine == "mac-mini" for t in found)
    shapes = {seen(card).replace(task.short_id, "ID") for card in cards for task in found
              if task.short_id in card.text}
    assert len(shapes) == 1, shapes
