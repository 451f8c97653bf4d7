"""Workspaces on real git: a bare repository in tmp_path is the remote (a github.com/gitlab.com URL
maps to it through `url.<path>.insteadOf`), gh and glab are fakes on PATH that record their argv."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from da import fleet as fleet_module
from da.bot import views
from da.bot.terminal import render
from da.queue.client import QueueClient
from da.queue.models import Task
from da.worker import workspace
from da.worker.workspace import WorkspaceSettings
from tests.support.server import SECRET, QueueServer
from tests.support.terminal import da
from tests.support.waiting import wait_until
from tests.support.workers import WorkerProcess, fake_tool, wait_for_status

FAKES = Path(__file__).parent / "fakes"
TASK_A = "a1b2c3d4-0000-4000-8000-000000000001"
TASK_B = "b1b2c3d4-0000-4000-8000-000000000002"
GITHUB_URL = "https://github.com/acme/app.git"


class Lab:
    """A remote, the user's clone of it, and the settings a worker would pass in."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.bin = tmp / "bin"
        self.bin.mkdir()
        for tool in ("gh", "glab"):
            fake_tool(self.bin / tool, FAKES / "fake_forge.py")
        self.gitconfig = tmp / "gitconfig"
        self.gitconfig.write_text("[user]\n\tname = Person\n\temail = person@example.com\n"
                                  "[init]\n\tdefaultBranch = main\n")
        self.env = {"PATH": f"{self.bin}{os.pathsep}{os.environ['PATH']}", "HOME": str(tmp),
                    "GIT_CONFIG_GLOBAL": str(self.gitconfig), "GIT_CONFIG_NOSYSTEM": "1"}
        self.settings = WorkspaceSettings(root=tmp / "workspaces", env=self.env)
        self.remote = self.bare("app", GITHUB_URL)
        self.user = self.clone(GITHUB_URL, tmp / "src" / "app")

    def git(self, cwd: Path, *args: str, check: bool = True) -> str:
        run = subprocess.run(["git", "-C", str(cwd), *args], env=self.env, capture_output=True, text=True)
        if check and run.returncode != 0:
            raise AssertionError(f"git {' '.join(args)} failed: {run.stderr}")
        return run.stdout

    def bare(self, name: str, url: str, files: dict[str, str] | None = None) -> Path:
        """A bare repository with one commit on main, reachable as `url`."""
        remote = self.tmp / "remotes" / f"{name}.git"
        seed = self.tmp / "seeds" / name
        seed.mkdir(parents=True)
        self.git(seed, "init", "-q")
        for file, text in (files or {"README.md": "hello\n", "app.py": "one\ntwo\nthree\n"}).items():
            (seed / file).write_text(text)
        self.git(seed, "add", "-A")
        self.git(seed, "commit", "-q", "-m", "first")
        self.git(self.tmp, "clone", "-q", "--bare", str(seed), str(remote))
        self.git(self.tmp, "config", "--file", str(self.gitconfig), f"url.{remote}.insteadOf", url)
        return remote

    def clone(self, url: str, where: Path) -> Path:
        self.git(self.tmp, "clone", "-q", url, str(where))
        return where

    def forge_calls(self) -> list[dict]:
        log = self.bin / "forge-calls.jsonl"
        return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


@pytest.fixture
def lab(tmp_path: Path) -> Lab:
    return Lab(tmp_path)


def user_state(lab: Lab) -> dict[str, str]:
    """Everything of the user's checkout a workspace must leave alone."""
    return {"branch": lab.git(lab.user, "symbolic-ref", "HEAD"), "status": lab.git(lab.user, "status", "--porcelain"),
            "index": lab.git(lab.user, "diff", "--cached"), "worktree": lab.git(lab.user, "diff"),
            "stash": lab.git(lab.user, "stash", "list"), "head": lab.git(lab.user, "rev-parse", "HEAD"),
            "untracked": (lab.user / "notes.txt").read_text()}


async def test_two_tasks_on_one_repository_each_see_only_their_own_edits(lab: Lab) -> None:
    first = await workspace.prepare(lab.settings, lab.user, TASK_A)
    second = await workspace.prepare(lab.settings, str(lab.user), TASK_B)
    assert (first.branch, second.branch) == ("da/a1b2c3d4", "da/b1b2c3d4")
    assert first.path == (lab.tmp / "workspaces" / "app" / "a1b2c3d4").resolve()
    assert first.path != second.path and first.base == second.base == "main"
    (first.path / "a.txt").write_text("from a\n")
    (second.path / "b.txt").write_text("from b\n")
    assert not (first.path / "b.txt").exists() and not (second.path / "a.txt").exists()
    assert await workspace.commit_leftovers(lab.settings, first, "add a")
    assert await workspace.commit_leftovers(lab.settings, second, "add b")
    assert lab.git(lab.user, "show", "--name-only", "--format=", first.branch).split() == ["a.txt"]
    assert lab.git(lab.user, "show", "--name-only", "--format=", second.branch).split() == ["b.txt"]


async def test_the_users_checkout_is_never_touched(lab: Lab) -> None:
    lab.git(lab.user, "checkout", "-q", "-b", "my-feature")
    (lab.user / "README.md").write_text("stashed\n")
    lab.git(lab.user, "stash", "-q")
    (lab.user / "app.py").write_text("staged\n")
    lab.git(lab.user, "add", "app.py")
    (lab.user / "README.md").write_text("edited, not staged\n")
    (lab.user / "notes.txt").write_text("untracked\n")
    before = user_state(lab)
    made = await workspace.prepare(lab.settings, lab.user, TASK_A)
    (made.path / "app.py").write_text("the agent's version\n")
    await workspace.commit_leftovers(lab.settings, made, "change app")
    await workspace.push(lab.settings, made)
    assert user_state(lab) == before
    assert (made.path / "README.md").read_text() == "hello\n"  # cut from main, not from the user's edits


async def test_leftovers_are_committed_with_the_prompts_first_line_and_the_task_id(lab: Lab) -> None:
    prompt = "\n  Fix the flaky login test; rm -rf / `$(whoami)` ../..\nthen run it twice"
    made = await workspace.prepare(lab.settings, lab.user, TASK_A)
    assert not await workspace.commit_leftovers(lab.settings, made, prompt)  # nothing yet
    (made.path / "login.py").write_text("fixed\n")
    assert await workspace.commit_leftovers(lab.settings, made, prompt)
    message = lab.git(made.path, "log", "-1", "--format=%B")
    assert message.splitlines()[0] == "Fix the flaky login test; rm -rf / `$(whoami)` ../.."
    assert f"Da-Task: {TASK_A}" in message
    assert made.branch == "da/a1b2c3d4"
    assert lab.git(made.path, "status", "--porcelain") == ""


async def test_the_summary_counts_commits_files_and_lines(lab: Lab) -> None:
    made = await workspace.prepare(lab.settings, lab.user, TASK_A)
    empty = await workspace.summary(lab.settings, made)
    assert not empty.changed and empty.text == "no changes on da/a1b2c3d4 (base main)"
    (made.path / "app.py").write_text("one\nTWO\nthree\nfour\n")
    lab.git(made.path, "commit", "-q", "-am", "the agent's own commit")
    (made.path / "new.txt").write_text("a\nb\n")
    await workspace.commit_leftovers(lab.settings, made, "second step")
    found = (await workspace.summary(lab.settings, made)).to_json()
    assert [line.split(" ", 1)[1] for line in found["commits"]] == ["second step", "the agent's own commit"]
    assert (found["files_changed"], found["insertions"], found["deletions"]) == (2, 4, 1)
    assert found["branch"] == "da/a1b2c3d4" and found["base"] == "main" and found["pushed"] is False
    assert found["path"] == str(made.path) and found["changed"] is True
    assert found["summary"] == "2 commit(s) on da/a1b2c3d4 (base main): 2 file(s), +4 -1"


async def test_the_diff_is_against_the_commit_the_branch_was_cut_from(lab: Lab) -> None:
    made = await workspace.prepare(lab.settings, lab.user, TASK_A)
    (made.path / "app.py").write_text("one\ntwo\nthree\nfour\n")
    await workspace.commit_leftovers(lab.settings, made, "add four")
    # The base moving on later does not show up in the task's diff.
    other = lab.clone(GITHUB_URL, lab.tmp / "other")
    (other / "README.md").write_text("changed upstream\n")
    lab.git(other, "commit", "-q", "-am", "upstream")
    lab.git(other, "push", "-q", "origin", "main")
    lab.git(lab.user, "fetch", "-q")
    text = await workspace.diff(lab.settings, made)
    assert "+four" in text and "README" not in text
    assert "\x1b[" in await workspace.diff(lab.settings, made, color=True)


async def test_a_retry_reuses_the_worktree_and_branch(lab: Lab) -> None:
    made = await workspace.prepare(lab.settings, lab.user, TASK_A)
    (made.path / "half.txt").write_text("half done\n")  # the worker was killed here
    again = await workspace.prepare(lab.settings, lab.user, TASK_A)
    assert again.reused and again.path == made.path and again.branch == made.branch
    assert again.base_commit == made.base_commit and (again.path / "half.txt").exists()
    await workspace.commit_leftovers(lab.settings, again, "finish")
    # The worktree folder gone but the branch kept: the retry checks the branch out again.
    shutil.rmtree(made.path)
    third = await workspace.prepare(lab.settings, lab.user, TASK_A)
    assert third.reused and (third.path / "half.txt").read_text() == "half done\n"
    assert len((await workspace.summary(lab.settings, third)).commits) == 1


async def test_several_repositories_get_one_branch_name(lab: Lab) -> None:
    lab.bare("lib", "https://gitlab.com/acme/lib.git", {"lib.py": "x\n"})
    lib = lab.clone("https://gitlab.com/acme/lib.git", lab.tmp / "src" / "lib")
    made = await workspace.prepare_all(lab.settings, [str(lab.user), str(lib), str(lab.user / ".")], TASK_A)
    assert [m.repo.name for m in made] == ["app", "lib"]
    assert {m.branch for m in made} == {"da/a1b2c3d4"}
    assert made[1].path == (lab.tmp / "workspaces" / "lib" / "a1b2c3d4").resolve()
    assert (made[1].path / "lib.py").exists()


async def test_push_and_pull_request_on_github(lab: Lab) -> None:
    made = await workspace.prepare(lab.settings, lab.user, TASK_A)
    (made.path / "x.txt").write_text("x\n")
    await workspace.commit_leftovers(lab.settings, made, "add x")
    await workspace.push(lab.settings, made)
    assert lab.git(lab.remote, "rev-parse", "refs/heads/da/a1b2c3d4") == lab.git(made.path, "rev-parse", "HEAD")
    assert (await workspace.summary(lab.settings, made)).pushed
    url = await workspace.open_request(lab.settings, made, title="add x", body="The agent said: done.")
    assert url == "https://github.com/acme/app/pull/7"
    create = lab.forge_calls()[-1]
    assert create["tool"] == "gh" and create["cwd"] == str(made.path)
    assert create["argv"] == ["pr", "create", "--head", "da/a1b2c3d4", "--base", "main", "--title", "add x",
                              "--body", "The agent said: done."]
    assert lab.forge_calls()[0]["argv"] == ["auth", "status", "--hostname", "github.com"]


async def test_merge_request_on_gitlab(lab: Lab) -> None:
    lab.bare("lib", "git@gitlab.com:acme/lib.git", {"lib.py": "x\n"})
    lib = lab.clone("git@gitlab.com:acme/lib.git", lab.tmp / "src" / "lib")
    made = await workspace.prepare(lab.settings, lib, TASK_A)
    await workspace.push(lab.settings, made)
    url = await workspace.open_request(lab.settings, made, title="t", body="b")
    assert url == "https://gitlab.com/acme/lib/-/merge_requests/7"
    assert lab.forge_calls()[-1]["argv"] == ["mr", "create", "--source-branch", "da/a1b2c3d4", "--target-branch",
                                             "main", "--title", "t", "--description", "b", "--yes"]


# ---- faults: one sentence each, and the work is kept -------------------------------------------

async def test_a_folder_that_is_not_a_repository(lab: Lab) -> None:
    plain = lab.tmp / "plain"
    plain.mkdir()
    with pytest.raises(workspace.NotARepository, match=r"plain is not a git repository$"):
        await workspace.prepare(lab.settings, plain, TASK_A)
    with pytest.raises(workspace.NotARepository, match="does not exist"):
        await workspace.prepare(lab.settings, lab.tmp / "missing", TASK_A)
    assert not await workspace.is_repository(lab.settings, plain)
    assert not (lab.tmp / "workspaces").exists()


async def test_a_base_that_does_not_exist(lab: Lab) -> None:
    with pytest.raises(workspace.NoSuchBase, match="the base branch nope does not exist in") as caught:
        await workspace.prepare(lab.settings, lab.user, TASK_A, base="nope")
    assert "--base" in caught.value.action
    with pytest.raises(workspace.NoSuchBase, match="is not a branch name"):
        await workspace.prepare(lab.settings, lab.user, TASK_A, base="--upload-pack=evil")
    named = await workspace.prepare(lab.settings, lab.user, TASK_A, base="origin/main")
    assert named.base == "main"


async def test_a_detached_or_dirty_checkout_without_a_remote_default(lab: Lab) -> None:
    lab.git(lab.user, "remote", "set-head", "origin", "--delete")
    lab.git(lab.user, "checkout", "-q", "--detach")
    with pytest.raises(workspace.DetachedBase, match="detached HEAD"):
        await workspace.prepare(lab.settings, lab.user, TASK_A)
    lab.git(lab.user, "checkout", "-q", "main")
    (lab.user / "app.py").write_text("unsaved work\n")
    with pytest.raises(workspace.DirtyBase, match="has uncommitted changes on main"):
        await workspace.prepare(lab.settings, lab.user, TASK_A)
    made = await workspace.prepare(lab.settings, lab.user, TASK_A, base="main")
    assert made.base == "main" and (lab.user / "app.py").read_text() == "unsaved work\n"


async def test_a_repository_mid_rebase(lab: Lab) -> None:
    lab.git(lab.user, "checkout", "-q", "-b", "side")
    (lab.user / "app.py").write_text("side\n")
    lab.git(lab.user, "commit", "-q", "-am", "side")
    lab.git(lab.user, "checkout", "-q", "main")
    (lab.user / "app.py").write_text("main\n")
    lab.git(lab.user, "commit", "-q", "-am", "main")
    lab.git(lab.user, "rebase", "side", check=False)
    with pytest.raises(workspace.RepositoryBusy, match="in the middle of a rebase") as caught:
        await workspace.prepare(lab.settings, lab.user, TASK_A)
    assert "git rebase --continue or --abort" in caught.value.action


async def test_a_full_disk(lab: Lab) -> None:
    full = lab.tmp / "full-bin"
    full.mkdir()
    (full / "git").symlink_to(FAKES / "full_disk_git.py")
    env = {**lab.env, "PATH": f"{full}{os.pathsep}{lab.env['PATH']}", "REAL_GIT": shutil.which("git") or "git"}
    settings = WorkspaceSettings(root=lab.settings.root, env=env)
    with pytest.raises(workspace.DiskFull, match=r"^the disk is full: git could not add a worktree"):
        await workspace.prepare(settings, lab.user, TASK_A)
    made = await workspace.prepare(lab.settings, lab.user, TASK_A)
    (made.path / "kept.txt").write_text("work\n")
    with pytest.raises(workspace.DiskFull, match="commit the agent's changes"):
        await workspace.commit_leftovers(settings, made, "t")
    assert (made.path / "kept.txt").read_text() == "work\n"


async def test_a_push_the_remote_refuses(lab: Lab) -> None:
    hook = lab.remote / "hooks" / "pre-receive"
    hook.write_text("#!/bin/sh\necho 'da/* branches are protected here' >&2\nexit 1\n")
    hook.chmod(0o755)
    made = await workspace.prepare(lab.settings, lab.user, TASK_A)
    (made.path / "x.txt").write_text("x\n")
    await workspace.commit_leftovers(lab.settings, made, "x")
    with pytest.raises(workspace.PushRefused,
                       match=r"^the remote refused the push of da/a1b2c3d4: da/\* branches are protected here$"):
        await workspace.push(lab.settings, made)
    assert not (await workspace.summary(lab.settings, made)).pushed
    assert len((await workspace.summary(lab.settings, made)).commits) == 1


async def test_a_push_without_credentials(lab: Lab) -> None:
    async def ask_for_password(request: web.Request) -> web.Response:
        return web.Response(status=401, headers={"WWW-Authenticate": 'Basic realm="git"'})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", ask_for_password)
    async with TestServer(app, host="127.0.0.1") as server:
        made = await workspace.prepare(lab.settings, lab.user, TASK_A)
        lab.git(lab.user, "remote", "set-url", "--push", "origin", str(server.make_url("/acme/app.git")))
        with pytest.raises(workspace.PushRefused, match="refused for lack of credentials") as caught:
            await workspace.push(lab.settings, made)
    assert "log in to the remote" in caught.value.action


async def test_a_remote_that_is_neither_github_nor_gitlab(lab: Lab) -> None:
    lab.bare("tool", "https://git.example.org/acme/tool.git")
    tool = lab.clone("https://git.example.org/acme/tool.git", lab.tmp / "src" / "tool")
    made = await workspace.prepare(lab.settings, tool, TASK_A)
    await workspace.push(lab.settings, made)
    with pytest.raises(workspace.UnsupportedHost, match=r"\(git.example.org\) is neither GitHub nor GitLab"):
        await workspace.open_request(lab.settings, made, title="t", body="b")
    assert lab.forge_calls() == []


async def test_gh_not_logged_in_or_not_installed(lab: Lab) -> None:
    made = await workspace.prepare(lab.settings, lab.user, TASK_A)
    await workspace.push(lab.settings, made)
    logged_out = WorkspaceSettings(root=lab.settings.root, env={**lab.env, "FAKE_FORGE_LOGGED_OUT": "1"})
    with pytest.raises(workspace.ToolMissing, match=r"^gh is not logged in to github.com") as caught:
        await workspace.open_request(logged_out, made, title="t", body="b")
    assert caught.value.action.startswith("run `gh auth login --hostname github.com`")
    assert [call["argv"][:2] for call in lab.forge_calls()] == [["auth", "status"]]
    (lab.bin / "gh").unlink()
    with pytest.raises(workspace.ToolMissing, match=r"^gh is not installed on this machine") as caught:
        await workspace.open_request(lab.settings, made, title="t", body="b")
    assert "https://cli.github.com" in caught.value.action
    assert lab.git(lab.remote, "rev-parse", "--verify", "refs/heads/da/a1b2c3d4")


def test_branch_names_and_hosts() -> None:
    assert workspace.branch_name("ABCDEF12-rest") == "da/abcdef12"
    assert workspace.branch_name("../../x y;z").startswith("da/") and \
        len(workspace.branch_name("../../x y;z")) == len("da/") + 8
    assert workspace.forge_of("git@github.com:acme/app.git") == ("gh", "github.com")
    assert workspace.forge_of("ssh://git@gitlab.example.com:2222/a/b") == ("glab", "gitlab.example.com")
    assert workspace.forge_of("/srv/git/app.git") is None
    assert workspace.commit_subject("x" * 100, TASK_A).endswith("…")
    assert workspace.commit_subject("\n \n", TASK_A) == "da task a1b2c3d4"


# ---- listing and pruning ---------------------------------------------------------------------------

async def test_prune_never_loses_unpushed_commits(lab: Lab) -> None:
    unpushed = await workspace.prepare(lab.settings, lab.user, TASK_A)
    (unpushed.path / "only-here.txt").write_text("precious\n")
    await workspace.commit_leftovers(lab.settings, unpushed, "precious work")
    pushed = await workspace.prepare(lab.settings, lab.user, TASK_B)
    (pushed.path / "p.txt").write_text("p\n")
    await workspace.commit_leftovers(lab.settings, pushed, "pushed work")
    await workspace.push(lab.settings, pushed)
    empty = await workspace.prepare(lab.settings, lab.user, "c1b2c3d4-0000")
    listed = {item.task: item for item in await workspace.list_workspaces(lab.settings)}
    assert {t: (i.pushed, i.empty, i.unpushed) for t, i in listed.items()} == {
        "a1b2c3d4": (False, False, 1), "b1b2c3d4": (True, False, 0), "c1b2c3d4": (True, True, 0)}

    assert (await workspace.prune(lab.settings, older_than=3600)).removed == []
    first = await workspace.prune(lab.settings, finished={"a1b2c3d4", "b1b2c3d4", "c1b2c3d4"})
    assert sorted(first.removed) == sorted([str(pushed.path), str(empty.path)])
    assert "has 1 unpushed change(s)" in first.kept[str(unpushed.path)]
    assert (unpushed.path / "only-here.txt").exists()
    assert lab.git(lab.user, "branch", "--format=%(refname:short)", "--list", "da/*").split() == ["da/a1b2c3d4"]
    assert lab.git(lab.remote, "rev-parse", "--verify", "refs/heads/da/b1b2c3d4")

    forced = await workspace.prune(lab.settings, force={"da/a1b2c3d4"})
    assert forced.removed == [str(unpushed.path)]
    assert lab.git(lab.user, "branch", "--format=%(refname:short)", "--list", "da/*") == ""
    assert lab.git(lab.user, "worktree", "list", "--porcelain").count("worktree ") == 1


async def test_a_cancelled_task_that_changed_nothing_leaves_nothing(lab: Lab) -> None:
    made = await workspace.prepare(lab.settings, lab.user, TASK_A)
    assert await workspace.discard_if_empty(lab.settings, made)
    assert not made.path.exists() and lab.git(lab.user, "branch", "--format=%(refname:short)", "--list", "da/*") == ""
    kept = await workspace.prepare(lab.settings, lab.user, TASK_B)
    (kept.path / "draft.txt").write_text("draft\n")
    assert not await workspace.discard_if_empty(lab.settings, kept)
    assert (kept.path / "draft.txt").exists()


# ---- end to end: a real queue, a real worker process, the fake claude editing files ----------------

def workspace_worker(lab: Lab, url: str, **env: str) -> WorkerProcess:
    """A real `da worker` with the lab's git settings and its workspaces in the test's folder."""
    return WorkerProcess(url, lab.tmp, HOME=str(lab.tmp), GIT_CONFIG_GLOBAL=str(lab.gitconfig),
                         GIT_CONFIG_NOSYSTEM="1", DA_WORKSPACES=str(lab.tmp / "workspaces"),
                         **{"WORKER_POLL_WAIT": "0.5", **env}).start()


def agent_starts(lab: Lab) -> list[dict]:
    calls = lab.bin / "calls.jsonl"
    lines = calls.read_text().splitlines() if calls.exists() else []
    return [call for call in map(json.loads, lines) if call["event"] == "start"]


async def test_two_agent_tasks_on_one_repository_run_at_once_each_on_its_own_branch(
        lab: Lab, server: QueueServer, client: QueueClient) -> None:
    lab.git(lab.user, "checkout", "-q", "-b", "my-feature")
    (lab.user / "notes.txt").write_text("untracked\n")
    (lab.user / "README.md").write_text("my unsaved edit\n")
    before = user_state(lab)
    release = lab.tmp / "release"
    worker = workspace_worker(lab, server.url)
    try:
        first = await client.create_task("agent_run", {
            "agent": "claude", "prompt": f"Fix the README\nWRITE=README.md HOLD_UNTIL={release}",
            "cwd": str(lab.user)})
        second = await client.create_task("agent_run", {
            "agent": "claude", "prompt": f"Add a changelog WRITE=CHANGES.md HOLD_UNTIL={release}",
            "cwd": str(lab.user), "push": True, "pr": True})

        async def both_running() -> list[dict]:
            started = agent_starts(lab)
            return started if len(started) == 2 else []

        running = await wait_until(both_running, timeout=20)
        assert sorted(call["cwd"] for call in running) == sorted(
            str((lab.tmp / "workspaces" / "app" / task.short_id).resolve()) for task in (first, second))
        release.write_text("go")
        done = [await wait_for_status(client, task.id) for task in (first, second)]
    finally:
        worker.kill()
    assert [task.status for task in done] == ["done", "done"], [task.notes for task in done]
    one, two = (task.result["workspace"] for task in done)
    assert (one["branch"], two["branch"]) == (f"da/{first.short_id}", f"da/{second.short_id}")
    assert one["base"] == "main" and one["files_changed"] == 1 and one["commits"][0].endswith(" Fix the README")
    assert one["pushed"] is False and "pr_url" not in one
    assert two["pushed"] is True and two["pr_url"] == "https://github.com/acme/app/pull/7"
    assert "+edited by claude" in done[0].result["diff"] and "CHANGES.md" not in done[0].result["diff"]
    assert "CHANGES.md" in done[1].result["diff"] and "README" not in done[1].result["diff"]
    assert lab.git(lab.remote, "rev-parse", f"refs/heads/da/{second.short_id}").strip()
    assert lab.git(lab.remote, "branch", "--list", f"da/{first.short_id}") == ""
    pr = lab.forge_calls()[-1]["argv"]
    assert pr[:6] == ["pr", "create", "--head", f"da/{second.short_id}", "--base", "main"]
    assert pr[7].startswith("Add a changelog WRITE=CHANGES.md") and len(pr[7]) <= workspace.MAX_SUBJECT
    assert pr[9].endswith(f"da task {second.id}") and "edited" not in pr[9]
    assert user_state(lab) == before


async def test_max_parallel_bounds_agent_tasks_and_other_work_still_runs(
        lab: Lab, server: QueueServer, client: QueueClient) -> None:
    release = lab.tmp / "release"
    worker = workspace_worker(lab, server.url, WORKER_MAX_PARALLEL="1")
    try:
        first = await client.create_task("agent_run", {"agent": "claude", "prompt": f"one HOLD_UNTIL={release}",
                                                       "cwd": str(lab.user)})
        await wait_until(lambda: _true(len(agent_starts(lab)) == 1), timeout=20)
        assert (await client.get_task(first.id)).status == "in_progress"
        second = await client.create_task("agent_run", {"agent": "claude", "prompt": "two", "cwd": str(lab.user)})
        script = await client.create_task("run_script", {"script": "echo other work"})
        assert (await wait_for_status(client, script.id)).status == "done"
        assert (await client.get_task(second.id)).status == "pending" and len(agent_starts(lab)) == 1
        release.write_text("go")
        assert (await wait_for_status(client, second.id)).status == "done"
        # A fault is one sentence in the result, for a person to act on.
        bad = await client.create_task("agent_run", {"agent": "claude", "prompt": "p", "cwd": str(lab.user),
                                                     "base": "no-such-branch"})
        failed = await wait_for_status(client, bad.id)
    finally:
        worker.kill()
    assert failed.status == "needs_human"
    assert failed.notes == f"the base branch no-such-branch does not exist in {lab.user}"
    assert "--base" in failed.result["action"]


async def test_a_killed_worker_and_a_retry_carry_on_on_the_same_branch(
        lab: Lab, make_server) -> None:
    server = await make_server(lease=1.5)
    release = lab.tmp / "release"
    async with QueueClient(server.url, SECRET) as client:
        worker = workspace_worker(lab, server.url)
        try:
            task = await client.create_task("agent_run", {
                "agent": "claude", "prompt": f"WRITE=app.py HOLD_UNTIL={release}", "cwd": str(lab.user)})
            await wait_until(lambda: _true(len(agent_starts(lab)) == 1), timeout=20)
        finally:
            worker.kill()
        os.kill(agent_starts(lab)[0]["pid"], 9)
        lost = await wait_for_status(client, task.id, ("needs_human",))
        assert "was lost" in (lost.notes or "")
        await client.resolve(task.id, "pending")
        release.write_text("go")
        worker = workspace_worker(lab, server.url)
        try:
            done = await wait_for_status(client, task.id)
        finally:
            worker.kill()
    assert done.status == "done", done.notes
    summary = done.result["workspace"]
    assert summary["branch"] == f"da/{task.short_id}" and len(summary["commits"]) == 1
    # Both runs' edits are on the one branch: the retry started from the first run's leftovers.
    assert done.result["diff"].count("+edited by claude") == 2
    assert [call["cwd"] for call in agent_starts(lab)] == [summary["path"]] * 2


async def _true(value: bool) -> bool:
    return value


async def test_da_assign_with_a_repository_then_da_diff_from_any_machine(lab: Lab, make_server) -> None:
    box = {"capabilities": ["agent_run"], "agents": ["claude"]}
    server = await make_server(fleet=fleet_module.parse_fleet({"machines": {"test-box": box}}, "test"))
    (lab.user / "notes.txt").write_text("untracked\n")
    worker = workspace_worker(lab, server.url)
    try:
        run = await da(server.url, "assign", "Tidy the app WRITE=app.py", "--machine=test-box", "--agent=claude",
                       "--type=agent_run", f"--repo={lab.user}", "--base=main", "--push", "--pr", cwd=lab.tmp)
        assert run.code == 0, run.out + run.err
        async with QueueClient(server.url, SECRET) as client:
            task = (await client.list_tasks())[0][0]
            assert task.payload == {"agent": "claude", "prompt": "Tidy the app WRITE=app.py", "cwd": str(lab.user),
                                    "base": "main", "push": True, "pr": True}
            done = await wait_for_status(client, task.id)
            # A follow-up continues in the same worktree and branch, with the first turn's work there.
            follow = await client.create_task("agent_run", {"agent": "claude", "prompt": "And more WRITE=app.py",
                                                            "cwd": str(lab.user), "continue": task.id},
                                              target_machine="test-box")
            followed = await wait_for_status(client, follow.id)
    finally:
        worker.kill()
    assert followed.status == "done", followed.notes
    more = followed.result["workspace"]
    assert more["branch"] == f"da/{task.short_id}" and more["path"] == done.result["workspace"]["path"]
    assert [line.split(" ", 1)[1] for line in more["commits"]] == ["And more WRITE=app.py",
                                                                   "Tidy the app WRITE=app.py"]
    assert followed.result["diff"].count("+edited by claude") == 2
    assert done.status == "done", done.notes
    shown = await da(server.url, "diff", task.short_id, cwd=lab.tmp)
    assert shown.code == 0, shown.err
    assert shown.out.startswith(f"{task.short_id}: 1 commit(s) on da/{task.short_id} (base main): 1 file(s), +1 -0, "
                                "pushed")
    assert "+edited by claude" in shown.out and "\x1b[" not in shown.out
    detail = await da(server.url, "show", task.short_id, cwd=lab.tmp)
    assert f"https://github.com/acme/app/pull/7 (da diff {task.short_id})" in detail.out
    plain = await da(server.url, "diff", task.short_id, "--json", cwd=lab.tmp)
    assert "+edited by claude" in json.loads(plain.out)["diff"]


async def test_da_diff_of_a_task_without_a_workspace_says_so(server: QueueServer, client: QueueClient,
                                                              lab: Lab) -> None:
    task = await client.create_task("run_script", {"script": "true"})
    run = await da(server.url, "diff", task.short_id, cwd=lab.tmp)
    assert run.code == 1
    assert f"task {task.short_id} has no workspace diff (it is pending" in run.out + run.err


def test_the_diff_is_coloured_on_a_terminal() -> None:
    class Terminal:
        def isatty(self) -> bool:
            return True

    shown = Task.from_json({"id": "a1b2c3d4-0000", "type": "agent_run", "status": "done", "payload": {},
                            "result": {"workspace": {"summary": "1 commit(s)"}}})
    text = render.render(views.TaskDiff(shown, "@@ -1 +1 @@\n-old\n+new\n"), style=render.Style(Terminal(), {}),
                         width=80)
    assert text.splitlines() == ["a1b2c3d4: 1 commit(s)", "\x1b[36m@@ -1 +1 @@\x1b[0m", "\x1b[31m-old\x1b[0m",
                                 "\x1b[32m+new\x1b[0m"]


async def test_a_cancelled_agent_task_leaves_a_worktree_only_when_it_changed_something(
        lab: Lab, server: QueueServer, client: QueueClient) -> None:
    release = lab.tmp / "never"
    worker = workspace_worker(lab, server.url)
    try:
        idle = await client.create_task("agent_run", {"agent": "claude", "prompt": f"think HOLD_UNTIL={release}",
                                                      "cwd": str(lab.user)})
        busy = await client.create_task("agent_run", {"agent": "claude", "cwd": str(lab.user),
                                                      "prompt": f"WRITE=app.py HOLD_UNTIL={release}"})
        await wait_until(lambda: _true(len(agent_starts(lab)) == 2), timeout=20)
        for task in (idle, busy):
            await client.cancel(task.id)

        async def cleaned() -> bool:
            branches = lab.git(lab.user, "branch", "--format=%(refname:short)", "--list", "da/*").split()
            return branches == [f"da/{busy.short_id}"]

        await wait_until(cleaned, timeout=20)
    finally:
        worker.kill()
    assert not (lab.tmp / "workspaces" / "app" / idle.short_id).exists()
    assert "edited by claude" in (lab.tmp / "workspaces" / "app" / busy.short_id / "app.py").read_text()


async def test_da_workspaces_lists_and_prunes_only_finished_pushed_work(
        lab: Lab, server: QueueServer, client: QueueClient) -> None:
    unpushed, pushed, running = [await client.create_task("agent_run", {"agent": "claude", "prompt": "p"})
                                 for _ in range(3)]
    for task in (unpushed, pushed):
        await client.cancel(task.id)
    made = {task.id: await workspace.prepare(lab.settings, lab.user, task.id) for task in (unpushed, pushed, running)}
    for task in (unpushed, pushed):
        (made[task.id].path / "work.txt").write_text("work\n")
        await workspace.commit_leftovers(lab.settings, made[task.id], "work")
    await workspace.push(lab.settings, made[pushed.id])
    env = {"DA_WORKSPACES": str(lab.settings.root), "GIT_CONFIG_GLOBAL": str(lab.gitconfig),
           "GIT_CONFIG_NOSYSTEM": "1"}

    listed = await da(server.url, "workspaces", "--json", cwd=lab.tmp, **env)
    assert listed.code == 0, listed.err
    rows = {row["task"]: row for row in json.loads(listed.out)}
    assert {short: (row["status"], row["pushed"], row["empty"]) for short, row in rows.items()} == {
        unpushed.short_id: ("cancelled", False, False), pushed.short_id: ("cancelled", True, False),
        running.short_id: ("pending", True, True)}
    table = await da(server.url, "workspaces", cwd=lab.tmp, **env)
    assert f"{unpushed.short_id}  cancelled" in table.out and "1 unpushed" in table.out

    pruned = await da(server.url, "workspaces", "prune", "--older-than=0s", cwd=lab.tmp, **env)
    assert pruned.code == 0, pruned.err
    assert f"removed {made[pushed.id].path}" in pruned.out
    assert f"kept {made[unpushed.id].path}: da/{unpushed.short_id} has 1 unpushed change(s)" in pruned.out
    assert f"kept {made[running.id].path}: its task is not finished" in pruned.out
    assert (made[unpushed.id].path / "work.txt").exists() and not made[pushed.id].path.exists()

    forced = await da(server.url, "workspaces", "prune", "--older-than=0s", f"--force=da/{unpushed.short_id}",
                      cwd=lab.tmp, **env)
    assert f"removed {made[unpushed.id].path}" in forced.out
    assert lab.git(lab.user, "branch", "--format=%(refname:short)", "--list", "da/*").split() == [
        f"da/{running.short_id}"]
