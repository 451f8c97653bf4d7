"""The result card's Push and Open pull request buttons: the real bot in socket mode against the strict
emulator, a real queue and a real `da worker` (named mac-mini) running the fake claude in a git worktree,
a bare remote behind `url.<path>.insteadOf` and a fake gh on PATH recording its argv."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from da.queue.client import QueueClient
from da.queue.models import Task
from tests.support.server import QueueServer
from tests.support.slack import ALLOWED, STRANGER
from tests.support.slack_emulator import Message, SlackEmulator
from tests.support.waiting import wait_until
from tests.support.workers import wait_for_status
from tests.test_workspace import Lab, workspace_worker

pytestmark = pytest.mark.long

PR = "https://github.com/acme/app/pull/7"


@pytest.fixture
def lab(tmp_path: Path) -> Lab:
    return Lab(tmp_path)


def action_ids(message: Message) -> list[str]:
    return [str(element["action_id"]) for block in message.blocks for element in block.get("elements") or []
            if isinstance(element, dict) and element.get("action_id")]


async def finished_in_a_thread(slack: SlackEmulator, queue_client: QueueClient, lab: Lab) -> tuple[Message, Task,
                                                                                                  Message]:
    """`@da` an agent task on the lab's repository; the thread, the finished task and its result card."""
    root, _ = await slack.say(f"@da Tidy the app WRITE=app.py --machine=mac-mini --agent=claude --type=agent_run "
                              f"--repo={lab.user}")

    async def made() -> Task | None:
        found, _ = await queue_client.list_tasks(type="agent_run", limit=10)
        return found[0] if found else None
    task = await wait_for_status(queue_client, (await wait_until(made)).id)
    assert task.status == "done", task.notes

    def card() -> Message | None:
        return next((m for m in slack.thread("CGENERAL", root.ts) if "workspace_actions" in json.dumps(m.blocks)),
                    None)
    return root, task, await wait_until(card, timeout=20)


def said(slack: SlackEmulator, root: Message, words: str) -> Message | None:
    return next((m for m in slack.thread("CGENERAL", root.ts) if words in m.text), None)


def said_privately(slack: SlackEmulator, words: str) -> dict | None:
    return next((r for r in slack.responses if words in r.get("text", "")), None)


async def test_push_then_open_a_pull_request_from_the_result(bot, slack: SlackEmulator, queue: QueueServer,
                                                            queue_client: QueueClient, lab: Lab) -> None:
    worker = workspace_worker(lab, queue.url, MACHINE_NAME="mac-mini")
    try:
        root, task, card = await finished_in_a_thread(slack, queue_client, lab)
        branch = f"da/{task.short_id}"
        assert action_ids(card) == ["workspace_diff", "workspace_push", "workspace_open_pr"]
        assert ", not pushed" in json.dumps(card.blocks)

        await slack.click("workspace_push", on=card, user=STRANGER)
        refusal = await slack.wait_response(lambda r: "SLACK_ALLOWED_USERS" in r.get("text", ""))
        assert refusal["response_type"] == "ephemeral" and STRANGER in refusal["text"]
        assert (await queue_client.list_tasks(type="deliver"))[0] == []

        await slack.click("workspace_push", on=card)
        job = await wait_until(lambda: said_privately(slack, f"pushing {branch} on mac-mini (task "))
        assert job["response_type"] == "ephemeral"
        outcome = await wait_until(lambda: said(slack, root, f"pushed {branch} to origin"), timeout=20)
        assert outcome.text == f":white_check_mark: task {task.short_id}: pushed {branch} to origin. (<@{ALLOWED}>)"
        assert lab.git(lab.remote, "rev-parse", f"refs/heads/{branch}").strip() == \
            lab.git(Path(task.result["workspace"]["path"]), "rev-parse", "HEAD").strip()
        redrawn = await wait_until(lambda: (m := slack.messages[("CGENERAL", card.ts)]) and
                                   ", pushed" in json.dumps(m.blocks) and m)
        assert action_ids(redrawn) == ["workspace_diff", "workspace_open_pr"]

        await slack.click("workspace_open_pr", on=redrawn)
        outcome = await wait_until(lambda: said(slack, root, PR), timeout=20)
        assert outcome.text.startswith(f":white_check_mark: task {task.short_id}: pushed {branch} to origin; {PR}.")
        creates = [call["argv"] for call in lab.forge_calls() if call["argv"][:2] == ["pr", "create"]]
        assert len(creates) == 1 and creates[0][:6] == ["pr", "create", "--head", branch, "--base", "main"]
        # The pull request links back to the thread the task started in.
        link = f"https://test.slack.com/archives/CGENERAL/p{root.ts.replace('.', '')}"
        assert task.payload["thread_url"] == link
        assert link in creates[0][creates[0].index("--body") + 1]
        linked = await wait_until(lambda: (m := slack.messages[("CGENERAL", card.ts)]) and
                                  PR in json.dumps(m.blocks) and m)
        assert action_ids(linked) == ["workspace_diff", "open_pull_request"]
        assert (await queue_client.get_task(task.id)).result["workspace"]["pr_url"] == PR
    finally:
        worker.kill()


async def test_a_logged_out_gh_is_said_in_the_thread_and_the_push_is_kept(bot, slack: SlackEmulator,
                                                                          queue: QueueServer,
                                                                          queue_client: QueueClient,
                                                                          lab: Lab) -> None:
    worker = workspace_worker(lab, queue.url, MACHINE_NAME="mac-mini", FAKE_FORGE_LOGGED_OUT="1")
    try:
        root, task, card = await finished_in_a_thread(slack, queue_client, lab)
        await slack.click("workspace_open_pr", on=card)
        outcome = await wait_until(lambda: said(slack, root, "gh auth login"), timeout=20)
        assert outcome.text == (f":warning: task {task.short_id} was not pushed: gh is not logged in to github.com on "
                                "this machine, so no pull request was opened; run `gh auth login --hostname "
                                f"github.com`, then retry; the branch da/{task.short_id} is pushed. (<@{ALLOWED}>)")
        redrawn = await wait_until(lambda: (m := slack.messages[("CGENERAL", card.ts)]) and
                                   ", pushed" in json.dumps(m.blocks) and m)
        assert action_ids(redrawn) == ["workspace_diff", "workspace_open_pr"]
    finally:
        worker.kill()
