"""Files both ways: a file attached to the message that starts a task, or to a thread reply, reaches the
task's workspace and is named in the agent's prompt; files past the limits are refused in the thread.

End to end with the real bot against the emulator, a real queue, a real worker process and the fake
ACP agent; the bot downloads each file with its token and the payload carries the bytes, so the token
never reaches the worker.
"""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import pytest

from da.bot.slack.attachments import Limits
from da.queue.client import QueueClient
from da.queue.models import Task
from tests.support.server import QueueServer
from tests.support.slack import ALLOWED
from tests.support.slack_emulator import Message, SlackEmulator
from tests.support.waiting import wait_until
from tests.test_slack_room import FLAGS, started
from tests.test_supervised_runs import Adapter
from tests.test_workspace import Lab

pytestmark = pytest.mark.long

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4


async def newest_task(queue_client: QueueClient, count: int = 1) -> Task:
    async def made() -> Task | None:
        found, _ = await queue_client.list_tasks(limit=10)
        return found[0] if len(found) >= count else None
    return await wait_until(made)


def said_in_thread(slack: SlackEmulator, root: Message, words: str) -> Message | None:
    return next((m for m in slack.thread(root.channel, root.ts) if words in m.text), None)


async def test_a_file_attached_to_a_request_reaches_the_agents_workspace(
        bot, slack: SlackEmulator, queue: QueueServer, queue_client: QueueClient, make_worker,
        tmp_path: Path) -> None:
    lab, adapter = Lab(tmp_path), Adapter(tmp_path)
    make_worker(queue.url, tmp_path, MACHINE_NAME="mac-mini", WORKER_CAPABILITIES="agent_run", WORKER_AGENTS="claude",
                WORKER_POLL_WAIT="0.5", HOME=str(tmp_path), GIT_CONFIG_GLOBAL=str(lab.gitconfig),
                GIT_CONFIG_NOSYSTEM="1", DA_WORKSPACES=str(tmp_path / "workspaces"),
                FAKE_ACP_STATE=str(adapter.state), PATH=adapter.path)
    notes = slack.host("notes.txt", "text/plain", b"the flake is in test_login\n")
    shot = slack.host("screen shot.png", "image/png", PNG)
    await slack.say(f"@da read the notes {FLAGS} --repo={lab.user}", files=[notes, shot])

    task = await newest_task(queue_client)
    attached = task.payload["attachments"]
    assert [(a["name"], a["size"]) for a in attached] == [("notes.txt", 27), ("screen shot.png", len(PNG))]

    async def finished() -> Task | None:
        found = await queue_client.get_task(task.id)
        return found if found.status in ("done", "failed", "needs_human") else None
    done = await wait_until(finished, timeout=60)
    assert done.status == "done", done.notes
    prompt = next(e["text"] for e in adapter.events("prompt"))
    folder = Path(re.search(r"Files attached to this request, in (\S+): notes.txt, screen shot.png", prompt)[1])
    assert (folder / "notes.txt").read_bytes() == b"the flake is in test_login\n"
    assert (folder / "screen shot.png").read_bytes() == PNG
    assert folder.parent.resolve() == Path(done.result["workspace"]["path"]).resolve(), "in the task's worktree"
    assert done.result["workspace"]["commits"] == [], "the attached files are not committed with the work"

    assert {auth for _, auth in slack.downloads} == {f"Bearer {slack.bot_token}"}
    seen_by_worker = json.dumps(done.payload) + json.dumps(done.result) + "".join(
        p.read_text(errors="replace") for p in tmp_path.glob("worker-*.log"))
    assert slack.bot_token not in seen_by_worker, "the bot token never reaches the worker"


async def test_files_past_the_limits_are_refused_in_the_thread_and_nothing_starts(
        make_bot, slack: SlackEmulator, queue_client: QueueClient) -> None:
    await make_bot(files=Limits(count=2, total_bytes=1000))
    many = [slack.host(f"n{n}.txt", "text/plain", b"x") for n in range(3)]
    first, _ = await slack.say(f"@da read these {FLAGS}", files=many)
    refused = await wait_until(lambda: said_in_thread(slack, first, "nothing was started"))
    assert "at most 2 files and this message has 3" in refused.text

    zipped = slack.host("build<1>.zip", "application/zip", b"PK")
    second, _ = await slack.say(f"@da unpack this {FLAGS}", files=[zipped])
    refused = await wait_until(lambda: said_in_thread(slack, second, "nothing was started"))
    assert "build&lt;1&gt;.zip is application/zip, which da does not pass to agents" in refused.text, \
        "a file's name is escaped like everything else from outside"

    big = slack.host("big.log", "text/plain", b"y" * 1500)
    third, _ = await slack.say(f"@da read the log {FLAGS}", files=[big])
    refused = await wait_until(lambda: said_in_thread(slack, third, "nothing was started"))
    assert "2 kB, more than the 1 kB a task can carry" in refused.text
    assert (await queue_client.list_tasks(limit=10))[0] == [], "no task was created"
    assert not slack.downloads, "nothing past the limits is downloaded"


async def test_a_file_in_a_thread_reply_goes_with_the_next_turn(bot, slack: SlackEmulator,
                                                                 queue_client: QueueClient) -> None:
    message, task, held = await started(slack, queue_client)
    await queue_client.report(task.id, held.lease, "done", {"answer": "Which log?"})
    await wait_until(lambda: said_in_thread(slack, message, "answered") or None)
    log = slack.host("app.log", "text/plain", b"ERROR boom\n", stub=True)
    await slack.say("", thread_ts=message.ts, files=[log])

    turn = await newest_task(queue_client, count=2)
    assert turn.id != task.id and turn.payload["prompt"] == "Look at the attached files."
    assert [(a["name"], base64.b64decode(a["data"])) for a in turn.payload["attachments"]] == \
        [("app.log", b"ERROR boom\n")]
    assert slack.named("files.info"), "Slack's partial file object is completed with files.info"


async def test_without_files_read_slack_hands_over_a_sign_in_page_and_the_request_is_refused(
        bot, slack: SlackEmulator, queue_client: QueueClient) -> None:
    slack.scopes.discard("files:read")
    notes = slack.host("notes.txt", "text/plain", b"hello")
    message, _ = await slack.say(f"@da read the notes {FLAGS}", files=[notes])
    refused = await wait_until(lambda: said_in_thread(slack, message, "nothing was started"))
    assert "sign-in page instead of notes.txt: the app needs the files:read scope" in refused.text
    assert f"<@{ALLOWED}>" in refused.text
    assert (await queue_client.list_tasks(limit=10))[0] == []


async def test_a_reply_with_a_file_past_the_limits_is_refused_in_the_thread(
        make_bot, slack: SlackEmulator, queue_client: QueueClient) -> None:
    await make_bot(files=Limits(count=1, total_bytes=1000, types=("text/*",)))
    message, task, held = await started(slack, queue_client)
    await queue_client.report(task.id, held.lease, "done", {"answer": "Which log?"})
    await wait_until(lambda: said_in_thread(slack, message, "answered") or None)
    movie = slack.host("repro.mp4", "video/mp4", b"\x00" * 10)
    await slack.say("this one", thread_ts=message.ts, files=[movie])
    refused = await wait_until(lambda: said_in_thread(slack, message, "your reply was not passed on"))
    assert "repro.mp4 is video/mp4, which da does not pass to agents" in refused.text
    assert len((await queue_client.list_tasks(limit=10))[0]) == 1, "no new turn started"
