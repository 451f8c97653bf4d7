"""The real `da worker` process running every built-in handler against the real queue."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from da.queue.client import QueueClient
from tests.support.server import SECRET, QueueServer
from tests.support.waiting import wait_until
from tests.support.workers import WorkerProcess, run_task, wait_for_status

GROQ_KEY = "gsk_test_groq_key_123456"


@pytest.fixture
async def groq() -> AsyncIterator[TestServer]:
    """A loopback stand-in for Groq's OpenAI-compatible chat API."""

    async def completions(request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != f"Bearer {GROQ_KEY}":
            return web.json_response({"error": {"message": "Invalid API Key"}}, status=401)
        body = await request.json()
        *earlier, last = body["messages"]
        answer = f"groq says: {last['content']} ({body['model']})" + "".join(
            f" [{turn['role']}: {turn['content']}]" for turn in earlier)
        return web.json_response({"choices": [{"message": {"role": "assistant", "content": answer}}]})

    app = web.Application()
    app.router.add_post("/openai/v1/chat/completions", completions)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    yield server
    await server.close()


@pytest.fixture
async def worker(server: QueueServer, tmp_path: Path, groq: TestServer, make_worker) -> WorkerProcess:
    return make_worker(server.url, tmp_path, GROQ_API_KEY=GROQ_KEY,
                       GROQ_BASE_URL=f"http://127.0.0.1:{groq.port}/openai/v1")


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


async def test_agent_not_listed_for_the_machine(server: QueueServer, tmp_path: Path, client: QueueClient,
                                                make_worker) -> None:
    make_worker(server.url, tmp_path, WORKER_AGENTS="claude")
    task = await run_task(client, "agent_run", {"agent": "gemini", "prompt": "x"})
    assert task.status == "needs_human"
    assert task.notes == "agent gemini is not available on test-box (it has claude)"


async def test_groq_answers_over_http_and_a_bad_key_needs_a_human(server: QueueServer, tmp_path: Path,
                                                                  groq: TestServer, client: QueueClient,
                                                                  make_worker) -> None:
    base = f"http://127.0.0.1:{groq.port}/openai/v1"
    good = make_worker(server.url, tmp_path, GROQ_API_KEY=GROQ_KEY, GROQ_BASE_URL=base)
    task = await run_task(client, "agent_run", {"agent": "groq", "prompt": "hi", "model": "llama-test"})
    good.kill()
    assert task.status == "done" and task.result["stdout"] == "groq says: hi (llama-test)"
    assert task.result["answer"] == task.result["stdout"] and "session_id" not in task.result
    make_worker(server.url, tmp_path, GROQ_API_KEY="gsk_wrong_key_99999", GROQ_BASE_URL=base)
    task = await run_task(client, "agent_run", {"agent": "groq", "prompt": "hi"})
    assert task.status == "needs_human" and "refused the API key" in task.notes


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
    await wait_until(lambda: _log_has(worker, "cancelled in the queue"))


async def _exists(path: Path) -> bool:
    return path.exists() and path.read_text().strip() != ""


async def _log_has(worker: WorkerProcess, text: str) -> bool:
    return text in worker.log


async def test_output_is_capped_and_secrets_redacted_everywhere(server: QueueServer, tmp_path: Path,
                                                                client: QueueClient, make_worker) -> None:
    token = "xoxb-planted-slack-token-42"
    password = "planted-db-password-7"  # a queue host's .env may hold the database URL too
    (tmp_path / "leak.txt").write_text(f"{SECRET}\n{password}\n")
    (tmp_path / "leak2.txt").write_text(f"{token}\n")
    process = make_worker(server.url, tmp_path, SLACK_BOT_TOKEN=token,
                          QUEUE_DB_URL=f"postgresql://da:{password}@db-host:5432/da")
    script = ("python3 -c \"import sys; sys.stdout.write('x' * 200000)\"; "
              f"echo; cat {tmp_path / 'leak.txt'}; cat {tmp_path / 'leak2.txt'} >&2; echo token=$SLACK_BOT_TOKEN; "
              "echo db=$QUEUE_DB_URL")
    task = await run_task(client, "run_script", {"script": script})
    assert task.status == "done"
    assert len(task.result["stdout"].encode()) <= 64 * 1024
    assert "bytes cut" in task.result["stdout_truncated"]
    assert "[redacted]" in task.result["stdout"] and "[redacted]" in task.result["stderr"]
    assert "token=\ndb=\n" in task.result["stdout"]  # da's own secrets are not passed to processes
    stored = [server.settings.db_path.read_bytes(), Path(task.result["log_path"]).read_bytes(),
              process.log.encode()]
    with sqlite3.connect(server.settings.db_path) as db:
        stored.append(json.dumps(db.execute("SELECT * FROM tasks").fetchall()).encode())
    for blob in stored:
        assert SECRET.encode() not in blob and token.encode() not in blob and password.encode() not in blob


async def test_unknown_type_names_where_a_handler_would_go(server: QueueServer, tmp_path: Path,
                                                           client: QueueClient, make_worker) -> None:
    make_worker(server.url, tmp_path, WORKER_CAPABILITIES="deploy_rocket")
    task = await run_task(client, "deploy_rocket", {})
    assert task.status == "needs_human"
    assert task.notes == "no handler for task type 'deploy_rocket' on test-box"
    assert "handlers/deploy_rocket.py" in task.result["action"]


async def test_user_handlers_are_discovered_and_exceptions_reported(server: QueueServer, tmp_path: Path,
                                                                    client: QueueClient, make_worker) -> None:
    folder = tmp_path / "my_handlers"
    folder.mkdir()
    (folder / "greet.py").write_text(
        "from da.handlers.api import Result\n"
        "SAFE_TO_RETRY = True\n"
        "async def run(ctx, payload):\n"
        "    if payload.get('explode'):\n"
        "        raise ValueError('the widget is missing')\n"
        "    return Result('done', f\"hello {payload['name']} from {ctx.machine}\")\n")
    make_worker(server.url, tmp_path, DA_HANDLERS_PATH=str(folder), WORKER_CAPABILITIES="greet")
    greeted = await run_task(client, "greet", {"name": "ada"})
    exploded = await run_task(client, "greet", {"explode": True})
    assert greeted.status == "done" and greeted.notes == "hello ada from test-box"
    assert exploded.status == "needs_human"
    assert exploded.notes == "handler greet raised ValueError: the widget is missing"
    assert "Traceback" in exploded.result["traceback"] and "greet.py" in exploded.result["traceback"]


async def test_malformed_handler_stops_the_worker_naming_the_file(server: QueueServer, tmp_path: Path,
                                                                  make_worker) -> None:
    folder = tmp_path / "broken"
    folder.mkdir()
    (folder / "oops.py").write_text("def run(ctx, payload):\n    return None\n")
    process = make_worker(server.url, tmp_path, DA_HANDLERS_PATH=str(folder))
    assert await process.wait_exit() == 2
    assert process.log.strip() == f"da: {folder / 'oops.py'}: define `async def run(ctx, payload) -> Result`."


@pytest.mark.parametrize(("env", "message"), [
    ({"MACHINE_NAME": ""}, "da: MACHINE_NAME is not set"),
    ({"SECRET_KEY": ""}, "da: DA_TOKEN is not set; put this machine's worker token in .env"),
    ({"MAX_CONCURRENT": "lots"}, "da: MAX_CONCURRENT='lots' is not a whole number"),
])
async def test_bad_settings_are_one_line_and_exit_2(server: QueueServer, tmp_path: Path, env, message,
                                                    make_worker) -> None:
    process = make_worker(server.url, tmp_path, **env)
    assert await process.wait_exit() == 2
    assert process.log.startswith(message) and process.log.count("\n") == 1


async def test_bad_machines_yaml_is_one_line(server: QueueServer, tmp_path: Path, make_worker) -> None:
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "machines.yaml").write_text("machines:\n  box: [unclosed\n")
    process = make_worker(server.url, tmp_path)
    assert await process.wait_exit() == 2
    assert "machines.yaml: not valid YAML at line" in process.log and process.log.count("\n") == 1


async def test_machine_entry_gives_capabilities_and_aliases(server: QueueServer, tmp_path: Path,
                                                            client: QueueClient, make_worker) -> None:
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "machines.yaml").write_text(
        "machines:\n  mac-mini:\n    capabilities: [run_script]\n    agents: [claude]\n    aliases: [mac]\n")
    make_worker(server.url, tmp_path, MACHINE_NAME="mac-mini", WORKER_CAPABILITIES="",
                WORKER_AGENTS="")
    task = await run_task(client, "run_script", {"script": "echo pinned"}, target_machine="mac")
    assert task.status == "done" and task.assigned_to == "mac-mini"


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


async def test_yaml_tags_never_run(server: QueueServer, tmp_path: Path, make_worker) -> None:
    (tmp_path / "config").mkdir()
    marker = tmp_path / "pwned"
    (tmp_path / "config" / "machines.yaml").write_text(
        f'machines: !!python/object/apply:os.system ["touch {marker}"]\n')
    process = make_worker(server.url, tmp_path)
    assert await process.wait_exit() == 2
    assert "machines.yaml: not valid YAML" in process.log and not marker.exists()
