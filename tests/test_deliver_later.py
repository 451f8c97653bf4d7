"""Delivering a finished agent task's work after the fact: `da push <id> [--pr]` queues a `deliver` task on the
machine holding the worktree; real git (a bare remote behind `url.<path>.insteadOf`), fake gh on PATH recording
its argv, a real queue and real `da worker` processes."""

from __future__ import annotations

from pathlib import Path

import pytest

from da import fleet as fleet_module
from da.queue import errors as queue_errors
from da.queue.client import QueueClient
from da.queue.models import Task
from tests.support.server import SECRET, QueueServer
from tests.support.terminal import da
from tests.support.workers import wait_for_status
from tests.test_workspace import Lab, workspace_worker

BOX = {"capabilities": ["agent_run", "run_script"], "agents": ["claude"]}


@pytest.fixture
def lab(tmp_path: Path) -> Lab:
    return Lab(tmp_path)


@pytest.fixture
async def queue(make_server) -> QueueServer:
    return await make_server(fleet=fleet_module.parse_fleet({"machines": {"test-box": BOX}}, "test"))


async def finished_agent_task(client: QueueClient, lab: Lab, prompt: str = "Tidy the app WRITE=app.py") -> Task:
    task = await client.create_task("agent_run", {"agent": "claude", "prompt": prompt, "cwd": str(lab.user)},
                                    target_machine="test-box")
    done = await wait_for_status(client, task.id)
    assert done.status == "done", done.notes
    assert done.result["workspace"]["pushed"] is False
    return done


def remote_head(lab: Lab, branch: str) -> str:
    return lab.git(lab.remote, "rev-parse", "--verify", "--quiet", f"refs/heads/{branch}", check=False).strip()


async def test_push_then_a_pull_request_after_the_task_finished(lab: Lab, queue: QueueServer) -> None:
    worker = workspace_worker(lab, queue.url)
    try:
        async with QueueClient(queue.url, SECRET) as client:
            task = await finished_agent_task(client, lab)
            branch = f"da/{task.short_id}"
            assert remote_head(lab, branch) == ""
            pushed = await da(queue.url, "push", task.short_id, cwd=lab.tmp)
            assert pushed.code == 0, pushed.out + pushed.err
            assert pushed.out.strip().endswith(f"task {task.short_id}: pushed {branch} to origin.")
            worktree = Path(task.result["workspace"]["path"])
            assert remote_head(lab, branch) == lab.git(worktree, "rev-parse", "HEAD").strip()
            assert lab.forge_calls() == []
            after = await client.get_task(task.id)
            assert after.status == "done" and after.result["workspace"]["pushed"] is True
            assert after.result["answer"] == task.result["answer"]  # the rest of the result is kept

            opened = await da(queue.url, "push", task.short_id, "--pr", cwd=lab.tmp)
            assert opened.code == 0, opened.out + opened.err
            assert f"task {task.short_id}: pushed {branch} to origin; https://github.com/acme/app/pull/7." in opened.out
            creates = [call["argv"] for call in lab.forge_calls() if call["argv"][:2] == ["pr", "create"]]
            assert len(creates) == 1
            assert creates[0][:6] == ["pr", "create", "--head", branch, "--base", "main"]
            assert creates[0][6:8] == ["--title", "Tidy the app WRITE=app.py"]
            assert f"da task {task.id}" in creates[0][9]
            shown = await da(queue.url, "show", task.short_id, cwd=lab.tmp)
            assert "pushed; " in shown.out and "https://github.com/acme/app/pull/7" in shown.out

            again = await da(queue.url, "push", task.short_id, "--pr", cwd=lab.tmp)
            assert again.code == 0
            assert f"task {task.short_id} already has its pull request: https://github.com/acme/app/pull/7" in again.out
            assert len([call for call in lab.forge_calls() if call["argv"][:2] == ["pr", "create"]]) == 1
            jobs = [t for t in (await client.list_tasks(type="deliver"))[0]]
            assert len(jobs) == 2 and all(job.target_machine == "test-box" for job in jobs)
    finally:
        worker.kill()


async def test_what_cannot_be_pushed_is_said_in_one_sentence(lab: Lab, queue: QueueServer) -> None:
    async with QueueClient(queue.url, SECRET) as client:
        waiting = await client.create_task("agent_run", {"agent": "claude", "prompt": "later", "cwd": str(lab.user)},
                                           target_machine="test-box")
        run = await da(queue.url, "push", waiting.short_id, cwd=lab.tmp)
        assert run.code == 1
        assert run.out.strip() == (f"task {waiting.short_id} is still pending; push it once it has finished "
                                   f"(`da watch {waiting.short_id}`).")
        worker = workspace_worker(lab, queue.url)
        try:
            await client.cancel(waiting.id)
            script = await client.create_task("run_script", {"script": "true"}, target_machine="test-box")
            assert (await wait_for_status(client, script.id)).status == "done"
            run = await da(queue.url, "push", script.short_id, cwd=lab.tmp)
            assert run.code == 1
            assert f"task {script.short_id} has no worktree to push (it is done;" in run.out
            nothing = await client.create_task("agent_run", {"agent": "claude", "prompt": "Only read the code",
                                                             "cwd": str(lab.user)}, target_machine="test-box")
            read = await wait_for_status(client, nothing.id)
            run = await da(queue.url, "push", nothing.short_id, cwd=lab.tmp)
            assert run.code == 1
            assert run.out.strip() == (f"task {read.short_id} changed nothing on da/{read.short_id}; there is nothing "
                                       "to push.")
            assert (await client.list_tasks(type="deliver"))[0] == []  # nothing was queued for any of them
        finally:
            worker.kill()


async def test_a_removed_worktree_and_a_refused_push_keep_the_task_as_it_was(lab: Lab, queue: QueueServer) -> None:
    worker = workspace_worker(lab, queue.url)
    try:
        async with QueueClient(queue.url, SECRET) as client:
            gone = await finished_agent_task(client, lab)
            space = gone.result["workspace"]
            lab.git(Path(space["repo"]), "worktree", "remove", "--force", space["path"])
            run = await da(queue.url, "push", gone.short_id, cwd=lab.tmp)
            assert run.code == 1
            assert (f"task {gone.short_id} was not pushed: the worktree of task {gone.short_id} ({space['path']}) was "
                    f"removed, so there is nothing here to push; its branch da/{gone.short_id} is still in "
                    f"{space['repo']}: push it from there with `git -C {space['repo']} push origin "
                    f"da/{gone.short_id}`.") in run.out
            assert (await client.get_task(gone.id)).result == gone.result

            refused = await finished_agent_task(client, lab, "Touch the app WRITE=app.py")
            hook = lab.remote / "hooks" / "pre-receive"
            hook.write_text("#!/bin/sh\necho 'pushes to da/ branches are closed today' >&2\nexit 1\n")
            hook.chmod(0o755)
            run = await da(queue.url, "push", refused.short_id, "--pr", cwd=lab.tmp)
            assert run.code == 1
            assert (f"task {refused.short_id} was not pushed: the remote refused the push of "
                    f"da/{refused.short_id}: pushes to da/ branches are closed today; read the remote's reason; the "
                    f"work is on da/{refused.short_id} in {refused.result['workspace']['path']}.") in run.out
            after = await client.get_task(refused.id)
            assert after.result["workspace"]["pushed"] is False and "pr_url" not in after.result["workspace"]
            assert lab.forge_calls() == []
            jobs = {job.payload["task"]: job for job in (await client.list_tasks(type="deliver"))[0]}
            assert jobs[refused.id].status == "needs_human"
            assert jobs[refused.id].result["delivered"]["repositories"][0]["pushed"] is False
    finally:
        worker.kill()


async def test_gh_logged_out_or_missing_still_pushes_and_says_what_to_run(lab: Lab, queue: QueueServer) -> None:
    worker = workspace_worker(lab, queue.url, FAKE_FORGE_LOGGED_OUT="1")
    try:
        async with QueueClient(queue.url, SECRET) as client:
            task = await finished_agent_task(client, lab)
            run = await da(queue.url, "push", task.short_id, "--pr", cwd=lab.tmp)
            assert run.code == 1
            assert (f"task {task.short_id} was not pushed: gh is not logged in to github.com on this machine, so no "
                    "pull request was opened; run `gh auth login --hostname github.com`, then retry; the branch "
                    f"da/{task.short_id} is pushed.") in run.out
            assert remote_head(lab, f"da/{task.short_id}") != ""
            assert (await client.get_task(task.id)).result["workspace"]["pushed"] is True
            (lab.bin / "gh").unlink()
            run = await da(queue.url, "push", task.short_id, "--pr", cwd=lab.tmp)
            assert run.code == 1
            assert ("gh is not installed on this machine, so no pull request was opened; install the GitHub CLI (gh): "
                    "https://cli.github.com, run `gh auth login`, then retry") in run.out
            assert "pr_url" not in (await client.get_task(task.id)).result["workspace"]
    finally:
        worker.kill()


async def test_an_offline_machine_gets_the_push_when_its_worker_is_back(lab: Lab, queue: QueueServer) -> None:
    worker = workspace_worker(lab, queue.url)
    async with QueueClient(queue.url, SECRET) as client:
        try:
            task = await finished_agent_task(client, lab)
        finally:
            worker.kill()
        await queue.restart()  # the queue forgets who was online (SQLite keeps no liveness)
        run = await da(queue.url, "push", task.short_id, cwd=lab.tmp)
        assert run.code == 1
        job = (await client.list_tasks(type="deliver"))[0][0]
        assert run.out.strip() == (f"test-box, which holds the worktree of task {task.short_id}, is offline: the push "
                                   f"waits in the queue as task {job.short_id} and runs when its worker is back "
                                   f"(`da show {job.short_id}` says how it went).")
        assert job.status == "pending" and job.payload == {"task": task.id, "pr": False,
                                                           "cwd": task.result["workspace"]["path"]}
        worker = workspace_worker(lab, queue.url)
        try:
            finished = await wait_for_status(client, job.id)
        finally:
            worker.kill()
        assert finished.status == "done", finished.notes
        assert finished.notes == f"pushed da/{task.short_id} to origin"
        assert remote_head(lab, f"da/{task.short_id}") != ""
        assert (await client.get_task(task.id)).result["workspace"]["pushed"] is True


@pytest.mark.backends("sqlite", "postgres")
async def test_only_the_machine_that_ran_a_finished_task_records_its_workspace(server: QueueServer,
                                                                               client: QueueClient) -> None:
    task = await client.create_task("agent_run", {"agent": "claude", "prompt": "x"}, target_machine="box-a")
    with pytest.raises(queue_errors.Conflict, match="only a finished task's workspace is recorded"):
        await client.record_workspace(task.id, {"workspace": {"pushed": True}})
    claimed = await client.claim("box-a", ["agent_run"], agents=["claude"])
    assert claimed is not None
    await client.start(task.id, claimed.lease)
    await client.report(task.id, claimed.lease, "done", {"answer": "ok", "workspace": {"branch": "da/x",
                                                                                      "pushed": False}})
    recorded = await client.record_workspace(task.id, {"workspace": {"branch": "da/x", "pushed": True,
                                                                     "pr_url": "https://github.com/a/b/pull/1"}})
    assert recorded.result == {"answer": "ok", "workspace": {"branch": "da/x", "pushed": True,
                                                             "pr_url": "https://github.com/a/b/pull/1"}}
    with pytest.raises(queue_errors.BadRequest, match="unknown field 'answer'"):
        await client.record_workspace(task.id, {"workspace": {}, "answer": "rewritten"})
    _, secret = await client.create_token("worker", machine="box-b")
    async with QueueClient(server.url, secret) as other:
        with pytest.raises(queue_errors.Forbidden, match="ran on box-a"):
            await other.record_workspace(task.id, {"workspace": {"pushed": False}})
    assert (await client.get_task(task.id)).result["workspace"]["pushed"] is True


async def test_a_task_on_two_repositories_gets_one_request_each_linking_the_other(lab: Lab,
                                                                                  queue: QueueServer) -> None:
    lab.bare("lib", "https://gitlab.com/acme/lib.git", {"lib.py": "x\n"})
    lib = lab.clone("https://gitlab.com/acme/lib.git", lab.tmp / "src" / "lib")
    worker = workspace_worker(lab, queue.url)
    try:
        async with QueueClient(queue.url, SECRET) as client:
            task = await client.create_task("agent_run", {
                "agent": "claude", "prompt": "Rename the API WRITE=app.py ALSO_WRITE=lib.py", "cwd": str(lab.user),
                "repos": [str(lab.user), str(lib)]}, target_machine="test-box")
            done = await wait_for_status(client, task.id)
            assert done.status == "done", done.notes
            run = await da(queue.url, "push", task.short_id, "--pr", cwd=lab.tmp)
            assert run.code == 0, run.out + run.err
            app_pr, lib_mr = "https://github.com/acme/app/pull/7", "https://gitlab.com/acme/lib/-/merge_requests/7"
            assert (f"task {task.short_id}: pushed da/{task.short_id} to origin in 2 repositories; {app_pr}, "
                    f"{lib_mr}.") in run.out
            after = (await client.get_task(task.id)).result
    finally:
        worker.kill()
    assert [(item["repo"], item["pushed"], item["pr_url"]) for item in after["workspaces"]] == [
        (str(lab.user), True, app_pr), (str(lib), True, lib_mr)]
    assert after["workspace"]["pr_url"] == app_pr
    calls = [(call["tool"], call["argv"]) for call in lab.forge_calls()]
    assert [tool for tool, argv in calls if argv[1] == "create"] == ["gh", "glab"]
    linked = {tool: argv for tool, argv in calls if argv[:2] in (["pr", "edit"], ["mr", "update"])}
    assert f"- lib: {lib_mr}" in linked["gh"][4]
    assert f"- app: {app_pr}" in linked["glab"][4]
    for remote in ("app", "lib"):
        assert lab.git(lab.tmp / "remotes" / f"{remote}.git", "rev-parse", f"refs/heads/da/{task.short_id}").strip()
