"""The real `da worker` process running every built-in handler against the real queue.

One worker and one `da serve` serve the whole module: each test waits for its own tasks to end, and what it
checks is in them (or in its own files), so the tests need no worker of their own; a test that starts a
worker with its own settings is in test_worker_setup.py.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from da.queue.client import QueueClient
from tests.support.groq import GROQ_KEY, groq_stand_in
from tests.support.processes import start_serve
from tests.support.server import SECRET
from tests.support.waiting import wait_until
from tests.support.workers import WorkerProcess, run_task, wait_for_status


@pytest.fixture(scope="module")
def queue_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    process, url, _ = start_serve(tmp_path_factory.mktemp("queue"), SECRET_KEY=SECRET, LOG_LEVEL="WARNING")
    yield url
    process.terminate()
    process.wait(10)


@pytest.fixture(scope="module")
def worker(queue_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkerProcess]:
    with groq_stand_in() as groq:
        process = WorkerProcess(queue_url, tmp_path_factory.mktemp("worker"), GROQ_API_KEY=GROQ_KEY,
                                GROQ_BASE_URL=groq).start()
        yield process
        process.kill()


@pytest.fixture
async def client(queue_url: str, worker: WorkerProcess) -> AsyncIterator[QueueClient]:
    async with QueueClient(queue_url, SECRET, timeout=30) as queue_client:
        yield queue_client


async def test_claude_gets_the_prompt_as_one_argument(worker, client: QueueClient, tmp_path: Path) -> None:
    prompt = "fix the bug; rm -rf / $(whoami) `id`"
    task = await run_task(client, "agent_run", {"agent": "claude", "prompt": prompt, "cwd": str(tmp_path),
                                                "model": "opus"})
    assert task.status == "done", task.notes
    answer = json.loads(task.result["answer"])
    assert answer["argv"] == ["-p", "--dangerously-skip-permissions", "--output-format", "json", "--model", "opus",
                              "--", prompt]
    assert (answer["prompt"], answer["model"]) == (prompt, "opus")
    assert answer["cwd"] == str(tmp_path)
    assert json.loads(task.result["stdout"])["result"] == task.result["answer"]
    assert Path(task.result["log_path"]).read_text().count("[stdout]") == 1


@pytest.mark.parametrize(("agent", "argv"), [("gemini", ["--yolo", "--prompt=hello"]),
                                             ("codex", ["exec", "--full-auto", "--json", "--", "hello"])])
async def test_gemini_and_codex_commands(worker, client: QueueClient, agent: str, argv: list[str]) -> None:
    task = await run_task(client, "agent_run", {"agent": agent, "prompt": "hello"})
    assert task.status == "done"
    assert json.loads(task.result["answer"])["argv"] == argv


@pytest.mark.parametrize("agent", ["claude", "gemini", "codex"])
async def test_a_prompt_that_looks_like_an_option_stays_the_prompt(worker, client: QueueClient, agent: str) -> None:
    prompt = "--help -p and then -rf: explain these flags"
    task = await run_task(client, "agent_run", {"agent": agent, "prompt": prompt, "model": "m1"})
    assert task.status == "done", task.notes
    answer = json.loads(task.result["answer"])
    assert (answer["prompt"], answer["model"]) == (prompt, "m1")


async def test_agent_not_logged_in_needs_a_human(worker, client: QueueClient) -> None:
    task = await run_task(client, "agent_run", {"agent": "claude", "prompt": "NOT_LOGGED_IN"})
    assert task.status == "needs_human"
    assert task.notes == "claude is not logged in on test-box"
    assert "claude /login" in task.result["action"]


async def test_refused_token_needs_a_human(worker, client: QueueClient) -> None:
    task = await run_task(client, "agent_run", {"agent": "codex", "prompt": "UNAUTHORIZED"})
    assert task.status == "needs_human" and "401/403" in task.notes
    assert "check the token" in task.result["action"]


async def test_groq_gets_earlier_turns_as_chat_messages(worker, client: QueueClient) -> None:
    context = [{"role": "user", "text": "pick a name"}, {"role": "assistant", "text": "Ada"}]
    task = await run_task(client, "agent_run", {"agent": "groq", "prompt": "why?", "model": "m", "context": context})
    assert task.status == "done", task.notes
    assert task.result["answer"] == "groq says: why? (m) [user: pick a name] [assistant: Ada]"
    refused = await run_task(client, "agent_run", {"agent": "groq", "prompt": "why?", "resume": "abc-123"})
    assert refused.status == "needs_human" and refused.notes == "agent groq cannot resume a session"


async def test_script_success_failure_and_missing_cwd(worker, client: QueueClient, tmp_path: Path) -> None:
    ok = await run_task(client, "run_script", {"script": "echo one; echo two", "cwd": str(tmp_path)})
    assert ok.status == "done" and ok.result["stdout"] == "one\ntwo\n" and ok.result["returncode"] == 0
    bad = await run_task(client, "run_script", {"script": "echo working; echo 'fatal: no remote' >&2; exit 3"})
    assert bad.status == "failed"
    assert bad.notes == "script exited 3: fatal: no remote"
    assert bad.result["action"] == "read the error: fatal: no remote"
    missing = await run_task(client, "run_script", {"script": "true", "cwd": "~/does/not/exist"})
    assert missing.status == "needs_human"
    assert missing.notes == "cwd ~/does/not/exist does not exist on test-box"


async def test_missing_tool_says_how_to_install_it(worker, client: QueueClient, tmp_path: Path) -> None:
    task = await run_task(client, "test_run", {"cwd": str(tmp_path), "command": "no-such-tool-xyz --all"})
    assert task.status == "needs_human"
    assert task.notes == "no-such-tool-xyz is not installed on test-box"
    assert task.result["action"] == "install it: da skills install test-box no-such-tool-xyz"


async def test_a_command_missing_inside_a_script_is_the_scripts_failure(worker, client: QueueClient) -> None:
    task = await run_task(client, "run_script", {"script": "run the thing"})
    assert task.status == "failed"
    assert task.notes.startswith("script exited 127: ") and "run: not found" in task.notes
    assert "install" not in task.result["action"]


@pytest.mark.parametrize(("said", "status"), [
    ("cannot read /tmp/pytest-403/build/out.txt", "failed"),  # a number in a path is no refusal
    ("syntax error at line 401", "failed"),
    ("npm ERR! code E403", "needs_human"),
    ("Request failed with status code 401", "needs_human"),
])
async def test_only_a_401_or_403_status_reads_as_refused_credentials(worker, client: QueueClient, said: str,
                                                                     status: str) -> None:
    task = await run_task(client, "run_script", {"script": f"echo '{said}' >&2; exit 1"})
    assert task.status == status, task.notes


async def test_bad_payload_needs_a_human_with_the_field_named(worker, client: QueueClient) -> None:
    task = await run_task(client, "agent_run", {"agent": "claude"})
    assert task.status == "needs_human" and task.notes == "payload field 'prompt' is required"
    task = await run_task(client, "run_script", {"script": "true", "timeout": "soon"})
    assert task.status == "needs_human" and "'timeout' must be seconds" in task.notes


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().split()[2] != "Z"


async def test_timeout_kills_the_whole_process_tree(worker, client: QueueClient, tmp_path: Path) -> None:
    pid_file = tmp_path / "grandchild.pid"
    script = f"sleep 300 & echo $! > {pid_file}; sleep 300"
    task = await run_task(client, "run_script", {"script": script, "timeout": 1})
    assert task.status == "needs_human"
    assert task.notes == "script timed out after 1s on test-box"
    assert "raise the payload's timeout" in task.result["action"]
    grandchild = int(pid_file.read_text())
    await wait_until(lambda: _not_alive(grandchild), timeout=5)


async def _not_alive(pid: int) -> bool:
    return not alive(pid)


async def test_cancel_kills_a_running_task(worker, client: QueueClient, tmp_path: Path) -> None:
    pid_file = tmp_path / "running.pid"
    task = await client.create_task("run_script", {"script": f"echo $$ > {pid_file}; exec sleep 300"})
    await wait_until(lambda: _exists(pid_file))
    await wait_for_status(client, task.id, ("in_progress",))
    pid = int(pid_file.read_text())
    await client.cancel(task.id, by="tester")
    await wait_until(lambda: _not_alive(pid), timeout=30)
    assert (await client.get_task(task.id)).status == "cancelled"
    await wait_until(lambda: _log_has(worker, f"stopped {task.short_id} run_script: cancelled in the queue"))


async def _exists(path: Path) -> bool:
    return path.exists() and path.read_text().strip() != ""


async def _log_has(worker: WorkerProcess, text: str) -> bool:
    return text in worker.log


@pytest.mark.parametrize(("task_type", "payload", "tool", "argv"), [
    ("npm_build", {}, "npm", ["run", "build"]),
    ("npm_build", {"script": "bundle"}, "npm", ["run", "bundle"]),
    ("test_run", {"files": {"package.json": "{}"}}, "npm", ["test"]),
    ("test_run", {"files": {"build.gradle": ""}}, "gradle", ["test"]),
    ("lint", {"files": {"main.py": ""}}, "ruff", ["check", "."]),
    ("lint", {"files": {"Package.swift": ""}}, "swiftlint", []),
    ("ios_build", {"scheme": "App", "files": {"App.xcodeproj/x": ""}}, "xcodebuild",
     ["-scheme", "App", "-project", "App.xcodeproj", "build"]),
    ("ios_build", {"files": {"pubspec.yaml": ""}}, "flutter", ["build", "ios", "--no-codesign"]),
    ("android_build", {"task": "assembleRelease"}, "gradle", ["assembleRelease"]),
])
async def test_build_handlers_pick_the_right_tool(worker, client: QueueClient, tmp_path: Path, task_type, payload,
                                                  tool, argv) -> None:
    project = tmp_path / f"project-{task_type}-{tool}"
    for name, content in payload.pop("files", {}).items():
        (project / name).parent.mkdir(parents=True, exist_ok=True)
        (project / name).write_text(content)
    project.mkdir(exist_ok=True)
    task = await run_task(client, task_type, {"cwd": str(project), **payload})
    assert task.status == "done", task.notes
    answer = json.loads(task.result["stdout"])
    assert (answer["tool"], answer["argv"]) == (tool, argv)
    (project / "FAIL").write_text("")
    failed = await run_task(client, task_type, {"cwd": str(project), **payload})
    assert failed.status == "failed"
    assert failed.notes.startswith(f"{tool} exited 2: error: {tool} build failed")


async def test_test_run_without_a_known_project_asks_for_a_command(worker, client, tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    task = await run_task(client, "test_run", {"cwd": str(empty)})
    assert task.status == "needs_human" and "cannot tell how to test" in task.notes


def git(cwd: Path, *args: str) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@x", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@x"}
    return subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True, text=True).stdout


def make_repos(tmp_path: Path) -> tuple[Path, Path]:
    origin, clone = tmp_path / "origin", tmp_path / "clone"
    origin.mkdir()
    git(origin, "init", "-q", "-b", "main")
    (origin / "a.txt").write_text("one\n")
    git(origin, "add", "a.txt")
    git(origin, "commit", "-qm", "one")
    git(tmp_path, "clone", "-q", str(origin), str(clone))
    (origin / "a.txt").write_text("two\n")
    git(origin, "commit", "-qam", "two")
    return origin, clone


async def test_git_pull_fast_forwards_a_clean_checkout(worker, client, tmp_path: Path) -> None:
    _, clone = make_repos(tmp_path)
    task = await run_task(client, "git_pull", {"repo_path": str(clone), "branch": "main"})
    assert task.status == "done", task.notes
    assert (clone / "a.txt").read_text() == "two\n"


async def test_git_pull_refuses_a_dirty_tree(worker, client, tmp_path: Path) -> None:
    _, clone = make_repos(tmp_path)
    (clone / "a.txt").write_text("local edit\n")
    task = await run_task(client, "git_pull", {"repo_path": str(clone)})
    assert task.status == "needs_human"
    assert task.notes == f"{clone} has 1 uncommitted change(s) on test-box"
    assert (clone / "a.txt").read_text() == "local edit\n"


async def test_git_pull_stops_on_a_diverged_branch(worker, client, tmp_path: Path) -> None:
    _, clone = make_repos(tmp_path)
    (clone / "b.txt").write_text("mine\n")
    git(clone, "add", "b.txt")
    git(clone, "commit", "-qm", "local")
    task = await run_task(client, "git_pull", {"repo_path": str(clone)})
    assert task.status == "needs_human"
    assert task.notes == f"{clone} has diverged from @{{u}} on test-box"
    assert "rebase or merge by hand" in task.result["action"]


async def test_hostile_paths_and_bytes_are_handled(worker, client: QueueClient, tmp_path: Path) -> None:
    nul = await run_task(client, "run_script", {"script": "true", "cwd": "/tmp\x00/etc"})
    assert nul.status == "needs_human" and nul.notes == "payload field 'cwd' contains a NUL byte"
    climbing = await run_task(client, "lint", {"cwd": str(tmp_path / ".." / ".." / "no-such-dir-xyz")})
    assert climbing.status == "needs_human" and "does not exist on test-box" in climbing.notes
    binary = await run_task(client, "run_script", {"script": "printf 'ok \\377\\376 bytes\\n'"})
    assert binary.status == "done" and binary.result["stdout"] == "ok \ufffd\ufffd bytes\n"
