"""The terminal client, one-shot and as a REPL, against a real queue service."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from da import fleet as fleet_module
from da.queue.client import QueueClient
from tests.support.server import QueueServer
from tests.support.terminal import END_OF_INPUT, da
from tests.support.workers import fake_bin

FLEET = fleet_module.parse_fleet({"machines": {
    "mac-mini": {"os": "macos", "capabilities": ["ios_build", "agent_run", "run_script"], "agents": ["claude"],
                 "aliases": ["mac"]},
    "thinkpad-x1": {"os": "linux", "capabilities": ["android_build", "agent_run", "lint"], "agents": ["gemini"]},
}}, "test")


@pytest.fixture
async def fleet_server(make_server) -> QueueServer:
    return await make_server(fleet=FLEET)


async def test_assign_with_all_flags_queues_pinned(fleet_server: QueueServer, tmp_path: Path) -> None:
    run = await da(fleet_server.url, "assign", "fix the login bug", "--machine=mac", "--agent=claude",
                   "--type=agent_run", cwd=tmp_path)
    assert run.code == 0, run.out + run.err
    assert run.out.startswith("queued ") and "agent_run on →mac-mini with claude" in run.out
    async with QueueClient(fleet_server.url, "test-secret-0123456789") as client:
        tasks, _ = await client.list_tasks()
    assert tasks[0].payload == {"agent": "claude", "prompt": "fix the login bug"}
    assert tasks[0].created_by == "tester" and tasks[0].target_machine == "mac-mini"


async def test_assign_blocks_a_machine_without_the_capability(fleet_server: QueueServer, tmp_path: Path) -> None:
    run = await da(fleet_server.url, "assign", "build it", "--machine=mac", "--type=android_build", "--cwd=/src",
                   cwd=tmp_path)
    assert run.code == 1
    assert run.out.strip() == "mac-mini cannot run android_build; machines that can: thinkpad-x1."


async def test_assign_refuses_an_agent_no_machine_there_lists(fleet_server: QueueServer, tmp_path: Path) -> None:
    run = await da(fleet_server.url, "assign", "x", "--machine=thinkpad-x1", "--agent=claude", "--type=agent_run",
                   cwd=tmp_path)
    assert run.code == 1
    assert run.out.startswith("thinkpad-x1 does not list agent claude (it lists gemini); machines that have claude: "
                              "mac-mini.")
    routed = await da(fleet_server.url, "assign", "fix the bug", "--agent=codex", "--yes", cwd=tmp_path)
    assert routed.code == 1 and "machines that have codex: none." in routed.out
    assert await tasks_in(fleet_server) == []
    waiting = await da(fleet_server.url, "assign", "fix the bug", "--agent=codex", "--yes", "--wait-for-machine",
                       cwd=tmp_path)
    assert waiting.code == 0 and "Queued anyway: it waits until" in waiting.out
    assert [t.agent for t in await tasks_in(fleet_server)] == ["codex"]


async def tasks_in(server: QueueServer) -> list:
    async with QueueClient(server.url, "test-secret-0123456789") as client:
        return (await client.list_tasks())[0]


async def test_assign_suggestion_asks_to_confirm_on_a_terminal(fleet_server: QueueServer, tmp_path: Path) -> None:
    declined = await da(fleet_server.url, "assign", "android release build", "--cwd=/src", stdin="n\n", tty=True,
                        cwd=tmp_path)
    assert declined.code == 0
    assert "suggested: android_build on thinkpad-x1" in declined.out and "Confirm? [Y/n]" in declined.out
    assert "cancelled; nothing queued." in declined.out
    ended = await da(fleet_server.url, "assign", "android release build", "--cwd=/src", stdin=END_OF_INPUT, tty=True,
                     cwd=tmp_path)
    assert ended.code == 0 and "cancelled; nothing queued." in ended.out
    assert await tasks_in(fleet_server) == []
    accepted = await da(fleet_server.url, "assign", "android release build", "--cwd=/src", stdin="\n", tty=True,
                        cwd=tmp_path)
    assert "queued " in accepted.out
    listed = await da(fleet_server.url, "queue", "--json", cwd=tmp_path)
    tasks = json.loads(listed.out)["tasks"]
    assert [t["type"] for t in tasks] == ["android_build"]


async def test_without_a_terminal_a_confirmation_needs_yes(fleet_server: QueueServer, tmp_path: Path) -> None:
    closed = await da(fleet_server.url, "assign", "android release build", "--cwd=/src", cwd=tmp_path)
    assert closed.code == 2 and "there is no terminal to ask on; add --yes to go ahead." in closed.out
    assert await tasks_in(fleet_server) == []
    given = await da(fleet_server.url, "assign", "android release build", "--cwd=/src", "--yes", cwd=tmp_path)
    assert given.code == 0 and [t.type for t in await tasks_in(fleet_server)] == ["android_build"]


async def test_read_verbs_and_exit_statuses(fleet_server: QueueServer, tmp_path: Path) -> None:
    async with QueueClient(fleet_server.url, "test-secret-0123456789") as client:
        task = await client.create_task("lint", {"cwd": "/src"}, target_machine="thinkpad-x1")
        held = await client.claim("thinkpad-x1", ["lint"])
        await client.report(task.id, held.lease, "needs_human", {"stderr": "ruff: command not found"},
                            notes="ruff is not installed on thinkpad-x1", action="install it: da skills install "
                            "thinkpad-x1 ruff")
    queue = await da(fleet_server.url, "queue", cwd=tmp_path)
    assert queue.code == 0 and task.short_id in queue.out and "needs_human" in queue.out
    review = await da(fleet_server.url, "review", cwd=tmp_path)
    assert f"{task.short_id}: install it: da skills install thinkpad-x1 ruff" in review.out
    status = await da(fleet_server.url, "status", cwd=tmp_path)
    assert "thinkpad-x1  online" in status.out and "mac-mini     offline" in status.out
    show = await da(fleet_server.url, "show", task.short_id, cwd=tmp_path)
    assert "ruff: command not found" in show.out
    missing = await da(fleet_server.url, "show", "ffff0000", cwd=tmp_path)
    assert missing.code == 1 and "no task with id 'ffff0000'" in missing.out
    usage = await da(fleet_server.url, "queue", "extra", cwd=tmp_path)
    assert usage.code == 2 and "usage: queue" in usage.out
    resolved = await da(fleet_server.url, "resolve", task.short_id, "done", "--notes=installed ruff", cwd=tmp_path)
    assert resolved.code == 0 and resolved.out.strip() == f"{task.short_id} is now done"
    again = await da(fleet_server.url, "resolve", task.short_id, "failed", cwd=tmp_path)
    assert again.code == 1 and "(set by tester)" in again.out


async def test_resolve_all_shows_the_count_before_changing(fleet_server: QueueServer, tmp_path: Path) -> None:
    async with QueueClient(fleet_server.url, "test-secret-0123456789") as client:
        for _ in range(2):
            task = await client.create_task("run_script", {"script": "x"})
            held = await client.claim("mac-mini", ["run_script"])
            await client.report(task.id, held.lease, "needs_human", {})
        declined = await da(fleet_server.url, "resolve", "all", "pending", stdin="n\n", tty=True, cwd=tmp_path)
        assert "2 task(s) in needs_human would become pending." in declined.out
        assert len((await client.list_tasks(status="needs_human"))[0]) == 2
        piped = await da(fleet_server.url, "resolve", "all", "pending", cwd=tmp_path)
        assert piped.code == 2 and "add --yes" in piped.out
        assert len((await client.list_tasks(status="needs_human"))[0]) == 2
        accepted = await da(fleet_server.url, "resolve", "all", "pending", stdin="y\n", tty=True, cwd=tmp_path)
        assert "2 task(s) moved from needs_human to pending." in accepted.out
        assert len((await client.list_tasks(status="pending"))[0]) == 2


async def test_prompts_keep_apostrophes_and_quotes_typed_or_from_the_shell(fleet_server: QueueServer,
                                                                           tmp_path: Path) -> None:
    flags = ("--machine=mac", "--agent=claude", "--type=agent_run")
    shell = await da(fleet_server.url, "assign", "fix the user's \"login\" page", *flags, cwd=tmp_path)
    assert shell.code == 0, shell.out
    line = f"assign fix the user’s login page {' '.join(flags)}"
    typed = await da(fleet_server.url, stdin=f"{line}\nexit\n", cwd=tmp_path)
    assert typed.code == 0 and "queued " in typed.out, typed.out
    prompts = sorted(t.payload["prompt"] for t in await tasks_in(fleet_server))
    assert prompts == ["fix the user's \"login\" page", "fix the user’s login page"]


async def test_repl_runs_verbs_until_exit(fleet_server: QueueServer, tmp_path: Path) -> None:
    run = await da(fleet_server.url, stdin="status\nfrobnicate\nhelp queue\nexit\n", cwd=tmp_path)
    assert run.code == 0
    assert run.out.startswith(f"da — queue at {fleet_server.url}, 0 worker(s) online.")
    assert "mac-mini" in run.out and "unknown command 'frobnicate'" in run.out
    assert "queue [--status=S] [--limit=N] [--json]" in run.out and "da › " in run.out


async def test_unreachable_queue_is_one_line_with_the_url(tmp_path: Path) -> None:
    one_shot = await da("http://127.0.0.1:9", "queue", cwd=tmp_path)
    assert one_shot.code == 1 and one_shot.out.strip() == "queue unreachable at http://127.0.0.1:9."
    repl = await da("http://127.0.0.1:9", stdin="exit\n", cwd=tmp_path)
    assert repl.code == 1 and repl.out.strip() == "da: queue unreachable at http://127.0.0.1:9."


async def test_missing_secret_is_one_line(tmp_path: Path) -> None:
    run = await da("http://127.0.0.1:9", "queue", cwd=tmp_path, SECRET_KEY="")
    assert run.code == 2 and run.err.startswith("da: DA_TOKEN is not set; put this machine's client token in .env "
                                                "(make one on the queue host with `da token create client NAME`)")
    assert run.err.count("\n") == 1


async def test_local_run_streams_the_agent_answer(tmp_path: Path) -> None:
    bin_dir = fake_bin(tmp_path / "bin")

    run = await da("http://127.0.0.1:9", "run", "claude", "say hi", cwd=tmp_path,
                   PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    assert run.code == 0
    assert json.loads(run.out)["argv"] == ["-p", "--dangerously-skip-permissions", "--", "say hi"]
    test = await da("http://127.0.0.1:9", "test", cwd=tmp_path, PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    assert test.code == 0 and "claude" in test.out and "installed" in test.out
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "agents.yaml").write_text(
        'agents:\n  codex:\n    command: [codex, exec, -c, NOT_LOGGED_IN=1, --, "{prompt}"]\n')
    not_logged = await da("http://127.0.0.1:9", "test", "codex", cwd=tmp_path,
                          PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    assert not_logged.code == 1 and "codex is not logged in on this machine" in not_logged.out


async def test_what_a_newcomer_mistypes_gets_a_plain_answer(fleet_server: QueueServer, tmp_path: Path) -> None:
    show = await da(fleet_server.url, "show", "nosuchid", cwd=tmp_path)
    assert show.code == 1 and show.out.startswith("no task with id 'nosuchid'")
    empty = await da(fleet_server.url, "assign", "", "--yes", cwd=tmp_path)
    assert empty.code == 2 and empty.out.startswith("assign needs a description of the work.")
    nosuch = await da(fleet_server.url, "assign", "fix it", "--machine=nosuch", "--yes", cwd=tmp_path)
    assert nosuch.code == 1
    assert nosuch.out.strip() == "unknown machine 'nosuch'; known machines: mac-mini, thinkpad-x1."
    banana = await da(fleet_server.url, "queue", "--status=banana", cwd=tmp_path)
    assert banana.code == 2 and banana.out.startswith("unknown status 'banana'; use one of pending, claimed")
    assert await tasks_in(fleet_server) == []


async def test_an_unknown_command_lists_every_command(tmp_path: Path) -> None:
    run = await da("http://127.0.0.1:9", "frobnicate", cwd=tmp_path)
    assert run.code == 2 and len(run.err.strip().splitlines()) == 1
    named = set(re.findall(r"[a-z]+", run.err.split("; ", 1)[1]))
    assert {"serve", "worker", "up", "bot", "backup", "restore", "prune", "service", "doctor", "assign", "queue",
            "status", "skills", "run", "ssh"} <= named


async def test_a_plain_command_runs_as_a_script_where_no_machine_has_an_agent(make_server, tmp_path: Path) -> None:
    from da import handlers

    vm = fleet_module.parse_fleet({"machines": {"vm": {"capabilities": sorted(handlers.folder_fields())}}}, "t")
    server = await make_server(fleet=vm)
    run = await da(server.url, "assign", "echo hello", "--yes", cwd=tmp_path)
    assert run.code == 0, run.out
    assert run.out.splitlines()[0].startswith("queued ") and "run_script on →vm" in run.out
    assert "warning: no machine lists an agent: this runs as a shell command (run_script)" in run.out
    assert [t.payload for t in await tasks_in(server)] == [{"script": "echo hello"}]


async def test_flag_value_works_like_flag_equals_value(fleet_server: QueueServer, tmp_path: Path) -> None:
    async with QueueClient(fleet_server.url, "test-secret-0123456789") as client:
        stuck = await client.create_task("lint", {"cwd": "/src"}, target_machine="thinkpad-x1")
        held = await client.claim("thinkpad-x1", ["lint"])
        await client.report(stuck.id, held.lease, "needs_human", {}, notes="ruff is missing")
        waiting = await client.create_task("run_script", {"script": "true"})
    listed = await da(fleet_server.url, "queue", "--status", "needs_human", "--json", cwd=tmp_path)
    assert listed.code == 0, listed.out
    assert [t["id"] for t in json.loads(listed.out)["tasks"]] == [stuck.id]
    resolved = await da(fleet_server.url, "resolve", stuck.short_id, "done", "--notes", "installed ruff by hand",
                        cwd=tmp_path)
    assert resolved.code == 0 and resolved.out.strip() == f"{stuck.short_id} is now done"
    typed = await da(fleet_server.url, stdin="queue --status done\nexit\n", cwd=tmp_path)
    assert stuck.short_id in typed.out and waiting.short_id not in typed.out
    queued = await da(fleet_server.url, "assign", "fix the login", "--machine", "mac", "--agent", "claude", "--type",
                      "agent_run", cwd=tmp_path)
    assert queued.code == 0 and "agent_run on →mac-mini with claude" in queued.out, queued.out
    ambiguous = await da(fleet_server.url, "queue", "--json", "done", cwd=tmp_path)
    assert ambiguous.code == 2
    assert ambiguous.out.startswith("--json takes no value; if 'done' is the status, use --status=done.")
    tasks = {t.id: t for t in await tasks_in(fleet_server)}
    assert tasks[stuck.id].status == "done" and "installed ruff by hand" in (tasks[stuck.id].notes or "")
    assert len(tasks) == 3


async def test_routing_and_status_go_by_what_an_online_worker_offers(fleet_server: QueueServer,
                                                                     tmp_path: Path) -> None:
    async with QueueClient(fleet_server.url, "test-secret-0123456789") as worker:
        # thinkpad-x1's worker polls offering codex, not the gemini the queue host's machines.yaml lists.
        assert await worker.claim("thinkpad-x1", ["agent_run", "lint"], agents=["codex"]) is None
    status = await da(fleet_server.url, "status", cwd=tmp_path)
    row = next(line for line in status.out.splitlines() if line.startswith("thinkpad-x1"))
    assert row.split()[1:3] == ["online", "codex"], status.out

    routed = await da(fleet_server.url, "assign", "review the login code", "--yes", cwd=tmp_path)
    assert routed.code == 0 and "agent_run on →thinkpad-x1 with codex" in routed.out, routed.out
    offered = await da(fleet_server.url, "assign", "x", "--machine=thinkpad-x1", "--agent=codex", "--type=agent_run",
                       cwd=tmp_path)
    assert offered.code == 0 and "queued " in offered.out, offered.out
    declared = await da(fleet_server.url, "assign", "x", "--machine=thinkpad-x1", "--agent=gemini",
                        "--type=agent_run", cwd=tmp_path)
    assert declared.code == 0, declared.out
    assert "thinkpad-x1's online worker does not offer agent gemini (it offers codex); the task waits until it " \
           "does." in declared.out

    pinned = await da(fleet_server.url, "assign", "x", "--machine=mac-mini", "--agent=claude", "--type=agent_run",
                      cwd=tmp_path)
    short_id = pinned.out.split()[1].rstrip(":")
    show = await da(fleet_server.url, "show", short_id, cwd=tmp_path)
    assert "waiting: no online worker can run it now (it needs agent_run with agent claude on mac-mini); it waits " \
           "until one that can polls the queue." in show.out, show.out
    runnable = await da(fleet_server.url, "show", offered.out.split()[1].rstrip(":"), cwd=tmp_path)
    assert "waiting:" not in runnable.out
