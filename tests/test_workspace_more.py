"""Workspaces, continued: claims woken when a start moves a lock, several repositories, attach, and the
machine's delivery defaults. Real git, a real queue and real worker processes, as in test_workspace.py."""

from __future__ import annotations

import json
import os
import sys

import pytest

from da import agents
from da import fleet as fleet_module
from da.bot import grammar
from da.config import ConfigError
from da.queue import waiting
from da.queue.client import QueueClient
from tests.support.server import SECRET, QueueServer
from tests.support.terminal import da
from tests.support.waiting import wait_until
from tests.support.workers import wait_for_status
from tests.test_workspace import Lab, agent_starts, lab, workspace_worker

__all__ = ["lab"]


async def test_a_second_agent_task_on_one_repository_starts_at_once_not_one_long_poll_later(
        lab: Lab, server: QueueServer, client: QueueClient, monkeypatch: pytest.MonkeyPatch) -> None:
    # The second claim waits (a long-poll of 30 s) while the first task's lock is on the user's folder; the
    # first task's start moves that lock onto its worktree and must wake the waiting claim. The queue's
    # once-a-second recheck (a net for wake-ups lost between replicas) is put out of reach so only the
    # wake-up can start the second task in time.
    monkeypatch.setattr(waiting, "RECHECK_INTERVAL", 60.0)
    release = lab.tmp / "release"
    worker = workspace_worker(lab, server.url, WORKER_POLL_WAIT="30")
    try:
        for name in ("one", "two"):
            await client.create_task("agent_run", {"agent": "claude", "prompt": f"{name} HOLD_UNTIL={release}",
                                                   "cwd": str(lab.user)})

        async def both_running() -> bool:
            return len(agent_starts(lab)) == 2

        await wait_until(both_running, timeout=12)
    finally:
        release.write_text("go")
        worker.kill()


async def test_several_repositories_one_task_one_request_each_linking_the_others(lab: Lab, make_server) -> None:
    box = {"capabilities": ["agent_run"], "agents": ["claude"]}
    server = await make_server(fleet=fleet_module.parse_fleet({"machines": {"test-box": box}}, "test"))
    lab.bare("lib", "https://github.com/acme/lib.git")
    lib = lab.clone("https://github.com/acme/lib.git", lab.tmp / "src" / "lib")
    worker = workspace_worker(lab, server.url)
    try:
        run = await da(server.url, "assign", "Rename the API WRITE=app.py ALSO_WRITE=lib.py", "--machine=test-box",
                       "--agent=claude", "--type=agent_run", f"--repo={lab.user}", f"--repo={lib}", "--pr",
                       cwd=lab.tmp)
        assert run.code == 0, run.out + run.err
        async with QueueClient(server.url, SECRET) as client:
            task = (await client.list_tasks())[0][0]
            done = await wait_for_status(client, task.id)
    finally:
        worker.kill()
    assert task.payload["repos"] == [str(lab.user), str(lib)] and task.payload["cwd"] == str(lab.user)
    assert done.status == "done", done.notes
    app_space, lib_space = (lab.tmp / "workspaces" / name / task.short_id for name in ("app", "lib"))
    started = agent_starts(lab)[0]
    assert started["cwd"] == str(app_space.resolve()) and started["add_dirs"] == [str(lib_space.resolve())]
    assert started["argv"][started["argv"].index("--add-dir") + 1] == str(lib_space.resolve())
    summaries = done.result["workspaces"]
    assert [(item["repo"], item["branch"], item["pushed"], item["files_changed"]) for item in summaries] == [
        (str(lab.user), f"da/{task.short_id}", True, 1), (str(lib), f"da/{task.short_id}", True, 1)]
    app_pr, lib_pr = "https://github.com/acme/app/pull/7", "https://github.com/acme/lib/pull/7"
    assert [item["pr_url"] for item in summaries] == [app_pr, lib_pr]
    edits = {call["argv"][2]: call["argv"][4] for call in lab.forge_calls() if call["argv"][:2] == ["pr", "edit"]}
    assert set(edits) == {app_pr, lib_pr}
    assert f"- lib: {lib_pr}" in edits[app_pr] and app_pr not in edits[app_pr]
    assert f"- app: {app_pr}" in edits[lib_pr] and lib_pr not in edits[lib_pr]
    for remote in ("app", "lib"):
        assert lab.git(lab.tmp / "remotes" / f"{remote}.git", "rev-parse", f"refs/heads/da/{task.short_id}").strip()


def test_every_agent_cli_is_given_the_other_folders_with_its_own_flag() -> None:
    claude, gemini, codex = (agents.DEFAULT_COMMANDS[name] for name in ("claude", "gemini", "codex"))
    assert claude.build("p", add_dirs=["/w/lib", "/w/doc"])[-2:] == ["--", "p"]
    assert claude.build("p", add_dirs=["/w/lib", "/w/doc"]).count("--add-dir") == 2
    assert "--include-directories=/w/lib" in gemini.build("p", add_dirs=["/w/lib"])
    assert codex.build("p", session="s1", add_dirs=["/w/lib"])[-6:] == ["--add-dir", "/w/lib", "resume", "s1", "--",
                                                                        "p"]
    bare = agents.AgentCommand(("mine", "--", agents.PROMPT))
    assert bare.build("p", add_dirs=["/w/lib"]) == ["mine", "--", "p"]


def test_repo_given_more_than_once_keeps_every_value() -> None:
    command = grammar.parse_argv(["assign", "fix it", "--repo=~/a", "--repo", "~/b", "--repo=~/c"])
    assert command.values("repo") == ("~/a", "~/b", "~/c") and command.options["repo"] == "~/a"
    typed = grammar.parse('assign fix it --repo=~/a --repo="~/my b" --machine=m')
    assert typed.values("repo") == ("~/a", "~/my b") and typed.values("machine") == ("m",)


async def test_attach_prints_the_commands_to_continue_by_hand_and_opens_them_over_ssh(lab: Lab, make_server) -> None:
    box = {"capabilities": ["agent_run"], "agents": ["claude"], "user": "ann", "tailscale_ip": "100.64.0.7",
           "ssh_port": 2222}
    server = await make_server(fleet=fleet_module.parse_fleet({"machines": {"test-box": box}}, "test"))
    worker = workspace_worker(lab, server.url)
    try:
        async with QueueClient(server.url, SECRET) as client:
            task = await client.create_task("agent_run", {"agent": "claude", "prompt": "Tidy WRITE=app.py",
                                                          "cwd": str(lab.user)}, target_machine="test-box")
            done = await wait_for_status(client, task.id)
            other = await client.create_task("run_script", {"script": "true"}, target_machine="test-box")
            await wait_for_status(client, other.id)
    finally:
        worker.kill()
    assert done.status == "done", done.notes
    path, session = done.result["workspace"]["path"], done.result["session_id"]
    shown = await da(server.url, "attach", task.short_id, cwd=lab.tmp)
    assert shown.code == 0, shown.err
    assert shown.out.splitlines() == [f"{task.short_id} works in {path} on test-box; to continue by hand:",
                                      "  ssh -p 2222 ann@100.64.0.7", f"  cd {path}", f"  claude --resume {session}"]
    recorder = lab.tmp / "sshbin" / "ssh"
    recorder.parent.mkdir()
    recorder.write_text(f"#!{sys.executable}\nimport json, sys\n"
                        f"open({str(lab.tmp / 'ssh.json')!r}, 'w').write(json.dumps(sys.argv[1:]))\n")
    recorder.chmod(0o755)
    opened = await da(server.url, "attach", task.short_id, "--ssh", cwd=lab.tmp,
                      PATH=f"{recorder.parent}{os.pathsep}{os.environ['PATH']}")
    assert opened.code == 0, opened.err
    assert json.loads((lab.tmp / "ssh.json").read_text()) == [
        "-t", "-p", "2222", "ann@100.64.0.7", f"cd {path} && claude --resume {session}"]
    missing = await da(server.url, "attach", other.short_id, cwd=lab.tmp)
    assert missing.code == 1 and f"task {other.short_id} has no worktree to attach to" in missing.out

    listed = await da(server.url, "workspaces", "--machine=test-box", "--json", cwd=lab.tmp)
    assert listed.code == 0, listed.err
    assert [(row["task"], row["status"], row["branch"], row["path"]) for row in json.loads(listed.out)] == [
        (task.short_id, "done", f"da/{task.short_id}", path)]
    nowhere = await da(server.url, "workspaces", "--machine=elsewhere", cwd=lab.tmp)
    assert nowhere.out.strip() == "no task worktrees recorded for elsewhere"


async def test_machine_and_repository_delivery_defaults_apply_when_the_payload_does_not_say(
        lab: Lab, server: QueueServer, client: QueueClient) -> None:
    lab.bare("lib", "https://github.com/acme/lib.git")
    lib = lab.clone("https://github.com/acme/lib.git", lab.tmp / "src" / "lib")
    (lab.tmp / "config").mkdir()
    (lab.tmp / "config" / "machines.yaml").write_text(
        "machines:\n  test-box:\n    capabilities: [agent_run]\n    agents: [claude]\n    push: true\n"
        "    repos:\n      ~/src/app: {pr: true}\n")
    worker = workspace_worker(lab, server.url)
    try:
        app_default, lib_default, app_said_no = [
            await client.create_task("agent_run", {"agent": "claude", "prompt": "Edit WRITE=app.py", **extra})
            for extra in ({"cwd": str(lab.user)}, {"cwd": str(lib)}, {"cwd": str(lab.user), "push": False,
                                                                       "pr": False})]
        done = [await wait_for_status(client, task.id) for task in (app_default, lib_default, app_said_no)]
    finally:
        worker.kill()
    assert [task.status for task in done] == ["done"] * 3, [task.notes for task in done]
    spaces = [task.result["workspace"] for task in done]
    assert [(space["pushed"], space.get("pr_url")) for space in spaces] == [
        (True, "https://github.com/acme/app/pull/7"), (True, None), (False, None)]


def test_delivery_defaults_are_checked_when_machines_yaml_is_read() -> None:
    parsed = fleet_module.parse_fleet({"machines": {"m": {"pr": True, "repos": {"~/src/app": {"pr": False}}}}}, "f")
    machine = parsed.machines[0]
    assert machine.delivery == fleet_module.Delivery(None, True)
    assert machine.delivery_for(os.path.expanduser("~/src/app")) == fleet_module.Delivery(None, False)
    assert machine.delivery_for("/elsewhere") == fleet_module.Delivery(None, True)
    with pytest.raises(ConfigError, match=r"^f: machines.m.push must be true or false.$"):
        fleet_module.parse_fleet({"machines": {"m": {"push": "yes"}}}, "f")
    with pytest.raises(ConfigError, match=r"machines.m.repos must map a repository path to its settings"):
        fleet_module.parse_fleet({"machines": {"m": {"repos": ["~/src/app"]}}}, "f")
